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
use crate::domain::{Image, ImageStatus, Principal, Rejection, Replica, UploadLease, now};
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
    /// Where `glance-download` finds the other Glance (the caller's service catalog).
    pub auth: Arc<dyn crate::auth::Authenticator>,
}

/// `glance-download`'s source: an image of the Glance in `region` (its `interface` endpoint
/// in the caller's catalog), reached with the caller's token.
#[derive(Clone)]
pub struct RemoteImage {
    pub image_id: String,
    pub region: String,
    pub interface: String,
    pub token: String,
}

impl std::fmt::Debug for RemoteImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("RemoteImage")
            .field("image_id", &self.image_id)
            .field("region", &self.region)
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

/// One accepted import.
#[derive(Debug, Clone)]
pub struct Job {
    pub task_id: String,
    pub image_id: String,
    pub method: ImportMethod,
    /// The stores the data goes to, in order (the one store, without several).
    pub stores: Vec<String>,
    /// Whether the stores are named among several (they are then listed in the `os_glance_*`
    /// properties).
    pub multi_store: bool,
    /// Whether one store failing fails the import (Glance's `all_stores_must_succeed`); if
    /// not, the import succeeds with the stores that did.
    pub all_stores_must_succeed: bool,
    /// `web-download`'s URL (it passed the filter).
    pub uri: Option<String>,
    /// `glance-download`'s source.
    pub remote: Option<RemoteImage>,
    /// This node's hold on the image; `staging` is where new data is staged (empty when the
    /// staged data is adopted where it is).
    pub lease: UploadLease,
}

impl Job {
    /// The store lists' name for `store` (none without several stores).
    fn named<'a>(&self, store: &'a str) -> Option<&'a str> {
        self.multi_store.then_some(store)
    }

    /// The stores as the store lists name them (none without several stores).
    fn named_stores(&self) -> Vec<String> {
        if self.multi_store { self.stores.clone() } else { Vec::new() }
    }
}

/// What the import brought into one store: the data's place and digests.
struct Brought {
    store: String,
    location: String,
    size: u64,
    md5: String,
    sha512: String,
    head: Vec<u8>,
    /// Whether `location` is the staged data itself (nothing to remove after activation).
    adopted: bool,
}

/// How far an import got: what it left in the stores, and its hold as it stands.
pub struct Progress {
    brought: Vec<Brought>,
    lease: UploadLease,
    /// The store whose failure failed the import.
    failed: Option<String>,
    /// What `glance-download` changed in the image before its data came (the formats, and
    /// each property it set with the value it had), to put back if the import fails.
    revert: Option<Revert>,
}

struct Revert {
    container_format: Option<String>,
    disk_format: Option<String>,
    properties: Vec<(String, Option<Option<String>>)>,
}

impl Progress {
    /// Nothing done yet under `lease`.
    pub fn new(lease: UploadLease) -> Progress {
        Progress { brought: Vec::new(), lease, failed: None, revert: None }
    }
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
    let mut progress = Progress::new(job.lease.clone());
    let outcome = import(&importer, &job, &mut progress).await;
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
            abandon(&importer, &job, &progress).await;
            importer.store.update_task(&job.task_id, Box::new(move |t| t.end(Err(why), now()))).await
        }
    };
    if let Err(e) = ended {
        tracing::error!(error = %e, task = %job.task_id, "cannot record the end of an import task");
    }
}

