//! `--auth keystone` against a real Keystone (issue 4).
//!
//! These tests need the Keystone that `ci/keystone/` installs and starts; `.ci/run` does that
//! and runs them with `--ignored --test-threads=1` (one of them stops and restarts Keystone).
//! `IMAGEMETA_KEYSTONE_STATE` names the harness's state directory, whose `fixtures.json`
//! lists the projects, users and the service user.

#[path = "../api/helpers.rs"]
mod helpers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use helpers::*;

const NEEDS: &str = "needs a Keystone: run by .ci/run (ci/keystone)";

struct Keystone {
    state: PathBuf,
    fixtures: Value,
    http: reqwest::Client,
}

impl Keystone {
    fn from_env() -> Keystone {
        let state = PathBuf::from(std::env::var("IMAGEMETA_KEYSTONE_STATE").expect("IMAGEMETA_KEYSTONE_STATE"));
        let text = std::fs::read_to_string(state.join("fixtures.json")).expect("fixtures.json");
        imagemeta::auth::keystone::install_tls();
        Keystone { state, fixtures: serde_json::from_str(&text).unwrap(), http: reqwest::Client::new() }
    }

    fn url(&self) -> String {
        self.fixtures["keystone_url"].as_str().unwrap().trim_end_matches('/').to_owned()
    }

    fn project_id(&self, name: &str) -> String {
        self.fixtures["projects"][name]["id"].as_str().unwrap().to_owned()
    }

    /// A project-scoped token for a fixture user.
    async fn token(&self, user: &str) -> String {
        let u = if user == "admin" { &self.fixtures["admin"] } else { &self.fixtures["users"][user] };
        let project = u["project"].as_str().unwrap_or("admin");
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": u["name"], "domain": {"id": "default"}, "password": u["password"]}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
        let r = self.http.post(format!("{}/v3/auth/tokens?nocatalog", self.url())).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "login of {user}");
        r.headers()["x-subject-token"].to_str().unwrap().to_owned()
    }

    async fn revoke(&self, token: &str) {
        let r = self
            .http
            .delete(format!("{}/v3/auth/tokens", self.url()))
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "revocation");
    }

    fn script(&self, name: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ci/keystone/");
        let status = std::process::Command::new(format!("{script}{name}"))
            .arg(&self.state)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{name}");
    }

    /// The same Keystone over HTTPS (`ci/keystone/start_tls.sh`), and its CA's certificate.
    fn tls(&self) -> (String, PathBuf) {
        let port = std::fs::read_to_string(self.state.join("tls/port")).expect("start_tls.sh ran");
        (format!("https://127.0.0.1:{}", port.trim()), self.state.join("tls/ca.pem"))
    }

    /// imagemeta in keystone mode with the fixture service user.
    fn serve(&self, env: &Env, extra: &[&str]) -> Server {
        self.serve_at(env, &self.url(), extra)
    }

    /// The same, with Keystone at `url`.
    fn serve_at(&self, env: &Env, url: &str, extra: &[&str]) -> Server {
        let svc = &self.fixtures["service_user"];
        let mut args: Vec<String> = vec![
            "--auth".into(),
            "keystone".into(),
            "--keystone-url".into(),
            url.into(),
            "--keystone-username".into(),
            svc["name"].as_str().unwrap().into(),
            "--keystone-password".into(),
            svc["password"].as_str().unwrap().into(),
            "--keystone-project".into(),
            svc["project"].as_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        env.start_with(&ServerOpts { auth: Auth::External, extra_args: args, ..Default::default() })
    }
}

async fn status(h: &Handle, method: &str, path: &str, token: &str, body: Option<Value>) -> u16 {
    let mut call = h.call(method, path).token(token);
    if let Some(b) = body {
        call = if method == "PATCH" {
            call.body(serde_json::to_vec(&b).unwrap()).content_type("application/openstack-images-v2.1-json-patch")
        } else {
            call.json(&b)
        };
    }
    call.send().await.status
}

