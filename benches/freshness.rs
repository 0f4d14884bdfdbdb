//! The freshness decision on a hit, and the store decision on a miss.
//!
//! **What:** `policy::usability` for a stored object against the request's
//! `Cache-Control` (fresh with no directives, fresh under the client's
//! `max-age`, stale within grace, stale past grace, `no-cache`), preceded by
//! `CacheControl::from_headers` on the request, as the hit path runs them;
//! then `policy::storable` on typical responses: a cacheable static asset,
//! an `s-maxage` CDN answer, a heuristic one (only `Last-Modified`), and
//! three that are refused (`no-store, private`, `Set-Cookie`, `Vary: *`).
//!
//! **Why:** every lookup that finds an object decides its usability before
//! it can answer, so this is on the hit path of every request; every miss
//! runs `storable` on the backend's answer before it streams. Both are pure
//! functions of their inputs (`cache/policy.rs` may not touch moka, tokio or
//! I/O), so their cost can be read here without any network noise. The
//! refusals matter as much as the successes: `pass` traffic runs them on
//! every request.
//!
//! **Run:** `cargo bench --bench freshness` (HTML reports land in
//! `target/criterion/`). CI only compiles it: `cargo bench --no-run`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use shellac::cache::policy::{self, CacheControl, Lifetimes, RequestMode, StoreRules, Usability};
use shellac::config::defaults;

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

/// What a browser sends for a page, plus the request's own `Cache-Control`
/// when there is one.
fn request(cache_control: Option<&str>) -> HeaderMap {
    let mut h = headers(&[
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
    if let Some(cc) = cache_control {
        h.insert(
            HeaderName::from_static("cache-control"),
            HeaderValue::from_str(cc).expect("a valid header value"),
        );
    }
    h
}

fn usability(c: &mut Criterion) {
    // An object stored with `max-age=300` and the default grace.
    let lifetimes = Lifetimes {
        ttl: Duration::from_secs(300),
        grace: defaults::DEFAULT_GRACE,
        keep: defaults::DEFAULT_KEEP,
        stale_if_error: defaults::DEFAULT_GRACE,
        must_revalidate: false,
        no_cache: false,
    };
    // (name, request Cache-Control, object age, expected decision)
    let cases: [(&str, Option<&str>, u64, Usability); 5] = [
        ("fresh", None, 10, Usability::Fresh),
        (
            "fresh-client-max-age",
            Some("max-age=60"),
            10,
            Usability::Fresh,
        ),
        ("grace", None, 305, Usability::Grace),
        ("past-grace", None, 400, Usability::Revalidate),
        (
            "client-no-cache",
            Some("no-cache"),
            10,
            Usability::Revalidate,
        ),
    ];
    let mut group = c.benchmark_group("freshness/usability");
    for (name, cc, age, expected) in cases {
        let req = request(cc);
        let age = Duration::from_secs(age);
        assert_eq!(
            policy::usability(&lifetimes, age, &CacheControl::from_headers(&req)),
            expected,
            "{name}"
        );
        // As the hit path runs it: parse the request's directives, decide.
        group.bench_with_input(BenchmarkId::new("hit-path", name), &req, |b, req| {
            b.iter(|| {
                let cc = CacheControl::from_headers(black_box(req));
                policy::usability(black_box(&lifetimes), black_box(age), &cc)
            });
        });
    }
    group.finish();
}

fn storable(c: &mut Criterion) {
    let req = request(None);
    let common: &[(&'static str, &str)] = &[
        ("content-type", "text/css"),
        ("content-length", "18342"),
        ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
        ("etag", "\"5f3a-61c2b9e4\""),
        ("accept-ranges", "bytes"),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut h = headers(common);
        for &(name, value) in extra {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("a valid header value"),
            );
        }
        h
    };
    let cases: [(&str, HeaderMap, bool); 6] = [
        (
            "static-immutable",
            with(&[("cache-control", "public, max-age=31536000, immutable")]),
            true,
        ),
        (
            "cdn-s-maxage",
            with(&[(
                "cache-control",
                "public, max-age=60, s-maxage=600, stale-while-revalidate=30",
            )]),
            true,
        ),
        (
            "heuristic-last-modified",
            with(&[("last-modified", "Sun, 22 Nov 2026 08:12:45 GMT")]),
            true,
        ),
        (
            "refused-no-store-private",
            with(&[("cache-control", "no-store, private")]),
            false,
        ),
        (
            "refused-set-cookie",
            with(&[
                ("cache-control", "max-age=60"),
                ("set-cookie", "session=8a7f2c; Path=/; HttpOnly"),
            ]),
            false,
        ),
        (
            "refused-vary-star",
            with(&[("cache-control", "max-age=60"), ("vary", "*")]),
            false,
        ),
    ];
    // The shipped defaults, as `[cache]` gives them when the file says nothing.
    let rules = StoreRules {
        default_ttl: defaults::DEFAULT_TTL,
        heuristic_max: defaults::HEURISTIC_MAX,
        default_grace: defaults::DEFAULT_GRACE,
        default_keep: defaults::DEFAULT_KEEP,
        store_errors: defaults::STORE_ERRORS,
    };
    let mode = policy::request_mode(&Method::GET, &req);
    let req_cc = policy::CacheControl::from_headers(&req);
    assert_eq!(mode, RequestMode::Lookup);
    let mut group = c.benchmark_group("freshness/storable");
    for (name, response, ok) in &cases {
        let decided =
            policy::storable(&Method::GET, mode, &req_cc, StatusCode::OK, response, rules);
        assert_eq!(decided.is_ok(), *ok, "{name}: {decided:?}");
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            response,
            |b, response| {
                b.iter(|| {
                    policy::storable(
                        black_box(&Method::GET),
                        black_box(mode),
                        black_box(&req_cc),
                        black_box(StatusCode::OK),
                        black_box(response),
                        black_box(rules),
                    )
                });
            },
        );
    }
    group.finish();
}

// `criterion_group!` makes a `pub fn` without a doc comment; inside a
// private module it is not public API, so `missing_docs` leaves it alone.
mod group {
    use super::*;
    criterion_group!(benches, usability, storable);
}
criterion_main!(group::benches);
