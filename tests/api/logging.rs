//! Structured logs (issue 14, point 3): `--log-format json` writes one JSON object per line,
//! `--access-log` one line per request, once its answer has been sent, with its request id,
//! method, route, status, latency, bytes, user and project, and never a token; the errors of a
//! request carry its request id.

use std::time::Duration;

use serde_json::{Value, json};

use crate::glance_helpers::*;
use crate::helpers::*;

fn start(env: &Env, args: &[&str]) -> Server {
    env.start_with(&ServerOpts { extra_args: args.iter().map(|a| a.to_string()).collect(), ..Default::default() })
}

/// The server's JSON log lines, once `done` holds of them (the access line of a request is
/// written when its body has been sent, a moment after the client has it all).
async fn json_lines(server: &Server, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stderr = server.stderr();
        let lines: Vec<Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l:?}")))
            .collect();
        if done(&lines) {
            return lines;
        }
        assert!(std::time::Instant::now() < deadline, "the expected log lines never came:\n{stderr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn access_line<'a>(lines: &'a [Value], request_id: &str) -> Option<&'a Value> {
    lines.iter().find(|l| l["target"] == "imagemeta::access" && l["request_id"] == request_id)
}

/// The fields of an access line a test can know in advance (latency and the client's port
/// vary).
fn known_fields(line: &Value) -> Value {
    let mut line = line.clone();
    let fields = line.as_object_mut().unwrap();
    let duration = fields.remove("duration_ms").expect("a duration");
    assert!(duration.as_f64().is_some_and(|d| d >= 0.0), "{duration}");
    let remote = fields.remove("remote").expect("the client's address");
    assert!(remote.as_str().unwrap().starts_with("127.0.0.1:"), "{remote}");
    let timestamp = fields.remove("timestamp").expect("a timestamp");
    assert!(timestamp.as_str().unwrap().ends_with('Z'), "{timestamp}");
    line
}

#[tokio::test]
async fn json_access_log_has_one_line_per_request_with_its_id_and_never_a_token() {
    let env = Env::new();
    let seeded = env.seed(&Seed::new().owner(PROJ_A).prop("k", "v"));
    let id = seeded["id"].as_str().unwrap();
    let server = start(&env, &["--log-format", "json", "--access-log"]);
    let image = active_raw(&server, &pattern(1000, 7)).await;

    let read = server.get(&meta_path(id)).send().await;
    assert_eq!(read.status, 200);
    let download = g(&server, "GET", &file_path(&image)).header("X-Openstack-Request-Id", "req-mine-1").send().await;
    assert_eq!((download.status, download.body.len()), (200, 1000));
    let secret = "tok-a-secret-that-must-never-be-logged";
    let refused = g(&server, "GET", "/v2/images").token(secret).send().await;
    assert_eq!(refused.status, 401);
    let missing = server.get(&format!("/v2.1/images/{}", new_id())).send().await;
    assert_eq!(missing.status, 404);

    let ids: Vec<String> = [&read, &download, &refused, &missing]
        .iter()
        .map(|r| r.header("x-openstack-request-id").expect("a request id").to_owned())
        .collect();
    assert_eq!(ids[1], "req-mine-1", "the client's own id is kept");
    let lines = json_lines(&server, |lines| ids.iter().all(|id| access_line(lines, id).is_some())).await;

    assert_eq!(
        known_fields(access_line(&lines, &ids[0]).unwrap()),
        json!({
            "level": "INFO", "target": "imagemeta::access", "message": "request",
            "request_id": ids[0], "method": "GET", "path": meta_path(id),
            "route": "/images/{id}/metadata", "status": 200, "bytes": read.body.len(),
            "user_id": "user-a", "project_id": PROJ_A, "complete": true,
        })
    );
    assert_eq!(
        known_fields(access_line(&lines, &ids[1]).unwrap()),
        json!({
            "level": "INFO", "target": "imagemeta::access", "message": "request",
            "request_id": "req-mine-1", "method": "GET", "path": file_path(&image),
            "route": "/v2/images/{id}/file", "status": 200, "bytes": 1000,
            "user_id": "user-a", "project_id": PROJ_A, "complete": true,
        })
    );
    let refused_line = known_fields(access_line(&lines, &ids[2]).unwrap());
    assert_eq!(
        (&refused_line["status"], &refused_line["user_id"], &refused_line["project_id"], &refused_line["route"]),
        (&json!(401), &json!("-"), &json!("-"), &json!("/v2/images"))
    );
    let missing_line = known_fields(access_line(&lines, &ids[3]).unwrap());
    assert_eq!((&missing_line["status"], &missing_line["route"]), (&json!(404), &json!("/images/{id}")));

    // Once per request, and every line of the log is JSON (json_lines parsed them all).
    for id in &ids {
        let n = lines.iter().filter(|l| l["target"] == "imagemeta::access" && l["request_id"] == *id).count();
        assert_eq!(n, 1, "{id} is logged once");
    }
    let stderr = server.stderr();
    assert!(!stderr.contains(secret), "a token was logged:\n{stderr}");
    assert!(!stderr.contains(TOK_A), "a token was logged:\n{stderr}");
}

