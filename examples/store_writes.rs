//! The SQLite store alone, without HTTP: how many durable metadata merges per second it
//! acknowledges, and how much CPU each costs. It drives the same store the server uses (the
//! writer thread, group commit, the read cache) through the `Store` trait, so the numbers are
//! the ceiling of the write path before any HTTP work (see BENCHMARKS.md, "Durable writes").
//!
//! Usage: `store_writes DB [IMAGES] [SECONDS] [CONCURRENCY]`. A new database is first seeded
//! with IMAGES images (default 50,000) of 10 properties each; an existing one is used as it is.
//! Then CONCURRENCY tasks (default 50) merge one key into random images for SECONDS (default
//! 5), each waiting for its acknowledgement (`synchronous=FULL`) before the next write.
//! Prints the writes per second, the writer thread's and the whole process's CPU per write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use imagemeta::domain::metadata::{MetadataChange, MetadataKey, MetadataQuota, MetadataValue};
use imagemeta::domain::{Image, ImageStatus, Principal, Visibility};
use imagemeta::store::{self, DatabaseUrl, StoreOptions};

const PROJECT: &str = "0123456789abcdef0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: store_writes DB [IMAGES] [SECONDS] [CONCURRENCY]"))?;
    let number = |s: Option<String>, default: u64| s.and_then(|s| s.parse().ok()).unwrap_or(default);
    let images = number(args.next(), 50_000);
    let seconds = number(args.next(), 5);
    let concurrency = number(args.next(), 50);

    let fresh = !std::path::Path::new(&path).exists();
    let store = store::open(&DatabaseUrl::Sqlite(path.clone().into()), StoreOptions::default()).await?;
    let mut ids = Vec::with_capacity(images as usize);
    if fresh {
        let start = Instant::now();
        let created = time::OffsetDateTime::now_utc();
        let mut batch = Vec::new();
        for n in 0..images {
            let mut image = Image::new(uuid::Uuid::new_v4().to_string(), created + time::Duration::seconds(n as i64));
            image.owner = Some(PROJECT.to_owned());
            image.visibility = Visibility::Private;
            image.status = ImageStatus::Active;
            for k in 0..10 {
                image.properties.set(format!("k{k}"), Some(format!("value-{k}-xxxxxxxx")));
            }
            ids.push(image.id.clone());
            batch.push(image);
            if batch.len() == 10_000 {
                store.insert_images(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            store.insert_images(batch).await?;
        }
        eprintln!("seeded {images} images in {:.1} s", start.elapsed().as_secs_f64());
    } else {
        let query = imagemeta::store::ListQuery { limit: 100_000_000, ..Default::default() };
        ids = store.list_images(imagemeta::store::Caller::Operator, &query).await?.into_iter().map(|i| i.id).collect();
    }
    anyhow::ensure!(!ids.is_empty(), "{path} holds no images");
    let ids = Arc::new(ids);

    let who = Principal::new("bench".into(), PROJECT.into(), vec!["member".into()]);
    let done = Arc::new(AtomicU64::new(0));
    let (cpu0, writer0) = (process_cpu(), writer_cpu());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (store, ids, who, done) = (store.clone(), ids.clone(), who.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (task + 1);
            let mut n = 0u64;
            while Instant::now() < deadline {
                // xorshift64: a different random walk per task, the same one every run.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let id = &ids[(state % ids.len() as u64) as usize];
                n += 1;
                let item = (MetadataKey::parse("bench").unwrap(), MetadataValue::parse(&n.to_string()).unwrap());
                let change = MetadataChange::Merge(vec![item]);
                store.change_metadata(&who, id, change, MetadataQuota(Some(128))).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let writes = done.load(Ordering::Relaxed) as f64;
    let (cpu, writer) = (process_cpu() - cpu0, writer_cpu() - writer0);
    println!(
        "{writes:.0} writes in {elapsed:.1} s: {:.0} writes/s; writer thread {:.0} µs of CPU per write \
         ({:.0}% busy), whole process {:.0} µs per write",
        writes / elapsed,
        writer * 1e6 / writes,
        writer * 100.0 / elapsed,
        cpu * 1e6 / writes
    );
    Ok(())
}

/// This process's user + system CPU time in seconds (Linux `/proc`).
fn process_cpu() -> f64 {
    cpu_of(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// The store's writer thread's CPU time in seconds.
fn writer_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "sqlite-writer"))
        .map(|t| cpu_of(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}

/// utime + stime of a `/proc/.../stat` line, in seconds (at the usual 100 ticks per second).
fn cpu_of(stat: &str) -> f64 {
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
