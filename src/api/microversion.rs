//! Compute API microversions (nova-images §6): request header parsing, the supported range,
//! and the response headers.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::names;

use super::fault::Fault;

/// A `major.minor` API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
}

impl Version {
    pub const fn new(major: u64, minor: u64) -> Version {
        Version { major, minor }
    }

    /// Nova's `^([1-9]\d*)\.([1-9]\d*|0)$`. Python's integers are unbounded; numbers past
    /// `u64` saturate, which keeps them out of range rather than malformed.
    pub fn parse(s: &str) -> Option<Version> {
        let (major, minor) = s.split_once('.')?;
        let number = |p: &str, zero_ok: bool| -> Option<u64> {
            let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            let canonical = !p.starts_with('0') || (zero_ok && p == "0");
            (digits && canonical).then(|| p.parse().unwrap_or(u64::MAX))
        };
        Some(Version::new(number(major, false)?, number(minor, true)?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

pub const MIN: Version = Version::new(2, 1);
/// Current Nova's maximum (nova 33.0.0-373, `_MAX_API_VERSION`).
pub const MAX: Version = Version::new(2, 104);
/// The last version serving `/images`, `/images/detail` and `/images/{id}`.
pub const MAX_IMAGE_PROXY: Version = Version::new(2, 35);
/// The last version serving `/images/{id}/metadata*`.
pub const MAX_IMAGE_META_PROXY: Version = Version::new(2, 38);

/// The version a request asks for, as the microversion-parse library reads it: the last
/// `compute` entry of `OpenStack-API-Version`, else the last value of
/// `X-OpenStack-Nova-API-Version`, else the minimum.
///
/// Errors: a malformed string is 400; a version outside [MIN, MAX] is 406, and carries the
/// requested version string so the response can echo it.
pub fn negotiate(headers: &HeaderMap) -> Result<Version, (Fault, Option<String>)> {
    let Some(requested) = requested(headers) else {
        return Ok(MIN);
    };
    if requested == "latest" {
        return Ok(MAX);
    }
    let Some(v) = Version::parse(&requested) else {
        return Err((
            Fault::bad_request(format!(
                "API Version String {requested} is of invalid format. Must be of format MajorNum.MinorNum."
            )),
            None,
        ));
    };
    if v < MIN || v > MAX {
        return Err((
            Fault::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("Version {requested} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."),
            ),
            Some(requested),
        ));
    }
    Ok(v)
}

/// The comma-separated items of every `name` header, in order. A scan, not a lookup: a
/// request has a handful of headers (a hundred at most), and comparing their names costs
/// less than hashing these long custom ones on every request.
fn header_values<'a>(headers: &'a HeaderMap, name: &'a HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| *n == name)
        .filter_map(|(_, v)| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn requested(headers: &HeaderMap) -> Option<String> {
    let compute = header_values(headers, &names::OPENSTACK_API_VERSION)
        .filter_map(|item| {
            let mut parts = item.split_whitespace();
            let service = parts.next()?;
            let version = parts.collect::<Vec<_>>().join(" ");
            service.eq_ignore_ascii_case("compute").then_some(version)
        })
        .last();
    if compute.is_some() {
        return compute;
    }
    header_values(headers, &names::X_OPENSTACK_NOVA_API_VERSION).last().map(str::to_owned)
}

/// Adds the four response headers of a `/v2.1` resource response, for version `v` as the
/// client wrote it (or as negotiated).
pub fn add_response_headers(headers: &mut HeaderMap, v: &str) {
    let values = match v {
        // The default: no formatting on the common path.
        "2.1" => Ok((HeaderValue::from_static("compute 2.1"), HeaderValue::from_static("2.1"))),
        _ => HeaderValue::from_str(&format!("compute {v}")).and_then(|f| Ok((f, HeaderValue::from_str(v)?))),
    };
    if let Ok((full, bare)) = values {
        headers.insert(names::OPENSTACK_API_VERSION, full);
        headers.insert(names::X_OPENSTACK_NOVA_API_VERSION, bare);
    }
    headers.append(header::VARY, HeaderValue::from_static("OpenStack-API-Version"));
    headers.append(header::VARY, HeaderValue::from_static("X-OpenStack-Nova-API-Version"));
}

/// The headers of a `/v2.1` response with a body of `content_type`, for version `v`: the
/// content type, then those of [`add_response_headers`]. The common case (JSON at 2.1) is a
/// copy of a map made once: hashing and inserting these long names anew costs more than
/// copying them.
pub fn response_headers(content_type: &'static str, v: &str) -> HeaderMap {
    fn make(content_type: &'static str, v: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        add_response_headers(&mut headers, v);
        headers
    }
    static JSON_AT_MIN: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| make("application/json", "2.1"));
    if content_type == "application/json" && v == "2.1" { JSON_AT_MIN.clone() } else { make(content_type, v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_headers_are_the_content_type_then_the_version_headers_in_order() {
        let pairs = |m: &HeaderMap| -> Vec<(String, String)> {
            m.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect()
        };
        for (content_type, v) in [
            ("application/json", "2.1"),
            ("application/json", "2.38"),
            ("application/vnd.openstack.compute+json", "2.1"),
        ] {
            let expected = [
                ("content-type", content_type.to_owned()),
                ("openstack-api-version", format!("compute {v}")),
                ("x-openstack-nova-api-version", v.to_owned()),
                ("vary", "OpenStack-API-Version".to_owned()),
                ("vary", "X-OpenStack-Nova-API-Version".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v));
            // Twice: the made-once copy must not change between responses.
            for _ in 0..2 {
                assert_eq!(pairs(&response_headers(content_type, v)), expected, "{content_type} {v}");
            }
        }
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn parses_nova_version_grammar() {
        assert_eq!(Version::parse("2.38"), Some(Version::new(2, 38)));
        assert_eq!(Version::parse("3.0"), Some(Version::new(3, 0)));
        for bad in ["2.01", "abc", "02.1", "2.", ".1", "2.1.1", "", "2.-1"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn new_header_wins_and_last_compute_entry_counts() {
        let v = negotiate(&h(&[
            ("openstack-api-version", "compute 2.30, image 2.5"),
            ("openstack-api-version", "COMPUTE 2.38"),
            ("x-openstack-nova-api-version", "2.10"),
        ]));
        assert_eq!(v, Ok(Version::new(2, 38)));
        assert_eq!(negotiate(&h(&[("x-openstack-nova-api-version", "2.3, 2.37")])), Ok(Version::new(2, 37)));
        assert_eq!(negotiate(&h(&[])), Ok(MIN));
        assert_eq!(negotiate(&h(&[("openstack-api-version", "compute latest")])), Ok(MAX));
    }

    #[test]
    fn out_of_range_is_406_and_bad_format_400() {
        let (f, echoed) = negotiate(&h(&[("openstack-api-version", "compute 3.0")])).unwrap_err();
        assert_eq!((f.status(), echoed), (StatusCode::NOT_ACCEPTABLE, Some("3.0".to_string())));
        let (f, _) = negotiate(&h(&[("openstack-api-version", "compute 99999999999999999999.1")])).unwrap_err();
        assert_eq!(f.status(), StatusCode::NOT_ACCEPTABLE);
        let (f, echoed) = negotiate(&h(&[("openstack-api-version", "compute 2.01")])).unwrap_err();
        assert_eq!((f.status(), echoed), (StatusCode::BAD_REQUEST, None));
    }
}
