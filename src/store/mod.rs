//! Persistence: the small async [`Store`] trait both APIs use, and its backends.
//!
//! Every mutation is one transaction that loads the image, applies the domain policy and the
//! quota, and writes only what changes, so concurrent writers can never lose each other's keys
//! or exceed a quota together.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::{Image, ImageStatus, Principal, Properties};

/// What a store operation can fail with. The API layers map each to their own fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such image, or not visible to the caller.
    #[error("image not found")]
    NotFound,
    /// Visible, but the caller may not do this to it.
    #[error("forbidden")]
    Forbidden,
    /// The change would leave more properties than the `metadata_items` quota.
    #[error("metadata quota exceeded")]
    QuotaExceeded,
    /// A metadata delete named a key the image does not have.
    #[error("metadata key not found")]
    KeyNotFound,
    /// A list marker that names no visible image.
    #[error("marker {0} could not be found")]
    MarkerNotFound(String),
    /// An image with this id exists already.
    #[error("image {0} already exists")]
    Conflict(String),
    /// The database failed; the operation did not happen (or, for a write, was not committed).
    #[error("store failure: {0}")]
    Internal(String),
}

/// Who is asking for a listing: a user, whose visibility rules apply, or the operator's
/// command line, which sees everything.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    User(&'a Principal),
    Operator,
}

/// A filtered, keyset-paginated listing in the order newest `created_at` first, then `id`
/// descending (Glance's default).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Exact names; more than one means any of them (Glance's `in:` operator).
    pub names: Vec<String>,
    /// Statuses, any of them.
    pub statuses: Vec<ImageStatus>,
    /// Only images updated at or after this instant.
    pub updated_since: Option<OffsetDateTime>,
    pub min_ram: Option<i64>,
    pub min_disk: Option<i64>,
    /// Property equality filters, all of which must hold.
    pub properties: Vec<(String, String)>,
    /// Start after this image id.
    pub marker: Option<String>,
    pub limit: usize,
    /// Also load properties and tags (detail views); an index view needs neither.
    pub detail: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The image `id`, if `who` may see it.
    async fn get_image(&self, who: &Principal, id: &str) -> Result<Image, StoreError>;

    /// A page of the images `caller` may list. Hidden images (`os_hidden`) are left out of
    /// user listings, as Glance does by default.
    async fn list_images(&self, caller: Caller<'_>, query: &ListQuery) -> Result<Vec<Image>, StoreError>;

    /// Applies one metadata change atomically and returns the image's properties after it.
    /// Checks, in Nova's order: visibility (`NotFound`), key presence for a delete
    /// (`KeyNotFound`), the quota (`QuotaExceeded`), then write permission (`Forbidden`).
    async fn change_metadata(
        &self,
        who: &Principal,
        id: &str,
        change: MetadataChange,
        quota: MetadataQuota,
    ) -> Result<Properties, StoreError>;

    /// Deletes the image: `NotFound` if invisible, `Forbidden` if not allowed or protected.
    async fn delete_image(&self, who: &Principal, id: &str) -> Result<(), StoreError>;

    /// Inserts a complete image (the operator's seeding path).
    async fn insert_image(&self, image: Image) -> Result<Image, StoreError>;
}

pub type DynStore = Arc<dyn Store>;

/// Where the data lives, parsed from `--database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(std::path::PathBuf),
}

impl DatabaseUrl {
    pub fn parse(s: &str) -> Result<DatabaseUrl, String> {
        if let Some(rest) = s.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("{s}: a sqlite URL needs a file path, e.g. sqlite:imagemeta.db"));
            }
            return Ok(DatabaseUrl::Sqlite(path.into()));
        }
        Err(format!("{s}: unsupported database URL (supported: sqlite:PATH)"))
    }
}

/// How hard a commit waits for the disk (SQLite's `synchronous`). The default is durable: an
/// acknowledged write survives power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// fsync on every commit (the default).
    Full,
    /// fsync at WAL checkpoints only: survives a process crash, not a power loss.
    Normal,
    /// never fsync: for throwaway test data only.
    Off,
}

/// Opens the store named by `url`, applying migrations.
pub async fn open(url: &DatabaseUrl, synchronous: Synchronous) -> Result<DynStore, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path, synchronous))
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))??;
            Ok(Arc::new(store))
        }
    }
}
