//! The embedded default store: SQLite in WAL mode.
//!
//! # Layout
//! * Reads run in their own snapshot transaction on read-only connections. Point reads (one
//!   image) run inline on the calling thread with that thread's own connection: they take
//!   microseconds, and a hop to a blocking thread would cost more than the read. Listings run
//!   on tokio's blocking threads with a pooled connection.
//! * Point reads are served from a bounded in-memory cache of images when they can be. After
//!   each commit, before any write of the batch is acknowledged, the writer puts the new state
//!   of every image the batch changed into the cache (or drops it when only the database knows
//!   it); a read only fills the cache when no batch was published while it read. So no reader
//!   sees an older image after a write was acknowledged, and the cache always holds committed
//!   states, which the writer itself reads instead of the database. The server must be the only
//!   process changing existing images (the CLI only inserts new ones).
//! * Writes go to one writer thread that owns the only writing connection. It takes every
//!   write waiting in its queue, runs them in one transaction, commits once (one fsync for the
//!   whole batch: group commit), and only then answers each caller. A write that may fail after
//!   changing rows runs in its own savepoint, which a refusal rolls back; a metadata change
//!   makes every check before its first change, so a refusal has changed nothing and it needs no
//!   savepoint. A database error or a failed commit fails every write in the batch, none of
//!   which was acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter, types::Value};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::cache::ImageCache;
use super::plan;
use super::sql::{self, Arg, Dialect, micros};
use super::{Caller, ListQuery, Modification, Store, StoreError, Synchronous, TaskChange, error_text};
use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::policy::Rule;
use crate::domain::task::{Task, TaskQuery};
use crate::domain::{
    Image, ImageStatus, Member, MemberStatus, Node, Principal, Properties, Replica, UploadLease, Visibility, now,
    policy,
};

/// Versioned schema migrations, applied in order; `PRAGMA user_version` records the last one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_images.sql"),
    include_str!("migrations/sqlite/0002_deleted_ids.sql"),
    include_str!("migrations/sqlite/0003_members.sql"),
    include_str!("migrations/sqlite/0004_properties_without_rowid.sql"),
    include_str!("migrations/sqlite/0005_nodes_and_upload_leases.sql"),
    include_str!("migrations/sqlite/0006_image_store_and_location.sql"),
    include_str!("migrations/sqlite/0007_tasks.sql"),
    include_str!("migrations/sqlite/0008_metadefs.sql"),
    include_str!("migrations/sqlite/0009_image_replicas.sql"),
];

/// The most writes one commit carries: bounds the latency of the first writer in a batch.
const MAX_BATCH: usize = 512;

/// The most writes waiting for the writer: a write that finds the queue full is refused at
/// once (503 with `Retry-After`) instead of waiting behind thousands of others. Eight full
/// batches: well over a second of writes at the measured rates.
const MAX_QUEUED_WRITES: usize = 8 * MAX_BATCH;

/// How long a listing waits for a read connection before it is refused as overload.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The writer connection's page cache, in KiB (as SQLite's negative `cache_size`).
const WRITER_CACHE_KIB: i64 = -16_384;

/// WAL pages after which a commit checkpoints: SQLite's default, kept on purpose. A checkpoint
/// copies each page the WAL holds once, however many commits changed it, so a longer WAL
/// copies fewer pages per write; but the checkpoint runs inside a commit, whose callers wait
/// for it. Random metadata writes at 50 connections, side by side, alternating three times:
/// 1,000 pages 5.8k–6.6k/s with p99 32–35 ms; 3,000 pages 6.3k–7.3k/s with p99 53–63 ms
/// (10,000 pages: p99 83–121 ms). A sixth more throughput at saturation is not worth a tail
/// that long for every write.
const WAL_CHECKPOINT_PAGES: i64 = 1_000;

/// How many read connections are kept, and how many listings run at once.
const READ_POOL: usize = 8;

/// Tells stores apart in the thread-local connection cache.
static NEXT_STORE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// This thread's read connection to each store it has read from, by store id.
    static THREAD_READERS: std::cell::RefCell<Vec<(u64, Connection)>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct SqliteStore {
    id: u64,
    path: PathBuf,
    /// Shared with the writer thread, which publishes each batch's images after its commit.
    cache: Arc<ImageCache>,
    /// Idle read connections; a read takes one or opens a new one.
    readers: Mutex<Vec<Connection>>,
    /// Bounds the listings that run at once to the pooled connections: more would only queue
    /// on the CPU, each on a new connection with a cold page cache (and a thread of its own).
    read_slots: tokio::sync::Semaphore,
    /// The writer thread's bounded queue ([`MAX_QUEUED_WRITES`]). The thread ends when this
    /// sender is dropped ([`Store::close`]).
    writer: Mutex<Option<mpsc::SyncSender<Job>>>,
    /// Joined on close, after the queue closes: the writer ends with a checkpoint.
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// What the writer found out about the disk and the file: shared with the writer thread.
    health: Arc<Health>,
    /// Whether this open created the database (or found it empty).
    new: bool,
}

impl Drop for SqliteStore {
    /// Lets the writer finish what is queued and checkpoint, then waits for it.
    fn drop(&mut self) {
        self.shut_writer();
    }
}

/// The state of the database's file and disk, as the writer last saw them.
struct Health {
    /// Set once the path no longer names the file this store has open (deleted or replaced
    /// under the running server): every later operation is refused, since a write
    /// acknowledged into an unlinked file is a write lost.
    lost: std::sync::OnceLock<String>,
    /// The reserve that lets deletes run on a full disk.
    reserve: DiskReserve,
    /// Writes in the writer's queue (for the metrics).
    queued: std::sync::atomic::AtomicUsize,
}

impl Health {
    /// Refuses everything once the database file is lost.
    fn check(&self) -> Result<(), StoreError> {
        match self.lost.get() {
            Some(why) => Err(StoreError::Unavailable(why.clone())),
            None => Ok(()),
        }
    }
}

/// Free space kept back on the database's disk: a file of `size` bytes, allocated while there
/// is room. When a write finds the disk full, the reserve is released and only writes that
/// free space (deletes) are taken until there is room for it again; so a full disk can always
/// be emptied through the API. `size` 0 keeps no reserve.
struct DiskReserve {
    path: PathBuf,
    size: u64,
    /// The disk was found full and the reserve released.
    full: std::sync::atomic::AtomicBool,
    /// When room was last looked for, in milliseconds since the store opened.
    checked_at: std::sync::atomic::AtomicU64,
    opened: std::time::Instant,
}

