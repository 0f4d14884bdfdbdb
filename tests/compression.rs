//! `[compression]` through real sockets: what gzip, br and identity
//! clients get from one stored object (`gzip_support`, Varnish's
//! `http_gzip_support`), what the backend is asked for, what is left alone
//! (`no-transform`, small bodies, images, passes), conditions and ranges
//! on the representation a client receives, `gzip_support = false` as
//! before, and the configuration errors.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use support::{config, send, Got, Origin, Reply, Shellac};

/// A 5,000-byte HTML page (the issue's example).
fn page() -> String {
    let line = "<p>Shellac caches this page, and compresses it once.</p>\n";
    let mut page = line.repeat(5000 / line.len() + 1);
    page.truncate(5000);
    page
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .expect("valid br");
    out
}

/// The body a client gets, decoded as its `Content-Encoding` says.
fn decoded(got: &Got) -> Vec<u8> {
    match got.header("content-encoding") {
        None => got.body.to_vec(),
        Some("gzip") => gunzip(&got.body),
        Some("br") => unbrotli(&got.body),
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
}

/// The `Accept-Encoding` the origin saw on its `n`th request.
fn ae_seen(origin: &Origin, n: usize) -> Option<String> {
    origin.seen()[n]
        .headers
        .get("accept-encoding")
        .map(|v| v.to_str().expect("ascii").to_string())
}

const GZIP: &[(&str, &str)] = &[("accept-encoding", "gzip, deflate")];
const BR: &[(&str, &str)] = &[("accept-encoding", "gzip, deflate, br, zstd")];
const IDENTITY: &[(&str, &str)] = &[];

/// An origin answering every request with the page, as identity, cacheable.
async fn html_origin(extra: &[(&str, &str)]) -> Origin {
    let mut reply = Reply::ok(page())
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "max-age=60")
        .header("etag", "\"v1\"");
    for (name, value) in extra {
        reply = reply.header(name, *value);
    }
    Origin::fixed(reply).await
}

