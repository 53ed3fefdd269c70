//! Image data on the local filesystem: one file per image in a directory.
//!
//! An upload streams into a temporary file while md5, sha512 and the size are computed; only a
//! complete, fsynced file is renamed into place (and the directory fsynced), so a crash or a
//! client that disconnects never leaves partial data under an image's name.

use std::io;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use md5::Md5;
use sha2::{Digest, Sha512};
use tokio::fs::File;
use tokio::io::AsyncWriteExt;

/// Bytes kept from the start of an upload for format inspection.
pub const HEAD_LEN: usize = 512;

const PARTIAL: &str = ".partial";

pub struct DataStore {
    dir: PathBuf,
}

/// A completed upload, not yet in place.
pub struct Staged {
    temp: PathBuf,
    pub size: u64,
    pub md5_hex: String,
    pub sha512_hex: String,
    /// The first bytes of the data (at most [`HEAD_LEN`]).
    pub head: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// More than the size cap.
    #[error("the incoming image is too large")]
    TooLarge,
    /// The store has no room for it (glance_store's `StorageFull`).
    #[error("There is not enough disk space on the image storage media.")]
    Full,
    /// The client's body ended early or failed (disconnect).
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("image data store failure: {0}")]
    Io(io::Error),
}

impl From<io::Error> for UploadError {
    fn from(e: io::Error) -> Self {
        if is_full(&e) { UploadError::Full } else { UploadError::Io(e) }
    }
}

/// Whether an I/O error says the filesystem (or the quota) has no room.
fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.kind() == io::ErrorKind::FileTooLarge
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// A file in the data directory, as [`DataStore::entries`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The data of image `id`.
    Image { id: String, modified: std::time::SystemTime },
    /// A partial upload, staged under `staging` for image `id`.
    Partial { id: String, staging: String, modified: std::time::SystemTime },
}

impl DataStore {
    /// Opens (creating) the directory. Partial uploads are left where they are: another
    /// process sharing the directory may be writing them (the upload recovery and the sweep
    /// remove those nobody holds).
    pub fn open(dir: &Path) -> io::Result<DataStore> {
        std::fs::create_dir_all(dir)?;
        Ok(DataStore { dir: dir.to_owned() })
    }

    /// The file of image `id`. Ids are hex-encoded so any id is a safe file name.
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(hex(id.as_bytes()))
    }

    fn partial_path(&self, staging: &str) -> PathBuf {
        self.dir.join(format!("{staging}{PARTIAL}"))
    }

    /// A new place to stage an upload of image `id` (recorded with the upload's lease before
    /// any data is written).
    pub fn new_staging(id: &str) -> String {
        format!("{}.{}", hex(id.as_bytes()), uuid::Uuid::new_v4().simple())
    }

    /// Streams `body` into the staging file `staging`, hashing as it goes, refusing more than
    /// `cap` bytes. On any failure the partial file is gone.
    pub async fn stage(&self, staging: &str, body: Body, cap: u64) -> Result<Staged, UploadError> {
        let temp = self.partial_path(staging);
        let result = self.stage_into(&temp, body, cap).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    /// Removes what an upload staged under `staging` (nothing to do when there is none).
    pub async fn remove_staging(&self, staging: &str) -> io::Result<()> {
        if staging.is_empty() || staging.contains('/') {
            return Ok(());
        }
        match tokio::fs::remove_file(self.partial_path(staging)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every image data file and partial upload in the directory (other files are not ours).
    pub async fn entries(&self) -> io::Result<Vec<Entry>> {
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
                    found.push(Entry::Image { id, modified });
                }
            }
            Ok(found)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Whether the directory holds the data of any image.
    pub async fn holds_images(&self) -> io::Result<bool> {
        Ok(self.entries().await?.iter().any(|e| matches!(e, Entry::Image { .. })))
    }

    async fn stage_into(&self, temp: &Path, mut body: Body, cap: u64) -> Result<Staged, UploadError> {
        let mut file = File::create(temp).await?;
        let (mut md5, mut sha) = (Md5::new(), Sha512::new());
        let mut size = 0u64;
        let mut head = Vec::with_capacity(HEAD_LEN);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| UploadError::Interrupted(e.to_string()))?;
            let Ok(chunk) = frame.into_data() else { continue };
            let chunk: Bytes = chunk;
            size += chunk.len() as u64;
            if size > cap {
                return Err(UploadError::TooLarge);
            }
            if head.len() < HEAD_LEN {
                let take = (HEAD_LEN - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            md5.update(&chunk);
            sha.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        Ok(Staged {
            temp: temp.to_owned(),
            size,
            md5_hex: hex(&md5.finalize()),
            sha512_hex: hex(&sha.finalize()),
            head,
        })
    }

    /// Moves a staged upload into place as the data of `id`, durably.
    pub async fn commit(&self, id: &str, staged: &Staged) -> io::Result<()> {
        tokio::fs::rename(&staged.temp, self.path(id)).await?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await.map_err(io::Error::other)?
    }

    /// Drops a staged upload that will not be used.
    pub async fn discard(&self, staged: Staged) {
        let _ = tokio::fs::remove_file(&staged.temp).await;
    }

    /// Opens the data of `id`, if there is any.
    pub async fn open_data(&self, id: &str) -> io::Result<Option<File>> {
        match File::open(self.path(id)).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the data of `id` (nothing to do when there is none).
    pub async fn remove(&self, id: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What the first bytes say about the format (glance-v2 §8.1, raw and qcow2 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspected {
    Raw,
    /// A qcow2 image with its virtual size; `safe` is false when it names a backing file.
    Qcow2 {
        virtual_size: u64,
        safe: bool,
    },
}

pub fn inspect(head: &[u8]) -> Inspected {
    let be64 = |at: usize| head.get(at..at + 8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
    if head.starts_with(b"QFI\xfb")
        && let (Some(backing), Some(virtual_size)) = (be64(8), be64(24))
    {
        return Inspected::Qcow2 { virtual_size, safe: backing == 0 };
    }
    Inspected::Raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qcow2_header() {
        let mut h = b"QFI\xfb\0\0\0\x03".to_vec();
        h.extend_from_slice(&0u64.to_be_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&(1u64 << 30).to_be_bytes());
        assert_eq!(inspect(&h), Inspected::Qcow2 { virtual_size: 1 << 30, safe: true });
        assert_eq!(inspect(b"hello"), Inspected::Raw);
    }

    #[tokio::test]
    async fn staged_upload_hashes_and_commits() {
        let dir = std::env::temp_dir().join(format!("imagemeta-data-{}", uuid::Uuid::new_v4()));
        let store = DataStore::open(&dir).unwrap();
        let staging = DataStore::new_staging("img");
        let staged = store.stage(&staging, Body::from("abc"), 10).await.unwrap();
        assert_eq!(staged.md5_hex, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(staged.size, 3);
        assert!(matches!(&store.entries().await.unwrap()[..], [Entry::Partial { id, .. }] if id == "img"));
        store.commit("img", &staged).await.unwrap();
        assert!(store.open_data("img").await.unwrap().is_some());
        assert!(matches!(&store.entries().await.unwrap()[..], [Entry::Image { id, .. }] if id == "img"));
        let big = DataStore::new_staging("big");
        assert!(matches!(store.stage(&big, Body::from("abcdef"), 5).await, Err(UploadError::TooLarge)));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
