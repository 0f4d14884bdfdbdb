//! The cache: keys, the RFC 9111 policy, stored objects, the store and the
//! waiting list.
//!
//! `policy` decides (pure functions), `store` keeps (moka), `coalesce`
//! makes concurrent misses share one fetch, and `busy` is an object whose
//! body is still arriving, which the waiters of its fetch read as it comes;
//! [`Cache`] ties keys, `Vary` variants and hit-for-miss markers to the
//! store, and counts the bytes of fetches in progress ([`Transit`]). Only
//! `proxy` combines the cache with backend fetches.

pub mod ban;
pub mod busy;
pub mod coalesce;
pub mod encoded;
pub mod key;
pub mod l2;
pub mod object;
pub mod policy;
pub mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName};

pub use crate::body::shared::Transit;
pub use ban::{BanList, BanMatcher, Verdict};
pub use busy::BusyObject;
pub use coalesce::Coalescer;
pub use key::CacheKey;
pub use object::CachedObject;
pub use store::{Entry, MemoryStore, ObjectStore, VarySpec};

/// What a lookup found.
pub enum Found {
    /// An object for this request (its `Vary` values match).
    Object(Arc<CachedObject>),
    /// The key is marked hit-for-miss: fetch without queueing.
    HitForMiss,
    /// Nothing usable.
    Miss,
}

/// The cache as the proxy sees it.
pub struct Cache {
    store: Arc<dyn ObjectStore>,
    /// The waiting list for misses.
    pub coalescer: Arc<Coalescer>,
    /// Bans not yet applied to the whole store.
    pub bans: BanList,
    generation: AtomicU64,
    /// The shared second tier, when `[cache.l2]` is configured.
    l2: Option<Arc<l2::L2>>,
    /// Bytes buffered by fetches in progress (`[cache] transit_capacity`).
    transit: Arc<Transit>,
    /// `[compression] gzip_support`: `Accept-Encoding` splits no variants
    /// (every client is served from the one gzip object).
    ignore_accept_encoding: AtomicBool,
}

