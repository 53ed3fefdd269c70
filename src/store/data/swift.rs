//! A Swift container of image data, through Swift's own API: authenticated with Keystone v3
//! (the object-store endpoint of the catalog) or with a v1.0 auth endpoint such as tempauth's
//! (`…/auth/v1.0`), from `IMAGEMETA_SWIFT_USER` and `IMAGEMETA_SWIFT_KEY` (with Keystone:
//! also `IMAGEMETA_SWIFT_PROJECT`, `IMAGEMETA_SWIFT_USER_DOMAIN`,
//! `IMAGEMETA_SWIFT_PROJECT_DOMAIN`, both domains `Default` unless set). The token is renewed
//! before it expires and whenever Swift refuses it.
//!
//! Data smaller than a segment is one object, `PUT` at commit. Larger data is a Static Large
//! Object: segments in `CONTAINER_segments` under `STAGING/`, then a manifest `STAGING` in
//! `CONTAINER`, which makes it visible at once. A failed upload deletes its segments; a
//! delete removes the manifest and its segments; a dead upload's segments are found by their
//! staging prefix.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::http::{self, Http};
use super::{Backend, ByteStream, Entry, Sink, unhex};

/// The smallest segment, and what an upload of unknown size starts with.
const MIN_SEGMENT: usize = 8 << 20;
/// Swift's default limit on an SLO's segments is 1,000; segments are sized to stay under it.
const MAX_SEGMENTS: u64 = 900;

#[derive(Debug, Clone)]
enum Credentials {
    /// A v1.0 auth endpoint (tempauth, swauth): `X-Auth-User` and `X-Auth-Key`.
    V1 { url: String, user: String, key: String },
    /// Keystone v3 password authentication, scoped to a project.
    V3 {
        url: String,
        user: String,
        password: String,
        project: String,
        user_domain: String,
        project_domain: String,
        region: Option<String>,
    },
}

/// A token and the storage URL it is for.
#[derive(Debug, Clone)]
struct Session {
    storage_url: String,
    token: String,
    renew_at: Instant,
}

pub struct SwiftBackend {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    credentials: Credentials,
    container: String,
    session: Mutex<Option<Session>>,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

impl SwiftBackend {
    /// Opens `swift://CONTAINER?auth_url=URL[&region=R]`, creating the container and its
    /// segments container when they do not exist.
    pub async fn open(url: &str) -> Result<SwiftBackend, String> {
        let rest = url.strip_prefix("swift://").ok_or_else(|| format!("{url}: not a swift:// URL"))?;
        let (container, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut auth_url, mut region) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("auth_url", v)) => {
                    auth_url = Some(crate::api::percent_decode(v).unwrap_or_default().into_owned())
                }
                Some(("region", v)) => region = Some(v.to_owned()),
                _ => return Err(format!("{url}: unknown parameter {pair} (auth_url, region)")),
            }
        }
        let auth_url = auth_url.ok_or_else(|| format!("{url}: an auth_url=URL parameter is needed"))?;
        if container.is_empty() || container.contains('/') {
            return Err(format!("{url}: swift://CONTAINER?auth_url=URL names one container"));
        }
        let credentials = if auth_url.trim_end_matches('/').ends_with("/v1.0") || auth_url.contains("/auth/v1") {
            Credentials::V1 { url: auth_url, user: env("IMAGEMETA_SWIFT_USER")?, key: env("IMAGEMETA_SWIFT_KEY")? }
        } else {
            Credentials::V3 {
                url: auth_url.trim_end_matches('/').trim_end_matches("/v3").to_owned(),
                user: env("IMAGEMETA_SWIFT_USER")?,
                password: env("IMAGEMETA_SWIFT_KEY")?,
                project: env("IMAGEMETA_SWIFT_PROJECT")?,
                user_domain: std::env::var("IMAGEMETA_SWIFT_USER_DOMAIN").unwrap_or_else(|_| "Default".into()),
                project_domain: std::env::var("IMAGEMETA_SWIFT_PROJECT_DOMAIN").unwrap_or_else(|_| "Default".into()),
                region,
            }
        };
        let inner =
            Inner { http: Http::new()?, credentials, container: container.to_owned(), session: Mutex::new(None) };
        let backend = SwiftBackend { inner: Arc::new(inner) };
        for c in [backend.inner.container.clone(), backend.inner.segments()] {
            let response =
                backend.inner.send("PUT", &c, "", &[], Bytes::new()).await.map_err(|e| format!("{url}: {e}"))?;
            http::expect(response, &[201, 202, 204]).await.map_err(|e| format!("{url}: container {c}: {e}"))?;
        }
        Ok(backend)
    }
}

