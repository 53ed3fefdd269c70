//! The image import task (Glance's `api_image_import` flow), run in the background once
//! `POST /v2/images/{id}/import` has accepted it, below both APIs.
//!
//! The request that accepted it made the image `importing`, took the image's import lock
//! (`os_glance_import_task`, the task's id) and recorded this node's hold on the image (its
//! [`UploadLease`]), in one transaction. The task then brings the data into the target store,
//! checks it as an upload is checked, and makes the image `active`; or it fails, and the image
//! goes back to `queued` with nothing of the attempt left. Either way the task's record says
//! how it ended. A node that dies mid-import is found out by the others ([`crate::service`]):
//! the image goes back to `queued` and the task fails, visibly.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use serde_json::json;

use crate::domain::import::{ImportMethod, UriFilter};
use crate::domain::policy::Rule;
use crate::domain::task::TaskStatus;
use crate::domain::{Image, ImageStatus, Principal, Rejection, UploadLease, now};
use crate::store::data::{ByteStream, DataStore, UploadError, check_format};
use crate::store::{DynStore, StoreError};

/// The image property that locks an image for one import: the task's id.
pub const LOCK: &str = "os_glance_import_task";
/// The stores an import is still bringing the data to (sorted, comma-separated).
pub const IMPORTING_TO: &str = "os_glance_importing_to_stores";
/// The stores an import failed to bring the data to.
pub const FAILED_IMPORT: &str = "os_glance_failed_import";
/// Where Glance staged the data (hidden; imagemeta stages into the store itself).
pub const STAGE_HOST: &str = "os_glance_stage_host";

/// What the task needs from the node running it.
#[derive(Clone)]
pub struct Importer {
    pub store: DynStore,
    pub data: Arc<DataStore>,
    /// Glance's `image_size_cap`.
    pub size_cap: u64,
    /// How long a download may go without a byte.
    pub read_timeout: Duration,
    pub filter: UriFilter,
}

/// One accepted import.
#[derive(Debug, Clone)]
pub struct Job {
    pub task_id: String,
    pub image_id: String,
    pub method: ImportMethod,
    /// The store the data goes to.
    pub store: String,
    /// Whether the store names one of several (they are then listed in the `os_glance_*`
    /// properties).
    pub multi_store: bool,
    /// `web-download`'s URL (it passed the filter).
    pub uri: Option<String>,
    /// This node's hold on the image; `staging` is where new data is staged (empty when the
    /// staged data is adopted where it is).
    pub lease: UploadLease,
}

/// What the import brought: the data's place and digests.
struct Brought {
    location: String,
    size: u64,
    md5: String,
    sha512: String,
    head: Vec<u8>,
    /// Whether `location` is the staged data itself (nothing to remove after activation).
    adopted: bool,
}

/// Runs `job` to its end, recording it in its task.
pub async fn run(importer: Importer, job: Job) {
    let started = importer
        .store
        .update_task(
            &job.task_id,
            Box::new(|t| {
                if t.status == TaskStatus::Pending {
                    t.status = TaskStatus::Processing;
                }
            }),
        )
        .await;
    if let Err(e) = started {
        tracing::warn!(error = %e, task = %job.task_id, "cannot start an import task");
    }
    let outcome = import(&importer, &job).await;
    let ended = match outcome {
        Ok(size) => {
            tracing::info!(task = %job.task_id, image = %job.image_id, size, "image imported");
            importer
                .store
                .update_task(
                    &job.task_id,
                    Box::new(move |t| {
                        t.message = format!("Copied {} MiB", size >> 20);
                        t.end(Ok(json!({"image_id": t.image_id})), now());
                    }),
                )
                .await
        }
        Err(why) => {
            tracing::warn!(task = %job.task_id, image = %job.image_id, %why, "image import failed");
            abandon(&importer, &job).await;
            importer.store.update_task(&job.task_id, Box::new(move |t| t.end(Err(why), now()))).await
        }
    };
    if let Err(e) = ended {
        tracing::error!(error = %e, task = %job.task_id, "cannot record the end of an import task");
    }
}

/// Brings the data and activates the image: its size, or why not.
async fn import(importer: &Importer, job: &Job) -> Result<u64, String> {
    let system = Principal::system();
    let image =
        importer.store.get_image(&system, &job.image_id).await.map_err(|e| format!("Cannot read the image: {e}"))?;
    if image.status != ImageStatus::Importing || image.properties.get_str(LOCK) != Some(job.task_id.as_str()) {
        return Err("Task was aborted externally".into());
    }
    let brought = match job.method {
        ImportMethod::GlanceDirect => from_stage(importer, job, &image).await?,
        ImportMethod::WebDownload => download(importer, job).await?,
    };
    let activated = activate(importer, job, &image, &brought).await;
    if let Err(why) = activated {
        if !brought.adopted
            && let Some(backend) = importer.data.get(&job.store)
        {
            let _ = backend.remove(&job.image_id, Some(&brought.location)).await;
        }
        return Err(why);
    }
    if !brought.adopted && image.location.is_some() {
        // The staged data now has a copy in its store: the stage goes.
        if let Err(e) = importer.data.remove(&image).await {
            tracing::warn!(error = %e, image = %job.image_id, "cannot remove staged data; the sweep will");
        }
    }
    Ok(brought.size)
}

