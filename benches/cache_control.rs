//! Reading `Cache-Control` and deciding whether a response may be stored.
//!
//! **What:** `CacheControl::parse` on typical header values (what CDNs,
//! frameworks and static servers send) and on odd ones (quoted lists with
//! commas, duplicates and mixed case, overflowing numbers, long runs of
//! unknown extensions); then `policy::storable` on a typical cacheable 200,
//! once with `max-age` and once with `Expires` (which adds two HTTP-date
//! parses).
//!
//! **Why:** every miss runs `storable`, which parses the request's and the
//! response's `Cache-Control`, so this sits on the fetch path of every
//! cacheable request. The parser also reads input that clients and backends
//! control: the odd values check that hostile-looking headers cost no more
//! than their length suggests (time grows linearly with the value, with no
//! quadratic scan).
//!
//! **Run:** `cargo bench --bench cache_control` (HTML reports land in
//! `target/criterion/`). CI only compiles it: `cargo bench --no-run`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use shellac::cache::policy::{self, CacheControl, RequestMode, StoreRules};
use shellac::config::defaults;

/// (name in the report, header value).
const TYPICAL: &[(&str, &str)] = &[
    ("max-age", "max-age=60"),
    ("public-max-age", "public, max-age=3600"),
    ("static-immutable", "public, max-age=31536000, immutable"),
    (
        "cdn-s-maxage",
        "public, max-age=60, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400",
    ),
    (
        "never",
        "private, no-cache, no-store, must-revalidate, max-age=0",
    ),
];

const ODD: &[(&str, &str)] = &[
    ("empty", ""),
    (
        "quoted-commas",
        "private=\"set-cookie, x-a\", no-cache=\"a\\\", b\", max-age=3",
    ),
    (
        "case-and-duplicates",
        "Public, MAX-AGE=\"60\", max-age=5, S-MAXAGE=10, s-maxage=20",
    ),
    ("overflow", "max-age=99999999999999999999, s-maxage=abc"),
    ("separators", " ,, , max-age=60 ,,\t, public ,, "),
];

/// Twenty unknown extensions before the one directive that matters.
fn many_extensions() -> String {
    let mut value: Vec<String> = (0..20).map(|i| format!("x-ext-{i}=\"v{i}\"")).collect();
    value.push(String::from("max-age=60"));
    value.join(", ")
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_control/parse");
    for (name, value) in TYPICAL {
        group.bench_with_input(BenchmarkId::new("typical", name), value, |b, value| {
            b.iter(|| CacheControl::parse(black_box(value)));
        });
    }
    let extensions = many_extensions();
    let odd = ODD
        .iter()
        .copied()
        .chain([("many-extensions", extensions.as_str())]);
    for (name, value) in odd {
        group.bench_with_input(BenchmarkId::new("odd", name), value, |b, value| {
            b.iter(|| CacheControl::parse(black_box(value)));
        });
    }
    group.finish();
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    map
}

fn storable(c: &mut Criterion) {
    // What a browser sends for a page.
    let request = headers(&[
        ("host", "www.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
    ]);
    let common: &[(&'static str, &str)] = &[
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "18342"),
        ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
        ("last-modified", "Sun, 22 Nov 2026 08:12:45 GMT"),
        ("etag", "\"5f3a-61c2b9e4\""),
        ("vary", "Accept-Encoding"),
    ];
    let with_max_age = {
        let mut h = headers(common);
        h.append(
            "cache-control",
            HeaderValue::from_static("public, max-age=300"),
        );
        h
    };
    let with_expires = {
        let mut h = headers(common);
        h.append(
            "expires",
            HeaderValue::from_static("Mon, 23 Nov 2026 10:05:00 GMT"),
        );
        h
    };
    // The shipped defaults, as `[cache]` gives them when the file says nothing.
    let rules = StoreRules {
        default_ttl: defaults::DEFAULT_TTL,
        heuristic_max: defaults::HEURISTIC_MAX,
        default_grace: defaults::DEFAULT_GRACE,
        default_keep: defaults::DEFAULT_KEEP,
        store_errors: defaults::STORE_ERRORS,
    };
    let mode = policy::request_mode(&Method::GET, &request);
    let request_cc = policy::CacheControl::from_headers(&request);
    assert_eq!(mode, RequestMode::Lookup);

    let mut group = c.benchmark_group("cache_control/storable");
    for (name, response) in [("max-age", &with_max_age), ("expires", &with_expires)] {
        assert!(
            policy::storable(
                &Method::GET,
                mode,
                &request_cc,
                StatusCode::OK,
                response,
                rules
            )
            .is_ok(),
            "the {name} response must be storable"
        );
        group.bench_with_input(BenchmarkId::new("ok-200", name), response, |b, response| {
            b.iter(|| {
                policy::storable(
                    black_box(&Method::GET),
                    black_box(mode),
                    black_box(&request_cc),
                    black_box(StatusCode::OK),
                    black_box(response),
                    black_box(rules),
                )
            });
        });
    }
    group.finish();
}

// `criterion_group!` makes a `pub fn` without a doc comment; inside a
// private module it is not public API, so `missing_docs` leaves it alone.
mod group {
    use super::*;
    criterion_group!(benches, parse, storable);
}
criterion_main!(group::benches);
