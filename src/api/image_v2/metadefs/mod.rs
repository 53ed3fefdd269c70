//! Glance's metadata definitions API (metadefs-spec): `/v2/metadefs/…` and the schemas under
//! `/v2/schemas/metadefs/`. Handlers parse the request ([`schemas`] validates bodies against
//! the documents Glance serves), call the [`MetadefStore`](crate::store::metadefs::MetadefStore),
//! which checks visibility and policy, and show the result ([`views`]). Every refusal is worded
//! here, per route ([`On`]), with Glance's texts (metadefs-spec §10).
//!
//! Where Glance answers 500 (metadefs-spec §15) this API answers a 4xx instead: a `limit` or
//! sort key it cannot use (400), a query parameter it does not know (ignored), a rename onto a
//! taken name (409), a definition its model cannot type (400).

mod namespaces;
pub use namespaces::definition_file;
mod objects;
mod properties;
mod resource_types;
pub mod schemas;
mod tags;
pub mod views;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::{Ctx, Reply, not_authorized, read_json};
use crate::api::fault::Fault;
use crate::api::image_v2::routes::Md;
use crate::domain::BadText;
use crate::domain::policy::{Refusal, Rule};
use crate::store::metadefs::{Duplicate, Limited, MetadefError};
use schemas::Entity;

pub async fn dispatch(ctx: &Ctx, md: Md, body: Body) -> Result<Reply, Fault> {
    use Md::*;
    match md {
        ListNamespaces => namespaces::list(ctx).await,
        CreateNamespace => namespaces::create(ctx, body).await,
        ShowNamespace(ns) => namespaces::show(ctx, &ns).await,
        UpdateNamespace(ns) => namespaces::update(ctx, &ns, body).await,
        DeleteNamespace(ns) => namespaces::delete(ctx, &ns).await,
        ListObjects(ns) => objects::list(ctx, &ns).await,
        CreateObject(ns) => objects::create(ctx, &ns, body).await,
        DeleteObjects(ns) => namespaces::delete_contents(ctx, &ns, crate::domain::metadefs::Contents::Objects).await,
        ShowObject(ns, o) => objects::show(ctx, &ns, &o).await,
        UpdateObject(ns, o) => objects::update(ctx, &ns, &o, body).await,
        DeleteObject(ns, o) => objects::delete(ctx, &ns, &o).await,
        ListProperties(ns) => properties::list(ctx, &ns).await,
        CreateProperty(ns) => properties::create(ctx, &ns, body).await,
        DeleteProperties(ns) => {
            namespaces::delete_contents(ctx, &ns, crate::domain::metadefs::Contents::Properties).await
        }
        ShowProperty(ns, p) => properties::show(ctx, &ns, &p).await,
        UpdateProperty(ns, p) => properties::update(ctx, &ns, &p, body).await,
        DeleteProperty(ns, p) => properties::delete(ctx, &ns, &p).await,
        ListTags(ns) => tags::list(ctx, &ns).await,
        CreateTags(ns) => tags::create_many(ctx, &ns, body).await,
        DeleteTags(ns) => namespaces::delete_contents(ctx, &ns, crate::domain::metadefs::Contents::Tags).await,
        ShowTag(ns, t) => tags::show(ctx, &ns, &t).await,
        CreateTag(ns, t) => tags::create(ctx, &ns, &t).await,
        UpdateTag(ns, t) => tags::update(ctx, &ns, &t, body).await,
        DeleteTag(ns, t) => tags::delete(ctx, &ns, &t).await,
        ListResourceTypes => resource_types::list(ctx).await,
        ListAssociations(ns) => resource_types::list_associations(ctx, &ns).await,
        CreateAssociation(ns) => resource_types::create_association(ctx, &ns, body).await,
        DeleteAssociation(ns, rt) => resource_types::delete_association(ctx, &ns, &rt).await,
        Schema(name) => match schemas::document(name) {
            Some(doc) => Ok(Reply::ok(doc)),
            None => Err(Fault::bare(StatusCode::NOT_FOUND)),
        },
    }
}

/// A metadefs document: Glance writes these with non-ASCII characters as they are.
fn reply(status: StatusCode, body: &Value) -> Reply {
    Reply::Json {
        status,
        body: Some(crate::api::json::to_vec_unicode(body).into()),
        headers: axum::http::HeaderMap::new(),
    }
}

fn ok(body: &Value) -> Reply {
    reply(StatusCode::OK, body)
}

fn created(body: &Value) -> Reply {
    reply(StatusCode::CREATED, body)
}

/// A 201 for what is at `location` (absolute).
fn created_at(body: &Value, location: String) -> Reply {
    reply(StatusCode::CREATED, body).with_header(axum::http::header::LOCATION, &location)
}

/// What a route's entity is, for its refusals' texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Namespace,
    Object,
    Property,
    Tag,
    Association,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Object => "object",
            Kind::Property => "property",
            Kind::Tag => "tag",
            Kind::Association => "resource-type-association",
        }
    }
}