/// `glance-direct`: the staged data, adopted where it is when it is in the target store, else
/// copied there.
async fn from_stage(importer: &Importer, job: &Job, image: &Image) -> Result<Brought, String> {
    let staged_store = image.store.as_deref().unwrap_or(crate::store::data::FILE_STORE);
    let Some(location) = image.location.clone() else {
        return Err("The image has no staged data.".into());
    };
    let read = importer.data.read(image, None).await.map_err(|e| format!("Cannot read the staged data: {e}"))?;
    let Some(stream) = read else { return Err("The staged data is gone.".into()) };
    let expected = image.size.and_then(|s| u64::try_from(s).ok());
    if staged_store == job.store {
        let (size, md5, sha512, head) =
            crate::store::data::digest(stream, importer.size_cap).await.map_err(|e| upload_error(&e))?;
        if let Some(expected) = expected.filter(|e| *e != size) {
            return Err(format!("Task {}: Image size mismatch. Expected {expected} but got {size}", job.task_id));
        }
        return Ok(Brought { location, size, md5, sha512, head, adopted: true });
    }
    let brought = copy_into(importer, job, stream, expected).await?;
    if let Some(expected) = expected.filter(|e| *e != brought.size) {
        return Err(format!("Task {}: Image size mismatch. Expected {expected} but got {}", job.task_id, brought.size));
    }
    Ok(brought)
}

/// `web-download`: the URL's data, fetched (every redirect passing the filter again) and
/// staged into the target store.
async fn download(importer: &Importer, job: &Job) -> Result<Brought, String> {
    let uri = job.uri.as_deref().ok_or("web-download without a URI")?;
    let filter = importer.filter.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if filter.check(attempt.url().as_str()).is_some() {
            attempt.follow()
        } else {
            let refused = format!("Redirect to disallowed URL: {}", attempt.url());
            attempt.error(refused)
        }
    });
    crate::tls::install();
    let client = reqwest::Client::builder()
        .redirect(redirects)
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(importer.read_timeout)
        .build()
        .map_err(|e| format!("Cannot make an HTTP client: {e}"))?;
    let response = client.get(uri).send().await.map_err(|e| describe(&e, uri))?;
    if !response.status().is_success() {
        return Err(format!("Cannot download {uri}: HTTP {}", response.status()));
    }
    let declared = response.content_length();
    if declared.is_some_and(|n| n > importer.size_cap) {
        return Err(format!(
            "The image at {uri} is too large: larger than image_size_cap ({} bytes)",
            importer.size_cap
        ));
    }
    let stream: ByteStream = Box::pin(futures_util::StreamExt::map(response.bytes_stream(), |chunk| {
        chunk.map_err(|e| std::io::Error::other(describe(&e, "the download")))
    }));
    let brought = copy_into(importer, job, stream, declared).await?;
    if let Some(expected) = declared.filter(|n| *n != brought.size) {
        return Err(format!(
            "Task {} failed because downloaded data size {} is different from expected {expected}",
            job.task_id, brought.size
        ));
    }
    Ok(brought)
}

