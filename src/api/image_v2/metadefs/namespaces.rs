//! Namespaces (metadefs-spec §4): list, create, show, update, delete, and the bulk deletes of
//! their objects, properties and tags.

use axum::body::Body;
use serde_json::{Map, Value};

use super::schemas::{self, Entity};
use super::views::{self, Embedded};
use super::{Kind, Missing, On, bad_request, body, created_at, ok, param, params, py_int, sort_dir, sort_key, text};
use crate::api::fault::Fault;
use crate::api::image_v2::{Ctx, Reply};
use crate::api::quote_plus;
use crate::domain::metadefs::{
    Association, Contents, NamespaceFields, NewNamespace, NsVisibility, Object, properties_from_json,
};
use crate::store::metadefs::{NamespaceColumn, NamespaceQuery};

/// Glance's `limit_param_default` and `api_limit_max`.
const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 1000;
/// The most resource types one listing filters on.
const MAX_RESOURCE_TYPE_FILTERS: usize = 64;

fn on(ns: &str) -> On<'_> {
    On::new(Kind::Namespace, ns, "")
}

/// `GET /v2/metadefs/namespaces`.
pub async fn list(ctx: &Ctx) -> Result<Reply, Fault> {
    let params = params(ctx);
    let limit = match param(&params, "limit") {
        None => DEFAULT_LIMIT,
        Some(l) => py_int(l).ok_or_else(|| bad_request("limit param must be an integer"))?.min(MAX_LIMIT),
    };
    if limit < 0 {
        return Err(bad_request("limit param must be positive"));
    }
    let sort_dir = sort_dir(&params)?;
    let sort_key = sort_key(&params, &NamespaceColumn::ALL, NamespaceColumn::as_str, NamespaceColumn::CreatedAt)?;
    let visibility = match param(&params, "visibility") {
        None => None,
        Some(v) => Some(NsVisibility::parse(v).ok_or_else(|| bad_request(format!("Invalid visibility value: {v}")))?),
    };
    let resource_types = param(&params, "resource_types").map(|t| t.split(',').map(str::to_owned).collect::<Vec<_>>());
    if resource_types.as_ref().is_some_and(|t| t.len() > MAX_RESOURCE_TYPE_FILTERS) {
        return Err(bad_request(format!("At most {MAX_RESOURCE_TYPE_FILTERS} resource types can be filtered on.")));
    }
    let marker = param(&params, "marker").map(str::to_owned);
    let query = NamespaceQuery { limit: limit as usize, marker, sort_key, sort_dir, visibility, resource_types };
    let marker = query.marker.clone().unwrap_or_default();
    let page = ctx
        .state
        .store
        .list_namespaces(&ctx.principal, &query)
        .await
        .map_err(|e| On { missing: Missing::Show, ..On::new(Kind::Namespace, "", &marker) }.fault(e))?;

    let kept: Vec<(String, String)> = params.into_iter().filter(|(k, _)| k != "marker").collect();
    let encode = |pairs: &[(String, String)]| {
        pairs.iter().map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v))).collect::<Vec<_>>().join("&")
    };
    let mut body = Map::new();
    body.insert("namespaces".into(), page.iter().map(|(ns, a)| views::namespace_summary(ns, a)).collect());
    if let Some((last, _)) = page.last().filter(|_| page.len() as i64 == limit) {
        let mut next = kept.clone();
        next.push(("marker".into(), last.fields.name.clone()));
        body.insert("next".into(), Value::String(format!("/v2/metadefs/namespaces?{}", encode(&next))));
    }
    body.insert("schema".into(), "/v2/schemas/metadefs/namespaces".into());
    let first = if kept.is_empty() { String::new() } else { format!("?{}", encode(&kept)) };
    body.insert("first".into(), Value::String(format!("/v2/metadefs/namespaces{first}")));
    Ok(ok(&Value::Object(body)))
}

/// A namespace's own fields from a body (create and update): what is not given is private,
/// unprotected and `owner`'s; for a definition file (`loaded`), no visibility or protection
/// stays unset, as `glance-manage` loads them.
fn fields(m: &Map<String, Value>, owner: &str, loaded: bool) -> NamespaceFields {
    let visibility = text(m, "visibility").and_then(|v| NsVisibility::parse(&v));
    let protected = m.get("protected").and_then(Value::as_bool);
    NamespaceFields {
        name: text(m, "namespace").unwrap_or_default(),
        display_name: text(m, "display_name"),
        description: text(m, "description"),
        visibility: if loaded { visibility } else { Some(visibility.unwrap_or(NsVisibility::Private)) },
        protected: if loaded { protected } else { Some(protected.unwrap_or(false)) },
        owner: text(m, "owner").unwrap_or_else(|| owner.to_owned()),
    }
}

/// An item of an embedded collection: an object, with its `name`, and only the keys Glance's
/// model has (`known`); the others, and a missing name, are refused (Glance fails with a 500).
fn item<'a>(collection: &str, v: &'a Value, known: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let Value::Object(m) = v else { return Err(format!("{} is not of type 'object'", crate::api::pyrepr::repr(v))) };
    if let Some(unknown) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("Additional properties are not allowed in {collection} ('{unknown}' was unexpected)"));
    }
    if !m.contains_key("name") {
        return Err(format!("'name' is a required property of {collection}"));
    }
    Ok(m)
}