/// Brings the data into each store in turn and activates the image with them (or, for
/// `copy-image`, adds them to it): its size, or why not.
async fn import(importer: &Importer, job: &Job, progress: &mut Progress) -> Result<u64, String> {
    let system = Principal::system();
    let image =
        importer.store.get_image(&system, &job.image_id).await.map_err(|e| format!("Cannot read the image: {e}"))?;
    let copying = job.method == ImportMethod::CopyImage;
    let expected = if copying { ImageStatus::Active } else { ImageStatus::Importing };
    if image.status != expected || image.properties.get_str(LOCK) != Some(job.task_id.as_str()) {
        return Err("Task was aborted externally".into());
    }
    // glance-download: the other Glance's image first, its formats and properties taken.
    let (image, remote_file) = match &job.remote {
        Some(remote) => {
            let (image, file) = remote_metadata(importer, job, &image, remote, progress).await?;
            (std::sync::Arc::new(image), Some(file))
        }
        None => (image, None),
    };
    for (n, store) in job.stores.iter().enumerate() {
        if n > 0 || copying {
            restage(importer, job, progress, store).await?;
        }
        let attempt = match progress.brought.first() {
            _ if copying => copy_from(importer, progress, store, &image, Source::Image(&image)).await,
            Some(first) => {
                let source = Source::Store { store: first.store.clone(), location: first.location.clone() };
                copy_from(importer, progress, store, &image, source).await
            }
            None => match (job.method, &remote_file) {
                (ImportMethod::GlanceDirect, _) => from_stage(importer, job, progress, store, &image).await,
                (_, Some((url, size))) => {
                    let token = job.remote.as_ref().map(|r| r.token.as_str());
                    let fetched = download(importer, job, progress, store, url, token, false).await;
                    fetched.and_then(|brought| match size {
                        Some(size) if *size != brought.size => Err(format!(
                            "Task {}: Image size mismatch. Expected {size} but got {}",
                            job.task_id, brought.size
                        )),
                        _ => Ok(brought),
                    })
                }
                _ => {
                    let uri = job.uri.as_deref().ok_or("web-download without a URI")?;
                    download(importer, job, progress, store, uri, None, true).await
                }
            },
        };
        match attempt {
            Ok(brought) => {
                progress.brought.push(brought);
                note_store(importer, job, store, false).await;
            }
            Err(why) if job.all_stores_must_succeed => {
                progress.failed = job.named(store).map(str::to_owned);
                return Err(why);
            }
            Err(why) => {
                tracing::warn!(task = %job.task_id, image = %job.image_id, store, %why, "an import to one store failed; the others go on");
                note_store(importer, job, store, true).await;
            }
        }
    }
    if progress.brought.is_empty() {
        return Err("None of the uploads finished!".into());
    }
    activate(importer, job, &image, progress).await?;
    let staged_apart = !copying && !progress.brought.iter().any(|b| b.adopted);
    if staged_apart && image.location.is_some() {
        // The staged data now has its copies in the stores: the stage goes.
        if let Err(e) = importer.data.remove(&image).await {
            tracing::warn!(error = %e, image = %job.image_id, "cannot remove staged data; the sweep will");
        }
    }
    Ok(progress.brought[0].size)
}

/// Records a new staging place in `store` in the import's hold, before anything is written
/// there (so that a dead node's partial data is found and removed).
async fn restage(importer: &Importer, job: &Job, progress: &mut Progress, store: &str) -> Result<(), String> {
    let old = progress.lease.clone();
    let new = UploadLease { node: old.node.clone(), staging: DataStore::new_staging(store, &job.image_id) };
    if old.staging == new.staging {
        return Ok(());
    }
    let next = new.clone();
    change_held(importer, job, None, Some(old), move |i| i.upload = Some(next))
        .await
        .map_err(|e| task_error(e, "record the import's progress"))?;
    // The previous staging place is left as it is: committed (in an object store the
    // committed object may keep the staging name: removing it would remove the copy), or
    // aborted by the failed copy (the sweep takes anything left).
    progress.lease = new;
    Ok(())
}

/// One store done (or, with `failed`, given up): out of the stores still to import to, and
/// into the failed ones. Best effort: the end of the import sets both lists again.
async fn note_store(importer: &Importer, job: &Job, store: &str, failed: bool) {
    let Some(named) = job.named(store).map(str::to_owned) else { return };
    let noted = change_held(importer, job, None, None, move |i| {
        edit_store_list(i, IMPORTING_TO, &[], &[&named]);
        if failed {
            edit_store_list(i, FAILED_IMPORT, &[&named], &[]);
        }
    })
    .await;
    if let Err(e) = noted {
        tracing::debug!(error = %e, image = %job.image_id, "cannot record an import's progress");
    }
}

/// Where a copy reads from: the image's data as it is served, or one store's copy.
enum Source<'a> {
    Image(&'a Image),
    Store { store: String, location: String },
}

