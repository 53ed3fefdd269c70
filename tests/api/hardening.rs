//! Hostile clients, bad input and shutdown: each test reproduces one defect of the hardening
//! issue as it was found, and checks the answer a robust server gives instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

fn opts(args: &[&str]) -> ServerOpts {
    ServerOpts { extra_args: args.iter().map(|a| a.to_string()).collect(), ..Default::default() }
}

/// Reads from `s` until the server closes it; `None` if it is still open after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

// --- 1 and 8: the work of one request is bounded -------------------------------------------

/// Defect 1: thousands of repeated sort keys with a marker took 25 s of CPU and 3 GB. Past the
/// bound on the request target they are 414 at once; under it, repetitions are dropped and the
/// page is the one the first occurrence orders.
#[tokio::test]
async fn repeated_sort_keys_cost_nothing() {
    let env = Env::new();
    let server = env.start();
    let mut ids = Vec::new();
    for name in ["b", "a", "c"] {
        ids.push(create(&server, json!({"name": name})).await["id"].as_str().unwrap().to_owned());
    }
    let marker = &ids[1]; // "a"

    let huge = vec!["name:asc"; 6000].join(",");
    let started = Instant::now();
    let r = g(&server, "GET", &format!("/v2/images?sort={huge}&marker={marker}")).send().await;
    assert_gerr(&r, 414, "The request URI was too long for this server.");
    let r = g(&server, "GET", &format!("/v2/images?{}&marker={marker}", vec!["sort_key=name"; 2000].join("&")))
        .send()
        .await;
    assert_gerr(&r, 414, "The request URI was too long for this server.");

    let many = vec!["name:asc"; 1500].join(",");
    let r = g(&server, "GET", &format!("/v2/images?sort={many},name:desc&marker={marker}")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let names: Vec<Value> = r.json()["images"].as_array().unwrap().iter().map(|i| i["name"].clone()).collect();
    assert_eq!(names, vec![json!("b"), json!("c")]);
    let keys = vec!["sort_key=name"; 1000].join("&");
    let r = g(&server, "GET", &format!("/v2/images?{keys}&sort_dir=asc&marker={marker}")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["images"].as_array().unwrap().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(10), "bounded work took {:?}", started.elapsed());
    assert!(!server.stderr().contains("SELECT"), "no SQL in the log:\n{}", server.stderr());
}

/// Defect 8: 1500 property filters were a 500 ("Expression tree is too large"). Both APIs
/// refuse more than 64 filters with a 400 in their own format.
#[tokio::test]
async fn too_many_filters_is_400_in_both_apis() {
    let env = Env::new();
    env.seed(&Seed::new());
    let server = env.start();
    let glance = (0..1500).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&");
    let r = g(&server, "GET", &format!("/v2/images?{glance}")).send().await;
    assert_gerr(&r, 400, "Too many filters: 1500 given, at most 64 are allowed.");

    let nova = (0..500).map(|i| format!("property-p{i}=1")).collect::<Vec<_>>().join("&");
    let r = server.get(&format!("/v2.1/images/detail?{nova}")).send().await;
    assert_fault(&r, 400, "badRequest", "HTTP 400 Bad Request: Too many filters: 500 given, at most 64 are allowed.");

    let names = (0..1001).map(|i| format!("n{i}")).collect::<Vec<_>>().join(",");
    let r = g(&server, "GET", &format!("/v2/images?name=in:{names}")).send().await;
    assert_gerr(&r, 400, "Too many filter values: 1001 given, at most 1000 are allowed.");

    // At the bound, the listing runs.
    let glance = (0..64).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&");
    assert_eq!(g(&server, "GET", &format!("/v2/images?{glance}")).send().await.status, 200);
}

// --- 7: timestamps at the edges of time ---------------------------------------------------------

/// Defect 7: comparisons in the last second of year 9999 overflowed (a caught panic, 500).
/// Nova and Glance answer 200.
#[tokio::test]
async fn timestamps_at_the_edge_of_time() {
    let env = Env::new();
    let seeded = env.seed(&Seed::new().public());
    let server = env.start();
    for since in ["9999-12-31T23:59:59.9Z", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "9999-12-31"] {
        let r = server.get(&format!("/v2.1/images?changes-since={since}")).send().await;
        assert_eq!(r.status, 200, "changes-since={since}: {}", r.text());
        let expected = if since.starts_with("0000") { 1 } else { 0 };
        assert_eq!(r.json()["images"].as_array().unwrap().len(), expected, "changes-since={since}");
    }
    for (filter, matches) in [
        ("updated_at=lte:9999-12-31T23:59:59.5Z", true),
        ("updated_at=lt:9999-12-31T23:59:59.5Z", true),
        ("updated_at=gt:9999-12-31T23:59:59.5Z", false),
        ("updated_at=gte:9999-12-31T23:59:59Z", false),
        ("created_at=eq:9999-12-31T23:59:59.999999Z", false),
        ("created_at=neq:9999-12-31T23:59:59Z", true),
        ("created_at=gt:0000-01-01T00:00:00Z", true),
        ("created_at=lt:0000-01-01T00:00:00.5Z", false),
    ] {
        let r = g(&server, "GET", &format!("/v2/images?{filter}")).send().await;
        assert_eq!(r.status, 200, "{filter}: {}", r.text());
        let found = ids(&r.json()).contains(&seeded["id"].as_str().unwrap().to_owned());
        assert_eq!(found, matches, "{filter}");
    }
    let r = g(&server, "GET", "/v2/images?updated_at=lte:9999-12-31T23:59:59-01:00").send().await;
    assert_gerr(&r, 400, "Invalid timestamp: 9999-12-31T23:59:59-01:00");
}

// --- 10, 11: what the request says, said back safely ----------------------------------------------

/// Defect 10: Glance's HTML error pages echoed the request unescaped.
#[tokio::test]
async fn html_error_pages_escape_the_request() {
    let env = Env::new();
    let server = env.start();
    let r = g(&server, "GET", "/v2/images/%3Csvg%20onload%3Dalert(1)%3E").accept("text/html").send().await;
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type(), Some("text/html; charset=UTF-8"));
    assert_eq!(
        r.text(),
        "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  \
         No image found with ID &lt;svg onload=alert(1)&gt;<br /><br />\n\n\n\n </body>\n</html>"
    );
    // The other representations carry the text as sent (WebOb escapes HTML only).
    let r = g(&server, "GET", "/v2/images/%3Cb%3E").send().await;
    assert_gerr(&r, 404, "No image found with ID <b>");
    let r = g(&server, "PATCH", "/v2/images/x").content_type("text/<i>").accept("text/html").body("[]").send().await;
    assert_eq!(r.status, 415);
    assert!(r.text().contains("The request media type text/&lt;i&gt; is not supported"), "{}", r.text());
}

