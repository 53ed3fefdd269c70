//! `imagemeta backup`: a consistent copy of a SQLite catalogue, taken while servers write to
//! it.
//!
//! SQLite's online backup copies every page of the database inside one read transaction on
//! the source. In WAL mode (the catalogue's mode) a reader blocks no writer, so the servers go
//! on committing while the copy runs, and the copy is the database as of the moment the read
//! began: every write acknowledged before then (a write is acknowledged after its commit) and
//! none half-done. The copy is written beside the destination, checked (`integrity_check`),
//! made self-contained (rollback journal, no `-wal` file), synced, and only then renamed over
//! the destination: a backup that fails leaves the previous one in place, never a torn one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags};

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub images: u64,
    pub pages: u64,
    pub bytes: u64,
}

/// How long the copy waits on a source that is locked (only a writer that holds an exclusive
/// lock outside WAL mode, or a checkpoint truncating the log, can make it wait).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Copies the catalogue at `from` to `to`, replacing `to` atomically.
pub fn sqlite(from: &Path, to: &Path) -> anyhow::Result<Copied> {
    if !from.is_file() {
        bail!("{}: no such database file", from.display());
    }
    if to.is_dir() {
        bail!("{}: is a directory; --to names the backup file", to.display());
    }
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!("{}: no such directory", dir.display());
    }
    if to.exists() && same_file(from, to)? {
        bail!("{}: the backup cannot replace the database it copies", to.display());
    }
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open {}", from.display()))?;
    source.busy_timeout(BUSY_TIMEOUT)?;
    check_catalogue(&source).with_context(|| format!("{}", from.display()))?;

    let name = to.file_name().context("--to names no file")?.to_string_lossy().into_owned();
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = copy_into(&source, &partial);
    drop(source);
    match result {
        Ok(copied) => {
            std::fs::rename(&partial, to)
                .with_context(|| format!("cannot move the backup into place at {}", to.display()))?;
            // The rename itself survives a crash once the directory is synced.
            std::fs::File::open(&dir).and_then(|d| d.sync_all()).with_context(|| format!("sync {}", dir.display()))?;
            Ok(copied)
        }
        Err(e) => {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
            }
            Err(e)
        }
    }
}

/// The database is an imagemeta catalogue (a backup of anything else would restore nothing).
fn check_catalogue(c: &Connection) -> anyhow::Result<()> {
    let tables: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'images'", [], |r| r.get(0))
        .context("not a SQLite database")?;
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if tables == 0 || version == 0 {
        bail!("not an imagemeta catalogue (no images table)");
    }
    Ok(())
}

fn copy_into(source: &Connection, partial: &Path) -> anyhow::Result<Copied> {
    let _ = std::fs::remove_file(partial);
    let mut target = Connection::open(partial).with_context(|| format!("cannot create {}", partial.display()))?;
    {
        let backup = rusqlite::backup::Backup::new(source, &mut target)?;
        let started = Instant::now();
        // All pages in one step: one read transaction, so one consistent snapshot.
        loop {
            match backup.step(-1) {
                Ok(rusqlite::backup::StepResult::Done) => break,
                Ok(rusqlite::backup::StepResult::More) => {}
                Ok(rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked) => {
                    if started.elapsed() > BUSY_TIMEOUT {
                        bail!("the database stayed locked for {} s", BUSY_TIMEOUT.as_secs());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(_) => {}
                Err(e) => return Err(e).context("the copy failed"),
            }
        }
    }
    // The copy carries the source's WAL flag: a backup is one file, so back to a rollback
    // journal (this also checkpoints and removes the copy's own log).
    let mode: String = target.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        bail!("cannot make the backup self-contained (journal_mode {mode})");
    }
    let check: String = target.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the copy fails integrity_check: {check}");
    }
    let images: i64 = target.query_row("SELECT count(*) FROM images", [], |r| r.get(0))?;
    let pages: i64 = target.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let page_size: i64 = target.pragma_query_value(None, "page_size", |r| r.get(0))?;
    target.close().map_err(|(_, e)| e)?;
    std::fs::File::open(partial).and_then(|f| f.sync_all()).context("sync the backup")?;
    Ok(Copied { images: images as u64, pages: pages as u64, bytes: (pages * page_size) as u64 })
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}
