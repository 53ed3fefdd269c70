//! An S3 bucket of image data (AWS, Ceph RGW, Swift's `s3api`, any S3 service): path-style
//! requests signed with AWS Signature Version 4, credentials from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`.
//!
//! An upload is a multipart upload to the object named by its staging name (the image's
//! location once committed): nothing is visible until it completes, and it is aborted on any
//! failure. One part is held in memory at a time; parts grow with the declared size so that
//! even a terabyte fits S3's 10,000 parts. Data smaller than a part is one `PUT` at commit.
//! A dead upload is found by its staging name among the bucket's multipart uploads.

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use axum::body::Bytes;
use sha2::{Digest, Sha256};

use super::http::{self, Http};
use super::{Backend, ByteStream, Entry, Sink, hex, unhex};

/// The smallest part S3 takes (but the last), and what an upload of unknown size uses.
const MIN_PART: usize = 8 << 20;
/// S3's limit on parts; parts are sized to stay well under it.
const MAX_PARTS: u64 = 9_000;

/// `s3://BUCKET?endpoint=URL&region=R`.
#[derive(Debug, Clone)]
struct Target {
    endpoint: String,
    bucket: String,
    region: String,
}

pub struct S3Backend {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    http: Http,
    access_key: String,
    secret_key: String,
}

impl S3Backend {
    /// Opens `s3://BUCKET?endpoint=URL&region=R` (region `us-east-1` by default), creating
    /// the bucket when it does not exist.
    pub async fn open(url: &str) -> Result<S3Backend, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url}: not an s3:// URL"))?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut endpoint = None;
        let mut region = "us-east-1".to_owned();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("endpoint", v)) => {
                    endpoint = Some(crate::api::percent_decode(v).unwrap_or_default().into_owned())
                }
                Some(("region", v)) => region = v.to_owned(),
                _ => return Err(format!("{url}: unknown parameter {pair} (endpoint, region)")),
            }
        }
        let endpoint = endpoint.ok_or_else(|| format!("{url}: an endpoint=URL parameter is needed"))?;
        if bucket.is_empty() || bucket.contains('/') {
            return Err(format!("{url}: s3://BUCKET?endpoint=URL names one bucket"));
        }
        let access_key =
            std::env::var("AWS_ACCESS_KEY_ID").map_err(|_| format!("{url}: AWS_ACCESS_KEY_ID is not set"))?;
        let secret_key =
            std::env::var("AWS_SECRET_ACCESS_KEY").map_err(|_| format!("{url}: AWS_SECRET_ACCESS_KEY is not set"))?;
        let inner = Inner {
            target: Target { endpoint: endpoint.trim_end_matches('/').to_owned(), bucket: bucket.to_owned(), region },
            http: Http::new().map_err(|e| format!("{url}: {e}"))?,
            access_key,
            secret_key,
        };
        inner.ensure_bucket().await.map_err(|e| format!("{url}: {e}"))?;
        Ok(S3Backend { inner: Arc::new(inner) })
    }
}

impl Inner {
    async fn ensure_bucket(&self) -> io::Result<()> {
        let head = self.send("HEAD", "", &[], Bytes::new(), &[]).await?;
        match head.status().as_u16() {
            200 => Ok(()),
            404 => {
                let created = self.send("PUT", "", &[], Bytes::new(), &[]).await?;
                http::expect(created, &[200]).await.map(drop)
            }
            _ => http::expect(head, &[200]).await.map(drop),
        }
    }