/// Asks until the object is stored (its first answer is a miss).
async fn stored(shellac: &Shellac, path: &str) {
    for _ in 0..100 {
        let got = send(shellac.addr, "GET", path, GZIP).await;
        if got.header("x-cache") == Some("HIT") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never became a hit");
}

#[tokio::test]
async fn five_browser_accept_encodings_share_one_fetch_and_one_object() {
    let origin = html_origin(&[("vary", "Accept-Encoding")]).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let browsers: &[(&str, Option<&str>, Option<&str>)] = &[
        (
            "gzip, deflate, br, zstd",
            Some("gzip, deflate, br, zstd"),
            Some("br"),
        ),
        ("gzip, deflate, br", Some("gzip, deflate, br"), Some("br")),
        ("gzip, deflate", Some("gzip, deflate"), Some("gzip")),
        (
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            Some("br;q=1.0, gzip;q=0.8, *;q=0.1"),
            Some("br"),
        ),
        ("identity", Some("identity"), None),
        ("none", None, None),
    ];
    let mut sizes = Vec::new();
    for round in 0..2 {
        for (label, ae, expected) in browsers {
            let headers: Vec<(&str, &str)> = ae.iter().map(|v| ("accept-encoding", *v)).collect();
            let got = send(shellac.addr, "GET", "/", &headers).await;
            assert_eq!(got.status, 200, "{label}");
            assert_eq!(decoded(&got), page().as_bytes(), "{label}: the page");
            if round == 1 {
                assert_eq!(got.header("x-cache"), Some("HIT"), "{label}");
                assert_eq!(got.header("content-encoding"), *expected, "{label}");
                assert_eq!(
                    got.header("content-length"),
                    Some(got.body.len().to_string().as_str()),
                    "{label}: Content-Length is the representation's"
                );
                assert!(
                    got.header("vary")
                        .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
                    "{label}: Vary: Accept-Encoding"
                );
                sizes.push((label, got.body.len()));
            }
        }
    }
    // One fetch and every second-round answer a hit: no spelling got a
    // variant of its own, all were served from the one stored object.
    assert_eq!(origin.requests(), 1, "one origin fetch for every spelling");
    assert_eq!(ae_seen(&origin, 0).as_deref(), Some("gzip"));
    // The identity clients get the origin's bytes exactly, the others fewer.
    for (label, size) in sizes {
        if label == &"identity" || label == &"none" {
            assert_eq!(size, 5000, "{label}");
        } else {
            assert!(size < 500, "{label}: {size} bytes for a 5,000-byte page");
        }
    }
    shellac.stop().await;
}

#[tokio::test]
async fn a_compressible_identity_answer_is_stored_gzipped_for_every_client() {
    let origin = html_origin(&[]).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let first = send(shellac.addr, "GET", "/page", GZIP).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(decoded(&first), page().as_bytes());
    assert_eq!(
        first.header("vary"),
        Some("Accept-Encoding"),
        "on the miss too"
    );
    assert_eq!(ae_seen(&origin, 0).as_deref(), Some("gzip"));

    let gzip = send(shellac.addr, "GET", "/page", GZIP).await;
    assert_eq!(gzip.header("x-cache"), Some("HIT"));
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert!(gzip.body.len() < 1000, "{} bytes", gzip.body.len());
    assert_eq!(gunzip(&gzip.body), page().as_bytes());
    assert_eq!(
        gzip.header("content-length"),
        Some(gzip.body.len().to_string().as_str())
    );
    assert_eq!(
        gzip.header("etag"),
        Some("W/\"v1\""),
        "a transformed representation"
    );
    assert_eq!(gzip.header("vary"), Some("Accept-Encoding"));

    let br = send(shellac.addr, "GET", "/page", BR).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&br.body), page().as_bytes());
    assert_eq!(
        br.header("content-length"),
        Some(br.body.len().to_string().as_str())
    );
    assert_eq!(br.header("etag"), Some("W/\"v1\""));

    let identity = send(shellac.addr, "GET", "/page", IDENTITY).await;
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(
        identity.body,
        page().as_bytes(),
        "byte-identical to the origin's"
    );
    assert_eq!(identity.header("content-length"), Some("5000"));
    assert_eq!(
        identity.header("etag"),
        Some("\"v1\""),
        "the origin's own bytes"
    );
    assert_eq!(identity.header("vary"), Some("Accept-Encoding"));

    // HEAD gives GET's headers, for each representation.
    for (headers, get) in [(GZIP, &gzip), (BR, &br), (IDENTITY, &identity)] {
        let head = send(shellac.addr, "HEAD", "/page", headers).await;
        assert!(head.body.is_empty());
        for name in ["content-encoding", "content-length", "etag", "vary"] {
            assert_eq!(head.header(name), get.header(name), "HEAD {name}");
        }
    }

    // Conditions compare weakly: either tag gives a 304 to any client.
    for (headers, tag) in [(GZIP, "W/\"v1\""), (IDENTITY, "\"v1\""), (BR, "W/\"v1\"")] {
        let mut headers = headers.to_vec();
        headers.push(("if-none-match", tag));
        let got = send(shellac.addr, "GET", "/page", &headers).await;
        assert_eq!(got.status, 304, "If-None-Match: {tag}");
        assert!(got.body.is_empty());
    }
    assert_eq!(origin.requests(), 1);
    shellac.stop().await;
}

#[tokio::test]
async fn a_backend_gzip_answer_is_stored_as_is_and_decoded_for_identity_clients() {
    let gzipped = gzip(page().as_bytes());
    let origin = Origin::fixed(
        Reply::ok(gzipped.clone())
            .header("content-type", "text/html")
            .header("content-encoding", "gzip")
            .header("cache-control", "max-age=60")
            .header("etag", "\"g1\""),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    // The miss itself, for a client that cannot take gzip.
    let first = send(shellac.addr, "GET", "/g", IDENTITY).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("content-encoding"), None);
    assert_eq!(first.body, page().as_bytes());
    assert_eq!(first.header("etag"), Some("W/\"g1\""));

    let gzip = send(shellac.addr, "GET", "/g", GZIP).await;
    assert_eq!(gzip.header("x-cache"), Some("HIT"));
    assert_eq!(gzip.body, gzipped, "the origin's gzip bytes");
    assert_eq!(gzip.header("etag"), Some("\"g1\""));
    let identity = send(shellac.addr, "GET", "/g", IDENTITY).await;
    assert_eq!(identity.header("x-cache"), Some("HIT"));
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.body, page().as_bytes());
    assert_eq!(identity.header("content-length"), Some("5000"));
    assert_eq!(identity.header("etag"), Some("W/\"g1\""));
    let br = send(shellac.addr, "GET", "/g", BR).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&br.body), page().as_bytes());
    assert_eq!(origin.requests(), 1);
    shellac.stop().await;
}

