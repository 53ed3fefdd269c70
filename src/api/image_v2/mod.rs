//! The Glance Image API v2 subset (glance-v2 spec), on its own listener over the same store.
//!
//! [`handle`] checks in Glance's order: version negotiation (answered before auth) → token →
//! route (404, 405 with `Allow`, 501) → no body where none is expected → the action. Every
//! error is a WebOb page whose format follows `Accept` (§12).

mod cache;
mod image_data;
pub(crate) mod images;
mod import;
mod members;
pub mod metadefs;
mod routes;
pub mod schemas;
mod stores;
mod tasks;
pub mod views;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::Instrument;

use super::fault::{Fault, Page};
use super::{AppState, http, names, parse_query, percent_decode};
use crate::domain::policy::{self, Rule};
use crate::domain::{Image, Principal, Rejection, RejectionKind};
use crate::store::StoreError;
use routes::{Action, resolve};

/// Version prefixes rewritten to `/v2` (no image cache, no multi-store).
const VERSION_PREFIXES: &[&str] =
    &["v2", "v2.0", "v2.1", "v2.2", "v2.3", "v2.4", "v2.5", "v2.6", "v2.7", "v2.9", "v2.15", "v2.17"];

/// An authenticated request, as the actions see it.
pub struct Ctx {
    pub state: AppState,
    pub principal: Arc<Principal>,
    pub parts: Parts,
    pub query: Vec<(String, String)>,
    /// The request's id, as the client sees it in `X-Openstack-Request-Id`.
    pub request_id: String,
}

impl Ctx {
    /// Whether the caller may do `rule` (on `image`, when it is about one); 403 `denied`
    /// otherwise.
    fn authorize(&self, rule: &Rule, image: Option<&Image>, denied: impl FnOnce() -> Fault) -> Result<(), Fault> {
        if policy::authorize(&self.principal, rule, image) { Ok(()) } else { Err(denied()) }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `http://host[:port]`, for absolute `Location` headers.
    fn root_url(&self) -> String {
        format!("http://{}", http::host(&self.parts))
    }

    /// The request's media type (see [`http::media_type`]).
    fn media_type(&self) -> String {
        http::media_type(&self.parts.headers).unwrap_or_default()
    }
}

/// The entry point for every request of the image listener.
pub async fn handle(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path == "/versions" || path == "/versions/" {
        return versions(&parts, StatusCode::OK);
    }
    let (first, rest) = match path.strip_prefix('/').unwrap_or("").split_once('/') {
        Some((first, rest)) => (first.to_owned(), format!("/{rest}")),
        None => (path.trim_start_matches('/').to_owned(), String::new()),
    };
    if !VERSION_PREFIXES.contains(&first.as_str()) {
        return versions(&parts, StatusCode::MULTIPLE_CHOICES);
    }
    let request_id = request_id(&parts.headers);
    let span = super::request_span(&request_id, &parts.method, &path);
    let accept = parts.headers.get(header::ACCEPT).cloned();
    let mut exchange = super::access::Exchange::begin("image", &parts);
    exchange.route =
        percent_decode(&rest).and_then(|p| resolve(&parts.method, &p).ok()).map_or("unrouted", |a| a.template());
    let mut response = match api_request(state, parts, body, &rest, &request_id, &mut exchange).instrument(span).await {
        Ok(reply) => reply.into_response(),
        Err(fault) => {
            fault.log(&request_id);
            fault.render(accept.as_ref())
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(names::X_OPENSTACK_REQUEST_ID, v);
    }
    exchange.finish(&request_id, response)
}

/// A client's own request id is echoed (with `req-` added); otherwise a new one.
fn request_id(headers: &HeaderMap) -> String {
    let inbound = headers.get(names::X_OPENSTACK_REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::trim);
    match inbound {
        Some(id) if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            if id.starts_with("req-") {
                id.to_owned()
            } else {
                format!("req-{id}")
            }
        }
        _ => super::RequestId::new().as_str().to_owned(),
    }
}

async fn api_request(
    state: AppState,
    parts: Parts,
    body: Body,
    rest: &str,
    request_id: &str,
    exchange: &mut super::access::Exchange,
) -> Result<Reply, Fault> {
    // The web server's bound on the request line, before anything else.
    if super::uri_too_long(&parts.uri) {
        return Err(Fault::bare(StatusCode::URI_TOO_LONG));
    }
    let principal = http::authenticate(&state, &parts.headers, false).await?;
    exchange.authenticated(&principal);
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE | Method::PATCH)
    {
        // WebOb's HTTPNotImplemented template.
        return Err(Fault::webob(
            StatusCode::NOT_IMPLEMENTED,
            Page::new()
                .markup("\nThe request method ")
                .text(parts.method.as_str())
                .markup(" is not implemented for this server. <br /><br />\n"),
        ));
    }
    let path = percent_decode(rest).ok_or_else(|| Fault::bare(StatusCode::NOT_FOUND))?;
    let action = resolve(&parts.method, &path).map_err(|allow| match allow {
        None => Fault::bare(StatusCode::NOT_FOUND),
        // WebOb's HTTPMethodNotAllowed template.
        Some(allow) => Fault::webob(
            StatusCode::METHOD_NOT_ALLOWED,
            Page::new()
                .markup("The method ")
                .text(parts.method.as_str())
                .markup(" is not allowed for this resource. <br /><br />\n"),
        )
        .with_header(header::ALLOW, HeaderValue::from_static(allow)),
    })?;
    if action.rejects_body() && http::has_body(&parts.headers) {
        return Err(Fault::explained(StatusCode::BAD_REQUEST, "A body is not expected with this request."));
    }
    let query = parse_query(parts.uri.query().unwrap_or(""))
        .ok_or_else(|| Fault::explained(StatusCode::BAD_REQUEST, "Query string is not UTF-8 encoded"))?;
    let limit = state.settings.request_timeout;
    let ctx = Ctx { state, principal, parts, query, request_id: request_id.to_owned() };
    // Image data is bounded by its inactivity timeouts; everything else by the deadline.
    if action.streams() {
        return dispatch(&ctx, action, body).await;
    }
    match super::within(exchange.started(), limit, dispatch(&ctx, action, body)).await {
        Ok(result) => result,
        Err(_) => Err(Fault::timed_out(false)),
    }
}

