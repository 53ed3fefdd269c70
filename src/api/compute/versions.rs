//! Version discovery (nova-images §8): `GET /`, the `/v2` and `/v2.1` documents, and the
//! 300 Multiple Choices that any other root path gets.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::views::LinkBase;
use super::{Ctx, Reply};
use crate::api::fault::Fault;
use crate::api::json;
use crate::api::microversion::{MAX, MIN};

const DOCS: &str = "http://docs.openstack.org/";

/// The two versions, sorted by id: (id, status, version, min_version, updated, media type).
fn versions() -> [(&'static str, &'static str, String, String, &'static str, &'static str); 2] {
    [
        (
            "v2.0",
            "DEPRECATED",
            String::new(),
            String::new(),
            "2025-07-04T12:00:00Z",
            "application/vnd.openstack.compute+json;version=2",
        ),
        (
            "v2.1",
            "CURRENT",
            MAX.to_string(),
            MIN.to_string(),
            "2013-07-23T11:33:21Z",
            "application/vnd.openstack.compute+json;version=2.1",
        ),
    ]
}

fn path_of(id: &str) -> &'static str {
    if id == "v2.1" { "/v2.1" } else { "/v2" }
}

/// Everything outside `/v2` and `/v2.1`: `GET /` lists the versions; any other path gets
/// the 300 choices with links to the same path under each version.
pub fn root(parts: &Parts) -> Response {
    let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let base = format!("http://{host}");
    let path = parts.uri.path();
    let (status, body) = if path == "/" && parts.method == Method::GET {
        let list: Vec<Value> = versions()
            .into_iter()
            .map(|(id, status, version, min, updated, _)| {
                json!({"id": id, "status": status, "version": version, "min_version": min,
                       "updated": updated,
                       "links": [{"rel": "self", "href": format!("{base}{}/", path_of(id))}]})
            })
            .collect();
        (StatusCode::OK, json!({ "versions": list }))
    } else {
        let choices: Vec<Value> = versions()
            .into_iter()
            .map(|(id, status, _, _, _, media)| {
                json!({"id": id, "status": status,
                       "links": [{"rel": "self", "href": format!("{base}{}{path}", path_of(id))}],
                       "media-types": [{"base": "application/json", "type": media}]})
            })
            .collect();
        (StatusCode::MULTIPLE_CHOICES, json!({ "choices": choices }))
    };
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json::to_vec(&body))
        .into_response()
}

/// `GET /v2[/]` and `GET /v2.1[/]`.
pub fn document(prefix: &str, links: &LinkBase) -> Reply {
    let id = if prefix == "/v2.1" { "v2.1" } else { "v2.0" };
    version_document(id, prefix, links).expect("a known version")
}

/// `GET /versions/{id}` (authenticated): 404 for an unknown id.
pub fn show(ctx: &Ctx<'_>, id: &str) -> Result<Reply, Fault> {
    let links = ctx.links();
    version_document(id, links.version_prefix, &links).ok_or_else(Fault::resource_not_found)
}

/// The API a `;version=` parameter of `Accept` or `Content-Type` names: `/v2` or `/v2.1`.
pub fn from_media_type(headers: &HeaderMap) -> Option<&'static str> {
    [header::ACCEPT, header::CONTENT_TYPE].iter().find_map(|name| {
        let value = headers.get(name)?.to_str().ok()?;
        value.split(',').find_map(|media| {
            media.split(';').skip(1).find_map(|param| match param.trim().strip_prefix("version=")?.trim() {
                "2.1" => Some("/v2.1"),
                "2" | "2.0" => Some("/v2"),
                _ => None,
            })
        })
    })
}

fn version_document(id: &str, prefix: &str, links: &LinkBase) -> Option<Reply> {
    let (id, status, version, min, updated, media) = versions().into_iter().find(|v| v.0 == id)?;
    Some(Reply::ok(json!({"version": {
        "id": id, "status": status, "version": version, "min_version": min, "updated": updated,
        "links": [
            {"rel": "self", "href": format!("{}{prefix}/", links.root)},
            {"rel": "describedby", "type": "text/html", "href": DOCS},
        ],
        "media-types": [{"base": "application/json", "type": media}],
    }})))
}