    /// Sends a signed request for `key` (the bucket itself when empty).
    async fn send(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        body: Bytes,
        headers: &[(&str, String)],
    ) -> io::Result<reqwest::Response> {
        let path =
            if key.is_empty() { format!("/{}", self.target.bucket) } else { format!("/{}/{key}", self.target.bucket) };
        let mut query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        query.sort();
        let canonical_query =
            query.iter().map(|(k, v)| format!("{}={}", encode(k, true), encode(v, true))).collect::<Vec<_>>().join("&");
        let url = if canonical_query.is_empty() {
            format!("{}{}", self.target.endpoint, encode(&path, false))
        } else {
            format!("{}{}?{canonical_query}", self.target.endpoint, encode(&path, false))
        };
        let host = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                })
            })
            .ok_or_else(|| io::Error::other(format!("{url}: no host")))?;
        let payload = hex(&Sha256::digest(&body));
        let now = time::OffsetDateTime::now_utc();
        let date = format!("{:04}{:02}{:02}", now.year(), u8::from(now.month()), now.day());
        let amz_date = format!("{date}T{:02}{:02}{:02}Z", now.hour(), now.minute(), now.second());
        let mut signed: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-content-sha256".into(), payload.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        for (k, v) in headers {
            signed.push((k.to_ascii_lowercase(), v.trim().to_owned()));
        }
        signed.sort();
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_names = signed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
        let canonical = format!(
            "{method}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_names}\n{payload}",
            encode(&path, false)
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.target.region);
        let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
        let mut key = hmac(format!("AWS4{}", self.secret_key).as_bytes(), date.as_bytes());
        for part in [self.target.region.as_bytes(), b"s3", b"aws4_request"] {
            key = hmac(&key, part);
        }
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            self.access_key
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(io::Error::other)?;
        let mut request = self.http.client.request(method, &url).header("authorization", authorization);
        for (k, v) in &signed {
            if k != "host" {
                request = request.header(k.as_str(), v.as_str());
            }
        }
        request.body(body).send().await.map_err(http::unreachable)
    }

    async fn put(&self, key: &str, body: Bytes) -> io::Result<()> {
        let response = self.send("PUT", key, &[], body, &[]).await?;
        http::expect(response, &[200]).await.map(drop)
    }

    /// Aborts every multipart upload of `key`.
    async fn abort_uploads(&self, key: &str) -> io::Result<()> {
        for (upload_key, upload_id, _) in self.multipart_uploads(key).await? {
            if upload_key == key {
                let response = self.send("DELETE", key, &[("uploadId", &upload_id)], Bytes::new(), &[]).await?;
                http::expect(response, &[204, 200, 404]).await?;
            }
        }
        Ok(())
    }

    /// Multipart uploads in progress whose key starts with `prefix`: key, upload id, start.
    async fn multipart_uploads(&self, prefix: &str) -> io::Result<Vec<(String, String, SystemTime)>> {
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut query = vec![("uploads", ""), ("prefix", prefix)];
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            let response = self.send("GET", "", &query, Bytes::new(), &[]).await?;
            let xml = http::expect(response, &[200]).await?;
            for upload in http::xml_all(&xml, "Upload") {
                let key = http::xml_one(upload, "Key").unwrap_or_default();
                let id = http::xml_one(upload, "UploadId").unwrap_or_default();
                let started = http::xml_one(upload, "Initiated").map_or(SystemTime::now(), http::parse_iso_time);
                found.push((key, id, started));
            }
            if http::xml_one(&xml, "IsTruncated").as_deref() != Some("true") {
                return Ok(found);
            }
            key_marker = http::xml_one(&xml, "NextKeyMarker").unwrap_or_default();
            id_marker = http::xml_one(&xml, "NextUploadIdMarker").unwrap_or_default();
            if key_marker.is_empty() {
                return Ok(found);
            }
        }
    }
}

