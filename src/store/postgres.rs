//! The PostgreSQL catalogue, for several imagemeta nodes on one database.
//!
//! # Layout
//! * An image is one row: its properties are in it (a JSON array of `[name, value]` pairs, in
//!   order), its tags and members in tables of their own, and a revision that every write of
//!   the row counts up.
//! * Every mutation applies the same plan as SQLite ([`plan`]) to the image as committed, in
//!   a transaction that holds the image's row (`SELECT … FOR UPDATE`) or, for the Compute
//!   API's metadata writes, optimistically: a batch of them is one `UPDATE` of the rows still
//!   at the revisions read ([`batch`]). Either way concurrent writers on any nodes never lose
//!   each other's keys, and never exceed a quota together. A write is acknowledged once
//!   PostgreSQL has committed it durably (`synchronous_commit`).
//! * Listings run the statement [`sql::list`] builds for both backends.
//! * Point reads are served from a read cache ([`ImageCache`]) that is coherent across nodes:
//!   the ids of the images a node changed go out on `NOTIFY imagemeta_images` after their
//!   commits (those of up to [`NOTIFY_WINDOW`] together), and each node
//!   listens on a connection of its own and drops what other nodes changed; while that
//!   connection is down the cache is bypassed and emptied, and each entry expires [`CACHE_TTL`]
//!   after the read that produced it, so a write acknowledged by one node is read by every
//!   node within that bound, whatever happens to the notifications (and by the writing node
//!   at once).
//! * Every operation has [`OP_TIMEOUT`]: an unreachable database is a 503 within it, never a
//!   hang; a connection that failed or timed out is discarded, and the pool connects anew when
//!   the database is back. Connections have TCP keepalives, a user timeout and a statement
//!   timeout.
//! * The schema is versioned; migrations run at start under an advisory lock, so nodes that
//!   start together migrate once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, NoTls, Row, Socket};

mod batch;

use super::cache::ImageCache;
use super::plan;
use super::sql::{self, Arg, Dialect, micros};
use super::{Caller, ListQuery, Modification, Store, StoreError, TaskChange, error_text, visible};
use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::policy::Rule;
use crate::domain::task::{Task, TaskQuery};
use crate::domain::{
    Image, ImageStatus, Member, MemberStatus, Node, Principal, Properties, Replica, UploadLease, Visibility, now,
    policy,
};
use crate::tls::Verify;

/// Versioned schema migrations, applied in order; `schema_migrations` records them.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_catalogue.sql"),
    include_str!("migrations/postgres/0002_image_store_and_location.sql"),
    include_str!("migrations/postgres/0003_tasks.sql"),
    include_str!("migrations/postgres/0004_metadefs.sql"),
    include_str!("migrations/postgres/0005_image_replicas.sql"),
    include_str!("migrations/postgres/0006_properties_in_the_image_row.sql"),
];

/// Taken while migrating: any value unique to imagemeta.
const MIGRATION_LOCK: i64 = 0x696d_6167_656d_6574; // "imagemet"

/// The channel of cache invalidations.
const CHANNEL: &str = "imagemeta_images";

/// The longest any store operation may take, from asking for a connection to the answer.
pub const OP_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a cached image may be served without news from the database.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// The most time a change waits to be notified to the other nodes (well within [`CACHE_TTL`]).
const NOTIFY_WINDOW: Duration = Duration::from_millis(20);

/// Connections in each node's pool.
const POOL_SIZE: usize = 16;

const IMAGE_COLUMNS_AS_I: &str = "i.id, i.name, i.status, i.visibility, i.owner, i.protected, i.os_hidden, \
     i.size, i.virtual_size, i.min_disk, i.min_ram, i.disk_format, i.container_format, i.checksum, \
     i.os_hash_algo, i.os_hash_value, i.created_at, i.updated_at, i.upload_node, i.upload_staging, i.store, \
     i.location, i.replicas";

/// An image's properties ([`Properties::encode`]) and its tags as an array, after
/// [`IMAGE_COLUMNS_AS_I`] (one statement, one snapshot).
const DETAIL_COLUMNS: &str = ", i.properties::text, \
     ARRAY(SELECT t.tag FROM image_tags t WHERE t.image_id = i.id ORDER BY t.tag COLLATE \"C\")";

/// The select of [`LOAD`] and [`LOAD_MANY`], without their `WHERE`.
macro_rules! load_select {
    () => {
        "SELECT i.id, i.name, i.status, i.visibility, i.owner, i.protected, i.os_hidden, \
     i.size, i.virtual_size, i.min_disk, i.min_ram, i.disk_format, i.container_format, i.checksum, \
     i.os_hash_algo, i.os_hash_value, i.created_at, i.updated_at, i.upload_node, i.upload_staging, i.store, \
     i.location, i.replicas, i.properties::text, coalesce(t.tags, '{}'), \
     coalesce(m.projects, '{}'), coalesce(m.statuses, '{}'), coalesce(m.created, '{}'), coalesce(m.updated, '{}'), \
     i.revision \
     FROM images i \
     LEFT JOIN LATERAL (SELECT array_agg(tag ORDER BY tag COLLATE \"C\") AS tags FROM image_tags WHERE image_id = i.id) t ON TRUE \
     LEFT JOIN LATERAL (SELECT array_agg(member ORDER BY created_at, member COLLATE \"C\") AS projects, \
       array_agg(status ORDER BY created_at, member COLLATE \"C\") AS statuses, \
       array_agg(created_at ORDER BY created_at, member COLLATE \"C\") AS created, \
       array_agg(updated_at ORDER BY created_at, member COLLATE \"C\") AS updated \
       FROM image_members WHERE image_id = i.id) m ON TRUE "
    };
}