impl DiskReserve {
    fn new(db: &Path, size: u64) -> DiskReserve {
        let mut path = db.as_os_str().to_owned();
        path.push("-reserve");
        let reserve = DiskReserve {
            path: path.into(),
            size,
            full: Default::default(),
            checked_at: Default::default(),
            opened: std::time::Instant::now(),
        };
        if let Err(e) = reserve.allocate() {
            tracing::warn!(error = %e, path = %reserve.path.display(), "cannot allocate the disk reserve");
            // No room for it: the disk is full already. (Any other failure, a read-only
            // filesystem, surfaces with the first write.)
            if e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded {
                reserve.full.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        reserve
    }

    /// Writes the reserve file in full (real blocks, not a sparse file).
    fn allocate(&self) -> std::io::Result<()> {
        use std::io::Write;
        if self.size == 0 {
            return Ok(());
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.size) {
            return Ok(());
        }
        let result = (|| {
            let mut file = std::fs::File::create(&self.path)?;
            let zeros = vec![0u8; 64 * 1024];
            let mut left = self.size;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }

    fn is_full(&self) -> bool {
        self.full.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The disk is full: give the reserve back, so that deletes can run.
    fn release(&self) {
        if !self.full.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(path = %self.path.display(), "the database's disk is full: only deletes are taken until there is room");
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// While full, at most once a second: when the disk has room for the reserve and as much
    /// again, takes the reserve back and all writes again.
    fn look_for_room(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.is_full() {
            return;
        }
        let now = self.opened.elapsed().as_millis() as u64;
        let last = self.checked_at.load(Relaxed);
        if now.saturating_sub(last) < 1000 && last != 0
            || self.checked_at.compare_exchange(last, now.max(1), Relaxed, Relaxed).is_err()
        {
            return;
        }
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if free_bytes(dir).is_some_and(|free| free >= 2 * self.size.max(1024 * 1024)) && self.allocate().is_ok() {
            self.full.store(false, Relaxed);
            tracing::info!("the database's disk has room again: all writes are taken");
        }
    }
}

/// Bytes available to this process on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The identity of the database file as opened: the writer checks before each commit that the
/// path still names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileId { dev: m.dev(), ino: m.ino() })
    }
}

/// A write, run on the writer thread inside the batch's transaction.
struct Job {
    /// Whether it runs inside its own savepoint: a write that may fail after changing rows.
    /// A write without one makes all its checks before its first change, so it either
    /// refuses having changed nothing, or changes everything (or breaks the batch).
    isolated: bool,
    run: RunJob,
}

/// What a write does to the disk, for the admission of writes while the disk is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Adds or changes data.
    Grows,
    /// Removes data (a delete): taken even when the disk is full.
    Frees,
}

/// A write's body: how it ended, and how to answer its caller once its commit is decided.
type RunJob = Box<dyn FnOnce(&mut Batch<'_>) -> (Outcome, Reply) + Send>;

/// How a write ended, before the commit.
#[derive(Debug)]
enum Outcome {
    Done,
    /// Refused by its own checks: nothing of it stays.
    Refused,
    /// A database error in a write without a savepoint: the batch cannot commit.
    Broken(StoreError),
}

/// How to answer a write's caller once the fate of its commit is known.
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What a write sees on the writer thread: the batch's transaction and the images the
/// batch's earlier writes changed.
struct Batch<'a> {
    conn: &'a Connection,
    cache: &'a ImageCache,
    /// The state of each image this batch changed so far; `None`: only the database knows.
    changed: HashMap<String, Option<Arc<Image>>>,
    /// A write of the batch found the disk full (even if its savepoint let the batch go on).
    full: bool,
}

impl Batch<'_> {
    /// Image `id` as this transaction sees it: as an earlier write of the batch left it, else
    /// the read cache's copy (which the writer keeps true: it publishes or drops every image
    /// it changes before the next batch), else read from the database.
    fn image(&self, id: &str) -> rusqlite::Result<Option<Arc<Image>>> {
        match self.changed.get(id) {
            Some(Some(image)) => return Ok(Some(image.clone())),
            Some(None) => {}
            None => {
                if let Some(image) = self.cache.get(id) {
                    return Ok(Some(image));
                }
            }
        }
        Ok(load_image(self.conn, id)?.map(Arc::new))
    }
}

impl From<rusqlite::Error> for StoreError {
    /// A full disk, and a database that cannot be read or written now, are failures of the
    /// store that pass (503); anything else is a defect (500). A syntax error's text quotes
    /// its whole statement: only the message is kept.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                C::DiskFull => StoreError::Full(error_text(&e)),
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::ReadOnly
                | C::SystemIoFailure
                | C::CannotOpen
                | C::OutOfMemory
                | C::FileLockingProtocolFailed
                | C::NotADatabase
                | C::DatabaseCorrupt
                | C::PermissionDenied
                | C::NoLargeFileSupport => StoreError::Unavailable(error_text(&e)),
                _ => StoreError::Internal(error_text(&e)),
            },
            rusqlite::Error::SqlInputError { msg, offset, .. } => {
                StoreError::Internal(error_text(format!("{msg} at offset {offset}")))
            }
            _ => StoreError::Internal(error_text(&e)),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it and starts the writer.
    /// `disk_reserve` bytes are kept back on its disk for deletes (see [`DiskReserve`]).
    pub fn open(path: &Path, synchronous: Synchronous, disk_reserve: u64) -> Result<SqliteStore, StoreError> {
        SqliteStore::try_open(path, synchronous, disk_reserve).map_err(|e| match e {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                "{why} (the database and its directory must be writable: is either read-only?)"
            )),
            other => other,
        })
    }

    fn try_open(path: &Path, synchronous: Synchronous, disk_reserve: u64) -> Result<SqliteStore, StoreError> {
        let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{}: cannot use a write-ahead log (journal mode {mode}): is the database or its directory read-only?",
                path.display()
            )));
        }
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The writer reads every image it changes: a page cache large enough for the hot part
        // of the catalogue keeps those reads off the file (the default 2 MiB made a third of a
        // write's time `pread`). Savepoint journals stay in memory.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB.to_string())?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        let before = migrate(&mut conn)?;
        let file = FileId::of(path).map_err(|e| StoreError::Unavailable(error_text(e)))?;

        let (tx, rx) = mpsc::sync_channel::<Job>(MAX_QUEUED_WRITES);
        let cache = Arc::new(ImageCache::new(None));
        let health = Arc::new(Health {
            lost: Default::default(),
            reserve: DiskReserve::new(path, disk_reserve),
            queued: Default::default(),
        });
        let writer = Writer { conn, cache: cache.clone(), health: health.clone(), path: path.to_owned(), file };
        let writer_thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer.run(rx);
                // The store is closing: fold the WAL into the database and empty it, so that
                // the next start does not have to read it back (after a bulk `image create`
                // it can hold hundreds of megabytes). Best effort: a crash skips it safely.
                if let Err(e) = writer.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "closing checkpoint failed");
                }
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let id = NEXT_STORE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(SqliteStore {
            id,
            path: path.to_owned(),
            cache,
            readers: Mutex::new(Vec::new()),
            read_slots: tokio::sync::Semaphore::new(READ_POOL),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(writer_thread)),
            health,
            new: !existed || before == 0,
        })
    }

    /// Closes the writer's queue and waits for the writer to finish what it holds (and
    /// checkpoint). Later writes are refused as unavailable.
    fn shut_writer(&self) {
        drop(self.writer.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Image `id` if `who` may see it, from the cache or read ([`SqliteStore::fetch`]).
    fn visible_image(&self, who: &Principal, id: &str) -> Result<Arc<Image>, StoreError> {
        super::visible(self.fetch(id)?, who)
    }

    /// Image `id` from the cache, or read (and cached).
    fn fetch(&self, id: &str) -> Result<Option<Arc<Image>>, StoreError> {
        self.health.check()?;
        if let Some(image) = self.cache.get(id) {
            self.cache.hit();
            return Ok(Some(image));
        }
        self.cache.miss();
        let seen = self.cache.generation();
        let Some(image) = self.read_inline(|c| Ok(load_image(c, id)?))? else {
            return Ok(None);
        };
        let image = Arc::new(image);
        self.cache.fill(seen, image.clone());
        Ok(Some(image))
    }

    fn reader(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        self.open_reader()
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let c = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(c)
    }

    /// Runs `f` in a read snapshot on this thread, with this thread's connection.
    fn read_inline<R>(&self, f: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        THREAD_READERS.with(|cell| {
            let mut conns = cell.borrow_mut();
            let at = match conns.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    conns.push((self.id, self.open_reader()?));
                    conns.len() - 1
                }
            };
            let tx = conns[at].1.transaction()?;
            let r = f(&tx)?;
            tx.finish()?;
            Ok(r)
        })
    }

    /// Runs `f` in a read snapshot on a blocking thread.
    pub(super) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.health.check()?;
        let _slot = match tokio::time::timeout(READ_WAIT, self.read_slots.acquire()).await {
            Ok(slot) => slot.map_err(|e| StoreError::Internal(e.to_string()))?,
            Err(_) => return Err(StoreError::Unavailable("every read connection is busy (overload)".into())),
        };
        let mut conn = self.reader()?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let tx = conn.transaction()?;
                let r = f(&tx)?;
                tx.finish()?;
                Ok(r)
            })();
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        result
    }

    /// Queues `f` for the writer, inside its own savepoint; resolves once the transaction
    /// holding it has committed. `touches` names the images it may change: they are dropped
    /// from the read cache after the commit, before the caller hears of it.
    pub(super) async fn write<R: Send + 'static>(
        &self,
        kind: Kind,
        touches: Vec<String>,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.enqueue(kind, true, move |batch| {
            let result = f(batch.conn);
            batch.full |= matches!(result, Err(StoreError::Full(_)));
            // Dropped from the cache whether or not it succeeded: always true.
            for id in touches {
                batch.changed.insert(id, None);
            }
            let outcome = if result.is_ok() { Outcome::Done } else { Outcome::Refused };
            (outcome, result)
        })
        .await
    }

    /// [`SqliteStore::write`] for a write that refuses with its own error `E`: a refusal
    /// (`Ok(Err(_))` from `f`) rolls its savepoint back as a failure does, and reaches the
    /// caller once the batch's commit is decided.
    pub(super) async fn write_refusable<R: Send + 'static, E: Send + 'static>(
        &self,
        kind: Kind,
        f: impl FnOnce(&Connection) -> Result<Result<R, E>, StoreError> + Send + 'static,
    ) -> Result<Result<R, E>, StoreError> {
        self.enqueue(kind, true, move |batch| {
            let result = f(batch.conn);
            batch.full |= matches!(result, Err(StoreError::Full(_)));
            let outcome = if matches!(result, Ok(Ok(_))) { Outcome::Done } else { Outcome::Refused };
            (outcome, result)
        })
        .await
    }

    /// Queues a write, in a savepoint of its own when `isolated` (see [`Job::isolated`]).
    /// Refused at once when the database is lost, when the disk is full and the write would
    /// not free space, and when the queue is full.
    async fn enqueue<R: Send + 'static>(
        &self,
        kind: Kind,
        isolated: bool,
        f: impl FnOnce(&mut Batch<'_>) -> (Outcome, Result<R, StoreError>) + Send + 'static,
    ) -> Result<R, StoreError> {
        self.health.check()?;
        let reserve = &self.health.reserve;
        reserve.look_for_room();
        if kind == Kind::Grows && reserve.is_full() {
            return Err(StoreError::Full("the database's disk is full; only deletes are taken".into()));
        }
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |batch: &mut Batch<'_>| {
            let (outcome, result) = f(batch);
            let reply: Reply = Box::new(move |committed| {
                let _ = tx.send(committed.and(result));
            });
            (outcome, reply)
        });
        {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let writer = writer.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            self.health.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            writer
                .try_send(Job { isolated, run })
                .inspect_err(|_| {
                    self.health.queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                })
                .map_err(|e| match e {
                    mpsc::TrySendError::Full(_) => {
                        StoreError::Unavailable("too many writes are queued (overload)".into())
                    }
                    mpsc::TrySendError::Disconnected(_) => StoreError::Unavailable("the writer has stopped".into()),
                })?;
        }
        // Dropped unanswered only when the writer could not start the batch (its own error
        // was logged): nothing of the write happened.
        rx.await.map_err(|_| StoreError::Unavailable("the write could not be started".into()))?
    }
}

