//! Where objects live. [`ObjectStore`] is the small interface the proxy
//! talks to, so a second tier (Redis/Valkey, shared by several nodes) can
//! sit behind it later; [`MemoryStore`] is the in-memory tier on moka.
//!
//! moka bounds the store by bytes (a weigher over body, headers, key and a
//! fixed per-object overhead) and evicts with TinyLFU; each entry expires at
//! its own time (moka's per-entry `Expiry`). Lookups take no global lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

use super::key::CacheKey;
use super::object::CachedObject;

/// What the proxy needs from a cache tier.
pub trait ObjectStore: Send + Sync {
    /// The object stored under `key`, fresh or not.
    fn get(&self, key: &CacheKey) -> Option<Arc<CachedObject>>;
    /// Stores (or replaces) the object under `key`.
    fn insert(&self, key: CacheKey, object: Arc<CachedObject>);
    /// Removes the object under `key`.
    fn remove(&self, key: &CacheKey);
    /// Objects held now (approximate while moka catches up).
    fn object_count(&self) -> u64;
    /// Bytes held now by the weigher's measure.
    fn bytes(&self) -> u64;
}

/// The in-memory tier.
pub struct MemoryStore {
    cache: Cache<CacheKey, Arc<CachedObject>>,
}

/// Each entry lives for its remaining freshness.
struct ObjectExpiry;

impl Expiry<CacheKey, Arc<CachedObject>> for ObjectExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        object: &Arc<CachedObject>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(object.time_to_live())
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        object: &Arc<CachedObject>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(object.time_to_live())
    }
}

impl MemoryStore {
    /// A store holding at most `capacity` bytes.
    pub fn new(capacity: u64) -> MemoryStore {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &CacheKey, object: &Arc<CachedObject>| {
                u32::try_from(key.weight() + object.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(ObjectExpiry)
            .build();
        MemoryStore { cache }
    }
}

impl ObjectStore for MemoryStore {
    fn get(&self, key: &CacheKey) -> Option<Arc<CachedObject>> {
        self.cache.get(key)
    }

    fn insert(&self, key: CacheKey, object: Arc<CachedObject>) {
        self.cache.insert(key, object);
    }

    fn remove(&self, key: &CacheKey) {
        self.cache.invalidate(key);
    }

    fn object_count(&self) -> u64 {
        self.cache.entry_count()
    }

    fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }
}
