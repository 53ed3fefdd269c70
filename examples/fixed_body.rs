//! The benchmark's yardstick: a minimal axum server answering every request with the same
//! JSON body, so imagemeta's throughput can be read as a ratio to the HTTP stack's own.
//!
//! Usage: `fixed_body BYTES` — listens on 127.0.0.1 (ephemeral port), prints
//! `fixed_body listening on http://ADDR`, and answers with a JSON body of BYTES bytes.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let size: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(300);
    // {"metadata": {"k": "xxxx…"}} padded to exactly `size` bytes.
    let overhead = r#"{"metadata": {"k": ""}}"#.len();
    let body = format!(r#"{{"metadata": {{"k": "{}"}}}}"#, "x".repeat(size.saturating_sub(overhead)));
    let body: &'static str = Box::leak(body.into_boxed_str());
    let app = Router::new().fallback(move || async move {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("fixed_body listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
