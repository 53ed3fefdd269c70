//! Persistence: the small async [`Store`] trait both APIs use, and its backends.
//!
//! Every mutation is one transaction that loads the image, applies the domain policy and the
//! quota, and writes only what changes, so concurrent writers can never lose each other's keys
//! or exceed a quota together.

pub mod cache;
#[cfg(test)]
mod contract;
pub mod data;
pub mod metadefs;
pub mod plan;
pub mod postgres;
pub mod sql;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::policy::Rule;
use crate::domain::task::{Task, TaskQuery};
use crate::domain::{Image, MemberStatus, Node, Principal, Properties, Rejection, UploadLease};

/// What a store operation can fail with. The API layers map each to their own fault; the
/// last three are the store's own failures, which no request causes: both APIs answer
/// [`StoreError::Unavailable`] and [`StoreError::Full`] with 503 and `Retry-After`.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The store cannot serve this now: the database is unreachable, read-only, lost, closed,
    /// or has more writes queued than it takes. Nothing was changed (a write was not
    /// committed); the same request may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk under the database is full: nothing was changed. Deletes still run (they free
    /// space); other writes are refused until there is room again.
    #[error("store full: {0}")]
    Full(String),
    /// A defect: a query the database refused, or data it holds that this version cannot read.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// The store's own failures (as opposed to answers about the request).
    pub fn is_failure(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_) | StoreError::Internal(_))
    }
}

/// At most this much of a database's error text is kept: a message can quote a whole
/// generated statement (SQLite's syntax errors do), and it is only for the log.
pub const MAX_ERROR_TEXT: usize = 300;