/// One whole image by id, in one statement and one scan of each table: the columns of
/// [`IMAGE_COLUMNS_AS_I`], those of [`DETAIL_COLUMNS`], the members' arrays (by lateral
/// joins), then the row's revision ([`REVISION`]).
const LOAD: &str = concat!(load_select!(), "WHERE i.id = $1");
/// The images of the ids in `$1` (an array), each as [`LOAD`] reads one.
const LOAD_MANY: &str = concat!(load_select!(), "WHERE i.id = ANY($1)");
/// The column of [`LOAD`]'s rows holding the revision of the image's row: how many times it
/// was written (the metadata writes' optimistic check, see [`batch`]).
const REVISION: usize = 29;

/// A `postgres://` URL, as libpq takes it: `sslmode` (`disable`, `prefer` (the default),
/// `require`, `verify-ca`, `verify-full`) and `sslrootcert` are read here, the rest by
/// tokio-postgres. The password never shows when it is displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl(String);

#[derive(Debug, Clone)]
struct Parsed {
    config: tokio_postgres::Config,
    /// `None`: no TLS (`sslmode=disable`).
    tls: Option<(Verify, Option<std::path::PathBuf>)>,
}

impl PgUrl {
    pub fn parse(s: &str) -> Result<PgUrl, String> {
        let url = PgUrl(s.to_owned());
        url.parsed()?;
        Ok(url)
    }

    fn parsed(&self) -> Result<Parsed, String> {
        let (base, query) = self.0.split_once('?').unwrap_or((&self.0, ""));
        let mut mode = "prefer".to_owned();
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", v)) => mode = v.to_owned(),
                Some(("sslrootcert", v)) => root_cert = Some(std::path::PathBuf::from(v)),
                _ => rest.push(pair),
            }
        }
        let rebuilt = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
        let mut config: tokio_postgres::Config =
            rebuilt.parse().map_err(|e| format!("{}: not a PostgreSQL URL: {e}", self.masked()))?;
        let (ssl, tls) = match mode.as_str() {
            "disable" => (tokio_postgres::config::SslMode::Disable, None),
            // libpq: with a root certificate, `require` checks the chain as `verify-ca` does.
            "prefer" => (tokio_postgres::config::SslMode::Prefer, Some((Verify::Nothing, None))),
            "require" if root_cert.is_some() => {
                (tokio_postgres::config::SslMode::Require, Some((Verify::Chain, root_cert)))
            }
            "require" => (tokio_postgres::config::SslMode::Require, Some((Verify::Nothing, None))),
            "verify-ca" => (tokio_postgres::config::SslMode::Require, Some((Verify::Chain, root_cert))),
            "verify-full" => (tokio_postgres::config::SslMode::Require, Some((Verify::Full, root_cert))),
            other => {
                return Err(format!(
                    "{}: sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full",
                    self.masked()
                ));
            }
        };
        config.ssl_mode(ssl);
        Ok(Parsed { config, tls })
    }

    /// The URL without its password.
    pub fn masked(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else { return self.0.clone() };
        match rest.split_once('@') {
            Some((user, host)) if user.contains(':') => {
                format!("{scheme}://{}:***@{host}", user.split(':').next().unwrap_or(""))
            }
            _ => self.0.clone(),
        }
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// A database that cannot answer now (unreachable, shutting down, out of room, a timeout)
    /// is a failure that passes (503); anything else is a defect (500).
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // I/O, a closed connection, a protocol error, TLS: the database is out of reach.
            // The causes say why (a certificate that cannot be checked, a refused connection).
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text = format!("{text}: {c}");
                cause = c.source();
            }
            return StoreError::Unavailable(error_text(text));
        };
        let code = db.code();
        let text = error_text(format!("{}: {}", code.code(), db.message()));
        if *code == SqlState::DISK_FULL {
            StoreError::Full(text)
        } else if code.code().starts_with("08") // connection exceptions
            || code.code().starts_with("53") // insufficient resources
            || code.code().starts_with("57") // operator intervention: cancels, shutdowns
            || code.code().starts_with("40") // rollbacks: serialization, deadlock
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            StoreError::Unavailable(text)
        } else {
            StoreError::Internal(text)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(error_text(format!("no database connection: {other}"))),
        }
    }
}

/// A NULL of whatever type the statement expects (the keyset compares NULL columns).
#[derive(Debug)]
struct PgNull;

