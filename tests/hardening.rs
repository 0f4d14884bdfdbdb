//! Hardening: hostile clients, broken backends and cache poisoning, each
//! tried over real sockets. `docs/security.md` lists every attack with the
//! test here that guards it.
//!
//! Request smuggling tests send raw bytes to Shellac in front of a
//! [`RawRecorder`] origin, which keeps exactly the bytes it received: each
//! case must end either in a 400-class refusal with the connection closed
//! and nothing forwarded, or in exactly one request, framed by Shellac
//! itself, reaching the origin. Never two, never an ambiguous one.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::origin::RawRecorder;
use support::origin::Seen;
use support::{config, get, read_reply, send, try_send, Origin, RawReply, Reply, Shellac, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the recording origin answers: small, uncacheable.
const ORIGIN_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncache-control: no-store\r\n\r\nok";

/// Writes `request` on a fresh connection and reads until the server closes
/// or `wait` passes.
async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may refuse and close before all of it is written.
    let _ = stream.write_all(request).await;
    read_reply(&mut stream, wait).await
}

/// Shellac in front of a fresh recording origin.
async fn recorded() -> (RawRecorder, Shellac) {
    let origin = RawRecorder::start(ORIGIN_OK).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    (origin, shellac)
}

/// The request was refused at the head: a 400 (or `status`), the connection
/// closed, and nothing reached the origin.
async fn assert_refused(request: &[u8], statuses: &[u16]) {
    let (origin, shellac) = recorded().await;
    let reply = exchange(shellac.addr, request, Duration::from_secs(3)).await;
    assert!(
        reply.status().is_some_and(|s| statuses.contains(&s)),
        "expected one of {statuses:?} for {:?}, got: {}",
        String::from_utf8_lossy(request),
        reply.text
    );
    assert!(
        reply.closed,
        "the connection must be closed: {}",
        reply.text
    );
    assert!(
        !reply.text.contains("HTTP/1.1 200"),
        "a second (smuggled) response: {}",
        reply.text
    );
    // Give a forwarded request time to arrive before saying none did.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        origin.requests().is_empty(),
        "nothing may be forwarded: {:?}",
        origin.texts()
    );
    shellac.stop().await;
}

/// Exactly one request reached the origin, with exactly one framing header
/// and no trace of `smuggled`; returns its bytes as text.
async fn assert_one_normalized(request: &[u8]) -> String {
    let (origin, shellac) = recorded().await;
    let reply = exchange(shellac.addr, request, Duration::from_secs(2)).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = origin.texts();
    assert_eq!(seen.len(), 1, "exactly one request: {seen:?}");
    let text = seen[0].clone();
    assert!(!text.contains("smuggled"), "{text}");
    let lower = text.to_ascii_lowercase();
    let framing = lower.matches("\r\ncontent-length:").count()
        + lower.matches("\r\ntransfer-encoding:").count();
    assert!(framing <= 1, "at most one framing header: {text}");
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "only CRLF line ends: {text:?}"
    );
    shellac.stop().await;
    text
}

