//! Filtering a backend response's headers on their way to the client.
//!
//! **What:** `proxy::headers::remove_hop_by_hop` followed by
//! `proxy::headers::append_via` on the header map of a typical response
//! (an nginx static file: ten fields, `Connection: keep-alive`), on one whose
//! `Connection` names extra fields to drop, and on one that already carries
//! a `Via` from a CDN in front of the origin (so `Via` is re-formatted).
//! Each iteration gets its own copy of the map, made outside the timing.
//!
//! **Why:** every fetched response (miss and pass) goes through both on its
//! way to the client, and every backend request through the same pair on
//! its way out; `Via` on the hit path too. The `Connection` case allocates a
//! list of names, the CDN case formats a new `Via` string: this shows what
//! those cost against the common case.
//!
//! **Run:** `cargo bench --bench header_filter` (HTML reports land in
//! `target/criterion/`). CI only compiles it: `cargo bench --no-run`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Version;
use shellac::proxy::headers;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}

const TYPICAL: &[(&str, &str)] = &[
    ("server", "nginx"),
    ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
    ("content-type", "text/css"),
    ("content-length", "18342"),
    ("last-modified", "Sun, 22 Nov 2026 08:12:45 GMT"),
    ("connection", "keep-alive"),
    ("etag", "\"6740b0ad-47a6\""),
    ("cache-control", "public, max-age=3600"),
    ("vary", "Accept-Encoding"),
    ("accept-ranges", "bytes"),
];

fn filter(c: &mut Criterion) {
    let typical = map(TYPICAL);
    let connection_names = {
        let mut h = map(TYPICAL);
        h.insert(
            HeaderName::from_static("connection"),
            HeaderValue::from_static("keep-alive, X-Backend-Debug, X-Trace"),
        );
        h.insert(
            HeaderName::from_static("keep-alive"),
            HeaderValue::from_static("timeout=5, max=1000"),
        );
        h.insert(
            HeaderName::from_static("x-backend-debug"),
            HeaderValue::from_static("node=7"),
        );
        h.insert(
            HeaderName::from_static("x-trace"),
            HeaderValue::from_static("a1b2c3"),
        );
        h
    };
    let behind_cdn = {
        let mut h = map(TYPICAL);
        h.insert(
            HeaderName::from_static("via"),
            HeaderValue::from_static("1.1 varnish (Varnish/7.1), 1.1 cdn-edge"),
        );
        h
    };
    let mut group = c.benchmark_group("header_filter/hop_by_hop+via");
    for (name, headers) in [
        ("typical", &typical),
        ("connection-names-fields", &connection_names),
        ("existing-via", &behind_cdn),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), headers, |b, h| {
            b.iter_batched_ref(
                || h.clone(),
                |h| {
                    headers::remove_hop_by_hop(black_box(h));
                    headers::append_via(black_box(h), Version::HTTP_11);
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

// `criterion_group!` makes a `pub fn` without a doc comment; inside a
// private module it is not public API, so `missing_docs` leaves it alone.
mod group {
    use super::*;
    criterion_group!(benches, filter);
}
criterion_main!(group::benches);