/// A copy of data already in a store into `store`, checked against the image's (or the first
/// store's) size and digests.
async fn copy_from(
    importer: &Importer,
    progress: &Progress,
    store: &str,
    image: &Image,
    source: Source<'_>,
) -> Result<Brought, String> {
    let (read, size, md5, sha512) = match &source {
        Source::Image(image) => (
            importer.data.read(image, None).await,
            image.size.and_then(|s| u64::try_from(s).ok()),
            image.checksum.clone(),
            image.os_hash_value.clone(),
        ),
        Source::Store { store, location } => {
            let first = &progress.brought[0];
            let read = match importer.data.get(store) {
                Some(backend) => backend.read(&image.id, Some(location), None).await,
                None => Err(std::io::Error::other(format!("store {store} is not configured"))),
            };
            (read, Some(first.size), Some(first.md5.clone()), Some(first.sha512.clone()))
        }
    };
    let stream = match read {
        Ok(Some(stream)) => stream,
        Ok(None) => return Err("The image's data is gone.".into()),
        Err(e) => return Err(format!("Cannot read the image's data: {e}")),
    };
    let brought = copy_into(importer, &progress.lease.staging, &image.id, store, stream, size).await?;
    let matches = size.is_none_or(|s| s == brought.size)
        && md5.as_ref().is_none_or(|m| *m == brought.md5)
        && sha512.as_ref().is_none_or(|h| *h == brought.sha512);
    if !matches {
        remove_brought(importer, &image.id, &brought).await;
        return Err(format!("The copy of the image's data in store {store} does not match its size and checksums"));
    }
    Ok(brought)
}

/// `glance-direct`: the staged data, adopted where it is when it is in `store`, else copied
/// there.
async fn from_stage(
    importer: &Importer,
    job: &Job,
    progress: &Progress,
    store: &str,
    image: &Image,
) -> Result<Brought, String> {
    let staged_store = image.store.as_deref().unwrap_or(crate::store::data::FILE_STORE);
    let Some(location) = image.location.clone() else {
        return Err("The image has no staged data.".into());
    };
    let read = importer.data.read(image, None).await.map_err(|e| format!("Cannot read the staged data: {e}"))?;
    let Some(stream) = read else { return Err("The staged data is gone.".into()) };
    let expected = image.size.and_then(|s| u64::try_from(s).ok());
    if staged_store == store && progress.lease.staging.is_empty() {
        let (size, md5, sha512, head) =
            crate::store::data::digest(stream, importer.size_cap).await.map_err(|e| upload_error(&e))?;
        if let Some(expected) = expected.filter(|e| *e != size) {
            return Err(format!("Task {}: Image size mismatch. Expected {expected} but got {size}", job.task_id));
        }
        return Ok(Brought { store: store.to_owned(), location, size, md5, sha512, head, adopted: true });
    }
    let brought = copy_into(importer, &progress.lease.staging, &job.image_id, store, stream, expected).await?;
    if let Some(expected) = expected.filter(|e| *e != brought.size) {
        remove_brought(importer, &job.image_id, &brought).await;
        return Err(format!("Task {}: Image size mismatch. Expected {expected} but got {}", job.task_id, brought.size));
    }
    Ok(brought)
}

/// An HTTP client for imports: bounded connects and reads; with `filtered`, every redirect
/// passes `web-download`'s filter again.
fn http_client(importer: &Importer, filtered: bool) -> Result<reqwest::Client, String> {
    let filter = importer.filter.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if !filtered || filter.check(attempt.url().as_str()).is_some() {
            attempt.follow()
        } else {
            let refused = format!("Redirect to disallowed URL: {}", attempt.url());
            attempt.error(refused)
        }
    });
    crate::tls::install();
    reqwest::Client::builder()
        .redirect(redirects)
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(importer.read_timeout)
        .build()
        .map_err(|e| format!("Cannot make an HTTP client: {e}"))
}