impl ToSql for PgNull {
    fn to_sql(&self, _: &Type, _: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

pub(super) fn bind(args: Vec<Arg>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    args.into_iter()
        .map(|a| -> Box<dyn ToSql + Sync + Send> {
            match a {
                Arg::Null => Box::new(PgNull),
                Arg::Int(n) => Box::new(n),
                Arg::Text(s) => Box::new(s),
                Arg::Bool(b) => Box::new(b),
            }
        })
        .collect()
}

pub(super) fn refs(args: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn from_micros(us: i64) -> Result<time::OffsetDateTime, StoreError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .map_err(|e| StoreError::Internal(format!("a time out of range in the database: {e}")))
}

fn bad(what: &str) -> StoreError {
    StoreError::Internal(format!("unknown {what} in the database"))
}

/// An image from a row of [`IMAGE_COLUMNS_AS_I`], with [`DETAIL_COLUMNS`] and
/// the members' arrays of [`LOAD`] when present.
fn image_from_row(row: &Row) -> Result<Image, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Internal(error_text(e));
    let status: String = row.try_get(2).map_err(get)?;
    let visibility: String = row.try_get(3).map_err(get)?;
    let mut image = Image::new(row.try_get(0).map_err(get)?, now());
    image.name = row.try_get(1).map_err(get)?;
    image.status = ImageStatus::parse(&status).ok_or_else(|| bad("status"))?;
    image.visibility = Visibility::parse(&visibility).ok_or_else(|| bad("visibility"))?;
    image.owner = row.try_get(4).map_err(get)?;
    image.protected = row.try_get(5).map_err(get)?;
    image.os_hidden = row.try_get(6).map_err(get)?;
    image.size = row.try_get(7).map_err(get)?;
    image.virtual_size = row.try_get(8).map_err(get)?;
    image.min_disk = row.try_get(9).map_err(get)?;
    image.min_ram = row.try_get(10).map_err(get)?;
    image.disk_format = row.try_get(11).map_err(get)?;
    image.container_format = row.try_get(12).map_err(get)?;
    image.checksum = row.try_get(13).map_err(get)?;
    image.os_hash_algo = row.try_get(14).map_err(get)?;
    image.os_hash_value = row.try_get(15).map_err(get)?;
    image.created_at = from_micros(row.try_get(16).map_err(get)?)?;
    image.updated_at = from_micros(row.try_get(17).map_err(get)?)?;
    let node: Option<String> = row.try_get(18).map_err(get)?;
    let staging: Option<String> = row.try_get(19).map_err(get)?;
    image.upload = node.map(|node| UploadLease { node, staging: staging.unwrap_or_default() });
    image.store = row.try_get(20).map_err(get)?;
    image.location = row.try_get(21).map_err(get)?;
    let replicas: Option<String> = row.try_get(22).map_err(get)?;
    image.replicas = Replica::decode(replicas.as_deref()).ok_or_else(|| bad("replica list"))?;
    if row.len() > 23 {
        let properties: String = row.try_get(23).map_err(get)?;
        image.properties = Properties::decode(&properties).ok_or_else(|| bad("property list"))?;
        image.tags = row.try_get(24).map_err(get)?;
    }
    if row.len() > 25 {
        let projects: Vec<String> = row.try_get(25).map_err(get)?;
        let statuses: Vec<String> = row.try_get(26).map_err(get)?;
        let created: Vec<i64> = row.try_get(27).map_err(get)?;
        let updated: Vec<i64> = row.try_get(28).map_err(get)?;
        image.members = projects
            .into_iter()
            .zip(statuses)
            .zip(created.into_iter().zip(updated))
            .map(|((project, status), (c, u))| {
                Ok(Member {
                    project,
                    status: MemberStatus::parse(&status).ok_or_else(|| bad("member status"))?,
                    created_at: from_micros(c)?,
                    updated_at: from_micros(u)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
    }
    Ok(image)
}

/// Every payload in `$2` a notification on channel `$1`, in one statement and one transaction.
const NOTIFY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";
const LOCK: &str = "SELECT 1 FROM images WHERE id = $1 FOR UPDATE";
/// The whole image `id`; when `for_update`, its row is locked for the transaction first.
///
/// The lock is a statement of its own: under READ COMMITTED a statement sees the data as of
/// its start, so a load that waited for the lock in the same statement would read the
/// properties as they were before the writer it waited for committed (and a quota would
/// count the wrong keys). The load after the lock sees every committed write.
async fn load(c: &impl GenericClient, id: &str, for_update: bool) -> Result<Option<Image>, StoreError> {
    if for_update {
        let lock = c.prepare_cached(LOCK).await?;
        if c.query_opt(&lock, &[&id]).await?.is_none() {
            return Ok(None);
        }
    }
    let stmt = c.prepare_cached(LOAD).await?;
    match c.query_opt(&stmt, &[&id]).await? {
        Some(row) => Ok(Some(image_from_row(&row)?)),
        None => Ok(None),
    }
}

/// Runs a statement built by [`sql`]; the rows it changed.
async fn run(c: &impl GenericClient, statement: &sql::Sql) -> Result<u64, StoreError> {
    let args = bind(statement.args.clone());
    let stmt = c.prepare_cached(&statement.text).await?;
    Ok(c.execute(&stmt, &refs(&args)).await?)
}

fn task_row(r: &tokio_postgres::Row) -> sql::TaskRow {
    sql::TaskRow {
        id: r.get(0),
        kind: r.get(1),
        status: r.get(2),
        owner: r.get(3),
        image_id: r.get(4),
        request_id: r.get(5),
        user_id: r.get(6),
        input: r.get(7),
        result: r.get(8),
        message: r.get(9),
        expires_at: r.get(10),
        created_at: r.get(11),
        updated_at: r.get(12),
        node: r.get(13),
    }
}

/// Task `id` (`lock`: its row locked until the transaction ends).
async fn load_task(c: &impl GenericClient, id: &str, lock: bool) -> Result<Option<Task>, StoreError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let stmt = c.prepare_cached(&format!("SELECT {} FROM tasks WHERE id = $1{lock}", sql::TASK_COLUMNS)).await?;
    let row = c.query_opt(&stmt, &[&id]).await?;
    row.map(|r| task_row(&r).into_task().map_err(StoreError::Internal)).transpose()
}

async fn exec(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

async fn write_row(c: &impl GenericClient, image: &Image, insert: bool) -> Result<(), StoreError> {
    let sql = if insert {
        "INSERT INTO images (id, name, status, visibility, owner, protected, os_hidden, size, virtual_size, \
         min_disk, min_ram, disk_format, container_format, checksum, os_hash_algo, os_hash_value, created_at, \
         updated_at, upload_node, upload_staging, store, location, replicas, properties) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
         $23, $24::text::jsonb)"
    } else {
        "UPDATE images SET name = $2, status = $3, visibility = $4, owner = $5, protected = $6, os_hidden = $7, \
         size = $8, virtual_size = $9, min_disk = $10, min_ram = $11, disk_format = $12, container_format = $13, \
         checksum = $14, os_hash_algo = $15, os_hash_value = $16, created_at = $17, updated_at = $18, \
         upload_node = $19, upload_staging = $20, store = $21, location = $22, replicas = $23, \
         properties = $24::text::jsonb, revision = revision + 1 WHERE id = $1"
    };
    let (status, visibility) = (image.status.as_str(), image.visibility.as_str());
    let (created, updated) = (micros(image.created_at), micros(image.updated_at));
    let node = image.upload.as_ref().map(|u| &u.node);
    let staging = image.upload.as_ref().map(|u| &u.staging);
    let replicas = Replica::encode(&image.replicas);
    let properties = image.properties.encode();
    exec(
        c,
        sql,
        &[
            &image.id,
            &image.name,
            &status,
            &visibility,
            &image.owner,
            &image.protected,
            &image.os_hidden,
            &image.size,
            &image.virtual_size,
            &image.min_disk,
            &image.min_ram,
            &image.disk_format,
            &image.container_format,
            &image.checksum,
            &image.os_hash_algo,
            &image.os_hash_value,
            &created,
            &updated,
            &node,
            &staging,
            &image.store,
            &image.location,
            &replicas,
            &properties,
        ],
    )
    .await?;
    Ok(())
}

async fn write_tags(c: &impl GenericClient, image: &Image) -> Result<(), StoreError> {
    exec(c, "DELETE FROM image_tags WHERE image_id = $1", &[&image.id]).await?;
    exec(
        c,
        "INSERT INTO image_tags (image_id, tag) SELECT $1, t FROM unnest($2::text[]) AS t ON CONFLICT DO NOTHING",
        &[&image.id, &image.tags],
    )
    .await?;
    Ok(())
}

async fn write_members(c: &impl GenericClient, image: &Image) -> Result<(), StoreError> {
    exec(c, "DELETE FROM image_members WHERE image_id = $1", &[&image.id]).await?;
    let projects: Vec<&str> = image.members.iter().map(|m| m.project.as_str()).collect();
    let statuses: Vec<&str> = image.members.iter().map(|m| m.status.as_str()).collect();
    let created: Vec<i64> = image.members.iter().map(|m| micros(m.created_at)).collect();
    let updated: Vec<i64> = image.members.iter().map(|m| micros(m.updated_at)).collect();
    exec(
        c,
        "INSERT INTO image_members (image_id, member, status, created_at, updated_at) \
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[])",
        &[&image.id, &projects, &statuses, &created, &updated],
    )
    .await?;
    Ok(())
}

async fn insert_image(c: &impl GenericClient, image: &Image) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM images WHERE id = $1) OR EXISTS (SELECT 1 FROM deleted_image_ids WHERE id = $1)",
        )
        .await?;
    let taken: bool = c.query_one(&stmt, &[&image.id]).await?.get(0);
    if taken {
        return Err(StoreError::Conflict(image.id.clone()));
    }
    match write_row(c, image, true).await {
        Err(StoreError::Internal(e)) if e.starts_with(SqlState::UNIQUE_VIOLATION.code()) => {
            return Err(StoreError::Conflict(image.id.clone()));
        }
        other => other?,
    }
    write_tags(c, image).await?;
    write_members(c, image).await
}

/// Sends the other nodes the ids of the images this node changed, after their transactions
/// committed, those of up to [`NOTIFY_WINDOW`] in one transaction (one statement, as many
/// notifications as their payloads need). Not inside the writes' transactions: PostgreSQL
/// serializes the commits of transactions that notify (a cluster-wide lock held through the
/// commit's flush), which made every write wait for every other's fsync; nor one per batch of
/// writes: each is a transaction with a flush of its own, and they cost PostgreSQL as much CPU
/// as the writes themselves. A notification that is late or lost (the database unreachable,
/// the process gone) costs at most the caches' TTL.
async fn notifier(pool: Pool, mut changed: tokio::sync::mpsc::Receiver<String>) {
    // A payload stays well under PostgreSQL's 8,000 bytes.
    const MAX_PAYLOAD: usize = 7_000;
    let mut last = tokio::time::Instant::now();
    while let Some(first) = changed.recv().await {
        // The first change after a quiet spell goes at once; under load, one transaction per
        // window carries them all.
        tokio::time::sleep_until(last + NOTIFY_WINDOW).await;
        let mut payloads = Vec::new();
        let mut ids = vec![first];
        let mut size = ids[0].len();
        while let Ok(id) = changed.try_recv() {
            if size + id.len() + 4 > MAX_PAYLOAD {
                payloads.push(serde_json::to_string(&ids).unwrap_or_default());
                (ids, size) = (Vec::new(), 0);
            }
            size += id.len() + 4;
            ids.push(id);
        }
        payloads.push(serde_json::to_string(&ids).unwrap_or_default());
        last = tokio::time::Instant::now();
        let sent = async {
            let c = pool.get().await?;
            exec(&c, NOTIFY, &[&CHANNEL, &payloads]).await
        };
        if let Err(e) = tokio::time::timeout(OP_TIMEOUT, sent)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("timeout".into())))
        {
            tracing::debug!(error = %e, "cannot notify the other nodes of changes (their caches expire them)");
        }
    }
}

