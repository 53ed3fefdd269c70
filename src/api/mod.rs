//! HTTP only: routing, faults, microversions, links, pagination. Handlers orchestrate
//! (parse → store → view); the store applies policy and quota.

pub mod compute;
pub mod fault;
pub mod image_v2;
pub mod json;
pub mod microversion;
pub mod pyrepr;

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::domain::metadata::MetadataQuota;
use crate::domain::update::ImageQuotas;
use time::OffsetDateTime;

use crate::store::data::DataStore;
use crate::store::{Cmp, Column, DynStore, Filter, Scalar};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    /// Image data files.
    pub data: Arc<DataStore>,
    pub auth: Arc<dyn Authenticator>,
    pub settings: Arc<Settings>,
}

/// API behaviour that operators configure.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `metadata_items` quota.
    pub metadata_quota: MetadataQuota,
    /// oslo.middleware's `max_request_body_size`: larger bodies get 413.
    pub max_request_body_size: usize,
    /// Sent in `WWW-Authenticate: Keystone uri="…"` with every 401.
    pub www_authenticate_uri: String,
    /// Where the image API is reached, for the `alternate` links. `None`: the request's host
    /// on `image_port`.
    pub image_url: Option<String>,
    /// The image listener's port, for `alternate` links when `image_url` is unset.
    pub image_port: u16,
    /// Glance's `image_property_quota` and `image_tag_quota`.
    pub image_quotas: ImageQuotas,
    /// Glance's `image_size_cap`: the largest upload, in bytes.
    pub image_size_cap: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            metadata_quota: MetadataQuota::from_config(128),
            max_request_body_size: 114_688,
            www_authenticate_uri: "http://127.0.0.1:5000".into(),
            image_url: None,
            image_port: 9292,
            image_quotas: ImageQuotas::default(),
            image_size_cap: 1 << 40,
        }
    }
}

/// A new request id, `req-<uuid4>`.
pub fn request_id() -> String {
    format!("req-{}", uuid::Uuid::new_v4())
}

/// Picks the offer an `Accept` header value prefers: highest quality, the earlier offer on
/// ties, wildcards allowed. `None` when the header is empty or accepts none of them.
pub fn negotiate<'a>(accept: &str, offers: &[&'a str]) -> Option<&'a str> {
    if accept.trim().is_empty() {
        return None;
    }
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let range = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (!range.is_empty()).then_some((range, q))
        })
        .collect();
    let quality = |offer: &str| -> f32 {
        let (ty, _) = offer.split_once('/').unwrap_or((offer, ""));
        let mut best: Option<(u8, f32)> = None;
        for (range, q) in &ranges {
            let specificity = if range == offer {
                3
            } else if range.strip_suffix("/*") == Some(ty) {
                2
            } else if range == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, *q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let mut chosen: Option<(&str, f32)> = None;
    for offer in offers {
        let q = quality(offer);
        if q > 0.0 && chosen.is_none_or(|(_, best)| q > best) {
            chosen = Some((offer, q));
        }
    }
    chosen.map(|(o, _)| o)
}

/// Percent-decodes a path; `None` when the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    String::from_utf8(unescape(s.as_bytes(), false)).ok()
}

/// Decodes `application/x-www-form-urlencoded` pairs; `None` when any is not UTF-8.
pub fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = String::from_utf8(unescape(k.as_bytes(), true)).ok()?;
            let v = String::from_utf8(unescape(v.as_bytes(), true)).ok()?;
            Some((k, v))
        })
        .collect()
}

fn unescape(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A time comparison as the APIs show time: to the second. The store keeps microseconds, so
/// `T` compares with a stored instant `s` as Glance compares with its whole-second column:
/// `floor(s) > T` is `s >= floor(T) + 1`, `floor(s) >= T` is `s >= ceil(T)`, and so on.
pub fn seconds_filter(column: Column, cmp: Cmp, t: OffsetDateTime) -> Filter {
    let floor = t.replace_nanosecond(0).unwrap_or(t);
    let next = floor + time::Duration::SECOND;
    let ceil = if floor == t { t } else { next };
    let range = |from: Option<OffsetDateTime>, to: Option<OffsetDateTime>, negated: bool| Filter::Range {
        column,
        from: from.map(Scalar::Time),
        to: to.map(Scalar::Time),
        negated,
    };
    match cmp {
        Cmp::Gt => range(Some(next), None, false),
        Cmp::Gte => range(Some(ceil), None, false),
        Cmp::Lt => range(None, Some(ceil), false),
        Cmp::Lte => range(None, Some(next), false),
        // A fractional T equals no whole second.
        Cmp::Eq if floor != t => range(Some(next), Some(next), false),
        Cmp::Eq => range(Some(floor), Some(next), false),
        Cmp::Neq if floor != t => range(Some(next), Some(next), true),
        Cmp::Neq => range(Some(floor), Some(next), true),
    }
}

/// Python's `urllib.parse.quote_plus`.
pub fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{negotiate, quote_plus};

    #[test]
    fn quote_plus_like_python() {
        assert_eq!(quote_plus("a b/c~é"), "a+b%2Fc~%C3%A9");
    }

    #[test]
    fn accept_negotiation() {
        let offers = ["text/html", "application/json"];
        assert_eq!(negotiate("application/json", &offers), Some("application/json"));
        assert_eq!(negotiate("*/*", &offers), Some("text/html"));
        assert_eq!(negotiate("text/html;q=0.5, application/json", &offers), Some("application/json"));
        assert_eq!(negotiate("image/png", &offers), None);
        assert_eq!(negotiate("", &offers), None);
    }
}
