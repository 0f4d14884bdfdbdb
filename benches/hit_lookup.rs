//! A cache hit's lookup on a full cache, and what each stored object costs
//! in memory.
//!
//! **What:** `Cache::lookup` on a `MemoryStore` holding 100,000 one-KiB
//! objects (typical static-file headers): a hit on keys spread over all
//! 100,000 objects (cold in the CPU caches, like `many-keys` in the load
//! harness), a hit on one hot key (like `hit-1k`), and a miss. Before the
//! timings it prints, once, the resident memory per object: `/proc/self/statm`
//! before and after filling the store, divided by 100,000, next to what the
//! weigher charges for the same object (`OBJECT_OVERHEAD` plus body, key and
//! headers). That is the per-object overhead figure `docs/caching.md` quotes.
//!
//! **Why:** every cacheable request pays one lookup before anything else,
//! and moka's reads are not free (pingora's TinyUFO benches record ~90 ns
//! single-threaded). The memory figure keeps `[cache] capacity` honest: if
//! the real overhead grows past the weigher's constant, a full cache uses
//! more memory than configured.
//!
//! **Run:** `cargo bench --bench hit_lookup` (HTML reports land in
//! `target/criterion/`). CI only compiles it: `cargo bench --no-run`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use shellac::cache::object::OBJECT_OVERHEAD;
use shellac::cache::policy::Lifetimes;
use shellac::cache::{Cache, CacheKey, CachedObject, Found, MemoryStore, ObjectStore};

const OBJECTS: usize = 100_000;
const BODY: usize = 1024;

/// Resident set size of this process in bytes, from `/proc/self/statm`
/// (pages; the page size from `getconf`, 4 KiB when that fails).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = std::process::Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    Some(pages * page)
}

fn key(i: usize) -> CacheKey {
    CacheKey::new("http", "www.example.com", &format!("/static/obj/1k?i={i}"))
}

/// A one-KiB object with the headers nginx sends for a static file.
fn object(i: usize) -> CachedObject {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("server", "nginx"),
        ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
        ("content-type", "application/octet-stream"),
        ("content-length", "1024"),
        ("last-modified", "Sun, 22 Nov 2026 08:12:45 GMT"),
        ("etag", "\"6740b0ad-400\""),
        ("cache-control", "public, max-age=3600"),
        ("accept-ranges", "bytes"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    // A distinct allocation per object, as bodies read from a backend are.
    let mut body = vec![b'x'; BODY];
    body[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let lifetimes = Lifetimes {
        ttl: Duration::from_secs(3600),
        grace: Duration::from_secs(10),
        keep: Duration::ZERO,
        stale_if_error: Duration::from_secs(10),
        must_revalidate: false,
        no_cache: false,
    };
    CachedObject::new(
        StatusCode::OK,
        headers,
        Bytes::from(body),
        Duration::ZERO,
        lifetimes,
    )
}

/// The full cache, and the keys of its objects (built before any timing).
fn filled() -> (Cache, Vec<CacheKey>) {
    let keys: Vec<CacheKey> = (0..OBJECTS).map(key).collect();
    let request = HeaderMap::new();
    let before = resident_bytes();
    let store = Arc::new(MemoryStore::new(1 << 30));
    let cache = Cache::new(store.clone());
    let mut weigher = 0;
    for (i, key) in keys.iter().enumerate() {
        let object = object(i);
        weigher = object.weight() + key.weight();
        cache.insert(key, &request, Arc::new(object));
    }
    store.settle();
    let after = resident_bytes();
    assert_eq!(
        store.entry_count(),
        OBJECTS as u64,
        "nothing may be evicted"
    );
    if let (Some(before), Some(after)) = (before, after) {
        // The keys were allocated before `before`: add their share back.
        let per_object = (after.saturating_sub(before)) as f64 / OBJECTS as f64;
        let key_len = keys[OBJECTS - 1].weight();
        eprintln!(
            "hit_lookup: resident memory per stored object: {per_object:.0} bytes \
             for a {BODY}-byte body (+ {key_len}-byte key allocated outside the measurement); \
             overhead beyond body and key: {:.0} bytes; the weigher charges {weigher} bytes \
             (OBJECT_OVERHEAD = {OBJECT_OVERHEAD})",
            per_object - BODY as f64
        );
    }
    (cache, keys)
}

fn lookup(c: &mut Criterion) {
    let (cache, keys) = filled();
    let request = HeaderMap::new();
    let absent = key(OBJECTS + 1);
    assert!(matches!(cache.lookup(&keys[0], &request), Found::Object(_)));
    assert!(matches!(cache.lookup(&absent, &request), Found::Miss));

    let mut group = c.benchmark_group("hit_lookup");
    let mut i = 0;
    // A stride that is coprime with 100,000 walks every key in a scattered order.
    group.bench_function("hit/spread-over-100k", |b| {
        b.iter(|| {
            i = (i + 7919) % OBJECTS;
            cache.lookup(black_box(&keys[i]), black_box(&request))
        });
    });
    group.bench_function("hit/one-hot-key", |b| {
        b.iter(|| cache.lookup(black_box(&keys[42]), black_box(&request)));
    });
    group.bench_function("miss", |b| {
        b.iter(|| cache.lookup(black_box(&absent), black_box(&request)));
    });
    group.finish();
}

// `criterion_group!` makes a `pub fn` without a doc comment; inside a
// private module it is not public API, so `missing_docs` leaves it alone.
mod group {
    use super::*;
    criterion_group!(benches, lookup);
}
criterion_main!(group::benches);
