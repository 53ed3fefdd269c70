//! Metadata writes on PostgreSQL, batched and optimistic: the writes waiting when a writer is
//! free go to the database together, in two round trips and as one single-statement
//! transaction, the way the SQLite writer's group commit puts them in one transaction.
//!
//! A batch reads its images (one statement, no lock), applies each write in turn to the image
//! as the writes before it left it (the same plan, checks and quota as a write alone), and
//! writes every changed image's properties in one `UPDATE`, each row only if it is still at
//! the revision that was read (every write of an image's row counts its revision up). An
//! image some other write changed in between is not written: its writes are planned again on
//! what is now committed, in the next round. So a write is applied on exactly the state it
//! was checked against, and concurrent writers on any nodes never lose each other's keys nor
//! exceed a quota together, with no row locked across a round trip. After
//! [`OPTIMISTIC_ROUNDS`] rounds lost to other writers, the writes left lock their rows (in id
//! order, so batches on any node never deadlock) and are applied under the locks: a write
//! always makes progress, however contended its image.
//!
//! A refused write (not found, forbidden, a key not found, the quota) changes nothing and
//! leaves the others be. A batch the database fails for another reason than its availability
//! (a statement it refused) is retried one write at a time, those already committed excepted,
//! so that one bad write fails alone. Every write is answered within [`OP_TIMEOUT`] of its
//! arrival, as every other operation is: one not begun [`MIN_RUN`] before then is answered
//! unavailable without being applied, and a batch has until its oldest write's time is up (at
//! least [`MIN_RUN`]). A write answered unavailable was not applied, unless the database
//! stopped answering while committing it (the answer to a commit can be lost, with any client
//! of any database).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{LOAD_MANY, OP_TIMEOUT, REVISION, image_from_row, visible};
use crate::domain::metadata::{MetadataChange, MetadataQuota};
use crate::domain::{Image, Principal, Properties, now};
use crate::store::StoreError;
use crate::store::plan;
use crate::store::sql::micros;

/// Writers (batches in flight at once, each on a connection of the pool).
pub(super) const WRITERS: usize = 2;
/// The most writes in one batch.
const MAX_BATCH: usize = 128;
/// The most writes waiting for a writer; one more is answered unavailable at once.
const MAX_WAITING: usize = 4096;
/// The least time a batch is given: a write that waited longer than `OP_TIMEOUT - MIN_RUN`
/// for a writer is not begun.
const MIN_RUN: Duration = Duration::from_secs(1);
/// Rounds a batch's writes may lose to other writers before they lock their images.
const OPTIMISTIC_ROUNDS: usize = 3;

const LOCK_MANY: &str = "SELECT id FROM images WHERE id = ANY($1) ORDER BY id COLLATE \"C\" FOR UPDATE";
/// Each image of `$1` gets the properties at the same place in `$3` ([`Properties::encode`])
/// if its row is still at the revision at that place in `$2`; the ids of those written.
const WRITE_MANY: &str = "UPDATE images AS i SET properties = u.properties::jsonb, updated_at = $4, \
     revision = i.revision + 1 \
     FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u (id, revision, properties) \
     WHERE i.id = u.id AND i.revision = u.revision RETURNING i.id";

/// A metadata write waiting for a writer.
pub(super) struct Job {
    pub who: Principal,
    pub id: String,
    pub change: MetadataChange,
    pub quota: MetadataQuota,
    pub queued: Instant,
    pub reply: oneshot::Sender<Result<Properties, StoreError>>,
}

/// A write's answer, once it has one.
pub(super) type Answer = Option<Result<Properties, StoreError>>;

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

