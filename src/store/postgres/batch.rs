//! Metadata writes on PostgreSQL, batched: the writes waiting when a writer is free go in one
//! transaction (PostgreSQL's answer to what the SQLite writer's group commit does).
//!
//! A batch locks its images (in id order, so that batches on any node never deadlock), loads
//! them in one statement after the locks (under READ COMMITTED, a statement that starts after
//! a lock was granted sees every write committed before it), applies each write in turn to
//! the image as the writes before it left it (the same plan, checks and quota as a write
//! alone), and writes each image's difference, its `updated_at` and the commit in one round
//! trip. Two round trips and one commit for the whole batch, where each write alone took two
//! round trips and a commit of its own.
//!
//! A refused write (not found, forbidden, a key not found, the quota) changes nothing and
//! leaves the others be. A batch the database fails for another reason than its availability
//! (a statement it refused) is retried one write at a time, so that one bad write fails
//! alone. Every write is answered within [`OP_TIMEOUT`] of its arrival, as every other
//! operation is: one not begun [`MIN_RUN`] before then is answered unavailable without being
//! applied, and a batch has until its oldest write's time is up (at least [`MIN_RUN`]) or is
//! rolled back: an answer of "unavailable" always means nothing was written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::{DELETE_PROPERTY, INSERT_PROPERTY, LOAD_MANY, OP_TIMEOUT, UPDATE_PROPERTY, image_from_row, visible};
use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::{Image, Principal, Properties, now};
use crate::store::StoreError;
use crate::store::plan;
use crate::store::sql::micros;

/// Writers (transactions in flight at once, each on a connection of the pool).
pub(super) const WRITERS: usize = 2;
/// The most writes in one transaction.
const MAX_BATCH: usize = 128;
/// The most writes waiting for a writer; one more is answered unavailable at once.
const MAX_WAITING: usize = 4096;
/// The least time a batch is given: a write that waited longer than `OP_TIMEOUT - MIN_RUN`
/// for a writer is not begun.
const MIN_RUN: Duration = Duration::from_secs(1);

const LOCK_MANY: &str = "SELECT id FROM images WHERE id = ANY($1) ORDER BY id COLLATE \"C\" FOR UPDATE";
const TOUCH_MANY: &str = "UPDATE images SET updated_at = $2 WHERE id = ANY($1)";

/// A statement sent and not yet answered (they are pipelined on the connection).
type Pending<'a> = std::pin::Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// A metadata write waiting for a writer.
pub(super) struct Job {
    pub who: Principal,
    pub id: String,
    pub change: MetadataChange,
    pub quota: MetadataQuota,
    pub queued: Instant,
    pub reply: oneshot::Sender<Result<Properties, StoreError>>,
}

/// What a committed batch tells the node: the images it changed.
pub(super) type Changed = Arc<dyn Fn(&str) + Send + Sync>;

/// Starts the writers; the sender takes the writes.
pub(super) fn start(pool: Pool, changed: Changed) -> (mpsc::Sender<Job>, Vec<tokio::task::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel(MAX_WAITING);
    let rx = Arc::new(Mutex::new(rx));
    let writers = (0..WRITERS).map(|_| tokio::spawn(writer(pool.clone(), rx.clone(), changed.clone()))).collect();
    (tx, writers)
}

/// Queues `job`; `Err` (with the job's reply dropped) when too many wait.
pub(super) fn submit(queue: &mpsc::Sender<Job>, job: Job) -> Result<(), StoreError> {
    queue.try_send(job).map_err(|_| {
        StoreError::Unavailable(format!("more than {MAX_WAITING} metadata writes are waiting for the database"))
    })
}

async fn writer(pool: Pool, queue: Arc<Mutex<mpsc::Receiver<Job>>>, changed: Changed) {
    loop {
        let mut batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        // Nobody waits for some any more; others waited too long to be begun now.
        let mut live = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            if job.reply.is_closed() {
                continue;
            }
            if job.queued.elapsed() > OP_TIMEOUT - MIN_RUN {
                let late = format!("the database did not answer within {OP_TIMEOUT:?}");
                let _ = job.reply.send(Err(StoreError::Unavailable(late)));
                continue;
            }
            live.push(job);
        }
        let batch = live;
        if batch.is_empty() {
            continue;
        }
        // The oldest write's time left.
        let oldest = batch.iter().map(|job| job.queued).min().unwrap_or_else(Instant::now);
        let budget = OP_TIMEOUT.saturating_sub(oldest.elapsed()).max(MIN_RUN);
        let results = match run(&pool, &batch, budget).await {
            Ok(results) => results,
            Err(e @ (StoreError::Unavailable(_) | StoreError::Full(_))) => {
                batch.iter().map(|_| Err(e.clone())).collect()
            }
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, writes = batch.len(), "a batch of metadata writes failed; each is retried alone");
                let mut results = Vec::with_capacity(batch.len());
                for job in &batch {
                    if job.queued.elapsed() > OP_TIMEOUT - MIN_RUN {
                        let late = format!("the database did not answer within {OP_TIMEOUT:?}");
                        results.push(Err(StoreError::Unavailable(late)));
                        continue;
                    }
                    let budget = OP_TIMEOUT.saturating_sub(job.queued.elapsed()).max(MIN_RUN);
                    results.push(match run(&pool, std::slice::from_ref(job), budget).await {
                        Ok(mut one) => one.pop().unwrap_or(Err(StoreError::NotFound)),
                        Err(e) => Err(e),
                    });
                }
                results
            }
            Err(e) => vec![Err(e)],
        };
        for (job, result) in batch.into_iter().zip(results) {
            if result.is_ok() {
                changed(&job.id);
            }
            let _ = job.reply.send(result);
        }
    }
}