/// What a notification says changed: a JSON array of ids (or one id).
fn notified_ids(payload: &str) -> Vec<String> {
    if payload.starts_with('[') { serde_json::from_str(payload).unwrap_or_default() } else { vec![payload.to_owned()] }
}

/// Ids that cannot name a row (text in PostgreSQL cannot hold NUL): not found, without asking.
fn impossible(id: &str) -> bool {
    id.contains('\0')
}

pub struct PgStore {
    pool: Pool,
    /// The ids of images this node changed, for [`notifier`].
    notify: tokio::sync::mpsc::Sender<String>,
    notifier: tokio::task::JoinHandle<()>,
    cache: Arc<ImageCache>,
    /// Whether the cache may be used: set while the notification connection listens.
    coherent: Arc<AtomicBool>,
    listener: tokio::task::JoinHandle<()>,
    /// The metadata writes' queue, and the writers that batch them ([`batch`]).
    writes: tokio::sync::mpsc::Sender<batch::Job>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    new: bool,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.notifier.abort();
        for writer in &self.writers {
            writer.abort();
        }
        self.pool.close();
    }
}

impl PgStore {
    /// Connects, migrates (under the advisory lock) and starts listening for invalidations.
    pub async fn open(url: &PgUrl) -> Result<PgStore, StoreError> {
        let Parsed { mut config, tls } = url.parsed().map_err(StoreError::Unavailable)?;
        // Bounds on every connection: no connection, statement, lock wait or idle transaction
        // lasts long, and a peer that vanished is noticed.
        config
            .application_name("imagemeta")
            .connect_timeout(Duration::from_secs(3))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        let options = format!(
            "{} -c statement_timeout=3500 -c lock_timeout=3000 -c idle_in_transaction_session_timeout=10000",
            config.get_options().unwrap_or("")
        );
        let options = options.trim().to_owned();
        config.options(&options);
        let cache = Arc::new(ImageCache::new(Some(CACHE_TTL)));
        let coherent = Arc::new(AtomicBool::new(false));
        // The metadata writers' connections of their own, with generic plans: their statements
        // take arrays (`= ANY($1)`, `unnest`), for which PostgreSQL otherwise plans every
        // execution anew (measured: more than half of its CPU per write went to the planner).
        let mut writer_config = config.clone();
        writer_config.options(format!("{options} -c plan_cache_mode=force_generic_plan"));
        let (pool, writer_pool) = match &tls {
            None => (pool(config.clone(), NoTls, POOL_SIZE)?, pool(writer_config, NoTls, batch::WRITERS)?),
            Some((verify, root_cert)) => {
                let client =
                    crate::tls::client_config(*verify, root_cert.as_deref()).map_err(StoreError::Unavailable)?;
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client);
                (pool(config.clone(), tls.clone(), POOL_SIZE)?, pool(writer_config, tls, batch::WRITERS)?)
            }
        };
        let before = tokio::time::timeout(Duration::from_secs(60), migrate(&pool))
            .await
            .map_err(|_| StoreError::Unavailable("the schema migration took more than 60 s".into()))??;
        let listener = match tls {
            None => tokio::spawn(listen(config, NoTls, cache.clone(), coherent.clone())),
            Some((verify, root_cert)) => {
                let client =
                    crate::tls::client_config(verify, root_cert.as_deref()).map_err(StoreError::Unavailable)?;
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client);
                tokio::spawn(listen(config, tls, cache.clone(), coherent.clone()))
            }
        };
        let (notify, changed) = tokio::sync::mpsc::channel(10_000);
        let notifier = tokio::spawn(notifier(pool.clone(), changed));
        let (writes, writers) = batch::start(writer_pool, {
            let (cache, notify) = (cache.clone(), notify.clone());
            Arc::new(move |id: &str| invalidate(&cache, &notify, id))
        });
        Ok(PgStore { pool, notify, notifier, cache, coherent, listener, writes, writers, new: before == 0 })
    }

    /// Runs `f` with a pooled connection within [`OP_TIMEOUT`]; a connection that failed or
    /// ran out of time is discarded rather than returned to the pool.
    pub(super) async fn with<R>(
        &self,
        f: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let run = async {
            let mut client = self.pool.get().await?;
            let result = f(&mut client).await;
            if matches!(&result, Err(StoreError::Unavailable(_))) {
                drop(deadpool_postgres::Object::take(client));
            }
            result
        };
        match tokio::time::timeout(OP_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("the database did not answer within {OP_TIMEOUT:?}"))),
        }
    }

    /// Image `id` when it is known without asking the database: from the cache while it is
    /// coherent, or none for an id no row can have.
    fn cached(&self, id: &str) -> Option<Option<Arc<Image>>> {
        if impossible(id) {
            return Some(None);
        }
        if !self.coherent.load(Ordering::Acquire) {
            return None;
        }
        let image = self.cache.get(id)?;
        self.cache.hit();
        Some(Some(image))
    }

    /// Image `id`, from the cache while it is coherent, else read (and cached).
    async fn fetch(&self, id: &str) -> Result<Option<Arc<Image>>, StoreError> {
        if let Some(known) = self.cached(id) {
            return Ok(known);
        }
        let coherent = self.coherent.load(Ordering::Acquire);
        self.cache.miss();
        let seen = self.cache.generation();
        let Some(image) = self.with(async |c| load(&*c, id, false).await).await? else {
            return Ok(None);
        };
        let image = Arc::new(image);
        if coherent {
            self.cache.fill(seen, image.clone());
        }
        Ok(Some(image))
    }

    /// Drops an image a committed transaction changed from this node's cache, before the
    /// write is acknowledged. (Not its new state: transactions on other connections commit
    /// in one order and return in another, so the last to return may not be the newest.)
    fn changed(&self, id: &str) {
        invalidate(&self.cache, &self.notify, id);
    }
}