#[tokio::test]
#[ignore = "needs a Keystone: run by .ci/run (ci/keystone)"]
async fn ownership_matrix_across_two_projects_and_both_apis() {
    let _ = NEEDS;
    let ks = Keystone::from_env();
    let env = Env::new();
    let server = ks.serve(&env, &["--token-cache-ttl", "60"]);
    let (glance, nova) = (server.image(), server.handle());
    let alpha = ks.token("alpha-member").await;
    let alpha_reader = ks.token("alpha-reader").await;
    let beta = ks.token("beta-member").await;
    let admin = ks.token("admin").await;

    // alpha's private image, and a public image of alpha's created by the admin.
    let private = glance
        .call("POST", "/v2/images")
        .token(&alpha)
        .json(&json!({"name": "p", "visibility": "private"}))
        .send()
        .await;
    assert_eq!(private.status, 201, "{}", private.text());
    assert_eq!(private.json()["owner"], json!(ks.project_id("alpha")));
    let p = private.json()["id"].as_str().unwrap().to_owned();
    let public = glance
        .call("POST", "/v2/images")
        .token(&admin)
        .json(&json!({"name": "q", "visibility": "public", "owner": ks.project_id("alpha")}))
        .send()
        .await;
    assert_eq!(public.status, 201, "{}", public.text());
    let q = public.json()["id"].as_str().unwrap().to_owned();
    let patch = json!([{"op": "add", "path": "/k", "value": "v"}]);
    let meta = json!({"metadata": {"k": "v"}});

    // (who, image, read, write) for both APIs.
    let cases = [
        ("alpha member, own private", &alpha, &p, 200, 200),
        ("alpha reader, own private", &alpha_reader, &p, 200, 403),
        ("beta member, alpha's private", &beta, &p, 404, 404),
        ("beta member, alpha's public", &beta, &q, 200, 403),
        ("admin, alpha's private", &admin, &p, 200, 200),
    ];
    for (what, token, id, read, write) in cases {
        assert_eq!(status(&glance, "GET", &format!("/v2/images/{id}"), token, None).await, read, "glance read: {what}");
        assert_eq!(
            status(&nova, "GET", &format!("/v2.1/images/{id}/metadata"), token, None).await,
            read,
            "nova read: {what}"
        );
        assert_eq!(
            status(&glance, "PATCH", &format!("/v2/images/{id}"), token, Some(patch.clone())).await,
            write,
            "glance write: {what}"
        );
        assert_eq!(
            status(&nova, "POST", &format!("/v2.1/images/{id}/metadata"), token, Some(meta.clone())).await,
            write,
            "nova write: {what}"
        );
    }
    // A beta member's list holds alpha's public image but not its private one.
    let listed = glance.call("GET", "/v2/images").token(&beta).send().await.json();
    let ids: Vec<&str> = listed["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&q.as_str()) && !ids.contains(&p.as_str()), "{ids:?}");

    // A token Keystone does not know: 401 in Keystone's format, pointing at Keystone.
    let bogus = nova.call("GET", "/v2.1/images").token("not-a-token").send().await;
    assert_eq!(bogus.status, 401);
    assert_eq!(bogus.header("www-authenticate"), Some(format!("Keystone uri=\"{}\"", ks.url()).as_str()));
    assert_eq!(
        bogus.json(),
        json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})
    );
    assert_eq!(glance.call("GET", "/v2/images").token("not-a-token").send().await.status, 401);

    // Tokens never reach the logs.
    let log = server.stderr();
    for t in [&alpha, &alpha_reader, &beta, &admin] {
        assert!(!log.contains(t.as_str()), "a token appears in the server log");
    }
}

#[tokio::test]
#[ignore = "needs a Keystone: run by .ci/run (ci/keystone)"]
async fn a_revoked_token_stops_working_within_the_cache_ttl() {
    let ks = Keystone::from_env();
    let env = Env::new();
    let server = ks.serve(&env, &["--token-cache-ttl", "2", "--token-negative-ttl", "1"]);
    let nova = server.handle();
    let token = ks.token("alpha-member").await;
    assert_eq!(status(&nova, "GET", "/v2.1/images", &token, None).await, 200);

    ks.revoke(&token).await;
    let revoked = Instant::now();
    let mut last = 200;
    while revoked.elapsed() < Duration::from_secs(20) {
        last = status(&nova, "GET", "/v2.1/images", &token, None).await;
        if last == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, 401, "the revoked token still works");
    // Cached for at most the TTL (2 s), plus one validation round trip.
    assert!(revoked.elapsed() < Duration::from_secs(10), "took {:?}", revoked.elapsed());
}

