//! The one error type that crosses the HTTP boundary, and the wire formats it renders to.
//!
//! Nova answers in three formats depending on which layer refuses the request
//! (nova-images §1.1, §2, §5): its own fault body `{"<name>": {"code", "message"}}`;
//! keystonemiddleware's 401 body; and WebOb's bare error page (unrouted paths, oversized
//! bodies), whose format follows `Accept`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::json;
use crate::store::StoreError;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER: &str = "5";

/// The content type of Nova fault bodies.
pub const FAULT_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// The message of the 405 Nova's legacy v2 code sent (WebOb's default text).
const BAD_METHOD_MESSAGE: &str =
    "The server could not comply with the request since\r\nit is either malformed or otherwise incorrect.\r\n";

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Nova's fault body; the name follows from the status (§5.1).
    Nova { status: StatusCode, message: String, headers: Vec<(HeaderName, HeaderValue)> },
    /// A missing or invalid token, in Keystone's format with `WWW-Authenticate`.
    Unauthorized { www_authenticate_uri: String },
    /// A WebOb error page (Nova's unrouted paths and oversized bodies, every Glance error):
    /// the status, the body its template produces (`explanation<br /><br />\ndetail\n…`), and
    /// extra headers. The representation (HTML, JSON, text) is chosen from `Accept`.
    Bare { status: StatusCode, body: Page, headers: Vec<(HeaderName, HeaderValue)> },
    /// A known path called with a method it does not serve (this project's 405 override).
    BadMethod { allow: &'static str },
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Fault {
        Fault::Nova { status, message: message.into(), headers: Vec::new() }
    }

    /// The identity service cannot validate tokens now: 503 with `Retry-After`, never 401.
    pub fn identity_unavailable(nova: bool) -> Fault {
        let retry = vec![(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER))];
        let message = "The identity service is unavailable. Please retry later.".to_owned();
        let status = StatusCode::SERVICE_UNAVAILABLE;
        if nova {
            Fault::Nova { status, message, headers: retry }
        } else {
            Fault::detailed(status, &message, "")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER))
        }
    }

    /// A WebOb error page with its default text.
    pub fn bare(status: StatusCode) -> Fault {
        Fault::detailed(status, default_explanation(status), "")
    }

    /// A WebOb error page with an explanation (Glance's `HTTPXxx(explanation=…)`).
    pub fn explained(status: StatusCode, explanation: impl AsRef<str>) -> Fault {
        Fault::detailed(status, explanation.as_ref(), "")
    }

    /// WebOb's generic template: `${explanation}<br /><br />\n${detail}\n${html_comment}\n`.
    pub fn detailed(status: StatusCode, explanation: &str, detail: &str) -> Fault {
        Fault::webob(status, Page::new().text(explanation).markup("<br /><br />\n").text(detail).markup("\n\n"))
    }

    /// A WebOb page whose class has its own template, filled in.
    pub fn webob(status: StatusCode, body: Page) -> Fault {
        Fault::Bare { status, body, headers: Vec::new() }
    }

    /// Adds a response header (WebOb pages and Nova faults).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Fault {
        if let Fault::Bare { headers, .. } | Fault::Nova { headers, .. } = &mut self {
            headers.push((name, value));
        }
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::NOT_FOUND, message)
    }

    /// WebOb's `HTTPNotFound()` text, used where Nova raises it bare inside a resource.
    pub fn resource_not_found() -> Fault {
        Fault::not_found("The resource could not be found.")
    }

    /// A failure of the store behind a request (see [`StoreError::is_failure`]), in Nova's
    /// format (`nova`) or Glance's: 503 with `Retry-After` when the store is unavailable or
    /// full (it recovers by itself, and nothing was changed), 500 for a defect. The cause is
    /// logged, never sent.
    pub fn store(e: &StoreError, nova: bool) -> Fault {
        let message = match e {
            StoreError::Internal(_) => {
                return if nova {
                    Fault::internal(e, "imagemeta.store.StoreError")
                } else {
                    tracing::error!(error = %e, "store failure");
                    Fault::bare(StatusCode::INTERNAL_SERVER_ERROR)
                };
            }
            StoreError::Full(_) => "The image catalogue's storage is full. Please retry later.",
            _ => "The image catalogue is unavailable. Please retry later.",
        };
        tracing::warn!(error = %e, "store unavailable");
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let fault = if nova { Fault::new(status, message) } else { Fault::detailed(status, message, "") };
        fault.with_header(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER))
    }

    /// A request that ran past the request deadline: 503, retry later (a write it made may
    /// or may not have been committed, as with any failed request).
    pub fn timed_out(nova: bool) -> Fault {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let message = "The request took too long. Please retry later.";
        let fault = if nova { Fault::new(status, message) } else { Fault::detailed(status, message, "") };
        fault.with_header(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER))
    }

    /// An unexpected failure: logged in full here (the caller's span carries the request
    /// id), answered with Nova's generic 500 text only.
    pub fn internal(error: &dyn std::fmt::Display, kind: &str) -> Fault {
        tracing::error!(error = %error, "unexpected error");
        Fault::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Unexpected API Error. Please contact the administrator\n<class '{kind}'>"),
        )
    }

    /// Logs a refused request by what it says about the service: a 500 is a defect (ERROR), a
    /// 503 an outage or overload (WARN); anything else, a 501 for an unknown method included,
    /// is the client's business (DEBUG).
    pub fn log(&self, request_id: &str) {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(request_id, %status, "request failed");
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(request_id, %status, "request refused: service unavailable");
        } else {
            tracing::debug!(request_id, %status, "request refused");
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Fault::Nova { status, .. } | Fault::Bare { status, .. } => *status,
            Fault::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Fault::BadMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Renders the fault. `accept` only matters to the bare WebOb format.
    pub fn render(self, accept: Option<&HeaderValue>) -> Response {
        let status = self.status();
        match self {
            Fault::Nova { message, headers, .. } => {
                let mut r = nova_body(status, &message);
                r.headers_mut().extend(headers);
                r
            }
            Fault::BadMethod { allow } => {
                let mut r = nova_body(status, BAD_METHOD_MESSAGE);
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            Fault::Unauthorized { www_authenticate_uri } => {
                let body = json!({"error": {
                    "code": 401,
                    "title": "Unauthorized",
                    "message": "The request you have made requires authentication.",
                }});
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FAULT_CONTENT_TYPE));
                let challenge = format!("Keystone uri=\"{www_authenticate_uri}\"");
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
                (status, headers, json::to_vec(&body)).into_response()
            }
            Fault::Bare { body, headers, .. } => {
                let mut r = bare_body(status, &body, accept);
                r.headers_mut().extend(headers);
                r
            }
        }
    }
}

