//! A directory of image data: one file per image, named by the hex of its id (any id is a
//! safe name; the location is that name). An upload writes `STAGING.partial`, fsyncs it and
//! renames it into place (then fsyncs the directory), so a file under an image's name is
//! always whole.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use axum::body::Bytes;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Backend, ByteStream, Entry, Sink, hex, unhex};

const PARTIAL: &str = ".partial";

pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    /// Opens (creating) the directory. Partial uploads are left where they are: another
    /// process sharing the directory may be writing them (the upload recovery and the sweep
    /// remove those nobody holds).
    pub fn open(dir: &Path) -> io::Result<FileBackend> {
        std::fs::create_dir_all(dir)?;
        Ok(FileBackend { dir: dir.to_owned() })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(hex(id.as_bytes()))
    }

    fn partial_path(&self, staging: &str) -> io::Result<PathBuf> {
        if staging.is_empty() || staging.contains('/') {
            return Err(io::Error::other(format!("{staging:?} is not a staging name")));
        }
        Ok(self.dir.join(format!("{staging}{PARTIAL}")))
    }
}

struct FileSink {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.file.write_all(&chunk).await
    }

    async fn commit(self: Box<Self>) -> io::Result<String> {
        let FileSink { file, temp, target, dir } = *self;
        let done = async {
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&temp, &target).await?;
            tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await.map_err(io::Error::other)?
        }
        .await;
        if done.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        done?;
        Ok(target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    }

    async fn abort(self: Box<Self>) {
        let _ = tokio::fs::remove_file(&self.temp).await;
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Backend for FileBackend {
    async fn begin(&self, id: &str, staging: &str, _: Option<u64>) -> io::Result<Box<dyn Sink>> {
        let temp = self.partial_path(staging)?;
        let file = File::create(&temp).await?;
        Ok(Box::new(FileSink { file, temp, target: self.path(id), dir: self.dir.clone() }))
    }

    async fn read(&self, id: &str, _: Option<&str>, range: Option<(u64, u64)>) -> io::Result<Option<ByteStream>> {
        let Some(mut file) = not_found_is_none(File::open(self.path(id)).await)? else { return Ok(None) };
        let stream: ByteStream = match range {
            None => Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)),
            Some((start, end)) => {
                file.seek(io::SeekFrom::Start(start)).await?;
                Box::pin(tokio_util::io::ReaderStream::with_capacity(file.take(end - start + 1), 256 * 1024))
            }
        };
        Ok(Some(stream))
    }

    async fn remove(&self, id: &str, _: Option<&str>) -> io::Result<()> {
        not_found_is_none(tokio::fs::remove_file(self.path(id)).await).map(drop)
    }

    async fn remove_staging(&self, staging: &str) -> io::Result<()> {
        not_found_is_none(tokio::fs::remove_file(self.partial_path(staging)?).await).map(drop)
    }

    async fn entries(&self) -> io::Result<Vec<Entry>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else { continue };
                if let Some(staging) = name.strip_suffix(PARTIAL) {
                    let Some(id) = staging.split('.').next().and_then(unhex) else { continue };
                    found.push(Entry::Partial { id, staging: staging.to_owned(), modified });
                } else if let Some(id) = unhex(&name) {
                    found.push(Entry::Data { id, location: name, modified });
                }
            }
            Ok(found)
        })
        .await
        .map_err(io::Error::other)?
    }

    fn describe(&self) -> (&'static str, serde_json::Value) {
        ("file", serde_json::json!({"datadir": self.dir.display().to_string()}))
    }
}