/// Runs the action. The point read runs inline; every other action's future is boxed, so that
/// the request's future (copied whole on its way into the connection, once per request) is as
/// small as a point read needs, not as large as the largest action's.
async fn dispatch(ctx: &Ctx, action: Action, body: Body) -> Result<Reply, Fault> {
    use Action::*;
    match action {
        List => Box::pin(images::list(ctx)).await,
        Create => Box::pin(images::create(ctx, body)).await,
        Show(id) => images::show(ctx, &id).await,
        Update(id) => Box::pin(images::update(ctx, &id, body)).await,
        Delete(id) => Box::pin(images::delete(ctx, &id)).await,
        Upload(id) => Box::pin(image_data::upload(ctx, &id, body)).await,
        Download(id) => Box::pin(image_data::download(ctx, &id)).await,
        AddTag(id, tag) => Box::pin(images::add_tag(ctx, &id, &tag)).await,
        DeleteTag(id, tag) => Box::pin(images::delete_tag(ctx, &id, &tag)).await,
        Deactivate(id) => Box::pin(images::deactivate(ctx, &id, true)).await,
        Reactivate(id) => Box::pin(images::deactivate(ctx, &id, false)).await,
        ImageSchema => Ok(Reply::ok(schemas::image_schema())),
        ImagesSchema => Ok(Reply::ok(&schemas::images_schema())),
        ListMembers(id) => Box::pin(members::list(ctx, &id)).await,
        AddMember(id) => Box::pin(members::create(ctx, &id, body)).await,
        ShowMember(id, m) => Box::pin(members::show(ctx, &id, &m)).await,
        UpdateMember(id, m) => Box::pin(members::update(ctx, &id, &m, body)).await,
        DeleteMember(id, m) => Box::pin(members::delete(ctx, &id, &m)).await,
        MemberSchema => Ok(Reply::ok(&members::member_schema())),
        MembersSchema => Ok(Reply::ok(&members::members_schema())),
        InfoStores => stores::list(ctx, false),
        InfoStoresDetail => stores::list(ctx, true),
        DeleteFromStore(store, id) => Box::pin(stores::delete_from(ctx, &store, &id)).await,
        InfoImport => Ok(import::info(ctx)),
        Stage(id) => Box::pin(import::stage(ctx, &id, body)).await,
        Import(id) => Box::pin(import::import(ctx, &id, body)).await,
        ImageTasks(id) => Box::pin(tasks::of_image(ctx, &id)).await,
        ListTasks => Box::pin(tasks::list(ctx)).await,
        CreateTask => tasks::create(ctx),
        ShowTask(id) => Box::pin(tasks::show(ctx, &id)).await,
        DeleteTask(_) => tasks::delete(ctx),
        TaskSchema => Ok(Reply::ok(&tasks::task_schema())),
        TasksSchema => Ok(Reply::ok(&tasks::tasks_schema())),
        CacheState => cache::state(ctx),
        ClearCache => cache::clear(ctx),
        QueueCache(id) => Box::pin(cache::queue(ctx, &id)).await,
        DeleteCache(id) => Box::pin(cache::delete(ctx, &id)).await,
        Metadef(md) => Box::pin(metadefs::dispatch(ctx, md, body)).await,
    }
}