impl Inner {
    fn segments(&self) -> String {
        format!("{}_segments", self.container)
    }

    /// A valid session, authenticating when there is none or it is about to expire.
    async fn session(&self, renew: bool) -> io::Result<Session> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref().filter(|s| !renew && Instant::now() < s.renew_at) {
            return Ok(s.clone());
        }
        let fresh = self.authenticate().await?;
        *session = Some(fresh.clone());
        Ok(fresh)
    }

    async fn authenticate(&self) -> io::Result<Session> {
        let denied = |what: String| io::Error::new(io::ErrorKind::PermissionDenied, what);
        match &self.credentials {
            Credentials::V1 { url, user, key } => {
                let response = self
                    .http
                    .client
                    .get(url)
                    .header("x-auth-user", user)
                    .header("x-auth-key", key)
                    .send()
                    .await
                    .map_err(http::unreachable)?;
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let (storage_url, token) = (header("x-storage-url"), header("x-auth-token"));
                let lifetime = header("x-auth-token-expires").and_then(|s| s.parse::<u64>().ok()).unwrap_or(3600);
                http::expect(response, &[200, 204]).await?;
                let (Some(storage_url), Some(token)) = (storage_url, token) else {
                    return Err(denied("the auth endpoint gave no token".into()));
                };
                Ok(Session { storage_url, token, renew_at: renew_at(lifetime) })
            }
            Credentials::V3 { url, user, password, project, user_domain, project_domain, region } => {
                let body = json!({"auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": user, "password": password, "domain": {"name": user_domain}}}},
                    "scope": {"project": {"name": project, "domain": {"name": project_domain}}},
                }});
                let response = self
                    .http
                    .client
                    .post(format!("{url}/v3/auth/tokens"))
                    .json(&body)
                    .send()
                    .await
                    .map_err(http::unreachable)?;
                let token = response.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let text = http::expect(response, &[201]).await?;
                let doc: Value = serde_json::from_str(&text).map_err(io::Error::other)?;
                let token = token.ok_or_else(|| denied("Keystone gave no token".into()))?;
                let storage_url = doc["token"]["catalog"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["type"] == "object-store")
                    .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                    .find(|e| e["interface"] == "public" && region.as_ref().is_none_or(|r| e["region"] == json!(r)))
                    .and_then(|e| e["url"].as_str().map(str::to_owned))
                    .ok_or_else(|| io::Error::other("no public object-store endpoint in the Keystone catalog"))?;
                let lifetime = doc["token"]["expires_at"]
                    .as_str()
                    .and_then(crate::api::compute::images::parse_time)
                    .map_or(3600, |t| (t - time::OffsetDateTime::now_utc()).whole_seconds().max(0) as u64);
                Ok(Session { storage_url, token, renew_at: renew_at(lifetime) })
            }
        }
    }

    /// Sends a request for `path` (`CONTAINER[/OBJECT]`) with the session's token; once more
    /// with a new token when Swift refuses the first.
    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> io::Result<reqwest::Response> {
        for renew in [false, true] {
            let session = self.session(renew).await?;
            let mut url = format!("{}/{}", session.storage_url.trim_end_matches('/'), encode_path(path));
            if !query.is_empty() {
                url = format!("{url}?{query}");
            }
            let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(io::Error::other)?;
            let mut request = self.http.client.request(method, &url).header("x-auth-token", &session.token);
            for (k, v) in headers {
                request = request.header(*k, v.as_str());
            }
            let response = request.body(body.clone()).send().await.map_err(http::unreachable)?;
            if response.status().as_u16() != 401 || renew {
                return Ok(response);
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Object names in `container` starting with `prefix`, with when each was last changed.
    async fn list(&self, container: &str, prefix: &str) -> io::Result<Vec<(String, SystemTime)>> {
        let mut found = Vec::new();
        let mut marker = String::new();
        loop {
            let query = format!(
                "format=json&prefix={}&marker={}",
                crate::api::quote_plus(prefix),
                crate::api::quote_plus(&marker)
            );
            let response = self.send("GET", container, &query, &[], Bytes::new()).await?;
            if response.status().as_u16() == 404 {
                return Ok(found);
            }
            let text = http::expect(response, &[200, 204]).await?;
            let page: Vec<Value> = if text.trim().is_empty() {
                Vec::new()
            } else {
                serde_json::from_str(&text).map_err(io::Error::other)?
            };
            let Some(last) = page.last().and_then(|o| o["name"].as_str()).map(str::to_owned) else { return Ok(found) };
            for object in &page {
                let name = object["name"].as_str().unwrap_or_default().to_owned();
                let modified = object["last_modified"].as_str().map_or(SystemTime::now(), http::parse_iso_time);
                found.push((name, modified));
            }
            marker = last;
        }
    }

    async fn delete(&self, path: &str, query: &str) -> io::Result<()> {
        let response = self.send("DELETE", path, query, &[], Bytes::new()).await?;
        http::expect(response, &[200, 204, 404]).await.map(drop)
    }
}

/// Renew with a minute to spare (half the lifetime for short ones).
fn renew_at(lifetime_secs: u64) -> Instant {
    let lifetime = Duration::from_secs(lifetime_secs);
    Instant::now() + lifetime.saturating_sub(Duration::from_secs(60).min(lifetime / 2))
}

/// Percent-encodes a path, keeping `/`.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn segment_size(size: Option<u64>) -> usize {
    (size.map_or(0, |s| s.div_ceil(MAX_SEGMENTS)) as usize).max(MIN_SEGMENT)
}

struct SwiftSink {
    inner: Arc<Inner>,
    name: String,
    buffer: Vec<u8>,
    segment_size: usize,
    /// The segments written: path, etag, size.
    segments: Vec<(String, String, usize)>,
}

impl SwiftSink {
    async fn send_segment(&mut self) -> io::Result<()> {
        let path = format!("{}/{}/{:08}", self.inner.segments(), self.name, self.segments.len() + 1);
        let body = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(self.segment_size)));
        let size = body.len();
        let response = self.inner.send("PUT", &path, "", &[], body).await?;
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(|e| e.trim_matches('"').to_owned());
        http::expect(response, &[201]).await?;
        self.segments.push((path, etag.unwrap_or_default(), size));
        // Of unknown size: segments double every 400, to stay under the limit.
        if self.segments.len().is_multiple_of(400) {
            self.segment_size *= 2;
        }
        Ok(())
    }

    async fn delete_segments(&self) {
        for (path, _, _) in &self.segments {
            let _ = self.inner.delete(path, "").await;
        }
    }
}