/// Defect 11: a JSON-patch path `"/ "` created a property named `""`; NUL bytes were accepted
/// in property names, values and tags; a 501 was logged as an error.
#[tokio::test]
async fn blank_pointers_nul_bytes_and_quiet_501s() {
    let env = Env::new();
    let server = env.start();
    let id = create_raw(&server).await;
    for path in ["/ ", "/\t"] {
        let r =
            g(&server, "PATCH", &img_path(&id)).patch(&json!([{"op": "add", "path": path, "value": "x"}])).send().await;
        assert_gerr(&r, 400, &format!("Pointer `{path}` does not contains valid token."));
    }
    let cases = [
        (json!([{"op": "add", "path": "/a\u{0}b", "value": "x"}]), "Property names can't contain NUL characters."),
        (json!([{"op": "add", "path": "/os_distro", "value": "x\u{0}"}]), "Os_Distro can't contain NUL characters."),
        (json!([{"op": "add", "path": "/tags", "value": ["\u{0}"]}]), "Param values can't contain NUL characters."),
        (
            json!([{"op": "add", "path": "/os_distro", "value": "\u{1F600}"}]),
            "Os_Distro can't contain 4 byte unicode characters.",
        ),
    ];
    for (patch, message) in cases {
        let r = g(&server, "PATCH", &img_path(&id)).patch(&patch).send().await;
        assert_gerr(&r, 400, message);
    }
    let r = g(&server, "POST", "/v2/images").json(&json!({"name": "n", "k\u{0}": "v"})).send().await;
    assert_gerr(&r, 400, "Property names can't contain NUL characters.");
    let r = g(&server, "PUT", &format!("/v2/images/{id}/tags/a%00b")).send().await;
    assert_gerr(&r, 400, "Param values can't contain NUL characters.");
    let v = show(&server, &id).await;
    assert!(v.get("").is_none() && tags(&v).is_empty(), "{v}");

    // The Compute API refuses a NUL in a metadata value (a key cannot hold one: its pattern).
    let seeded = env.seed(&Seed::new());
    let sid = seeded["id"].as_str().unwrap();
    let r = server.post(&meta_path(sid), json!({"metadata": {"k": "a\u{0}"}})).send().await;
    assert_fault(
        &r,
        400,
        "badRequest",
        "Invalid input for field/attribute k. Value: a\u{0}. 'a\\x00' contains a NUL character",
    );

    let r = g(&server, "FROB", "/v2/images").send().await;
    assert_eq!(r.status, 501);
    assert!(!server.stderr().contains("ERROR"), "nothing failed, nothing is logged as an error:\n{}", server.stderr());
}

