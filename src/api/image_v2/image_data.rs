//! Image data: `PUT` and `GET /v2/images/{id}/file` (glance-v2 §8).
//!
//! An upload moves the image `queued → saving` in one transaction, streams the body to a
//! temporary file while hashing it, checks size and format, moves the file into place, and
//! makes the image `active` in a second transaction. Any failure, a client disconnect
//! included, discards the file and puts the image back to `queued`. The work runs in its own
//! task, so it finishes (and cleans up) even when the connection is gone.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{Ctx, Reply, modify, not_authorized, rejection, store_fault};
use crate::api::AppState;
use crate::api::fault::Fault;
use crate::domain::policy::Rule;
use crate::domain::{ImageStatus, Principal, Rejection, RejectionKind, UploadLease};
use crate::store::StoreError;
use crate::store::data::{DataStore, Staged, UploadError, check_format};

/// `PUT /v2/images/{id}/file`.
pub async fn upload(ctx: &Ctx, id: &str, body: Body) -> Result<Reply, Fault> {
    let media = ctx.media_type();
    if media != "application/octet-stream" {
        return Err(Fault::explained(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("The request media type {media} is not supported by this server."),
        ));
    }
    let declared = match ctx.header("x-openstack-image-size").or_else(|| ctx.header("content-length")) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| Fault::explained(StatusCode::BAD_REQUEST, format!("Invalid image size: {v}")))?,
        ),
    };

    // The store: `X-Image-Meta-Store` with several stores (Glance ignores it with one).
    let data = &ctx.state.data;
    let store = match ctx.header("x-image-meta-store").map(str::trim) {
        Some(name) if data.is_multi() => {
            if data.get(name).is_none() {
                return Err(Fault::explained(
                    StatusCode::BAD_REQUEST,
                    format!("Store for identifier {name} not found"),
                ));
            }
            name.to_owned()
        }
        _ => data.default_name().to_owned(),
    };
    // queued → saving, or why not; this node holds the upload, staged where the hold says.
    let image_id = id.to_owned();
    let lease = UploadLease { node: ctx.state.node.id.clone(), staging: DataStore::new_staging(&store, id) };
    let hold = lease.clone();
    modify(
        ctx,
        id,
        Rule::UploadImage,
        format!("Not allowed to upload image data for image {image_id}"),
        move |image| {
            if image.status != ImageStatus::Queued {
                return Err(Rejection::conflict(format!(
                    "Image status transition from {} to saving is not allowed",
                    image.status.as_str()
                )));
            }
            let missing: Vec<&str> =
                [("container_format", &image.container_format), ("disk_format", &image.disk_format)]
                    .into_iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k)
                    .collect();
            if !missing.is_empty() {
                return Err(Rejection::invalid(format!(
                    "Property(ies) {} must be set prior to saving data.",
                    missing.join(", ")
                )));
            }
            image.status = ImageStatus::Saving;
            image.upload = Some(hold);
            Ok(())
        },
    )
    .await?;

    let task =
        ctx.state.tasks.spawn(receive(ctx.state.clone(), ctx.principal.clone(), id.to_owned(), lease, body, declared));
    match task.await {
        Ok(result) => result.map(|()| Reply::no_content()),
        Err(e) => Err(Fault::explained(StatusCode::INTERNAL_SERVER_ERROR, format!("upload task failed: {e}"))),
    }
}

/// Streams, checks and activates; on any failure puts the image back to `queued`.
async fn receive(
    state: AppState,
    who: Arc<Principal>,
    id: String,
    lease: UploadLease,
    body: Body,
    declared: Option<u64>,
) -> Result<(), Fault> {
    let cap = state.settings.image_size_cap;
    let staged = match state.data.stage(&id, &lease.staging, body, cap, declared).await {
        Ok(s) => s,
        Err(e) => {
            requeue(&state, &who, &id, &lease).await;
            return Err(upload_fault(e, cap, &id));
        }
    };
    match activate(&state, &who, &id, &lease, staged, declared).await {
        Ok(()) => Ok(()),
        Err(fault) => {
            requeue(&state, &who, &id, &lease).await;
            Err(fault)
        }
    }
}