/// Nova's fault name for a status (§5.1); everything unlisted, 406 and 500 included, is
/// `computeFault`.
pub fn fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn nova_body(status: StatusCode, message: &str) -> Response {
    let body = json!({ fault_name(status): {"code": status.as_u16(), "message": message} });
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(FAULT_CONTENT_TYPE))], json::to_vec(&body))
        .into_response()
}

/// The body of a WebOb error page: its template's markup, and the text filled into it (the
/// request's own words among them: an id, a method, a media type). WebOb escapes the text for
/// the HTML representation and for no other, so a page is kept in pieces until it is rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Markup(&'static str),
    Text(String),
}

impl Page {
    pub fn new() -> Page {
        Page::default()
    }

    /// Template markup, sent as is.
    pub fn markup(mut self, markup: &'static str) -> Page {
        self.0.push(Piece::Markup(markup));
        self
    }

    /// Text filled into the template: HTML-escaped in the HTML representation.
    pub fn text(mut self, text: impl Into<String>) -> Page {
        self.0.push(Piece::Text(text.into()));
        self
    }

    /// The body as WebOb's JSON and plain-text representations fill it in (no escaping).
    pub fn raw(&self) -> String {
        self.render(|s, out| out.push_str(s))
    }

    /// The body as WebOb's HTML representation fills it in: every text piece escaped as
    /// Python's `html.escape(s, quote=True)`.
    pub fn html(&self) -> String {
        self.render(|s, out| {
            for c in s.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&#x27;"),
                    c => out.push(c),
                }
            }
        })
    }

    fn render(&self, text: impl Fn(&str, &mut String)) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Markup(m) => out.push_str(m),
                Piece::Text(t) => text(t, &mut out),
            }
        }
        out
    }
}

