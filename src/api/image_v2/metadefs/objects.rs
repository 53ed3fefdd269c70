//! Objects (metadefs-spec §5): named groups of property definitions in a namespace.

use axum::body::Body;
use serde_json::{Map, Value};

use super::schemas::{self, Entity};
use super::{Kind, On, bad_request, body, check_visibility, created, ok, param, params, py_int, sort_dir, text};
use crate::api::fault::Fault;
use crate::api::image_v2::{Ctx, Reply};
use crate::domain::metadefs::{Object, properties_from_json};

use super::views;

/// An object from a body that passed the object schema (or a namespace's, for its objects):
/// what it leaves out stays out of the answer; why not, when Glance's model cannot read it.
pub fn parse(m: &Map<String, Value>) -> Result<Object, String> {
    let required = m
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    let properties = match m.get("properties").and_then(Value::as_object) {
        None => None,
        Some(p) => Some(properties_from_json(p)?),
    };
    Ok(Object {
        name: text(m, "name").unwrap_or_default(),
        description: text(m, "description"),
        required,
        properties,
        created_at: None,
        updated_at: None,
    })
}

/// `GET …/objects`: every object; the paging parameters are checked, and then unused (as in
/// Glance).
pub async fn list(ctx: &Ctx, ns: &str) -> Result<Reply, Fault> {
    let params = params(ctx);
    if let Some(limit) = param(&params, "limit") {
        let n = py_int(limit).ok_or_else(|| bad_request("limit param must be an integer"))?;
        if n <= 0 {
            return Err(bad_request("limit param must be positive"));
        }
    }
    sort_dir(&params)?;
    check_visibility(&params, &["public", "private", "shared"])?;
    let all = ctx.state.store.objects(&ctx.principal, ns).await.map_err(|e| On::new(Kind::Object, ns, "").fault(e))?;
    Ok(ok(&views::objects(ns, &all)))
}

/// `POST …/objects`: each property is also checked on its own (no other keys allowed).
pub async fn create(ctx: &Ctx, ns: &str, request: Body) -> Result<Reply, Fault> {
    let m = body(ctx, request, Entity::Object).await?;
    for def in m.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.values()) {
        schemas::validate(Entity::ObjectProperty, def)?;
    }
    let object = parse(&m).map_err(|why| schemas::invalid(Entity::Object, &why))?;
    let name = object.name.clone();
    let made = ctx
        .state
        .store
        .create_object(&ctx.principal, ns, object)
        .await
        .map_err(|e| On::new(Kind::Object, ns, &name).fault(e))?;
    Ok(created(&views::object(ns, &made)))
}

/// `GET …/objects/{o}`.
pub async fn show(ctx: &Ctx, ns: &str, name: &str) -> Result<Reply, Fault> {
    let o =
        ctx.state.store.object(&ctx.principal, ns, name).await.map_err(|e| On::new(Kind::Object, ns, name).fault(e))?;
    Ok(ok(&views::object(ns, &o)))
}

/// `PUT …/objects/{o}`: replaces (and may rename) the object.
pub async fn update(ctx: &Ctx, ns: &str, name: &str, request: Body) -> Result<Reply, Fault> {
    let m = body(ctx, request, Entity::Object).await?;
    let object = parse(&m).map_err(|why| schemas::invalid(Entity::Object, &why))?;
    let o = ctx
        .state
        .store
        .update_object(&ctx.principal, ns, name, object)
        .await
        .map_err(|e| On::new(Kind::Object, ns, name).updating().fault(e))?;
    Ok(ok(&views::object(ns, &o)))
}

/// `DELETE …/objects/{o}`.
pub async fn delete(ctx: &Ctx, ns: &str, name: &str) -> Result<Reply, Fault> {
    ctx.state
        .store
        .delete_object(&ctx.principal, ns, name)
        .await
        .map_err(|e| On::new(Kind::Object, ns, name).fault(e))?;
    Ok(Reply::no_content())
}
