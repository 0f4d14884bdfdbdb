//! Building a cache key: `CacheKey::new("http", host, target)`.
//!
//! **What:** the time to build one key from scheme, Host and request target
//! (path and query) for targets of a few lengths, from `/` to a 2 KiB URL
//! with a long query string.
//!
//! **Why:** every GET and HEAD builds a key before the lookup, hit or miss,
//! so this cost is paid on the hottest path. The key keeps the full text
//! (one allocation and a copy) rather than a hash, on purpose: two requests
//! can never collide onto one object. This bench shows what that choice
//! costs as URLs grow, and catches a regression if the key gains parts
//! (a `Vary` variant, a normalised query).
//!
//! **Run:** `cargo bench --bench cache_key` (HTML reports land in
//! `target/criterion/`). CI only compiles it: `cargo bench --no-run`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shellac::cache::CacheKey;

/// A request target of exactly `len` bytes: a path, then a query once the
/// path is long enough to look like a real one.
fn target(len: usize) -> String {
    let mut target = String::from("/");
    let path = "static/assets/img/";
    let query = "?utm_source=newsletter&utm_medium=email&id=";
    while target.len() < len {
        let piece = if target.len() < 64 { path } else { query };
        target.push_str(piece);
    }
    target.truncate(len);
    target
}

fn cache_key(c: &mut Criterion) {
    let host = "www.example.com";
    let mut group = c.benchmark_group("cache_key/new");
    for len in [1, 32, 128, 512, 2048] {
        let target = target(len);
        assert_eq!(target.len(), len);
        // Bytes of the key's text: what the allocation and copy scale with.
        let key_len = "http://".len() + host.len() + target.len();
        group.throughput(Throughput::Bytes(key_len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &target, |b, target| {
            b.iter(|| CacheKey::new(black_box("http"), black_box(host), black_box(target)));
        });
    }
    group.finish();
}

// `criterion_group!` makes a `pub fn` without a doc comment; inside a
// private module it is not public API, so `missing_docs` leaves it alone.
mod group {
    use super::*;
    criterion_group!(benches, cache_key);
}
criterion_main!(group::benches);