#[async_trait]
impl Sink for SwiftSink {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = (self.segment_size - self.buffer.len()).min(rest.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buffer.len() == self.segment_size {
                self.send_segment().await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> io::Result<String> {
        let path = format!("{}/{}", self.inner.container, self.name);
        let result = async {
            if self.segments.is_empty() {
                let body = Bytes::from(std::mem::take(&mut self.buffer));
                let response = self.inner.send("PUT", &path, "", &[], body).await?;
                return http::expect(response, &[201]).await.map(drop);
            }
            if !self.buffer.is_empty() {
                self.send_segment().await?;
            }
            let manifest: Vec<Value> = self
                .segments
                .iter()
                .map(|(p, etag, size)| json!({"path": format!("/{p}"), "etag": etag, "size_bytes": size}))
                .collect();
            let body = Bytes::from(serde_json::to_vec(&manifest).map_err(io::Error::other)?);
            let response = self.inner.send("PUT", &path, "multipart-manifest=put", &[], body).await?;
            http::expect(response, &[201]).await.map(drop)
        }
        .await;
        match result {
            Ok(()) => Ok(self.name.clone()),
            Err(e) => {
                self.delete_segments().await;
                Err(e)
            }
        }
    }

    async fn abort(self: Box<Self>) {
        self.delete_segments().await;
    }
}

#[async_trait]
impl Backend for SwiftBackend {
    async fn begin(&self, _: &str, staging: &str, size: Option<u64>) -> io::Result<Box<dyn Sink>> {
        let segment_size = segment_size(size);
        Ok(Box::new(SwiftSink {
            inner: self.inner.clone(),
            name: staging.to_owned(),
            buffer: Vec::new(),
            segment_size,
            segments: Vec::new(),
        }))
    }

    async fn read(&self, _: &str, location: Option<&str>, range: Option<(u64, u64)>) -> io::Result<Option<ByteStream>> {
        let name = location.ok_or_else(|| io::Error::other("image data in Swift without a location"))?;
        let headers: Vec<(&str, String)> =
            range.map(|(a, b)| ("range", format!("bytes={a}-{b}"))).into_iter().collect();
        let path = format!("{}/{name}", self.inner.container);
        let response = self.inner.send("GET", &path, "", &headers, Bytes::new()).await?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 | 206 => Ok(Some(http::stream(response))),
            _ => http::expect(response, &[200]).await.map(|_| None),
        }
    }

    async fn remove(&self, _: &str, location: Option<&str>) -> io::Result<()> {
        let Some(name) = location else { return Ok(()) };
        let path = format!("{}/{name}", self.inner.container);
        let head = self.inner.send("HEAD", &path, "", &[], Bytes::new()).await?;
        let slo =
            head.headers().get("x-static-large-object").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if head.status().as_u16() == 404 {
            return Ok(());
        }
        http::expect(head, &[200, 204]).await?;
        if !slo {
            return self.inner.delete(&path, "").await;
        }
        // A manifest goes with its segments, in one bulk delete whose answer lists failures.
        let accept = [("accept", "application/json".to_owned())];
        let response = self.inner.send("DELETE", &path, "multipart-manifest=delete", &accept, Bytes::new()).await?;
        let text = http::expect(response, &[200, 204, 404]).await?;
        let report: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match report["Errors"].as_array() {
            Some(errors) if !errors.is_empty() => Err(io::Error::other(format!("deleting {name}: {errors:?}"))),
            _ => Ok(()),
        }
    }

    async fn remove_staging(&self, staging: &str) -> io::Result<()> {
        self.remove("", Some(staging)).await?;
        let segments = self.inner.segments();
        for (name, _) in self.inner.list(&segments, &format!("{staging}/")).await? {
            self.inner.delete(&format!("{segments}/{name}"), "").await?;
        }
        Ok(())
    }

    async fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut found = Vec::new();
        let objects = self.inner.list(&self.inner.container, "").await?;
        for (name, modified) in &objects {
            let Some(id) = name.split('.').next().and_then(unhex) else { continue };
            found.push(Entry::Data { id, location: name.clone(), modified: *modified });
        }
        // Segments whose manifest does not exist (yet, or any more) are partial uploads.
        let mut staged: Vec<(String, SystemTime)> = Vec::new();
        for (name, modified) in self.inner.list(&self.inner.segments(), "").await? {
            let Some((staging, _)) = name.split_once('/') else { continue };
            if objects.iter().any(|(o, _)| o == staging) {
                continue;
            }
            match staged.iter_mut().find(|(s, _)| s == staging) {
                Some(entry) => entry.1 = entry.1.max(modified),
                None => staged.push((staging.to_owned(), modified)),
            }
        }
        for (staging, modified) in staged {
            let Some(id) = staging.split('.').next().and_then(unhex) else { continue };
            found.push(Entry::Partial { id, staging, modified });
        }
        Ok(found)
    }

    fn describe(&self) -> (&'static str, Value) {
        ("swift", json!({"container": self.inner.container, "large_object_chunk_size": MIN_SEGMENT}))
    }
}
