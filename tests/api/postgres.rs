//! Several nodes on one PostgreSQL catalogue, and PostgreSQL's outages and TLS. These run when
//! `IMAGEMETA_TEST_DATABASE` names a PostgreSQL server (CI's second pass); the outage and TLS
//! tests start a cluster of their own with `ci/postgres/start.sh`, since they stop it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::glance_helpers::*;
use crate::helpers::*;

/// An environment on the test PostgreSQL server, if there is one.
fn pg_env() -> Option<Env> {
    test_postgres().map(|_| Env::new())
}

fn quota(n: i64) -> ServerOpts {
    ServerOpts { metadata_items: Some(n), ..Default::default() }
}

/// Two processes, one catalogue and one image store: data uploaded through one downloads
/// through the other; merges through both lose nothing; a quota race through both never
/// passes the quota; a write on one is read on the other within a second; another project's
/// private image is invisible on both; a delete through one is gone on both, with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_serve_one_catalogue() {
    let Some(env) = pg_env() else { return };
    let a = env.start_with(&quota(10));
    let b = env.start_with(&quota(10));

    let data = pattern(100_000, 3);
    let id = active_raw(&a, &data).await;
    assert_eq!(g(&b, "GET", &file_path(&id)).send().await.body, data);

    // 40 merges of distinct keys racing through both nodes at a quota of 10.
    let mut tasks = Vec::new();
    for n in 0..40 {
        let node = if n % 2 == 0 { a.handle() } else { b.handle() };
        let path = meta_path(&id);
        tasks.push(tokio::spawn(async move {
            (n, node.call("POST", &path).json(&json!({"metadata": {format!("k{n}"): "v"}})).send().await)
        }));
    }
    let mut acknowledged = std::collections::BTreeSet::new();
    for t in tasks {
        let (n, r) = t.await.unwrap();
        match r.status {
            200 => {
                acknowledged.insert(format!("k{n}"));
            }
            _ => assert_fault(&r, 403, "forbidden", "Image metadata limit exceeded"),
        }
    }
    assert_eq!(acknowledged.len(), 10, "exactly the quota");
    let stored: std::collections::BTreeSet<String> =
        a.metadata_of(&id).await.as_object().unwrap().keys().cloned().collect();
    assert_eq!(stored, acknowledged, "stored keys are exactly the acknowledged ones");
    assert_eq!(b.metadata_of(&id).await, a.metadata_of(&id).await);

    // Unlimited: 32 merges through both nodes, none lost.
    let a2 = env.start_with(&quota(-1));
    let b2 = env.start_with(&quota(-1));
    let other = active_raw(&a2, b"x").await;
    let mut tasks = Vec::new();
    for n in 0..32 {
        let node = if n % 2 == 0 { a2.handle() } else { b2.handle() };
        let path = meta_path(&other);
        tasks.push(tokio::spawn(async move {
            node.call("POST", &path).json(&json!({"metadata": {format!("m{n}"): format!("{n}")}})).send().await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(b2.metadata_of(&other).await.as_object().unwrap().len(), 32);

    // A write on one node, read on the other (which has it cached) within a second.
    for round in 0..3 {
        assert_eq!(b2.get(&meta_path(&other)).send().await.status, 200);
        let value = format!("r{round}");
        assert_eq!(a2.put(&key_path(&other, "m0"), json!({"meta": {"m0": value}})).send().await.status, 200);
        let written = Instant::now();
        loop {
            let md = b2.metadata_of(&other).await;
            if md["m0"] == json!(value) {
                break;
            }
            assert!(written.elapsed() < Duration::from_secs(1), "stale on the other node after 1 s: {md}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Two nodes on shared object stores: data uploaded through one (Swift, S3) downloads
    // through the other, and a delete through the other removes it.
    if let Some(swift) = crate::object_stores::swift() {
        let (container, bucket) = (crate::object_stores::unique("images"), crate::object_stores::unique("bucket"));
        let opts = crate::object_stores::stores_opts(&env, &swift, &container, &bucket, &[]);
        let (x, y) = (env.start_with(&opts), env.start_with(&opts));
        for store in ["swift", "s3"] {
            let id = create(&x, json!({"name": "shared", "disk_format": "raw", "container_format": "bare"})).await;
            let id = id["id"].as_str().unwrap().to_owned();
            let data = pattern(9 << 20, 4);
            let r = g(&x, "PUT", &file_path(&id))
                .content_type(OCTET)
                .header("X-Image-Meta-Store", store)
                .body(data.clone())
                .send()
                .await;
            assert_no_content(&r);
            assert!(g(&y, "GET", &file_path(&id)).send().await.body == data, "{store}: through the other node");
            assert_no_content(&y.delete(&image_path(&id)).send().await);
            assert_eq!(g(&x, "GET", &file_path(&id)).send().await.status, 404);
        }
    }

    // Another project's private image: invisible on both; its owner sees it on both.
    let private = env.seed(&Seed::new());
    let pid = private["id"].as_str().unwrap();
    for node in [&a, &b] {
        assert_eq!(node.get(&image_path(pid)).token(TOK_B).send().await.status, 404);
        assert_eq!(g(node, "GET", &img_path(pid)).token(TOK_B).send().await.status, 404);
        assert_eq!(node.get(&image_path(pid)).send().await.status, 200);
    }

    // Deleted through one node: gone on both (on the other within the cache's bound, 1 s),
    // data too.
    assert_no_content(&b.delete(&image_path(&id)).send().await);
    assert_eq!(b.get(&image_path(&id)).send().await.status, 404, "at once on the node that deleted it");
    let deleted = Instant::now();
    while a.get(&image_path(&id)).send().await.status != 404 {
        assert!(deleted.elapsed() < Duration::from_secs(1), "still there on the other node after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(g(&a, "GET", &file_path(&id)).send().await.status, 404);
    assert!(!std::fs::read_dir(env.dir().join("images")).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with(&id.bytes().map(|b| format!("{b:02x}")).collect::<String>())
    }));
}

/// A PostgreSQL cluster of this test's own, in `dir`: (its URL, the state directory).
fn own_cluster(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let state = dir.join("pg");
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/ci/postgres/start.sh"))
        .arg(&state)
        .output()
        .expect("run ci/postgres/start.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_owned();
    (url, state)
}

fn cluster(script: &str, state: &std::path::Path) {
    let out = std::process::Command::new(format!("{}/ci/postgres/{script}", env!("CARGO_MANIFEST_DIR")))
        .arg(state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

struct StopCluster(std::path::PathBuf);

impl Drop for StopCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/ci/postgres/stop.sh"))
            .arg(&self.0)
            .output();
    }
}

const UNAVAILABLE: &str = "The image catalogue is unavailable. Please retry later.";

/// The database goes away: both APIs answer 503 with Retry-After within 5 s, reads and
/// writes alike, never a 500 or a hang; when it is back, service resumes without a restart,
/// and no write refused during the outage was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_503_and_recovers_without_a_restart() {
    let Some(env) = pg_env() else { return };
    let (url, state) = own_cluster(env.dir());
    let _stop = StopCluster(state.clone());
    let server = env.start_with(&ServerOpts { database: Some(format!("{url}?sslmode=disable")), ..Default::default() });
    let id = active_raw(&server, b"kept").await;
    assert_eq!(server.post(&meta_path(&id), json!({"metadata": {"before": "outage"}})).send().await.status, 200);

    cluster("stop.sh", &state);
    type MakeCall = Box<dyn Fn() -> crate::helpers::Call>;
    let calls: Vec<(&str, MakeCall)> = vec![
        (
            "compute read",
            Box::new({
                let (s, p) = (server.handle(), meta_path(&id));
                move || s.call("GET", &p)
            }),
        ),
        (
            "compute write",
            Box::new({
                let (s, p) = (server.handle(), meta_path(&id));
                move || s.call("POST", &p).json(&json!({"metadata": {"during": "outage"}}))
            }),
        ),
        (
            "compute list",
            Box::new({
                let s = server.handle();
                move || s.call("GET", "/v2.1/images/detail")
            }),
        ),
        (
            "glance read",
            Box::new({
                let (s, p) = (server.image(), img_path(&id));
                move || s.call("GET", &p).header("Accept", "application/json")
            }),
        ),
        (
            "glance create",
            Box::new({
                let s = server.image();
                move || s.call("POST", "/v2/images").header("Accept", "application/json").json(&json!({"name": "x"}))
            }),
        ),
    ];
    for (what, call) in &calls {
        let started = Instant::now();
        let r = call().send().await;
        assert!(started.elapsed() < Duration::from_secs(5), "{what} took {:?}", started.elapsed());
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        assert_eq!(r.header("retry-after"), Some("5"), "{what}");
        assert!(r.text().contains(UNAVAILABLE) || r.text().contains("took too long"), "{what}: {}", r.text());
    }

    cluster("start.sh", &state);
    let back = Instant::now();
    loop {
        let r = server.get(&meta_path(&id)).send().await;
        if r.status == 200 {
            assert_eq!(r.json()["metadata"], json!({"before": "outage"}), "nothing refused was applied");
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "no recovery: {}", r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.post(&meta_path(&id), json!({"metadata": {"after": "outage"}})).send().await.status, 200);
    assert_eq!(g(&server, "GET", &file_path(&id)).send().await.body, b"kept");
    assert!(!server.stderr().contains("panicked"));
}

/// TLS to PostgreSQL: `require` encrypts; `verify-full` checks the certificate against
/// `sslrootcert` (and the name); without the right root the server refuses to start, saying
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_follows_sslmode() {
    let Some(env) = pg_env() else { return };
    let (url, state) = own_cluster(env.dir());
    let _stop = StopCluster(state.clone());
    let cert = state.join("root.crt");
    for mode in [
        "require".to_owned(),
        format!("verify-full&sslrootcert={}", cert.display()),
        format!("verify-ca&sslrootcert={}", cert.display()),
    ] {
        let server =
            env.start_with(&ServerOpts { database: Some(format!("{url}?sslmode={mode}")), ..Default::default() });
        let id = active_raw(&server, b"tls").await;
        assert_eq!(server.get(&meta_path(&id)).send().await.status, 200, "sslmode={mode}");
    }
    let (status, stderr) =
        env.start_fails(&ServerOpts { database: Some(format!("{url}?sslmode=verify-full")), ..Default::default() });
    assert!(!status.success());
    assert!(stderr.contains("cannot open the database"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "the log says why: {stderr}");
    assert!(!stderr.contains("postgres://postgres:"), "no password in the log");
}
