//! Operations that span the catalogue and the image data, below both APIs: deleting an image
//! with its data, and keeping uploads and data files consistent when processes die.
//!
//! Every node (imagemeta process) registers in the catalogue and renews a lease
//! ([`Node::HEARTBEAT`], [`Node::LEASE`]). An upload records the node that receives it and
//! where its partial data is staged, in the transaction that makes the image `saving`. A node
//! whose lease ran out, or whose process is gone from this host, holds nothing: any node puts
//! its uploads back to `queued` (Glance's state after a failed upload) and removes their
//! partial data. Data files no image owns are swept away. Both stay correct with several
//! processes on one catalogue.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cache::ImageCache;
use crate::domain::{Image, ImageStatus, Node, Principal, Rejection};
use crate::store::data::{ByteStream, DataStore, Entry};
use crate::store::{DynStore, StoreError};

/// A data file younger than this is never swept: it may belong to an upload that is just
/// moving its data into place (the file is renamed before the image turns `active`).
pub const SWEEP_GRACE: Duration = Duration::from_secs(10 * 60);

/// How often a node sweeps the data directory (and once at start).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// Deletes image `id` for `who`, then its data and this node's cached copy: the one delete of
/// both APIs. The record goes first (its id is never used again); data left behind by a
/// failure here is swept later. Other nodes' copies are never served again (an image is
/// served only while the catalogue has it) and age out of their caches.
pub async fn delete_image(
    store: &DynStore,
    data: &DataStore,
    cache: Option<&ImageCache>,
    who: &Principal,
    id: &str,
) -> Result<Image, StoreError> {
    let image = store.delete_image(who, id).await?;
    if let Some(cache) = cache {
        cache.remove(&image.id);
    }
    if let Err(e) = data.remove(&image).await {
        tracing::warn!(error = %e, image = %image.id, "cannot remove the data of a deleted image; the sweep will");
    }
    Ok(image)
}

/// The data of `image` (bytes `range`, inclusive) for a download: this node's cached copy
/// when it has one; otherwise from the image's store, copied into the cache as it streams when
/// the whole image is read. `None`: the store has no data for it.
pub async fn read_data(
    data: &DataStore,
    cache: Option<&Arc<ImageCache>>,
    image: &Image,
    range: Option<(u64, u64)>,
) -> std::io::Result<Option<ByteStream>> {
    if let Some(cache) = cache
        && let Some(copy) = cache.read(image, range).await
    {
        return Ok(Some(copy));
    }
    let stream = data.read(image, range).await?;
    Ok(match (stream, cache) {
        (Some(stream), Some(cache)) if range.is_none() => Some(cache.tee(image, stream)),
        (stream, _) => stream,
    })
}