// === 1. request smuggling and parsing ===

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    // CL.TE / TE.CL: the classic desync. RFC 9112 §6.1: reject or use TE
    // alone, and close the connection either way. Shellac rejects.
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_before_content_length_is_refused() {
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST /smuggled HTTP/1.1\r\n\r\n0\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn duplicate_equal_content_lengths_are_refused() {
    // RFC 9112 §6.3 lets a recipient accept identical values; Shellac (like
    // Varnish) refuses, so no ambiguous list is ever forwarded.
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn content_length_list_is_refused() {
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn malformed_content_lengths_are_refused() {
    for value in ["+3", "-1", "0x3", "3 3", "3.0", "99999999999999999999999"] {
        assert_refused(
            format!("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: {value}\r\n\r\nabc").as_bytes(),
            &[400],
        )
        .await;
    }
}

#[tokio::test]
async fn transfer_encoding_chunked_identity_is_refused() {
    // Chunked is not the final coding: the length cannot be determined
    // (RFC 9112 §6.3 item 4), so 400.
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        &[400, 501],
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_xchunked_is_refused() {
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        &[400, 501],
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_split_over_two_lines_is_refused() {
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        &[400, 501],
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_other_codings_are_refused() {
    // `gzip, chunked` is well framed, but Shellac would forward a body whose
    // coding the origin is no longer told about: 501 (RFC 9112 §6.1).
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        &[400, 501],
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_in_http10_is_refused() {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    assert_refused(
        b"POST /a HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_with_leading_space_is_normalized() {
    // ` chunked` is `chunked` with optional whitespace: a valid chunked body,
    // which Shellac decodes and frames again itself.
    let text = assert_one_normalized(
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:  chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("POST /a HTTP/1.1\r\n"), "{text}");
    assert!(text.contains("abc"), "{text}");
}

#[tokio::test]
async fn space_before_colon_in_transfer_encoding_is_refused() {
    // RFC 9112 §5.1: whitespace between name and colon MUST be rejected.
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn bare_lf_line_endings_are_normalized_to_crlf() {
    // RFC 9112 §2.2 lets a recipient accept a bare LF as a line end; what
    // Shellac forwards is its own CRLF-framed head.
    let text = assert_one_normalized(b"GET /lf HTTP/1.1\nHost: t\nConnection: close\n\n").await;
    assert!(text.starts_with("GET /lf HTTP/1.1\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\n"), "{text:?}");
}

#[tokio::test]
async fn bare_cr_is_refused() {
    assert_refused(b"GET /cr HTTP/1.1\rHost: t\r\n\r\n", &[400]).await;
}

#[tokio::test]
async fn header_name_with_space_is_refused() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: t\r\nX Smuggle: 1\r\n\r\n", &[400]).await;
}

#[tokio::test]
async fn header_name_with_nul_is_refused() {
    assert_refused(
        b"GET / HTTP/1.1\r\nHost: t\r\nX\0Smuggle: 1\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn header_name_with_control_byte_is_refused() {
    assert_refused(
        b"GET / HTTP/1.1\r\nHost: t\r\nX\x01Smuggle: 1\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn header_value_with_nul_or_control_byte_is_refused() {
    assert_refused(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", &[400]).await;
    assert_refused(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", &[400]).await;
}

#[tokio::test]
async fn obsolete_line_folding_is_refused() {
    assert_refused(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn absolute_form_with_a_mismatched_host_is_refused() {
    // RFC 9112 §3.2.2 says the authority wins; a front end that routes on
    // Host would disagree with Shellac about the target, so Shellac refuses.
    assert_refused(
        b"GET http://victim.example/x HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn absolute_form_with_userinfo_is_refused() {
    assert_refused(
        b"GET http://user@victim.example/x HTTP/1.1\r\nHost: victim.example\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn absolute_form_with_a_matching_host_is_forwarded_in_origin_form() {
    let text = assert_one_normalized(
        b"GET http://Victim.example:80/x?y HTTP/1.1\r\nHost: victim.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("GET /x?y HTTP/1.1\r\n"), "{text}");
    let hosts: Vec<&str> = text
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect();
    assert_eq!(hosts.len(), 1, "{text}");
}

#[tokio::test]
async fn invalid_host_values_are_refused() {
    for host in [
        "a b.example",
        "a.example/x",
        "user@a.example",
        "a.example:port",
        "",
    ] {
        assert_refused(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            &[400],
        )
        .await;
    }
}

#[tokio::test]
async fn duplicate_host_is_refused() {
    assert_refused(
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        &[400],
    )
    .await;
}

#[tokio::test]
async fn oversized_chunk_size_is_refused() {
    let (origin, shellac) = recorded().await;
    let reply = exchange(
        shellac.addr,
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(reply.status(), Some(400), "{}", reply.text);
    assert!(reply.closed, "{}", reply.text);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Shellac may have started the request to the origin before the chunk
    // size arrived; it must never have completed it.
    for seen in origin.texts() {
        assert!(!seen.ends_with("0\r\n\r\n"), "a complete body: {seen:?}");
    }
    shellac.stop().await;
}

#[tokio::test]
async fn chunk_size_with_junk_is_refused() {
    let (origin, shellac) = recorded().await;
    let reply = exchange(
        shellac.addr,
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(reply.status(), Some(400), "{}", reply.text);
    assert!(reply.closed, "{}", reply.text);
    for seen in origin.texts() {
        assert!(!seen.ends_with("0\r\n\r\n"), "a complete body: {seen:?}");
    }
    shellac.stop().await;
}

#[tokio::test]
async fn valid_chunked_body_is_forwarded_once() {
    let text = assert_one_normalized(
        b"POST /ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.contains("Wiki") && text.contains("pedia"), "{text}");
}

// === 2. slow and greedy clients ===

#[tokio::test]
async fn slowloris_is_cut_at_header_timeout() {
    let origin = Origin::fixed(Reply::ok("x")).await;
    let shellac = Shellac::start(&config(origin.addr, "header_timeout = \"500ms\"\n")).await;
    let mut stream = TcpStream::connect(shellac.addr).await.expect("connect");
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = None;
    for byte in head.iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = Some(started.elapsed());
                break;
            }
            // hyper may answer 408 before closing; keep reading to the close.
            Ok(Ok(_)) | Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never cut off");
    }
    let cut = cut.expect("the connection must be closed before the head completes");
    assert!(cut < Duration::from_millis(1500), "cut after {cut:?}");
    assert_eq!(origin.requests(), 0);
    // Others are unaffected.
    assert_eq!(get(shellac.addr, "/").await.status, 200);
    shellac.stop().await;
}

#[tokio::test]
async fn client_that_never_reads_is_cut_at_send_timeout_without_stalling_others() {
    const BIG: usize = 48 * 1024 * 1024;
    let origin = Origin::start(|seen| async move {
        if seen.target == "/big" {
            Reply::ok(vec![b'x'; BIG]).header("cache-control", "no-store")
        } else {
            Reply::ok("small")
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "send_timeout = \"1s\"\n")).await;
    let mut greedy = TcpStream::connect(shellac.addr).await.expect("connect");
    greedy
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    // While the greedy client reads nothing, others are served at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let got = get(shellac.addr, "/small").await;
        assert_eq!(got.text(), "small");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Now read: what was buffered arrives, then the close, well short of the body.
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match greedy.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "the connection was not closed");
    assert!(
        received < BIG,
        "the whole body arrived ({received} bytes): send_timeout did not fire"
    );
    shellac.stop().await;
}

#[tokio::test]
async fn max_connections_answers_the_excess_with_503_and_closes() {
    let origin = Origin::fixed(Reply::ok("x").header("cache-control", "no-store")).await;
    let shellac = Shellac::start(&config(origin.addr, "max_connections = 2\n")).await;
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(shellac.addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let refused = exchange(shellac.addr, request, Duration::from_secs(3)).await;
    assert_eq!(refused.status(), Some(503), "{}", refused.text);
    assert!(refused.text.to_ascii_lowercase().contains("retry-after:"));
    assert!(refused.closed);
    assert_eq!(origin.requests(), 2);
    // A slot frees when a held connection goes.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(shellac.addr, "/").await.status, 200);
    shellac.stop().await;
}

#[tokio::test]
async fn declared_body_over_max_request_body_gets_413() {
    let origin = RawRecorder::start(ORIGIN_OK).await;
    let shellac = Shellac::start(&config(origin.addr, "max_request_body = \"1KiB\"\n")).await;
    let reply = exchange(
        shellac.addr,
        b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(reply.status(), Some(413), "{}", reply.text);
    assert!(reply.closed);
    assert!(origin.requests().is_empty());
    // At the limit is fine.
    let body = "b".repeat(1024);
    let reply = exchange(
        shellac.addr,
        format!("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{body}").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    shellac.stop().await;
}

#[tokio::test]
async fn chunked_body_over_max_request_body_gets_413() {
    let origin = RawRecorder::start(ORIGIN_OK).await;
    let shellac = Shellac::start(&config(origin.addr, "max_request_body = \"1KiB\"\n")).await;
    let chunk = "c".repeat(512);
    let mut request =
        String::from("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..8 {
        request.push_str(&format!("200\r\n{chunk}\r\n"));
    }
    request.push_str("0\r\n\r\n");
    let reply = exchange(shellac.addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(reply.status(), Some(413), "{}", reply.text);
    assert!(reply.closed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for seen in origin.texts() {
        assert!(
            !seen.ends_with("0\r\n\r\n"),
            "a complete oversized body was forwarded"
        );
    }
    shellac.stop().await;
}

// === 3. broken backends ===

/// A good answer for `/good`, so each test can check Shellac stayed healthy.
const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncache-control: no-store\r\n\r\ngood";

/// Shellac (first_byte_timeout 500 ms, between_bytes_timeout 300 ms) in front
/// of a raw origin that plays `broken` for every path but `/good`.
async fn broken_backend(broken: fn(&Seen) -> Vec<Step>) -> (Origin, Shellac) {
    let origin = Origin::raw(move |seen| {
        if seen.target == "/good" {
            vec![Step::Write(GOOD.to_vec())]
        } else {
            broken(seen)
        }
    })
    .await;
    let shellac = Shellac::start(&format!(
        // No retries: each client request reaches the broken backend once.
        "{}first_byte_timeout = \"500ms\"\nbetween_bytes_timeout = \"300ms\"\n[retry]\nmax_retries = 0\n",
        config(origin.addr, "")
    ))
    .await;
    (origin, shellac)
}

/// Twice: the synthetic 503 (or, with `head_sent`, a response that fails
/// mid-body) within a bound; both reach the origin (nothing cached); then
/// a good path still works.
async fn assert_backend_failure(broken: fn(&Seen) -> Vec<Step>, head_sent: bool) {
    let (origin, shellac) = broken_backend(broken).await;
    for attempt in 1..=2 {
        let started = Instant::now();
        let result = try_send(shellac.addr, "GET", "/broken", &[]).await;
        if head_sent {
            assert!(
                result.is_err(),
                "attempt {attempt}: a truncated body must fail: {result:?}"
            );
        } else {
            let got = result.expect("a synthetic response");
            assert_eq!(got.status, 503, "attempt {attempt}: {}", got.text());
            assert_eq!(got.header("x-cache"), Some("SYNTH"));
            assert!(got.text().contains("Backend fetch failed"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }
    let broken_seen = origin
        .seen()
        .iter()
        .filter(|s| s.target == "/broken")
        .count();
    assert_eq!(broken_seen, 2, "the failed response must not be cached");
    let good = get(shellac.addr, "/good").await;
    assert_eq!(good.status, 200);
    assert_eq!(good.text(), "good");
    shellac.stop().await;
}

#[tokio::test]
async fn backend_closing_mid_headers_gives_503() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nContent-Le".to_vec()),
                Step::Close,
            ]
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn backend_closing_mid_body_with_content_length_is_not_cached() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ncache-control: max-age=60\r\n\r\nabc"
                        .to_vec(),
                ),
                Step::Close,
            ]
        },
        true,
    )
    .await;
}

#[tokio::test]
async fn backend_closing_mid_chunked_body_is_not_cached() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncache-control: max-age=60\r\n\r\n5\r\nab"
                        .to_vec(),
                ),
                Step::Close,
            ]
        },
        true,
    )
    .await;
}

#[tokio::test]
async fn close_delimited_body_is_served_but_not_cached() {
    // Without Content-Length or chunking, the close ends the body: a
    // truncated body cannot be told from a whole one, so it is never stored.
    let (origin, shellac) = broken_backend(|_| {
        vec![
            Step::Write(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n\r\nall of it".to_vec()),
            Step::Close,
        ]
    })
    .await;
    for _ in 0..2 {
        let got = get(shellac.addr, "/broken").await;
        assert_eq!(got.text(), "all of it");
        assert_ne!(got.header("x-cache"), Some("HIT"));
    }
    assert_eq!(origin.requests(), 2);
    shellac.stop().await;
}

#[tokio::test]
async fn content_length_longer_than_the_body_is_not_cached() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\ncache-control: max-age=60\r\n\r\nonly twenty bytes...".to_vec(),
                ),
                Step::Sleep(Duration::from_secs(2)),
                Step::Close,
            ]
        },
        true,
    )
    .await;
}

#[tokio::test]
async fn content_length_shorter_than_the_body_does_not_leak_into_the_next_response() {
    let origin = Origin::raw(|seen| {
        if seen.target == "/short" {
            // Three bytes announced, a whole forged response after them.
            vec![Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncache-control: max-age=60\r\n\r\nabcHTTP/1.1 200 OK\r\ncontent-length: 8\r\ncache-control: max-age=60\r\n\r\npoisoned"
                    .to_vec(),
            )]
        } else {
            vec![Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nclean".to_vec(),
            )]
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let short = get(shellac.addr, "/short").await;
    assert_eq!(short.text(), "abc");
    tokio::time::sleep(Duration::from_millis(50)).await;
    for path in ["/next", "/other", "/next"] {
        let got = get(shellac.addr, path).await;
        assert_eq!(got.text(), "clean", "{path} got bytes of another response");
    }
    assert_eq!(get(shellac.addr, "/short").await.text(), "abc");
    shellac.stop().await;
}

#[tokio::test]
async fn invalid_status_line_gives_503() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(b"HTTP/1.1 2OO OK\r\ncontent-length: 2\r\n\r\nok".to_vec()),
                Step::Close,
            ]
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn not_http_at_all_gives_503() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
                Step::Close,
            ]
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn informational_response_then_nothing_gives_503_at_first_byte_timeout() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
                Step::Hang,
            ]
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn informational_response_then_close_gives_503() {
    assert_backend_failure(
        |_| {
            vec![
                Step::Write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n".to_vec()),
                Step::Close,
            ]
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn ten_thousand_response_headers_give_503() {
    assert_backend_failure(
        |_| {
            let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
            for i in 0..10_000 {
                head.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\nok");
            vec![Step::Write(head), Step::Close]
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn body_trickling_slower_than_between_bytes_timeout_is_cut_and_not_cached() {
    assert_backend_failure(
        |_| {
            let mut steps = vec![Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\ncache-control: max-age=60\r\n\r\n"
                    .to_vec(),
            )];
            for _ in 0..10 {
                steps.push(Step::Write(b"x".to_vec()));
                steps.push(Step::Sleep(Duration::from_millis(600)));
            }
            steps
        },
        true,
    )
    .await;
}

#[tokio::test]
async fn head_trickling_is_bounded_by_first_byte_timeout() {
    assert_backend_failure(
        |_| {
            let mut steps = Vec::new();
            for byte in
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncache-control: max-age=60\r\n\r\nok"
            {
                steps.push(Step::Write(vec![*byte]));
                steps.push(Step::Sleep(Duration::from_millis(100)));
            }
            steps
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn backend_that_accepts_and_never_answers_gives_503_at_first_byte_timeout() {
    assert_backend_failure(|_| vec![Step::Hang], false).await;
}

// === 4. cache poisoning ===

/// An origin that reflects what a careless application would: the Host,
/// the unkeyed forwarding headers and the request body, all cacheable.
async fn reflecting_origin() -> Origin {
    Origin::start(|seen| async move {
        let field = |name: &str| {
            seen.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let body = format!(
            "host={} xfh={} path={} body={}",
            field("host"),
            field("x-forwarded-host"),
            seen.target,
            String::from_utf8_lossy(&seen.body)
        );
        Reply::ok(body).header("cache-control", "max-age=60")
    })
    .await
}

#[tokio::test]
async fn responses_are_keyed_by_host() {
    let origin = reflecting_origin().await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let evil = send(shellac.addr, "GET", "/p", &[("host", "evil.example")]).await;
    assert!(evil.text().contains("host=evil.example"));
    let victim = send(shellac.addr, "GET", "/p", &[("host", "victim.example")]).await;
    assert!(
        victim.text().contains("host=victim.example"),
        "{}",
        victim.text()
    );
    assert_eq!(victim.header("x-cache"), Some("MISS"));
    // Port 80 is the default port; any other port is another site.
    let other_port = send(
        shellac.addr,
        "GET",
        "/p",
        &[("host", "victim.example:8080")],
    )
    .await;
    assert_eq!(other_port.header("x-cache"), Some("MISS"));
    let same = send(shellac.addr, "GET", "/p", &[("host", "VICTIM.example:80")]).await;
    assert_eq!(same.header("x-cache"), Some("HIT"));
    shellac.stop().await;
}

#[tokio::test]
async fn unkeyed_forwarding_headers_do_not_change_the_key_and_are_forwarded_untouched() {
    // Shellac never uses these headers; it keeps them out of the key and
    // forwards them as they came, except `X-Forwarded-Proto` and
    // `Forwarded`, which it replaces with its own (issue 16: the client is
    // not a trusted proxy). A request carrying one gets (and fills) the
    // same object as a request without it.
    for (name, value, forwarded) in [
        ("x-forwarded-host", "evil.example", "evil.example"),
        ("x-forwarded-scheme", "nothttps", "nothttps"),
        ("x-forwarded-proto", "https", "http"),
        ("x-original-url", "/admin", "/admin"),
        ("x-rewrite-url", "/admin", "/admin"),
        ("x-http-method-override", "DELETE", "DELETE"),
        (
            "forwarded",
            "host=evil.example",
            "for=127.0.0.1;proto=http;host=\"test.example\"",
        ),
    ] {
        let origin = Origin::fixed(Reply::ok("page").header("cache-control", "max-age=60")).await;
        let shellac = Shellac::start(&config(origin.addr, "")).await;
        let first = send(shellac.addr, "GET", "/p", &[(name, value)]).await;
        assert_eq!(first.header("x-cache"), Some("MISS"), "{name}");
        let plain = get(shellac.addr, "/p").await;
        assert_eq!(
            plain.header("x-cache"),
            Some("HIT"),
            "{name} changed the key"
        );
        assert_eq!(origin.requests(), 1, "{name}");
        let seen = origin.seen();
        assert_eq!(seen[0].target, "/p", "{name} changed the target");
        assert_eq!(seen[0].method, "GET", "{name} changed the method");
        assert_eq!(
            seen[0].headers.get(name).map(|v| v.as_bytes()),
            Some(forwarded.as_bytes()),
            "{name}: {value}"
        );
        assert_eq!(
            seen[0].headers.get("host").map(|v| v.as_bytes()),
            Some(&b"test.example"[..]),
            "{name} changed the Host sent"
        );
        shellac.stop().await;
    }
}

#[tokio::test]
async fn x_forwarded_host_does_not_choose_the_route() {
    let admin = Origin::fixed(Reply::ok("admin").header("cache-control", "no-store")).await;
    let public = Origin::fixed(Reply::ok("public").header("cache-control", "no-store")).await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\nname = \"admin\"\naddress = \"{}\"\n[[backend]]\nname = \"public\"\naddress = \"{}\"\n[[pool]]\nname = \"admin\"\nbackends = [\"admin\"]\n[[pool]]\nname = \"default\"\nbackends = [\"public\"]\n[[route]]\nhost = \"admin.example\"\npool = \"admin\"\n",
        admin.addr, public.addr
    );
    let shellac = Shellac::start(&toml).await;
    let got = send(
        shellac.addr,
        "GET",
        "/",
        &[
            ("host", "www.example"),
            ("x-forwarded-host", "admin.example"),
        ],
    )
    .await;
    assert_eq!(got.text(), "public");
    assert_eq!(admin.requests(), 0);
    shellac.stop().await;
}

#[tokio::test]
async fn reflected_unkeyed_header_with_vary_does_not_reach_other_clients() {
    // The defence for an origin that does use X-Forwarded-Host: it says so
    // with Vary, and the poisoned copy only serves requests that send it.
    let origin = Origin::start(|seen| async move {
        let xfh = seen
            .headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("www.example")
            .to_string();
        Reply::ok(format!("<script src=\"//{xfh}/app.js\">"))
            .header("cache-control", "max-age=60")
            .header("vary", "X-Forwarded-Host")
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let poisoned = send(
        shellac.addr,
        "GET",
        "/",
        &[("x-forwarded-host", "evil.example")],
    )
    .await;
    assert!(poisoned.text().contains("evil.example"));
    let victim = get(shellac.addr, "/").await;
    assert!(!victim.text().contains("evil"), "{}", victim.text());
    let victim_again = get(shellac.addr, "/").await;
    assert_eq!(victim_again.header("x-cache"), Some("HIT"));
    assert!(!victim_again.text().contains("evil"));
    shellac.stop().await;
}

#[tokio::test]
async fn cacheable_error_responses_are_not_stored_cpdos() {
    // CPDoS (Nguyen et al., 2019): make the origin fail for one request
    // (an oversized header: HHO; a meta character: HMC) and have the cache
    // keep the error for everyone. Errors are not stored, whatever their
    // Cache-Control, so the next client gets the page.
    for status in [400u16, 413, 414, 431, 500, 502, 503, 504] {
        let origin = Origin::start(move |seen| async move {
            if seen.headers.contains_key("x-oversized") {
                Reply::ok("error")
                    .status(status)
                    .header("cache-control", "public, max-age=3600")
            } else {
                Reply::ok("page").header("cache-control", "max-age=60")
            }
        })
        .await;
        let shellac = Shellac::start(&config(origin.addr, "")).await;
        let attack = send(shellac.addr, "GET", "/p", &[("x-oversized", "x")]).await;
        assert_eq!(attack.status, status);
        let victim = get(shellac.addr, "/p").await;
        assert_eq!(victim.status, 200, "{status} was stored");
        assert_eq!(victim.text(), "page");
        shellac.stop().await;
    }
}

#[tokio::test]
async fn fat_get_is_passed_and_never_stored() {
    let origin = reflecting_origin().await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let clean = get(shellac.addr, "/f").await;
    assert_eq!(clean.header("x-cache"), Some("MISS"));
    // A GET with a body: forwarded with its body, answered by the origin,
    // and neither served from nor written to the cache.
    let fat = exchange(
        shellac.addr,
        b"GET /f HTTP/1.1\r\nHost: test.example\r\nContent-Length: 9\r\nConnection: close\r\n\r\ncallback=",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(fat.status(), Some(200), "{}", fat.text);
    assert!(fat.text.contains("body=callback="), "{}", fat.text);
    assert!(
        fat.text.to_ascii_lowercase().contains("x-cache: pass"),
        "{}",
        fat.text
    );
    let after = get(shellac.addr, "/f").await;
    assert_eq!(after.header("x-cache"), Some("HIT"));
    assert!(after.text().ends_with("body="), "{}", after.text());
    assert_eq!(origin.requests(), 2);
    shellac.stop().await;
}

#[tokio::test]
async fn paths_are_keyed_byte_for_byte_as_forwarded() {
    let origin = reflecting_origin().await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    get(shellac.addr, "/b").await;
    for path in [
        "/a/../b",
        "/./b",
        "//b",
        "/a%2Fb",
        "/%62",
        "/b?",
        "/b?x=1;y=2",
        "/B",
    ] {
        let got = get(shellac.addr, path).await;
        assert_eq!(
            got.header("x-cache"),
            Some("MISS"),
            "{path} shared /b's object"
        );
        assert!(
            got.text().contains(&format!("path={path} ")),
            "{path}: {}",
            got.text()
        );
    }
    let seen: Vec<String> = origin.seen().iter().map(|s| s.target.clone()).collect();
    assert!(seen.contains(&"/a/../b".to_string()), "{seen:?}");
    assert!(seen.contains(&"/a%2Fb".to_string()), "{seen:?}");
    shellac.stop().await;
}

#[tokio::test]
async fn head_miss_is_not_stored_for_get() {
    let origin = Origin::start(|seen| async move {
        if seen.method == "HEAD" {
            Reply::ok("").header("cache-control", "max-age=60")
        } else {
            Reply::ok("full body").header("cache-control", "max-age=60")
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let head = send(shellac.addr, "HEAD", "/h", &[]).await;
    assert_eq!(head.status, 200);
    let got = get(shellac.addr, "/h").await;
    assert_eq!(
        got.text(),
        "full body",
        "a HEAD response was served to a GET"
    );
    let again = get(shellac.addr, "/h").await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(again.text(), "full body");
    shellac.stop().await;
}

#[tokio::test]
async fn range_request_cannot_store_a_partial_object() {
    // An origin that answers with a 206 part even when asked for the whole:
    // the part is passed on, never stored as the object.
    let origin = Origin::fixed(
        Reply::ok("ab")
            .status(206)
            .header("content-range", "bytes 0-1/10")
            .header("cache-control", "max-age=60"),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    send(shellac.addr, "GET", "/r", &[("range", "bytes=0-1")]).await;
    let whole = get(shellac.addr, "/r").await;
    assert_ne!(whole.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 2);
    shellac.stop().await;
}

#[tokio::test]
async fn range_miss_fills_the_whole_object() {
    let origin = Origin::start(|seen| async move {
        assert!(
            !seen.headers.contains_key("range"),
            "Range reached the origin on a fill"
        );
        Reply::ok("0123456789").header("cache-control", "max-age=60")
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let part = send(shellac.addr, "GET", "/r", &[("range", "bytes=2-4")]).await;
    // On a miss the whole representation may be sent (RFC 9110 §14.2
    // lets a server ignore Range); what matters is what gets stored.
    assert!(
        (part.status == 206 && part.text() == "234")
            || (part.status == 200 && part.text() == "0123456789"),
        "{} {}",
        part.status,
        part.text()
    );
    let whole = get(shellac.addr, "/r").await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.text(), "0123456789");
    assert_eq!(whole.header("x-cache"), Some("HIT"));
    shellac.stop().await;
}

#[tokio::test]
async fn method_override_does_not_make_get_unsafe_or_uncacheable() {
    // Shellac judges the request by its real method: a GET with
    // X-HTTP-Method-Override: POST neither invalidates nor passes.
    let origin = Origin::fixed(Reply::ok("page").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    get(shellac.addr, "/m").await;
    let overridden = send(
        shellac.addr,
        "GET",
        "/m",
        &[("x-http-method-override", "POST")],
    )
    .await;
    assert_eq!(overridden.header("x-cache"), Some("HIT"));
    assert_eq!(get(shellac.addr, "/m").await.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 1);
    shellac.stop().await;
}