fn late() -> StoreError {
    StoreError::Unavailable(format!("the database did not answer within {OP_TIMEOUT:?}"))
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
                let _ = job.reply.send(Err(late()));
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
        let mut answers: Vec<Answer> = vec![None; batch.len()];
        if let Err(e) = run(&pool, &batch, &mut answers, budget).await {
            let unanswered = answers.iter().filter(|a| a.is_none()).count();
            match e {
                StoreError::Unavailable(_) | StoreError::Full(_) => {}
                _ if unanswered > 1 => {
                    tracing::warn!(error = %e, writes = unanswered, "a batch of metadata writes failed; each is retried alone");
                    for (job, answer) in batch.iter().zip(answers.iter_mut()).filter(|(_, a)| a.is_none()) {
                        if job.queued.elapsed() > OP_TIMEOUT - MIN_RUN {
                            *answer = Some(Err(late()));
                            continue;
                        }
                        let budget = OP_TIMEOUT.saturating_sub(job.queued.elapsed()).max(MIN_RUN);
                        let mut one = [None];
                        let failed = run(&pool, std::slice::from_ref(job), &mut one, budget).await.err();
                        let [one] = one;
                        *answer = one.or(failed.map(Err));
                    }
                }
                _ => {}
            }
            for answer in answers.iter_mut().filter(|a| a.is_none()) {
                *answer = Some(Err(e.clone()));
            }
        }
        for (job, answer) in batch.into_iter().zip(answers) {
            let answer =
                answer.unwrap_or_else(|| Err(StoreError::Internal("a metadata write was not answered".into())));
            if answer.is_ok() {
                changed(&job.id);
            }
            let _ = job.reply.send(answer);
        }
    }
}

/// Applies `batch` within `budget`, answering in `answers` each write whose outcome is final
/// (committed, or refused on committed state); `Err` leaves the others unanswered and
/// unapplied.
async fn run(pool: &Pool, batch: &[Job], answers: &mut [Answer], budget: Duration) -> Result<(), StoreError> {
    let work = async {
        let client = pool.get().await?;
        let result = apply(&client, batch, answers, OPTIMISTIC_ROUNDS).await;
        if result.is_err() {
            // Whatever state it is in, the connection does not go back to the pool.
            drop(deadpool_postgres::Object::take(client));
        }
        result
    };
    tokio::time::timeout(budget, work).await.unwrap_or_else(|_| Err(late()))
}

/// Applies `batch` in up to `rounds` optimistic rounds, then what is left under locks.
pub(super) async fn apply(
    c: &deadpool_postgres::Client,
    batch: &[Job],
    answers: &mut [Answer],
    rounds: usize,
) -> Result<(), StoreError> {
    let load = c.prepare_cached(LOAD_MANY).await?;
    let write = c.prepare_cached(WRITE_MANY).await?;
    for _ in 0..rounds {
        let ids = unanswered_ids(batch, answers);
        if ids.is_empty() {
            return Ok(());
        }
        // Round trip 1: the images as committed, with their revisions.
        let before = loaded(c.query(&load, &[&ids]).await?)?;
        let Planned { outcomes, after } = plan_all(batch, answers, &before);
        // Round trip 2: the changed images, each only at the revision read (one statement,
        // its own transaction).
        let written = if after.is_empty() {
            HashSet::new()
        } else {
            let args = write_args(&after, &before);
            match c.query(&write, &args.refs()).await {
                Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect(),
                // Two batches that wanted each other's rows: this statement did nothing.
                Err(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => HashSet::new(),
                Err(e) => return Err(e.into()),
            }
        };
        // Final: what was written, and what was refused on an image nothing in the batch
        // changed. The writes of an image another writer changed meanwhile go round again.
        for (n, outcome) in outcomes {
            let id = batch[n].id.as_str();
            if !after.contains_key(id) || written.contains(id) {
                answers[n] = Some(outcome);
            }
        }
    }
    locked(c, batch, answers).await
}

/// The writes still unanswered after the optimistic rounds, applied with their images locked.
async fn locked(c: &deadpool_postgres::Client, batch: &[Job], answers: &mut [Answer]) -> Result<(), StoreError> {
    let ids = unanswered_ids(batch, answers);
    if ids.is_empty() {
        return Ok(());
    }
    let lock = c.prepare_cached(LOCK_MANY).await?;
    let load = c.prepare_cached(LOAD_MANY).await?;
    let write = c.prepare_cached(WRITE_MANY).await?;
    let client: &tokio_postgres::Client = c;
    // Round trip 1: begin, lock, load (a statement after the locks sees every write committed
    // before they were granted).
    let params: [&(dyn ToSql + Sync); 1] = [&ids];
    let (begun, locked, rows) =
        tokio::join!(client.batch_execute("BEGIN"), client.query(&lock, &params), client.query(&load, &params));
    begun?;
    locked?;
    let before = loaded(rows?)?;
    let Planned { outcomes, after } = plan_all(batch, answers, &before);
    if after.is_empty() {
        c.batch_execute("ROLLBACK").await?;
    } else {
        // Round trip 2: the changes and the commit (a failed write aborts the transaction,
        // and the COMMIT after it rolls back).
        let args = write_args(&after, &before);
        let args = args.refs();
        let (written, committed) = tokio::join!(client.query(&write, &args), client.batch_execute("COMMIT"));
        let written = written?.len();
        committed?;
        if written != after.len() {
            return Err(StoreError::Internal(format!("{written} of {} locked images written", after.len())));
        }
    }
    for (n, outcome) in outcomes {
        answers[n] = Some(outcome);
    }
    Ok(())
}

/// The images of [`LOAD_MANY`]'s rows by id, each with its row's revision.
fn loaded(rows: Vec<tokio_postgres::Row>) -> Result<HashMap<String, (Image, i64)>, StoreError> {
    rows.iter()
        .map(|row| {
            let revision: i64 = row.try_get(REVISION).map_err(|e| StoreError::Internal(e.to_string()))?;
            let image = image_from_row(row)?;
            Ok((image.id.clone(), (image, revision)))
        })
        .collect()
}

/// The images of the writes not answered yet, sorted, once each.
fn unanswered_ids<'a>(batch: &'a [Job], answers: &[Answer]) -> Vec<&'a str> {
    let mut ids: Vec<&str> =
        batch.iter().zip(answers).filter(|(_, a)| a.is_none()).map(|(job, _)| job.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// What [`plan_all`] decided: each write's outcome (by its place in the batch), and the images
/// changed, as they are after the batch.
struct Planned<'a> {
    outcomes: Vec<(usize, Result<Properties, StoreError>)>,
    after: HashMap<&'a str, Image>,
}

