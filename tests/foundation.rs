//! The foundation: a caching reverse proxy end to end, through real sockets.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{config, get, raw, send, try_send, Origin, Reply, Shellac, ShellacProcess, Step};

fn cacheable(body: &'static str) -> Reply {
    Reply::ok(body).header("cache-control", "max-age=60")
}

#[tokio::test]
async fn miss_then_hit_with_one_origin_request() {
    let origin = Origin::fixed(cacheable("hello")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;

    let first = get(shellac.addr, "/page").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "hello");
    assert_eq!(first.header("x-cache"), Some("MISS"));

    let second = get(shellac.addr, "/page").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "hello");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert!(second.header("via").is_some_and(|v| v.contains("shellac")));
    assert_eq!(origin.requests(), 1, "the hit must not reach the origin");

    // A different query string is a different object.
    let other = get(shellac.addr, "/page?v=2").await;
    assert_eq!(other.header("x-cache"), Some("MISS"));
    assert_eq!(origin.requests(), 2);
    shellac.stop().await;
}

#[tokio::test]
async fn head_on_a_cached_get_is_a_hit() {
    let origin = Origin::fixed(cacheable("twelve bytes")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    get(shellac.addr, "/h").await;
    let head = send(shellac.addr, "HEAD", "/h", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-cache"), Some("HIT"));
    assert_eq!(head.header("content-length"), Some("12"));
    assert!(head.body.is_empty());
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn responses_that_forbid_storing_are_not_cached() {
    for (name, value) in [
        ("cache-control", "no-store"),
        ("cache-control", "private, max-age=60"),
        ("set-cookie", "session=abc"),
    ] {
        let origin = Origin::fixed(
            Reply::ok("x")
                .header("cache-control", "max-age=60")
                .header(name, value),
        )
        .await;
        let shellac = Shellac::start(&config(origin.addr, "")).await;
        for _ in 0..2 {
            let got = get(shellac.addr, "/p").await;
            assert_eq!(got.header("x-cache"), Some("MISS"), "{name}: {value}");
        }
        assert_eq!(origin.requests(), 2, "{name}: {value} must not be cached");
    }
}

#[tokio::test]
async fn requests_with_credentials_pass() {
    let origin = Origin::fixed(cacheable("secret")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    for header in [("authorization", "Bearer t"), ("cookie", "a=b")] {
        for _ in 0..2 {
            let got = send(shellac.addr, "GET", "/me", &[header]).await;
            assert_eq!(got.header("x-cache"), Some("PASS"), "{header:?}");
        }
    }
    assert_eq!(origin.requests(), 4);
    // And nothing was stored for anonymous users either.
    let anonymous = get(shellac.addr, "/me").await;
    assert_eq!(anonymous.header("x-cache"), Some("MISS"));
}

#[tokio::test]
async fn shareable_response_to_credentials_is_stored() {
    let origin =
        Origin::fixed(Reply::ok("shared").header("cache-control", "public, max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let first = send(
        shellac.addr,
        "GET",
        "/pub",
        &[("authorization", "Bearer t")],
    )
    .await;
    assert_eq!(first.header("x-cache"), Some("PASS"));
    let second = get(shellac.addr, "/pub").await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn error_statuses_are_not_stored_even_with_max_age() {
    for status in [400u16, 413, 414, 431, 500, 502, 503] {
        let origin = Origin::fixed(
            Reply::ok("err")
                .status(status)
                .header("cache-control", "max-age=60"),
        )
        .await;
        // No retries: each client request is exactly one origin request.
        let shellac = Shellac::start(&config(origin.addr, "[retry]\nmax_retries = 0\n")).await;
        get(shellac.addr, "/e").await;
        let again = get(shellac.addr, "/e").await;
        assert_eq!(again.status, status);
        assert_eq!(origin.requests(), 2, "status {status} must not be cached");
    }
    // Unless the operator asks for it.
    let origin = Origin::fixed(
        Reply::ok("err")
            .status(503)
            .header("cache-control", "max-age=60"),
    )
    .await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[cache]\nstore_errors = true\n[retry]\nmax_retries = 0\n",
    ))
    .await;
    get(shellac.addr, "/e").await;
    assert_eq!(get(shellac.addr, "/e").await.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn default_ttl_applies_without_freshness_and_zero_disables_it() {
    let origin = Origin::fixed(Reply::ok("plain")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    get(shellac.addr, "/d").await;
    assert_eq!(get(shellac.addr, "/d").await.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 1);

    let origin = Origin::fixed(Reply::ok("plain")).await;
    let shellac = Shellac::start(&config(origin.addr, "[cache]\ndefault_ttl = \"0s\"\n")).await;
    get(shellac.addr, "/d").await;
    get(shellac.addr, "/d").await;
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn max_age_one_expires() {
    let origin = Origin::fixed(Reply::ok("short").header("cache-control", "max-age=1")).await;
    // Without grace, an expired object is a miss (with grace it would be
    // served stale while refreshed: tests/cache.rs).
    let shellac = Shellac::start(&config(origin.addr, "[cache]\ndefault_grace = \"0s\"\n")).await;
    get(shellac.addr, "/s").await;
    assert_eq!(get(shellac.addr, "/s").await.header("x-cache"), Some("HIT"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(shellac.addr, "/s").await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn connect_refused_gives_the_synthetic_503() {
    let dead = Origin::refusing().await;
    // No retries, so no ejection: the fallback Retry-After applies.
    let shellac = Shellac::start(&config(
        dead,
        "retry_after = \"7s\"\n[retry]\nmax_retries = 0\n",
    ))
    .await;
    let got = get(shellac.addr, "/x").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), Some("7"));
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    let page = got.text();
    assert!(
        page.contains("<title>503 Backend fetch failed</title>"),
        "{page}"
    );
    assert!(page.contains("XID: "), "{page}");
}

#[tokio::test]
async fn first_byte_timeout_gives_503_in_time() {
    let origin = Origin::fixed(cacheable("late").delay(Duration::from_secs(5))).await;
    let shellac = Shellac::start(&format!(
        "{}first_byte_timeout = \"300ms\"\n",
        config(origin.addr, "[retry]\nmax_retries = 0\n")
    ))
    .await;
    let started = Instant::now();
    let got = get(shellac.addr, "/slow").await;
    let took = started.elapsed();
    assert_eq!(got.status, 503);
    assert!(
        took >= Duration::from_millis(300),
        "gave up too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?} for a 300 ms timeout"
    );
}

#[tokio::test]
async fn between_bytes_stall_closes_the_connection_and_stores_nothing() {
    let origin = Origin::raw(|_| {
        vec![
            Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ncache-control: max-age=60\r\n\r\n0123456789"
                    .to_vec(),
            ),
            Step::Sleep(Duration::from_secs(5)),
            Step::Close,
        ]
    })
    .await;
    let shellac = Shellac::start(&format!(
        "{}between_bytes_timeout = \"300ms\"\n",
        config(origin.addr, "")
    ))
    .await;
    let started = Instant::now();
    let result = try_send(shellac.addr, "GET", "/stall", &[]).await;
    assert!(
        result.is_err(),
        "a stalled body must not look complete: {result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // The truncated object was not stored: the next request goes to the origin.
    let _ = try_send(shellac.addr, "GET", "/stall", &[]).await;
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn backend_closing_mid_body_is_not_cached() {
    let origin = Origin::raw(|_| {
        vec![
            Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncache-control: max-age=60\r\n\r\nabc"
                    .to_vec(),
            ),
            Step::Close,
        ]
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    assert!(try_send(shellac.addr, "GET", "/cut", &[]).await.is_err());
    assert!(try_send(shellac.addr, "GET", "/cut", &[]).await.is_err());
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn oversized_backend_header_is_503_and_logged_by_limit_name() {
    let big = "v".repeat(12 * 1024);
    let origin = Origin::fixed(cacheable("x").header("x-big", big)).await;
    let shellac = ShellacProcess::spawn(&config(origin.addr, ""));
    let got = get(shellac.addr, "/big").await;
    assert_eq!(got.status, 503);
    assert!(
        shellac
            .wait_for_log("http_resp_hdr_len", Duration::from_secs(5))
            .await,
        "the log must name the limit; log:\n{}",
        shellac.log()
    );
}

#[tokio::test]
async fn oversized_backend_head_names_http_resp_size() {
    let origin = Origin::fixed((0..40).fold(cacheable("x"), |r, i| {
        r.header(&format!("x-h{i}"), "v".repeat(1000))
    }))
    .await;
    let shellac = ShellacProcess::spawn(&config(origin.addr, ""));
    let got = get(shellac.addr, "/big").await;
    assert_eq!(got.status, 503);
    assert!(
        shellac
            .wait_for_log("http_resp_size", Duration::from_secs(5))
            .await,
        "log:\n{}",
        shellac.log()
    );
}

#[tokio::test]
async fn oversized_request_header_gets_431() {
    let origin = Origin::fixed(cacheable("x")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let long = "a".repeat(9 * 1024);
    let reply = raw(
        shellac.addr,
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Long: {long}\r\n\r\n").as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(origin.requests(), 0);

    // Too many header fields: hyper answers 431 too.
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let reply = raw(
        shellac.addr,
        format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
}

#[tokio::test]
async fn missing_host_is_400_and_unknown_method_is_501() {
    let origin = Origin::fixed(cacheable("x")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let reply = raw(
        shellac.addr,
        b"GET / HTTP/1.1\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = raw(
        shellac.addr,
        b"BREW /pot HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 501"), "{reply}");
    assert_eq!(origin.requests(), 0);
}

#[tokio::test]
async fn backend_request_has_forwarding_headers_and_no_hop_by_hop() {
    let origin = Origin::fixed(Reply::ok("x").header("keep-alive", "timeout=5")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let got = send(
        shellac.addr,
        "GET",
        "/fwd?q=1",
        &[
            ("connection", "x-private"),
            ("x-private", "1"),
            ("x-forwarded-for", "10.1.1.1"),
        ],
    )
    .await;
    assert!(
        got.header("keep-alive").is_none(),
        "hop-by-hop from the backend is dropped"
    );
    let seen = origin.seen().pop().expect("one request");
    assert_eq!(seen.target, "/fwd?q=1");
    assert!(seen.headers.get("x-private").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert!(seen.headers["via"]
        .to_str()
        .unwrap_or("")
        .contains("shellac"));
    assert_eq!(seen.headers["host"], "test.example");
}

#[tokio::test]
async fn host_is_in_the_key_case_insensitively() {
    let origin = Origin::start(|seen| async move {
        let host = seen
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        Reply::ok(host).header("cache-control", "max-age=60")
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let a = send(shellac.addr, "GET", "/k", &[("host", "a.example")]).await;
    let b = send(shellac.addr, "GET", "/k", &[("host", "b.example")]).await;
    let a2 = send(shellac.addr, "GET", "/k", &[("host", "A.Example")]).await;
    assert_eq!(a.text(), "a.example");
    assert_eq!(b.text(), "b.example");
    assert_eq!(a2.header("x-cache"), Some("HIT"));
    assert_eq!(a2.text(), "a.example");
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn routes_send_requests_to_their_pools() {
    let fast = Origin::fixed(Reply::ok("fast")).await;
    let slow = Origin::fixed(Reply::ok("slow")).await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[backend]]\nname = \"fast\"\naddress = \"{}\"\n\
         [[backend]]\nname = \"slow\"\naddress = \"{}\"\n\
         [[pool]]\nname = \"default\"\nbackends = [\"fast\"]\n\
         [[pool]]\nname = \"transforms\"\nbackends = [\"slow\"]\n\
         [[route]]\npath_prefix = \"/transform/\"\npool = \"transforms\"\n",
        fast.addr, slow.addr
    );
    let shellac = Shellac::start(&toml).await;
    assert_eq!(get(shellac.addr, "/transform/x").await.text(), "slow");
    assert_eq!(get(shellac.addr, "/page").await.text(), "fast");
}

#[tokio::test]
async fn round_robin_spreads_over_backends() {
    let a = Origin::fixed(Reply::ok("a").header("cache-control", "no-store")).await;
    let b = Origin::fixed(Reply::ok("b").header("cache-control", "no-store")).await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"{}\"\n[[backend]]\naddress = \"{}\"\n",
        a.addr, b.addr
    );
    let shellac = Shellac::start(&toml).await;
    for _ in 0..10 {
        get(shellac.addr, "/rr").await;
    }
    assert_eq!((a.requests(), b.requests()), (5, 5));
}

#[tokio::test]
async fn keep_alive_connection_serves_several_requests_and_idles_out() {
    let origin = Origin::fixed(cacheable("ka")).await;
    let shellac = Shellac::start(&config(origin.addr, "timeout_idle = \"300ms\"\n")).await;
    let stream = tokio::net::TcpStream::connect(shellac.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let conn = tokio::spawn(conn);
    for _ in 0..3 {
        let req = http::Request::get("/ka")
            .header("host", "t")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender
            .send_request(req)
            .await
            .expect("response on the same connection");
        assert_eq!(response.status(), 200);
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body");
    }
    // Idle for longer than timeout_idle: Shellac closes the connection.
    let closed = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(closed.is_ok(), "the idle connection was not closed");
}

#[tokio::test]
async fn large_body_streams_through_without_being_buffered() {
    const SIZE: usize = 50 * 1024 * 1024;
    let origin = Origin::raw(|seen| {
        let cacheable = seen.target.contains("chunked");
        let mut steps = Vec::new();
        if cacheable {
            // No Content-Length: the proxy cannot know the size up front.
            steps.push(Step::Write(
                b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nconnection: close\r\n\r\n".to_vec(),
            ));
        } else {
            steps.push(Step::Write(
                format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\ncache-control: max-age=60\r\n\r\n")
                    .into_bytes(),
            ));
        }
        steps.push(Step::WriteFill { total: SIZE, piece: 64 * 1024 });
        if cacheable {
            steps.push(Step::Close);
        }
        steps
    })
    .await;
    // max_object_size stays below the body, so the store gives up early.
    let shellac = ShellacProcess::spawn(&config(
        origin.addr,
        "[cache]\nmax_object_size = \"1MiB\"\n",
    ));
    for path in ["/big", "/big-chunked"] {
        let got = get(shellac.addr, path).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), SIZE, "{path}");
    }
    let peak = shellac.peak_rss_kib().expect("VmHWM");
    assert!(
        peak < 30 * 1024,
        "peak RSS {peak} KiB while streaming 50 MiB bodies"
    );
}

#[test]
fn check_reports_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:6081\"\n\n[defaults]\nconnect_timeout = 5\n[[backend]]\naddress = \"127.0.0.1:8080\"\n")
        .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_shellac"))
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .expect("run shellac --check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:5"), "{stderr}");
    assert!(stderr.contains("defaults.connect_timeout"), "{stderr}");
    assert!(stderr.contains("expected a duration"), "{stderr}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[[backend]]\naddress = \"127.0.0.1:8080\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_shellac"))
        .args(["--check", "--config"])
        .arg(&good)
        .output()
        .expect("run shellac --check");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn shipped_config_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_shellac"))
        .args([
            "--check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/shellac.toml"),
        ])
        .output()
        .expect("run shellac --check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// HTTP/2 with prior knowledge (h2c) on the same listener as HTTP/1.1: the
/// first bytes decide. Two requests on one HTTP/2 connection: a miss, then
/// a hit, one origin request.
#[tokio::test]
async fn h2c_prior_knowledge_is_served_on_the_same_listener() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let origin = Origin::fixed(cacheable("over h2")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let stream = tokio::net::TcpStream::connect(shellac.addr)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let request = hyper::Request::get(format!("http://{}/h2", shellac.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("h2 response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let x_cache = response.headers()["x-cache"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"over h2");
        seen.push(x_cache);
    }
    assert_eq!(seen, ["MISS", "HIT"]);
    assert_eq!(origin.requests(), 1);
}

/// An HTTP/1.1 request that arrives a few bytes at a time (its first bytes
/// could still be the start of the HTTP/2 preface) is answered normally.
#[tokio::test]
async fn a_request_dribbled_in_small_pieces_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let origin = Origin::fixed(cacheable("dribbled")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let mut stream = tokio::net::TcpStream::connect(shellac.addr)
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let request = b"PUT /d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    for piece in request.chunks(3) {
        stream.write_all(piece).await.expect("write");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "got: {answer}");
    assert!(answer.ends_with("dribbled"), "got: {answer}");
    assert_eq!(origin.requests(), 1);
}