#[tokio::test]
async fn no_transform_small_bodies_and_images_are_left_alone() {
    let origin = Origin::start(|seen| async move {
        let reply = match seen.target.as_str() {
            "/no-transform" => Reply::ok(page())
                .header("content-type", "text/html")
                .header("cache-control", "max-age=60, no-transform"),
            "/small" => Reply::ok(page()[..500].to_string()).header("content-type", "text/html"),
            _ => Reply::ok(page()).header("content-type", "image/png"),
        };
        reply.header("cache-control", "max-age=60")
    })
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    for path in ["/no-transform", "/small", "/image.png"] {
        stored(&shellac, path).await;
        for headers in [GZIP, BR, IDENTITY] {
            let got = send(shellac.addr, "GET", path, headers).await;
            assert_eq!(got.header("x-cache"), Some("HIT"), "{path}");
            assert_eq!(got.header("content-encoding"), None, "{path} {headers:?}");
            let expected = if path == "/small" {
                &page()[..500]
            } else {
                &page()[..]
            };
            assert_eq!(got.body, expected.as_bytes(), "{path}");
        }
    }
    shellac.stop().await;
}

#[tokio::test]
async fn a_range_is_answered_on_the_representation_the_client_receives() {
    let origin = html_origin(&[]).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    stored(&shellac, "/r").await;
    let identity = send(shellac.addr, "GET", "/r", &[("range", "bytes=100-199")]).await;
    assert_eq!(identity.status, 206);
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.header("content-range"), Some("bytes 100-199/5000"));
    assert_eq!(identity.body, page().as_bytes()[100..200]);
    let tail = send(shellac.addr, "GET", "/r", &[("range", "bytes=-10")]).await;
    assert_eq!(tail.body, page().as_bytes()[4990..]);

    let whole = send(shellac.addr, "GET", "/r", GZIP).await;
    let mut headers = GZIP.to_vec();
    headers.push(("range", "bytes=0-9"));
    let gzip = send(shellac.addr, "GET", "/r", &headers).await;
    assert_eq!(gzip.status, 206);
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    let total = whole.body.len();
    assert_eq!(
        gzip.header("content-range"),
        Some(format!("bytes 0-9/{total}").as_str())
    );
    assert_eq!(gzip.body, whole.body[..10]);
    assert_eq!(origin.requests(), 1);
    shellac.stop().await;
}