/// Checks the staged data and makes it the image's: file into place, then `saving → active`.
/// The staged data is dropped on any failure before it is committed.
async fn activate(
    state: &AppState,
    who: &Principal,
    id: &str,
    lease: &UploadLease,
    staged: Staged,
    declared: Option<u64>,
) -> Result<(), Fault> {
    let checked = async {
        if let Some(expected) = declared.filter(|n| *n != staged.size) {
            return Err(Fault::explained(
                StatusCode::BAD_REQUEST,
                format!("Size of uploaded data ({}) does not match the declared size ({expected}).", staged.size),
            ));
        }
        let image = crate::store::get_image(&*state.store, who, id).await.map_err(|e| store_fault(e, id))?;
        check_format(image.container_format.as_deref(), image.disk_format.as_deref(), &staged.head, staged.size)
            .map_err(rejection)
    }
    .await;
    let virtual_size = match checked {
        Ok(v) => v,
        Err(fault) => {
            state.data.discard(staged).await;
            return Err(fault);
        }
    };
    let (size, md5, sha) = (staged.size as i64, staged.md5_hex.clone(), staged.sha512_hex.clone());
    let store = staged.store.clone();
    let location = state.data.commit(staged).await.map_err(|e| {
        tracing::error!(error = %e, image = %id, "cannot commit image data");
        data_unavailable()
    })?;
    let held = lease.clone();
    let (kept_store, kept_location) = (store.clone(), location.clone());
    let done = state
        .store
        .modify_image(
            who,
            id,
            Rule::Bookkeeping,
            Box::new(move |image| {
                // Still this upload's: not requeued meanwhile (this node taken for dead).
                if image.status != ImageStatus::Saving || image.upload.as_ref() != Some(&held) {
                    return Err(Rejection::new(RejectionKind::Gone, "The image changed during the upload."));
                }
                image.upload = None;
                image.store = Some(kept_store);
                image.location = Some(kept_location);
                image.status = ImageStatus::Active;
                image.size = Some(size);
                image.virtual_size = virtual_size;
                image.checksum = Some(md5);
                image.os_hash_algo = Some("sha512".into());
                image.os_hash_value = Some(sha);
                Ok(())
            }),
        )
        .await;
    if let Err(e) = done {
        // Deleted or changed meanwhile: the data belongs to nobody.
        if let Some(backend) = state.data.get(&store) {
            let _ = backend.remove(id, Some(&location)).await;
        }
        return Err(match e {
            StoreError::NotFound => Fault::explained(StatusCode::GONE, "The image was deleted during the upload."),
            other => store_fault(other, id),
        });
    }
    Ok(())
}

/// A failed upload (or stage) as Glance answers it.
pub(super) fn upload_fault(e: UploadError, cap: u64, id: &str) -> Fault {
    match e {
        UploadError::TooLarge => Fault::explained(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The incoming image is too large: larger than image_size_cap ({cap} bytes)"),
        )
        // The rest of the body is left unread: the connection cannot be reused.
        .with_header(header::CONNECTION, HeaderValue::from_static("close")),
        UploadError::Full => {
            let message = format!("Image storage media is full: {e}");
            tracing::error!(image = %id, "{message}");
            Fault::explained(StatusCode::PAYLOAD_TOO_LARGE, message)
                .with_header(header::CONNECTION, HeaderValue::from_static("close"))
        }
        UploadError::Interrupted(why) => {
            tracing::info!(image = %id, %why, "upload interrupted; image back to queued");
            Fault::explained(StatusCode::BAD_REQUEST, "The upload was interrupted.")
        }
        UploadError::Io(e) => {
            tracing::error!(error = %e, image = %id, "cannot store image data");
            data_unavailable()
        }
    }
}