// --- 4: one delete path -------------------------------------------------------------------------

/// Defect 4: a Compute delete left the image's data file on disk forever.
#[tokio::test]
async fn compute_delete_removes_the_data() {
    let env = Env::new();
    let server = env.start();
    let id = active_raw(&server, b"some image data").await;
    assert_eq!(data_files(&env).len(), 1);
    let r = server.delete(&image_path(&id)).send().await;
    assert_no_content(&r);
    assert!(data_files(&env).is_empty(), "data left: {:?}", data_files(&env));
    assert_eq!(g(&server, "GET", &img_path(&id)).send().await.status, 404);
}

fn data_files(env: &Env) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(env.dir().join("images"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

// --- 2: timeouts and the connection cap ------------------------------------------------------------

/// Defect 2: no timeouts. A client that starts a request head and stops, or stays idle after
/// a response, is disconnected after the header or keep-alive timeout.
#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let env = Env::new();
    let server = env.start_with(&opts(&["--header-timeout", "1", "--keepalive-timeout", "2"]));
    // Silent from the start: the header timeout runs from the connection.
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // A head that never ends.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(b"GET /v2.1/images HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A complete request, then idle.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(format!("GET /v2.1 HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\n\r\n").as_bytes()).unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).is_some(), "a silent connection stays open");
    assert!(closed_within(&mut slow, Duration::from_secs(5)).is_some(), "a slow head stays open");
    let slow_at = started.elapsed();
    let answered = closed_within(&mut idle, Duration::from_secs(6)).expect("an idle connection stays open");
    assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200 OK"), "the request was answered first");
    assert!(slow_at >= Duration::from_millis(900), "the head had its second: {slow_at:?}");
    assert!(started.elapsed() >= Duration::from_millis(1900), "the idle connection had its keep-alive time");
}

/// Defect 2: a trickling upload held its image in `saving` forever. A body that stops moving
/// for the body timeout is cut, and the image goes back to `queued`.
#[tokio::test]
async fn a_stalled_upload_is_cut_and_requeued() {
    let env = Env::new();
    let server = env.start_with(&opts(&["--body-timeout", "1"]));
    let id = create_raw(&server).await;
    let port = image_port(&server);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[7u8; 1000]).unwrap();
    wait_status(&server, &id, "saving").await;
    let v = wait_status(&server, &id, "queued").await;
    assert_eq!(v["size"], Value::Null);
    assert!(data_files(&env).is_empty(), "partial data left: {:?}", data_files(&env));
    drop(s);
    upload_ok(&server, &id, b"complete").await;
}

