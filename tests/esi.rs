//! ESI through real sockets: a page assembled from includes in document
//! order and streamed (the template's text before a slow fragment), each
//! include cached on its own (a 60 s fragment hit, a 1 s one refetched),
//! nesting up to `[esi] max_depth` and not beyond, `<esi:remove>` and
//! `<!--esi`, failed includes, `Surrogate-Control` activation, types
//! that are not parsed, malformed documents, and a template stored gzip.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::origin::Seen;
use support::{config, get, send, try_send, Origin, Reply, Shellac};
use tokio::net::TcpStream;

const ESI_RULE: &str = "[[rule]]\npath_prefix = \"/\"\nesi = true\n";

fn html(body: impl Into<Bytes>, max_age: u32) -> Reply {
    Reply::ok(body)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", format!("max-age={max_age}"))
}

/// How many requests the origin got for `path`.
fn count(origin: &Origin, path: &str) -> usize {
    origin.seen().iter().filter(|s| s.target == path).count()
}

#[tokio::test]
async fn two_includes_are_assembled_streamed_and_cached_each_on_its_own() {
    let short = Arc::new(AtomicUsize::new(0));
    let shorts = short.clone();
    let origin = Origin::start(move |seen: Seen| {
        let short = shorts.clone();
        async move {
            match seen.target.as_str() {
                "/page" => html(
                    "<html>HEAD<esi:include src=\"/long\"/>MID<esi:include src=\"/short\"/>END",
                    60,
                )
                .header("etag", "\"template\"")
                .header("last-modified", "Wed, 01 Jan 2025 00:00:00 GMT"),
                "/long" => html("LONG", 60).delay(Duration::from_millis(1500)),
                "/short" => {
                    let n = short.fetch_add(1, Ordering::SeqCst) + 1;
                    html(format!("SHORT-{n}"), 1)
                }
                _ => Reply::ok("?").status(404),
            }
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, ESI_RULE)).await;

    // The template's text before the first include arrives while the slow
    // fragment is still being fetched.
    let started = Instant::now();
    let (head, mut body) = open(shellac.addr, "/page").await;
    let first = next_chunk(&mut body).await;
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "first bytes after {:?}",
        started.elapsed()
    );
    assert_eq!(first, "<html>HEAD");
    let mut rest = String::new();
    while let Some(chunk) = body.frame().await {
        if let Ok(data) = chunk.expect("body").into_data() {
            rest.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(format!("{first}{rest}"), "<html>HEADLONGMIDSHORT-1END");
    assert!(head.headers.get("content-length").is_none(), "{head:?}");
    assert!(head.headers.get("etag").is_none(), "{head:?}");
    assert!(head.headers.get("last-modified").is_none(), "{head:?}");
    assert!(head.headers.get("accept-ranges").is_none(), "{head:?}");
    assert_eq!(
        head.headers
            .get("transfer-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("chunked")
    );

    // Again: the template and the 60 s fragment come from the cache.
    let again = get(shellac.addr, "/page").await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert!(
        again.text().starts_with("<html>HEADLONGMID"),
        "{}",
        again.text()
    );
    assert_eq!((count(&origin, "/page"), count(&origin, "/long")), (1, 1));

    // Once the 1 s fragment expired it is fetched again; the rest is not.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(shellac.addr, "/page").await;
        if got.text().contains("SHORT-2") {
            assert_eq!(got.text(), "<html>HEADLONGMIDSHORT-2END");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 1 s fragment was never refetched"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((count(&origin, "/page"), count(&origin, "/long")), (1, 1));
    assert!(count(&origin, "/short") >= 2);
    shellac.stop().await;
}

#[tokio::test]
async fn includes_nest_to_max_depth_and_not_beyond() {
    let origin = Origin::start(|seen: Seen| async move {
        let n: u32 = seen.target.trim_start_matches("/n").parse().unwrap_or(99);
        html(format!("{n}<esi:include src=\"/n{}\"/>.", n + 1), 60)
    })
    .await;
    let extra = format!("[esi]\nmax_depth = 2\n{ESI_RULE}");
    let shellac = Shellac::start(&config(origin.addr, &extra)).await;
    let got = get(shellac.addr, "/n0").await;
    // /n0 is depth 0, /n1 depth 1, /n2 depth 2; /n3 would be depth 3.
    assert_eq!(got.text(), "012...");
    assert_eq!(count(&origin, "/n3"), 0);
    assert_eq!(origin.requests(), 3);
    shellac.stop().await;

    // The default, 5, as Varnish's max_esi_depth.
    let shellac = Shellac::start(&config(origin.addr, ESI_RULE)).await;
    let got = get(shellac.addr, "/n0").await;
    assert_eq!(got.text(), "012345......");
    assert_eq!(count(&origin, "/n6"), 0);
    shellac.stop().await;
}

#[tokio::test]
async fn esi_remove_and_esi_comments() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.target.as_str() {
            "/page" => html(
                "a<esi:remove><a href=\"/f\">no ESI</a></esi:remove>b<!--esi<esi:include src=\"f\"/>-->c<!-- kept -->",
                60,
            ),
            "/f" => html("F", 60),
            _ => Reply::ok("?").status(404),
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, ESI_RULE)).await;
    let got = get(shellac.addr, "/page").await;
    assert_eq!(got.text(), "abFc<!-- kept -->");
    shellac.stop().await;
}

#[tokio::test]
async fn a_failed_include_inserts_nothing() {
    let refused = Origin::refusing().await;
    let origin = Origin::start(|seen: Seen| async move {
        match seen.target.as_str() {
            "/page" => html(
                "a<esi:include src=\"/500\"/>b<esi:include src=\"/down/x\"/>c<esi:include src=\"http://elsewhere.example/x\"/>d<esi:include src=\"/ok\" onerror=\"continue\"/>",
                60,
            ),
            "/abort" => html("a<esi:include src=\"/500\" onerror=\"abort\"/>after", 60),
            "/500" => Reply::ok("ERROR PAGE").status(500),
            "/ok" => html("OK", 60),
            _ => Reply::ok("?").status(404),
        }
    })
    .await;
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{ESI_RULE}[[backend]]\nname = \"down\"\naddress = \"{refused}\"\n\
         [[pool]]\nname = \"down\"\nbackends = [\"down\"]\n\
         [[pool]]\nname = \"default\"\nbackends = [\"origin\"]\n\
         [[route]]\npath_prefix = \"/down\"\npool = \"down\"\n"
    );
    let shellac = Shellac::start(&config(origin.addr, &extra)).await;
    let got = get(shellac.addr, "/page").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "abcdOK");
    assert_eq!(count(&origin, "/500"), 1);
    // Three includes inserted nothing (500, refused, another host) out of
    // four; the page is one request, its includes none of their own.
    let admin = shellac.admin.expect("admin");
    let host = admin.to_string();
    let metrics = send(admin, "GET", "/metrics", &[("host", &host)])
        .await
        .text();
    assert_eq!(
        sample(&metrics, "shellac_esi_includes_total"),
        4.0,
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "shellac_esi_include_errors_total"), 3.0);
    let requests: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("shellac_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(requests, 1.0, "{metrics}");

    // onerror="abort": the page stops at the failed include.
    let aborted = try_send(shellac.addr, "GET", "/abort", &[]).await;
    let body = aborted.as_ref().map(|g| g.text());
    assert!(
        aborted.is_err() || !body.as_deref().unwrap_or("").contains("after"),
        "{body:?}"
    );
    shellac.stop().await;
}

