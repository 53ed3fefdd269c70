//! Authentication and the authorization matrix (spec §2 step 2, §9;
//! checklist #3, #35; brief: static tokens, noauth).

use serde_json::{Value, json};

use crate::helpers::*;

fn unauthorized_body() -> Value {
    json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})
}

#[track_caller]
fn assert_401(r: &Resp, uri: &str) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json(), unauthorized_body());
    assert_eq!(r.content_type(), Some("application/json; charset=UTF-8"));
    assert_eq!(r.header_all("www-authenticate"), vec![format!("Keystone uri=\"{uri}\"")]);
}

// §12 #35
#[tokio::test]
async fn missing_or_invalid_token_is_401_keystone_format() {
    let env = Env::new();
    let id = env.seed(&Seed::new().public().prop("a", "1"))["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let calls = vec![
        srv.get(&meta_path(&id)).no_token(),
        srv.get(&meta_path(&id)).token("not-a-token"),
        srv.get(&meta_path(&id)).token(""),
        srv.get("/v2.1/images").no_token(),
        srv.get(&format!("/v2/images/{id}")).token("nope"),
        srv.post(&meta_path(&id), json!({"metadata": {"b": "2"}})).no_token(),
        srv.delete(&image_path(&id)).token("TOK-A-MEMBER"),
        srv.get("/v2.1/limits").no_token(),
    ];
    for c in calls {
        let r = c.send().await;
        assert_401(&r, "http://127.0.0.1:5000");
        assert_request_ids(&r);
    }
    assert_eq!(srv.metadata_of(&id).await, json!({"a": "1"}));
    assert_eq!(srv.get(&image_path(&id)).send().await.status, 200);
}

// §2 order: authentication comes before routing, microversions, content type and body
#[tokio::test]
async fn auth_is_checked_before_routing_and_validation() {
    let env = Env::new();
    let id = env.seed(&Seed::new())["id"].as_str().unwrap().to_string();
    let srv = env.start();

    let unrouted = srv.get("/v2.1/nothing").no_token().send().await;
    let bad_mv = srv.get(&meta_path(&id)).mv("abc").no_token().send().await;
    let bad_ct = srv.get(&meta_path(&id)).content_type("application/xml").no_token().send().await;
    let bad_body = srv.call("POST", &meta_path(&id)).json_bytes("{").no_token().send().await;

    for r in [&unrouted, &bad_mv, &bad_ct, &bad_body] {
        assert_401(r, "http://127.0.0.1:5000");
    }
}

// Brief: WWW-Authenticate is configurable
#[tokio::test]
async fn www_authenticate_uri_is_configurable() {
    let env = Env::new();
    let srv = env.start_with(&ServerOpts {
        extra_args: vec!["--www-authenticate-uri".into(), "https://keystone.example.com/identity".into()],
        ..Default::default()
    });

    let r = srv.get("/v2.1/images").no_token().send().await;

    assert_401(&r, "https://keystone.example.com/identity");
}

// ---------------------------------------------------------------------------
// Authorization matrix (§9)
// ---------------------------------------------------------------------------

struct Images {
    a_private: String,
    a_public: String,
    a_community: String,
    a_shared: String,
    b_private: String,
}

fn seed_matrix(env: &Env) -> Images {
    let mk = |s: Seed| env.seed(&s.prop("k", "v"))["id"].as_str().unwrap().to_string();
    Images {
        a_private: mk(Seed::new().name("a-private").created_at("2026-01-01T00:00:05Z")),
        a_public: mk(Seed::new().name("a-public").public().created_at("2026-01-01T00:00:04Z")),
        a_community: mk(Seed::new().name("a-community").visibility("community").created_at("2026-01-01T00:00:03Z")),
        a_shared: mk(Seed::new().name("a-shared").visibility("shared").created_at("2026-01-01T00:00:02Z")),
        b_private: mk(Seed::new().name("b-private").owner(PROJ_B).created_at("2026-01-01T00:00:01Z")),
    }
}

async fn read_statuses(srv: &Server, token: &str, id: &str) -> [u16; 3] {
    [
        srv.get(&image_path(id)).token(token).send().await.status,
        srv.get(&meta_path(id)).token(token).send().await.status,
        srv.get(&key_path(id, "k")).token(token).send().await.status,
    ]
}

fn listed(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
}