/// The versions document: 200 at `/versions`, 300 everywhere else outside `/v2`.
fn versions(parts: &Parts, status: StatusCode) -> Response {
    let href = format!("http://{}/v2/", http::host(parts));
    let mut list = Vec::new();
    let mut entry = |id: &str, status: &str| {
        list.push(json!({"id": id, "status": status, "links": [{"rel": "self", "href": href}]}));
    };
    entry("v2.15", "SUPPORTED");
    entry("v2.9", "SUPPORTED");
    entry("v2.17", "CURRENT");
    for minor in (0..=7).rev() {
        entry(&format!("v2.{minor}"), "SUPPORTED");
    }
    Reply::json(status, &json!({ "versions": list })).into_response()
}

/// What an action answers: the handlers decide it, [`Reply::into_response`] writes it.
pub enum Reply {
    /// A JSON document (`None`: no body), with its own headers (`Location`, …).
    Json { status: StatusCode, body: Option<Bytes>, headers: HeaderMap },
    /// Image data, streamed with its headers.
    Data { status: StatusCode, body: Body, headers: HeaderMap },
}

impl Reply {
    pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
        Reply::Json { status, body: Some(super::json::to_vec(body).into()), headers: HeaderMap::new() }
    }

    pub fn ok(body: &impl serde::Serialize) -> Reply {
        Reply::json(StatusCode::OK, body)
    }

    /// A 200 with a document serialized already.
    pub fn rendered(body: Bytes) -> Reply {
        Reply::Json { status: StatusCode::OK, body: Some(body), headers: HeaderMap::new() }
    }

    /// A 201 for the resource at `location` (absolute).
    pub fn created(body: &impl serde::Serialize, location: &str) -> Reply {
        Reply::json(StatusCode::CREATED, body).with_header(header::LOCATION, location)
    }

    /// No body: `status` alone (a 204, a 202).
    pub fn empty(status: StatusCode) -> Reply {
        Reply::Json { status, body: None, headers: HeaderMap::new() }
    }

    pub fn no_content() -> Reply {
        Reply::empty(StatusCode::NO_CONTENT)
    }

    /// With header `name` (skipped if `value` cannot be a header value).
    pub fn with_header(mut self, name: impl axum::http::header::IntoHeaderName, value: &str) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value) {
            match &mut self {
                Reply::Json { headers, .. } | Reply::Data { headers, .. } => {
                    headers.insert(name, v);
                }
            }
        }
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let (mut response, headers) = match self {
            Reply::Json { status, body: None, headers } => (status.into_response(), headers),
            Reply::Json { status, body: Some(body), headers } => {
                (super::http::body_response(status, "application/json", body), headers)
            }
            Reply::Data { status, body, headers } => ((status, body).into_response(), headers),
        };
        response.headers_mut().extend(headers);
        response
    }
}

