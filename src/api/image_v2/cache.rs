//! The image cache API (Glance's `cached_images` controller, v2.14): `GET /v2/cache` (this
//! node's cached and queued images), `PUT /v2/cache/{id}` (queue an image for the
//! prefetcher), `DELETE /v2/cache/{id}` (drop it from both) and `DELETE /v2/cache` (empty the
//! cache, the queue, or both, by `x-image-cache-clear-target`). Admins only (`cache_list`,
//! `cache_image`, `cache_delete`); without `--image-cache-dir` the API answers 404 after the
//! policy check, as Glance does without `image_cache_dir`.

use axum::http::{HeaderValue, StatusCode, header};
use serde_json::json;

use super::{Ctx, Reply, store_fault};
use crate::api::fault::{Fault, RETRY_AFTER};
use crate::cache::{ImageCache, QueueError};
use crate::domain::policy::Rule;
use crate::domain::{Image, ImageStatus};
use crate::store::StoreError;

/// `rule` for the caller (Glance answers a bare 403), then the cache itself.
fn enforce<'a>(ctx: &'a Ctx, rule: Rule, image: Option<&Image>) -> Result<&'a ImageCache, Fault> {
    ctx.authorize(&rule, image, || Fault::bare(StatusCode::FORBIDDEN))?;
    ctx.state
        .cache
        .as_deref()
        .ok_or_else(|| Fault::explained(StatusCode::NOT_FOUND, "Caching via API is not supported at this site."))
}

fn image_not_found(id: &str) -> Fault {
    Fault::explained(StatusCode::NOT_FOUND, format!("Image {id} not found."))
}

/// The image `id` as the caller sees it; `None` when it does not exist (for the caller).
async fn find(ctx: &Ctx, id: &str) -> Result<Option<std::sync::Arc<Image>>, Fault> {
    match crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await {
        Ok(image) => Ok(Some(image)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(store_fault(e, id)),
    }
}

/// `GET /v2/cache`.
pub fn state(ctx: &Ctx) -> Result<Reply, Fault> {
    let cache = enforce(ctx, Rule::CacheList, None)?;
    let (cached, queued) = cache.state();
    Ok(Reply::ok(&json!({ "cached_images": cached, "queued_images": queued })))
}

/// `DELETE /v2/cache`: `x-image-cache-clear-target` `cache`, `queue`, or empty (both).
pub fn clear(ctx: &Ctx) -> Result<Reply, Fault> {
    let cache = enforce(ctx, Rule::CacheDelete, None)?;
    let target = ctx.header("x-image-cache-clear-target").unwrap_or("").to_ascii_lowercase();
    let (cached, queued) = match target.as_str() {
        "" => (true, true),
        "cache" => (true, false),
        "queue" => (false, true),
        _ => {
            return Err(Fault::explained(
                StatusCode::BAD_REQUEST,
                "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.",
            ));
        }
    };
    if cached {
        cache.clear_cached();
    }
    if queued {
        cache.clear_queued();
    }
    Ok(Reply::no_content())
}

/// `PUT /v2/cache/{id}`: 202, the image queued for this node's prefetcher.
pub async fn queue(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    let image = find(ctx, id).await?.ok_or_else(|| image_not_found(id))?;
    let cache = enforce(ctx, Rule::CacheImage, Some(&image))?;
    if image.status != ImageStatus::Active {
        return Err(Fault::explained(
            StatusCode::BAD_REQUEST,
            "Only images with status active can be targeted for queueing",
        ));
    }
    match cache.queue(id) {
        Ok(()) => Ok(Reply::empty(StatusCode::ACCEPTED)),
        Err(QueueError::Full) => Err(Fault::explained(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The image cache queue holds {} images already.", crate::cache::MAX_QUEUED),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER))),
        Err(QueueError::Io(e)) => {
            tracing::error!(error = %e, image = %id, "cannot queue an image for the cache");
            Err(Fault::explained(StatusCode::SERVICE_UNAVAILABLE, "The image cache is unavailable.")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER)))
        }
    }
}

/// `DELETE /v2/cache/{id}`: 204, the image out of this node's cache and queue. An image the
/// catalogue no longer has is still removed from them.
pub async fn delete(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    let image = find(ctx, id).await?;
    if image.is_none() && !ctx.state.cache.as_deref().is_some_and(|c| c.holds(id)) {
        return Err(image_not_found(id));
    }
    let cache = enforce(ctx, Rule::CacheDelete, image.as_deref())?;
    cache.remove(id);
    Ok(Reply::no_content())
}