/// Drops image `id` from this node's cache and has the notifier tell the other nodes.
fn invalidate(cache: &ImageCache, notify: &tokio::sync::mpsc::Sender<String>, id: &str) {
    cache.publish(HashMap::from([(id.to_owned(), None)]));
    // Full: the other nodes' caches expire it within their TTL.
    let _ = notify.try_send(id.to_owned());
}

fn pool<T>(config: tokio_postgres::Config, tls: T, size: usize) -> Result<Pool, StoreError>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(3)))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(3)))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// Applies the missing migrations, one transaction each, holding the advisory lock; returns
/// the version the schema was at (0: an empty database).
async fn migrate(pool: &Pool) -> Result<usize, StoreError> {
    let client = pool.get().await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await?;
        let row = client.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).await?;
        let applied = usize::try_from(row.get::<_, i32>(0)).unwrap_or(0);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Internal(format!(
                "the database schema is version {applied}, newer than this imagemeta ({})",
                MIGRATIONS.len()
            )));
        }
        if applied > 0 && applied < MIGRATIONS.len() {
            tracing::info!(from = applied, to = MIGRATIONS.len(), "migrating the database schema");
        }
        for (n, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let version = n as i32 + 1;
            let script = format!(
                "BEGIN; {migration}; INSERT INTO schema_migrations (version, applied_at) VALUES ({version}, {}); COMMIT;",
                micros(now())
            );
            if let Err(e) = client.batch_execute(&script).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
        }
        Ok(applied)
    }
    .await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result
}

