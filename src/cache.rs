//! The node's image cache (Glance's image cache, `--image-cache-dir`): local copies of image
//! data, so that a node serves the images it is asked for often from its own disk instead of
//! the store (an object store across the network, most of all).
//!
//! * An image gets in two ways: a whole download through this node whose image is not cached
//!   yet is copied as it streams ([`ImageCache::tee`]); and an admin's `PUT /v2/cache/{id}`
//!   queues it for the prefetcher, a background task that reads it from its store
//!   ([`ImageCache::run_prefetcher`]). A copy is written under `incomplete/`, checked (its size
//!   and md5 against the catalogue's), flushed to disk, and only then renamed into `ready/`:
//!   a copy that is cut short, or wrong, is never served.
//! * Only images `active` in the catalogue are served, and only after the request passed every
//!   check it passes without the cache: the cache holds bytes, never decisions. A cached copy
//!   whose size is not the image's is dropped instead of served.
//! * The cache is bounded (`--image-cache-max-size`): past it, the least recently used copies
//!   go first. An image larger than the whole cache is not cached.
//! * The queue is kept on disk (`queue/`, one empty file per image) and resumes at the next
//!   start; what was cached is found again at start (its hits start over).
//!
//! Each node has its own cache, as each Glance API node has: `GET /v2/cache` shows this node's.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt;
use md5::Digest;
use serde::Serialize;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::domain::{Image, ImageStatus};
use crate::store::DynStore;
use crate::store::data::{ByteStream, DataStore};

/// The most images queued for the prefetcher at once.
pub const MAX_QUEUED: usize = 10_000;
/// Chunks in flight between a download and the copy it feeds: a copy that falls further
/// behind than this is given up (the download never waits for the cache).
const TEE_DEPTH: usize = 64;

/// A cached image, as `GET /v2/cache` lists it (Glance's `cached_images` rows, in its order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub image_id: String,
    /// Downloads served from the copy.
    pub hits: u64,
    /// Seconds since the epoch.
    pub last_accessed: f64,
    pub last_modified: f64,
    pub size: u64,
}

#[derive(Default)]
struct Index {
    cached: BTreeMap<String, Entry>,
    /// The sum of the cached sizes.
    total: u64,
    /// Queued for the prefetcher, oldest first.
    queued: Vec<String>,
    /// Being copied now (by a download or the prefetcher).
    filling: HashSet<String>,
}

pub struct ImageCache {
    ready: PathBuf,
    incomplete: PathBuf,
    queue_dir: PathBuf,
    max_size: u64,
    index: Mutex<Index>,
    jobs: mpsc::Sender<String>,
    receiver: Mutex<Option<mpsc::Receiver<String>>>,
}

