//! Helpers for the Glance Image API v2 tests (spec: /work/shared/specs/glance-v2.md, checklist
//! §18). Requests go to `server.image_base`; by default they carry project A's member token and
//! `Accept: application/json` (what tempest sends, §12) so that errors come back as WebOb JSON.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

pub const PATCH_V21: &str = "application/openstack-images-v2.1-json-patch";
pub const PATCH_V20: &str = "application/openstack-images-v2.0-json-patch";
pub const OCTET: &str = "application/octet-stream";

/// md5 / sha512 of the empty string (§8.1 item 8, §18 #37).
pub const MD5_EMPTY: &str = "d41d8cd98f00b204e9800998ecf8427e";
pub const SHA512_EMPTY: &str = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

// Digests of `pattern(1024, 1)` and `pattern(4096, 7)`, computed once by writing the same
// bytes to a file (python3: the same LCG as `pattern`) and running `md5sum` / `sha512sum`.
pub const MD5_P1024: &str = "647edf93bfb61d528bf5d543afc781ac";
pub const SHA512_P1024: &str = "afcb94771ee6179f418a26ab94ba2a48d6c7fbc47374868bba6d692f045180321f25446165d072a949aac1a747c827bbecfad9916794937f21bf83e1c674483a";
pub const MD5_P4096: &str = "5a51104496b05f84e66bab73803b7eed";
pub const SHA512_P4096: &str = "42caa65732a40baf2f3a303f40ff15cc83c23edbe670ac159f22744692b3cb39c4aad5d08bb0a62c009a76d4b0de61579894e3fe22d9cf9712024b56a9944efd";

/// Deterministic pseudo-random bytes (a 32-bit LCG, byte = bits 16..24 of the state).
/// `pattern(1024, 1)` starts `c6 7e 81 6b`, so it is never mistaken for a qcow2 header.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

/// A minimal qcow2 v3 header (§8.1 item 6): magic `QFI\xfb`, version 3, backing-file
/// offset 0 at byte 8, virtual size (u64 BE) at byte 24, cluster_bits 16 at byte 20,
/// header length 104 at byte 100; padded with zeros to `len` bytes.
pub fn qcow2(virtual_size: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.max(112)];
    b[0..4].copy_from_slice(b"QFI\xfb");
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    // backing_file_offset (8..16) and backing_file_size (16..20) stay 0.
    b[20..24].copy_from_slice(&16u32.to_be_bytes());
    b[24..32].copy_from_slice(&virtual_size.to_be_bytes());
    b[100..104].copy_from_slice(&104u32.to_be_bytes());
    b
}

/// WebOb's status-line string and title (`webob.exc.status_map[code]().status` / `.title`).
pub fn webob_status(code: u16) -> (&'static str, &'static str) {
    match code {
        400 => ("400 Bad Request", "Bad Request"),
        401 => ("401 Unauthorized", "Unauthorized"),
        403 => ("403 Forbidden", "Forbidden"),
        404 => ("404 Not Found", "Not Found"),
        405 => ("405 Method Not Allowed", "Method Not Allowed"),
        409 => ("409 Conflict", "Conflict"),
        410 => ("410 Gone", "Gone"),
        413 => ("413 Request Entity Too Large", "Request Entity Too Large"),
        414 => ("414 Request-URI Too Long", "Request-URI Too Long"),
        415 => ("415 Unsupported Media Type", "Unsupported Media Type"),
        416 => ("416 Request Range Not Satisfiable", "Request Range Not Satisfiable"),
        501 => ("501 Not Implemented", "Not Implemented"),
        503 => ("503 Service Unavailable", "Service Unavailable"),
        _ => panic!("no WebOb status for {code}"),
    }
}

/// The WebOb JSON error body for `HTTPxxx(explanation=...)` (§12).
pub fn webob_json(code: u16, explanation: &str) -> Value {
    let (status, title) = webob_status(code);
    json!({"message": format!("{explanation}<br /><br />\n\n\n"), "code": status, "title": title})
}