/// Runs every metadata write plus the image delete; asserts each is refused
/// with `code` and the matching message, and that nothing changed.
async fn assert_writes_refused(srv: &Server, token: &str, id: &str, code: u16) {
    let post = srv.post(&meta_path(id), json!({"metadata": {"n": "1"}})).token(token).send().await;
    let put = srv.put(&meta_path(id), json!({"metadata": {}})).token(token).send().await;
    let put_item = srv.put(&key_path(id, "k"), json!({"meta": {"k": "x"}})).token(token).send().await;
    let del_key = srv.delete(&key_path(id, "k")).token(token).send().await;
    let del = srv.delete(&image_path(id)).token(token).send().await;
    if code == 404 {
        for r in [&post, &put, &put_item, &del_key, &del] {
            assert_fault(r, 404, "itemNotFound", "Image not found.");
        }
    } else {
        let msg = format!("Not authorized for image {id}.");
        for r in [&post, &put, &put_item, &del_key] {
            assert_fault(r, 403, "forbidden", &msg);
        }
        assert_fault(&del, 403, "forbidden", "You are not allowed to delete the image.");
    }
    assert_eq!(srv.metadata_of(id).await, json!({"k": "v"}), "image {id} unchanged");
    assert_eq!(srv.get(&image_path(id)).token(TOK_ADMIN).send().await.status, 200, "image {id} still exists");
}

/// Runs every write and expects success.
async fn assert_writes_allowed(srv: &Server, token: &str, id: &str) {
    let post = srv.post(&meta_path(id), json!({"metadata": {"n": "1"}})).token(token).send().await;
    assert_json(&post, 200, &json!({"metadata": {"k": "v", "n": "1"}}));
    let put_item = srv.put(&key_path(id, "k"), json!({"meta": {"k": "x"}})).token(token).send().await;
    assert_json(&put_item, 200, &json!({"meta": {"k": "x"}}));
    let del_key = srv.delete(&key_path(id, "n")).token(token).send().await;
    assert_no_content(&del_key);
    let put = srv.put(&meta_path(id), json!({"metadata": {"z": "1"}})).token(token).send().await;
    assert_json(&put, 200, &json!({"metadata": {"z": "1"}}));
    let del = srv.delete(&image_path(id)).token(token).send().await;
    assert_no_content(&del);
    assert_eq!(srv.get(&image_path(id)).token(TOK_ADMIN).send().await.status, 404);
}

// §9 matrix: owner project member reads and writes its images
#[tokio::test]
async fn member_of_owner_project_reads_and_writes() {
    let env = Env::new();
    let im = seed_matrix(&env);
    let srv = env.start();

    for id in [&im.a_private, &im.a_public, &im.a_community, &im.a_shared] {
        assert_eq!(read_statuses(&srv, TOK_A, id).await, [200, 200, 200], "read {id}");
    }
    assert_eq!(read_statuses(&srv, TOK_A, &im.b_private).await, [404, 404, 404]);
    assert_eq!(
        listed(&srv.get("/v2.1/images").token(TOK_A).send().await),
        vec!["a-private", "a-public", "a-community", "a-shared"]
    );
    assert_writes_refused(&srv, TOK_A, &im.b_private, 404).await;
    for id in [&im.a_private, &im.a_public, &im.a_community, &im.a_shared] {
        assert_writes_allowed(&srv, TOK_A, id).await;
    }
}

// §9 matrix: a reader-only token reads but every write is 403
#[tokio::test]
async fn reader_only_token_reads_but_cannot_write() {
    let env = Env::new();
    let im = seed_matrix(&env);
    let srv = env.start();

    for id in [&im.a_private, &im.a_public] {
        assert_eq!(read_statuses(&srv, TOK_A_READER, id).await, [200, 200, 200], "read {id}");
        assert_writes_refused(&srv, TOK_A_READER, id, 403).await;
    }
    assert_eq!(read_statuses(&srv, TOK_A_READER, &im.b_private).await, [404, 404, 404]);
    assert_eq!(
        listed(&srv.get("/v2.1/images/detail").token(TOK_A_READER).send().await),
        vec!["a-private", "a-public", "a-community", "a-shared"]
    );
}

// §9 matrix: another project sees public (and community by id) images read-only,
// and never sees private or unshared images
#[tokio::test]
async fn other_project_sees_public_read_only_and_not_private() {
    let env = Env::new();
    let im = seed_matrix(&env);
    let srv = env.start();

    assert_eq!(read_statuses(&srv, TOK_B, &im.a_private).await, [404, 404, 404]);
    assert_eq!(read_statuses(&srv, TOK_B, &im.a_shared).await, [404, 404, 404]);
    assert_eq!(read_statuses(&srv, TOK_B, &im.a_public).await, [200, 200, 200]);
    assert_eq!(read_statuses(&srv, TOK_B, &im.a_community).await, [200, 200, 200]);
    assert_eq!(read_statuses(&srv, TOK_B, &im.b_private).await, [200, 200, 200]);
    assert_eq!(listed(&srv.get("/v2.1/images").token(TOK_B).send().await), vec!["a-public", "b-private"]);
    assert_writes_refused(&srv, TOK_B, &im.a_private, 404).await;
    assert_writes_refused(&srv, TOK_B, &im.a_shared, 404).await;
    assert_writes_refused(&srv, TOK_B, &im.a_public, 403).await;
    assert_writes_refused(&srv, TOK_B, &im.a_community, 403).await;
}

