//! Issue 18's pieces together and under a fault: a page cached through a
//! cookie-stripping rule and stored gzip, then its backend dies. Browsers
//! with analytics cookies keep getting it from grace, each in the encoding
//! it accepts, byte for byte the backend's page, and never a 503.

mod support;

use std::io::Read;
use std::time::Duration;

use support::{config, send, Origin, Reply, Shellac};

fn page() -> String {
    "<p>the same paragraph again</p>\n".repeat(160)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[tokio::test]
async fn a_dead_backend_leaves_every_browser_its_page_from_grace_in_its_encoding() {
    let (origin, killer) = Origin::mortal(
        Reply::ok(page())
            .header("content-type", "text/html; charset=utf-8")
            .header("cache-control", "max-age=1")
            .header("set-cookie", "_gid=GA1.2.3; Path=/"),
    )
    .await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[[rule]]\npath_prefix = \"/\"\ncookies = \"strip\"\n",
    ))
    .await;
    let cookie = ("cookie", "_ga=GA1.2.111.222; _fbp=fb.1.2.3");

    let first = send(
        shellac.addr,
        "GET",
        "/landing",
        &[cookie, ("accept-encoding", "gzip, deflate, br, zstd")],
    )
    .await;
    assert_eq!(first.status.as_u16(), 200);
    assert!(first.header("set-cookie").is_none());
    assert_eq!(origin.requests(), 1);

    killer.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Past its freshness, the backend gone: grace, for every kind of client.
    let identity = send(shellac.addr, "GET", "/landing", &[cookie]).await;
    assert_eq!(identity.status.as_u16(), 200);
    assert_eq!(identity.header("x-cache"), Some("HIT-STALE"));
    assert!(identity.header("content-encoding").is_none());
    assert_eq!(identity.body.as_ref(), page().as_bytes());

    let gzip = send(
        shellac.addr,
        "GET",
        "/landing",
        &[cookie, ("accept-encoding", "gzip, deflate")],
    )
    .await;
    assert_eq!(gzip.status.as_u16(), 200);
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert!(gzip.body.len() < page().len());
    assert_eq!(gunzip(&gzip.body), page().as_bytes());

    let br = send(
        shellac.addr,
        "GET",
        "/landing",
        &[cookie, ("accept-encoding", "br;q=1.0, gzip;q=0.8")],
    )
    .await;
    assert_eq!(br.status.as_u16(), 200);
    assert_eq!(br.header("content-encoding"), Some("br"));
    let mut decoded = Vec::new();
    brotli::Decompressor::new(br.body.as_ref(), 4096)
        .read_to_end(&mut decoded)
        .expect("valid br");
    assert_eq!(decoded, page().as_bytes());
    shellac.stop().await;
}
