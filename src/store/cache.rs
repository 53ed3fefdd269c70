//! The read cache of images, shared by the stores: bounded, and never newer than what is
//! committed nor (with a TTL) older than its bound.
//!
//! `generation` counts invalidations, so that a read that raced a write can tell its result
//! may be stale and not cache it. With several nodes on one catalogue (PostgreSQL) each entry
//! also expires `ttl` after the read that produced it *started*: whatever happens to the
//! notifications that invalidate entries across nodes, no node serves a state older than
//! `ttl` after a write was acknowledged elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::domain::Image;

/// How many images the read cache holds at most.
const CACHE_ENTRIES: usize = 20_000;

pub struct ImageCache {
    inner: Mutex<Inner>,
    /// How long an entry lives (`None`: until invalidated: one node alone writes).
    ttl: Option<Duration>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    entries: HashMap<String, Entry>,
}

struct Entry {
    image: Arc<Image>,
    /// When the read (or write) that produced it started.
    read_at: Instant,
}

impl Inner {
    /// When full, drops every eighth entry (in hash order: an arbitrary eighth), so the cache
    /// never starts over cold and eviction costs O(1) per insert on average.
    fn make_room(&mut self) {
        if self.entries.len() >= CACHE_ENTRIES {
            let mut n = 0u32;
            self.entries.retain(|_, _| {
                n = n.wrapping_add(1);
                !n.is_multiple_of(8)
            });
        }
    }
}

impl ImageCache {
    pub fn new(ttl: Option<Duration>) -> ImageCache {
        ImageCache { inner: Mutex::new(Inner::default()), ttl }
    }

    /// Counts a read the cache answered.
    pub fn hit(&self) {
        crate::admin::Tally::StoreCacheHit.add();
    }

    /// Counts a read the store had to make.
    pub fn miss(&self) {
        crate::admin::Tally::StoreCacheMiss.add();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Image>> {
        let inner = self.lock();
        let entry = inner.entries.get(id)?;
        if self.ttl.is_some_and(|ttl| entry.read_at.elapsed() >= ttl) {
            return None;
        }
        Some(entry.image.clone())
    }

    /// The generation to pass to [`ImageCache::fill`], taken before a read starts.
    pub fn generation(&self) -> (u64, Instant) {
        (self.lock().generation, Instant::now())
    }

    /// Caches `image`, read from generation `seen`, unless an invalidation came since.
    pub fn fill(&self, seen: (u64, Instant), image: Arc<Image>) {
        let mut inner = self.lock();
        if inner.generation != seen.0 {
            return;
        }
        inner.make_room();
        inner.entries.insert(image.id.clone(), Entry { image, read_at: seen.1 });
    }

    /// After a commit: the committed state of each image it changed (`None`: only the
    /// database knows it). Raises the generation, so reads that raced the commit do not cache.
    pub fn publish(&self, changed: HashMap<String, Option<Arc<Image>>>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.generation += 1;
        for (id, image) in changed {
            match image {
                Some(image) => {
                    inner.make_room();
                    inner.entries.insert(id, Entry { image, read_at: now });
                }
                None => {
                    inner.entries.remove(&id);
                }
            }
        }
    }

    /// Another node changed image `id`.
    pub fn invalidate(&self, id: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.remove(id);
    }

    /// Forgets everything (the invalidations from other nodes may have been missed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }
}
