//! Properties (metadefs-spec §6): a namespace's own property definitions.

use axum::body::Body;
use serde_json::{Map, Value};

use super::schemas::{self, Entity};
use super::{Kind, On, body, created, ok, param, params, text, views};
use crate::api::fault::Fault;
use crate::api::image_v2::{Ctx, Reply};
use crate::domain::metadefs::PropertyDef;

fn on<'a>(ns: &'a str, name: &'a str) -> On<'a> {
    On::new(Kind::Property, ns, name)
}

/// A property's name and definition from a body that passed the property schema. The name
/// stays inside the definition, as Glance stores it.
fn parse(m: &Map<String, Value>) -> Result<(String, PropertyDef), Fault> {
    let def = PropertyDef::from_json(m).map_err(|why| schemas::invalid(Entity::Property, &why))?;
    Ok((text(m, "name").unwrap_or_default(), def))
}

/// `GET …/properties`.
pub async fn list(ctx: &Ctx, ns: &str) -> Result<Reply, Fault> {
    let all = ctx.state.store.properties(&ctx.principal, ns).await.map_err(|e| on(ns, "").fault(e))?;
    Ok(ok(&views::properties(&all)))
}

/// `POST …/properties`.
pub async fn create(ctx: &Ctx, ns: &str, request: Body) -> Result<Reply, Fault> {
    let (name, def) = parse(&body(ctx, request, Entity::Property).await?)?;
    ctx.state
        .store
        .create_property(&ctx.principal, ns, &name, def.clone())
        .await
        .map_err(|e| on(ns, &name).fault(e))?;
    Ok(created(&views::property(&name, &def)))
}

/// `GET …/properties/{p}[?resource_type=…]`: for a resource type, `p` carries its
/// association's prefix; the answer names the property without it.
pub async fn show(ctx: &Ctx, ns: &str, name: &str) -> Result<Reply, Fault> {
    let params = params(ctx);
    let resource_type = param(&params, "resource_type");
    let found = ctx.state.store.property(&ctx.principal, ns, name, resource_type).await;
    let (own, def) = found.map_err(|e| match e {
        // The association's texts name the resource type.
        crate::store::metadefs::MetadefError::ResourceTypeNotFound
        | crate::store::metadefs::MetadefError::AssociationNotFound => on(ns, resource_type.unwrap_or("")).fault(e),
        crate::store::metadefs::MetadefError::PropertyNotFound(own) => {
            on(ns, &own).fault(crate::store::metadefs::MetadefError::PropertyNotFound(own.clone()))
        }
        e => on(ns, name).fault(e),
    })?;
    Ok(ok(&views::property(&own, &def)))
}

/// `PUT …/properties/{p}`: replaces (and may rename) the property.
pub async fn update(ctx: &Ctx, ns: &str, name: &str, request: Body) -> Result<Reply, Fault> {
    let (new_name, def) = parse(&body(ctx, request, Entity::Property).await?)?;
    ctx.state
        .store
        .update_property(&ctx.principal, ns, name, &new_name, def.clone())
        .await
        .map_err(|e| on(ns, name).updating().fault(e))?;
    Ok(ok(&views::property(&new_name, &def)))
}

/// `DELETE …/properties/{p}`.
pub async fn delete(ctx: &Ctx, ns: &str, name: &str) -> Result<Reply, Fault> {
    ctx.state.store.delete_property(&ctx.principal, ns, name).await.map_err(|e| on(ns, name).fault(e))?;
    Ok(Reply::no_content())
}