/// How a route words a namespace it cannot find, or may not show (Glance's controllers differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// The namespace's `GET`: `Metadata definition namespace=<ns> was not found.` when it does
    /// not exist, WebOb's bare 404 when it is not visible.
    Show,
    /// The object routes: the first text when it does not exist, `Namespace <ns> not found`
    /// when it is not visible.
    Objects,
    /// Everything else: `Namespace <ns> not found` either way.
    Other,
}

/// A route's subject, for the wording of the refusals of its operation (metadefs-spec §10).
struct On<'a> {
    kind: Kind,
    ns: &'a str,
    /// The object, property, tag or resource type of the route (or a listing's marker).
    item: &'a str,
    missing: Missing,
    /// A rename (`PUT`): its conflicts and text refusals are worded as updates.
    update: bool,
}

impl<'a> On<'a> {
    fn new(kind: Kind, ns: &'a str, item: &'a str) -> On<'a> {
        let missing = if kind == Kind::Object { Missing::Objects } else { Missing::Other };
        On { kind, ns, item, missing, update: false }
    }

    fn updating(self) -> On<'a> {
        On { update: true, ..self }
    }

    fn fault(&self, e: MetadefError) -> Fault {
        let (ns, item) = (self.ns, self.item);
        let status = |s: StatusCode, text: String| Fault::explained(s, text);
        let not_found = |text: String| status(StatusCode::NOT_FOUND, text);
        let conflict = |text: String| status(StatusCode::CONFLICT, text);
        match e {
            MetadefError::NamespaceNotFound if self.missing == Missing::Other => {
                not_found(format!("Namespace {ns} not found"))
            }
            MetadefError::NamespaceNotFound => not_found(format!("Metadata definition namespace={ns} was not found.")),
            MetadefError::NamespaceInvisible if self.missing == Missing::Show => Fault::bare(StatusCode::NOT_FOUND),
            MetadefError::NamespaceInvisible => not_found(format!("Namespace {ns} not found")),
            MetadefError::Refused(_, Refusal::Hidden) => Fault::bare(StatusCode::NOT_FOUND),
            MetadefError::Refused(rule, Refusal::Forbidden) => not_authorized(&Rule::Metadef(rule, None)),
            MetadefError::Protected => {
                let (noun, name) =
                    if self.kind == Kind::Namespace { ("namespace", ns) } else { (self.kind.noun(), item) };
                status(
                    StatusCode::FORBIDDEN,
                    format!("Metadata definition {noun} {name} is protected and cannot be deleted."),
                )
            }
            MetadefError::ObjectNotFound => not_found(format!("Could not find metadata object {item}")),
            MetadefError::PropertyNotFound(_) => not_found(format!("Could not find property {item}")),
            MetadefError::TagNotFound => not_found(format!("Could not find metadata tag {item}")),
            MetadefError::ResourceTypeNotFound => {
                not_found(format!("The metadata definition resource-type with name={item}, was not found."))
            }
            MetadefError::AssociationNotFound if self.kind == Kind::Association => {
                not_found(format!("Failed to find resource type {item} to delete"))
            }
            MetadefError::AssociationNotFound => not_found(format!(
                "The metadata definition resource-type association of resource-type={item} to namespace={ns}, was not found."
            )),
            MetadefError::PrefixMismatch(prefix) => not_found(format!(
                "Property {item} does not start with the expected resource type association prefix of '{}'.",
                prefix.as_deref().unwrap_or("None")
            )),
            MetadefError::Duplicate(d) => conflict(match (d, self.update) {
                (Duplicate::Namespace(n), false) => format!("The metadata definition namespace={n} already exists."),
                (Duplicate::Namespace(n), true) => format!(
                    "Invalid update. It would result in a duplicate metadata definition namespace with the same name of {n}"
                ),
                (Duplicate::Object(o), false) => {
                    format!("A metadata definition object with name={o} already exists in namespace={ns}.")
                }
                (Duplicate::Object(o), true) => format!(
                    "Invalid update. It would result in a duplicate metadata definition object with the same name={o} in namespace={ns}."
                ),
                (Duplicate::Property(p), false) => {
                    format!("A metadata definition property with name={p} already exists in namespace={ns}.")
                }
                (Duplicate::Property(p), true) => format!(
                    "Invalid update. It would result in a duplicate metadata definition property with the same name={p} in namespace={ns}."
                ),
                (Duplicate::Tag(t), _) => format!(
                    "A metadata tag with name={t} already exists in namespace={ns}. (Please note that metadata tag names are case insensitive)."
                ),
                (Duplicate::Association(rt), _) => format!(
                    "The metadata definition resource-type association of resource-type={rt} to namespace={ns} already exists."
                ),
            }),
            MetadefError::TooMany { what, attempted, max } => {
                let what = match what {
                    Limited::Objects => format!("metadata definition objects in namespace {ns}"),
                    Limited::Properties => format!("metadata definition properties in namespace {ns}"),
                    Limited::Tags => format!("metadata tags in namespace {ns}"),
                    Limited::Associations => format!("resource type associations of namespace {ns}"),
                    Limited::ResourceTypes => "metadata definition resource types".into(),
                };
                status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "The limit has been exceeded on the number of allowed {what}. Attempted: {attempted}, Maximum: {max}"
                    ),
                )
            }
            MetadefError::BadText { field, bad } => {
                let what = match bad {
                    BadText::FourByte => "4 byte unicode characters",
                    BadText::Nul => "NUL characters",
                };
                let verb = if self.update { "update" } else { "create" };
                let noun = if self.kind == Kind::Association { "resource type association" } else { self.kind.noun() };
                status(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Couldn't {verb} metadata {noun}: {} can't contain {what}.",
                        crate::api::image_v2::schemas::py_title(&field)
                    ),
                )
            }
            MetadefError::MarkerNotFound if self.kind == Kind::Tag => {
                not_found(format!("Could not find metadata tag {item}"))
            }
            MetadefError::MarkerNotFound => not_found(format!("Metadata definition namespace={item} was not found.")),
            MetadefError::MarkerInvisible => status(
                StatusCode::FORBIDDEN,
                format!("Forbidding request, metadata definition namespace={item} is not visible."),
            ),
            MetadefError::Store(e) => Fault::store(&e, false),
        }
    }
}