/// A request error with its causes (a refused connection, a redirect refused...).
fn describe(e: &reqwest::Error, what: &str) -> String {
    let mut text = format!("Cannot download {what}: {e}");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Streams `data` into the job's staging place in the target store, hashing it, and commits.
async fn copy_into(importer: &Importer, job: &Job, data: ByteStream, size: Option<u64>) -> Result<Brought, String> {
    let body = Body::from_stream(data);
    let staged = importer
        .data
        .stage(&job.image_id, &job.lease.staging, body, importer.size_cap, size)
        .await
        .map_err(|e| upload_error(&e))?;
    let (size, md5, sha512, head) =
        (staged.size, staged.md5_hex.clone(), staged.sha512_hex.clone(), staged.head.clone());
    let location = importer.data.commit(staged).await.map_err(|e| format!("Cannot store the image data: {e}"))?;
    Ok(Brought { location, size, md5, sha512, head, adopted: false })
}

fn upload_error(e: &UploadError) -> String {
    match e {
        UploadError::TooLarge => "The image is too large: larger than image_size_cap".into(),
        other => other.to_string(),
    }
}

/// The data checked against the image's formats, then the image `active` with it, if the
/// import still holds it.
async fn activate(importer: &Importer, job: &Job, image: &Image, brought: &Brought) -> Result<(), String> {
    let virtual_size =
        check_format(image.container_format.as_deref(), image.disk_format.as_deref(), &brought.head, brought.size)
            .map_err(|r| r.message)?;
    let (task, lease, store) = (job.task_id.clone(), job.lease.clone(), job.store.clone());
    let (location, size, md5, sha512) =
        (brought.location.clone(), brought.size as i64, brought.md5.clone(), brought.sha512.clone());
    let multi = job.multi_store;
    let done = importer
        .store
        .modify_image(
            &Principal::system(),
            &job.image_id,
            Rule::Bookkeeping,
            Box::new(move |i| {
                if i.status != ImageStatus::Importing
                    || i.properties.get_str(LOCK) != Some(task.as_str())
                    || i.upload.as_ref() != Some(&lease)
                {
                    return Err(Rejection::conflict("Task was aborted externally"));
                }
                i.status = ImageStatus::Active;
                i.store = Some(store.clone());
                i.location = Some(location);
                i.size = Some(size);
                i.virtual_size = virtual_size;
                i.checksum = Some(md5);
                i.os_hash_algo = Some("sha512".into());
                i.os_hash_value = Some(sha512);
                i.upload = None;
                i.properties.remove(LOCK);
                let left = store_list(i.properties.get_str(IMPORTING_TO), &[], multi.then_some(store.as_str()));
                i.properties.set(IMPORTING_TO.into(), Some(left));
                Ok(())
            }),
        )
        .await;
    match done {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => Err("Image has been deleted, aborting import.".into()),
        Err(StoreError::Rejected(r)) => Err(r.message),
        Err(e) => Err(format!("Cannot activate the image: {e}")),
    }
}

/// After a failure: the image back to `queued` without data, its lock and hold released, the
/// store listed as failed; then whatever the attempt left in the stores removed.
pub async fn abandon(importer: &Importer, job: &Job) {
    let system = Principal::system();
    let Ok(before) = importer.store.get_image(&system, &job.image_id).await else { return };
    let (task, store, multi) = (job.task_id.clone(), job.store.clone(), job.multi_store);
    let requeued = importer
        .store
        .modify_image(
            &system,
            &job.image_id,
            Rule::Bookkeeping,
            Box::new(move |i| {
                if i.properties.get_str(LOCK) != Some(task.as_str()) {
                    return Err(Rejection::conflict("the import no longer holds the image"));
                }
                requeue(i);
                let named = multi.then_some(store.as_str());
                let left = store_list(i.properties.get_str(IMPORTING_TO), &[], named);
                i.properties.set(IMPORTING_TO.into(), Some(left));
                let failed =
                    store_list(i.properties.get_str(FAILED_IMPORT), &named.into_iter().collect::<Vec<_>>(), None);
                i.properties.set(FAILED_IMPORT.into(), Some(failed));
                Ok(())
            }),
        )
        .await;
    if requeued.is_err() {
        return;
    }
    if before.location.is_some()
        && let Err(e) = importer.data.remove(&before).await
    {
        tracing::warn!(error = %e, image = %job.image_id, "cannot remove a failed import's data; the sweep will");
    }
    if let Err(e) = importer.data.remove_staging(&job.lease.staging).await {
        tracing::warn!(error = %e, image = %job.image_id, "cannot remove a failed import's partial data; the sweep will");
    }
}

/// An image whose upload, stage or import ended without its data: `queued` again, with
/// nothing of the attempt (its data, sizes, digests, hold and import lock).
pub fn requeue(i: &mut Image) {
    if matches!(i.status, ImageStatus::Saving | ImageStatus::Uploading | ImageStatus::Importing) {
        i.status = ImageStatus::Queued;
    }
    if i.status == ImageStatus::Queued {
        i.size = None;
        i.virtual_size = None;
        i.checksum = None;
        i.os_hash_algo = None;
        i.os_hash_value = None;
        i.store = None;
        i.location = None;
    }
    i.upload = None;
    i.properties.remove(LOCK);
}

/// A store list property (`a,b`) with `add` added and `remove` taken out, sorted.
pub fn store_list(current: Option<&str>, add: &[&str], remove: Option<&str>) -> String {
    let mut stores: Vec<&str> = current.unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
    stores.extend(add.iter().copied());
    stores.retain(|s| Some(*s) != remove);
    stores.sort_unstable();
    stores.dedup();
    stores.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lists_stay_sorted_and_unique() {
        assert_eq!(store_list(None, &[], None), "");
        assert_eq!(store_list(Some("b,a"), &["c", "a"], None), "a,b,c");
        assert_eq!(store_list(Some("a,b"), &[], Some("a")), "b");
        assert_eq!(store_list(Some(""), &[], Some("a")), "");
    }

    #[test]
    fn a_requeued_image_keeps_nothing_of_the_attempt() {
        let mut i = Image::new("i".into(), now());
        i.status = ImageStatus::Importing;
        i.size = Some(5);
        i.location = Some("l".into());
        i.checksum = Some("c".into());
        i.upload = Some(UploadLease { node: "n".into(), staging: "s".into() });
        i.properties.set(LOCK.into(), Some("t".into()));
        i.properties.set("kept".into(), Some("v".into()));
        requeue(&mut i);
        assert_eq!((i.status, i.size, i.location, i.checksum, i.upload), (ImageStatus::Queued, None, None, None, None));
        assert_eq!(i.properties.get(LOCK), None);
        assert_eq!(i.properties.get_str("kept"), Some("v"));
    }
}
