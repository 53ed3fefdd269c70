//! HTTP only: routing, faults, microversions, links, pagination. Handlers orchestrate
//! (parse → store → view); the store applies policy and quota.

pub mod access;
pub mod compute;
pub mod fault;
pub mod http;
pub mod image_v2;
pub mod json;
pub mod microversion;
pub mod pyrepr;
pub mod rendered;

#[cfg(test)]
mod properties;

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::auth::Authenticator;
use crate::domain::metadata::MetadataQuota;
use crate::domain::update::ImageQuotas;
use time::OffsetDateTime;

use crate::store::data::DataStore;
use crate::store::{Cmp, Column, DynStore, Filter, Scalar};

/// What every handler can reach: one allocation shared by every request (a request clones one
/// `Arc`, not each part).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: DynStore,
    /// Image data files.
    pub data: Arc<DataStore>,
    /// This node's image cache (`--image-cache-dir`), when it has one.
    pub cache: Option<Arc<crate::cache::ImageCache>>,
    pub auth: Arc<dyn Authenticator>,
    pub settings: Arc<Settings>,
    /// This process, as it holds uploads in the catalogue.
    pub node: Arc<crate::domain::Node>,
    /// Work that outlives its request (an upload's receiving task): the server waits for it
    /// when it stops.
    pub tasks: tokio_util::task::TaskTracker,
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
    /// The most time one request may take, its body included (image data excepted: uploads
    /// and downloads are bounded by their inactivity timeouts instead).
    pub request_timeout: std::time::Duration,
    /// The image import methods on offer and the `web-download` URL filter.
    pub import: crate::domain::import::ImportSettings,
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
            request_timeout: std::time::Duration::from_secs(60),
            import: Default::default(),
        }
    }
}

/// The longest request target (path and query) either API reads: a bound on the work of
/// parsing one request (the query is split, decoded and validated). Web servers in front of
/// Nova and Glance have such a limit too (Apache's 8 KiB request line, uwsgi's 64 KiB buffer);
/// this one is between, so every URL a client builds (an `in:` list of ids included) fits.
pub const MAX_URI_LENGTH: usize = 16 * 1024;

/// Whether the request target is longer than [`MAX_URI_LENGTH`] (answered 414).
pub fn uri_too_long(uri: &axum::http::Uri) -> bool {
    uri.path_and_query().is_some_and(|pq| pq.as_str().len() > MAX_URI_LENGTH)
}

/// Header names this service sends, built at compile time (a `&str` name is parsed on every
/// insert).
pub mod names {
    use axum::http::HeaderName;

    pub const X_COMPUTE_REQUEST_ID: HeaderName = HeaderName::from_static("x-compute-request-id");
    pub const X_OPENSTACK_REQUEST_ID: HeaderName = HeaderName::from_static("x-openstack-request-id");
    pub const OPENSTACK_API_VERSION: HeaderName = HeaderName::from_static("openstack-api-version");
    pub const X_OPENSTACK_NOVA_API_VERSION: HeaderName = HeaderName::from_static("x-openstack-nova-api-version");
    pub const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
    pub const OPENSTACK_IMAGE_IMPORT_METHODS: HeaderName = HeaderName::from_static("openstack-image-import-methods");
    pub const OPENSTACK_IMAGE_STORE_IDS: HeaderName = HeaderName::from_static("openstack-image-store-ids");
}

/// The request outran its deadline ([`within`]).
#[derive(Debug)]
pub struct DeadlinePassed;

/// `work`'s output, unless `limit` passes from `started` (when the request arrived) first.
/// The timer is armed only when `work` first waits: a request answered in its first poll (a
/// cached read) neither reads the clock nor touches the timer wheel, which a
/// `tokio::time::timeout` per request did (a measurable share of a point read).
pub fn within<F: Future>(started: Instant, limit: Duration, work: F) -> Within<F> {
    Within { work, timer: None, deadline: started + limit }
}

pin_project_lite::pin_project! {
    /// The future of [`within`]: a plain future, not an `async fn`, which would keep `work`
    /// twice (its argument and the pinned local it polls), and a request's future is copied
    /// whole several times on its way into the connection.
    pub struct Within<F> {
        #[pin]
        work: F,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        deadline: Instant,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, DeadlinePassed>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.work.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until((*this.deadline).into())));
        }
        match this.timer.as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(DeadlinePassed)),
            _ => Poll::Pending,
        }
    }
}