/// A JSON object body for `entity`: read within the size limit, its read-only attributes
/// refused (Glance's 403, before the schema), then checked against the entity's schema.
async fn body(ctx: &Ctx, body: Body, entity: Entity) -> Result<Map<String, Value>, Fault> {
    let value = read_json(body, ctx.state.settings.max_request_body_size).await?;
    let read_only: &[&str] = match entity {
        Entity::Namespace | Entity::Object => &["self", "schema", "created_at", "updated_at"],
        _ => &["created_at", "updated_at"],
    };
    if let Value::Object(m) = &value
        && let Some(key) = read_only.iter().find(|k| m.contains_key(**k))
    {
        return Err(Fault::explained(StatusCode::FORBIDDEN, format!("Attribute '{key}' is read-only.")));
    }
    schemas::validate(entity, &value)?;
    match value {
        Value::Object(m) => Ok(m),
        other => {
            Err(schemas::invalid(entity, &format!("{} is not of type 'object'", crate::api::pyrepr::repr(&other))))
        }
    }
}

/// Optional text of a body that passed its schema.
fn text(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A query's parameters as Glance reads them (`dict(request.params)`): each key once, where it
/// first appears, with its last value.
fn params(ctx: &Ctx) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in &ctx.query {
        match params.iter_mut().find(|(key, _)| key == k) {
            Some(p) => p.1.clone_from(v),
            None => params.push((k.clone(), v.clone())),
        }
    }
    params
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Python's `int()` of a query value: `None` when it is not an integer; saturated beyond i64.
fn py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.bytes().fold(0i64, |n, b| n.saturating_mul(10).saturating_add(i64::from(b - b'0')));
    Some(if negative { -n } else { n })
}

fn bad_request(text: impl Into<String>) -> Fault {
    Fault::explained(StatusCode::BAD_REQUEST, text.into())
}

/// `sort_dir`: `asc` or `desc`.
fn sort_dir(params: &[(String, String)]) -> Result<crate::store::SortDir, Fault> {
    match param(params, "sort_dir") {
        None | Some("desc") => Ok(crate::store::SortDir::Desc),
        Some("asc") => Ok(crate::store::SortDir::Asc),
        Some(other) => Err(bad_request(format!("Invalid sort direction: {other}"))),
    }
}

/// A sort key among `keys` (Glance fails with a 500 on any other).
fn sort_key<T: Copy>(
    params: &[(String, String)],
    keys: &[T],
    name: impl Fn(T) -> &'static str,
    default: T,
) -> Result<T, Fault> {
    match param(params, "sort_key") {
        None => Ok(default),
        Some(key) => keys.iter().copied().find(|k| name(*k) == key).ok_or_else(|| {
            let available: Vec<&str> = keys.iter().map(|k| name(*k)).collect();
            bad_request(format!(
                "Invalid sort key: {key}. It should be one of the following: {}.",
                available.join(", ")
            ))
        }),
    }
}

/// `visibility` of the object and tag listings: checked, then unused (as in Glance).
fn check_visibility(params: &[(String, String)], allowed: &[&str]) -> Result<(), Fault> {
    match param(params, "visibility") {
        Some(v) if !allowed.contains(&v) => Err(bad_request(format!("Invalid visibility value: {v}"))),
        _ => Ok(()),
    }
}

/// oslo's `bool_from_string`, as Glance reads `X-Openstack-Append`.
fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "t" | "true" | "on" | "y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_integers_as_python_reads_them() {
        assert_eq!(py_int(" 5 "), Some(5));
        assert_eq!(py_int("+3"), Some(3));
        assert_eq!(py_int("-1"), Some(-1));
        assert_eq!(py_int("99999999999999999999999"), Some(i64::MAX));
        assert_eq!(py_int("abc"), None);
        assert_eq!(py_int(""), None);
        assert_eq!(py_int("1.5"), None);
        assert!(truthy(Some(" True")) && truthy(Some("yes")) && !truthy(Some("false")) && !truthy(None));
    }
}