/// `glance-download`'s first step: the other Glance's image (found in the caller's catalog),
/// which must be `active`; its formats and the properties Glance brings along
/// ([`GLANCE_DOWNLOAD_PROPERTIES`]) set on this image (what they replace in `before`, the image
/// as the import found it, kept in `progress` to put back on failure). The image as it is
/// then, and the data's URL and size.
async fn remote_metadata(
    importer: &Importer,
    job: &Job,
    before: &Image,
    remote: &RemoteImage,
    progress: &mut Progress,
) -> Result<(Image, (String, Option<u64>)), String> {
    let (region, interface) = (&remote.region, &remote.interface);
    let endpoint = match importer.auth.endpoint(&remote.token, "image", region, interface).await {
        Ok(Some(url)) => url,
        Ok(None) => return Err(format!("{interface} glance endpoint not found for region {region}")),
        Err(e) => return Err(format!("Cannot read the service catalog: {e}")),
    };
    let base = endpoint.trim_end_matches('/').trim_end_matches("/v2");
    let url = format!("{base}/v2/images/{}", remote.image_id);
    let client = http_client(importer, false)?;
    let response = client
        .get(&url)
        .header("x-auth-token", &remote.token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| describe(&e, &url))?;
    if !response.status().is_success() {
        return Err(format!("Cannot read image {} from {url}: HTTP {}", remote.image_id, response.status()));
    }
    // An image record is a few kilobytes: more is not one.
    const MAX_RECORD: usize = 1 << 20;
    let mut response = response;
    let mut record = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e, &url))? {
        if record.len() + chunk.len() > MAX_RECORD {
            return Err(format!("Cannot read image {}: its record is larger than {MAX_RECORD} bytes", remote.image_id));
        }
        record.extend_from_slice(&chunk);
    }
    let body: serde_json::Value =
        serde_json::from_slice(&record).map_err(|e| format!("Cannot read image {}: {e}", remote.image_id))?;
    let status = body["status"].as_str().unwrap_or("None");
    if status != "active" {
        return Err(format!("Source image status should be active instead of {status}"));
    }
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let taken: Vec<(String, String)> = body
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| crate::domain::import::GLANCE_DOWNLOAD_PROPERTIES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    let formats =
        (body["container_format"].as_str().map(str::to_owned), body["disk_format"].as_str().map(str::to_owned));
    let size = body["size"].as_u64();
    progress.revert = Some(Revert {
        container_format: before.container_format.clone(),
        disk_format: before.disk_format.clone(),
        properties: taken.iter().map(|(k, _)| (k.clone(), before.properties.get(k).cloned())).collect(),
    });
    let changed = change_held(importer, job, Some(ImageStatus::Importing), None, move |i| {
        if let (Some(container), Some(disk)) = formats {
            i.container_format = Some(container);
            i.disk_format = Some(disk);
        }
        for (k, v) in taken {
            i.properties.set(k, Some(v));
        }
    })
    .await
    .map_err(|e| task_error(e, "record the image's metadata"))?;
    Ok((changed, (format!("{url}/file"), size)))
}