/// Asserts a WebOb JSON error with an exact explanation (§12).
#[track_caller]
pub fn assert_gerr(r: &Resp, code: u16, explanation: &str) {
    assert_eq!(r.status, code, "status; body: {}", r.text());
    assert_eq!(r.content_type(), Some("application/json"), "error Content-Type; body: {}", r.text());
    assert_eq!(r.json(), webob_json(code, explanation), "error body");
}

/// Asserts a WebOb JSON error whose explanation the spec does not fix: status, `code`,
/// `title`, and a string `message` in WebOb's shape.
#[track_caller]
pub fn assert_gerr_code(r: &Resp, code: u16) {
    assert_eq!(r.status, code, "status; body: {}", r.text());
    assert_eq!(r.content_type(), Some("application/json"), "error Content-Type; body: {}", r.text());
    let v = r.json();
    let (status, title) = webob_status(code);
    assert_eq!(v["code"], json!(status), "code in {v}");
    assert_eq!(v["title"], json!(title), "title in {v}");
    let m = v["message"].as_str().unwrap_or_else(|| panic!("message is a string in {v}"));
    assert!(m.contains("<br /><br />\n"), "WebOb message shape: {m:?}");
    assert_eq!(v.as_object().unwrap().len(), 3, "only message/code/title: {v}");
}

/// The explanation part of a WebOb JSON error message.
pub fn explanation(r: &Resp) -> String {
    let v = r.json();
    let m = v["message"].as_str().unwrap_or("").to_string();
    m.split("<br /><br />").next().unwrap_or("").to_string()
}

/// A request to the image API.
pub struct GCall {
    client: reqwest::Client,
    method: String,
    url: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn client() -> reqwest::Client {
    imagemeta::auth::keystone::install_tls();
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap()
}

/// A request to `server.image_base + path` as project A's member, `Accept: application/json`.
pub fn g(server: &Server, method: &str, path: &str) -> GCall {
    GCall {
        client: client(),
        method: method.into(),
        url: format!("{}{}", server.image_base, path),
        token: Some(TOK_A.into()),
        headers: vec![("Accept".into(), "application/json".into())],
        body: None,
    }
}

impl GCall {
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }
    pub fn no_token(mut self) -> Self {
        self.token = None;
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn remove_header(mut self, k: &str) -> Self {
        self.headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        self
    }
    pub fn accept(self, v: &str) -> Self {
        self.header("Accept", v)
    }
    pub fn no_accept(self) -> Self {
        self.remove_header("Accept")
    }
    pub fn content_type(self, v: &str) -> Self {
        self.header("Content-Type", v)
    }
    pub fn json(mut self, v: &Value) -> Self {
        self.body = Some(serde_json::to_vec(v).unwrap());
        self.header("Content-Type", "application/json")
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = Some(b.into());
        self
    }
    /// A v2.1 JSON-patch body.
    pub fn patch(mut self, ops: &Value) -> Self {
        self.body = Some(serde_json::to_vec(ops).unwrap());
        self.header("Content-Type", PATCH_V21)
    }
    /// A v2.0 (draft 4) JSON-patch body.
    pub fn patch20(mut self, ops: &Value) -> Self {
        self.body = Some(serde_json::to_vec(ops).unwrap());
        self.header("Content-Type", PATCH_V20)
    }

    pub async fn send(self) -> Resp {
        let what = format!("{} {}", self.method, self.url);
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut rb = self.client.request(method, &self.url);
        if let Some(t) = &self.token {
            rb = rb.header("X-Auth-Token", t);
        }
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(b) = self.body {
            rb = rb.body(b);
        }
        let r = rb.send().await.unwrap_or_else(|e| panic!("{what} failed: {e:?}"));
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).to_string()))
            .collect();
        let body = r.bytes().await.unwrap_or_else(|e| panic!("{what}: reading body: {e:?}")).to_vec();
        Resp { status, headers, body }
    }
}

pub fn img_path(id: &str) -> String {
    format!("/v2/images/{id}")
}

pub fn file_path(id: &str) -> String {
    format!("/v2/images/{id}/file")
}

/// POST /v2/images as `token`; asserts 201 and returns the image.
pub async fn create_as(server: &Server, token: &str, body: Value) -> Value {
    let r = g(server, "POST", "/v2/images").token(token).json(&body).send().await;
    assert_eq!(r.status, 201, "create {body}: {}", r.text());
    r.json()
}