#[tokio::test]
async fn a_large_body_is_compressed_off_the_request_path() {
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let origin = Origin::fixed(
        Reply::ok(big.clone())
            .header("content-type", "text/plain")
            .header("cache-control", "max-age=60"),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let mut compressed = None;
    for _ in 0..100 {
        let got = send(shellac.addr, "GET", "/big", GZIP).await;
        assert_eq!(decoded(&got), big.as_bytes());
        if got.header("content-encoding") == Some("gzip") {
            compressed = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let compressed = compressed.expect("stored gzipped in the end");
    assert!(compressed.body.len() < big.len() / 3);
    let identity = send(shellac.addr, "GET", "/big", IDENTITY).await;
    assert_eq!(identity.body, big.as_bytes());
    assert_eq!(
        identity.header("content-length"),
        Some(big.len().to_string().as_str())
    );
    assert_eq!(origin.requests(), 1);
    shellac.stop().await;
}

#[tokio::test]
async fn a_pass_sends_the_clients_accept_encoding_and_is_left_alone() {
    let origin = html_origin(&[]).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let headers = [
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=1"),
    ];
    let got = send(shellac.addr, "GET", "/private", &headers).await;
    assert_eq!(got.header("x-cache"), Some("PASS"));
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.body, page().as_bytes());
    assert_eq!(ae_seen(&origin, 0).as_deref(), Some("gzip, deflate, br"));
    shellac.stop().await;
}

#[tokio::test]
async fn gzip_support_off_keeps_accept_encoding_variants() {
    let origin = html_origin(&[("vary", "Accept-Encoding")]).await;
    let toml = config(origin.addr, "[compression]\ngzip_support = false\n");
    let shellac = Shellac::start(&toml).await;
    for ae in ["gzip", "br", "gzip", "br"] {
        let got = send(shellac.addr, "GET", "/", &[("accept-encoding", ae)]).await;
        assert_eq!(got.header("content-encoding"), None);
        assert_eq!(got.body, page().as_bytes());
        assert_eq!(got.header("etag"), Some("\"v1\""));
    }
    assert_eq!(origin.requests(), 2, "one fetch per Accept-Encoding value");
    assert_eq!(ae_seen(&origin, 0).as_deref(), Some("gzip"));
    assert_eq!(ae_seen(&origin, 1).as_deref(), Some("br"));
    shellac.stop().await;
}

/// The error `text` gets at load, as `--check` prints it.
fn refused(text: &str) -> String {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"127.0.0.1:9\"\n{text}"
    );
    match shellac::Config::parse(Path::new("shellac.toml"), &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_compression_settings_are_refused_with_file_line_and_key() {
    let level = refused("[compression]\ngzip_level = 12\n");
    assert!(
        level.starts_with("shellac.toml:6: key `compression.gzip_level`"),
        "{level}"
    );
    assert!(level.contains("0 to 9"), "{level}");
    let types = refused("[compression]\nbrotli = true\ntypes = [\"text/*\", \"text html\"]\n");
    assert!(
        types.starts_with("shellac.toml:7: key `compression.types`"),
        "{types}"
    );
    assert!(types.contains("media type"), "{types}");
    let unknown = refused("[compression]\nlevel = 3\n");
    assert!(unknown.contains("level"), "{unknown}");
}

#[tokio::test]
async fn an_unstored_gzip_answer_to_a_lookup_is_decoded_for_identity_clients() {
    let gzipped = gzip(page().as_bytes());
    let origin = Origin::fixed(
        Reply::ok(gzipped.clone())
            .header("content-type", "text/html")
            .header("content-encoding", "gzip")
            .header("cache-control", "private"),
    )
    .await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let identity = send(shellac.addr, "GET", "/p", IDENTITY).await;
    assert_eq!(identity.header("x-cache"), Some("MISS"));
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.body, page().as_bytes());
    assert_eq!(
        ae_seen(&origin, 0).as_deref(),
        Some("gzip"),
        "asked for gzip"
    );
    let gzip = send(shellac.addr, "GET", "/p", GZIP).await;
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(gzip.body, gzipped);
    let head = send(shellac.addr, "HEAD", "/p", IDENTITY).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None);
    assert!(head.body.is_empty());
    shellac.stop().await;
}

#[tokio::test]
async fn a_gzipped_object_is_revalidated_with_the_backends_own_etag() {
    let origin = Origin::start(|seen| async move {
        if seen.headers.contains_key("if-none-match") {
            return Reply::ok("")
                .status(304)
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=1");
        }
        Reply::ok(page())
            .header("content-type", "text/html")
            .header("cache-control", "max-age=1")
            .header("etag", "\"v1\"")
    })
    .await;
    let toml = config(origin.addr, "[cache]\ndefault_keep = \"60s\"\n");
    let shellac = Shellac::start(&toml).await;
    stored(&shellac, "/stale").await;
    // Once stale, a request in grace starts one background revalidation.
    let mut refreshed = false;
    for _ in 0..200 {
        let got = send(shellac.addr, "GET", "/stale", GZIP).await;
        assert_eq!(gunzip(&got.body), page().as_bytes());
        if origin.requests() >= 2 {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refreshed, "never revalidated");
    let seen = origin.seen();
    assert_eq!(
        seen[1].headers["if-none-match"], "\"v1\"",
        "the backend's own tag"
    );
    // The refreshed object is still the one gzip object, its tag weak.
    for _ in 0..100 {
        let got = send(shellac.addr, "GET", "/stale", GZIP).await;
        if got.header("x-cache") == Some("HIT") {
            assert_eq!(got.header("content-encoding"), Some("gzip"));
            assert_eq!(got.header("etag"), Some("W/\"v1\""));
            assert_eq!(gunzip(&got.body), page().as_bytes());
            let identity = send(shellac.addr, "GET", "/stale", IDENTITY).await;
            assert_eq!(identity.header("etag"), Some("\"v1\""));
            assert_eq!(identity.body, page().as_bytes());
            shellac.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the refreshed object was never a hit");
}
