//! Moving a catalogue between backends (SQLite ↔ PostgreSQL), and image data between stores.
//! In a catalogue copy, everything a client can see or rely on comes along: ids and the ids of deleted images (never usable again), names,
//! statuses, timestamps, properties in their order, tags, members, and the holds of uploads
//! in progress (which the target's nodes recover like any other).

use crate::domain::Image;
use crate::store::data::DataStore;
use crate::store::{Caller, Column, DynStore, ListQuery, SortDir, StoreError};

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub images: usize,
    pub deleted_ids: usize,
}

/// Images and deleted ids move in batches of this many (one transaction each in the target).
const BATCH: usize = 500;

/// Copies every image and deleted id of `from` into `to`, which must be empty: a copy never
/// merges catalogues (an id could then mean two images). `progress` hears each batch.
pub async fn catalogue(from: &DynStore, to: &DynStore, mut progress: impl FnMut(Copied)) -> Result<Copied, CopyError> {
    let empty = ListQuery { limit: 1, ..ListQuery::default() };
    if !to.list_images(Caller::Operator, &empty).await?.is_empty() || !to.deleted_ids(None, 1).await?.is_empty() {
        return Err(CopyError::TargetNotEmpty);
    }
    let mut copied = Copied::default();
    let mut query = ListQuery { sort: vec![(Column::Id, SortDir::Asc)], limit: BATCH, ..ListQuery::default() };
    loop {
        let page = from.list_images(Caller::Operator, &query).await?;
        let mut batch: Vec<Image> = Vec::with_capacity(page.len());
        for listed in &page {
            // The whole image: the listing has no members.
            if let Some(image) = from.find_image(&listed.id).await? {
                batch.push(Image::clone(&image));
            }
        }
        copied.images += batch.len();
        if !batch.is_empty() {
            to.insert_images(batch).await?;
        }
        progress(copied);
        match page.last() {
            Some(last) if page.len() == BATCH => query.marker = Some(last.id.clone()),
            _ => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let ids = from.deleted_ids(after.as_deref(), BATCH).await?;
        let n = ids.len();
        after = ids.last().map(|(id, _)| id.clone());
        copied.deleted_ids += n;
        if n > 0 {
            to.insert_deleted_ids(ids).await?;
        }
        progress(copied);
        if n < BATCH {
            break;
        }
    }
    Ok(copied)
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target catalogue is not empty: a copy goes into an empty catalogue only")]
    TargetNotEmpty,
    #[error("no image store is named {0}")]
    NoStore(String),
    #[error("image data: {0}")]
    Data(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a data move did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub moved: usize,
    pub bytes: u64,
    /// Images whose data was missing, did not match its checksum, or changed meanwhile.
    pub skipped: usize,
}

/// Moves the data of every image in store `from` to store `to`: each copy in `from` copied
/// with its md5 checked, committed in `to`, recorded in the image in the place of the old one
/// (only if the image still has the data that was copied), then removed from `from`. An image
/// that already has a copy in `to` just loses the one in `from`. The image's other copies
/// (replicas in further stores) stay as they are.
pub async fn data(
    catalogue: &DynStore,
    stores: &DataStore,
    from: &str,
    to: &str,
    mut progress: impl FnMut(Moved),
) -> Result<Moved, CopyError> {
    let target = stores.get(to).ok_or_else(|| CopyError::NoStore(to.to_owned()))?.clone();
    stores.get(from).ok_or_else(|| CopyError::NoStore(from.to_owned()))?;
    let mut moved = Moved::default();
    let mut query = ListQuery { sort: vec![(Column::Id, SortDir::Asc)], limit: BATCH, ..ListQuery::default() };
    loop {
        let page = catalogue.list_images(Caller::Operator, &query).await?;
        for listed in &page {
            let first_in_from = listed.store.as_deref().unwrap_or(crate::store::data::FILE_STORE) == from;
            let in_from = first_in_from || listed.replicas.iter().any(|r| r.store == from);
            let has_data =
                matches!(listed.status, crate::domain::ImageStatus::Active | crate::domain::ImageStatus::Deactivated);
            if !in_from || !has_data || from == to {
                continue;
            }
            match move_one(catalogue, stores, &target, from, to, listed).await {
                Ok(Some(bytes)) => {
                    moved.moved += 1;
                    moved.bytes += bytes;
                }
                Ok(None) => moved.skipped += 1,
                Err(e) => return Err(e),
            }
        }
        progress(moved);
        match page.last() {
            Some(last) if page.len() == BATCH => query.marker = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(moved)
}

/// Moves one image's copy in `from` to `to`; `None` when it was skipped (and why is logged).
async fn move_one(
    catalogue: &DynStore,
    stores: &DataStore,
    target: &std::sync::Arc<dyn crate::store::data::Backend>,
    from: &str,
    to: &str,
    image: &Image,
) -> Result<Option<u64>, CopyError> {
    let io = |e: std::io::Error| CopyError::Data(e.to_string());
    let old = image.only_copy_in(from);
    // Already in `to`: the copy in `from` only goes.
    let new = if image.in_store(to) {
        None
    } else {
        let Some(stream) = stores.read(&old, None).await.map_err(io)? else {
            tracing::warn!(image = %image.id, "no data to move");
            return Ok(None);
        };
        // Streamed into `to` as an upload is, measured on the way.
        let staging = crate::store::data::DataStore::new_staging(to, &image.id);
        let body = axum::body::Body::from_stream(stream);
        let size = image.size.and_then(|s| u64::try_from(s).ok());
        let staged = stores
            .stage(&image.id, &staging, body, u64::MAX, size)
            .await
            .map_err(|e| CopyError::Data(e.to_string()))?;
        if image.checksum.as_deref().is_some_and(|c| c != staged.md5_hex) {
            tracing::error!(image = %image.id, "the data does not match its checksum: not moved");
            stores.discard(staged).await;
            return Ok(None);
        }
        let bytes = staged.size;
        Some((stores.commit(staged).await.map_err(io)?, bytes))
    };
    let before = (image.store.clone(), image.location.clone(), image.replicas.clone());
    let (from_store, to_store, new_location) = (from.to_owned(), to.to_owned(), new.as_ref().map(|(l, _)| l.clone()));
    let recorded = catalogue
        .modify_image(
            &crate::domain::Principal::system(),
            &image.id,
            crate::domain::policy::Rule::Bookkeeping,
            Box::new(move |i| {
                if (i.store.clone(), i.location.clone(), i.replicas.clone()) != before {
                    return Err(crate::domain::Rejection::conflict("the image's data changed meanwhile"));
                }
                let first_in_from = i.store.as_deref().unwrap_or(crate::store::data::FILE_STORE) == from_store;
                match (new_location, first_in_from) {
                    (Some(location), true) => {
                        i.store = Some(to_store);
                        i.location = Some(location);
                    }
                    (Some(location), false) => {
                        for r in i.replicas.iter_mut().filter(|r| r.store == from_store) {
                            *r = crate::domain::Replica { store: to_store.clone(), location: location.clone() };
                        }
                    }
                    // Already in `to`: that copy takes the place of the one in `from`.
                    (None, true) => {
                        let Some(at) = i.replicas.iter().position(|r| r.store == to_store) else {
                            return Err(crate::domain::Rejection::conflict("the image's data changed meanwhile"));
                        };
                        let promoted = i.replicas.remove(at);
                        i.store = Some(promoted.store);
                        i.location = Some(promoted.location);
                    }
                    (None, false) => i.replicas.retain(|r| r.store != from_store),
                }
                Ok(())
            }),
        )
        .await;
    let discard_new = || async {
        if let Some((location, _)) = &new {
            let _ = target.remove(&image.id, Some(location)).await;
        }
    };
    match recorded {
        Ok(_) => {
            if let Err(e) = stores.remove(&old).await {
                tracing::warn!(error = %e, image = %image.id, "moved, but the old copy could not be removed; the sweep will");
            }
            Ok(Some(new.map_or(0, |(_, bytes)| bytes)))
        }
        Err(StoreError::Rejected(_) | StoreError::NotFound) => {
            discard_new().await;
            Ok(None)
        }
        Err(e) => {
            discard_new().await;
            Err(e.into())
        }
    }
}