#[tokio::test]
async fn surrogate_control_asks_for_esi_and_is_removed() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.target.as_str() {
            "/asks" => html("x<esi:include src=\"/f\"/>y", 60)
                .header("surrogate-control", "content=\"ESI/1.0\""),
            "/plain" => html("x<esi:include src=\"/f\"/>y", 60),
            "/f" => html("F", 60),
            _ => Reply::ok("?").status(404),
        }
    })
    .await;
    // No rule: only the backend's header asks.
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    for _ in 0..2 {
        let got = get(shellac.addr, "/asks").await;
        assert_eq!(got.text(), "xFy");
        assert!(got.header("surrogate-control").is_none());
        assert!(got.header("content-length").is_none());
    }
    let got = get(shellac.addr, "/plain").await;
    assert_eq!(got.text(), "x<esi:include src=\"/f\"/>y");
    shellac.stop().await;
}

#[tokio::test]
async fn a_surrogate_control_template_is_never_a_range_or_304_of_its_raw_bytes() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.target.as_str() {
            "/asks" => html("x<esi:include src=\"/f\"/>y", 60)
                .header("surrogate-control", "content=\"ESI/1.0\"")
                .header("etag", "\"template\""),
            "/f" => html("F", 60),
            _ => Reply::ok("?").status(404),
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    assert_eq!(get(shellac.addr, "/asks").await.text(), "xFy");
    // On the stored template: a range and the template's own validator
    // describe its raw bytes, so the page is answered whole, assembled.
    for (name, value) in [("range", "bytes=0-4"), ("if-none-match", "\"template\"")] {
        let got = send(shellac.addr, "GET", "/asks", &[(name, value)]).await;
        assert_eq!(got.status.as_u16(), 200, "{name}");
        assert_eq!(got.text(), "xFy", "{name}");
        assert!(got.header("content-range").is_none(), "{name}");
        assert!(got.header("etag").is_none(), "{name}");
    }
    shellac.stop().await;
}