// §9 matrix: admin sees and changes everything (community images of others
// are not in the default list, per Glance's rule)
#[tokio::test]
async fn admin_reads_and_writes_every_image() {
    let env = Env::new();
    let im = seed_matrix(&env);
    let srv = env.start();

    for id in [&im.a_private, &im.a_public, &im.a_community, &im.a_shared, &im.b_private] {
        assert_eq!(read_statuses(&srv, TOK_ADMIN, id).await, [200, 200, 200], "read {id}");
    }
    assert_eq!(
        listed(&srv.get("/v2.1/images").token(TOK_ADMIN).send().await),
        vec!["a-private", "a-public", "a-shared", "b-private"]
    );
    for id in [&im.a_private, &im.a_public, &im.b_private] {
        assert_writes_allowed(&srv, TOK_ADMIN, id).await;
    }
}

// ---------------------------------------------------------------------------
// noauth mode
// ---------------------------------------------------------------------------

fn noauth_opts() -> ServerOpts {
    ServerOpts { auth: Auth::Noauth, ..Default::default() }
}

// Brief: noauth token `user:project`, admin iff user is `admin`
#[tokio::test]
async fn noauth_token_is_user_colon_project() {
    let env = Env::new();
    let id = env.seed(&Seed::new().prop("k", "v"))["id"].as_str().unwrap().to_string();
    let srv = env.start_with(&noauth_opts());

    let owner = srv.get(&meta_path(&id)).token(&format!("alice:{PROJ_A}")).send().await;
    let stranger = srv.get(&meta_path(&id)).token(&format!("bob:{PROJ_B}")).send().await;
    let admin = srv.get(&meta_path(&id)).token(&format!("admin:{PROJ_B}")).send().await;
    let owner_write =
        srv.post(&meta_path(&id), json!({"metadata": {"n": "1"}})).token(&format!("alice:{PROJ_A}")).send().await;
    let url_project = srv.get(&format!("/v2.1/{PROJ_A}/images/{id}")).token(&format!("alice:{PROJ_A}")).send().await;

    assert_json(&owner, 200, &json!({"metadata": {"k": "v"}}));
    assert_fault(&stranger, 404, "itemNotFound", "Image not found.");
    assert_json(&admin, 200, &json!({"metadata": {"k": "v"}}));
    assert_json(&owner_write, 200, &json!({"metadata": {"k": "v", "n": "1"}}));
    assert_eq!(url_project.status, 200, "{}", url_project.text());
}

// Brief: in noauth mode the project defaults to the user
#[tokio::test]
async fn noauth_project_defaults_to_user() {
    let env = Env::new();
    let id = env.seed(&Seed::new().owner("abc123"))["id"].as_str().unwrap().to_string();
    let srv = env.start_with(&noauth_opts());

    let r = srv.get(&format!("/v2.1/abc123/images/{id}")).token("abc123").send().await;
    let other = srv.get(&image_path(&id)).token("def456").send().await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_fault(&other, 404, "itemNotFound", "Image not found.");
}

// Brief: noauth refuses a non-loopback listen address without --force-noauth.
// 192.0.2.1 (TEST-NET-1) is never bound, so nothing listens outside loopback
// even if the check were missing; the error must name the noauth refusal.
#[test]
fn noauth_refuses_non_loopback_listen_address() {
    let env = Env::new();
    let out = env.cli(&["serve", "--compute-listen", "192.0.2.1:0", "--database", &env.db_url(), "--auth", "noauth"]);

    assert!(!out.status.success(), "must exit non-zero");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!stdout.contains("listening"), "must not listen: {stdout}");
    assert!(stderr.contains("noauth") || stderr.contains("loopback"), "error explains the noauth refusal: {stderr}");
}

// A Keystone CA file that is missing or holds no certificate stops the server before it
// listens, with an error that names the file or says what is wrong with it.
#[test]
fn a_bad_keystone_ca_file_is_refused_at_start() {
    let env = Env::new();
    let not_pem = env.dir().join("not-a-ca.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let missing = env.dir().join("missing.pem");
    for (file, says) in [
        (&missing, format!("--keystone-cafile {}", missing.display())),
        (&not_pem, "the Keystone CA file holds no PEM certificate".to_owned()),
    ] {
        let out = env.cli(&[
            "serve",
            "--compute-listen",
            "127.0.0.1:0",
            "--image-listen",
            "127.0.0.1:0",
            "--database",
            &env.db_url(),
            "--auth",
            "keystone",
            "--keystone-url",
            "https://127.0.0.1:9",
            "--keystone-username",
            "imagemeta",
            "--keystone-password",
            "secret",
            "--keystone-cafile",
            file.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "must exit non-zero");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&says), "expected {says:?} in: {stderr}");
    }
}
