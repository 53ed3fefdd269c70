//! What a write does, decided in memory before anything is written, so that every backend
//! applies the same rules and writes the same rows.

use super::StoreError;
use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::{Image, Principal, Properties, policy};

/// The rows a metadata change writes.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataPlan {
    /// Properties to remove.
    pub deletes: Vec<String>,
    /// Properties to write, in order: `(key, value, whether the image has the key)`. An
    /// existing key keeps its position; a new one goes last.
    pub upserts: Vec<(String, String, bool)>,
    /// The image's properties afterwards, in their order.
    pub after: Properties,
}

/// Plans `change` on `image` (which `who` can see), making Nova's checks in its order: key
/// presence for a delete (`KeyNotFound`), the quota (`QuotaExceeded`), then write permission
/// (`Forbidden`).
pub fn metadata(
    image: &Image,
    who: &Principal,
    change: MetadataChange,
    quota: MetadataQuota,
) -> Result<MetadataPlan, StoreError> {
    let mut after = image.properties.clone();
    let count = match &change {
        MetadataChange::Merge(items) => {
            for (k, v) in items {
                after.set(k.as_str().to_owned(), Some(v.as_str().to_owned()));
            }
            after.len()
        }
        MetadataChange::Replace(items) => items.len(),
        MetadataChange::Set(k, v) => {
            after.set(k.as_str().to_owned(), Some(v.as_str().to_owned()));
            after.len()
        }
        MetadataChange::Delete(k) => {
            if !after.remove(k) {
                return Err(StoreError::KeyNotFound);
            }
            0 // Nova never checks the quota on a delete.
        }
    };
    if !quota.allows(count) {
        return Err(StoreError::QuotaExceeded);
    }
    if !policy::authorize(who, &policy::Rule::ModifyImage, Some(image)) {
        return Err(StoreError::Forbidden);
    }
    let has = |props: &Properties, k: &str| props.get(k).is_some();
    let plan = match change {
        MetadataChange::Merge(items) => MetadataPlan {
            deletes: Vec::new(),
            upserts: items
                .into_iter()
                .map(|(k, v)| {
                    let exists = has(&image.properties, k.as_str());
                    (k.into_string(), v.into_string(), exists)
                })
                .collect(),
            after,
        },
        MetadataChange::Set(k, v) => {
            let exists = has(&image.properties, k.as_str());
            MetadataPlan { deletes: Vec::new(), upserts: vec![(k.into_string(), v.into_string(), exists)], after }
        }
        MetadataChange::Delete(k) => MetadataPlan { deletes: vec![k], upserts: Vec::new(), after },
        MetadataChange::Replace(items) => {
            let keep: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
            let deletes =
                image.properties.iter().filter(|(k, _)| !keep.contains(k)).map(|(k, _)| k.to_owned()).collect();
            let mut after = Properties::new(
                image
                    .properties
                    .iter()
                    .filter(|(k, _)| keep.contains(k))
                    .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
                    .collect(),
            );
            let mut upserts = Vec::with_capacity(items.len());
            for (k, v) in items {
                let exists = has(&after, k.as_str());
                after.set(k.as_str().to_owned(), Some(v.as_str().to_owned()));
                upserts.push((k.into_string(), v.into_string(), exists));
            }
            MetadataPlan { deletes, upserts, after }
        }
    };
    Ok(plan)
}

/// What changed between two states of an image, for a backend to write only that.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDiff<'a> {
    /// Properties removed.
    pub removed: Vec<&'a str>,
    /// Properties added or changed: `(key, value, whether it existed)`.
    pub set: Vec<(&'a str, Option<&'a str>, bool)>,
    pub tags: bool,
    pub members: bool,
}

pub fn diff<'a>(before: &'a Image, after: &'a Image) -> ImageDiff<'a> {
    let removed = before.properties.iter().filter(|(k, _)| after.properties.get(k).is_none()).map(|(k, _)| k).collect();
    let set = after
        .properties
        .iter()
        .filter_map(|(k, v)| {
            let old = before.properties.get(k);
            (old.map(|old| old.as_deref()) != Some(v)).then_some((k, v, old.is_some()))
        })
        .collect();
    ImageDiff { removed, set, tags: before.tags != after.tags, members: before.members != after.members }
}
