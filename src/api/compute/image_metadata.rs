//! The six image-metadata actions (nova-images §3).

use super::schemas;
use super::views;
use super::{Ctx, Reply};
use crate::api::fault::Fault;
use crate::domain::Properties;
use crate::domain::metadata::{MetadataChange, MetadataKey, MetadataValue};
use crate::store::StoreError;

/// How a metadata action reports a store failure (§3, §5.2).
fn fault(e: StoreError, image_id: &str) -> Fault {
    match e {
        StoreError::NotFound => Fault::not_found("Image not found."),
        StoreError::Forbidden => Fault::forbidden(format!("Not authorized for image {image_id}.")),
        StoreError::QuotaExceeded => Fault::forbidden("Image metadata limit exceeded"),
        StoreError::KeyNotFound => Fault::not_found("Invalid metadata key"),
        other => Fault::store(&other, true),
    }
}

async fn change(ctx: &Ctx<'_>, id: &str, change: MetadataChange) -> Result<Properties, Fault> {
    let quota = ctx.state.settings.metadata_quota;
    ctx.state.store.change_metadata(&ctx.principal, id, change, quota).await.map_err(|e| fault(e, id))
}

/// `GET /images/{id}/metadata`. Query parameters are ignored (§3.1 Rec).
pub async fn index(ctx: &Ctx<'_>, id: &str) -> Result<Reply, Fault> {
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| fault(e, id))?;
    // The body depends on the image alone: rendered once per cached copy.
    let render = || -> bytes::Bytes {
        crate::api::json::to_vec(&views::MetadataEnvelope { metadata: views::MetadataView(&image.properties) }).into()
    };
    let body = crate::api::rendered::of(&image).map_or_else(render, |r| r.compute_metadata.get_or_init(render).clone());
    Ok(Reply::with_body(body))
}

/// `GET /images/{id}/metadata/{key}`: a missing key is WebOb's bare not-found text.
pub async fn show(ctx: &Ctx<'_>, id: &str, key: &str) -> Result<Reply, Fault> {
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| fault(e, id))?;
    let (key, value) = image.properties.iter().find(|(k, _)| *k == key).ok_or_else(Fault::resource_not_found)?;
    Ok(Reply::ok(views::MetaEnvelope { meta: views::MetaItem(key, value) }))
}

/// `POST /images/{id}/metadata`: merge, answer the whole resulting set.
pub async fn create(ctx: &Ctx<'_>, id: &str) -> Result<Reply, Fault> {
    let items = schemas::metadata_body(ctx.body.as_ref(), ctx.strictness)?;
    let all = change(ctx, id, MetadataChange::Merge(items)).await?;
    Ok(Reply::ok(views::MetadataEnvelope { metadata: views::MetadataView(&all) }))
}

/// `PUT /images/{id}/metadata`: replace everything, echo the request's set.
pub async fn update_all(ctx: &Ctx<'_>, id: &str) -> Result<Reply, Fault> {
    let items = schemas::metadata_body(ctx.body.as_ref(), ctx.strictness)?;
    let echo = crate::api::json::to_vec(&EchoEnvelope { metadata: Echo(&items) });
    change(ctx, id, MetadataChange::Replace(items)).await?;
    Ok(Reply::with_body(echo.into()))
}

/// `PUT /images/{id}/metadata/{key}`: the URI/body mismatch is checked before the image is
/// looked up (§3.5); echoes the item.
pub async fn update(ctx: &Ctx<'_>, id: &str, key: &str) -> Result<Reply, Fault> {
    let (k, v) = schemas::meta_body(ctx.body.as_ref(), ctx.strictness)?;
    if k.as_str() != key {
        return Err(Fault::bad_request("Request body and URI mismatch"));
    }
    // The request's item as sent (a `mappings` value stays a string here).
    let item = [(k, v)];
    let echo = crate::api::json::to_vec(&MetaEcho { meta: Echo(&item) });
    let [(k, v)] = item;
    change(ctx, id, MetadataChange::Set(k, v)).await?;
    Ok(Reply::with_body(echo.into()))
}

/// `DELETE /images/{id}/metadata/{key}`: 204, or 404 "Invalid metadata key".
pub async fn delete(ctx: &Ctx<'_>, id: &str, key: &str) -> Result<Reply, Fault> {
    change(ctx, id, MetadataChange::Delete(key.to_owned())).await?;
    Ok(Reply::no_content())
}

#[derive(serde::Serialize)]
struct EchoEnvelope<'a> {
    metadata: Echo<'a>,
}

#[derive(serde::Serialize)]
struct MetaEcho<'a> {
    meta: Echo<'a>,
}

/// The request's items as a JSON object, in request order, values as sent (the echo of a
/// replace or an item update).
struct Echo<'a>(&'a [(MetadataKey, MetadataValue)]);

impl serde::Serialize for Echo<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k.as_str(), v.as_str())?;
        }
        map.end()
    }
}