/// One transaction for `batch`, within `budget`: each write's outcome, or the batch's failure
/// (nothing committed).
async fn run(pool: &Pool, batch: &[Job], budget: Duration) -> Result<Vec<Result<Properties, StoreError>>, StoreError> {
    let work = async {
        let client = pool.get().await?;
        let result = transaction(&client, batch).await;
        if result.is_err() {
            // Whatever state it is in, the connection does not go back to the pool.
            drop(deadpool_postgres::Object::take(client));
        }
        result
    };
    match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!("the database did not answer within {OP_TIMEOUT:?}"))),
    }
}

async fn transaction(
    c: &deadpool_postgres::Client,
    batch: &[Job],
) -> Result<Vec<Result<Properties, StoreError>>, StoreError> {
    let mut ids: Vec<&str> = batch.iter().map(|j| j.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let lock = c.prepare_cached(LOCK_MANY).await?;
    let load = c.prepare_cached(LOAD_MANY).await?;
    let client: &tokio_postgres::Client = c;
    // Round trip 1: begin, lock, load (after the locks).
    let params: [&(dyn ToSql + Sync); 1] = [&ids];
    let (begun, locked, rows) =
        tokio::join!(client.batch_execute("BEGIN"), client.query(&lock, &params), client.query(&load, &params));
    begun?;
    locked?;
    let mut before: HashMap<String, Image> = HashMap::new();
    for row in rows? {
        let image = image_from_row(&row)?;
        before.insert(image.id.clone(), image);
    }

    // Each write in turn, on the image as the writes before it in the batch left it.
    let mut after: HashMap<&str, Image> = HashMap::new();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let current = after.get(job.id.as_str()).or_else(|| before.get(&job.id)).cloned();
        let outcome = visible(current, &job.who)
            .and_then(|image| plan::metadata(&image, &job.who, job.change.clone(), job.quota).map(|p| (image, p)));
        match outcome {
            Ok((mut image, plan)) => {
                image.properties = plan.after;
                results.push(Ok(image.properties.clone()));
                after.insert(job.id.as_str(), image);
            }
            Err(refused) => results.push(Err(refused)),
        }
    }
    if after.is_empty() {
        c.batch_execute("ROLLBACK").await?;
        return Ok(results);
    }

    // Round trip 2: each changed image's difference, its `updated_at`, the commit.
    let delete = c.prepare_cached(DELETE_PROPERTY).await?;
    let update = c.prepare_cached(UPDATE_PROPERTY).await?;
    let insert = c.prepare_cached(INSERT_PROPERTY).await?;
    let touch = c.prepare_cached(TOUCH_MANY).await?;
    let mut changed: Vec<&str> = after.keys().copied().collect();
    changed.sort_unstable();
    let updated_at = micros(now());
    let diffs: Vec<(&str, plan::ImageDiff<'_>)> =
        changed.iter().map(|id| (*id, plan::diff(&before[*id], &after[*id]))).collect();
    let mut calls: Vec<(&tokio_postgres::Statement, Vec<&(dyn ToSql + Sync)>)> =
        vec![(&touch, vec![&changed, &updated_at])];
    for (id, diff) in &diffs {
        for k in &diff.removed {
            calls.push((&delete, vec![id, k]));
        }
        for (k, v, existed) in &diff.set {
            calls.push((if *existed { &update } else { &insert }, vec![id, k, v]));
        }
    }
    let mut writes: Vec<Pending<'_>> =
        calls.iter().map(|(statement, args)| -> Pending<'_> { Box::pin(client.execute(*statement, args)) }).collect();
    writes.push(Box::pin(async { client.batch_execute("COMMIT").await.map(|()| 0) }));
    // In order on the connection: a failed statement aborts the transaction, and the COMMIT
    // after it rolls back.
    for result in futures_util::future::join_all(writes).await {
        result?;
    }
    Ok(results)
}