impl Cache {
    /// A cache over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Cache {
        Cache {
            store,
            coalescer: Arc::default(),
            bans: BanList::default(),
            generation: AtomicU64::new(1),
            l2: None,
            transit: Arc::default(),
            ignore_accept_encoding: AtomicBool::new(false),
        }
    }

    /// This cache with a second tier behind it.
    pub fn with_l2(mut self, l2: Arc<l2::L2>) -> Cache {
        self.l2 = Some(l2);
        self
    }

    /// `[compression] gzip_support` of the current generation: with it,
    /// `Vary: Accept-Encoding` is satisfied by the one stored object (as in
    /// Varnish with `http_gzip_support`), which delivery decodes or
    /// re-encodes for each client.
    pub fn set_gzip_support(&self, on: bool) {
        self.ignore_accept_encoding.store(on, Ordering::Relaxed);
    }

    /// The `Vary` names that pick a variant of an object with `headers`:
    /// [`vary_names`], less `Accept-Encoding` under `gzip_support`.
    pub fn variant_names(&self, headers: &HeaderMap) -> Vec<HeaderName> {
        let mut names = vary_names(headers);
        if self.ignore_accept_encoding.load(Ordering::Relaxed) {
            names.retain(|n| n != header::ACCEPT_ENCODING);
        }
        names
    }

    /// The second tier, if any.
    pub fn l2(&self) -> Option<&Arc<l2::L2>> {
        self.l2.as_ref()
    }

    /// The bytes buffered by fetches in progress, shared by every
    /// generation (as the store is).
    pub fn transit(&self) -> &Arc<Transit> {
        &self.transit
    }

    /// The underlying store (for metrics).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object stored for `key` that matches the request's `Vary` values.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Found {
        match self.store.get(key) {
            None => Found::Miss,
            Some(Entry::Object(object)) => self.unless_banned(key, object),
            Some(Entry::HitForMiss { until }) if until > Instant::now() => Found::HitForMiss,
            Some(Entry::HitForMiss { .. }) => Found::Miss,
            Some(Entry::Vary(spec)) => {
                let variant = key.variant(spec.generation, &vary_values(&spec.names, request));
                match self.store.get(&variant) {
                    Some(Entry::Object(object)) => self.unless_banned(&variant, object),
                    _ => Found::Miss,
                }
            }
        }
    }

    fn unless_banned(&self, key: &CacheKey, object: Arc<CachedObject>) -> Found {
        match self.bans.verdict(key, &object) {
            Verdict::Keep => Found::Object(object),
            Verdict::Remove => {
                self.store.remove(key);
                Found::Miss
            }
            Verdict::Stale => {
                let stale = Arc::new(object.staled(Instant::now()));
                self.store.insert(key.clone(), Entry::Object(stale.clone()));
                Found::Object(stale)
            }
        }
    }

    /// One pass of the ban lurker: removes every object an active ban
    /// matches, then retires those bans. Returns how many objects it removed.
    pub fn lurk(&self) -> usize {
        let bans = self.bans.snapshot();
        if bans.is_empty() {
            return 0;
        }
        let mut removed = 0;
        let mut staled = Vec::new();
        self.store
            .sweep(&mut |key, object| match ban::verdict(&bans, key, object) {
                Verdict::Keep => false,
                Verdict::Remove => {
                    removed += 1;
                    true
                }
                Verdict::Stale => {
                    staled.push((key.clone(), object.staled(Instant::now())));
                    false
                }
            });
        for (key, object) in staled {
            self.store.insert(key, Entry::Object(Arc::new(object)));
        }
        self.bans.complete(&bans);
        removed
    }

    /// Stores `object` for the request whose headers are `request`; with
    /// `Vary`, as one variant beside its siblings. With a second tier, the
    /// object is also written there, in the background.
    pub fn insert(&self, key: &CacheKey, request: &HeaderMap, object: Arc<CachedObject>) {
        self.insert_local(key, request, object.clone());
        if let Some(l2) = &self.l2 {
            // L2 keeps one variant per URL, with the request's Vary values
            // so that a lookup never answers with another variant.
            let names = self.variant_names(&object.headers);
            l2.store(key, object, vary_values(&names, request));
        }
    }

    /// The second tier's object for a request that missed L1: read within
    /// `[cache.l2] timeout`, decoded, checked against `Vary` and bans, and
    /// put into L1. `None` on a miss and on any error (counted).
    pub async fn lookup_l2(
        &self,
        key: &CacheKey,
        request: &HeaderMap,
    ) -> Option<Arc<CachedObject>> {
        let l2 = self.l2.as_ref()?;
        let bytes = l2.get(key).await?;
        let decoded = l2.decode(key, bytes)?;
        let names = self.variant_names(&decoded.object.headers);
        if vary_values(&names, request) != decoded.vary {
            l2.metrics().misses.inc();
            return None;
        }
        let now = std::time::Instant::now();
        if decoded.object.age(now)
            >= decoded.object.lifetimes.ttl + decoded.object.lifetimes.retention()
        {
            l2.metrics().misses.inc();
            return None;
        }
        l2.metrics().hits.inc();
        let object = Arc::new(decoded.object);
        self.insert_local(key, request, object.clone());
        Some(object)
    }

    /// Removes everything stored for `key`'s URL here, in L2 and on the
    /// other nodes (PURGE; unsafe methods), under both schemes: the scheme
    /// is in the key only so that one scheme's redirect is never served on
    /// the other, and a URL that changed changed for both. One fan-out
    /// message; each node removes both schemes itself.
    pub fn purge(&self, key: &CacheKey) {
        let other = key.other_scheme();
        self.invalidate_url(key);
        if let Some(l2) = &self.l2 {
            l2.delete(key);
            if let Some(other) = &other {
                l2.delete(other);
            }
            l2.publish_purge(key);
        }
    }

    /// Removes `key`'s URL from this node under both schemes.
    pub fn invalidate_url(&self, key: &CacheKey) {
        self.invalidate(key);
        if let Some(other) = key.other_scheme() {
            self.invalidate(&other);
        }
    }

    /// Adds a ban here and on the other nodes; returns how many are active here.
    pub fn ban(&self, matcher: BanMatcher) -> usize {
        if let Some(l2) = &self.l2 {
            l2.publish_ban(&matcher);
        }
        self.bans.add(matcher)
    }

    /// Removes every object from L1 (after the fan-out subscription was
    /// lost); returns how many.
    pub fn flush(&self) -> usize {
        let mut removed = 0;
        self.store.sweep(&mut |_, _| {
            removed += 1;
            true
        });
        removed
    }

    fn insert_local(&self, key: &CacheKey, request: &HeaderMap, object: Arc<CachedObject>) {
        let names = self.variant_names(&object.headers);
        if names.is_empty() {
            self.store.insert(key.clone(), Entry::Object(object));
            return;
        }
        // Reuse the spec when the names did not change, so siblings stay reachable.
        let spec = match self.store.get(key) {
            Some(Entry::Vary(spec)) if spec.names == names => spec,
            _ => {
                let spec = Arc::new(VarySpec {
                    names,
                    generation: self.generation.fetch_add(1, Ordering::Relaxed),
                });
                self.store.insert(key.clone(), Entry::Vary(spec.clone()));
                spec
            }
        };
        let variant = key.variant(spec.generation, &vary_values(&spec.names, request));
        self.store.insert(variant, Entry::Object(object));
    }

    /// Marks `key` hit-for-miss for `duration` (nothing when zero). An object
    /// already stored under it is replaced: its response is no longer cacheable.
    pub fn mark_hit_for_miss(&self, key: &CacheKey, duration: Duration) {
        if !duration.is_zero() {
            self.store.insert(
                key.clone(),
                Entry::HitForMiss {
                    until: Instant::now() + duration,
                },
            );
        }
    }

    /// Removes everything stored for `key`, every variant included.
    pub fn invalidate(&self, key: &CacheKey) {
        // Variants hang off the primary entry; without it they are unreachable
        // (a new spec gets a new generation) and expire on their own.
        self.store.remove(key);
    }
}