/// Keeps a connection listening for other nodes' writes and drops what they changed from the
/// cache. While it is not listening (not yet, or the connection dropped, or a ping went
/// unanswered) the cache is empty and not used.
async fn listen<T>(config: tokio_postgres::Config, tls: T, cache: Arc<ImageCache>, coherent: Arc<AtomicBool>)
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let invalidations = cache.clone();
                let driver = async move {
                    while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                for id in notified_ids(n.payload()) {
                                    invalidations.invalidate(&id);
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the cache invalidation connection failed");
                                break;
                            }
                        }
                    }
                };
                let watch = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    cache.clear();
                    coherent.store(true, Ordering::Release);
                    // A connection that went silent must not leave the cache trusted.
                    let mut ping = tokio::time::interval(CACHE_TTL / 2);
                    loop {
                        ping.tick().await;
                        match tokio::time::timeout(CACHE_TTL / 2, client.simple_query("")).await {
                            Ok(Ok(_)) => {}
                            _ => return Ok::<(), tokio_postgres::Error>(()),
                        }
                    }
                };
                tokio::select! {
                    () = driver => {},
                    _ = watch => {},
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot connect for cache invalidations"),
        }
        if coherent.swap(false, Ordering::AcqRel) {
            tracing::warn!("not listening for other nodes' writes: the read cache is off until it is back");
        }
        cache.clear();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[async_trait]
impl Store for PgStore {
    async fn get_image(&self, who: &Principal, id: &str) -> Result<Arc<Image>, StoreError> {
        visible(self.fetch(id).await?, who)
    }

    /// When the image is in the cache (and the cache may be used).
    fn get_image_at_once(&self, who: &Principal, id: &str) -> Option<Result<Arc<Image>, StoreError>> {
        self.cached(id).map(|image| visible(image, who))
    }

