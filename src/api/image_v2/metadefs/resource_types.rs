//! Resource types and a namespace's associations with them (metadefs-spec §8).

use axum::body::Body;

use super::schemas::Entity;
use super::{Kind, On, body, created, ok, text, views};
use crate::api::fault::Fault;
use crate::api::image_v2::{Ctx, Reply};
use crate::domain::metadefs::Association;

fn on<'a>(ns: &'a str, name: &'a str) -> On<'a> {
    On::new(Kind::Association, ns, name)
}

/// `GET /v2/metadefs/resource_types`: every resource type.
pub async fn list(ctx: &Ctx) -> Result<Reply, Fault> {
    let all = ctx.state.store.resource_types(&ctx.principal).await.map_err(|e| on("", "").fault(e))?;
    Ok(ok(&views::resource_types(&all)))
}

/// `GET …/{ns}/resource_types`.
pub async fn list_associations(ctx: &Ctx, ns: &str) -> Result<Reply, Fault> {
    let all = ctx.state.store.associations(&ctx.principal, ns).await.map_err(|e| on(ns, "").fault(e))?;
    Ok(ok(&views::associations(&all)))
}

/// `POST …/{ns}/resource_types {"name", "prefix"?, "properties_target"?}`: a new resource type
/// name creates the type.
pub async fn create_association(ctx: &Ctx, ns: &str, request: Body) -> Result<Reply, Fault> {
    let m = body(ctx, request, Entity::Association).await?;
    let association = Association {
        name: text(&m, "name").unwrap_or_default(),
        prefix: text(&m, "prefix"),
        properties_target: text(&m, "properties_target"),
        created_at: None,
        updated_at: None,
    };
    let name = association.name.clone();
    let made = ctx
        .state
        .store
        .create_association(&ctx.principal, ns, association)
        .await
        .map_err(|e| on(ns, &name).fault(e))?;
    Ok(created(&views::association(&made)))
}

/// `DELETE …/{ns}/resource_types/{rt}`.
pub async fn delete_association(ctx: &Ctx, ns: &str, rt: &str) -> Result<Reply, Fault> {
    ctx.state.store.delete_association(&ctx.principal, ns, rt).await.map_err(|e| on(ns, rt).fault(e))?;
    Ok(Reply::no_content())
}