/// Brings the schema up to date; returns the version it was at (0: an empty database).
fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    // Up to date: no write transaction, so start-up never waits for an fsync.
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current == MIGRATIONS.len() as i64 {
        return Ok(current);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database schema is version {applied}, newer than this imagemeta ({})",
            MIGRATIONS.len()
        )));
    }
    if applied > 0 {
        tracing::info!(
            from = applied,
            to = MIGRATIONS.len(),
            "migrating the database schema; on a large catalogue this takes a while \
             (about a minute per million images), and the server listens afterwards"
        );
    }
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(current)
}

/// Runs one statement of the writer's transaction control, prepared once.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The writer thread's state: the only writing connection, and what it keeps true.
struct Writer {
    conn: Connection,
    cache: Arc<ImageCache>,
    health: Arc<Health>,
    /// The database's path, and the file it named when opened.
    path: PathBuf,
    file: FileId,
}

impl Writer {
    /// Group commit over whatever is queued, until the queue closes.
    fn run(&self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.batch(jobs);
        }
    }

    /// The path must still name the file the connection has open: a database deleted or
    /// replaced under the server would take writes that no one reads again.
    fn file_is_ours(&self) -> Result<(), StoreError> {
        self.health.check()?;
        match FileId::of(&self.path) {
            Ok(id) if id == self.file => Ok(()),
            // Transient failures to stat (EIO, EMFILE) do not condemn the store.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Unavailable(error_text(e))),
            _ => {
                let why = format!(
                    "the database file {} was removed or replaced while open: writes are refused; restart imagemeta",
                    self.path.display()
                );
                tracing::error!("{why}");
                let _ = self.health.lost.set(why.clone());
                Err(StoreError::Unavailable(why))
            }
        }
    }

    /// Runs `jobs` in one transaction and answers each once its fate is known.
    fn batch(&self, jobs: Vec<Job>) {
        self.health.queued.fetch_sub(jobs.len(), std::sync::atomic::Ordering::Relaxed);
        metrics::histogram!("imagemeta_store_write_batch_size").record(jobs.len() as f64);
        let started = std::time::Instant::now();
        self.run_batch(jobs);
        metrics::histogram!("imagemeta_store_commit_seconds").record(started.elapsed().as_secs_f64());
    }

    fn run_batch(&self, jobs: Vec<Job>) {
        let conn = &self.conn;
        let cache = &*self.cache;
        let begun = self.file_is_ours().and_then(|()| run(conn, "BEGIN IMMEDIATE").map_err(StoreError::from));
        if let Err(e) = begun {
            // Nothing ran: each caller hears why.
            tracing::error!(error = %e, "cannot begin a write transaction");
            self.note(&e);
            let mut batch = Batch { conn, cache, changed: HashMap::new(), full: false };
            for job in jobs {
                let (_, reply) = (job.run)(&mut batch);
                reply(Err(e.clone()));
            }
            return;
        }
        let mut batch = Batch { conn, cache, changed: HashMap::new(), full: false };
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
        let mut broken: Option<StoreError> = None;
        for job in jobs {
            let outcome = if job.isolated {
                run(conn, "SAVEPOINT w").map(|()| (job.run)(&mut batch)).and_then(|(outcome, reply)| {
                    if !matches!(outcome, Outcome::Done) {
                        run(conn, "ROLLBACK TO w")?;
                    }
                    run(conn, "RELEASE w").map(|()| (outcome, reply))
                })
            } else {
                Ok((job.run)(&mut batch))
            };
            match outcome {
                Ok((Outcome::Broken(e), reply)) => {
                    replies.push(reply);
                    broken = Some(e);
                    break;
                }
                Ok((_, reply)) => replies.push(reply),
                Err(e) => {
                    tracing::error!(error = %e, "a write could not be isolated");
                    broken = Some(e.into());
                    break;
                }
            }
        }
        // The writes after a broken one never ran: dropping them answers their callers.
        let committed = match broken {
            None => run(conn, "COMMIT").map_err(StoreError::from),
            Some(e) => Err(e),
        };
        if batch.full {
            self.health.reserve.release();
        }
        let changed = std::mem::take(&mut batch.changed);
        match &committed {
            Ok(()) => cache.publish(changed),
            Err(e) => {
                tracing::error!(error = %e, "no write of the batch is acknowledged");
                self.note(e);
                let _ = conn.execute_batch("ROLLBACK");
                cache.publish(changed.into_keys().map(|id| (id, None)).collect());
            }
        }
        for reply in replies {
            reply(committed.clone());
        }
    }

    /// Learns from a failed batch: a full disk releases the reserve.
    fn note(&self, e: &StoreError) {
        if matches!(e, StoreError::Full(_)) {
            self.health.reserve.release();
        }
    }
}