/// Puts every upload held by a node that is gone back to `queued` and removes its partial
/// data. Returns how many it recovered.
pub async fn recover_uploads(store: &DynStore, data: &DataStore, this: &Node) -> Result<usize, StoreError> {
    let held = store.held_uploads().await?;
    if held.is_empty() {
        return Ok(0);
    }
    let nodes = store.nodes().await?;
    let at = crate::domain::now();
    let mut recovered = 0;
    for (id, lease) in held {
        let holder = nodes.iter().find(|n| n.id == lease.node);
        if Node::is_live(&lease.node, holder, this, at) {
            continue;
        }
        // What the image held before (a stage's or an import's data) goes with the hold.
        let Some(before) = store.find_image(&id).await? else { continue };
        let expected = lease.clone();
        let requeued = store
            .modify_image(
                &Principal::system(),
                &id,
                crate::domain::policy::Rule::Bookkeeping,
                Box::new(move |image| {
                    // Only if nothing moved on since the hold was read.
                    if image.upload.as_ref() != Some(&expected) {
                        return Err(Rejection::conflict("the upload moved on"));
                    }
                    crate::import::requeue(image);
                    // The stores an import was still bringing the data to: failed.
                    crate::import::fail_importing(image);
                    Ok(())
                }),
            )
            .await;
        match requeued {
            Ok(_) => {
                tracing::warn!(image = %id, node = %lease.node, "the node receiving an upload is gone: the image is back to queued");
                recovered += 1;
            }
            Err(StoreError::Rejected(_) | StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        }
        if matches!(before.status, ImageStatus::Uploading | ImageStatus::Importing)
            && before.location.is_some()
            && let Err(e) = data.remove(&before).await
        {
            tracing::warn!(error = %e, image = %id, "cannot remove a dead import's staged data; the sweep will");
        }
        if let Err(e) = data.remove_staging(&lease.staging).await {
            tracing::warn!(error = %e, image = %id, "cannot remove a dead upload's partial data; the sweep will");
        }
    }
    Ok(recovered)
}

/// Fails every unfinished task whose node is gone (its image was put back by
/// [`recover_uploads`]), and removes the tasks that expired. Returns how many it failed.
pub async fn recover_tasks(store: &DynStore, this: &Node) -> Result<usize, StoreError> {
    let at = crate::domain::now();
    store.purge_tasks(at).await?;
    let running = store.running_tasks().await?;
    if running.is_empty() {
        return Ok(0);
    }
    let nodes = store.nodes().await?;
    let mut failed = 0;
    for task in running {
        let Some(node) = task.node.clone() else { continue };
        if Node::is_live(&node, nodes.iter().find(|n| n.id == node), this, at) {
            continue;
        }
        let ended = store
            .update_task(
                &task.id,
                Box::new(move |t| {
                    if t.node.as_deref() == Some(node.as_str()) {
                        t.end(Err("The imagemeta node running this task stopped before it ended.".into()), at);
                    }
                }),
            )
            .await;
        match ended {
            Ok(_) => {
                tracing::warn!(task = %task.id, "the node running a task is gone: the task failed");
                failed += 1;
            }
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(failed)
}

/// Removes data that no image owns, in every store: the data of images that are gone (or
/// never became active), and partial uploads no live upload holds. Returns how many pieces it
/// removed.
pub async fn sweep_data(store: &DynStore, data: &DataStore) -> Result<usize, StoreError> {
    let now = SystemTime::now();
    let mut removed = 0;
    for (name, backend) in data.all() {
        // The store first, then the catalogue: anything listed here belongs to an upload whose
        // hold was committed before it was written.
        let entries = backend.entries().await.map_err(|e| StoreError::Unavailable(crate::store::error_text(e)))?;
        for entry in entries {
            let (Entry::Data { id, modified, .. } | Entry::Partial { id, modified, .. }) = &entry;
            if now.duration_since(*modified).unwrap_or_default() < SWEEP_GRACE {
                continue;
            }
            let image = store.find_image(id).await?;
            if image.as_deref().is_some_and(|image| owns(image, name, &entry)) {
                continue;
            }
            let result = match &entry {
                Entry::Data { id, location, .. } => backend.remove(id, Some(location)).await,
                Entry::Partial { staging, .. } => backend.remove_staging(staging).await,
            };
            match result {
                Ok(()) => {
                    tracing::info!(store = name, ?entry, "removed image data that no image owns");
                    removed += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, store = name, ?entry, "cannot remove image data that no image owns")
                }
            }
        }
    }
    Ok(removed)
}

/// Whether `image` owns `entry` of store `store`: its data (or data an upload of it just
/// committed and is making active), or the partial data of its upload in progress.
fn owns(image: &Image, store: &str, entry: &Entry) -> bool {
    let in_store = image.store.as_deref().unwrap_or(crate::store::data::FILE_STORE) == store;
    match entry {
        Entry::Data { location, .. } => {
            // A staged image's data is its own too, until it is imported.
            let has_data = matches!(
                image.status,
                ImageStatus::Active
                    | ImageStatus::Deactivated
                    | ImageStatus::PendingDelete
                    | ImageStatus::Uploading
                    | ImageStatus::Importing
            );
            // Data without a recorded location is the file store's old layout: one per image.
            let here = in_store && image.location.as_deref().is_none_or(|l| l == location);
            let replica = image.replicas.iter().any(|r| r.store == store && r.location == *location);
            (has_data && (here || replica)) || image.upload.is_some()
        }
        Entry::Partial { staging, .. } => {
            image.upload.as_ref().is_some_and(|u| u.staging.split_once('/') == Some((store, staging.as_str())))
        }
    }
}

/// A node's background duties, until the store closes: renew the lease, recover dead nodes'
/// uploads, sweep (unless `sweep` is off). Failures are logged and retried at the next tick.
pub async fn maintain(store: DynStore, data: std::sync::Arc<DataStore>, this: Node, sweep: bool) {
    let mut tick = tokio::time::interval(Node::HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if let Err(e) = store.heartbeat(&this).await {
            tracing::warn!(error = %e, "cannot renew this node's lease");
        }
        // Every other heartbeat: half a lease.
        if n.is_multiple_of(2) {
            if let Err(e) = recover_uploads(&store, &data, &this).await {
                tracing::warn!(error = %e, "cannot recover dead nodes' uploads");
            }
            if let Err(e) = recover_tasks(&store, &this).await {
                tracing::warn!(error = %e, "cannot recover dead nodes' tasks");
            }
        }
        n += 1;
        if sweep && last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            last_sweep = Some(tokio::time::Instant::now());
            match sweep_data(&store, &data).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "swept image data no image owns"),
                Err(e) => tracing::warn!(error = %e, "cannot sweep the image data"),
            }
        }
    }
}