/// `text` cut to [`MAX_ERROR_TEXT`] bytes (at a character boundary).
pub fn error_text(text: impl std::fmt::Display) -> String {
    let mut s = text.to_string();
    if s.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
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

impl ListQuery {
    /// The most filters one listing may carry: more could only be an attack (a real client
    /// sends a handful), and each is a clause every backend must plan and run.
    pub const MAX_FILTERS: usize = 64;
    /// The most values all `in:` lists of one listing may name together.
    pub const MAX_VALUES: usize = 1000;

    /// Why this query is too large to run, if it is: the bound on the work of one listing,
    /// which both APIs check (each answers in its own fault format) and every store enforces.
    pub fn too_large(&self) -> Option<String> {
        if self.filters.len() > Self::MAX_FILTERS {
            return Some(format!(
                "Too many filters: {} given, at most {} are allowed.",
                self.filters.len(),
                Self::MAX_FILTERS
            ));
        }
        let values: usize = self.filters.iter().map(|f| if let Filter::In(_, v) = f { v.len() } else { 1 }).sum();
        if values > Self::MAX_VALUES {
            return Some(format!("Too many filter values: {values} given, at most {} are allowed.", Self::MAX_VALUES));
        }
        None
    }

    /// The query as a store runs it: refused when too large, repeated sort keys dropped, and
    /// text no stored value can hold (NUL: never stored, and PostgreSQL refuses it even in a
    /// comparison) compared as what it is: equal to nothing. `None`: nothing can match.
    pub fn prepared(&self) -> Result<Option<ListQuery>, StoreError> {
        if let Some(why) = self.too_large() {
            return Err(StoreError::Rejected(Rejection::invalid(why)));
        }
        let mut query = self.clone();
        query.dedup_sort();
        let storable = |v: &Scalar| !matches!(v, Scalar::Text(t) if t.contains('\0'));
        let mut filters = Vec::with_capacity(query.filters.len());
        for f in query.filters {
            match f {
                Filter::Compare(_, Cmp::Eq, ref v) if !storable(v) => return Ok(None),
                // Different from every stored value (NULL included, as `IS NOT` compares).
                Filter::Compare(_, Cmp::Neq, ref v) if !storable(v) => {}
                // An order against text no value holds: kept only if its text is storable.
                Filter::Compare(_, _, ref v) if !storable(v) => return Ok(None),
                Filter::In(c, values) => {
                    let values: Vec<Scalar> = values.into_iter().filter(storable).collect();
                    if values.is_empty() {
                        return Ok(None);
                    }
                    filters.push(Filter::In(c, values));
                }
                Filter::Property(k, v) if k.contains('\0') || v.contains('\0') => return Ok(None),
                Filter::Tag(t) if t.contains('\0') => return Ok(None),
                other => filters.push(other),
            }
        }
        query.filters = filters;
        if query.marker.as_deref().is_some_and(|m| m.contains('\0')) {
            return Err(StoreError::MarkerNotFound(query.marker.unwrap_or_default()));
        }
        Ok(Some(query))
    }

    /// The marker image a store loaded for this query (`found`), as a listing may use it: it
    /// must exist, and the caller must be able to see it.
    pub fn marker_for(&self, caller: Caller<'_>, found: Option<Image>) -> Result<Option<Image>, StoreError> {
        let Some(marker) = &self.marker else { return Ok(None) };
        let Some(image) = found else { return Err(StoreError::MarkerNotFound(marker.clone())) };
        if let Caller::User(who) = caller
            && !crate::domain::policy::can_see(who, &image)
        {
            return Err(StoreError::MarkerForbidden(marker.clone()));
        }
        Ok(Some(image))
    }

    /// Drops repeated sort keys: only a key's first occurrence orders anything, and each
    /// repetition would add to the keyset condition after a marker (quadratic in the keys).
    pub fn dedup_sort(&mut self) {
        let mut seen = Vec::with_capacity(self.sort.len());
        self.sort.retain(|(c, _)| {
            let first = !seen.contains(c);
            seen.push(*c);
            first
        });
    }
}

/// Which visibilities a user listing keeps (glance-v2 §10); defined with the visibility rules.
pub use crate::domain::policy::ListVisibility as VisibilityFilter;

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

/// The image catalogue; the metadata definitions catalogue ([`metadefs::MetadefStore`]) lives
/// in the same database.
#[async_trait]
pub trait Store: metadefs::MetadefStore + Send + Sync + 'static {
    /// The image `id`, if `who` may see it (shared: it may come from a cache). Callers use
    /// [`get_image`], which asks [`Store::get_image_at_once`] first.
    async fn get_image(&self, who: &Principal, id: &str) -> Result<Arc<Image>, StoreError>;

    /// What [`Store::get_image`] would answer, when the store can tell without waiting (an
    /// image in its cache); `None`: ask it.
    fn get_image_at_once(&self, _who: &Principal, _id: &str) -> Option<Result<Arc<Image>, StoreError>> {
        None
    }

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

    /// Loads the visible image `id`, checks that `who` may do `rule` to it (`Forbidden`
    /// otherwise), lets `change` modify it, and saves the result in the same transaction,
    /// with a new `updated_at`.
    async fn modify_image(
        &self,
        who: &Principal,
        id: &str,
        rule: Rule,
        change: Modification,
    ) -> Result<Image, StoreError>;

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

    /// The image `id` whatever its visibility: the service's own view (recovery, sweeps).
    async fn find_image(&self, id: &str) -> Result<Option<Arc<Image>>, StoreError>;

    /// Registers `node` as serving this catalogue, or renews its lease (`heartbeat_at`). A
    /// starting server's first write: a catalogue it cannot write stops it there.
    async fn heartbeat(&self, node: &Node) -> Result<(), StoreError>;

    /// Removes a node that stops cleanly.
    async fn unregister_node(&self, id: &str) -> Result<(), StoreError>;

    /// Every registered node.
    async fn nodes(&self) -> Result<Vec<Node>, StoreError>;

    /// Every image whose upload a node holds, with the hold.
    async fn held_uploads(&self) -> Result<Vec<(String, UploadLease)>, StoreError>;

    /// Records a new task; `Conflict` when its id is taken.
    async fn insert_task(&self, task: Task) -> Result<(), StoreError>;

    /// Task `id`, expired or not, or `None`.
    async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError>;

    /// Changes task `id` in one transaction, with a new `updated_at`; `NotFound` when it is
    /// gone.
    async fn update_task(&self, id: &str, change: TaskChange) -> Result<Task, StoreError>;

    /// A page of the tasks that have not expired, in the query's order after its marker;
    /// `MarkerNotFound` when the marker is no task of the query's owner.
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, StoreError>;

    /// Unfinished tasks run by a node (for the recovery of a dead node's).
    async fn running_tasks(&self) -> Result<Vec<Task>, StoreError>;

    /// Removes the tasks that expired by `now`; how many.
    async fn purge_tasks(&self, now: OffsetDateTime) -> Result<usize, StoreError>;

    /// Ids of deleted images after `after` in id order, at most `limit`, with when each was
    /// deleted.
    async fn deleted_ids(&self, after: Option<&str>, limit: usize)
    -> Result<Vec<(String, OffsetDateTime)>, StoreError>;

    /// Records ids as deleted (copying a catalogue): they can never be used again.
    async fn insert_deleted_ids(&self, ids: Vec<(String, OffsetDateTime)>) -> Result<(), StoreError>;

    /// Whether this open created the catalogue (or found it empty).
    fn is_new(&self) -> bool;

    /// Answers when the catalogue can serve (the readiness probe).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Sets the gauges a metrics scrape reports (queue depth, pool use).
    fn observe(&self) {}

    /// Stops taking writes, commits those already queued and releases the database. Every
    /// later call is refused as unavailable.
    async fn close(&self);
}

