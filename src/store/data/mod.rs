//! Image data: named stores (Glance's multi-store), each a [`Backend`]: a directory
//! ([`file`]), an S3 bucket ([`s3`]) or a Swift container ([`swift`]).
//!
//! An upload streams into its store while md5, sha512 and the size are computed; what it
//! writes stays invisible under the image's name until the upload is complete, checked and
//! committed (a rename, the completion of a multipart upload, a Swift manifest), so a crash or
//! a client that disconnects never leaves partial data as an image's. Until then it is staged
//! under a name the upload's hold records, so that whatever a dead upload left can be found
//! and removed. Memory is bounded: a store holds at most one part of an upload in memory.

pub mod file;
mod http;
pub mod s3;
pub mod swift;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use md5::Md5;
use sha2::{Digest, Sha512};

use crate::domain::{Rejection, RejectionKind};

/// Bytes kept from the start of an upload for format inspection.
pub const HEAD_LEN: usize = 512;

/// A stream of image data.
pub type ByteStream = Pin<Box<dyn futures_core::Stream<Item = io::Result<Bytes>> + Send>>;

/// One place image data is kept. An image's data is at a *location* its store chose when the
/// upload committed (the image records it); `None` is the file layout of data written before
/// locations were recorded.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Starts writing the data of image `id`, staged under `staging` (unique to the upload)
    /// until committed. `size` is the declared size, when known (it picks part sizes).
    async fn begin(&self, id: &str, staging: &str, size: Option<u64>) -> io::Result<Box<dyn Sink>>;

    /// The data of image `id` at `location` (bytes `range`, inclusive), or `None` when there
    /// is none.
    async fn read(&self, id: &str, location: Option<&str>, range: Option<(u64, u64)>)
    -> io::Result<Option<ByteStream>>;

    /// Removes the data of image `id` at `location`, all its parts included (nothing to do
    /// when there is none).
    async fn remove(&self, id: &str, location: Option<&str>) -> io::Result<()>;

    /// Removes whatever an upload staged under `staging` left, committed or not (nothing when
    /// there is none).
    async fn remove_staging(&self, staging: &str) -> io::Result<()>;

    /// Every image's data and every staged upload in the store.
    async fn entries(&self) -> io::Result<Vec<Entry>>;

    /// What the store is, for `GET /v2/info/stores/detail` (`type`, `properties`).
    fn describe(&self) -> (&'static str, serde_json::Value);
}

/// An upload in progress in a backend.
#[async_trait]
pub trait Sink: Send + Sync {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()>;

    /// Makes everything written durable, and visible at once; returns its location.
    async fn commit(self: Box<Self>) -> io::Result<String>;

    /// Drops everything written.
    async fn abort(self: Box<Self>);
}

/// A piece of data in a store, as [`Backend::entries`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Data of image `id` at `location`.
    Data { id: String, location: String, modified: SystemTime },
    /// A partial upload for image `id`, staged under `staging`.
    Partial { id: String, staging: String, modified: SystemTime },
}

/// A complete upload, checked by its caller before it is committed.
pub struct Staged {
    sink: Box<dyn Sink>,
    /// The store that holds it.
    pub store: String,
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

/// Whether an I/O error says the store has no room (a full filesystem or quota, or an
/// object store's own refusal, which the backends map to `StorageFull`).
fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.kind() == io::ErrorKind::FileTooLarge
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// Where a store keeps its data, from `--image-store NAME=URL`: `file:///path`,
/// `s3://BUCKET?endpoint=URL&region=R`, `swift://CONTAINER?auth_url=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub name: String,
    pub url: String,
}

impl StoreSpec {
    /// `NAME=URL`.
    pub fn parse(s: &str) -> Result<StoreSpec, String> {
        let (name, url) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=URL"))?;
        let valid = !name.is_empty()
            && name.len() <= 255
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(format!("{name:?}: a store name is letters, digits, '-', '_' and '.'"));
        }
        if !(url.starts_with("file://") || url.starts_with("s3://") || url.starts_with("swift://")) {
            return Err(format!("{url}: a store URL is file:///PATH, s3://BUCKET?… or swift://CONTAINER?…"));
        }
        Ok(StoreSpec { name: name.to_owned(), url: url.to_owned() })
    }
}

