//! Tags (metadefs-spec §7): a namespace's tags, unique case-insensitively.

use axum::body::Body;
use serde_json::{Value, json};

use super::schemas::{self, Entity};
use super::{
    Kind, On, bad_request, body, check_visibility, created, ok, param, params, py_int, sort_dir, sort_key, text,
    truthy, views,
};
use crate::api::fault::Fault;
use crate::api::image_v2::{Ctx, Reply};
use crate::store::metadefs::{TagColumn, TagQuery};

fn on<'a>(ns: &'a str, name: &'a str) -> On<'a> {
    On::new(Kind::Tag, ns, name)
}

/// `GET …/tags`: no `limit` means all of them.
pub async fn list(ctx: &Ctx, ns: &str) -> Result<Reply, Fault> {
    let params = params(ctx);
    let limit = match param(&params, "limit") {
        None => None,
        Some(l) => {
            let n = py_int(l).ok_or_else(|| bad_request("limit param must be an integer"))?;
            if n < 0 {
                return Err(bad_request("limit param must be positive"));
            }
            Some(usize::try_from(n).unwrap_or(usize::MAX))
        }
    };
    let sort_dir = sort_dir(&params)?;
    let sort_key = sort_key(&params, &TagColumn::ALL, TagColumn::as_str, TagColumn::CreatedAt)?;
    check_visibility(&params, &["public", "private", "shared"])?;
    let marker = param(&params, "marker").map(str::to_owned);
    let query = TagQuery { limit, marker: marker.clone(), sort_key, sort_dir };
    let found = if limit == Some(0) {
        Vec::new()
    } else {
        let marker = marker.unwrap_or_default();
        ctx.state.store.tags(&ctx.principal, ns, &query).await.map_err(|e| on(ns, &marker).fault(e))?
    };
    Ok(ok(&views::tags(found.iter().map(|t| t.name.as_str()))))
}

/// `POST …/tags {"tags": [{"name": …}, …]}`: replaces the namespace's tags, or adds to them
/// with `X-Openstack-Append: true`.
pub async fn create_many(ctx: &Ctx, ns: &str, request: Body) -> Result<Reply, Fault> {
    let m = body(ctx, request, Entity::TagList).await?;
    let Some(Value::Array(items)) = m.get("tags") else {
        return Err(schemas::invalid(Entity::TagList, "'tags' is a required property"));
    };
    let names: Vec<String> = items.iter().filter_map(|t| t.as_object().and_then(|t| text(t, "name"))).collect();
    let append = truthy(ctx.header("x-openstack-append"));
    ctx.state.store.create_tags(&ctx.principal, ns, names.clone(), append).await.map_err(|e| on(ns, "").fault(e))?;
    Ok(created(&views::tags(names.iter().map(String::as_str))))
}

/// `POST …/tags/{t}` (no body).
pub async fn create(ctx: &Ctx, ns: &str, name: &str) -> Result<Reply, Fault> {
    schemas::validate(Entity::Tag, &json!({ "name": name }))?;
    let tag = ctx.state.store.create_tag(&ctx.principal, ns, name).await.map_err(|e| on(ns, name).fault(e))?;
    Ok(created(&views::tag(&tag)))
}

/// `GET …/tags/{t}`.
pub async fn show(ctx: &Ctx, ns: &str, name: &str) -> Result<Reply, Fault> {
    let tag = ctx.state.store.tag(&ctx.principal, ns, name).await.map_err(|e| on(ns, name).fault(e))?;
    Ok(ok(&views::tag(&tag)))
}

/// `PUT …/tags/{t} {"name": …}`: renames the tag.
pub async fn update(ctx: &Ctx, ns: &str, name: &str, request: Body) -> Result<Reply, Fault> {
    let m = body(ctx, request, Entity::Tag).await?;
    let new_name = text(&m, "name").unwrap_or_default();
    let tag = ctx
        .state
        .store
        .update_tag(&ctx.principal, ns, name, &new_name)
        .await
        .map_err(|e| on(ns, name).updating().fault(e))?;
    Ok(ok(&views::tag(&tag)))
}

/// `DELETE …/tags/{t}`.
pub async fn delete(ctx: &Ctx, ns: &str, name: &str) -> Result<Reply, Fault> {
    ctx.state.store.delete_tag(&ctx.principal, ns, name).await.map_err(|e| on(ns, name).fault(e))?;
    Ok(Reply::no_content())
}
