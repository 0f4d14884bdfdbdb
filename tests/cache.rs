//! HTTP caching done right (RFC 9111, RFC 5861, RFC 9211, RFC 9213),
//! through real sockets: coalescing, grace, stale-if-error, revalidation,
//! Vary, invalidation, ranges and request directives.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{config, get, send, try_send, Origin, Reply, Shellac, Step};

fn no_grace() -> &'static str {
    "[cache]\ndefault_grace = \"0s\"\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_misses_make_one_origin_request() {
    let origin = Origin::fixed(
        Reply::ok("slow body")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(500)),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let addr = shellac.addr;
            tokio::spawn(async move { get(addr, "/slow").await })
        })
        .collect();
    let mut collapsed = 0;
    for client in clients {
        let got = client.await.expect("client task");
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "slow body");
        if got
            .header("cache-status")
            .is_some_and(|s| s.contains("collapsed"))
        {
            collapsed += 1;
        }
    }
    assert_eq!(
        origin.requests(),
        1,
        "the waiting list must collapse the misses"
    );
    assert!(collapsed > 0, "waiters say they were collapsed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_responses_are_not_serialized() {
    const DELAY: Duration = Duration::from_millis(400);
    let origin = Origin::fixed(
        Reply::ok("private")
            .header("cache-control", "no-store")
            .delay(DELAY),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let burst = |n: usize| {
        let addr = shellac.addr;
        async move {
            let started = Instant::now();
            let clients: Vec<_> = (0..n)
                .map(|_| tokio::spawn(async move { get(addr, "/u").await }))
                .collect();
            for client in clients {
                assert_eq!(client.await.expect("client").text(), "private");
            }
            started.elapsed()
        }
    };
    // First burst: one writer finds out it is uncacheable, the others then
    // fetch in parallel: about two origin delays, never fifty.
    let first = burst(50).await;
    assert!(first < DELAY * 4, "first burst took {first:?}");
    // Now the key is hit-for-miss: everyone goes straight to the origin.
    let second = burst(50).await;
    assert!(
        second < DELAY * 2 + Duration::from_millis(300),
        "second burst took {second:?}"
    );
    assert_eq!(origin.requests(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_serves_stale_at_once_and_refreshes_once() {
    let slow = Arc::new(AtomicBool::new(false));
    let switch = slow.clone();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let origin = Origin::start(move |_| {
        let slow = switch.load(Ordering::SeqCst);
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if slow {
                // The refresh takes 2 s; its age on arrival is at least that
                // (RFC 9111 §4.2.3), so it needs a longer lifetime to be fresh.
                Reply::ok(format!("version {n}"))
                    .header("cache-control", "max-age=30")
                    .delay(Duration::from_secs(2))
            } else {
                Reply::ok(format!("version {n}")).header("cache-control", "max-age=1")
            }
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "[cache]\ndefault_grace = \"30s\"\n")).await;
    assert_eq!(get(shellac.addr, "/g").await.text(), "version 1");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    slow.store(true, Ordering::SeqCst);

    let started = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(get(shellac.addr, "/g").await);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "stale answers took {took:?}"
    );
    for got in &answers {
        assert_eq!(got.text(), "version 1");
        assert_eq!(got.header("x-cache"), Some("HIT-STALE"));
        assert!(got
            .header("age")
            .and_then(|a| a.parse::<u64>().ok())
            .is_some_and(|a| a >= 1));
    }
    // Exactly one background refresh reached the origin, and it lands.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(origin.requests(), 2);
    let refreshed = get(shellac.addr, "/g").await;
    assert_eq!(refreshed.text(), "version 2");
    assert_eq!(refreshed.header("x-cache"), Some("HIT"));
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_is_down() {
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let origin = Origin::raw(move |_| {
        if switch.load(Ordering::SeqCst) {
            vec![Step::Close]
        } else {
            vec![Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=1, stale-if-error=60\r\n\r\nhello"
                    .to_vec(),
            )]
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, no_grace())).await;
    assert_eq!(get(shellac.addr, "/s").await.text(), "hello");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    down.store(true, Ordering::SeqCst);
    let got = get(shellac.addr, "/s").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "hello");
    assert_eq!(got.header("x-cache"), Some("HIT-STALE"));
    assert!(
        got.header("cache-status")
            .is_some_and(|s| s.contains("fwd=stale")),
        "{:?}",
        got.headers
    );
    // The second request met its pooled connection closed without a byte
    // of answer, and was sent once more on a fresh connection (issue 15
    // item 5), which closed the same way: 1 + 2.
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn stale_if_error_covers_5xx_answers_and_grace_plus_keep() {
    let failing = Arc::new(AtomicBool::new(false));
    let switch = failing.clone();
    let origin = Origin::start(move |_| {
        let failing = switch.load(Ordering::SeqCst);
        async move {
            if failing {
                Reply::ok("oops").status(503)
            } else {
                Reply::ok("good").header("cache-control", "max-age=1")
            }
        }
    })
    .await;
    // No stale-if-error directive: grace (0) + keep (30 s) is the window.
    let shellac = Shellac::start(&config(
        origin.addr,
        "[cache]\ndefault_grace = \"0s\"\ndefault_keep = \"30s\"\n",
    ))
    .await;
    get(shellac.addr, "/f").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    failing.store(true, Ordering::SeqCst);
    let got = get(shellac.addr, "/f").await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (200, "good"));
}

#[tokio::test]
async fn must_revalidate_never_serves_stale() {
    let failing = Arc::new(AtomicBool::new(false));
    let switch = failing.clone();
    let origin = Origin::start(move |_| {
        let failing = switch.load(Ordering::SeqCst);
        async move {
            if failing {
                Reply::ok("oops").status(503)
            } else {
                Reply::ok("good").header(
                    "cache-control",
                    "max-age=1, must-revalidate, stale-if-error=60",
                )
            }
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "[cache]\ndefault_grace = \"30s\"\n")).await;
    get(shellac.addr, "/m").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    failing.store(true, Ordering::SeqCst);
    let got = get(shellac.addr, "/m").await;
    assert_eq!(got.status, 503);
}

#[tokio::test]
async fn not_modified_refreshes_headers_and_age_without_the_body() {
    let origin = Origin::start(|seen| async move {
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            Reply::ok("")
                .status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=1")
                .header("x-version", "2")
        } else {
            Reply::ok("the body")
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=1")
                .header("x-version", "1")
                .header("age", "0")
        }
    })
    .await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[cache]\ndefault_grace = \"0s\"\ndefault_keep = \"30s\"\n",
    ))
    .await;
    let first = get(shellac.addr, "/r").await;
    assert_eq!(first.header("x-version"), Some("1"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = get(shellac.addr, "/r").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "the body");
    assert_eq!(
        second.header("x-version"),
        Some("2"),
        "headers refreshed from the 304; origin saw {:?}",
        origin.seen()
    );
    assert_eq!(
        second.header("age"),
        Some("0"),
        "age restarts with the revalidation"
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].headers.get("if-none-match").map(|v| v.as_bytes()),
        Some(&b"\"v1\""[..])
    );
    // And it is fresh again.
    assert_eq!(get(shellac.addr, "/r").await.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn client_conditionals_get_304_from_a_fresh_hit() {
    let origin = Origin::fixed(
        Reply::ok("etagged")
            .header("etag", "W/\"abc\"")
            .header("last-modified", "Mon, 23 Nov 2026 09:00:00 GMT")
            .header("cache-control", "max-age=60"),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    get(shellac.addr, "/c").await;
    let inm = send(shellac.addr, "GET", "/c", &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(inm.status, 304);
    assert!(inm.body.is_empty());
    let ims = send(
        shellac.addr,
        "GET",
        "/c",
        &[("if-modified-since", "Mon, 23 Nov 2026 10:00:00 GMT")],
    )
    .await;
    assert_eq!(ims.status, 304);
    let changed = send(shellac.addr, "GET", "/c", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(
        (changed.status.as_u16(), changed.text().as_str()),
        (200, "etagged")
    );
    // A conditional miss is fetched whole (to fill the cache) and answered 304.
    let fresh_key = send(
        shellac.addr,
        "GET",
        "/c?new",
        &[("if-none-match", "\"abc\"")],
    )
    .await;
    assert_eq!(fresh_key.status, 304);
    assert!(origin
        .seen()
        .iter()
        .all(|s| s.headers.get("if-none-match").is_none()));
    assert_eq!(
        get(shellac.addr, "/c?new").await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn vary_keeps_variants_side_by_side() {
    let origin = Origin::start(|seen| async move {
        let encoding = seen
            .headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_string();
        Reply::ok(format!("encoded as {encoding}"))
            .header("vary", "Accept-Encoding")
            .header("cache-control", "max-age=60")
    })
    .await;
    // Without `[compression] gzip_support` (on by default, it serves every
    // `Accept-Encoding` from one object: tests/compression.rs).
    let toml = config(origin.addr, "[compression]\ngzip_support = false\n");
    let shellac = Shellac::start(&toml).await;
    let gzip = send(shellac.addr, "GET", "/v", &[("accept-encoding", "gzip")]).await;
    let br = send(shellac.addr, "GET", "/v", &[("accept-encoding", "br")]).await;
    assert_eq!(gzip.text(), "encoded as gzip");
    assert_eq!(br.text(), "encoded as br");
    // Both variants are still there; spelling differences are normalized.
    let gzip2 = send(shellac.addr, "GET", "/v", &[("accept-encoding", "GZIP")]).await;
    let br2 = send(shellac.addr, "GET", "/v", &[("accept-encoding", "br")]).await;
    assert_eq!(
        (gzip2.header("x-cache"), gzip2.text().as_str()),
        (Some("HIT"), "encoded as gzip")
    );
    assert_eq!(
        (br2.header("x-cache"), br2.text().as_str()),
        (Some("HIT"), "encoded as br")
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn vary_star_is_never_served_from_cache() {
    let origin = Origin::fixed(
        Reply::ok("x")
            .header("vary", "*")
            .header("cache-control", "max-age=60"),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    get(shellac.addr, "/star").await;
    get(shellac.addr, "/star").await;
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_location() {
    let origin = Origin::start(|seen| async move {
        match seen.method.as_str() {
            "PUT" => Reply::ok("").status(204),
            "POST" => Reply::ok("").status(201).header("location", "/items/2"),
            _ => Reply::ok(format!("{} v", seen.target)).header("cache-control", "max-age=60"),
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    get(shellac.addr, "/items/1").await;
    get(shellac.addr, "/items/2").await;
    assert_eq!(
        get(shellac.addr, "/items/1").await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(send(shellac.addr, "PUT", "/items/1", &[]).await.status, 204);
    assert_eq!(
        get(shellac.addr, "/items/1").await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(send(shellac.addr, "POST", "/items", &[]).await.status, 201);
    assert_eq!(
        get(shellac.addr, "/items/2").await.header("x-cache"),
        Some("MISS")
    );
}

#[tokio::test]
async fn ranges_are_answered_from_the_cache() {
    let origin = Origin::fixed(Reply::ok("0123456789").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    // A range miss fetches the whole object (the origin sees no Range).
    let first = send(shellac.addr, "GET", "/r", &[("range", "bytes=0-3")]).await;
    assert!(first.status == 200 || first.status == 206);
    assert!(origin.seen()[0].headers.get("range").is_none());
    let part = send(shellac.addr, "GET", "/r", &[("range", "bytes=2-5")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), "2345");
    assert_eq!(part.header("content-range"), Some("bytes 2-5/10"));
    let tail = send(shellac.addr, "GET", "/r", &[("range", "bytes=-3")]).await;
    assert_eq!(tail.text(), "789");
    let bad = send(shellac.addr, "GET", "/r", &[("range", "bytes=50-60")]).await;
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range"), Some("bytes */10"));
    let multi = send(shellac.addr, "GET", "/r", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(
        (multi.status.as_u16(), multi.text().as_str()),
        (200, "0123456789")
    );
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn only_if_cached_gets_504_on_a_miss() {
    let origin = Origin::fixed(Reply::ok("x").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let miss = send(
        shellac.addr,
        "GET",
        "/o",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(miss.status, 504);
    assert_eq!(origin.requests(), 0);
    get(shellac.addr, "/o").await;
    let hit = send(
        shellac.addr,
        "GET",
        "/o",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(hit.status, 200);
}

/// RFC 9111's request directives, with `honor_request_cache_control = true`
/// (since issue 15 item 11 the default ignores them, as Varnish does).
#[tokio::test]
async fn request_directives_force_a_fetch_when_honoured() {
    let origin = Origin::fixed(Reply::ok("x").header("cache-control", "max-age=60")).await;
    let honour = "[cache]\nhonor_request_cache_control = true\n";
    let shellac = Shellac::start(&config(origin.addr, honour)).await;
    get(shellac.addr, "/q").await;
    send(shellac.addr, "GET", "/q", &[("cache-control", "no-cache")]).await;
    assert_eq!(origin.requests(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let too_old = send(shellac.addr, "GET", "/q", &[("cache-control", "max-age=0")]).await;
    assert_eq!(too_old.header("x-cache"), Some("MISS"));
    assert_eq!(origin.requests(), 3);
    // no-store in the request: answered, nothing new stored.
    send(shellac.addr, "GET", "/q2", &[("cache-control", "no-store")]).await;
    assert_eq!(
        get(shellac.addr, "/q2").await.header("x-cache"),
        Some("MISS")
    );
    send(shellac.addr, "GET", "/q3", &[]).await;
    let pragma = send(shellac.addr, "GET", "/q3", &[("pragma", "no-cache")]).await;
    assert_eq!(
        pragma.header("x-cache"),
        Some("MISS"),
        "Pragma: no-cache honoured"
    );
}

/// Issue 15 item 11: with the shipped defaults, a browser's reload
/// (`Cache-Control: max-age=0` or `no-cache`, `Pragma: no-cache`) does not
/// bypass the cache — Varnish's builtin behaviour; before, 100 % of such
/// requests reached the origin. `only-if-cached` still works on a miss.
#[tokio::test]
async fn browser_reloads_are_hits_by_default() {
    let origin = Origin::fixed(Reply::ok("x").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    assert_eq!(
        get(shellac.addr, "/r").await.header("x-cache"),
        Some("MISS")
    );
    for directive in [
        ("cache-control", "max-age=0"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("cache-control", "no-store"),
    ] {
        let got = send(shellac.addr, "GET", "/r", &[directive]).await;
        assert_eq!(got.header("x-cache"), Some("HIT"), "{directive:?}");
    }
    assert_eq!(origin.requests(), 1, "one origin request in all");
    let miss = send(
        shellac.addr,
        "GET",
        "/nothing",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(miss.status, 504);
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn targeted_cache_control_wins_and_can_be_stripped() {
    let origin = Origin::fixed(
        Reply::ok("cdn")
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "max-age=60"),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "[cache]\nstrip_targeted = true\n")).await;
    get(shellac.addr, "/t").await;
    let hit = get(shellac.addr, "/t").await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(
        hit.header("cache-control"),
        Some("no-store"),
        "Cache-Control is for downstream caches"
    );
    assert!(hit.header("cdn-cache-control").is_none());
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified() {
    let origin =
        Origin::fixed(Reply::ok("old").header("last-modified", "Mon, 02 Nov 2026 09:00:00 GMT"))
            .await;
    let shellac = Shellac::start(&config(origin.addr, "[cache]\ndefault_ttl = \"0s\"\n")).await;
    get(shellac.addr, "/lm").await;
    let hit = get(shellac.addr, "/lm").await;
    assert_eq!(
        hit.header("x-cache"),
        Some("HIT"),
        "heuristic freshness applies even with default_ttl = 0"
    );
    let ttl: i64 = hit
        .header("cache-status")
        .and_then(|s| s.split("ttl=").nth(1))
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok())
        .expect("ttl in Cache-Status");
    assert!(
        ttl > 100 && ttl <= 120,
        "capped at heuristic_max (120 s): {ttl}"
    );
}

#[tokio::test]
async fn cache_status_says_what_happened() {
    let origin = Origin::fixed(Reply::ok("x").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let miss = get(shellac.addr, "/cs").await;
    assert_eq!(
        miss.header("cache-status"),
        Some("shellac; fwd=uri-miss; stored")
    );
    let hit = get(shellac.addr, "/cs").await;
    assert!(hit
        .header("cache-status")
        .is_some_and(|s| s.starts_with("shellac; hit; ttl=")));
    let pass = send(shellac.addr, "POST", "/cs", &[]).await;
    assert!(pass
        .header("cache-status")
        .is_some_and(|s| s.starts_with("shellac; fwd=bypass")));
}

#[tokio::test]
async fn a_large_cacheable_body_streams_to_the_first_client_while_stored() {
    let origin = Origin::raw(|_| {
        vec![
            Step::Write(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\ncache-control: max-age=60\r\n\r\nfirst half".to_vec()),
            Step::Sleep(Duration::from_millis(800)),
            Step::Write(b"secondhalf".to_vec()),
        ]
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let stream = tokio::net::TcpStream::connect(shellac.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let started = Instant::now();
    let req = http::Request::get("/stream")
        .header("host", "test.example")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("head");
    let mut body = response.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .expect("a frame")
        .expect("data");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the first bytes waited for the whole body"
    );
    assert_eq!(
        first.data_ref().map(|d| d.as_ref()),
        Some(&b"first half"[..])
    );
    let rest = http_body_util::BodyExt::collect(body)
        .await
        .expect("rest")
        .to_bytes();
    assert_eq!(&rest[..], b"secondhalf");
    let hit = get(shellac.addr, "/stream").await;
    assert_eq!(
        (hit.header("x-cache"), hit.text().as_str()),
        (Some("HIT"), "first halfsecondhalf")
    );
}

#[tokio::test]
async fn waiters_get_the_writers_failure_without_another_fetch() {
    let origin = Origin::raw(|_| vec![Step::Sleep(Duration::from_millis(300)), Step::Close]).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let addr = shellac.addr;
            tokio::spawn(async move { try_send(addr, "GET", "/dead", &[]).await })
        })
        .collect();
    for client in clients {
        let got = client.await.expect("task").expect("a response");
        assert_eq!(got.status, 503);
    }
    assert_eq!(
        origin.requests(),
        1,
        "waiters must not repeat a failing fetch"
    );
}

/// Issue 15 item 14: `Host: private.example.com.` (a trailing dot, the
/// same fully-qualified name) must meet the `pass = true` route written for
/// `private.example.com`, as nginx matches it, and never be cached; and the
/// dotted and plain spellings of a cached host share one cache entry.
#[tokio::test]
async fn a_trailing_dot_in_host_is_the_same_host() {
    let origin = Origin::fixed(Reply::ok("page").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[[route]]\nhost = \"private.example.com\"\npass = true\n[[route]]\n",
    ))
    .await;
    for _ in 0..2 {
        let got = send(
            shellac.addr,
            "GET",
            "/p",
            &[("host", "private.example.com.")],
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.header("x-cache"),
            Some("PASS"),
            "the pass route applies"
        );
    }
    assert_eq!(origin.requests(), 2, "a passed request is never cached");
    let plain = send(shellac.addr, "GET", "/s", &[("host", "www.example.com")]).await;
    assert_eq!(plain.header("x-cache"), Some("MISS"));
    let dotted = send(shellac.addr, "GET", "/s", &[("host", "WWW.example.com.")]).await;
    assert_eq!(
        dotted.header("x-cache"),
        Some("HIT"),
        "one entry for both spellings"
    );
    assert_eq!(origin.requests(), 3);
}

/// A cacheable response with an empty body (a `301` redirect, a `204`) is
/// stored like any other: the second request is a HIT.
#[tokio::test]
async fn empty_cacheable_responses_are_stored() {
    let origin = Origin::fixed(
        Reply::ok("")
            .status(301)
            .header("location", "https://example.com/")
            .header("cache-control", "max-age=60"),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let first = get(shellac.addr, "/moved").await;
    assert_eq!(first.status, 301);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = get(shellac.addr, "/moved").await;
    assert_eq!(second.status, 301);
    assert_eq!(
        second.header("x-cache"),
        Some("HIT"),
        "{:?}",
        second.header("cache-status")
    );
    assert_eq!(origin.requests(), 1);
}