/// `PUT /v2/cache/{id}` could not queue the image.
#[derive(Debug)]
pub enum QueueError {
    /// [`MAX_QUEUED`] images wait already.
    Full,
    Io(io::Error),
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Whether `id` can name a file: the ids the catalogue gives (UUIDs) can.
fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl ImageCache {
    /// The cache in `dir` (made if missing), holding at most `max_size` bytes: what `ready/`
    /// holds is found again, `incomplete/` is emptied, `queue/` is queued again.
    pub fn open(dir: &Path, max_size: u64) -> io::Result<Arc<ImageCache>> {
        let (ready, incomplete, queue_dir) = (dir.join("ready"), dir.join("incomplete"), dir.join("queue"));
        for d in [&ready, &incomplete, &queue_dir] {
            std::fs::create_dir_all(d)?;
        }
        for entry in std::fs::read_dir(&incomplete)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        let mut index = Index::default();
        for entry in std::fs::read_dir(&ready)? {
            let entry = entry?;
            let id = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if !safe_id(&id) || !meta.is_file() {
                continue;
            }
            let modified = epoch(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            index.total += meta.len();
            let e = Entry {
                image_id: id.clone(),
                hits: 0,
                last_accessed: modified,
                last_modified: modified,
                size: meta.len(),
            };
            index.cached.insert(id, e);
        }
        let mut queued = Vec::new();
        for entry in std::fs::read_dir(&queue_dir)? {
            let entry = entry?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if safe_id(&id) && !index.cached.contains_key(&id) && queued.len() < MAX_QUEUED {
                queued.push((entry.metadata()?.modified().unwrap_or(SystemTime::UNIX_EPOCH), id));
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        queued.sort();
        index.queued = queued.into_iter().map(|(_, id)| id).collect();
        let (jobs, receiver) = mpsc::channel(MAX_QUEUED);
        for id in &index.queued {
            let _ = jobs.try_send(id.clone());
        }
        let cache = ImageCache {
            ready,
            incomplete,
            queue_dir,
            max_size,
            index: Mutex::new(index),
            jobs,
            receiver: Mutex::new(Some(receiver)),
        };
        cache.prune(&mut cache.lock());
        Ok(Arc::new(cache))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached images (by id) and the queued ones (oldest first).
    pub fn state(&self) -> (Vec<Entry>, Vec<String>) {
        let index = self.lock();
        (index.cached.values().cloned().collect(), index.queued.clone())
    }

    /// Whether image `id` is cached or queued.
    pub fn holds(&self, id: &str) -> bool {
        let index = self.lock();
        index.cached.contains_key(id) || index.queued.iter().any(|q| q == id)
    }

    /// The copy of `image` (bytes `range`, inclusive), when this node has it.
    pub async fn read(&self, image: &Image, range: Option<(u64, u64)>) -> Option<ByteStream> {
        let size = image.size.and_then(|s| u64::try_from(s).ok())?;
        {
            let mut index = self.lock();
            let entry = index.cached.get_mut(&image.id)?;
            if entry.size != size {
                tracing::warn!(image = %image.id, cached = entry.size, size, "a cached copy of the wrong size is dropped");
                self.drop_cached(&mut index, &image.id);
                return None;
            }
            entry.hits += 1;
            entry.last_accessed = epoch(SystemTime::now());
        }
        let path = self.ready.join(&image.id);
        let (start, len) = range.map_or((0, size), |(a, b)| (a, b - a + 1));
        let opened = async {
            let mut file = tokio::fs::File::open(&path).await?;
            if file.metadata().await?.len() != size {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the cached copy changed size"));
            }
            file.seek(io::SeekFrom::Start(start)).await?;
            Ok::<_, io::Error>(file)
        };
        match opened.await {
            Ok(file) => {
                metrics::counter!("imagemeta_image_cache_hits_total").increment(1);
                let body =
                    tokio_util::io::ReaderStream::with_capacity(tokio::io::AsyncReadExt::take(file, len), 64 * 1024);
                Some(Box::pin(body))
            }
            Err(e) => {
                tracing::warn!(image = %image.id, error = %e, "cannot read a cached copy; dropped");
                self.drop_cached(&mut self.lock(), &image.id);
                None
            }
        }
    }

    /// Whether a copy of `image` can be started now (and marks it being copied if so).
    fn begin(&self, image: &Image) -> bool {
        let fits = image.size.and_then(|s| u64::try_from(s).ok()).is_some_and(|s| s <= self.max_size);
        if image.status != ImageStatus::Active || image.checksum.is_none() || !fits || !safe_id(&image.id) {
            return false;
        }
        let mut index = self.lock();
        if index.cached.contains_key(&image.id) || index.filling.contains(&image.id) {
            return false;
        }
        index.filling.insert(image.id.clone());
        true
    }

    /// `stream` (the whole data of `image`, read from its store for a download) with a copy
    /// of it written into the cache as it goes, when the cache wants one. The download never
    /// waits for the copy: a copy that falls behind is given up.
    pub fn tee(self: &Arc<Self>, image: &Image, stream: ByteStream) -> ByteStream {
        metrics::counter!("imagemeta_image_cache_misses_total").increment(1);
        if !self.begin(image) {
            return stream;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(TEE_DEPTH);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let copy = futures_util::stream::unfold((rx, Some(done_rx)), |(mut rx, done)| async move {
            match rx.recv().await {
                Some(chunk) => Some((Ok(chunk), (rx, done))),
                // The sender is gone: complete only if the download said so first.
                None => match done {
                    Some(done) => match done.await {
                        Ok(()) => None,
                        Err(_) => Some((Err(io::Error::other("the download stopped")), (rx, None))),
                    },
                    None => None,
                },
            }
        });
        tokio::spawn({
            let (cache, image) = (self.clone(), image.clone());
            async move { cache.store(&image, Box::pin(copy)).await }
        });
        // The server stops reading at the declared length, maybe before the stream's end: the
        // copy is complete when every byte of the image went through.
        let size = image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
        let state = (stream, Some(tx), Some(done_tx), 0u64);
        Box::pin(futures_util::stream::unfold(state, move |(mut stream, mut tx, mut done, mut seen)| async move {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    seen += chunk.len() as u64;
                    if let Some(sender) = &tx
                        && sender.try_send(chunk.clone()).is_err()
                    {
                        tx = None;
                        done = None;
                    }
                    if seen >= size {
                        tx = None;
                        if let Some(done) = done.take() {
                            let _ = done.send(());
                        }
                    }
                    Some((Ok(chunk), (stream, tx, done, seen)))
                }
                Some(Err(e)) => Some((Err(e), (stream, None, None, seen))),
                None => {
                    if let Some(done) = done.take() {
                        let _ = done.send(());
                    }
                    None
                }
            }
        }))
    }

    /// Writes `data` as the copy of `image` (marked being copied by [`begin`]): into
    /// `incomplete/`, checked against the catalogue's size and md5, flushed, then renamed into
    /// `ready/`. Whatever happens, the image is no longer being copied after.
    async fn store(self: &Arc<Self>, image: &Image, data: ByteStream) {
        let result = self.write(image, data).await;
        let mut index = self.lock();
        index.filling.remove(&image.id);
        match result {
            Ok(size) => {
                let now = epoch(SystemTime::now());
                index.total += size;
                let entry = Entry { image_id: image.id.clone(), hits: 0, last_accessed: now, last_modified: now, size };
                index.cached.insert(image.id.clone(), entry);
                self.unqueue(&mut index, &image.id);
                self.prune(&mut index);
                tracing::info!(image = %image.id, size, "image cached");
            }
            Err(e) => tracing::info!(image = %image.id, error = %e, "image not cached"),
        }
    }

    async fn write(&self, image: &Image, mut data: ByteStream) -> io::Result<u64> {
        let temp = self.incomplete.join(format!("{}.{}", image.id, uuid::Uuid::new_v4().simple()));
        let written = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            let mut md5 = md5::Md5::new();
            let mut size = 0u64;
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                md5.update(&chunk);
                size += chunk.len() as u64;
                if size > self.max_size {
                    return Err(io::Error::other("larger than the cache"));
                }
                file.write_all(&chunk).await?;
            }
            let md5: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if image.size != i64::try_from(size).ok() || image.checksum.as_deref() != Some(md5.as_str()) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the data is not the image's (size or md5)"));
            }
            file.sync_all().await?;
            tokio::fs::rename(&temp, self.ready.join(&image.id)).await?;
            Ok(size)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        written
    }

    /// Queues image `id` for the prefetcher (nothing to do if it is cached or queued).
    pub fn queue(&self, id: &str) -> Result<(), QueueError> {
        if !safe_id(id) {
            return Ok(());
        }
        let mut index = self.lock();
        if index.cached.contains_key(id) || index.queued.iter().any(|q| q == id) {
            return Ok(());
        }
        if index.queued.len() >= MAX_QUEUED {
            return Err(QueueError::Full);
        }
        std::fs::File::create(self.queue_dir.join(id)).map_err(QueueError::Io)?;
        if self.jobs.try_send(id.to_owned()).is_err() {
            let _ = std::fs::remove_file(self.queue_dir.join(id));
            return Err(QueueError::Full);
        }
        index.queued.push(id.to_owned());
        Ok(())
    }

    fn unqueue(&self, index: &mut Index, id: &str) -> bool {
        let before = index.queued.len();
        index.queued.retain(|q| q != id);
        if index.queued.len() < before {
            let _ = std::fs::remove_file(self.queue_dir.join(id));
            return true;
        }
        false
    }

    fn drop_cached(&self, index: &mut Index, id: &str) -> bool {
        match index.cached.remove(id) {
            Some(entry) => {
                index.total -= entry.size;
                let _ = std::fs::remove_file(self.ready.join(id));
                true
            }
            None => false,
        }
    }

    /// Removes image `id` from the cache and the queue (`DELETE /v2/cache/{id}`, and every
    /// image delete).
    pub fn remove(&self, id: &str) {
        let mut index = self.lock();
        self.drop_cached(&mut index, id);
        self.unqueue(&mut index, id);
    }

    /// Empties the cache; how many copies it held.
    pub fn clear_cached(&self) -> usize {
        let mut index = self.lock();
        let ids: Vec<String> = index.cached.keys().cloned().collect();
        ids.iter().filter(|id| self.drop_cached(&mut index, id)).count()
    }

    /// Empties the queue; how many images it held.
    pub fn clear_queued(&self) -> usize {
        let mut index = self.lock();
        let ids = index.queued.clone();
        ids.iter().filter(|id| self.unqueue(&mut index, id)).count()
    }

    /// Drops the least recently used copies until the cache fits its bound.
    fn prune(&self, index: &mut Index) {
        while index.total > self.max_size {
            let Some(oldest) = index
                .cached
                .values()
                .min_by(|a, b| a.last_accessed.total_cmp(&b.last_accessed))
                .map(|e| e.image_id.clone())
            else {
                break;
            };
            tracing::info!(image = %oldest, "pruned from the image cache");
            self.drop_cached(index, &oldest);
        }
        metrics::gauge!("imagemeta_image_cache_bytes").set(index.total as f64);
    }

    /// The prefetcher: caches each queued image in turn, reading it from its store, until the
    /// queue's sender is gone. An image no longer queued, not `active` or gone is skipped (and
    /// leaves the queue).
    pub async fn run_prefetcher(self: Arc<Self>, store: DynStore, data: Arc<DataStore>) {
        let Some(mut jobs) = self.receiver.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        while let Some(id) = jobs.recv().await {
            if !self.lock().queued.contains(&id) {
                continue;
            }
            let image = match store.find_image(&id).await {
                Ok(image) => image,
                Err(e) => {
                    // The catalogue is unreachable: try again later, in order.
                    tracing::warn!(image = %id, error = %e, "cannot prefetch an image now");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    let _ = self.jobs.try_send(id);
                    continue;
                }
            };
            let Some(image) = image.filter(|i| i.status == ImageStatus::Active) else {
                self.unqueue(&mut self.lock(), &id);
                continue;
            };
            if !self.begin(&image) {
                // Cached already, being cached, or not cacheable.
                if !self.lock().filling.contains(&id) {
                    self.unqueue(&mut self.lock(), &id);
                }
                continue;
            }
            match data.read(&image, None).await {
                Ok(Some(stream)) => self.store(&image, stream).await,
                Ok(None) | Err(_) => {
                    tracing::warn!(image = %id, "cannot read an image to prefetch it");
                    let mut index = self.lock();
                    index.filling.remove(&id);
                    self.unqueue(&mut index, &id);
                }
            }
            // Failed or not: it leaves the queue (as Glance's prefetcher drops it).
            self.unqueue(&mut self.lock(), &id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own, removed at the end.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new() -> TestDir {
            let dir = std::env::temp_dir().join(format!("imagemeta-cache-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            TestDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn image(id: &str, data: &[u8]) -> Image {
        let mut i = Image::new(id.into(), crate::domain::now());
        i.status = ImageStatus::Active;
        i.size = Some(data.len() as i64);
        i.checksum = Some(md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect());
        i
    }

    fn stream(chunks: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))))
    }

    async fn drain(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    async fn settle(cache: &ImageCache) {
        for _ in 0..200 {
            if cache.lock().filling.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("a copy never ended");
    }

    #[tokio::test]
    async fn a_whole_download_is_copied_checked_and_served_again() {
        let dir = TestDir::new();
        let cache = ImageCache::open(dir.path(), 1 << 20).unwrap();
        let img = image("a1", b"hello world");
        assert!(cache.read(&img, None).await.is_none());
        let out = drain(cache.tee(&img, stream(vec![b"hello ", b"world"]))).await;
        assert_eq!(out, b"hello world");
        settle(&cache).await;
        assert_eq!(drain(cache.read(&img, None).await.unwrap()).await, b"hello world");
        assert_eq!(drain(cache.read(&img, Some((6, 8))).await.unwrap()).await, b"wor");
        let (cached, queued) = cache.state();
        assert_eq!((cached.len(), cached[0].hits, cached[0].size, queued.len()), (1, 2, 11, 0));

        // Found again after a restart; a stray incomplete copy is removed.
        std::fs::write(dir.path().join("incomplete/x.1"), b"partial").unwrap();
        drop(cache);
        let cache = ImageCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(cache.state().0.len(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("incomplete")).unwrap().count(), 0);
        // A copy whose size is not the image's is dropped, not served.
        let mut other = img.clone();
        other.size = Some(12);
        assert!(cache.read(&other, None).await.is_none());
        assert!(cache.state().0.is_empty() && !dir.path().join("ready/a1").exists());
    }

    #[tokio::test]
    async fn wrong_cut_or_oversized_data_is_never_cached() {
        let dir = TestDir::new();
        let cache = ImageCache::open(dir.path(), 16).unwrap();
        // Data that is not the image's (its md5 differs).
        let img = image("b1", b"right data");
        drain(cache.tee(&img, stream(vec![b"wrong data"]))).await;
        settle(&cache).await;
        assert!(cache.read(&img, None).await.is_none());
        // A download the client stops reading half-way.
        let mut cut = cache.tee(&img, stream(vec![b"right ", b"data"]));
        cut.next().await.unwrap().unwrap();
        drop(cut);
        settle(&cache).await;
        assert!(cache.read(&img, None).await.is_none());
        // Larger than the whole cache.
        let big = image("b2", b"0123456789abcdefXYZ");
        drain(cache.tee(&big, stream(vec![b"0123456789abcdefXYZ"]))).await;
        settle(&cache).await;
        assert!(cache.state().0.is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join("incomplete")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_least_recently_used_copies_go_first_and_the_queue_survives_a_restart() {
        let dir = TestDir::new();
        let cache = ImageCache::open(dir.path(), 20).unwrap();
        let (a, b, c) = (image("c1", b"aaaaaaaaaa"), image("c2", b"bbbbbbbbbb"), image("c3", b"cccccccccc"));
        drain(cache.tee(&a, stream(vec![b"aaaaaaaaaa"]))).await;
        settle(&cache).await;
        drain(cache.tee(&b, stream(vec![b"bbbbbbbbbb"]))).await;
        settle(&cache).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        drain(cache.read(&a, None).await.unwrap()).await;
        drain(cache.tee(&c, stream(vec![b"cccccccccc"]))).await;
        settle(&cache).await;
        let ids: Vec<String> = cache.state().0.into_iter().map(|e| e.image_id).collect();
        assert_eq!(ids, ["c1", "c3"], "c2 was used least recently");

        cache.queue("q1").unwrap();
        cache.queue("q2").unwrap();
        cache.queue("q1").unwrap();
        cache.queue("c1").unwrap();
        assert_eq!(cache.state().1, ["q1", "q2"]);
        drop(cache);
        let cache = ImageCache::open(dir.path(), 20).unwrap();
        assert_eq!(cache.state().1.len(), 2);
        assert!(cache.holds("q2") && cache.holds("c3") && !cache.holds("c2"));
        assert_eq!((cache.clear_queued(), cache.clear_cached()), (2, 2));
        assert_eq!(cache.state(), (vec![], vec![]));
    }
}