    async fn list_images(&self, caller: Caller<'_>, query: &ListQuery) -> Result<Vec<Image>, StoreError> {
        let Some(query) = query.prepared()? else { return Ok(Vec::new()) };
        let found = match &query.marker {
            Some(m) if !impossible(m) => self.with(async |c| load(&*c, m, false).await).await?,
            _ => None,
        };
        let marker = query.marker_for(caller, found)?;
        let columns =
            if query.detail { format!("{IMAGE_COLUMNS_AS_I}{DETAIL_COLUMNS}") } else { IMAGE_COLUMNS_AS_I.to_owned() };
        let statement = sql::list(Dialect::Postgres, &columns, caller, &query, marker.as_ref());
        let args = bind(statement.args);
        self.with(async |c| {
            let stmt = c.prepare_cached(&statement.text).await?;
            let rows = c.query(&stmt, &refs(&args)).await?;
            rows.iter().map(image_from_row).collect()
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
        if impossible(id) {
            return Err(StoreError::NotFound);
        }
        // Batched with the writes waiting beside it (see `batch`), which answers every write
        // within OP_TIMEOUT of its arrival.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job =
            batch::Job { who: who.clone(), id: id.to_owned(), change, quota, queued: std::time::Instant::now(), reply };
        batch::submit(&self.writes, job)?;
        answer.await.map_err(|_| StoreError::Unavailable("the database writers stopped".into()))?
    }

    async fn modify_image(
        &self,
        who: &Principal,
        id: &str,
        rule: Rule,
        change: Modification,
    ) -> Result<Image, StoreError> {
        if impossible(id) {
            return Err(StoreError::NotFound);
        }
        let after = self
            .with(async |c| {
                let tx = c.transaction().await?;
                let before = visible(load(&tx, id, true).await?, who)?;
                if !policy::authorize(who, &rule, Some(&before)) {
                    return Err(StoreError::Forbidden);
                }
                let mut after = before.clone();
                change(&mut after).map_err(StoreError::Rejected)?;
                after.id = before.id.clone();
                after.updated_at = now();
                write_row(&tx, &after, false).await?;
                let diff = plan::diff(&before, &after);
                if diff.tags {
                    write_tags(&tx, &after).await?;
                }
                if diff.members {
                    write_members(&tx, &after).await?;
                }
                // As stored: tags and members in the database's order.
                let stored = load(&tx, id, false).await?.ok_or(StoreError::NotFound)?;
                tx.commit().await?;
                Ok(stored)
            })
            .await?;
        self.changed(id);
        Ok(after)
    }

    async fn delete_image(&self, who: &Principal, id: &str) -> Result<Image, StoreError> {
        if impossible(id) {
            return Err(StoreError::NotFound);
        }
        let deleted = self
            .with(async |c| {
                let tx = c.transaction().await?;
                let image = visible(load(&tx, id, true).await?, who)?;
                if !policy::authorize(who, &Rule::DeleteImage, Some(&image)) {
                    return Err(StoreError::Forbidden);
                }
                if image.protected {
                    return Err(StoreError::Protected);
                }
                exec(&tx, "DELETE FROM images WHERE id = $1", &[&id]).await?;
                exec(
                    &tx,
                    "INSERT INTO deleted_image_ids (id, deleted_at) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at",
                    &[&id, &micros(now())],
                )
                .await?;
                tx.commit().await?;
                Ok(image)
            })
            .await?;
        self.changed(id);
        Ok(deleted)
    }

    async fn insert_task(&self, task: Task) -> Result<(), StoreError> {
        let statement = sql::task_write(Dialect::Postgres, &task, false);
        self.with(async |c| match run(&*c, &statement).await {
            Err(StoreError::Internal(e)) if e.starts_with(SqlState::UNIQUE_VIOLATION.code()) => {
                Err(StoreError::Conflict(task.id.clone()))
            }
            other => other.map(drop),
        })
        .await
    }

    async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        if impossible(id) {
            return Ok(None);
        }
        self.with(async |c| load_task(&*c, id, false).await).await
    }

    async fn update_task(&self, id: &str, change: TaskChange) -> Result<Task, StoreError> {
        if impossible(id) {
            return Err(StoreError::NotFound);
        }
        self.with(async |c| {
            let tx = c.transaction().await?;
            let mut task = load_task(&tx, id, true).await?.ok_or(StoreError::NotFound)?;
            change(&mut task);
            task.id = id.to_owned();
            task.updated_at = now();
            run(&tx, &sql::task_write(Dialect::Postgres, &task, true)).await?;
            tx.commit().await?;
            Ok(task)
        })
        .await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, StoreError> {
        // Text PostgreSQL cannot hold (a NUL) names no task.
        let texts = [&query.owner, &query.kind, &query.image_id];
        if texts.iter().any(|t| t.as_deref().is_some_and(impossible)) {
            return Ok(Vec::new());
        }
        if let Some(marker) = query.marker.as_deref().filter(|m| impossible(m)) {
            return Err(StoreError::MarkerNotFound(marker.to_owned()));
        }
        self.with(async |c| {
            let marker = match &query.marker {
                None => None,
                Some(m) => Some(
                    load_task(&*c, m, false)
                        .await?
                        .filter(|t| query.owner.as_ref().is_none_or(|o| *o == t.owner))
                        .ok_or_else(|| StoreError::MarkerNotFound(m.clone()))?,
                ),
            };
            let statement = sql::task_listing(Dialect::Postgres, query, marker.as_ref(), now());
            let args = bind(statement.args);
            let stmt = c.prepare_cached(&statement.text).await?;
            let rows = c.query(&stmt, &refs(&args)).await?;
            rows.iter().map(|r| task_row(r).into_task().map_err(StoreError::Internal)).collect()
        })
        .await
    }

    async fn running_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.with(async |c| {
            let text = format!(
                "SELECT {} FROM tasks WHERE node IS NOT NULL AND status IN ('pending', 'processing')",
                sql::TASK_COLUMNS
            );
            let rows = c.query(&text, &[]).await?;
            rows.iter().map(|r| task_row(r).into_task().map_err(StoreError::Internal)).collect()
        })
        .await
    }

    async fn purge_tasks(&self, at: time::OffsetDateTime) -> Result<usize, StoreError> {
        self.with(async |c| {
            let n = exec(&*c, "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= $1", &[&micros(at)])
                .await?;
            Ok(n as usize)
        })
        .await
    }

    async fn insert_images(&self, images: Vec<Image>) -> Result<Vec<Image>, StoreError> {
        let mut in_key_order: Vec<&Image> = images.iter().collect();
        in_key_order.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        // A bulk insert (the operator's `image create --count`) takes longer than one request.
        let timeout = OP_TIMEOUT + Duration::from_millis(images.len() as u64 * 5);
        let run = async {
            let mut c = self.pool.get().await?;
            let tx = c.transaction().await?;
            for image in &in_key_order {
                if impossible(&image.id) {
                    return Err(StoreError::Conflict(image.id.clone()));
                }
                // No notification: no node caches an image that did not exist.
                insert_image(&tx, image).await?;
            }
            tx.commit().await?;
            Ok(())
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| StoreError::Unavailable(format!("the database did not answer within {timeout:?}")))??;
        for image in &images {
            self.changed(&image.id);
        }
        Ok(images)
    }

    async fn find_image(&self, id: &str) -> Result<Option<Arc<Image>>, StoreError> {
        self.fetch(id).await
    }

    async fn heartbeat(&self, node: &Node) -> Result<(), StoreError> {
        self.with(async |c| {
            exec(
                &*c,
                "INSERT INTO nodes (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                &[&node.id, &node.host, &i64::from(node.pid), &micros(node.started_at), &micros(now())],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn unregister_node(&self, id: &str) -> Result<(), StoreError> {
        self.with(async |c| {
            exec(&*c, "DELETE FROM nodes WHERE id = $1", &[&id]).await?;
            Ok(())
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.with(async |c| {
            let rows = c.query("SELECT id, host, pid, started_at, heartbeat_at FROM nodes", &[]).await?;
            rows.iter()
                .map(|r| {
                    Ok(Node {
                        id: r.get(0),
                        host: r.get(1),
                        pid: u32::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                        started_at: from_micros(r.get(3))?,
                        heartbeat_at: from_micros(r.get(4))?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn held_uploads(&self) -> Result<Vec<(String, UploadLease)>, StoreError> {
        self.with(async |c| {
            let rows = c
                .query("SELECT id, upload_node, upload_staging FROM images WHERE upload_node IS NOT NULL", &[])
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let staging: Option<String> = r.get(2);
                    (r.get(0), UploadLease { node: r.get(1), staging: staging.unwrap_or_default() })
                })
                .collect())
        })
        .await
    }

    async fn deleted_ids(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, time::OffsetDateTime)>, StoreError> {
        self.with(async |c| {
            let rows = c
                .query(
                    "SELECT id, deleted_at FROM deleted_image_ids WHERE $1::text IS NULL OR id COLLATE \"C\" > $1 \
                     ORDER BY id COLLATE \"C\" LIMIT $2",
                    &[&after, &(limit as i64)],
                )
                .await?;
            rows.iter().map(|r| Ok((r.get(0), from_micros(r.get(1))?))).collect()
        })
        .await
    }

    async fn insert_deleted_ids(&self, ids: Vec<(String, time::OffsetDateTime)>) -> Result<(), StoreError> {
        let (names, at): (Vec<String>, Vec<i64>) = ids.into_iter().map(|(id, t)| (id, micros(t))).unzip();
        self.with(async |c| {
            exec(
                &*c,
                "INSERT INTO deleted_image_ids (id, deleted_at) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at",
                &[&names, &at],
            )
            .await?;
            Ok(())
        })
        .await
    }

    fn is_new(&self) -> bool {
        self.new
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(async |c| Ok(c.simple_query("SELECT 1").await.map(drop)?)).await
    }

    fn observe(&self) {
        let status = self.pool.status();
        let idle = status.available;
        metrics::gauge!("imagemeta_store_pool_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("imagemeta_store_pool_connections", "state" => "busy")
            .set(status.size.saturating_sub(idle) as f64);
        metrics::gauge!("imagemeta_store_pool_waiting").set(status.waiting as f64);
        metrics::gauge!("imagemeta_store_cache_coherent").set(if self.coherent.load(Ordering::Acquire) {
            1.0
        } else {
            0.0
        });
    }

    async fn close(&self) {
        self.listener.abort();
        self.notifier.abort();
        self.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty database of its own on the server `IMAGEMETA_TEST_DATABASE` names (`None`
    /// without one), dropped by [`Scratch::drop`].
    struct Scratch {
        admin: tokio_postgres::Client,
        name: String,
        url: String,
    }

    impl Scratch {
        async fn new(tag: &str) -> Option<Scratch> {
            let admin = std::env::var("IMAGEMETA_TEST_DATABASE").ok()?;
            let name = format!("imagemeta_{tag}_{}", uuid::Uuid::new_v4().simple());
            let (client, connection) = tokio_postgres::connect(&admin, NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
            let (server, _) = admin.rsplit_once('/').unwrap();
            let url = format!("{server}/{name}?sslmode=disable");
            Some(Scratch { admin: client, name, url })
        }

        async fn drop(self) {
            self.admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name)).await.unwrap();
        }
    }

    /// A catalogue written by imagemeta before properties moved into the image's row keeps
    /// every property, in its order, nulls included (migration 0006); PostgreSQL when
    /// `IMAGEMETA_TEST_DATABASE` names a server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn properties_move_into_the_image_row_in_order() {
        let Some(db) = Scratch::new("migration").await else { return };
        let url = db.url.clone();
        {
            let (c, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            tokio::spawn(connection);
            c.batch_execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
                .await
                .unwrap();
            for (n, migration) in MIGRATIONS[..5].iter().enumerate() {
                c.batch_execute(migration).await.unwrap();
                c.execute("INSERT INTO schema_migrations VALUES ($1, 0)", &[&(n as i32 + 1)]).await.unwrap();
            }
            c.batch_execute(
                "INSERT INTO images (id, status, visibility, owner, created_at, updated_at) VALUES \
                 ('a', 'active', 'public', 'p', 1, 1), ('b', 'queued', 'private', 'p', 2, 2); \
                 INSERT INTO image_properties (image_id, name, value, position) VALUES \
                 ('a', 'zeta', '1', 1), ('a', 'kernel_id', NULL, 2), ('a', 'alpha', 'x \"y\"', 5), ('a', 'mid', '3', 3);",
            )
            .await
            .unwrap();
        }
        let store = PgStore::open(&PgUrl::parse(&url).unwrap()).await.unwrap();
        let a = store.find_image("a").await.unwrap().unwrap();
        let props: Vec<(&str, Option<&str>)> = a.properties.iter().collect();
        assert_eq!(props, [("zeta", Some("1")), ("kernel_id", None), ("mid", Some("3")), ("alpha", Some("x \"y\""))]);
        assert!(store.find_image("b").await.unwrap().unwrap().properties.is_empty());
        drop(store);
        db.drop().await;
    }

    /// The writes a batch still has after its optimistic rounds (here: none) are applied with
    /// their rows locked, with the outcomes they would have had alone, in order; PostgreSQL
    /// when `IMAGEMETA_TEST_DATABASE` names a server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_left_to_the_locks_merge_refuse_and_keep_the_quota() {
        use crate::domain::metadata::{MetadataKey, MetadataValue};
        let Some(db) = Scratch::new("locked").await else { return };
        let store = PgStore::open(&PgUrl::parse(&db.url).unwrap()).await.unwrap();
        let mut image = Image::new("a".into(), now());
        image.owner = Some("p".into());
        image.properties.set("k0".into(), Some("v0".into()));
        store.insert_images(vec![image]).await.unwrap();

        let who = Principal::new("u".into(), "p".into(), vec!["member".into()]);
        let merge =
            |k: &str| MetadataChange::Merge(vec![(MetadataKey::parse(k).unwrap(), MetadataValue::parse("v").unwrap())]);
        let job = |id: &str, change| batch::Job {
            who: who.clone(),
            id: id.into(),
            change,
            quota: MetadataQuota(Some(2)),
            queued: std::time::Instant::now(),
            reply: tokio::sync::oneshot::channel().0,
        };
        let jobs = vec![
            job("a", merge("k1")),
            job("a", merge("k2")),
            job("a", MetadataChange::Delete("k0".into())),
            job("a", merge("k2")),
            job("missing", merge("k1")),
        ];
        let mut answers: Vec<batch::Answer> = vec![None; jobs.len()];
        let c = store.pool.get().await.unwrap();
        batch::apply(&c, &jobs, &mut answers, 0).await.unwrap();
        let answers: Vec<String> = answers
            .into_iter()
            .map(|a| match a.expect("every write answered") {
                Ok(p) => p.iter().map(|(k, _)| k).collect::<Vec<_>>().join(","),
                Err(e) => format!("{e:?}"),
            })
            .collect();
        assert_eq!(answers, ["k0,k1", "QuotaExceeded", "k1", "k1,k2", "NotFound"]);
        let row = c.query_one("SELECT properties::text, revision FROM images WHERE id = 'a'", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), r#"[["k1", "v"], ["k2", "v"]]"#);
        assert_eq!(row.get::<_, i64>(1), 1, "one write of the row for the whole batch");
        drop(c);
        drop(store);
        db.drop().await;
    }
}
