//! Persistence: the small async [`Store`] trait both APIs use, and its backends.
//!
//! Every mutation is one transaction that loads the image, applies the domain policy and the
//! quota, and writes only what changes, so concurrent writers can never lose each other's keys
//! or exceed a quota together.

pub mod data;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::{Image, MemberStatus, Principal, Properties, Rejection, Visibility};

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
    /// A list marker that names no image.
    #[error("marker {0} could not be found")]
    MarkerNotFound(String),
    /// A list marker that names an image the caller may not see.
    #[error("marker {0} is not visible")]
    MarkerForbidden(String),
    /// An image with this id exists already, or existed and was deleted.
    #[error("image {0} already exists")]
    Conflict(String),
    /// A delete of a protected image.
    #[error("image is protected")]
    Protected,
    /// A modification refused by the domain rules.
    #[error("{}", .0.message)]
    Rejected(Rejection),
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

/// A filtered, sorted, keyset-paginated listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// All must hold.
    pub filters: Vec<Filter>,
    pub visibility: VisibilityFilter,
    pub hidden: HiddenFilter,
    /// Which shared images a non-admin caller sees as a member: of this status (Glance's
    /// default: accepted), or `None` for any.
    pub member_status: Option<MemberStatus>,
    /// Sort keys in order; `created_at` then `id` are appended as tie-breakers in the direction
    /// of the last key (descending when there is none), as Glance does.
    pub sort: Vec<(Column, SortDir)>,
    /// Start after this image id.
    pub marker: Option<String>,
    pub limit: usize,
    /// Also load properties and tags (detail views); an index view needs neither.
    pub detail: bool,
}

/// Which visibilities a user listing keeps (glance-v2 §10). Other projects' community images
/// appear only when asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VisibilityFilter {
    /// Public, the caller's own, and community images the caller owns.
    #[default]
    Default,
    Only(Visibility),
    /// Everything the caller may list.
    All,
}

/// `os_hidden` images: left out by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HiddenFilter {
    #[default]
    Exclude,
    Only,
}

/// Image columns that listings filter and sort on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    Name,
    Status,
    Visibility,
    Owner,
    ContainerFormat,
    DiskFormat,
    Size,
    VirtualSize,
    MinRam,
    MinDisk,
    Checksum,
    OsHashValue,
    Protected,
    CreatedAt,
    UpdatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A filter value, typed like its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Bool(bool),
    Time(OffsetDateTime),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `column <cmp> value`.
    Compare(Column, Cmp, Scalar),
    /// `column IN (values)`.
    In(Column, Vec<Scalar>),
    /// `from <= column < to` (either bound optional), or its negation.
    Range { column: Column, from: Option<Scalar>, to: Option<Scalar>, negated: bool },
    /// An extra property equal to a string.
    Property(String, String),
    /// The image carries this tag.
    Tag(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The image `id`, if `who` may see it (shared: it may come from a cache).
    async fn get_image(&self, who: &Principal, id: &str) -> Result<Arc<Image>, StoreError>;

    /// A page of the images `caller` may list (never deleted or killed ones for users).
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

    /// Loads the visible image `id`, lets `change` modify it (it applies its own permission
    /// checks), and saves the result in the same transaction, with a new `updated_at`.
    async fn modify_image(&self, who: &Principal, id: &str, change: Modification) -> Result<Image, StoreError>;

    /// Deletes the image and returns it: `NotFound` if invisible, `Forbidden` if not allowed,
    /// `Protected` if protected. Its id can never be used again.
    async fn delete_image(&self, who: &Principal, id: &str) -> Result<Image, StoreError>;

    /// Inserts complete images in one transaction (all or none); `Conflict` when an id is or
    /// was in use.
    async fn insert_images(&self, images: Vec<Image>) -> Result<Vec<Image>, StoreError>;

    /// Inserts one complete image.
    async fn insert_image(&self, image: Image) -> Result<Image, StoreError> {
        let mut done = self.insert_images(vec![image]).await?;
        done.pop().ok_or_else(|| StoreError::Internal("insert returned nothing".into()))
    }
}

pub type DynStore = Arc<dyn Store>;

/// A change to one image, run inside the store's transaction.
pub type Modification = Box<dyn FnOnce(&mut Image) -> Result<(), Rejection> + Send>;

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