/// WebOb's default explanation for a status.
fn default_explanation(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The server could not comply with the request since it is either malformed or otherwise incorrect.",
        401 => "This server could not verify that you are authorized to access the document you requested.",
        403 => "Access was denied to this resource.",
        404 => "The resource could not be found.",
        409 => "There was a conflict when trying to complete your request.",
        413 => "The body of your request was too large for this server.",
        414 => "The request URI was too long for this server.",
        415 => "The request media type is not supported by this server.",
        416 => "The Range requested is not available.",
        501 => "That method is not implemented by this server.",
        503 => "The server is currently unavailable. Please try again at a later time.",
        _ => "",
    }
}

/// WebOb's title for a status, where it differs from today's reason phrase.
fn webob_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        416 => "Request Range Not Satisfiable",
        _ => status.canonical_reason().unwrap_or(""),
    }
}

/// WebOb's `strip_tags`: newlines become spaces, `<br>` tags newlines, other tags vanish.
fn strip_tags(body: &str) -> String {
    let flat = body.replace('\n', " ").replace('\r', "");
    let mut out = String::with_capacity(flat.len());
    let mut rest = flat.as_str();
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        if rest[start + 1..].to_ascii_lowercase().starts_with("br") {
            out.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// WebOb's `WSGIHTTPException.generate_response`: HTML, JSON or plain text by `Accept`
/// (plain text when there is none; HTML wins a tie).
fn bare_body(status: StatusCode, body: &Page, accept: Option<&HeaderValue>) -> Response {
    let accept = accept.and_then(|a| a.to_str().ok()).unwrap_or("");
    let title = webob_title(status);
    let status_line = format!("{} {title}", status.as_u16());
    let (content_type, bytes) = match super::negotiate(accept, &["text/html", "application/json"]) {
        Some("application/json") => {
            let doc = json!({"message": body.raw(), "code": status_line, "title": title});
            ("application/json", json::to_vec(&doc))
        }
        Some(_) => {
            let page = format!(
                "<html>\n <head>\n  <title>{status_line}</title>\n </head>\n <body>\n  <h1>{status_line}</h1>\n  {}\n </body>\n</html>",
                body.html()
            );
            ("text/html; charset=UTF-8", page.into_bytes())
        }
        None => ("text/plain; charset=UTF-8", format!("{status_line}\n\n{}", strip_tags(&body.raw())).into_bytes()),
    };
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_webob_strip_tags() {
        assert_eq!(strip_tags("No image found with ID X<br /><br />\n\n\n"), "No image found with ID X\n\n   ");
    }

    /// The request's words reach an HTML page escaped, and the other representations as sent.
    #[test]
    fn html_pages_escape_what_was_filled_in() {
        let f = Fault::explained(StatusCode::NOT_FOUND, "No image found with ID <svg onload=alert('1')>");
        let Fault::Bare { body, .. } = &f else { panic!() };
        assert_eq!(body.html(), "No image found with ID &lt;svg onload=alert(&#x27;1&#x27;)&gt;<br /><br />\n\n\n");
        assert_eq!(body.raw(), "No image found with ID <svg onload=alert('1')><br /><br />\n\n\n");
    }

    #[test]
    fn fault_names_follow_nova_table() {
        assert_eq!(fault_name(StatusCode::NOT_FOUND), "itemNotFound");
        assert_eq!(fault_name(StatusCode::NOT_ACCEPTABLE), "computeFault");
        assert_eq!(fault_name(StatusCode::INTERNAL_SERVER_ERROR), "computeFault");
        assert_eq!(fault_name(StatusCode::UNSUPPORTED_MEDIA_TYPE), "badMediaType");
    }
}