/// A response the client stops reading: its line still comes, marked incomplete, with the
/// bytes that were sent.
#[tokio::test]
async fn an_abandoned_download_is_logged_as_incomplete() {
    use std::io::{Read, Write};
    let env = Env::new();
    let server = start(&env, &["--log-format", "json", "--access-log"]);
    let size = 64 << 20;
    let image = active_raw(&server, &pattern(size, 3)).await;
    let port: u16 = server.image_base.rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOK_A}\r\nX-Openstack-Request-Id: req-gone\r\n\r\n",
        file_path(&image)
    )
    .unwrap();
    let mut head = [0u8; 4096];
    let n = stream.read(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    drop(stream);
    let lines = json_lines(&server, |lines| access_line(lines, "req-gone").is_some()).await;
    let line = access_line(&lines, "req-gone").unwrap();
    assert_eq!((&line["status"], &line["complete"]), (&json!(200), &json!(false)), "{line}");
    let bytes = line["bytes"].as_u64().unwrap();
    assert!(bytes < size as u64, "{line}");
}

/// An error's own line names its request: the event carries the id and the request's span.
#[tokio::test]
async fn errors_carry_the_request_id() {
    let env = Env::new();
    if env.is_postgres() {
        return; // the same event; the catalogue is lost here by deleting SQLite's file
    }
    let seeded = env.seed(&Seed::new());
    let id = seeded["id"].as_str().unwrap();
    let server = start(&env, &["--log-format", "json"]);
    std::fs::remove_file(env.db_path()).unwrap();
    let failed = server.post(&meta_path(id), json!({"metadata": {"a": "b"}})).send().await;
    assert_eq!(failed.status, 503, "{}", failed.text());
    let request_id = failed.header("x-openstack-request-id").unwrap().to_owned();
    let lines = json_lines(&server, |lines| {
        lines.iter().any(|l| l["request_id"] == request_id.as_str() && l["level"] == "WARN")
    })
    .await;
    let event = lines.iter().find(|l| l["request_id"] == request_id.as_str() && l["level"] == "WARN").unwrap();
    assert_eq!(event["span"], json!({"name": "request", "request_id": request_id}), "{event}");
    assert_eq!(event["status"], json!("503 Service Unavailable"), "{event}");
    // Without --access-log, no access lines.
    assert!(!lines.iter().any(|l| l["target"] == "imagemeta::access"));
}

/// The text format: one readable line per request, with the same fields.
#[tokio::test]
async fn text_access_log() {
    let env = Env::new();
    let seeded = env.seed(&Seed::new().owner(PROJ_A));
    let id = seeded["id"].as_str().unwrap();
    let server = start(&env, &["--access-log"]);
    let read = server.get(&meta_path(id)).send().await;
    assert_eq!(read.status, 200);
    let request_id = read.header("x-openstack-request-id").unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = server.stderr().lines().find(|l| l.contains("imagemeta::access") && l.contains(&request_id))
        {
            break line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no access line:\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for field in [
        format!("request_id=\"{request_id}\""),
        "method=\"GET\"".into(),
        format!("path=\"{}\"", meta_path(id)),
        "route=\"/images/{id}/metadata\"".into(),
        "status=200".into(),
        format!("bytes={}", read.body.len()),
        "user_id=\"user-a\"".into(),
        format!("project_id=\"{PROJ_A}\""),
        "complete=true".into(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
    assert!(!line.contains(TOK_A), "{line}");
}