/// Each unanswered write in turn, on its image as `before` holds it and the writes before it
/// in the batch left it.
fn plan_all<'a>(batch: &'a [Job], answers: &[Answer], before: &HashMap<String, (Image, i64)>) -> Planned<'a> {
    let mut after: HashMap<&str, Image> = HashMap::new();
    let mut outcomes = Vec::new();
    for (n, job) in batch.iter().enumerate().filter(|(n, _)| answers[*n].is_none()) {
        let current = after.get(job.id.as_str()).or_else(|| before.get(&job.id).map(|(image, _)| image)).cloned();
        let outcome = visible(current, &job.who)
            .and_then(|image| plan::metadata(&image, &job.who, job.change.clone(), job.quota).map(|p| (image, p)));
        match outcome {
            Ok((mut image, plan)) => {
                image.properties = plan.after;
                outcomes.push((n, Ok(image.properties.clone())));
                after.insert(job.id.as_str(), image);
            }
            Err(refused) => outcomes.push((n, Err(refused))),
        }
    }
    Planned { outcomes, after }
}

/// [`WRITE_MANY`]'s arguments for the images in `after`, at their revisions in `before`.
struct WriteArgs<'a> {
    ids: Vec<&'a str>,
    revisions: Vec<i64>,
    properties: Vec<String>,
    updated_at: i64,
}

impl WriteArgs<'_> {
    fn refs(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.ids, &self.revisions, &self.properties, &self.updated_at]
    }
}

fn write_args<'a>(after: &HashMap<&'a str, Image>, before: &HashMap<String, (Image, i64)>) -> WriteArgs<'a> {
    let mut ids: Vec<&str> = after.keys().copied().collect();
    ids.sort_unstable();
    WriteArgs {
        revisions: ids.iter().map(|id| before[*id].1).collect(),
        properties: ids.iter().map(|id| after[*id].properties.encode()).collect(),
        ids,
        updated_at: micros(now()),
    }
}