/// The header names a response's `Vary` lists, lower-cased, deduplicated.
pub fn vary_names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// A request's values for the `Vary` names, normalized so that spelling
/// differences do not split variants: lines joined with `,`, white space
/// around commas removed, lower-cased (the usual varied-on headers —
/// `Accept-Encoding`, `Accept-Language`, `Accept` — compare case-insensitively).
pub fn vary_values(names: &[HeaderName], request: &HeaderMap) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let mut joined = String::new();
            for value in request.get_all(name).iter() {
                for part in String::from_utf8_lossy(value.as_bytes()).split(',') {
                    let part = part.trim();
                    if part.is_empty() {
                        continue;
                    }
                    if !joined.is_empty() {
                        joined.push(',');
                    }
                    joined.push_str(&part.to_ascii_lowercase());
                }
            }
            joined
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn vary_values_are_normalized() {
        let mut a = HeaderMap::new();
        a.insert("accept-encoding", HeaderValue::from_static("GZIP,  br"));
        let mut b = HeaderMap::new();
        b.append("accept-encoding", HeaderValue::from_static("gzip"));
        b.append("accept-encoding", HeaderValue::from_static("br"));
        let names = vec![HeaderName::from_static("accept-encoding")];
        assert_eq!(vary_values(&names, &a), vary_values(&names, &b));
        assert_eq!(vary_values(&names, &HeaderMap::new()), vec![String::new()]);
    }
}