/// The name of the store `--image-data-dir` alone defines, which also holds the data of
/// images written before stores had names.
pub const FILE_STORE: &str = "file";

/// The image data stores, by name, and the default one.
pub struct DataStore {
    stores: Vec<(String, Arc<dyn Backend>)>,
    default: usize,
}

impl DataStore {
    /// One file store, [`FILE_STORE`], in `dir` (`--image-data-dir` alone).
    pub fn open(dir: &std::path::Path) -> io::Result<DataStore> {
        Ok(DataStore { stores: vec![(FILE_STORE.to_owned(), Arc::new(file::FileBackend::open(dir)?))], default: 0 })
    }

    /// The stores `specs` name; `default` names the default one (the first when `None`).
    pub async fn open_all(specs: &[StoreSpec], default: Option<&str>) -> Result<DataStore, String> {
        let mut stores: Vec<(String, Arc<dyn Backend>)> = Vec::new();
        for spec in specs {
            if stores.iter().any(|(n, _)| *n == spec.name) {
                return Err(format!("the store name {} is given twice", spec.name));
            }
            let backend: Arc<dyn Backend> = if let Some(path) = spec.url.strip_prefix("file://") {
                Arc::new(file::FileBackend::open(std::path::Path::new(path)).map_err(|e| format!("{}: {e}", spec.url))?)
            } else if spec.url.starts_with("s3://") {
                Arc::new(s3::S3Backend::open(&spec.url).await?)
            } else {
                Arc::new(swift::SwiftBackend::open(&spec.url).await?)
            };
            stores.push((spec.name.clone(), backend));
        }
        let default = match default {
            None => 0,
            Some(name) => stores
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| format!("--default-image-store {name} names no --image-store"))?,
        };
        if stores.is_empty() {
            return Err("no image store".into());
        }
        Ok(DataStore { stores, default })
    }

    /// Whether several stores are configured (Glance's multi-store API is on).
    pub fn is_multi(&self) -> bool {
        self.stores.len() > 1
    }

    pub fn default_name(&self) -> &str {
        &self.stores[self.default].0
    }

    /// The stores' names and backends, the default first.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Arc<dyn Backend>)> {
        let default = &self.stores[self.default];
        std::iter::once((default.0.as_str(), &default.1)).chain(
            self.stores.iter().enumerate().filter(|(n, _)| *n != self.default).map(|(_, (name, b))| (name.as_str(), b)),
        )
    }

    /// The store `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.stores.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    /// The store holding an image's data (`None`: written before stores had names).
    pub fn holding(&self, store: Option<&str>) -> io::Result<&Arc<dyn Backend>> {
        let name = store.unwrap_or(FILE_STORE);
        self.get(name)
            .ok_or_else(|| io::Error::other(format!("the image's data is in store {name}, which is not configured")))
    }

    /// The data of `image`, if it has any (bytes `range`, inclusive): from the first of its
    /// copies that can be read (where it was first stored, then its replicas in order), as
    /// Glance tries an image's locations in turn.
    pub async fn read(
        &self,
        image: &crate::domain::Image,
        range: Option<(u64, u64)>,
    ) -> io::Result<Option<ByteStream>> {
        let first = self.holding(image.store.as_deref())?.read(&image.id, image.location.as_deref(), range).await;
        let failed = match first {
            Ok(Some(stream)) => return Ok(Some(stream)),
            Ok(None) if image.replicas.is_empty() => return Ok(None),
            Ok(None) => io::Error::new(io::ErrorKind::NotFound, "the image's data is missing from its first store"),
            Err(e) => e,
        };
        for replica in &image.replicas {
            let Some(backend) = self.get(&replica.store) else { continue };
            match backend.read(&image.id, Some(&replica.location), range).await {
                Ok(Some(stream)) => {
                    tracing::warn!(error = %failed, image = %image.id, store = %replica.store, "read from a replica");
                    return Ok(Some(stream));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, image = %image.id, store = %replica.store, "cannot read a replica")
                }
            }
        }
        if failed.kind() == io::ErrorKind::NotFound { Ok(None) } else { Err(failed) }
    }

    /// Removes the data of `image`, every copy of it (nothing to do when it has none). Every
    /// copy is tried; the first failure is returned.
    pub async fn remove(&self, image: &crate::domain::Image) -> io::Result<()> {
        let mut result = match self.holding(image.store.as_deref()) {
            Ok(backend) => backend.remove(&image.id, image.location.as_deref()).await,
            Err(e) => Err(e),
        };
        for replica in &image.replicas {
            let removed = match self.holding(Some(&replica.store)) {
                Ok(backend) => backend.remove(&image.id, Some(&replica.location)).await,
                Err(e) => Err(e),
            };
            if result.is_ok() {
                result = removed;
            }
        }
        result
    }

    /// A new place to stage an upload of image `id` into store `store` (recorded with the
    /// upload's hold before any data is written): `STORE/NAME`.
    pub fn new_staging(store: &str, id: &str) -> String {
        format!("{store}/{}.{}", hex(id.as_bytes()), uuid::Uuid::new_v4().simple())
    }

    /// The store and the backend's own name of a staging place.
    fn staging<'a>(&self, staging: &'a str) -> io::Result<(&Arc<dyn Backend>, &'a str)> {
        let (store, name) =
            staging.split_once('/').ok_or_else(|| io::Error::other("a staging place without a store"))?;
        Ok((self.holding(Some(store))?, name))
    }

    /// Streams `body` into its staging place, hashing as it goes, refusing more than `cap`
    /// bytes. On any failure, nothing of it is left.
    pub async fn stage(
        &self,
        id: &str,
        staging: &str,
        body: Body,
        cap: u64,
        size: Option<u64>,
    ) -> Result<Staged, UploadError> {
        let (backend, name) = self.staging(staging)?;
        let store = staging.split('/').next().unwrap_or_default().to_owned();
        let mut sink = backend.begin(id, name, size).await?;
        match receive(&mut sink, body, cap).await {
            Ok((size, md5_hex, sha512_hex, head)) => Ok(Staged { sink, store, size, md5_hex, sha512_hex, head }),
            Err(e) => {
                sink.abort().await;
                Err(e)
            }
        }
    }

    /// Makes a staged upload the data of its image, durably: its location in its store.
    pub async fn commit(&self, staged: Staged) -> io::Result<String> {
        staged.sink.commit().await
    }

    /// Drops a staged upload that will not be used.
    pub async fn discard(&self, staged: Staged) {
        staged.sink.abort().await;
    }

    /// Removes whatever an upload staged (nothing to do when there is none).
    pub async fn remove_staging(&self, staging: &str) -> io::Result<()> {
        if staging.is_empty() {
            return Ok(());
        }
        let (backend, name) = self.staging(staging)?;
        backend.remove_staging(name).await
    }

    /// Whether any store holds the data of any image.
    pub async fn holds_images(&self) -> io::Result<bool> {
        for (_, backend) in self.all() {
            if backend.entries().await?.iter().any(|e| matches!(e, Entry::Data { .. })) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// What data is measured by while it streams: its size (bounded by a cap), md5, sha512 and
/// first bytes (for format inspection).
struct Measure {
    md5: Md5,
    sha: Sha512,
    size: u64,
    head: Vec<u8>,
    cap: u64,
}

impl Measure {
    fn new(cap: u64) -> Measure {
        Measure { md5: Md5::new(), sha: Sha512::new(), size: 0, head: Vec::with_capacity(HEAD_LEN), cap }
    }

    /// Takes in the next chunk; `TooLarge` past the cap.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.size += chunk.len() as u64;
        if self.size > self.cap {
            return Err(UploadError::TooLarge);
        }
        if self.head.len() < HEAD_LEN {
            let take = (HEAD_LEN - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.md5.update(chunk);
        self.sha.update(chunk);
        Ok(())
    }

    /// The size, md5, sha512 and first bytes.
    fn finish(self) -> (u64, String, String, Vec<u8>) {
        (self.size, hex(&self.md5.finalize()), hex(&self.sha.finalize()), self.head)
    }
}

/// The size, md5, sha512 and first bytes of `data`, read to its end (at most `cap` bytes):
/// data already in a store, checked without a copy.
pub async fn digest(mut data: ByteStream, cap: u64) -> Result<(u64, String, String, Vec<u8>), UploadError> {
    let mut measure = Measure::new(cap);
    while let Some(chunk) = futures_util::StreamExt::next(&mut data).await {
        measure.feed(&chunk?)?;
    }
    Ok(measure.finish())
}

/// Feeds `body` to `sink`: the size, md5, sha512 and first bytes of what it wrote.
async fn receive(
    sink: &mut Box<dyn Sink>,
    mut body: Body,
    cap: u64,
) -> Result<(u64, String, String, Vec<u8>), UploadError> {
    let mut measure = Measure::new(cap);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UploadError::Interrupted(e.to_string()))?;
        let Ok(chunk) = frame.into_data() else { continue };
        let chunk: Bytes = chunk;
        measure.feed(&chunk)?;
        sink.write(chunk).await?;
    }
    Ok(measure.finish())
}

/// Glance's format rule for `bare` containers (§8.1): the data must be what `disk_format`
/// says, for the formats we can recognise (raw, qcow2), given its first bytes `head` and its
/// `size`. Returns the virtual size.
pub fn check_format(
    container: Option<&str>,
    disk: Option<&str>,
    head: &[u8],
    size: u64,
) -> Result<Option<i64>, Rejection> {
    let detected = inspect(head);
    let mismatch = || {
        Rejection::new(
            RejectionKind::BadData,
            format!("Image data does not match the disk_format {}.", disk.unwrap_or("")),
        )
    };
    if let Inspected::Qcow2 { safe: false, .. } = detected {
        return Err(Rejection::new(
            RejectionKind::BadData,
            "Image data failed the safety check: qcow2 with a backing file.",
        ));
    }
    match (container, disk, detected) {
        (_, Some("raw"), _) => Ok(Some(size as i64)),
        (_, Some("qcow2"), Inspected::Qcow2 { virtual_size, .. }) => Ok(Some(virtual_size as i64)),
        (Some("bare"), Some("qcow2"), Inspected::Raw) => Err(mismatch()),
        (Some("bare"), Some(_), Inspected::Qcow2 { .. }) => Err(mismatch()),
        _ => Ok(None),
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

    #[test]
    fn store_specs() {
        assert_eq!(StoreSpec::parse("fast=file:///srv/a").unwrap().name, "fast");
        assert!(StoreSpec::parse("a/b=file:///x").is_err());
        assert!(StoreSpec::parse("x=http://y").is_err());
        assert!(StoreSpec::parse("nourl").is_err());
    }

    #[tokio::test]
    async fn staged_upload_hashes_and_commits() {
        let dir = std::env::temp_dir().join(format!("imagemeta-data-{}", uuid::Uuid::new_v4()));
        let store = DataStore::open(&dir).unwrap();
        let staging = DataStore::new_staging(FILE_STORE, "img");
        let staged = store.stage("img", &staging, Body::from("abc"), 10, None).await.unwrap();
        assert_eq!(staged.md5_hex, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(staged.size, 3);
        let backend = store.holding(None).unwrap();
        assert!(matches!(&backend.entries().await.unwrap()[..], [Entry::Partial { id, .. }] if id == "img"));
        let location = store.commit(staged).await.unwrap();
        assert!(backend.read("img", Some(&location), None).await.unwrap().is_some());
        assert!(backend.read("img", None, None).await.unwrap().is_some(), "the file layout needs no location");
        assert!(matches!(&backend.entries().await.unwrap()[..], [Entry::Data { id, .. }] if id == "img"));
        let big = DataStore::new_staging(FILE_STORE, "big");
        assert!(matches!(store.stage("big", &big, Body::from("abcdef"), 5, None).await, Err(UploadError::TooLarge)));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