/// A request id, `req-<uuid4>`, kept inline (no allocation).
#[derive(Clone, Copy)]
pub struct RequestId([u8; 40]);

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl RequestId {
    /// A new one. The random bits come from a per-thread generator seeded once from the
    /// operating system: request ids must be unique, not secret, and a `getrandom` system
    /// call per request was a measurable share of a point read.
    pub fn new() -> RequestId {
        use std::cell::Cell;
        thread_local! {
            static STATE: Cell<u64> = Cell::new({
                let seed = uuid::Uuid::new_v4().as_u64_pair();
                seed.0 ^ seed.1.rotate_left(17)
            });
        }
        // wyrand: a full-period 64-bit generator with well-mixed output.
        fn next(state: &Cell<u64>) -> u64 {
            let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
            state.set(s);
            let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
            ((t >> 64) as u64) ^ (t as u64)
        }
        let (hi, lo) = STATE.with(|s| (next(s), next(s)));
        let bits = (u128::from(hi) << 64) | u128::from(lo);
        let id = uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid();
        let mut buf = [0u8; 40];
        buf[..4].copy_from_slice(b"req-");
        id.hyphenated().encode_lower(&mut buf[4..]);
        RequestId(buf)
    }

    pub fn as_str(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or("req-")
    }

    pub fn header_value(&self) -> axum::http::HeaderValue {
        axum::http::HeaderValue::from_bytes(&self.0).expect("a request id is a valid header value")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The span of one request, carrying its id into every event logged while it runs, when debug
/// logging, JSON logs or the access log are on. Otherwise none: a span per request (created, formatted, entered at every
/// poll, closed) cost a measurable share of a point read, and a failed request's own event
/// names its id (`request failed`).
pub fn request_span(request_id: &str, method: &axum::http::Method, path: &str) -> tracing::Span {
    if !access::request_spans() && !tracing::enabled!(tracing::Level::DEBUG) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("request", request_id = %request_id);
    tracing::debug!(parent: &span, %method, path, "request");
    span
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

/// Percent-decodes a path; `None` when the result is not UTF-8. Borrows when there is
/// nothing to decode (the common case).
pub fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('%') {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    String::from_utf8(unescape(s.as_bytes(), false)).ok().map(std::borrow::Cow::Owned)
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
///
/// At the end of the time range (the last second of 9999) `floor(T) + 1` does not exist: a
/// bound there is "after every stored time", so the comparison keeps all or nothing.
pub fn seconds_filter(column: Column, cmp: Cmp, t: OffsetDateTime) -> Filter {
    let floor = t.replace_nanosecond(0).unwrap_or(t);
    let whole = floor == t;
    // `None`: past the end of the time range.
    let next = floor.checked_add(time::Duration::SECOND);
    let ceil = if whole { Some(t) } else { next };
    let range = |from: Option<OffsetDateTime>, to: Option<OffsetDateTime>, negated: bool| Filter::Range {
        column,
        from: from.map(Scalar::Time),
        to: to.map(Scalar::Time),
        negated,
    };
    // `floor <= s < floor` holds for no `s`.
    let nothing = |negated: bool| range(Some(floor), Some(floor), negated);
    match cmp {
        Cmp::Gt => next.map_or_else(|| nothing(false), |n| range(Some(n), None, false)),
        Cmp::Gte => ceil.map_or_else(|| nothing(false), |c| range(Some(c), None, false)),
        Cmp::Lt => range(None, ceil, false),
        Cmp::Lte => range(None, next, false),
        // A fractional T equals no whole second.
        Cmp::Eq if !whole => nothing(false),
        Cmp::Eq => range(Some(floor), next, false),
        Cmp::Neq if !whole => nothing(true),
        Cmp::Neq => range(Some(floor), next, true),
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
    use std::time::{Duration, Instant};

    use super::{negotiate, quote_plus, within};

    #[tokio::test]
    async fn within_answers_work_done_in_time_and_refuses_work_past_its_deadline() {
        let nap = |ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            7
        };
        let started = Instant::now();
        assert_eq!(within(started, Duration::from_secs(5), async { 7 }).await.ok(), Some(7));
        assert_eq!(within(started, Duration::from_secs(5), nap(10)).await.ok(), Some(7));
        assert!(within(started, Duration::from_millis(50), nap(5_000)).await.is_err());
        // The deadline counts from `started` (the request's arrival), not from the first poll.
        let arrived = Instant::now() - Duration::from_secs(5);
        let waited = Instant::now();
        assert!(within(arrived, Duration::from_millis(5_050), nap(5_000)).await.is_err());
        assert!(waited.elapsed() < Duration::from_secs(4), "{:?}", waited.elapsed());
    }

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
