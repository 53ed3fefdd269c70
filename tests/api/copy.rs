//! `imagemeta catalogue copy`: a whole catalogue moves between backends (SQLite to
//! PostgreSQL and back when a PostgreSQL server is at hand; SQLite to SQLite always) with
//! nothing lost: what both APIs show is the same before and after, and deleted ids stay
//! unusable.

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

/// Everything the APIs show of a catalogue, as an admin sees it.
async fn snapshot(server: &Server) -> Value {
    let images = g(server, "GET", "/v2/images?visibility=all&member_status=all&limit=1000&sort=name:asc")
        .token(TOK_ADMIN)
        .send()
        .await
        .json()["images"]
        .clone();
    let mut all = Vec::new();
    for image in images.as_array().unwrap() {
        let id = image["id"].as_str().unwrap();
        let members = g(server, "GET", &format!("/v2/images/{id}/members")).token(TOK_ADMIN).send().await.json();
        let metadata = server.get(&meta_path(id)).token(TOK_ADMIN).send().await.json();
        all.push(json!({"image": image, "members": members, "metadata": metadata}));
    }
    Value::Array(all)
}

fn copy(env: &Env, from: &str, to: &str) -> Value {
    let out = env.cli(&["catalogue", "copy", "--from", from, "--to", to]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_catalogue_moves_between_backends_with_nothing_lost() {
    let env = Env::new();
    let server = env.start();
    // Properties in an order that is not the alphabet's, tags, a member, data, a deleted id.
    let shared = create(
        &server,
        json!({"name": "a-shared", "visibility": "shared", "zeta": "1", "alpha": "2", "tags": ["t2", "t1"]}),
    )
    .await;
    let shared = shared["id"].as_str().unwrap().to_owned();
    let r = g(&server, "POST", &format!("/v2/images/{shared}/members")).json(&json!({"member": PROJ_B})).send().await;
    assert_eq!(r.status, 200);
    let r = g(&server, "PUT", &format!("/v2/images/{shared}/members/{PROJ_B}"))
        .token(TOK_B)
        .json(&json!({"status": "accepted"}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let active = active_raw(&server, b"data").await;
    assert_eq!(server.post(&meta_path(&active), json!({"metadata": {"m2": "x", "m1": "y"}})).send().await.status, 200);
    let gone = create_raw(&server).await;
    assert_no_content(&g(&server, "DELETE", &img_path(&gone)).send().await);
    env.seed(&Seed::new().name("z-seeded").public().created_at("2020-01-02T03:04:05Z").prop("k", "v"));
    let before = snapshot(&server).await;
    drop(server);

    let sqlite = format!("sqlite:{}", env.dir().join("copy.db").display());
    let mut hops = vec![(env.db_url(), sqlite.clone())];
    let mut dropped = None;
    if let Some(admin) = test_postgres() {
        // Built on PostgreSQL, copied to SQLite above; and from there into a new PostgreSQL
        // database.
        let name = format!("imagemeta_copy_{}", uuid::Uuid::new_v4().simple());
        let out = std::process::Command::new("psql")
            .args(["-q", &admin, "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .unwrap();
        assert!(out.status.success());
        let (server, _) = admin.rsplit_once('/').unwrap();
        hops.push((sqlite, format!("{server}/{name}?sslmode=disable")));
        dropped = Some((admin, name));
    }
    for (from, to) in hops {
        let copied = copy(&env, &from, &to);
        assert_eq!(copied, json!({"images": 3, "deleted_ids": 1}));
        // Into a catalogue that is not empty: refused.
        let refused = env.cli(&["catalogue", "copy", "--from", &from, "--to", &to]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));

        let server = env.start_with(&ServerOpts { database: Some(to.clone()), ..Default::default() });
        assert_eq!(snapshot(&server).await, before, "{from} → {to}");
        assert_eq!(g(&server, "GET", &file_path(&active)).send().await.body, b"data");
        // A deleted id stays unusable.
        let r = g(&server, "POST", "/v2/images").json(&json!({"id": gone, "name": "again"})).send().await;
        assert_eq!(r.status, 409, "{}", r.text());
    }
    if let Some((admin, name)) = dropped {
        let _ = std::process::Command::new("psql")
            .args(["-q", &admin, "-c", &format!("DROP DATABASE {name} WITH (FORCE)")])
            .output();
    }
}

/// `imagemeta data move`: every image's data goes from one store to another (file to file,
/// and on to S3 and Swift when a Swift is at hand), checked and recorded; downloads serve it
/// from there, and nothing is left in the old store.
#[tokio::test]
async fn image_data_moves_between_stores() {
    let env = Env::new();
    let (a, b) = (env.dir().join("store-a"), env.dir().join("store-b"));
    let mut stores = vec![format!("a=file://{}", a.display()), format!("b=file://{}", b.display())];
    let mut hops = vec![("a", "b")];
    let mut opts = ServerOpts::default();
    if let Some(swift) = crate::object_stores::swift() {
        let (container, bucket) = (crate::object_stores::unique("images"), crate::object_stores::unique("bucket"));
        let with_swift = crate::object_stores::stores_opts(&env, &swift, &container, &bucket, &[]);
        stores.extend(
            with_swift
                .extra_args
                .iter()
                .filter(|a| *a != "--image-store")
                .filter(|&a| !a.starts_with("file="))
                .cloned(),
        );
        opts.env = with_swift.env;
        hops.extend([("b", "s3"), ("s3", "swift"), ("swift", "a")]);
    }
    opts.extra_args = stores.iter().flat_map(|s| ["--image-store".to_owned(), s.clone()]).collect();
    let server = env.start_with(&opts);
    let big = pattern(9 << 20, 2);
    let ids = [active_raw(&server, b"small").await, active_raw(&server, &big).await];
    let queued = create_raw(&server).await;
    drop(server);

    for (from, to) in hops {
        let db = env.db_url();
        let mut args = vec!["data", "move", "--database", &db, "--from", from, "--to", to];
        for s in &stores {
            args.extend(["--image-store", s.as_str()]);
        }
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(&args).envs(opts.env.iter().map(|(k, v)| (k, v))).current_dir(env.dir());
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{from} → {to}: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["moved"], 2, "{from} → {to}: {report}");

        let server = env.start_with(&opts);
        for (id, data) in ids.iter().zip([b"small".to_vec(), big.clone()]) {
            assert_eq!(show(&server, id).await["stores"], to);
            assert!(g(&server, "GET", &file_path(id)).send().await.body == data, "{from} → {to}");
        }
        assert_eq!(show(&server, &queued).await["status"], "queued");
        // Nothing left where it came from (the file stores, seen directly).
        let left = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        match from {
            "a" => assert_eq!(left(&a), 0, "{from} → {to}"),
            "b" => assert_eq!(left(&b), 0, "{from} → {to}"),
            _ => {}
        }
    }
}
