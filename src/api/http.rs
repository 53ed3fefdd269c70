//! What both APIs read from a request the same way: the token and who it names, the media
//! type, the host the client addressed, the declared length, and a body within its limit;
//! and how both start a response with a body. Each API words its own faults.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::fault::Fault;
use super::{AppState, names};
use crate::auth::AuthError;
use crate::domain::Principal;

/// The `X-Auth-Token`, trimmed; `None` when absent or blank.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    headers.get(names::X_AUTH_TOKEN).and_then(|t| t.to_str().ok()).map(str::trim).filter(|t| !t.is_empty())
}

/// Who the request's token names: 401 without a valid token (with the `WWW-Authenticate` of
/// the settings), 503 when the identity service cannot say (in the Compute API's format when
/// `nova`).
pub async fn authenticate(state: &AppState, headers: &HeaderMap, nova: bool) -> Result<Arc<Principal>, Fault> {
    let unauthorized = || Fault::Unauthorized { www_authenticate_uri: state.settings.www_authenticate_uri.clone() };
    let token = token(headers).ok_or_else(unauthorized)?;
    let known = match state.auth.at_once(token) {
        Some(known) => known,
        None => state.auth.authenticate(token).await,
    };
    known.map_err(|e| match e {
        AuthError::Invalid => unauthorized(),
        AuthError::Unavailable(why) => {
            tracing::error!(error = %why, "identity service unavailable");
            Fault::identity_unavailable(nova)
        }
    })
}

/// The `Content-Type`'s media type, lowercase, without parameters (`""` when absent);
/// `None` when the header is not text.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    match headers.get(header::CONTENT_TYPE) {
        None => Some(String::new()),
        Some(v) => v.to_str().ok().map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase()),
    }
}

/// The host the client addressed (`Host`, else the request target's authority), as links
/// and `Location` headers name it.
pub fn host(parts: &Parts) -> &str {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost")
}

/// The `Content-Length` the client declared, when it is a number.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Whether the request has a body: a positive length, or a chunked one.
pub fn has_body(headers: &HeaderMap) -> bool {
    declared_length(headers).unwrap_or(0) > 0 || headers.contains_key(header::TRANSFER_ENCODING)
}

/// Why a body could not be read.
pub enum BodyError {
    /// Longer than the limit: the rest is left unread, so the connection cannot be reused.
    TooLarge,
    /// The client sent less than it declared, or the connection failed.
    Broken,
}

/// The whole body, up to `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            BodyError::TooLarge
        } else {
            BodyError::Broken
        }
    })
}

/// A response of `status` with `body`, of `content_type`.
pub fn body_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