/// `web-download` (and `glance-download`'s data): the URL's data, fetched (with `filtered`,
/// every redirect passing the filter again; with `token`, as that caller) and staged into
/// `store`.
async fn download(
    importer: &Importer,
    job: &Job,
    progress: &Progress,
    store: &str,
    uri: &str,
    token: Option<&str>,
    filtered: bool,
) -> Result<Brought, String> {
    let client = http_client(importer, filtered)?;
    let mut request = client.get(uri);
    if let Some(token) = token {
        request = request.header("x-auth-token", token);
    }
    let response = request.send().await.map_err(|e| describe(&e, uri))?;
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
    let brought = copy_into(importer, &progress.lease.staging, &job.image_id, store, stream, declared).await?;
    if let Some(expected) = declared.filter(|n| *n != brought.size) {
        remove_brought(importer, &job.image_id, &brought).await;
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

/// Streams `data` into `staging` (a place in `store`), hashing it, and commits.
async fn copy_into(
    importer: &Importer,
    staging: &str,
    id: &str,
    store: &str,
    data: ByteStream,
    size: Option<u64>,
) -> Result<Brought, String> {
    let body = Body::from_stream(data);
    let staged = importer.data.stage(id, staging, body, importer.size_cap, size).await.map_err(|e| upload_error(&e))?;
    let (size, md5, sha512, head) =
        (staged.size, staged.md5_hex.clone(), staged.sha512_hex.clone(), staged.head.clone());
    let location = importer.data.commit(staged).await.map_err(|e| format!("Cannot store the image data: {e}"))?;
    Ok(Brought { store: store.to_owned(), location, size, md5, sha512, head, adopted: false })
}

/// Removes what an import brought into a store (not staged data it adopted).
async fn remove_brought(importer: &Importer, id: &str, brought: &Brought) {
    if brought.adopted {
        return;
    }
    let removed = match importer.data.get(&brought.store) {
        Some(backend) => backend.remove(id, Some(&brought.location)).await,
        None => Ok(()),
    };
    if let Err(e) = removed {
        tracing::warn!(error = %e, image = %id, store = %brought.store, "cannot remove a failed import's data; the sweep will");
    }
}

fn upload_error(e: &UploadError) -> String {
    match e {
        UploadError::TooLarge => "The image is too large: larger than image_size_cap".into(),
        other => other.to_string(),
    }
}

/// The data checked against the image's formats, then the image `active` with it (or, for
/// `copy-image`, the copies added to it), if the import still holds it.
async fn activate(importer: &Importer, job: &Job, image: &Image, progress: &Progress) -> Result<(), String> {
    let copying = job.method == ImportMethod::CopyImage;
    let first = &progress.brought[0];
    let virtual_size = if copying {
        image.virtual_size
    } else {
        check_format(image.container_format.as_deref(), image.disk_format.as_deref(), &first.head, first.size)
            .map_err(|r| r.message)?
    };
    let (size, md5, sha512) = (first.size as i64, first.md5.clone(), first.sha512.clone());
    let mut copies: Vec<(String, String)> =
        progress.brought.iter().map(|b| (b.store.clone(), b.location.clone())).collect();
    let named = job.named_stores();
    let expected = if copying { ImageStatus::Active } else { ImageStatus::Importing };
    let done = change_held(importer, job, Some(expected), Some(progress.lease.clone()), move |i| {
        if !copying {
            let (store, location) = copies.remove(0);
            i.status = ImageStatus::Active;
            i.store = Some(store);
            i.location = Some(location);
            i.replicas.clear();
            i.size = Some(size);
            i.virtual_size = virtual_size;
            i.checksum = Some(md5);
            i.os_hash_algo = Some("sha512".into());
            i.os_hash_value = Some(sha512);
        }
        i.replicas.extend(copies.into_iter().map(|(store, location)| Replica { store, location }));
        i.upload = None;
        i.properties.remove(LOCK);
        let named: Vec<&str> = named.iter().map(String::as_str).collect();
        edit_store_list(i, IMPORTING_TO, &[], &named);
    })
    .await;
    done.map(|_| ()).map_err(|e| task_error(e, "activate the image"))
}

/// A bookkeeping change of the import's image, made only while the import still holds it:
/// the image's lock names the task and, when given, the image has `status` and the staging
/// hold `lease`. Otherwise refused, as Glance says it: "Task was aborted externally".
async fn change_held(
    importer: &Importer,
    job: &Job,
    status: Option<ImageStatus>,
    lease: Option<UploadLease>,
    change: impl FnOnce(&mut Image) + Send + 'static,
) -> Result<Image, StoreError> {
    let task = job.task_id.clone();
    let held = move |i: &Image| {
        i.properties.get_str(LOCK) == Some(task.as_str())
            && status.is_none_or(|s| i.status == s)
            && lease.as_ref().is_none_or(|l| i.upload.as_ref() == Some(l))
    };
    importer
        .store
        .modify_image(
            &Principal::system(),
            &job.image_id,
            Rule::Bookkeeping,
            Box::new(move |i| {
                if !held(i) {
                    return Err(Rejection::conflict("Task was aborted externally"));
                }
                change(i);
                Ok(())
            }),
        )
        .await
}

/// Why the import fails when the catalogue refused or failed a change of its image made
/// while `doing` it.
fn task_error(e: StoreError, doing: &str) -> String {
    match e {
        StoreError::NotFound => "Image has been deleted, aborting import.".to_owned(),
        StoreError::Rejected(r) => r.message,
        e => format!("Cannot {doing}: {e}"),
    }
}

/// After a failure: the image's lock and hold released, its stores out of the importing list
/// (the one that failed the import into the failed list), and an image that was not active
/// back to `queued` without data; then whatever the attempt left in the stores removed. A
/// `copy-image` leaves the image as it was, with the data it had.
pub async fn abandon(importer: &Importer, job: &Job, progress: &Progress) {
    let system = Principal::system();
    let before = match importer.store.get_image(&system, &job.image_id).await {
        Ok(image) => image,
        // Deleted meanwhile: what the attempt wrote is nobody's.
        Err(StoreError::NotFound) => return remove_attempt(importer, job, progress).await,
        // The catalogue cannot say: the sweep removes what turns out to be nobody's.
        Err(_) => return,
    };
    let copying = job.method == ImportMethod::CopyImage;
    let task = job.task_id.clone();
    let named = job.named_stores();
    let failed = progress.failed.clone();
    let revert =
        progress.revert.as_ref().map(|r| (r.container_format.clone(), r.disk_format.clone(), r.properties.clone()));
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
                if copying {
                    i.upload = None;
                    i.properties.remove(LOCK);
                } else {
                    requeue(i);
                }
                // What glance-download took from the other image: as it was.
                if let Some((container_format, disk_format, properties)) = revert {
                    i.container_format = container_format;
                    i.disk_format = disk_format;
                    for (k, v) in properties {
                        match v {
                            Some(v) => i.properties.set(k, v),
                            None => {
                                i.properties.remove(&k);
                            }
                        }
                    }
                }
                let named: Vec<&str> = named.iter().map(String::as_str).collect();
                edit_store_list(i, IMPORTING_TO, &[], &named);
                let failed: Vec<&str> = failed.iter().map(String::as_str).collect();
                edit_store_list(i, FAILED_IMPORT, &failed, &[]);
                Ok(())
            }),
        )
        .await;
    match requeued {
        Ok(_) => {}
        // No longer this import's image (deleted, or its lock taken over): the copies it made
        // were never recorded in it.
        Err(StoreError::NotFound | StoreError::Rejected(_)) => return remove_attempt(importer, job, progress).await,
        Err(_) => return,
    }
    for brought in &progress.brought {
        remove_brought(importer, &job.image_id, brought).await;
    }
    if !copying
        && before.location.is_some()
        && let Err(e) = importer.data.remove(&before).await
    {
        tracing::warn!(error = %e, image = %job.image_id, "cannot remove a failed import's data; the sweep will");
    }
    if let Err(e) = importer.data.remove_staging(&progress.lease.staging).await {
        tracing::warn!(error = %e, image = %job.image_id, "cannot remove a failed import's partial data; the sweep will");
    }
}

