//! What every answered request leaves behind: its metrics and, with `--access-log`, one log
//! line, written when the response's body has been sent to the end (or the client went away),
//! so that its latency and byte count are the whole exchange's.
//!
//! The line is an event at `info` on the target `imagemeta::access`: request id, client
//! address, method, path, route template, status, bytes of body sent, milliseconds, user and
//! project. Never a header, so never a token.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{Method, Uri};
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::domain::policy::Principal;

static ACCESS_LOG: AtomicBool = AtomicBool::new(false);
static SPANS: AtomicBool = AtomicBool::new(false);

/// Turns the access log on for the process (`--access-log`).
pub fn enable_access_log() {
    ACCESS_LOG.store(true, Ordering::Relaxed);
}

/// Gives every request a span carrying its id (when the access log or JSON logs are on), so
/// that every event logged while it runs names it.
pub fn enable_request_spans() {
    SPANS.store(true, Ordering::Relaxed);
}

pub fn access_log() -> bool {
    ACCESS_LOG.load(Ordering::Relaxed)
}

pub fn request_spans() -> bool {
    SPANS.load(Ordering::Relaxed)
}

/// The client's address, put in a request's extensions by the connection loop when the access
/// log is on.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// One request, from its arrival to its answer.
pub struct Exchange {
    api: &'static str,
    method: Method,
    started: Instant,
    /// The route template (`/images/{image_id}/metadata`), once routing knows it.
    pub route: &'static str,
    /// Who made the request, once authentication knows it.
    principal: Option<Arc<Principal>>,
    /// Only kept when the access log is on.
    logged: Option<(Uri, Option<SocketAddr>)>,
}

impl Exchange {
    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn begin(api: &'static str, parts: &Parts) -> Exchange {
        let logged = access_log().then(|| (parts.uri.clone(), parts.extensions.get::<Peer>().map(|p| p.0)));
        Exchange {
            api,
            method: parts.method.clone(),
            started: Instant::now(),
            route: "unrouted",
            principal: None,
            logged,
        }
    }

    /// Notes who made the request (kept only for the access log).
    pub fn authenticated(&mut self, principal: &Arc<Principal>) {
        if self.logged.is_some() {
            self.principal = Some(principal.clone());
        }
    }

    /// Records the answer in the metrics and, with the access log on, arranges for its line.
    pub fn finish(self, request_id: &str, response: Response) -> Response {
        let status = response.status();
        crate::admin::request(self.api, self.route, &self.method, status, self.started.elapsed());
        let Some((uri, peer)) = self.logged else {
            return response;
        };
        let line = Line {
            request_id: request_id.to_owned(),
            peer,
            method: self.method,
            uri,
            route: self.route,
            status: status.as_u16(),
            principal: self.principal,
            started: self.started,
        };
        // A streamed body (image data) declares its length in the header instead.
        let declared = response
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        response.map(|body| {
            let expected = http_body::Body::size_hint(&body).exact().or(declared);
            Body::new(Logged { body, line: Some(line), bytes: 0, expected })
        })
    }
}

struct Line {
    request_id: String,
    peer: Option<SocketAddr>,
    method: Method,
    uri: Uri,
    route: &'static str,
    status: u16,
    principal: Option<Arc<Principal>>,
    started: Instant,
}

impl Line {
    fn write(self, bytes: u64, complete: bool) {
        let user = self.principal.as_deref().map_or("-", |p| p.user_id.as_str());
        let project = self.principal.as_deref().map_or("-", |p| p.project_id.as_str());
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let millis = self.started.elapsed().as_secs_f64() * 1000.0;
        let remote = self.peer.map(tracing::field::display);
        tracing::info!(
            target: "imagemeta::access",
            request_id = self.request_id.as_str(),
            remote,
            method = self.method.as_str(),
            path,
            route = self.route,
            status = self.status,
            bytes,
            duration_ms = (millis * 1000.0).round() / 1000.0,
            user_id = user,
            project_id = project,
            complete,
            "request"
        );
    }
}

/// A response body that counts what it sends and writes the access-log line at its end, or,
/// when the connection goes first, when it is dropped (`complete=false`).
struct Logged {
    body: Body,
    line: Option<Line>,
    bytes: u64,
    /// The body's length, when it was known from the start.
    expected: Option<u64>,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.body.is_end_stream()
                    && let Some(line) = this.line.take()
                {
                    line.write(this.bytes, true);
                }
            }
            Poll::Ready(None) => {
                if let Some(line) = this.line.take() {
                    line.write(this.bytes, true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(line) = this.line.take() {
                    line.write(this.bytes, false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            // A body of known length is dropped once it has all been sent (an empty one, of a
            // 204 or a HEAD, is never polled at all); any other drop is a client gone early.
            let complete = http_body::Body::is_end_stream(&self.body) || self.expected == Some(self.bytes);
            line.write(self.bytes, complete);
        }
    }
}