pub type DynStore = Arc<dyn Store>;

/// `image` if there is one and `who` may see it; else not found (an image a caller may not see
/// does not exist for it). Every backend's reads and writes of one image ask this.
pub(crate) fn visible<I: std::borrow::Borrow<Image>>(image: Option<I>, who: &Principal) -> Result<I, StoreError> {
    match image {
        Some(image) if crate::domain::policy::can_see(who, image.borrow()) => Ok(image),
        _ => Err(StoreError::NotFound),
    }
}

/// Image `id` if `who` may see it ([`Store::get_image`]): at once when the store can answer
/// so (a point read from the cache then costs no boxed future), else asked.
pub async fn get_image(store: &dyn Store, who: &Principal, id: &str) -> Result<Arc<Image>, StoreError> {
    match store.get_image_at_once(who, id) {
        Some(answer) => answer,
        None => store.get_image(who, id).await,
    }
}

/// A change to one task, run inside the store's transaction.
pub type TaskChange = Box<dyn FnOnce(&mut Task) + Send>;

/// A change to one image, run inside the store's transaction.
pub type Modification = Box<dyn FnOnce(&mut Image) -> Result<(), Rejection> + Send>;

/// Where the data lives, parsed from `--database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(std::path::PathBuf),
    Postgres(postgres::PgUrl),
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
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return postgres::PgUrl::parse(s).map(DatabaseUrl::Postgres);
        }
        Err(format!("{s}: unsupported database URL (supported: sqlite:PATH, postgres://USER@HOST:PORT/DB)"))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => write!(f, "{url}"),
        }
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

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub synchronous: Synchronous,
    /// Bytes kept free on the database's disk so that deletes run when it fills (SQLite).
    pub disk_reserve: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { synchronous: Synchronous::Full, disk_reserve: 0 }
    }
}

/// Opens the store named by `url`, applying migrations.
pub async fn open(url: &DatabaseUrl, options: StoreOptions) -> Result<DynStore, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || {
                sqlite::SqliteStore::open(&path, options.synchronous, options.disk_reserve)
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;
            Ok(Arc::new(store))
        }
        DatabaseUrl::Postgres(url) => Ok(Arc::new(postgres::PgStore::open(url).await?)),
    }
}