#[tokio::test]
#[ignore = "needs a Keystone: run by .ci/run (ci/keystone)"]
async fn keystone_down_is_503_with_retry_after_and_recovers_without_restart() {
    let ks = Keystone::from_env();
    let env = Env::new();
    let server = ks.serve(&env, &["--token-cache-ttl", "60"]);
    let (glance, nova) = (server.image(), server.handle());
    let warm = ks.token("alpha-member").await;
    let fresh = ks.token("beta-member").await;
    assert_eq!(status(&nova, "GET", "/v2.1/images", &warm, None).await, 200);

    ks.script("stop.sh");
    let down = nova.call("GET", "/v2.1/images").token(&fresh).send().await;
    let glance_down = glance.call("GET", "/v2/images").token(&fresh).header("Accept", "application/json").send().await;
    // A validation cached before the outage keeps working.
    let cached = status(&nova, "GET", "/v2.1/images", &warm, None).await;
    ks.script("start.sh");

    assert_fault(&down, 503, "serviceUnavailable", "The identity service is unavailable. Please retry later.");
    assert_eq!(down.header("retry-after"), Some("5"));
    assert_eq!(glance_down.status, 503);
    assert_eq!(glance_down.header("retry-after"), Some("5"));
    assert_eq!(cached, 200);

    // Back up: the same token now validates, no restart of imagemeta needed.
    let mut after = 0;
    for _ in 0..50 {
        after = status(&nova, "GET", "/v2.1/images", &fresh, None).await;
        if after == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(after, 200);
    assert_eq!(status(&glance, "GET", "/v2/images", &fresh, None).await, 200);
}

/// An `https` Keystone: its certificate is checked against the system's roots plus
/// `--keystone-cafile`; one it cannot check makes every authenticated request a 503 whose log
/// line says why, until the operator fixes the configuration; `--keystone-insecure` skips it.
#[tokio::test]
#[ignore = "needs a Keystone: run by .ci/run (ci/keystone)"]
async fn an_https_keystone_is_checked_against_the_ca_file() {
    let ks = Keystone::from_env();
    let (url, ca) = ks.tls();
    let alpha = ks.token("alpha-member").await;

    let env = Env::new();
    let server = ks.serve_at(&env, &url, &["--keystone-cafile", ca.to_str().unwrap()]);
    assert_eq!(status(&server.handle(), "GET", "/v2.1/images", &alpha, None).await, 200);
    assert_eq!(status(&server.image(), "GET", "/v2/images", &alpha, None).await, 200);
    assert_eq!(status(&server.handle(), "GET", "/v2.1/images", "not-a-token", None).await, 401);
    drop(server);

    // The test CA is not among the system's roots.
    let untrusted = Env::new();
    let server = ks.serve_at(&untrusted, &url, &[]);
    let r = server.handle().call("GET", "/v2.1/images").token(&alpha).send().await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    let log = server.stderr();
    assert!(log.contains("invalid peer certificate"), "the log does not say why Keystone is unreachable:\n{log}");
    drop(server);

    let insecure = Env::new();
    let server = ks.serve_at(&insecure, &url, &["--keystone-insecure"]);
    assert_eq!(status(&server.handle(), "GET", "/v2.1/images", &alpha, None).await, 200);
}

/// The admin role outside Keystone's admin project: a cloud-wide admin by default, as in Nova's
/// and Glance's default policies (`context_is_admin` is `role:admin`; tempest's admin tests
/// rely on it); only a member of its own project with `--keystone-admin-project-only`.
#[tokio::test]
#[ignore = "needs a Keystone: run by .ci/run (ci/keystone)"]
async fn the_admin_role_outside_the_admin_project() {
    let ks = Keystone::from_env();
    let beta = ks.token("beta-member").await;
    let alpha_admin = ks.token("alpha-admin").await;

    // beta's private image, on a server started with `flags`.
    async fn betas_image(ks: &Keystone, env: &Env, flags: &[&str], beta: &str) -> (Server, String) {
        let server = ks.serve(env, flags);
        let private = server
            .image()
            .call("POST", "/v2/images")
            .token(beta)
            .json(&json!({"name": "beta's", "visibility": "private"}))
            .send()
            .await;
        assert_eq!(private.status, 201, "{}", private.text());
        let id = private.json()["id"].as_str().unwrap().to_owned();
        (server, id)
    }

    let env = Env::new();
    let (server, id) = betas_image(&ks, &env, &[], &beta).await;
    let (glance, nova) = (server.image(), server.handle());
    assert_eq!(status(&nova, "GET", &format!("/v2.1/images/{id}"), &alpha_admin, None).await, 200);
    assert_eq!(status(&glance, "GET", &format!("/v2/images/{id}"), &alpha_admin, None).await, 200);
    let meta = json!({"metadata": {"by": "alpha-admin"}});
    assert_eq!(status(&nova, "POST", &format!("/v2.1/images/{id}/metadata"), &alpha_admin, Some(meta)).await, 200);
    drop(server);

    let strict = Env::new();
    let (server, id) = betas_image(&ks, &strict, &["--keystone-admin-project-only"], &beta).await;
    let (glance, nova) = (server.image(), server.handle());
    assert_eq!(status(&nova, "GET", &format!("/v2.1/images/{id}"), &alpha_admin, None).await, 404);
    assert_eq!(status(&glance, "GET", &format!("/v2/images/{id}"), &alpha_admin, None).await, 404);
    // Still a member of its own project (admin implies member in Keystone).
    let own = glance.call("POST", "/v2/images").token(&alpha_admin).json(&json!({"name": "own"})).send().await;
    assert_eq!(own.status, 201, "{}", own.text());
}

/// Image data in a Swift that authenticates with Keystone v3 (`swift://…?auth_url=…/v3`): the
/// store logs in as a project member, finds its endpoint in the catalog, and every upload,
/// download and delete goes through Swift's `authtoken` and `keystoneauth`.
/// `IMAGEMETA_TEST_SWIFT_KEYSTONE`: the JSON of `ci/swift/start_keystone_proxy.sh`.
#[tokio::test]
#[ignore = "needs a Keystone and a Swift behind it: run by .ci/run (ci/keystone, ci/swift)"]
async fn image_data_in_swift_behind_keystone() {
    let spec: Value = serde_json::from_str(
        &std::env::var("IMAGEMETA_TEST_SWIFT_KEYSTONE")
            .expect("IMAGEMETA_TEST_SWIFT_KEYSTONE (ci/swift/start_keystone_proxy.sh)"),
    )
    .unwrap();
    let text = |k: &str| spec[k].as_str().unwrap().to_owned();
    let container = format!("images-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let store = format!("swift=swift://{container}?auth_url={}", text("auth_url"));
    let env_with = |password: &str| {
        vec![
            ("IMAGEMETA_SWIFT_USER".to_owned(), text("user")),
            ("IMAGEMETA_SWIFT_KEY".to_owned(), password.to_owned()),
            ("IMAGEMETA_SWIFT_PROJECT".to_owned(), text("project")),
        ]
    };
    let opts = |password: &str| ServerOpts {
        extra_args: vec!["--image-store".into(), store.clone()],
        env: env_with(password),
        ..Default::default()
    };

    // Wrong credentials: the server says so and does not start.
    let env = Env::new();
    let (status, stderr) = env.start_fails(&opts("not-the-password"));
    assert!(!status.success());
    assert!(stderr.contains("swift"), "{stderr}");

    let server = env.start_with(&opts(&text("password")));
    let glance = server.image();
    let created = glance
        .call("POST", "/v2/images")
        .token(TOK_A)
        .json(&json!({"name": "in swift", "disk_format": "raw", "container_format": "bare"}))
        .send()
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let put = glance
        .call("PUT", &format!("/v2/images/{id}/file"))
        .token(TOK_A)
        .content_type("application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    assert_eq!(put.status, 204, "{}", put.text());
    let got = glance.call("GET", &format!("/v2/images/{id}/file")).token(TOK_A).send().await;
    assert!(got.status == 200 && got.body == data, "download: {} {} bytes", got.status, got.body.len());

    // In Swift, as the same Keystone user sees its account.
    let http = reqwest::Client::new();
    let login = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": text("user"), "domain": {"id": "default"}, "password": text("password")}}},
        "scope": {"project": {"name": text("project"), "domain": {"id": "default"}}}}});
    let r = http.post(format!("{}/auth/tokens?nocatalog", text("auth_url"))).json(&login).send().await.unwrap();
    let token = r.headers()["x-subject-token"].to_str().unwrap().to_owned();
    let listing = |token: String| {
        let url = format!("{}/{container}?format=json", text("storage_url"));
        let http = http.clone();
        async move {
            let r = http.get(url).header("X-Auth-Token", token).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Vec<Value>>().await.unwrap()
        }
    };
    let objects = listing(token.clone()).await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0]["bytes"], json!(data.len()));

    let deleted = glance.call("DELETE", &format!("/v2/images/{id}")).token(TOK_A).send().await;
    assert_eq!(deleted.status, 204);
    assert_eq!(listing(token).await, Vec::<Value>::new(), "the delete removed the object");
}