/// A request whose body stops short of its length is refused at the request deadline with a
/// 503 (the body timeout alone would let it hold the request for longer).
#[tokio::test]
async fn a_request_runs_out_of_time() {
    let env = Env::new();
    let seeded = env.seed(&Seed::new());
    let id = seeded["id"].as_str().unwrap();
    let server = env.start_with(&opts(&["--request-timeout", "1", "--body-timeout", "30"]));
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head = format!(
        "POST /v2.1/images/{id}/metadata HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"metadata\""
    );
    s.write_all(head.as_bytes()).unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(10)).unwrap_or_default();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable"), "{answer}");
    assert!(answer.contains("retry-after: 5"), "{answer}");
    assert!(
        answer.ends_with(
            r#"{"serviceUnavailable": {"code": 503, "message": "The request took too long. Please retry later."}}"#
        ),
        "{answer}"
    );
}

/// Defect 2: under `prlimit --nofile=1024`, 1100 idle connections stopped both APIs silently.
/// The open-files limit caps each listener's connections: over the cap a client is answered
/// 503 with Retry-After at once, the other API still serves, and once the idle connections
/// time out, service resumes.
#[tokio::test]
async fn idle_connections_cannot_exhaust_descriptors() {
    let env = Env::new();
    env.seed(&Seed::new());
    // This test's own process needs the descriptors for its 1100 connections.
    imagemeta::server::raise_fd_limit_and_cap(usize::MAX);
    let server = env.start_with(&ServerOpts {
        wrapper: vec!["prlimit".into(), "--nofile=1024:1024".into(), "--".into()],
        // Long enough that no connection times out while the 1100 are still being opened (on
        // a loaded machine a full accept queue makes that take seconds).
        extra_args: vec!["--header-timeout".into(), "10".into()],
        ..Default::default()
    });
    assert!(
        server.stderr().contains("--max-connections lowered to what the open-files limit allows"),
        "{}",
        server.stderr()
    );
    let mut idle = Vec::new();
    let opening = Instant::now();
    for _ in 0..1100 {
        match TcpStream::connect(("127.0.0.1", server.port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    assert!(opening.elapsed() < Duration::from_secs(8), "opening 1100 connections took {:?}", opening.elapsed());
    // Over the cap: a 503 in Nova's format, written without reading the request.
    let mut over = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let answer = closed_within(&mut over, Duration::from_secs(5)).expect("an answer, then close");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    assert!(answer.contains("retry-after: 5\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            r#"{"serviceUnavailable": {"code": 503, "message": "Too many connections. Please retry later."}}"#
        ),
        "{answer}"
    );
    // The image API has its own cap: it still serves.
    assert_eq!(g(&server, "GET", "/v2/images").send().await.status, 200);
    // The idle connections reach the header timeout; then the Compute API serves again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = server.get("/v2.1/images").try_send().await;
        if matches!(&r, Ok(r) if r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the Compute API did not recover: {r:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(idle);
}

// --- 3: shutdown ------------------------------------------------------------------------------

/// Defect 3: SIGTERM hung forever while a client held a half-sent request. The server drains
/// for `--shutdown-timeout`, cuts what is left, closes the store (its WAL folded back) and
/// exits 0.
#[tokio::test]
async fn sigterm_drains_then_cuts_and_closes_the_store() {
    let env = Env::new();
    let seeded = env.seed(&Seed::new());
    let id = seeded["id"].as_str().unwrap().to_owned();
    let mut server = env.start_with(&opts(&["--shutdown-timeout", "2", "--body-timeout", "60"]));
    // A write the server acknowledged before the signal.
    let r = server.post(&meta_path(&id), json!({"metadata": {"before": "stop"}})).send().await;
    assert_eq!(r.status, 200);
    let mut held = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    held.write_all(
        format!(
            "POST /v2.1/images/{id}/metadata HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(15)).expect("the server exits");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", server.stderr());
    assert!(took >= Duration::from_millis(1800), "the request had its shutdown timeout: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(server.stderr().contains("requests still in flight at the end of the shutdown timeout are cut"));
    if !env.is_postgres() {
        let wal = env.db_path().with_extension("db-wal");
        assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "the store was closed cleanly");
    }
    assert!(closed_within(&mut held, Duration::from_secs(2)).is_some());
    let server = env.start();
    assert_eq!(server.metadata_of(&id).await, json!({"before": "stop"}));
}

/// A request in flight when SIGTERM arrives finishes; new connections are refused.
#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let env = Env::new();
    let mut server = env.start_with(&opts(&["--shutdown-timeout", "10"]));
    let id = create_raw(&server).await;
    let port = image_port(&server);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 8\r\nConnection: close\r\n\r\n1234"
    );
    s.write_all(head.as_bytes()).unwrap();
    wait_status(&server, &id, "saving").await;
    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"5678").unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(8)).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 204 No Content"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server exits");
    assert!(status.success());
    let server = env.start();
    assert_eq!(show(&server, &id).await["status"], "active");
}

// --- 6: uploads of processes that died ---------------------------------------------------------------

/// Defect 6: a crash during an upload left the image `saving` forever (a new upload got 409).
/// On start, an upload no live process holds goes back to `queued`, its partial data removed.
#[tokio::test]
async fn a_crash_during_an_upload_is_recovered_on_start() {
    let env = Env::new();
    let mut server = env.start();
    let id = create_raw(&server).await;
    let port = image_port(&server);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[1u8; 50_000]).unwrap();
    wait_status(&server, &id, "saving").await;
    let partial = format!("{}.", hex(&id));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !data_files(&env).iter().any(|f| f.starts_with(&partial) && f.ends_with(".partial")) {
        assert!(Instant::now() < deadline, "no partial file: {:?}", data_files(&env));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    drop(s);

    let server = env.start();
    let v = show(&server, &id).await;
    assert_eq!((v["status"].clone(), v["size"].clone()), (json!("queued"), Value::Null), "{v}");
    assert!(data_files(&env).is_empty(), "partial data left: {:?}", data_files(&env));
    upload_ok(&server, &id, b"after the crash").await;
    assert_eq!(g(&server, "GET", &file_path(&id)).send().await.body, b"after the crash");
}

/// Defect 6: data files no image owns are swept (after a grace period: an upload moves its
/// file into place before the image turns active); the data of active images stays.
#[tokio::test]
async fn data_no_image_owns_is_swept() {
    let env = Env::new();
    let server = env.start();
    let kept = active_raw(&server, b"kept").await;
    let deleted_id = new_id();
    drop(server);
    let dir = env.dir().join("images");
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let orphan = dir.join(hex(&deleted_id));
    let stale_partial = dir.join(format!("{}.0123456789abcdef.partial", hex(&kept)));
    let fresh_orphan = dir.join(hex(&new_id()));
    for (path, modified) in [(&orphan, Some(old)), (&stale_partial, Some(old)), (&fresh_orphan, None)] {
        let f = std::fs::File::create(path).unwrap();
        if let Some(t) = modified {
            f.set_modified(t).unwrap();
        }
    }
    // Not a data file of ours: never touched.
    std::fs::write(dir.join("README"), "operator's note").unwrap();
    std::fs::File::open(dir.join(hex(&kept))).unwrap().set_modified(old).unwrap();

    let server = env.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while orphan.exists() || stale_partial.exists() {
        assert!(Instant::now() < deadline, "not swept: {:?}", data_files(&env));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh_orphan.exists(), "a fresh file is within the grace period");
    assert!(dir.join("README").exists());
    assert_eq!(g(&server, "GET", &file_path(&kept)).send().await.body, b"kept");
}

// --- 5: who may write ------------------------------------------------------------------------------

/// The state an image needs for a write route to apply.
#[derive(Clone, Copy, Debug)]
enum Setup {
    /// Active, with data, one property `k` and one tag `t`.
    Active,
    /// Queued, formats set: ready for an upload.
    Queued,
    Deactivated,
    /// Shared with project B (pending).
    SharedWithB,
}

/// A public image of project A in the state `setup` asks for (a shared one for members).
async fn image_for(server: &Server, setup: Setup) -> String {
    let visibility = if matches!(setup, Setup::SharedWithB) { "shared" } else { "public" };
    let body = json!({"name": "authz", "owner": PROJ_A, "visibility": visibility, "k": "v", "tags": ["t"],
                      "disk_format": "raw", "container_format": "bare"});
    let id = create_as(server, TOK_ADMIN, body).await["id"].as_str().unwrap().to_owned();
    match setup {
        Setup::Queued => {}
        Setup::Active | Setup::SharedWithB => upload_ok(server, &id, b"data").await,
        Setup::Deactivated => {
            upload_ok(server, &id, b"data").await;
            let r = g(server, "POST", &format!("/v2/images/{id}/actions/deactivate")).token(TOK_ADMIN).send().await;
            assert_eq!(r.status, 204);
        }
    }
    if matches!(setup, Setup::SharedWithB) {
        let r = g(server, "POST", &format!("/v2/images/{id}/members")).json(&json!({"member": PROJ_B})).send().await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    id
}

/// Defect 5: a reader-only token could create images. Every write route of both APIs, and the
/// data download, against each role, as Nova's and Glance's default policies answer: the
/// owner project's members and admins write; a reader never; another project's member only
/// answers a share offered to it (and creates its own images).
#[tokio::test]
async fn every_write_route_against_every_role() {
    let env = Env::new();
    let server = env.start();
    let (owner, reader, other, admin) = (TOK_A, TOK_A_READER, TOK_B, TOK_ADMIN);
    // (method, path template, body, setup, [owner, reader, other project, admin])
    type Row = (&'static str, &'static str, Option<Value>, Setup, [u16; 4]);
    let table: Vec<Row> = vec![
        ("DELETE", "/v2.1/images/{id}", None, Setup::Active, [204, 403, 403, 204]),
        (
            "POST",
            "/v2.1/images/{id}/metadata",
            Some(json!({"metadata": {"a": "b"}})),
            Setup::Active,
            [200, 403, 403, 200],
        ),
        (
            "PUT",
            "/v2.1/images/{id}/metadata",
            Some(json!({"metadata": {"a": "b"}})),
            Setup::Active,
            [200, 403, 403, 200],
        ),
        ("PUT", "/v2.1/images/{id}/metadata/a", Some(json!({"meta": {"a": "b"}})), Setup::Active, [200, 403, 403, 200]),
        ("DELETE", "/v2.1/images/{id}/metadata/k", None, Setup::Active, [204, 403, 403, 204]),
        ("POST", "/v2/images", Some(json!({"name": "new"})), Setup::Active, [201, 403, 201, 201]),
        (
            "PATCH",
            "/v2/images/{id}",
            Some(json!([{"op": "add", "path": "/a", "value": "b"}])),
            Setup::Active,
            [200, 403, 403, 200],
        ),
        ("DELETE", "/v2/images/{id}", None, Setup::Active, [204, 403, 403, 204]),
        ("PUT", "/v2/images/{id}/file", None, Setup::Queued, [204, 403, 403, 204]),
        ("GET", "/v2/images/{id}/file", None, Setup::Active, [200, 403, 200, 200]),
        ("PUT", "/v2/images/{id}/tags/new", None, Setup::Active, [204, 403, 403, 204]),
        ("DELETE", "/v2/images/{id}/tags/t", None, Setup::Active, [204, 403, 403, 204]),
        ("POST", "/v2/images/{id}/actions/deactivate", None, Setup::Active, [204, 403, 403, 204]),
        ("POST", "/v2/images/{id}/actions/reactivate", None, Setup::Deactivated, [204, 403, 403, 204]),
        ("POST", "/v2/images/{id}/members", Some(json!({"member": "dddd"})), Setup::SharedWithB, [200, 403, 403, 200]),
        (
            "PUT",
            "/v2/images/{id}/members/{b}",
            Some(json!({"status": "accepted"})),
            Setup::SharedWithB,
            [403, 403, 200, 200],
        ),
        ("DELETE", "/v2/images/{id}/members/{b}", None, Setup::SharedWithB, [204, 403, 403, 204]),
    ];
    let mut wrong = Vec::new();
    for (method, template, body, setup, expected) in &table {
        for (token, want) in [owner, reader, other, admin].into_iter().zip(expected) {
            let id = image_for(&server, *setup).await;
            let path = template.replace("{id}", &id).replace("{b}", PROJ_B);
            let r = if path.starts_with("/v2.1") {
                let call = server.call(method, &path).token(token);
                match body {
                    Some(b) => call.json(b).send().await,
                    None => call.send().await,
                }
            } else {
                let call = g(&server, method, &path).token(token);
                match (body, *method) {
                    (Some(b), "PATCH") => call.patch(b).send().await,
                    (Some(b), _) => call.json(b).send().await,
                    (None, "PUT") if path.ends_with("/file") => call.content_type(OCTET).body("data").send().await,
                    (None, _) => call.send().await,
                }
            };
            if r.status != *want {
                wrong.push(format!("{method} {template} as {token}: {} (expected {want}): {}", r.status, r.text()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// --- 9: faults of the store ------------------------------------------------------------------------

/// Writes zeros to `path` until its filesystem is full.
fn fill_disk(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = f.sync_all();
}

const CATALOGUE_FULL: &str = "The image catalogue's storage is full. Please retry later.";

/// Defect 9: on a full disk, writes, creates and deletes answered 500 and a delete could not
/// free space. Now: image data that does not fit is Glance's 413 "Image storage media is
/// full"; catalogue writes are 503 with Retry-After; deletes still run (the disk reserve) and
/// free the space of their data; once there is room, writes are taken again.
#[tokio::test]
async fn a_full_disk_is_503_and_deletes_still_free_space() {
    let env = Env::on_small_disks(16, 4);
    if env.is_postgres() {
        return; // SQLite's own file and disk (PostgreSQL's outages: tests/api/postgres.rs)
    }
    let server = env.start_with(&opts(&["--disk-reserve", "1048576"]));
    let doomed = active_raw(&server, &[5u8; 1 << 20]).await;
    let glance_doomed = active_raw(&server, b"small").await;
    let kept = env.seed(&Seed::new());
    let kept = kept["id"].as_str().unwrap().to_owned();
    let queued = create(&server, json!({"name": "q", "disk_format": "raw", "container_format": "bare"})).await;
    let queued = queued["id"].as_str().unwrap().to_owned();

    // The image store fills: an upload is 413, the image stays queued, nothing is left.
    let data_filler = env.dir().join("images").join("filler");
    fill_disk(&data_filler);
    let r = upload(&server, &queued, &[1u8; 300_000]).await;
    assert_gerr(&r, 413, "Image storage media is full: There is not enough disk space on the image storage media.");
    assert_eq!(show(&server, &queued).await["status"], "queued");
    std::fs::remove_file(&data_filler).unwrap();

    // The catalogue's disk fills.
    let db_filler = env.dir().join("filler");
    fill_disk(&db_filler);
    let mut writes = 0;
    let refused = loop {
        // The write-ahead log may hold a few commits before it needs a new page.
        let r = server.post(&meta_path(&kept), json!({"metadata": {format!("k{writes}"): "v"}})).send().await;
        if r.status != 200 {
            break r;
        }
        writes += 1;
        assert!(writes < 200, "writes still taken on a full disk");
    };
    assert_fault(&refused, 503, "serviceUnavailable", CATALOGUE_FULL);
    assert_eq!(refused.header("retry-after"), Some("5"));
    let r = g(&server, "POST", "/v2/images").json(&json!({"name": "no room"})).send().await;
    assert_gerr(&r, 503, CATALOGUE_FULL);
    assert_eq!(r.header("retry-after"), Some("5"));
    let r = server.put(&key_path(&kept, "x"), json!({"meta": {"x": "y"}})).send().await;
    assert_fault(&r, 503, "serviceUnavailable", CATALOGUE_FULL);

    // Deletes run, through both APIs, and take their data with them.
    assert_no_content(&server.delete(&image_path(&doomed)).send().await);
    assert_no_content(&g(&server, "DELETE", &img_path(&glance_doomed)).send().await);
    assert!(data_files(&env).is_empty(), "{:?}", data_files(&env));
    assert_eq!(server.get(&image_path(&doomed)).send().await.status, 404);

    // Room again: writes are taken again, without a restart.
    std::fs::remove_file(&db_filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = server.post(&meta_path(&kept), json!({"metadata": {"after": "room"}})).send().await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume: {}", r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.metadata_of(&kept).await["after"], "room");
    assert!(!server.stderr().contains("panicked"));
}

/// Defect 9: a database made read-only. The server refuses to start on it, saying why.
#[tokio::test]
async fn a_read_only_database_refuses_to_start() {
    let env = Env::on_small_disks(16, 4);
    if env.is_postgres() {
        return; // SQLite's own file and disk (PostgreSQL's outages: tests/api/postgres.rs)
    }
    env.seed(&Seed::new());
    let out = Command::new("mount").args(["-o", "remount,ro"]).arg(env.dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, stderr) = env.start_fails(&ServerOpts::default());
    let _ = Command::new("mount").args(["-o", "remount,rw"]).arg(env.dir()).status();
    assert!(!status.success());
    assert!(stderr.contains(&env.db_url()), "{stderr}");
    assert!(stderr.contains("readonly") || stderr.contains("read-only") || stderr.contains("not writable"), "{stderr}");
}

use std::process::Command;

/// Defect 9: a database deleted under the running server took writes into the unlinked file,
/// and the next start silently served a new, empty catalogue over the existing image data.
/// Now the writes are refused (503), and the next start refuses the new database until told.
#[tokio::test]
async fn a_database_deleted_under_the_server() {
    let env = Env::new();
    if env.is_postgres() {
        return; // SQLite's own file and disk (PostgreSQL's outages: tests/api/postgres.rs)
    }
    let mut server = env.start();
    let id = active_raw(&server, b"precious").await;
    let seeded = env.seed(&Seed::new());
    let sid = seeded["id"].as_str().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.db_path().display()));
    }
    let r = server.post(&meta_path(sid), json!({"metadata": {"lost": "write"}})).send().await;
    assert_fault(&r, 503, "serviceUnavailable", "The image catalogue is unavailable. Please retry later.");
    assert_eq!(r.header("retry-after"), Some("5"));
    // Once lost, the catalogue is not served from the unlinked file either.
    let r = g(&server, "GET", &img_path(&id)).send().await;
    assert_gerr(&r, 503, "The image catalogue is unavailable. Please retry later.");
    assert!(server.stderr().contains("was removed or replaced while open"), "{}", server.stderr());
    assert!(server.terminate(Duration::from_secs(10)).is_some());

    let (status, stderr) = env.start_fails(&ServerOpts::default());
    assert!(!status.success());
    assert!(stderr.contains("is new, but the image data directory"), "{stderr}");
    assert!(stderr.contains("--allow-new-database"), "{stderr}");
    assert!(data_files(&env).contains(&hex(&id)), "the data is kept");

    // Told to, it starts, and keeps the data it cannot place.
    let server = env.start_with(&opts(&["--allow-new-database"]));
    assert_eq!(g(&server, "GET", "/v2/images").send().await.json()["images"], json!([]));
    assert!(data_files(&env).contains(&hex(&id)));
}
