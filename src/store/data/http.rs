//! What the object stores share: an HTTP client with bounds, how their answers become I/O
//! errors, streams and values.

use std::io;
use std::time::{Duration, SystemTime};

use super::ByteStream;

/// A client for one object store: connections time out, and a request that stops moving
/// fails (a stream of image data may take long, but never stall).
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Http, String> {
        crate::tls::install();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Http { client })
    }
}

/// A store that could not be reached or answered nothing usable.
pub fn unreachable(e: reqwest::Error) -> io::Error {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    io::Error::new(io::ErrorKind::ConnectionRefused, crate::store::error_text(text))
}

/// The body of an answer with one of the `ok` statuses; any other is an error whose kind
/// says what it means: no room (413, 507: `StorageFull`), refused credentials
/// (`PermissionDenied`), the rest unavailable.
pub async fn expect(response: reqwest::Response, ok: &[u16]) -> io::Result<String> {
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    if ok.contains(&status) {
        return Ok(body);
    }
    let kind = match status {
        413 | 507 => io::ErrorKind::StorageFull,
        401 | 403 => io::ErrorKind::PermissionDenied,
        404 => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    let text = if body.contains("EntityTooLarge") || body.contains("QuotaExceeded") {
        return Err(io::Error::new(io::ErrorKind::StorageFull, crate::store::error_text(body)));
    } else {
        crate::store::error_text(format!("HTTP {status}: {body}"))
    };
    Err(io::Error::new(kind, text))
}

/// The body of a successful answer, as a stream of data.
pub fn stream(response: reqwest::Response) -> ByteStream {
    use futures_util::TryStreamExt;
    Box::pin(response.bytes_stream().map_err(unreachable))
}

/// The inner text of each `<tag>…</tag>` in `xml` (flat: the elements S3 answers with).
pub fn xml_all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// The first `<tag>`'s text, XML entities resolved.
pub fn xml_one(xml: &str, tag: &str) -> Option<String> {
    xml_all(xml, tag).first().map(|t| {
        t.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    })
}

/// An ISO 8601 time as object stores write them (`2026-12-04T22:30:38.000Z`).
pub fn parse_iso_time(s: impl AsRef<str>) -> SystemTime {
    let s = s.as_ref();
    crate::api::compute::images::parse_time(s.trim())
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.unix_timestamp().max(0) as u64))
        .unwrap_or_else(SystemTime::now)
}
