//! The Compute API (`/v2` legacy compatible, `/v2.1` with microversions).
//!
//! [`handle`] is Nova's paste pipeline and `Resource.__call__` in one function, checking in
//! the order of nova-images §2 (the first failing step answers): body size → token → route →
//! microversion → `Content-Type` → body JSON → URL project id → microversion window → query →
//! the action.

mod image_metadata;
pub(crate) mod images;
mod limits;
pub mod routes;
pub mod schemas;
mod versions;
pub mod views;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::Response;
use serde_json::Value;
use tracing::Instrument;

use self::routes::{Action, NoRoute, Route};
use self::schemas::Strictness;
use self::views::{LinkBase, LinkSource};
use super::fault::Fault;
use super::microversion::{self, Version};
use super::{AppState, names, parse_query, percent_decode};
use crate::domain::Principal;

/// A request that passed the protocol checks, as the actions see it.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub principal: Arc<Principal>,
    /// The negotiated microversion; `None` on `/v2`.
    pub version: Option<Version>,
    pub strictness: Strictness,
    /// `/v2` or `/v2.1`.
    prefix: &'static str,
    parts: &'a Parts,
    /// Decoded query parameters, in request order.
    pub query: Vec<(String, String)>,
    /// The parsed body of a POST or PUT (`None` when empty).
    pub body: Option<Value>,
}

