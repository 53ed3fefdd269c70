//! The randomized HTTP test: a bounded run (`IMAGEMETA_FUZZ_SECONDS`, default 30) of random
//! requests against the running server, from four clients at once, after replaying the seed
//! corpus (`tests/corpus/http.txt`). No answer may be a 5xx other than the designed 501
//! (unknown method) and 503 (timeouts, overload), no request may go unanswered, and the server
//! must neither panic nor stop. A failure prints the request and the seed that produced it
//! (`IMAGEMETA_FUZZ_SEED` replays a run).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::glance_helpers::*;
use crate::helpers::*;

/// wyrand: small, fast, seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What the placeholders stand for in this run.
struct Fixture {
    active: String,
    queued: String,
}

/// A request to send: which listener, and its bytes.
struct Request {
    compute: bool,
    bytes: Vec<u8>,
}

impl Request {
    fn build(compute: bool, method: &str, target: &str, headers: &[(String, String)], body: &[u8]) -> Request {
        let mut bytes = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
        for (k, v) in headers {
            bytes.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        bytes.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
        bytes.extend_from_slice(body);
        Request { compute, bytes }
    }

    fn shown(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let api = if self.compute { "compute" } else { "image" };
        format!("[{api}] {}", text.chars().take(2000).collect::<String>().escape_debug())
    }
}

fn substitute(s: &str, f: &Fixture) -> String {
    s.replace("{ID}", &f.active)
        .replace("{QID}", &f.queued)
        .replace("{TOKEN}", TOK_A)
        .replace("{ADMIN}", TOK_ADMIN)
        .replace("{LONG}", &"x".repeat(3000))
        .replace("{SORTS}", &vec!["name:asc"; 1500].join(","))
}

/// The seed corpus, placeholders filled in.
fn corpus(f: &Fixture) -> Vec<Request> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/http.txt")).unwrap();
    let text: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    text.split("\n----")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|block| {
            let (head, body) = block.split_once("\n\n").unwrap_or((block, ""));
            let mut lines = head.lines();
            let first = lines.next().unwrap();
            let mut parts = first.splitn(3, ' ');
            let (api, method, target) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            let headers: Vec<(String, String)> =
                lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_owned(), substitute(v, f))).collect();
            Request::build(api == "compute", method, &substitute(target, f), &headers, substitute(body, f).as_bytes())
        })
        .collect()
}

const SEGMENTS: &[&str] = &[
    "images",
    "detail",
    "metadata",
    "file",
    "tags",
    "members",
    "actions",
    "deactivate",
    "reactivate",
    "schemas",
    "image",
    "member",
    "limits",
    "versions",
    "metadefs",
    "namespaces",
    "objects",
    "properties",
    "resource_types",
    "{ID}",
    "{QID}",
    "k",
    "os_distro",
    "%00",
    "%ff",
    "%2F",
    "..",
    "",
    "%3Cb%3E",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2",
    "detail;x",
    "%20",
    "~",
    "é",
];
const PARAMS: &[&str] = &[
    "limit",
    "marker",
    "sort",
    "sort_key",
    "sort_dir",
    "name",
    "status",
    "changes-since",
    "server",
    "type",
    "minRam",
    "minDisk",
    "page_size",
    "offset",
    "visibility",
    "member_status",
    "os_hidden",
    "protected",
    "tag",
    "id",
    "container_format",
    "disk_format",
    "created_at",
    "updated_at",
    "size_min",
    "size_max",
    "virtual_size_max",
    "size",
    "min_ram",
    "owner",
    "checksum",
    "os_hash_value",
    "property-os_distro",
    "os_distro",
    "tenant_id",
    "",
];
const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "1000",
    "1001",
    "99999999999999999999",
    "name:asc,name:asc",
    "size:desc",
    "bogus:up",
    "asc",
    "desc",
    "name",
    "created_at",
    "all",
    "public",
    "private",
    "shared",
    "community",
    "accepted",
    "pending",
    "true",
    "FALSE",
    "in:a,b",
    "in:\"a,b\",c",
    "eq:x",
    "neq:2026-01-01T00:00:00Z",
    "gte:9999-12-31T23:59:59.9Z",
    "lt:0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.5Z",
    "2026-13-45",
    "{ID}",
    "%ff%fe",
    "%00",
    "a+b",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
const TOKENS: &[Option<&str>] =
    &[Some(TOK_A), Some(TOK_A), Some(TOK_ADMIN), Some(TOK_A_READER), Some(TOK_B), Some("nope"), None];
const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json"),
    Some("application/octet-stream"),
    Some("application/openstack-images-v2.1-json-patch"),
    Some("application/openstack-images-v2.0-json-patch"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    Some("\u{1}"),
    None,
];
const ACCEPTS: &[Option<&str>] =
    &[Some("application/json"), Some("text/html"), Some("*/*;q=0.1, text/plain"), Some(";;;"), None];
const VERSIONS: &[Option<&str>] = &[
    Some("compute 2.1"),
    Some("compute 2.38"),
    Some("compute 2.39"),
    Some("compute 2.104"),
    Some("compute latest"),
    Some("compute 3.0"),
    Some("compute 2.999999999999"),
    Some("volume 2.1"),
    Some("compute"),
    None,
    None,
];
const KEYS: &[&str] = &[
    "metadata",
    "meta",
    "op",
    "path",
    "value",
    "add",
    "remove",
    "replace",
    "name",
    "tags",
    "visibility",
    "protected",
    "os_hidden",
    "min_ram",
    "min_disk",
    "disk_format",
    "container_format",
    "owner",
    "id",
    "status",
    "member",
    "os_distro",
    "k",
    "",
    "locations",
    "self",
    "kernel_id",
    "\u{0}",
    "\u{1F600}",
];

