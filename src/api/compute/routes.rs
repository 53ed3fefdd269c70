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
    /// The route's template, for metrics (never the path itself: ids are unbounded).
    pub fn template(&self) -> &'static str {
        use Action::*;
        match self {
            VersionDocument => "/",
            VersionShow(_) => "/versions/{id}",
            ImageIndex => "/images",
            ImageDetail => "/images/detail",
            ImageShow(_) | ImageDelete(_) => "/images/{id}",
            MetadataIndex(_) | MetadataCreate(_) | MetadataUpdateAll(_) => "/images/{id}/metadata",
            MetadataShow(..) | MetadataUpdate(..) | MetadataDelete(..) => "/images/{id}/metadata/{key}",
            Limits => "/limits",
        }
    }

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

/// `path`'s `/`-separated segments, as `path.split('/')` gives them, found by a byte scan:
/// the char searcher's setup costs more than these short segments do.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.bytes().position(|b| b == b'/') {
            Some(i) => {
                rest = Some(&s[i + 1..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Resolves the path after the `/v2` or `/v2.1` prefix, already percent-decoded.
pub fn resolve(method: &Method, path: &str) -> Result<Route, NoRoute> {
    if path.is_empty() || path == "/" {
        return pick(method, "GET", &[Method::GET], None, |_| Action::VersionDocument);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(NoRoute::NotFound);
    };
    // At most five segments (project, images, id, metadata, key): anything longer is no route.
    let mut all = [""; 6];
    let mut n = 0;
    for segment in segments(rest) {
        if n == all.len() || segment.is_empty() {
            return Err(NoRoute::NotFound);
        }
        all[n] = segment;
        n += 1;
    }
    let (project_id, segments) = match &all[..n] {
        [first, rest @ ..] if !rest.is_empty() && is_project_id(first) => (Some(first.to_string()), rest),
        segments => (None, segments),
    };
    let id = |i: usize| segments[i].to_owned();
    use Action::*;
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    match segments {
        ["limits"] => pick(method, "GET", &[get], project_id, |_| Limits),
        ["versions", _] => pick(method, "GET", &[get], project_id, |_| VersionShow(id(1))),
        ["images"] => pick(method, "GET", &[get], project_id, |_| ImageIndex),
        // `/images/detail` is declared before `/images/{id}`: GET is the detail listing,
        // DELETE still reaches delete with the id "detail".
        ["images", "detail"] => pick(method, "GET, DELETE", &[get, delete], project_id, |m| match m {
            0 => ImageDetail,
            _ => ImageDelete(id(1)),
        }),
        ["images", _] => pick(method, "GET, DELETE", &[get, delete], project_id, |m| match m {
            0 => ImageShow(id(1)),
            _ => ImageDelete(id(1)),
        }),
        ["images", _, "metadata"] => pick(method, "GET, POST, PUT", &[get, post, put], project_id, |m| match m {
            0 => MetadataIndex(id(1)),
            1 => MetadataCreate(id(1)),
            _ => MetadataUpdateAll(id(1)),
        }),
        ["images", _, "metadata", _] => {
            pick(method, "GET, PUT, DELETE", &[get, put, delete], project_id, |m| match m {
                0 => MetadataShow(id(1), id(3)),
                1 => MetadataUpdate(id(1), id(3)),
                _ => MetadataDelete(id(1), id(3)),
            })
        }
        _ => Err(NoRoute::NotFound),
    }
}

/// The action for `method` among a path's `methods` (`action` gets its index), or 405.
fn pick(
    method: &Method,
    allow: &'static str,
    methods: &[Method],
    project_id: Option<String>,
    action: impl FnOnce(usize) -> Action,
) -> Result<Route, NoRoute> {
    let index = methods.iter().position(|m| m == method).ok_or(NoRoute::MethodNotAllowed(allow))?;
    Ok(Route { action: action(index), project_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The same segments as `str::split('/')` (a small alphabet: many empty segments).
        #[test]
        fn segments_are_split_on_slashes(path in "[/aé]{0,12}") {
            proptest::prop_assert_eq!(segments(&path).collect::<Vec<_>>(), path.split('/').collect::<Vec<_>>());
        }
    }

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