const IMAGE_COLUMNS: &str = "id, name, status, visibility, owner, protected, os_hidden, size, \
     virtual_size, min_disk, min_ram, disk_format, container_format, checksum, os_hash_algo, \
     os_hash_value, created_at, updated_at, upload_node, upload_staging, store, location, replicas";

/// [`IMAGE_COLUMNS`] of `images i`.
const IMAGE_COLUMNS_AS_I: &str = "i.id, i.name, i.status, i.visibility, i.owner, i.protected, i.os_hidden, \
     i.size, i.virtual_size, i.min_disk, i.min_ram, i.disk_format, i.container_format, i.checksum, \
     i.os_hash_algo, i.os_hash_value, i.created_at, i.updated_at, i.upload_node, i.upload_staging, i.store, \
     i.location, i.replicas";

fn from_micros(us: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e)))
}

fn bad_column(col: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        format!("unknown {what} in the database").into(),
    )
}

/// One `images` row, without properties and tags.
fn image_from_row(row: &Row<'_>) -> rusqlite::Result<Image> {
    let status: String = row.get(2)?;
    let visibility: String = row.get(3)?;
    Ok(Image {
        id: row.get(0)?,
        name: row.get(1)?,
        status: ImageStatus::parse(&status).ok_or_else(|| bad_column(2, "status"))?,
        visibility: Visibility::parse(&visibility).ok_or_else(|| bad_column(3, "visibility"))?,
        owner: row.get(4)?,
        protected: row.get(5)?,
        os_hidden: row.get(6)?,
        size: row.get(7)?,
        virtual_size: row.get(8)?,
        min_disk: row.get(9)?,
        min_ram: row.get(10)?,
        disk_format: row.get(11)?,
        container_format: row.get(12)?,
        checksum: row.get(13)?,
        os_hash_algo: row.get(14)?,
        os_hash_value: row.get(15)?,
        created_at: from_micros(row.get(16)?)?,
        updated_at: from_micros(row.get(17)?)?,
        tags: Vec::new(),
        properties: Properties::default(),
        members: Vec::new(),
        upload: match (row.get::<_, Option<String>>(18)?, row.get::<_, Option<String>>(19)?) {
            (Some(node), staging) => Some(UploadLease { node, staging: staging.unwrap_or_default() }),
            (None, _) => None,
        },
        store: row.get(20)?,
        location: row.get(21)?,
        replicas: Replica::decode(row.get::<_, Option<String>>(22)?.as_deref())
            .ok_or_else(|| bad_column(22, "replica list"))?,
        memo: Default::default(),
    })
}

/// One image's properties in their stored order (sorted here: cheaper than SQLite's sorter).
fn load_properties(conn: &Connection, id: &str) -> rusqlite::Result<Properties> {
    let mut stmt = conn.prepare_cached("SELECT position, name, value FROM image_properties WHERE image_id = ?1")?;
    let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
    Ok(in_position_order(rows))
}

/// Properties from `(position, name, value)` rows, in position order.
fn in_position_order(mut rows: Vec<(i64, String, Option<String>)>) -> Properties {
    rows.sort_unstable_by_key(|(position, _, _)| *position);
    Properties::new(rows.into_iter().map(|(_, name, value)| (name, value)).collect())
}

fn load_members(conn: &Connection, id: &str) -> rusqlite::Result<Vec<Member>> {
    let mut stmt = conn.prepare_cached(
        "SELECT member, status, created_at, updated_at FROM image_members WHERE image_id = ?1 ORDER BY created_at, member",
    )?;
    stmt.query_map([id], |r| {
        let status: String = r.get(1)?;
        Ok(Member {
            project: r.get(0)?,
            status: MemberStatus::parse(&status).ok_or_else(|| bad_column(1, "member status"))?,
            created_at: from_micros(r.get(2)?)?,
            updated_at: from_micros(r.get(3)?)?,
        })
    })?
    .collect()
}

fn write_members(conn: &Connection, image: &Image) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM image_members WHERE image_id = ?1")?.execute([&image.id])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO image_members (image_id, member, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for m in &image.members {
        insert.execute(params![image.id, m.project, m.status.as_str(), micros(m.created_at), micros(m.updated_at)])?;
    }
    Ok(())
}

fn load_tags(conn: &Connection, id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT tag FROM image_tags WHERE image_id = ?1 ORDER BY tag")?;
    stmt.query_map([id], |r| r.get(0))?.collect()
}

/// The whole image (properties, members, tags), or `None`.
fn load_image(conn: &Connection, id: &str) -> rusqlite::Result<Option<Image>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1"))?;
    let Some(mut image) = stmt.query_row([id], image_from_row).optional()? else {
        return Ok(None);
    };
    image.properties = load_properties(conn, id)?;
    image.members = load_members(conn, id)?;
    image.tags = load_tags(conn, id)?;
    Ok(Some(image))
}

/// The image if `who` may see it, else `NotFound`.
fn visible_image(conn: &Connection, who: &Principal, id: &str) -> Result<Image, StoreError> {
    super::visible(load_image(conn, id)?, who)
}

/// Sets `updated_at` to now; returns it as stored (to the microsecond).
fn touch(conn: &Connection, id: &str) -> rusqlite::Result<OffsetDateTime> {
    let at = micros(now());
    conn.prepare_cached("UPDATE images SET updated_at = ?2 WHERE id = ?1")?.execute(params![id, at])?;
    from_micros(at)
}