/// A namespace document that passed the namespace schema (a create's body, or a definition
/// file), as Glance's model reads it; why not, when its model cannot.
fn document(m: &Map<String, Value>, owner: &str, loaded: bool) -> Result<NewNamespace, String> {
    let list = |key: &str| m.get(key).and_then(Value::as_array);
    let associations = list("resource_type_associations")
        .map(|items| {
            items
                .iter()
                .map(|v| {
                    let known = ["name", "prefix", "properties_target", "created_at", "updated_at"];
                    let a = item("resource_type_associations", v, &known)?;
                    Ok(Association {
                        name: text(a, "name").unwrap_or_default(),
                        prefix: text(a, "prefix"),
                        properties_target: text(a, "properties_target"),
                        created_at: None,
                        updated_at: None,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?;
    let objects = list("objects")
        .map(|items| {
            items
                .iter()
                .map(|v| {
                    let known =
                        ["name", "description", "required", "properties", "created_at", "updated_at", "self", "schema"];
                    super::objects::parse(item("objects", v, &known)?)
                })
                .collect::<Result<Vec<Object>, String>>()
        })
        .transpose()?;
    let tags = list("tags")
        .map(|items| {
            items
                .iter()
                .map(|v| Ok(text(item("tags", v, &["name", "created_at", "updated_at"])?, "name").unwrap_or_default()))
                .collect::<Result<Vec<String>, String>>()
        })
        .transpose()?;
    let properties = m.get("properties").and_then(Value::as_object).map(properties_from_json).transpose()?;
    Ok(NewNamespace { fields: fields(m, owner, loaded), associations, properties, objects, tags })
}

/// A definition file of Glance's (`etc/metadefs/*.json`), as `glance-manage db_load_metadefs`
/// reads it: what it does not give stays unset, and its owner is `admin` unless it names one.
/// It must pass the namespace schema (Glance's loader does not check; every file it ships
/// does).
pub fn definition_file(v: &Value) -> Result<NewNamespace, String> {
    schemas::check(Entity::Namespace, v)?;
    let Value::Object(m) = v else { return Err("a definition file holds one JSON object".into()) };
    document(m, "admin", true).map_err(|why| format!("Provided object does not match schema 'namespace': {why}"))
}

/// `POST /v2/metadefs/namespaces`: 201 with what was asked for echoed, and a `Location`.
pub async fn create(ctx: &Ctx, request: Body) -> Result<Reply, Fault> {
    let m = body(ctx, request, Entity::Namespace).await?;
    let new =
        document(&m, &ctx.principal.project_id, false).map_err(|why| schemas::invalid(Entity::Namespace, &why))?;
    let name = new.fields.name.clone();
    let ns = ctx.state.store.create_namespace(&ctx.principal, new.clone()).await.map_err(|e| on(&name).fault(e))?;
    let objects = new.objects.as_ref().map(|o| Value::Array(o.iter().map(views::object_fields).collect()));
    let echo = views::namespace(
        &ns,
        Embedded {
            associations: new.associations.as_deref(),
            properties: new.properties.as_deref(),
            objects,
            tags: new.tags.as_ref().map(|t| t.iter().map(String::as_str).collect()),
        },
    );
    // As WebOb sends it: absolute, the name as it is (only what a header cannot carry escaped).
    let location = format!("{}{}", ctx.root_url(), views::namespace_path(&name));
    Ok(created_at(&echo, header_safe(&location)))
}

/// `text` with the bytes a header value cannot hold percent-encoded.
fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /v2/metadefs/namespaces/{ns}[?resource_type=…]`.
pub async fn show(ctx: &Ctx, ns: &str) -> Result<Reply, Fault> {
    let params = params(ctx);
    let contents = ctx
        .state
        .store
        .namespace(&ctx.principal, ns)
        .await
        .map_err(|e| On { missing: Missing::Show, ..on(ns) }.fault(e))?;
    let prefix = param(&params, "resource_type")
        .and_then(|rt| contents.associations.iter().find(|a| a.name == rt).and_then(|a| a.prefix.clone()));
    Ok(ok(&views::namespace_contents(&contents, prefix.as_deref())))
}

/// `PUT /v2/metadefs/namespaces/{ns}`: replaces the namespace's own fields (what the body
/// leaves out goes back to its default), ignoring any embedded collections.
pub async fn update(ctx: &Ctx, ns: &str, request: Body) -> Result<Reply, Fault> {
    let m = body(ctx, request, Entity::Namespace).await?;
    let fields = fields(&m, &ctx.principal.project_id, false);
    let updated =
        ctx.state.store.update_namespace(&ctx.principal, ns, fields).await.map_err(|e| on(ns).updating().fault(e))?;
    Ok(ok(&views::namespace(&updated, Embedded::default())))
}

/// `DELETE /v2/metadefs/namespaces/{ns}`.
pub async fn delete(ctx: &Ctx, ns: &str) -> Result<Reply, Fault> {
    ctx.state.store.delete_namespace(&ctx.principal, ns).await.map_err(|e| on(ns).fault(e))?;
    Ok(Reply::no_content())
}

/// `DELETE /v2/metadefs/namespaces/{ns}/{objects,properties,tags}`.
pub async fn delete_contents(ctx: &Ctx, ns: &str, what: Contents) -> Result<Reply, Fault> {
    ctx.state.store.delete_contents(&ctx.principal, ns, what).await.map_err(|e| on(ns).fault(e))?;
    Ok(Reply::no_content())
}