/// `glance-download`: an image of "another" Glance (this same server, registered in the real
/// Keystone's catalog in a region of its own, as tempest does it), found in the caller's
/// catalog; its data, formats and Glance's chosen properties come over; a bad region, a
/// missing image and a bad id fail as Glance's do, with the image back to `queued`.
#[tokio::test]
#[ignore = "needs a Keystone: run by .ci/run (ci/keystone)"]
async fn glance_download_imports_from_the_glance_in_the_catalog() {
    let ks = Keystone::from_env();
    let env = Env::new();
    let methods = "--import-methods=glance-direct,web-download,copy-image,glance-download";
    let server = ks.serve(&env, &[methods]);
    let glance = server.image();
    let admin = ks.token("admin").await;
    let alpha = ks.token("alpha-member").await;

    // The image service in the catalog, in a region of its own (removed again at the end).
    let region = format!("imagemeta-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let post = |path: &str, body: Value| {
        ks.http.post(format!("{}/v3/{path}", ks.url())).header("X-Auth-Token", &admin).json(&body).send()
    };
    let r = post("regions", json!({"region": {"id": region}})).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = post("services", json!({"service": {"type": "image", "name": format!("glance-{region}")}})).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let service = r.json::<Value>().await.unwrap()["service"]["id"].as_str().unwrap().to_owned();
    let endpoint = json!({"endpoint": {"service_id": service, "interface": "public", "region_id": region,
                                       "url": server.image_base}});
    let r = post("endpoints", endpoint).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // A token issued after the registration sees it in its catalog.
    let alpha = {
        let _ = alpha;
        ks.token("alpha-member").await
    };

    let create = |body: Value| glance.call("POST", "/v2/images").token(&alpha).json(&body).send();
    let patch = |id: String, ops: Value| {
        glance
            .call("PATCH", &format!("/v2/images/{id}"))
            .token(&alpha)
            .content_type("application/openstack-images-v2.1-json-patch")
            .body(serde_json::to_vec(&ops).unwrap())
            .send()
    };
    let show = |id: String| glance.call("GET", &format!("/v2/images/{id}")).token(&alpha).send();
    let import = |id: String, method: Value| {
        glance.call("POST", &format!("/v2/images/{id}/import")).token(&alpha).json(&json!({"method": method})).send()
    };
    let wait = |id: String| {
        let (glance, alpha) = (glance.clone(), alpha.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = glance.call("GET", &format!("/v2/images/{id}/tasks")).token(&alpha).send().await;
                let tasks = r.json()["tasks"].as_array().cloned().unwrap_or_default();
                if let Some(t) = tasks.last().filter(|t| t["status"] == "success" || t["status"] == "failure") {
                    return t.clone();
                }
                assert!(Instant::now() < deadline, "the import never ended: {tasks:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // The source: active, with properties Glance brings (hw_*, trait:*, os_distro) and one
    // it does not.
    let src = create(json!({"name": "src", "disk_format": "raw", "container_format": "bare"})).await;
    let src = src.json()["id"].as_str().unwrap().to_owned();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let put = glance
        .call("PUT", &format!("/v2/images/{src}/file"))
        .token(&alpha)
        .content_type("application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    assert_eq!(put.status, 204);
    let ops = json!([{"op": "add", "path": "/hw_cpu_cores", "value": "5"},
                     {"op": "add", "path": "/trait:STORAGE_DISK_SSD", "value": "required"},
                     {"op": "add", "path": "/os_distro", "value": "rhel"},
                     {"op": "add", "path": "/speed", "value": "88mph"}]);
    assert_eq!(patch(src.clone(), ops).await.status, 200);

    // The target: other formats and conflicting values, replaced by the source's.
    let dst = create(json!({"name": "dst", "disk_format": "iso", "container_format": "ovf"})).await;
    let dst = dst.json()["id"].as_str().unwrap().to_owned();
    let ops = json!([{"op": "add", "path": "/hw_cpu_cores", "value": "1"},
                     {"op": "add", "path": "/os_distro", "value": "windows"}]);
    assert_eq!(patch(dst.clone(), ops).await.status, 200);
    // Glance's checks first.
    let bad =
        import(dst.clone(), json!({"name": "glance-download", "glance_image_id": "foo", "glance_region": region}))
            .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("Remote image id does not look like a UUID: foo"), "{}", bad.text());
    let bad = import(dst.clone(), json!({"name": "glance-download", "glance_image_id": src})).await;
    assert!(
        bad.text().contains("&#x27;glance_region&#x27; needs to be set for glance-download import method"),
        "{}",
        bad.text()
    );

    let method = json!({"name": "glance-download", "glance_image_id": src, "glance_region": region});
    assert_eq!(import(dst.clone(), method).await.status, 202);
    let task = wait(dst.clone()).await;
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(task["input"]["import_req"]["method"]["glance_service_interface"], "public");
    let got = show(dst.clone()).await.json();
    assert_eq!(
        (&got["status"], &got["disk_format"], &got["container_format"]),
        (&json!("active"), &json!("raw"), &json!("bare"))
    );
    assert_eq!(
        (&got["hw_cpu_cores"], &got["trait:STORAGE_DISK_SSD"], &got["os_distro"]),
        (&json!("5"), &json!("required"), &json!("rhel"))
    );
    assert!(got.get("speed").is_none(), "{got}");
    let file = glance.call("GET", &format!("/v2/images/{dst}/file")).token(&alpha).send().await;
    assert!(file.status == 200 && file.body == data, "the data came over");

    // A region without that endpoint, and an image the other Glance does not have: the task
    // fails, the image is queued again with what it had.
    for (image_id, region, interface, message) in [
        (
            src.clone(),
            "not a region".to_owned(),
            "not an interface",
            "not an interface glance endpoint not found for region not a region".to_owned(),
        ),
        ("36d4b546-64a2-4bb9-bdd0-ba676aa48f2c".to_owned(), region.clone(), "public", "HTTP 404".to_owned()),
    ] {
        let target = create(json!({"name": "t", "disk_format": "raw", "container_format": "bare"})).await;
        let target = target.json()["id"].as_str().unwrap().to_owned();
        assert_eq!(
            patch(target.clone(), json!([{"op": "add", "path": "/os_distro", "value": "windows"}])).await.status,
            200
        );
        let method = json!({"name": "glance-download", "glance_image_id": image_id, "glance_region": region,
                            "glance_service_interface": interface});
        assert_eq!(import(target.clone(), method).await.status, 202);
        let task = wait(target.clone()).await;
        assert_eq!(task["status"], "failure", "{task}");
        assert!(task["message"].as_str().unwrap().contains(&message), "{task}");
        let got = show(target).await.json();
        assert_eq!((&got["status"], &got["os_distro"]), (&json!("queued"), &json!("windows")));
    }

    // The catalog as it was.
    let delete = |path: String| ks.http.delete(format!("{}/v3/{path}", ks.url())).header("X-Auth-Token", &admin).send();
    let endpoints = ks
        .http
        .get(format!("{}/v3/endpoints?service_id={service}", ks.url()))
        .header("X-Auth-Token", &admin)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    for e in endpoints["endpoints"].as_array().unwrap() {
        delete(format!("endpoints/{}", e["id"].as_str().unwrap())).await.unwrap();
    }
    delete(format!("services/{service}")).await.unwrap();
    delete(format!("regions/{region}")).await.unwrap();
}