impl Ctx<'_> {
    /// What this request's links are made from.
    pub fn link_source(&self) -> LinkSource<'_> {
        link_source(self.parts, self.prefix, Some(&self.principal))
    }

    /// Where this request's links point (built on demand: most actions have no links).
    pub fn links(&self) -> LinkBase {
        LinkBase::new(self.link_source(), &self.state.settings)
    }

    /// All values of query parameter `name`, in order.
    pub fn query_all(&self, name: &str) -> Vec<&str> {
        self.query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The last value of query parameter `name` (WebOb's `params.get`).
    pub fn query_last(&self, name: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A successful action's answer: a status and a serialized JSON body (none for 204).
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

impl Reply {
    pub fn ok(body: impl serde::Serialize) -> Reply {
        Reply::with_body(super::json::to_vec(&body).into())
    }

    /// A 200 with a body serialized already.
    pub fn with_body(body: Bytes) -> Reply {
        Reply { status: StatusCode::OK, body: Some(body) }
    }

    pub fn no_content() -> Reply {
        Reply { status: StatusCode::NO_CONTENT, body: None }
    }
}

/// The entry point for every request of the compute listener.
pub async fn handle(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let (prefix, rest_at) = if let Some(rest) = strip_segment_prefix(path, "/v2.1") {
        ("/v2.1", path.len() - rest.len())
    } else if let Some(rest) = strip_segment_prefix(path, "/v2") {
        ("/v2", path.len() - rest.len())
    } else if let Some(prefix) = versions::from_media_type(&parts.headers).filter(|_| path != "/") {
        // Nova's urlmap: a `;version=` media-type parameter picks the API when the path has
        // no version prefix.
        (prefix, 0)
    } else {
        // The root application: version list or multiple choices, no auth, no request id.
        return versions::root(&parts);
    };
    let request_id = super::RequestId::new();
    let span = super::request_span(request_id.as_str(), &parts.method, path);
    let mut exchange = super::access::Exchange::begin("compute", &parts);
    // One expression: a future first bound to a name is kept twice in this one's.
    let mut response =
        api_request(state, parts, body, prefix, rest_at, &request_id, &mut exchange).instrument(span).await;
    let id = request_id.header_value();
    response.headers_mut().insert(names::X_COMPUTE_REQUEST_ID, id.clone());
    response.headers_mut().insert(names::X_OPENSTACK_REQUEST_ID, id);
    exchange.finish(request_id.as_str(), response)
}

/// `path` without `prefix`, if `prefix` is a whole leading segment.
fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// What the pipeline learns on the way that the response needs even when it fails: the
/// microversion to echo, and the route and the user (for the metrics and the access log).
struct Seen<'a> {
    version: Option<Cow<'static, str>>,
    exchange: &'a mut super::access::Exchange,
}

async fn api_request(
    state: AppState,
    parts: Parts,
    body: Body,
    prefix: &'static str,
    rest_at: usize,
    request_id: &super::RequestId,
    exchange: &mut super::access::Exchange,
) -> Response {
    let accept = parts.headers.get(header::ACCEPT).cloned();
    let legacy = prefix == "/v2";
    let (started, limit) = (exchange.started(), state.settings.request_timeout);
    let mut seen = Seen { version: None, exchange };
    let rest = &parts.uri.path()[rest_at..];
    let result = super::within(started, limit, pipeline(&state, &parts, body, prefix, legacy, rest, &mut seen))
        .await
        .unwrap_or_else(|_| Err(Fault::timed_out(true)));
    match result {
        Ok(reply) => render(reply, &parts.headers, seen.version.as_deref()),
        Err(fault) => {
            fault.log(request_id.as_str());
            let mut response = fault.render(accept.as_ref());
            if let Some(v) = seen.version {
                microversion::add_response_headers(response.headers_mut(), &v);
            }
            response
        }
    }
}

async fn pipeline(
    state: &AppState,
    parts: &Parts,
    body: Body,
    prefix: &'static str,
    legacy: bool,
    rest: &str,
    seen: &mut Seen<'_>,
) -> Result<Reply, Fault> {
    let settings = &state.settings;
    // 0. The web server's bound on the request line.
    if super::uri_too_long(&parts.uri) {
        return Err(Fault::new(StatusCode::URI_TOO_LONG, "The request URI was too long for this server."));
    }
    // 1. oslo.middleware sizelimit, on the declared length.
    if super::http::declared_length(&parts.headers).is_some_and(|n| n > settings.max_request_body_size as u64) {
        return Err(too_large());
    }

    // 2-3. The token (except for the version document), then the route.
    let route = percent_decode(rest).ok_or(NoRoute::NotFound).and_then(|p| routes::resolve(&parts.method, &p));
    if let Ok(r) = &route {
        seen.exchange.route = r.action.template();
    }
    let principal = match &route {
        Ok(Route { action, .. }) if !action.needs_token() => None,
        _ => {
            let principal = super::http::authenticate(state, &parts.headers, true).await?;
            seen.exchange.authenticated(&principal);
            Some(principal)
        }
    };
    let route = route.map_err(|e| match e {
        NoRoute::NotFound => Fault::bare(StatusCode::NOT_FOUND),
        NoRoute::MethodNotAllowed(allow) => Fault::BadMethod { allow },
    })?;

    // 4. Microversion: negotiated on /v2.1 only; /v2 ignores the headers.
    let version = if legacy {
        None
    } else {
        match microversion::negotiate(&parts.headers) {
            Ok(v) => {
                seen.version = Some(if v == microversion::MIN { Cow::Borrowed("2.1") } else { v.to_string().into() });
                Some(v)
            }
            Err((fault, echoed)) => {
                seen.version = echoed.map(Cow::Owned);
                return Err(fault);
            }
        }
    };

    let Some(principal) = principal else {
        return Ok(versions::document(prefix, &LinkBase::new(link_source(parts, prefix, None), settings)));
    };

    // 5. Content-Type, on every method.
    check_content_type(&parts.headers)?;

    // 6. The body of a POST or PUT; other methods' bodies are never read.
    let body = if parts.method == Method::POST || parts.method == Method::PUT {
        read_json(body, settings.max_request_body_size).await?
    } else {
        None
    };

    // 7. The URL's project id must be the token's.
    if let Some(url_project) = &route.project_id
        && *url_project != principal.project_id
    {
        return Err(Fault::bad_request(format!(
            "Malformed request URL: URL's project_id '{url_project}' doesn't match Context's project_id '{}'",
            principal.project_id
        )));
    }

    // 8. The action's microversion window.
    if let Some(v) = version {
        let max = match route.action {
            Action::ImageIndex | Action::ImageDetail | Action::ImageShow(_) | Action::ImageDelete(_) => {
                Some(microversion::MAX_IMAGE_PROXY)
            }
            Action::Limits | Action::VersionDocument | Action::VersionShow(_) => None,
            _ => Some(microversion::MAX_IMAGE_META_PROXY),
        };
        if max.is_some_and(|max| v > max) {
            return Err(Fault::resource_not_found());
        }
    }

    // 9. The query string must decode to UTF-8.
    let query = parse_query(parts.uri.query().unwrap_or(""))
        .ok_or_else(|| Fault::bad_request("Query string is not UTF-8 encoded"))?;

    let ctx = Ctx {
        state,
        principal,
        version,
        strictness: if legacy { Strictness::Legacy } else { Strictness::Strict },
        prefix,
        parts,
        query,
        body,
    };
    dispatch(&ctx, route.action).await
}

/// Runs the action. The point reads run inline; every other action's future is boxed, so
/// that the request's future (moved several times on its way into the connection, once per
/// request) is as small as a point read needs, not as large as the largest action's.
async fn dispatch(ctx: &Ctx<'_>, action: Action) -> Result<Reply, Fault> {
    use Action::*;
    match action {
        VersionDocument => unreachable!("answered before authentication"),
        ImageShow(id) => images::show(ctx, &id).await,
        MetadataIndex(id) => image_metadata::index(ctx, &id).await,
        MetadataShow(id, key) => image_metadata::show(ctx, &id, &key).await,
        ImageIndex => Box::pin(images::index(ctx)).await,
        ImageDetail => Box::pin(images::detail(ctx)).await,
        ImageDelete(id) => Box::pin(images::delete(ctx, &id)).await,
        MetadataCreate(id) => Box::pin(image_metadata::create(ctx, &id)).await,
        MetadataUpdateAll(id) => Box::pin(image_metadata::update_all(ctx, &id)).await,
        MetadataUpdate(id, key) => Box::pin(image_metadata::update(ctx, &id, &key)).await,
        MetadataDelete(id, key) => Box::pin(image_metadata::delete(ctx, &id, &key)).await,
        Limits => limits::index(ctx),
        VersionShow(id) => versions::show(ctx, &id),
    }
}

fn too_large() -> Fault {
    Fault::detailed(
        StatusCode::PAYLOAD_TOO_LARGE,
        "The body of your request was too large for this server.",
        "Request is too large. Larger than max_request_body_size (%s).",
    )
    // The body is left unread: the connection cannot be reused.
    .with_header(header::CONNECTION, HeaderValue::from_static("close"))
}

/// Nova's `Content-Type` rule (§2 step 5): absent, empty or `text/plain` pass; otherwise it
/// must be JSON.
fn check_content_type(headers: &HeaderMap) -> Result<(), Fault> {
    match super::http::media_type(headers).as_deref() {
        Some("" | "text/plain" | "application/json" | "application/vnd.openstack.compute+json") => Ok(()),
        _ => Err(Fault::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Content-Type")),
    }
}

async fn read_json(body: Body, limit: usize) -> Result<Option<Value>, Fault> {
    let bytes = super::http::read_body(body, limit).await.map_err(|e| match e {
        super::http::BodyError::TooLarge => too_large(),
        super::http::BodyError::Broken => Fault::bad_request("Malformed request body"),
    })?;
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|_| Fault::bad_request("Malformed request body"))
}

/// What `parts`' links are made from (§4.1), for `prefix` and (when the request has a token)
/// `who`: the `Host` header names the root, and the project appears when the token's project
/// id occurs anywhere in the request URL.
fn link_source<'a>(parts: &'a Parts, prefix: &'static str, who: Option<&'a Principal>) -> LinkSource<'a> {
    let host = super::http::host(parts);
    let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    // Nova's `project_id in request.url`: the URL as WebOb rebuilds it from the host.
    let project =
        who.map(|p| p.project_id.as_str()).filter(|p| !p.is_empty() && occurs_in(&["http://", host, path], p));
    LinkSource { host, prefix, project }
}