/// Removes what an import that no longer holds its image wrote: its copies and its partial data.
async fn remove_attempt(importer: &Importer, job: &Job, progress: &Progress) {
    for brought in &progress.brought {
        remove_brought(importer, &job.image_id, brought).await;
    }
    if let Err(e) = importer.data.remove_staging(&progress.lease.staging).await {
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
        i.replicas.clear();
    }
    i.upload = None;
    i.properties.remove(LOCK);
}

/// Moves the stores an import was still bringing the data to (`os_glance_importing_to_stores`)
/// into the failed ones: for an import whose node died.
pub fn fail_importing(i: &mut Image) {
    let Some(importing) = i.properties.get_str(IMPORTING_TO).filter(|s| !s.is_empty()).map(str::to_owned) else {
        return;
    };
    let stores: Vec<&str> = importing.split(',').collect();
    edit_store_list(i, FAILED_IMPORT, &stores, &[]);
    i.properties.set(IMPORTING_TO.into(), Some(String::new()));
}

/// A store list property (`a,b`) with `add` added and `remove` taken out, sorted.
fn store_list(current: Option<&str>, add: &[&str], remove: &[&str]) -> String {
    let mut stores: Vec<&str> = current.unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
    stores.extend(add.iter().copied());
    stores.retain(|s| !remove.contains(s));
    stores.sort_unstable();
    stores.dedup();
    stores.join(",")
}

/// Sets the image's store list property `key` ([`IMPORTING_TO`], [`FAILED_IMPORT`]) to what it
/// was with `add` added and `remove` taken out.
pub fn edit_store_list(i: &mut Image, key: &str, add: &[&str], remove: &[&str]) {
    let list = store_list(i.properties.get_str(key), add, remove);
    i.properties.set(key.into(), Some(list));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lists_stay_sorted_and_unique() {
        assert_eq!(store_list(None, &[], &[]), "");
        assert_eq!(store_list(Some("b,a"), &["c", "a"], &[]), "a,b,c");
        assert_eq!(store_list(Some("a,b"), &[], &["a"]), "b");
        assert_eq!(store_list(Some(""), &[], &["a"]), "");
    }

    #[test]
    fn a_dead_imports_stores_are_failed() {
        let mut i = Image::new("i".into(), now());
        i.properties.set(IMPORTING_TO.into(), Some("b,c".into()));
        i.properties.set(FAILED_IMPORT.into(), Some("a".into()));
        fail_importing(&mut i);
        assert_eq!(
            (i.properties.get_str(IMPORTING_TO), i.properties.get_str(FAILED_IMPORT)),
            (Some(""), Some("a,b,c"))
        );
        let mut none = Image::new("n".into(), now());
        fail_importing(&mut none);
        assert_eq!(none.properties.get(FAILED_IMPORT), None, "nothing set when nothing was importing");
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
