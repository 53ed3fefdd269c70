//! The route table of nova-images §1.1: every route with and without `/{project_id}`.

use axum::http::Method;

/// What a request asks for, with its path parameters (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2[.1][/]`: the version document.
    VersionDocument,
    /// `GET /versions/{id}`: a version document, authenticated.
    VersionShow(String),
    ImageIndex,
    ImageDetail,
    ImageShow(String),
    ImageDelete(String),
    MetadataIndex(String),
    MetadataCreate(String),
    MetadataUpdateAll(String),
    MetadataShow(String, String),
    MetadataUpdate(String, String),
    MetadataDelete(String, String),
    Limits,
}

impl Action {
    /// Version documents are served without a token.
    pub fn needs_token(&self) -> bool {
        *self != Action::VersionDocument
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub action: Action,
    /// The `/{project_id}` segment, when the URL had one.
    pub project_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No route has this path.
    NotFound,
    /// The path exists, with these methods only.
    MethodNotAllowed(&'static str),
}

/// Nova's requirement on the `{project_id}` segment.
fn is_project_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
}

/// Resolves the path after the `/v2` or `/v2.1` prefix, already percent-decoded.
pub fn resolve(method: &Method, path: &str) -> Result<Route, NoRoute> {
    if path.is_empty() || path == "/" {
        return pick(method, "GET", [(Method::GET, Action::VersionDocument)], None);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(NoRoute::NotFound);
    };
    let mut segments: Vec<&str> = rest.split('/').collect();
    let project_id = match segments.first() {
        Some(first) if segments.len() > 1 && is_project_id(first) => {
            let p = first.to_string();
            segments.remove(0);
            Some(p)
        }
        _ => None,
    };
    if segments.iter().any(|s| s.is_empty()) {
        return Err(NoRoute::NotFound);
    }
    let id = |i: usize| segments[i].to_owned();
    use Action::*;
    match segments.as_slice() {
        ["limits"] => pick(method, "GET", [(Method::GET, Limits)], project_id),
        ["versions", _] => pick(method, "GET", [(Method::GET, VersionShow(id(1)))], project_id),
        ["images"] => pick(method, "GET", [(Method::GET, ImageIndex)], project_id),
        // `/images/detail` is declared before `/images/{id}`: GET is the detail listing,
        // DELETE still reaches delete with the id "detail".
        ["images", "detail"] => {
            pick(method, "GET, DELETE", [(Method::GET, ImageDetail), (Method::DELETE, ImageDelete(id(1)))], project_id)
        }
        ["images", _] => pick(
            method,
            "GET, DELETE",
            [(Method::GET, ImageShow(id(1))), (Method::DELETE, ImageDelete(id(1)))],
            project_id,
        ),
        ["images", _, "metadata"] => pick(
            method,
            "GET, POST, PUT",
            [
                (Method::GET, MetadataIndex(id(1))),
                (Method::POST, MetadataCreate(id(1))),
                (Method::PUT, MetadataUpdateAll(id(1))),
            ],
            project_id,
        ),
        ["images", _, "metadata", _] => pick(
            method,
            "GET, PUT, DELETE",
            [
                (Method::GET, MetadataShow(id(1), id(3))),
                (Method::PUT, MetadataUpdate(id(1), id(3))),
                (Method::DELETE, MetadataDelete(id(1), id(3))),
            ],
            project_id,
        ),
        _ => Err(NoRoute::NotFound),
    }
}

fn pick<const N: usize>(
    method: &Method,
    allow: &'static str,
    table: [(Method, Action); N],
    project_id: Option<String>,
) -> Result<Route, NoRoute> {
    table
        .into_iter()
        .find(|(m, _)| m == method)
        .map(|(_, action)| Route { action, project_id })
        .ok_or(NoRoute::MethodNotAllowed(allow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(m: Method, p: &str) -> Route {
        resolve(&m, p).unwrap()
    }

    #[test]
    fn routes_with_and_without_project() {
        assert_eq!(ok(Method::GET, "/images").action, Action::ImageIndex);
        let r = ok(Method::PUT, "/0a1b-2c/images/x/metadata/k k");
        assert_eq!(r.action, Action::MetadataUpdate("x".into(), "k k".into()));
        assert_eq!(r.project_id.as_deref(), Some("0a1b-2c"));
        assert_eq!(ok(Method::DELETE, "/images/detail").action, Action::ImageDelete("detail".into()));
        assert_eq!(ok(Method::GET, "/").action, Action::VersionDocument);
    }

    #[test]
    fn unknown_paths_404_known_paths_405() {
        assert_eq!(resolve(&Method::DELETE, "/images/"), Err(NoRoute::NotFound));
        assert_eq!(resolve(&Method::GET, "/demo/images"), Err(NoRoute::NotFound));
        assert_eq!(resolve(&Method::GET, "/images/x/metadata/a/b"), Err(NoRoute::NotFound));
        assert_eq!(resolve(&Method::POST, "/images"), Err(NoRoute::MethodNotAllowed("GET")));
        assert_eq!(resolve(&Method::DELETE, "/images/x/metadata"), Err(NoRoute::MethodNotAllowed("GET, POST, PUT")));
    }
}