/// Changes image `id` in one transaction, if the caller may do `rule` to it: anyone else who
/// can see it gets 403 `denied` (and anyone who cannot, 404).
pub async fn modify(
    ctx: &Ctx,
    id: &str,
    rule: Rule,
    denied: String,
    change: impl FnOnce(&mut Image) -> Result<(), Rejection> + Send + 'static,
) -> Result<Image, Fault> {
    ctx.state.store.modify_image(&ctx.principal, id, rule, Box::new(change)).await.map_err(|e| match e {
        StoreError::Forbidden => Fault::explained(StatusCode::FORBIDDEN, denied),
        other => store_fault(other, id),
    })
}

/// Glance's refusal of a policy rule, in its words.
pub fn not_authorized(rule: &Rule) -> Fault {
    Fault::explained(StatusCode::FORBIDDEN, format!("You are not authorized to complete {} action.", rule.name()))
}

/// A domain refusal as Glance answers it.
pub fn rejection(r: Rejection) -> Fault {
    let status = match r.kind {
        RejectionKind::Invalid => StatusCode::BAD_REQUEST,
        RejectionKind::Forbidden => StatusCode::FORBIDDEN,
        RejectionKind::Conflict => StatusCode::CONFLICT,
        RejectionKind::OverLimit => StatusCode::PAYLOAD_TOO_LARGE,
        RejectionKind::BadData => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        RejectionKind::Gone => StatusCode::GONE,
        RejectionKind::NotFound => StatusCode::NOT_FOUND,
    };
    Fault::explained(status, r.message)
}

/// A store failure on image `id`.
pub fn store_fault(e: StoreError, id: &str) -> Fault {
    match e {
        StoreError::NotFound => Fault::explained(StatusCode::NOT_FOUND, format!("No image found with ID {id}")),
        StoreError::Rejected(r) => rejection(r),
        StoreError::Conflict(id) => Fault::explained(StatusCode::CONFLICT, format!("Image ID {id} already exists!")),
        StoreError::Forbidden => {
            Fault::explained(StatusCode::FORBIDDEN, "You are not authorized to complete this action.")
        }
        StoreError::Protected => {
            Fault::explained(StatusCode::FORBIDDEN, format!("Image {id} is protected and cannot be deleted."))
        }
        StoreError::MarkerForbidden(m) => {
            Fault::explained(StatusCode::FORBIDDEN, format!("Forbidden to see the marker image {m}."))
        }
        StoreError::MarkerNotFound(m) => {
            Fault::explained(StatusCode::BAD_REQUEST, format!("Marker {m} could not be found."))
        }
        other => Fault::store(&other, false),
    }
}

/// Reads a JSON request body (create, patch) within the size limit.
async fn read_json(body: Body, limit: usize) -> Result<Value, Fault> {
    let bytes = http::read_body(body, limit).await.map_err(|e| match e {
        // The rest of the body is left unread: the connection cannot be reused.
        http::BodyError::TooLarge => Fault::bare(StatusCode::PAYLOAD_TOO_LARGE)
            .with_header(header::CONNECTION, HeaderValue::from_static("close")),
        http::BodyError::Broken => Fault::explained(StatusCode::BAD_REQUEST, "Malformed JSON in request body."),
    })?;
    if bytes.is_empty() {
        return Err(Fault::explained(StatusCode::BAD_REQUEST, "Body expected in request."));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| Fault::explained(StatusCode::BAD_REQUEST, "Malformed JSON in request body."))?;
    if !(v.is_object() || v.is_array()) {
        return Err(Fault::explained(StatusCode::BAD_REQUEST, "Unexpected body type. Expected list/dict."));
    }
    Ok(v)
}