fn json_value(rng: &mut Rng, depth: u32) -> serde_json::Value {
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 => serde_json::Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.next() as i64 >> rng.below(64)),
        3 => json!(rng.next() as f64 / 7.0),
        4 => json!(rng.pick(KEYS).to_string()),
        5 => json!(format!("/{}", rng.pick(KEYS))),
        6 | 7 => {
            let n = rng.below(6);
            json!(
                (0..n)
                    .map(|_| (rng.pick(KEYS).to_string(), json_value(rng, depth + 1)))
                    .collect::<serde_json::Map<_, _>>()
            )
        }
        _ => json!((0..rng.below(6)).map(|_| json_value(rng, depth + 1)).collect::<Vec<_>>()),
    }
}

fn random_request(rng: &mut Rng, f: &Fixture) -> Request {
    let compute = rng.chance(50);
    let method = *rng.pick(&["GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FROB"]);
    let prefix = if compute {
        *rng.pick(&["/v2.1", "/v2.1", "/v2", "/v2.1/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1", "", "/v3"])
    } else {
        *rng.pick(&["/v2", "/v2", "/v2.0", "/v2.17", "/versions", "", "/v1"])
    };
    let mut target = prefix.to_owned();
    for _ in 0..rng.below(5) {
        target.push('/');
        let segment = *rng.pick(SEGMENTS);
        target.push_str(&substitute(segment, f));
    }
    if target.is_empty() {
        target.push('/');
    }
    if rng.chance(50) {
        let params: Vec<String> = (0..rng.below(8))
            .map(|_| {
                let (name, value) = (*rng.pick(PARAMS), *rng.pick(VALUES));
                format!("{name}={}", substitute(value, f))
            })
            .collect();
        target.push('?');
        target.push_str(&params.join("&"));
    }
    let mut headers = Vec::new();
    let mut add = |name: &str, value: Option<&str>| {
        if let Some(v) = value {
            headers.push((name.to_owned(), v.to_owned()));
        }
    };
    add("X-Auth-Token", *rng.pick(TOKENS));
    add("Content-Type", *rng.pick(CONTENT_TYPES));
    add("Accept", *rng.pick(ACCEPTS));
    add("OpenStack-API-Version", *rng.pick(VERSIONS));
    if rng.chance(10) {
        add("Range", Some(*rng.pick(&["bytes=0-1", "bytes=-5", "bytes=5-", "bytes=9-1", "bytes=0-1,2-3", "lines=1"])));
    }
    if rng.chance(10) {
        add("X-OpenStack-Request-Id", Some(*rng.pick(&["req-abc", "x y", "req-", "é"])));
    }
    let body: Vec<u8> = match rng.below(4) {
        0 => Vec::new(),
        1 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        _ => serde_json::to_vec(&json_value(rng, 0)).unwrap(),
    };
    Request::build(compute, method, &target, &headers, &body)
}

/// Sends `request` on a new connection; the status of the answer, or why there is none.
fn send(port: u16, request: &Request) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(&request.bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&got);
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status line: {head:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_break_the_server() {
    let seconds: u64 = std::env::var("IMAGEMETA_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let seed: u64 = std::env::var("IMAGEMETA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let env = Env::new();
    // Short timeouts, so that a request left incomplete costs seconds, not minutes.
    let server = env.start_with(&ServerOpts {
        extra_args: [
            "--body-timeout".to_owned(),
            "2".to_owned(),
            "--header-timeout".to_owned(),
            "2".to_owned(),
            "--request-timeout".to_owned(),
            "5".to_owned(),
            // Two stores: the multi-store calls, copies and imports to several stores too.
            "--image-store".to_owned(),
            format!("file=file://{}", env.dir().join("file-store").display()),
            "--image-store".to_owned(),
            format!("other=file://{}", env.dir().join("other-store").display()),
        ]
        .to_vec(),
        ..Default::default()
    });
    let active = active_raw(&server, b"fuzz data").await;
    let queued = create(&server, json!({"name": "q", "disk_format": "raw", "container_format": "bare"})).await;
    let fixture = Arc::new(Fixture { active, queued: queued["id"].as_str().unwrap().to_owned() });
    let ports = (server.port, image_port(&server));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let check = {
        let failures = failures.clone();
        move |request: &Request, result: Result<u16, String>| {
            let bad = match result {
                Ok(status) if (500..600).contains(&status) && status != 501 && status != 503 => {
                    Some(format!("{status}"))
                }
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if let Some(why) = bad {
                failures.lock().unwrap().push(format!("{why} for {} (seed {seed})", request.shown()));
            }
        }
    };

    // The corpus first, as it is.
    for request in corpus(&fixture) {
        let port = if request.compute { ports.0 } else { ports.1 };
        let result = send(port, &request);
        check(&request, result);
    }
    // Then random requests from four clients, until the time is up.
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..4u64)
        .map(|n| {
            let (fixture, sent, check) = (fixture.clone(), sent.clone(), check.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                while Instant::now() < until {
                    let request = random_request(&mut rng, &fixture);
                    let port = if request.compute { ports.0 } else { ports.1 };
                    let result = send(port, &request);
                    check(&request, result);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}",
        failures.len(),
        sent.load(Ordering::Relaxed),
        failures.join("\n")
    );
    assert!(sent.load(Ordering::Relaxed) > 100, "the run sent too few requests");
    assert_eq!(server.get("/v2.1/images").send().await.status, 200, "the server still serves");
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    eprintln!("fuzz: {} random requests in {seconds} s (seed {seed}), no failure", sent.load(Ordering::Relaxed));
}