/// Whether `needle` occurs in the concatenation of `pieces`, without making it.
fn occurs_in(pieces: &[&str], needle: &str) -> bool {
    if pieces.iter().any(|p| p.contains(needle)) {
        return true;
    }
    // Otherwise only a match that starts in a piece and ends in a later one: it starts
    // within the last `needle.len() - 1` bytes of its piece.
    let needle = needle.as_bytes();
    pieces.iter().enumerate().any(|(i, piece)| {
        let piece = piece.as_bytes();
        (piece.len().saturating_sub(needle.len().saturating_sub(1))..piece.len()).any(|start| {
            let mut rest = needle;
            let mut following = pieces[i + 1..].iter().map(|p| p.as_bytes());
            let mut at = &piece[start..];
            loop {
                let n = rest.len().min(at.len());
                if at[..n] != rest[..n] {
                    return false;
                }
                rest = &rest[n..];
                if rest.is_empty() {
                    return true;
                }
                match following.next() {
                    Some(next) => at = next,
                    None => return false,
                }
            }
        })
    })
}

/// Success responses: `application/json` (or the compute vendor type when `Accept` prefers
/// it); a 204 keeps the content type and has an empty body. On `/v2.1` (`version`), with the
/// microversion's headers.
fn render(reply: Reply, request_headers: &HeaderMap, version: Option<&str>) -> Response {
    let accept = request_headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    let content_type = super::negotiate(accept, &["application/json", "application/vnd.openstack.compute+json"])
        .unwrap_or("application/json");
    let body = reply.body.unwrap_or_default();
    match version {
        Some(v) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = reply.status;
            *response.headers_mut() = microversion::response_headers(content_type, v);
            response
        }
        None => super::http::body_response(reply.status, content_type, body),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::occurs_in;

    #[test]
    fn a_project_id_is_found_across_the_pieces_of_a_url() {
        let project = "0123456789abcdef0123456789abcdef";
        assert!(occurs_in(&["http://", "h:8774", "/v2.1/0123456789abcdef0123456789abcdef/images"], project));
        // Split between the host and the path, and spanning a whole short piece.
        assert!(occurs_in(&["http://", "0123456789abcdef", "0123456789abcdef/images"], project));
        assert!(occurs_in(&["http://0123", "4567", "89abcdef0123456789abcdef"], project));
        assert!(!occurs_in(&["http://", "h:8774", "/v2.1/images/0123456789abcdef0123456789abcde"], project));
        assert!(!occurs_in(&["http://", "0123456789abcdef", "123456789abcdef"], project));
    }

    proptest! {
        /// The same answer as searching the concatenation (small alphabet: many near-misses).
        #[test]
        fn occurs_in_is_contains_of_the_concatenation(
            pieces in prop::collection::vec("[ab]{0,6}", 0..5),
            needle in "[ab]{1,5}",
        ) {
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            prop_assert_eq!(occurs_in(&pieces, &needle), pieces.concat().contains(needle.as_str()));
        }
    }
}