/// POST /v2/images as project A's member; asserts 201 and returns the image.
pub async fn create(server: &Server, body: Value) -> Value {
    create_as(server, TOK_A, body).await
}

/// A queued raw/bare image owned by project A; returns its id.
pub async fn create_raw(server: &Server) -> String {
    let v = create(server, json!({"name": "raw", "disk_format": "raw", "container_format": "bare"})).await;
    v["id"].as_str().unwrap().to_string()
}

/// GET /v2/images/{id} as admin; asserts 200.
pub async fn show(server: &Server, id: &str) -> Value {
    let r = g(server, "GET", &img_path(id)).token(TOK_ADMIN).send().await;
    assert_eq!(r.status, 200, "show {id}: {}", r.text());
    r.json()
}

/// PUT /v2/images/{id}/file with a Content-Length, as project A.
pub async fn upload(server: &Server, id: &str, data: &[u8]) -> Resp {
    g(server, "PUT", &file_path(id)).content_type(OCTET).body(data.to_vec()).send().await
}

/// Uploads `data` and asserts 204.
pub async fn upload_ok(server: &Server, id: &str, data: &[u8]) {
    let r = upload(server, id, data).await;
    assert_no_content(&r);
}

/// A queued raw/bare image of project A, uploaded with `data` (active afterwards).
pub async fn active_raw(server: &Server, data: &[u8]) -> String {
    let id = create_raw(server).await;
    upload_ok(server, &id, data).await;
    id
}

/// PUT /v2/images/{id}/file with `Transfer-Encoding: chunked` (no Content-Length), sent raw
/// in `chunk`-byte chunks, with extra header lines (each `"Name: value"`).
pub fn upload_chunked(server: &Server, id: &str, data: &[u8], chunk: usize, extra: &[&str]) -> Resp {
    let port: u16 = server.image_base.rsplit(':').next().unwrap().parse().unwrap();
    let mut req = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Auth-Token: {TOK_A}\r\n\
         Accept: application/json\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n"
    )
    .into_bytes();
    for h in extra {
        req.extend_from_slice(h.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    for c in data.chunks(chunk.max(1)) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    raw_http(port, &req)
}

pub fn image_port(server: &Server) -> u16 {
    server.image_base.rsplit(':').next().unwrap().parse().unwrap()
}

/// Ids of a list response's `images`, in order.
pub fn ids(v: &Value) -> Vec<String> {
    v["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images array in {v}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// GET `path` (a list URL) as `token`; asserts 200 and returns the body.
pub async fn list_as(server: &Server, token: &str, path: &str) -> Value {
    let r = g(server, "GET", path).token(token).send().await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// Polls the image as admin until `status` equals `want` (bounded, no timing assertion).
pub async fn wait_status(server: &Server, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = show(server, id).await;
        if last["status"] == json!(want) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("image {id} never reached status {want}; last: {last}")
}

/// The base attributes that are always present (§4.1).
pub const BASE_KEYS: &[&str] = &[
    "name",
    "disk_format",
    "container_format",
    "visibility",
    "size",
    "virtual_size",
    "status",
    "checksum",
    "protected",
    "min_ram",
    "min_disk",
    "owner",
    "os_hidden",
    "os_hash_algo",
    "os_hash_value",
    "id",
    "created_at",
    "updated_at",
    "tags",
    "self",
    "file",
    "schema",
];

/// `YYYY-MM-DDTHH:MM:SSZ` (§1).
pub fn is_glance_time(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].iter().all(|&i| b[i].is_ascii_digit())
}

/// Sorted tags of an image.
pub fn tags(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    t.sort();
    t
}

/// Asserts a WebOb JSON error whose message contains `text` (used where glance raises the
/// exception with a positional `detail` or the spec fixes only the sentence, not its slot).
#[track_caller]
pub fn assert_gerr_has(r: &Resp, code: u16, text: &str) {
    assert_gerr_code(r, code);
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(m.contains(text), "message {m:?} contains {text:?}");
}