/// Back to `queued` after a failed upload or stage, sizes cleared, hold released (when it is
/// still this upload's).
pub(super) async fn requeue(state: &AppState, who: &Principal, id: &str, lease: &UploadLease) {
    let held = lease.clone();
    let result = state
        .store
        .modify_image(
            who,
            id,
            Rule::Bookkeeping,
            Box::new(move |image| {
                if image.upload.as_ref() == Some(&held) {
                    crate::import::requeue(image);
                }
                Ok(())
            }),
        )
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, image = %id, "cannot put the image back to queued");
    }
}

/// `GET /v2/images/{id}/file`, with single byte ranges.
pub async fn download(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    let image = crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| store_fault(e, id))?;
    if image.status == ImageStatus::Deactivated {
        ctx.authorize(&Rule::DownloadDeactivated, Some(&image), || {
            Fault::explained(
                StatusCode::FORBIDDEN,
                "The requested image has been deactivated. Image data download is forbidden.",
            )
        })?;
    }
    ctx.authorize(&Rule::DownloadImage, Some(&image), || not_authorized(&Rule::DownloadImage))?;
    let has_data = matches!(image.status, ImageStatus::Active | ImageStatus::Deactivated);
    let Some(size) = image.size.filter(|_| has_data) else {
        return Ok(Reply::no_content());
    };
    let size = size as u64;
    let range = match ctx.header("range") {
        Some(r) => Some(parse_range(r, size)?),
        None => None,
    };
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    let wanted = range.filter(|_| size > 0);
    let read = crate::service::read_data(&ctx.state.data, ctx.state.cache.as_ref(), &image, wanted).await;
    let Some(stream) = read.map_err(|e| data_fault(e, id))? else {
        return Ok(Reply::no_content());
    };
    let body = Body::from_stream(stream);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(md5) = image.checksum.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert("content-md5", md5);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {}-{}/{size}", start, start + len - 1);
        headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii"));
    }
    Ok(Reply::Data { status, body, headers })
}

fn data_fault(e: std::io::Error, id: &str) -> Fault {
    tracing::error!(error = %e, image = %id, "cannot read image data");
    data_unavailable()
}

/// The image data store failed (not for lack of room): 503, retry later.
pub(super) fn data_unavailable() -> Fault {
    Fault::explained(StatusCode::SERVICE_UNAVAILABLE, "The image data store is unavailable.")
        .with_header(header::RETRY_AFTER, HeaderValue::from_static(crate::api::fault::RETRY_AFTER))
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`: the inclusive range, 400 for several
/// ranges, 416 for anything unsatisfiable.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), Fault> {
    let unsatisfiable = || {
        Fault::bare(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"))
    };
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(unsatisfiable)?;
    if spec.contains(',') {
        return Err(Fault::explained(StatusCode::BAD_REQUEST, "Multiple ranges are not supported."));
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| unsatisfiable());
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n = num(n)?;
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (num(a)?, size.saturating_sub(1)),
        (a, b) => (num(a)?, num(b)?.min(size.saturating_sub(1))),
    };
    if start >= size || start > end {
        return Err(unsatisfiable());
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-4", 10).unwrap(), (0, 4));
        assert_eq!(parse_range("bytes=-3", 10).unwrap(), (7, 9));
        assert_eq!(parse_range("bytes=5-", 10).unwrap(), (5, 9));
        assert_eq!(parse_range("bytes=5-100", 10).unwrap(), (5, 9));
        assert_eq!(parse_range("bytes=10-", 10).unwrap_err().status().as_u16(), 416);
        assert_eq!(parse_range("bytes=0-1,3-4", 10).unwrap_err().status().as_u16(), 400);
        assert_eq!(parse_range("pages=1", 10).unwrap_err().status().as_u16(), 416);
    }
}
