//! Moving a catalogue between backends (SQLite ↔ PostgreSQL): everything a client can see or
//! rely on comes along: ids and the ids of deleted images (never usable again), names,
//! statuses, timestamps, properties in their order, tags, members, and the holds of uploads
//! in progress (which the target's nodes recover like any other).

use crate::domain::Image;
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
    #[error(transparent)]
    Store(#[from] StoreError),
}