/// Sets property `key` of image `id`. `exists` says whether the image has the key (as the
/// caller's copy of it says): an existing key keeps its position, a new one goes last.
fn upsert_property(conn: &Connection, id: &str, key: &str, value: Option<&str>, exists: bool) -> rusqlite::Result<()> {
    if exists {
        let changed = conn
            .prepare_cached("UPDATE image_properties SET value = ?3 WHERE image_id = ?1 AND name = ?2")?
            .execute(params![id, key, value])?;
        if changed == 1 {
            return Ok(());
        }
    }
    conn.prepare_cached(
        "INSERT INTO image_properties (image_id, name, value, position) VALUES (?1, ?2, ?3, \
         (SELECT coalesce(max(position), 0) + 1 FROM image_properties WHERE image_id = ?1)) \
         ON CONFLICT (image_id, name) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![id, key, value])?;
    Ok(())
}

fn delete_property(conn: &Connection, id: &str, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM image_properties WHERE image_id = ?1 AND name = ?2")?.execute(params![id, key])?;
    Ok(())
}

/// The metadata transaction body (see [`Store::change_metadata`] for the order of checks).
/// Every check comes before the first change, so it needs no savepoint: the outer error is a
/// database failure (the batch cannot commit), the inner one a refusal that changed nothing.
/// Returns the image as changed.
fn change_metadata_tx(
    batch: &Batch<'_>,
    who: &Principal,
    id: &str,
    change: MetadataChange,
    quota: MetadataQuota,
) -> rusqlite::Result<Result<Image, StoreError>> {
    let image = match super::visible(batch.image(id)?, who) {
        Ok(image) => image,
        Err(not_found) => return Ok(Err(not_found)),
    };
    let plan = match plan::metadata(&image, who, change, quota) {
        Ok(plan) => plan,
        Err(refused) => return Ok(Err(refused)),
    };
    let conn = batch.conn;
    for k in &plan.deletes {
        delete_property(conn, id, k)?;
    }
    for (k, v, exists) in &plan.upserts {
        upsert_property(conn, id, k, Some(v), *exists)?;
    }
    let updated_at = touch(conn, id)?;
    // The plan's properties are what the table now holds, in its order.
    let mut changed = Image::clone(&image);
    changed.properties = plan.after;
    changed.updated_at = updated_at;
    Ok(Ok(changed))
}

fn delete_image_tx(conn: &Connection, who: &Principal, id: &str) -> Result<Image, StoreError> {
    let image = visible_image(conn, who, id)?;
    if !policy::authorize(who, &Rule::DeleteImage, Some(&image)) {
        return Err(StoreError::Forbidden);
    }
    if image.protected {
        return Err(StoreError::Protected);
    }
    conn.prepare_cached("DELETE FROM images WHERE id = ?1")?.execute([id])?;
    conn.prepare_cached("INSERT OR REPLACE INTO deleted_image_ids (id, deleted_at) VALUES (?1, ?2)")?
        .execute(params![id, micros(now())])?;
    Ok(image)
}

fn write_row(conn: &Connection, image: &Image, insert: bool) -> rusqlite::Result<()> {
    let sql = if insert {
        format!(
            "INSERT INTO images ({IMAGE_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"
        )
    } else {
        "UPDATE images SET name = ?2, status = ?3, visibility = ?4, owner = ?5, protected = ?6, os_hidden = ?7, \
         size = ?8, virtual_size = ?9, min_disk = ?10, min_ram = ?11, disk_format = ?12, container_format = ?13, \
         checksum = ?14, os_hash_algo = ?15, os_hash_value = ?16, created_at = ?17, updated_at = ?18, \
         upload_node = ?19, upload_staging = ?20, store = ?21, location = ?22, replicas = ?23 WHERE id = ?1"
            .to_owned()
    };
    conn.prepare_cached(&sql)?.execute(params![
        image.id,
        image.name,
        image.status.as_str(),
        image.visibility.as_str(),
        image.owner,
        image.protected,
        image.os_hidden,
        image.size,
        image.virtual_size,
        image.min_disk,
        image.min_ram,
        image.disk_format,
        image.container_format,
        image.checksum,
        image.os_hash_algo,
        image.os_hash_value,
        micros(image.created_at),
        micros(image.updated_at),
        image.upload.as_ref().map(|u| &u.node),
        image.upload.as_ref().map(|u| &u.staging),
        image.store,
        image.location,
        Replica::encode(&image.replicas),
    ])?;
    Ok(())
}

fn write_tags(conn: &Connection, image: &Image) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM image_tags WHERE image_id = ?1")?.execute([&image.id])?;
    let mut tag = conn.prepare_cached("INSERT OR IGNORE INTO image_tags (image_id, tag) VALUES (?1, ?2)")?;
    for t in &image.tags {
        tag.execute(params![image.id, t])?;
    }
    Ok(())
}

/// Runs a statement built by [`sql`].
fn execute(c: &Connection, statement: sql::Sql) -> Result<(), StoreError> {
    c.prepare_cached(&statement.text)?.execute(params_from_iter(statement.args.into_iter().map(bind)))?;
    Ok(())
}

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<sql::TaskRow> {
    Ok(sql::TaskRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        status: r.get(2)?,
        owner: r.get(3)?,
        image_id: r.get(4)?,
        request_id: r.get(5)?,
        user_id: r.get(6)?,
        input: r.get(7)?,
        result: r.get(8)?,
        message: r.get(9)?,
        expires_at: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        node: r.get(13)?,
    })
}

fn load_task(c: &Connection, id: &str) -> Result<Option<Task>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {} FROM tasks WHERE id = ?1", sql::TASK_COLUMNS))?;
    let row = stmt.query_row([id], task_row).optional()?;
    row.map(|r| r.into_task().map_err(StoreError::Internal)).transpose()
}

fn insert_image_tx(conn: &Connection, image: &Image) -> Result<(), StoreError> {
    let taken = conn.prepare_cached("SELECT 1 FROM images WHERE id = ?1")?.exists([&image.id])?
        || conn.prepare_cached("SELECT 1 FROM deleted_image_ids WHERE id = ?1")?.exists([&image.id])?;
    if taken {
        return Err(StoreError::Conflict(image.id.clone()));
    }
    write_row(conn, image, true)?;
    let mut prop =
        conn.prepare_cached("INSERT INTO image_properties (image_id, name, value, position) VALUES (?1, ?2, ?3, ?4)")?;
    for (position, (k, v)) in (1i64..).zip(image.properties.iter()) {
        prop.execute(params![image.id, k, v, position])?;
    }
    write_tags(conn, image)?;
    Ok(write_members(conn, image)?)
}

/// Loads, modifies and saves one image: only the properties that changed are written, so
/// their insertion order is kept.
fn modify_image_tx(
    conn: &Connection,
    who: &Principal,
    id: &str,
    rule: &Rule,
    change: Modification,
) -> Result<Image, StoreError> {
    let before = visible_image(conn, who, id)?;
    if !policy::authorize(who, rule, Some(&before)) {
        return Err(StoreError::Forbidden);
    }
    let mut after = before.clone();
    change(&mut after).map_err(StoreError::Rejected)?;
    after.id = before.id.clone();
    after.updated_at = now();
    write_row(conn, &after, false)?;
    let diff = plan::diff(&before, &after);
    for k in &diff.removed {
        delete_property(conn, id, k)?;
    }
    for (k, v, existed) in &diff.set {
        upsert_property(conn, id, k, *v, *existed)?;
    }
    if diff.tags {
        write_tags(conn, &after)?;
    }
    if diff.members {
        write_members(conn, &after)?;
    }
    after.properties = load_properties(conn, id)?;
    after.tags = load_tags(conn, id)?;
    Ok(after)
}

/// An argument as SQLite binds it (booleans are integers).
pub(super) fn bind(arg: Arg) -> Value {
    match arg {
        Arg::Null => Value::Null,
        Arg::Int(n) => Value::Integer(n),
        Arg::Text(s) => Value::Text(s),
        Arg::Bool(b) => Value::Integer(b as i64),
    }
}