#[tokio::test]
async fn only_the_configured_types_are_parsed() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.target.as_str() {
            "/text" => Reply::ok("x<esi:include src=\"/f\"/>y")
                .header("content-type", "text/plain")
                .header("cache-control", "max-age=60"),
            "/f" => html("F", 60),
            _ => Reply::ok("?").status(404),
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, ESI_RULE)).await;
    let got = get(shellac.addr, "/text").await;
    assert_eq!(got.text(), "x<esi:include src=\"/f\"/>y");
    assert_eq!(got.header("content-length"), Some("25"));
    assert_eq!(count(&origin, "/f"), 0);
    shellac.stop().await;
}

#[tokio::test]
async fn a_malformed_document_goes_out_without_the_broken_tag() {
    let origin = Origin::start(|seen: Seen| async move {
        match seen.target.as_str() {
            "/open" => html("before<esi:include src=\"/f\"", 60),
            "/bad" => html(
                "a<esi:include/>b<esi:nonsense x>c</esi:include>d<esi:remove>gone",
                60,
            ),
            "/f" => html("F", 60),
            _ => Reply::ok("?").status(404),
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, ESI_RULE)).await;
    assert_eq!(get(shellac.addr, "/open").await.text(), "before");
    assert_eq!(get(shellac.addr, "/bad").await.text(), "abcd");
    assert_eq!(count(&origin, "/f"), 0);
    shellac.stop().await;
}

#[tokio::test]
async fn a_template_stored_gzip_is_assembled_in_identity() {
    let filler = "<p>a page long enough to be stored gzip</p>\n".repeat(60);
    let page = format!("{filler}<esi:include src=\"/f\"/>{filler}");
    let expected = format!("{filler}FRAGMENT{filler}");
    let origin = Origin::start(move |seen: Seen| {
        let page = page.clone();
        async move {
            match seen.target.as_str() {
                "/page" => html(page, 60),
                "/f" => html("FRAGMENT", 60),
                _ => Reply::ok("?").status(404),
            }
        }
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, ESI_RULE)).await;
    for (i, encoding) in ["gzip, br", "gzip", "br", "identity"].iter().enumerate() {
        let got = send(
            shellac.addr,
            "GET",
            "/page",
            &[("accept-encoding", *encoding)],
        )
        .await;
        assert!(
            got.header("content-encoding").is_none(),
            "{encoding}: {got:?}"
        );
        assert_eq!(got.text(), expected, "{encoding}");
        if i > 0 {
            assert_eq!(got.header("x-cache"), Some("HIT"), "{encoding}");
        }
    }
    assert_eq!(count(&origin, "/page"), 1);
    shellac.stop().await;
}

/// The value of one metric sample.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Opens `path` and returns the head and the body still streaming.
async fn open(addr: SocketAddr, path: &str) -> (http::response::Parts, hyper::body::Incoming) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", "test.example")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("head in time")
        .expect("response");
    response.into_parts()
}

/// The next data frame of `body`, as text.
async fn next_chunk(body: &mut hyper::body::Incoming) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame in time")
            .expect("not the end")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            return String::from_utf8_lossy(&data).into_owned();
        }
    }
}