/// HMAC-SHA256 (RFC 2104): small enough not to need a crate.
fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let (mut inner, mut outer) = (Sha256::new(), Sha256::new());
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// SigV4's URI encoding: unreserved characters stay; `/` stays in paths.
fn encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The part size for an upload of `size` bytes (unknown: the minimum, and parts grow as they
/// come).
fn part_size(size: Option<u64>) -> usize {
    let needed = size.map_or(0, |s| s.div_ceil(MAX_PARTS));
    (needed as usize).max(MIN_PART)
}

struct S3Sink {
    inner: Arc<Inner>,
    key: String,
    part: Vec<u8>,
    part_size: usize,
    /// The multipart upload, once the data is more than one part: its id and the parts sent.
    upload: Option<(String, Vec<(u32, String)>)>,
}

impl S3Sink {
    async fn send_part(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            let response = self.inner.send("POST", &self.key, &[("uploads", "")], Bytes::new(), &[]).await?;
            let xml = http::expect(response, &[200]).await?;
            let id = http::xml_one(&xml, "UploadId").ok_or_else(|| io::Error::other("no UploadId in the answer"))?;
            self.upload = Some((id, Vec::new()));
        }
        let (id, parts) = self.upload.as_mut().expect("started above");
        let number = parts.len() as u32 + 1;
        let body = Bytes::from(std::mem::replace(&mut self.part, Vec::with_capacity(self.part_size)));
        let response = self
            .inner
            .send("PUT", &self.key, &[("partNumber", &number.to_string()), ("uploadId", id)], body, &[])
            .await?;
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        http::expect(response, &[200]).await?;
        parts.push((number, etag.ok_or_else(|| io::Error::other("no ETag for a part"))?));
        // An upload of unknown size: parts double every thousand, to stay under the limit.
        if parts.len().is_multiple_of(1000) {
            self.part_size *= 2;
        }
        Ok(())
    }

    async fn complete(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            // Smaller than a part: one PUT.
            let body = Bytes::from(std::mem::take(&mut self.part));
            return self.inner.put(&self.key, body).await;
        }
        if !self.part.is_empty() {
            self.send_part().await?;
        }
        let (id, parts) = self.upload.as_ref().expect("a multipart upload");
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let response = self.inner.send("POST", &self.key, &[("uploadId", id)], Bytes::from(xml), &[]).await?;
        // S3 can answer 200 with an error document for a failed completion.
        let body = http::expect(response, &[200]).await?;
        if body.contains("<Error>") {
            return Err(io::Error::other(format!("completing the upload failed: {}", crate::store::error_text(&body))));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for S3Sink {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = (self.part_size - self.part.len()).min(rest.len());
            self.part.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.part.len() == self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> io::Result<String> {
        match self.complete().await {
            Ok(()) => Ok(self.key.clone()),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn abort(self: Box<Self>) {
        if let Some((id, _)) = &self.upload {
            let _ = self.inner.send("DELETE", &self.key, &[("uploadId", id)], Bytes::new(), &[]).await;
        }
    }
}

#[async_trait]
impl Backend for S3Backend {
    async fn begin(&self, _: &str, staging: &str, size: Option<u64>) -> io::Result<Box<dyn Sink>> {
        let part_size = part_size(size);
        Ok(Box::new(S3Sink {
            inner: self.inner.clone(),
            key: staging.to_owned(),
            part_size,
            part: Vec::new(),
            upload: None,
        }))
    }

    async fn read(&self, _: &str, location: Option<&str>, range: Option<(u64, u64)>) -> io::Result<Option<ByteStream>> {
        let key = location.ok_or_else(|| io::Error::other("image data in S3 without a location"))?;
        let headers: Vec<(&str, String)> =
            range.map(|(a, b)| ("range", format!("bytes={a}-{b}"))).into_iter().collect();
        let response = self.inner.send("GET", key, &[], Bytes::new(), &headers).await?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 | 206 => Ok(Some(http::stream(response))),
            _ => http::expect(response, &[200]).await.map(|_| None),
        }
    }

    async fn remove(&self, _: &str, location: Option<&str>) -> io::Result<()> {
        let Some(key) = location else { return Ok(()) };
        let response = self.inner.send("DELETE", key, &[], Bytes::new(), &[]).await?;
        http::expect(response, &[204, 200, 404]).await.map(drop)
    }

    async fn remove_staging(&self, staging: &str) -> io::Result<()> {
        self.inner.abort_uploads(staging).await?;
        // Committed, but its image never became active: the object too.
        self.remove("", Some(staging)).await
    }

    async fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut found = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("list-type", "2")];
            if !token.is_empty() {
                query.push(("continuation-token", &token));
            }
            let response = self.inner.send("GET", "", &query, Bytes::new(), &[]).await?;
            let xml = http::expect(response, &[200]).await?;
            for object in http::xml_all(&xml, "Contents") {
                let Some(key) = http::xml_one(object, "Key") else { continue };
                let Some(id) = key.split('.').next().and_then(unhex) else { continue };
                let modified = http::xml_one(object, "LastModified").map_or(SystemTime::now(), http::parse_iso_time);
                found.push(Entry::Data { id, location: key, modified });
            }
            match http::xml_one(&xml, "NextContinuationToken") {
                Some(next) if http::xml_one(&xml, "IsTruncated").as_deref() == Some("true") => token = next,
                _ => break,
            }
        }
        for (key, _, started) in self.inner.multipart_uploads("").await? {
            let Some(id) = key.split('.').next().and_then(unhex) else { continue };
            found.push(Entry::Partial { id, staging: key, modified: started });
        }
        Ok(found)
    }

    fn describe(&self) -> (&'static str, serde_json::Value) {
        (
            "s3",
            serde_json::json!({"s3_store_host": self.inner.target.endpoint, "s3_store_bucket": self.inner.target.bucket,
                               "s3_store_region": self.inner.target.region}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 4231, test case 2.
    #[test]
    fn hmac_sha256() {
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn parts_fit_the_limit() {
        assert_eq!(part_size(None), MIN_PART);
        assert_eq!(part_size(Some(2 << 30)), MIN_PART);
        assert!(part_size(Some(1 << 40)) as u64 * MAX_PARTS >= 1 << 40);
    }
}