/// Runs the listing query (built by [`sql::list`]) after loading and checking the marker.
fn list_images_tx(conn: &Connection, caller: Caller<'_>, q: &ListQuery) -> Result<Vec<Image>, StoreError> {
    let found = match &q.marker {
        Some(marker) => load_image(conn, marker)?,
        None => None,
    };
    let marker = q.marker_for(caller, found)?;
    let statement = sql::list(Dialect::Sqlite, IMAGE_COLUMNS_AS_I, caller, q, marker.as_ref());
    let mut stmt = conn.prepare_cached(&statement.text)?;
    let args = statement.args.into_iter().map(bind);
    let mut images = stmt.query_map(params_from_iter(args), image_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    if q.detail && !images.is_empty() {
        load_page_details(conn, &mut images)?;
    }
    Ok(images)
}

/// Properties and tags of a page of images, two queries for the whole page.
fn load_page_details(conn: &Connection, images: &mut [Image]) -> rusqlite::Result<()> {
    let marks = vec!["?"; images.len()].join(", ");
    let ids: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
    let index: std::collections::HashMap<&str, usize> =
        ids.iter().enumerate().map(|(n, id)| (id.as_str(), n)).collect();
    let position = |id: &str| index.get(id).copied();
    let mut props: Vec<Vec<(i64, String, Option<String>)>> = vec![Vec::new(); images.len()];
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT image_id, position, name, value FROM image_properties WHERE image_id IN ({marks})"
    ))?;
    let mut rows = stmt.query(params_from_iter(&ids))?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if let Some(at) = position(&id) {
            props[at].push((row.get(1)?, row.get(2)?, row.get(3)?));
        }
    }
    let mut tags: Vec<Vec<String>> = vec![Vec::new(); images.len()];
    let mut stmt =
        conn.prepare_cached(&format!("SELECT image_id, tag FROM image_tags WHERE image_id IN ({marks}) ORDER BY tag"))?;
    let mut rows = stmt.query(params_from_iter(&ids))?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if let Some(at) = position(&id) {
            tags[at].push(row.get(1)?);
        }
    }
    for ((image, p), t) in images.iter_mut().zip(props).zip(tags) {
        image.properties = in_position_order(p);
        image.tags = t;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_image(&self, who: &Principal, id: &str) -> Result<Arc<Image>, StoreError> {
        self.visible_image(who, id)
    }

    /// Always: a miss reads the database on the calling thread (see `read_inline`).
    fn get_image_at_once(&self, who: &Principal, id: &str) -> Option<Result<Arc<Image>, StoreError>> {
        Some(self.visible_image(who, id))
    }

    async fn find_image(&self, id: &str) -> Result<Option<Arc<Image>>, StoreError> {
        self.fetch(id)
    }

    async fn heartbeat(&self, node: &Node) -> Result<(), StoreError> {
        let node = node.clone();
        self.write(Kind::Grows, vec![], move |c| {
            c.prepare_cached(
                "INSERT INTO nodes (id, host, pid, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            )?
            .execute(params![node.id, node.host, node.pid, micros(node.started_at), micros(now())])?;
            Ok(())
        })
        .await
    }

    async fn unregister_node(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(Kind::Frees, vec![], move |c| {
            c.prepare_cached("DELETE FROM nodes WHERE id = ?1")?.execute([id])?;
            Ok(())
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id, host, pid, started_at, heartbeat_at FROM nodes")?;
            let nodes = stmt
                .query_map([], |r| {
                    Ok(Node {
                        id: r.get(0)?,
                        host: r.get(1)?,
                        pid: r.get(2)?,
                        started_at: from_micros(r.get(3)?)?,
                        heartbeat_at: from_micros(r.get(4)?)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(nodes)
        })
        .await
    }

    async fn held_uploads(&self) -> Result<Vec<(String, UploadLease)>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, upload_node, upload_staging FROM images WHERE upload_node IS NOT NULL")?;
            let held = stmt
                .query_map([], |r| {
                    let staging: Option<String> = r.get(2)?;
                    Ok((r.get(0)?, UploadLease { node: r.get(1)?, staging: staging.unwrap_or_default() }))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(held)
        })
        .await
    }

    async fn deleted_ids(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        let after = after.map(str::to_owned);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, deleted_at FROM deleted_image_ids WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![after, limit as i64], |r| Ok((r.get(0)?, from_micros(r.get(1)?)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn insert_deleted_ids(&self, ids: Vec<(String, OffsetDateTime)>) -> Result<(), StoreError> {
        self.write(Kind::Grows, vec![], move |c| {
            let mut stmt =
                c.prepare_cached("INSERT OR REPLACE INTO deleted_image_ids (id, deleted_at) VALUES (?1, ?2)")?;
            for (id, at) in &ids {
                stmt.execute(params![id, micros(*at)])?;
            }
            Ok(())
        })
        .await
    }

    fn is_new(&self) -> bool {
        self.new
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.health.check()?;
        if self.health.reserve.is_full() {
            return Err(StoreError::Full("the database's disk is full".into()));
        }
        self.read_inline(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    fn observe(&self) {
        metrics::gauge!("imagemeta_store_write_queue_depth")
            .set(self.health.queued.load(std::sync::atomic::Ordering::Relaxed) as f64);
    }

    async fn close(&self) {
        tokio::task::block_in_place(|| self.shut_writer());
    }

    async fn list_images(&self, caller: Caller<'_>, query: &ListQuery) -> Result<Vec<Image>, StoreError> {
        let Some(query) = query.prepared()? else { return Ok(Vec::new()) };
        let who = match caller {
            Caller::User(p) => Some(p.clone()),
            Caller::Operator => None,
        };
        self.read(move |c| {
            let caller = who.as_ref().map_or(Caller::Operator, Caller::User);
            list_images_tx(c, caller, &query)
        })
        .await
    }

    async fn change_metadata(
        &self,
        who: &Principal,
        id: &str,
        change: MetadataChange,
        quota: MetadataQuota,
    ) -> Result<Properties, StoreError> {
        let (who, id) = (who.clone(), id.to_owned());
        self.enqueue(Kind::Grows, false, move |batch| match change_metadata_tx(batch, &who, &id, change, quota) {
            Ok(Ok(image)) => {
                let properties = image.properties.clone();
                batch.changed.insert(id, Some(Arc::new(image)));
                (Outcome::Done, Ok(properties))
            }
            Ok(Err(refused)) => (Outcome::Refused, Err(refused)),
            Err(e) => {
                tracing::error!(error = %e, image = %id, "a metadata write failed in the database");
                let e = StoreError::from(e);
                (Outcome::Broken(e.clone()), Err(e))
            }
        })
        .await
    }

    async fn modify_image(
        &self,
        who: &Principal,
        id: &str,
        rule: Rule,
        change: Modification,
    ) -> Result<Image, StoreError> {
        let (who, id) = (who.clone(), id.to_owned());
        self.write(Kind::Grows, vec![id.clone()], move |c| modify_image_tx(c, &who, &id, &rule, change)).await
    }

    async fn delete_image(&self, who: &Principal, id: &str) -> Result<Image, StoreError> {
        let (who, id) = (who.clone(), id.to_owned());
        self.write(Kind::Frees, vec![id.clone()], move |c| delete_image_tx(c, &who, &id)).await
    }

    async fn insert_task(&self, task: Task) -> Result<(), StoreError> {
        self.write(Kind::Grows, vec![], move |c| {
            if c.prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?.exists([&task.id])? {
                return Err(StoreError::Conflict(task.id.clone()));
            }
            execute(c, sql::task_write(Dialect::Sqlite, &task, false))
        })
        .await
    }

    async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| load_task(c, &id)).await
    }

    async fn update_task(&self, id: &str, change: TaskChange) -> Result<Task, StoreError> {
        let id = id.to_owned();
        self.write(Kind::Grows, vec![], move |c| {
            let mut task = load_task(c, &id)?.ok_or(StoreError::NotFound)?;
            change(&mut task);
            task.id = id;
            task.updated_at = now();
            execute(c, sql::task_write(Dialect::Sqlite, &task, true))?;
            Ok(task)
        })
        .await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, StoreError> {
        let query = query.clone();
        self.read(move |c| {
            let marker = match &query.marker {
                None => None,
                Some(m) => Some(
                    load_task(c, m)?
                        .filter(|t| query.owner.as_ref().is_none_or(|o| *o == t.owner))
                        .ok_or_else(|| StoreError::MarkerNotFound(m.clone()))?,
                ),
            };
            let statement = sql::task_listing(Dialect::Sqlite, &query, marker.as_ref(), now());
            let mut stmt = c.prepare_cached(&statement.text)?;
            let rows = stmt.query_map(params_from_iter(statement.args.into_iter().map(bind)), task_row)?;
            rows.map(|r| r?.into_task().map_err(StoreError::Internal)).collect()
        })
        .await
    }

    async fn running_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {} FROM tasks WHERE node IS NOT NULL AND status IN ('pending', 'processing')",
                sql::TASK_COLUMNS
            ))?;
            let rows = stmt.query_map([], task_row)?;
            rows.map(|r| r?.into_task().map_err(StoreError::Internal)).collect()
        })
        .await
    }

    async fn purge_tasks(&self, at: OffsetDateTime) -> Result<usize, StoreError> {
        self.write(Kind::Frees, vec![], move |c| {
            Ok(c.prepare_cached("DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?1")?
                .execute([micros(at)])?)
        })
        .await
    }

    async fn insert_images(&self, images: Vec<Image>) -> Result<Vec<Image>, StoreError> {
        let ids = images.iter().map(|i| i.id.clone()).collect();
        self.write(Kind::Grows, ids, move |c| {
            // In key order: a large batch then fills each B-tree page once, in order, instead
            // of revisiting pages that were already spilled from the cache (a bulk import of
            // random UUIDs was 2.5 times slower otherwise).
            let mut in_key_order: Vec<&Image> = images.iter().collect();
            in_key_order.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            for image in in_key_order {
                insert_image_tx(c, image)?;
            }
            Ok(images)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metadata::{MetadataKey, MetadataValue};

    fn temp_store() -> (SqliteStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("imagemeta-store-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteStore::open(&dir.join("db"), Synchronous::Full, 0).unwrap(), dir)
    }

    fn owner() -> Principal {
        Principal::new("u".into(), "p".into(), vec!["member".into()])
    }

    /// A store holding image `img` of project `p`, with no properties.
    async fn store_with_image() -> (std::sync::Arc<SqliteStore>, PathBuf) {
        let (store, dir) = temp_store();
        let mut image = Image::new("img".into(), now());
        image.owner = Some("p".into());
        store.insert_image(image).await.unwrap();
        (std::sync::Arc::new(store), dir)
    }

    /// After a failed batch (which left `img` without properties), the next batch commits.
    async fn assert_writer_goes_on(store: &SqliteStore) {
        store.change_metadata(&owner(), "img", merge("later"), MetadataQuota(None)).await.unwrap();
        assert_eq!(store.get_image(&owner(), "img").await.unwrap().properties.len(), 1);
    }

    /// Occupies the writer until `release` is sent, so that the writes queued meanwhile form
    /// one batch.
    async fn hold_writer(
        store: &std::sync::Arc<SqliteStore>,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let store = store.clone();
        let blocker = tokio::spawn(async move {
            store
                .write(Kind::Grows, vec![], move |_| {
                    let _ = hold.recv_timeout(std::time::Duration::from_secs(10));
                    Ok(())
                })
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (release, blocker)
    }

    /// Lets the writes queued behind `hold_writer` run as one batch, and checks that none of
    /// them was acknowledged.
    async fn release_failed_batch(
        release: std::sync::mpsc::Sender<()>,
        blocker: tokio::task::JoinHandle<Result<(), StoreError>>,
        writes: Vec<tokio::task::JoinHandle<Result<Properties, StoreError>>>,
    ) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for w in writes {
            assert!(w.await.unwrap().is_err_and(|e| e.is_failure()), "a write of the failed batch was acknowledged");
        }
    }

    fn merge(k: &str) -> MetadataChange {
        MetadataChange::Merge(vec![(MetadataKey::parse(k).unwrap(), MetadataValue::parse("v").unwrap())])
    }

    /// Group commit: when the commit of a batch fails, no write of the batch is acknowledged,
    /// and none of them is visible afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_fails_every_write_in_it() {
        let (store, dir) = store_with_image().await;

        // Hold the writer so that the writes below queue up and form one batch.
        let (release, blocker) = hold_writer(&store).await;
        let mut writes = Vec::new();
        for n in 0..8 {
            let store = store.clone();
            writes.push(tokio::spawn(async move {
                store.change_metadata(&owner(), "img", merge(&format!("k{n}")), MetadataQuota(None)).await
            }));
        }
        // The poison: a deferred foreign-key violation that only the COMMIT detects.
        let poison = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(Kind::Grows, vec![], |c| {
                        c.execute_batch(
                            "PRAGMA defer_foreign_keys = ON; \
                             INSERT INTO image_properties (image_id, name, value, position) VALUES ('nope', 'k', 'v', 1);",
                        )?;
                        Ok(())
                    })
                    .await
            })
        };
        release_failed_batch(release, blocker, writes).await;
        assert!(poison.await.unwrap().is_err());
        let after = store.get_image(&owner(), "img").await.unwrap();
        assert!(after.properties.is_empty(), "{:?}", after.properties);

        assert_writer_goes_on(&store).await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A metadata change runs without a savepoint: when the database refuses one of its
    /// statements, the whole batch fails, the writes before it in the batch included, and the
    /// read cache does not show any of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_error_in_a_metadata_change_fails_the_batch() {
        let (store, dir) = store_with_image().await;
        // Cached before the batch, so a wrongly published change would be seen.
        assert!(store.get_image(&owner(), "img").await.unwrap().properties.is_empty());
        store
            .write(Kind::Grows, vec![], |c| {
                c.execute_batch(
                    "CREATE TEMP TRIGGER boom BEFORE INSERT ON image_properties WHEN NEW.name = 'boom' \
                     BEGIN SELECT RAISE(ABORT, 'boom'); END;",
                )?;
                Ok(())
            })
            .await
            .unwrap();

        let (release, blocker) = hold_writer(&store).await;
        let mut writes = Vec::new();
        for key in ["k0", "k1", "k2", "boom", "k3", "k4"] {
            let store = store.clone();
            writes.push(tokio::spawn(async move {
                store.change_metadata(&owner(), "img", merge(key), MetadataQuota(None)).await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        release_failed_batch(release, blocker, writes).await;
        assert!(store.get_image(&owner(), "img").await.unwrap().properties.is_empty());
        let stored = store.read(|c| Ok(load_properties(c, "img")?)).await.unwrap();
        assert!(stored.is_empty(), "{stored:?}");

        assert_writer_goes_on(&store).await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The writer's queue is bounded: with the writer busy and the queue full, one more write
    /// is refused at once as unavailable (503) instead of waiting; the queued ones commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_write_queue_refuses_at_once() {
        let (store, dir) = store_with_image().await;
        let (release, blocker) = hold_writer(&store).await;
        let mut queued = Vec::new();
        for n in 0..MAX_QUEUED_WRITES {
            let store = store.clone();
            queued.push(tokio::spawn(async move {
                store.change_metadata(&owner(), "img", merge(&format!("k{n}")), MetadataQuota(None)).await
            }));
        }
        // Let every queued write reach the queue.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let refused = store.change_metadata(&owner(), "img", merge("one-too-many"), MetadataQuota(None)).await;
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(why)) if why.contains("too many writes are queued")),
            "{refused:?}"
        );
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for w in queued {
            w.await.unwrap().unwrap();
        }
        assert_eq!(store.get_image(&owner(), "img").await.unwrap().properties.len(), MAX_QUEUED_WRITES);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The quota is exact inside one batch: 20 writers of distinct keys, limit 5.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quota_holds_with_many_writers_in_one_batch() {
        let (store, dir) = store_with_image().await;
        let (release, blocker) = hold_writer(&store).await;
        let mut writes = Vec::new();
        for n in 0..20 {
            let store = store.clone();
            writes.push(tokio::spawn(async move {
                store.change_metadata(&owner(), "img", merge(&format!("k{n}")), MetadataQuota(Some(5))).await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut ok = 0;
        for w in writes {
            match w.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::QuotaExceeded) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 5);
        assert_eq!(store.get_image(&owner(), "img").await.unwrap().properties.len(), 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Migration 0004 keeps each image's property order (insertion order, not name order),
    /// and a key added afterwards goes last while a changed one keeps its place.
    #[tokio::test]
    async fn properties_keep_their_order_through_the_without_rowid_migration() {
        let dir = std::env::temp_dir().join(format!("imagemeta-store-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute_batch(
                "INSERT INTO images (id, status, visibility, owner, created_at, updated_at) \
                 VALUES ('a', 'active', 'shared', 'p', 1, 1), ('b', 'active', 'shared', 'p', 2, 2); \
                 INSERT INTO image_properties (image_id, name, value) VALUES \
                 ('a', 'zeta', '1'), ('b', 'x', NULL), ('a', 'alpha', '2'), ('a', 'mid', '3');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path, Synchronous::Full, 0).unwrap();
        let names = |image: &Image| image.properties.iter().map(|(k, _)| k.to_owned()).collect::<Vec<_>>();
        let a = store.get_image(&owner(), "a").await.unwrap();
        assert_eq!(names(&a), ["zeta", "alpha", "mid"]);
        let b = store.get_image(&owner(), "b").await.unwrap();
        assert_eq!(b.properties.iter().collect::<Vec<_>>(), [("x", None)]);

        let change = MetadataChange::Merge(vec![
            (MetadataKey::parse("alpha").unwrap(), MetadataValue::parse("changed").unwrap()),
            (MetadataKey::parse("new").unwrap(), MetadataValue::parse("4").unwrap()),
        ]);
        store.change_metadata(&owner(), "a", change, MetadataQuota(None)).await.unwrap();
        drop(store);
        // As stored, read back by a fresh process.
        let store = SqliteStore::open(&path, Synchronous::Full, 0).unwrap();
        let a = store.get_image(&owner(), "a").await.unwrap();
        assert_eq!(names(&a), ["zeta", "alpha", "mid", "new"]);
        assert_eq!(a.properties.get_str("alpha"), Some("changed"));
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A store that closes folds its WAL into the database: the next start reads nothing back.
    #[tokio::test]
    async fn closing_the_store_empties_the_wal() {
        let (store, dir) = temp_store();
        let images = (0..200).map(|n| Image::new(format!("img-{n}"), now())).collect();
        store.insert_images(images).await.unwrap();
        let wal = dir.join("db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the insert went to the WAL");
        // A read leaves this thread's read connection open: the writer's connection is not
        // the last one, so closing it alone would not checkpoint.
        let _ = store.get_image(&owner(), "img-0").await;
        drop(store);
        assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
        let conn = Connection::open(dir.join("db")).unwrap();
        let count: i64 = conn.query_row("SELECT count(*) FROM images", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 200);
        drop(conn);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The visibility rules, evaluated in memory ([`Cond::holds`]) and as the SQL a store runs,
/// agree on every image, caller and listing filter.
#[cfg(test)]
mod rules_agree {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::policy::{Cond, ListVisibility, listed_for, visible_to};
    use crate::domain::{ImageStatus, Visibility};

    fn image() -> impl Strategy<Value = Image> {
        let owner = prop::option::of(prop::sample::select(vec!["p", "q"]));
        let visibility = prop::sample::select(vec![
            Visibility::Public,
            Visibility::Private,
            Visibility::Shared,
            Visibility::Community,
        ]);
        let status = prop::sample::select(ImageStatus::ALL.to_vec());
        let member = (
            prop::sample::select(vec!["p", "q", "r"]),
            prop::sample::select(vec![MemberStatus::Pending, MemberStatus::Accepted, MemberStatus::Rejected]),
        );
        let members = prop::collection::vec(member, 0..3);
        (owner, visibility, status, any::<bool>(), members).prop_map(|(owner, visibility, status, hidden, members)| {
            let mut image = Image::new(uuid::Uuid::new_v4().to_string(), now());
            image.owner = owner.map(str::to_owned);
            image.visibility = visibility;
            image.status = status;
            image.os_hidden = hidden;
            let mut seen = Vec::new();
            for (project, status) in members {
                if !seen.contains(&project) {
                    seen.push(project);
                    image.members.push(Member {
                        project: project.into(),
                        status,
                        created_at: now(),
                        updated_at: now(),
                    });
                }
            }
            image
        })
    }

    fn cond() -> impl Strategy<Value = Cond> {
        let who = (prop::sample::select(vec!["p", "q", "r"]), any::<bool>()).prop_map(|(p, admin)| {
            Principal::new("u".into(), p.into(), vec![if admin { "admin" } else { "member" }.into()])
        });
        let visibility = prop::sample::select(vec![
            ListVisibility::Default,
            ListVisibility::All,
            ListVisibility::Only(Visibility::Public),
            ListVisibility::Only(Visibility::Private),
            ListVisibility::Only(Visibility::Shared),
            ListVisibility::Only(Visibility::Community),
        ]);
        let status = prop::option::of(prop::sample::select(vec![
            MemberStatus::Pending,
            MemberStatus::Accepted,
            MemberStatus::Rejected,
        ]));
        prop_oneof![
            who.clone().prop_map(|w| visible_to(&w)),
            (who, visibility, any::<bool>(), status).prop_map(|(w, v, h, s)| listed_for(&w, v, h, s)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn sql_and_memory_agree(images in prop::collection::vec(image(), 1..12), conds in prop::collection::vec(cond(), 1..8)) {
            let mut conn = Connection::open_in_memory().unwrap();
            migrate(&mut conn).unwrap();
            for image in &images {
                insert_image_tx(&conn, image).unwrap();
            }
            for cond in conds {
                let mut statement = sql::Sql::new(Dialect::Sqlite, "SELECT i.id FROM images i WHERE ");
                statement.cond(&cond);
                statement.push(" ORDER BY i.id");
                let mut stmt = conn.prepare(&statement.text).unwrap();
                let found: Vec<String> = stmt
                    .query_map(params_from_iter(statement.args.into_iter().map(bind)), |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                let mut expected: Vec<String> = images.iter().filter(|i| cond.holds(i)).map(|i| i.id.clone()).collect();
                expected.sort();
                prop_assert_eq!(found, expected, "{:?}", cond);
            }
        }
    }
}
