//! Content codings (RFC 9110 §8.4): which one a client prefers, from its
//! `Accept-Encoding`, and the whole-body gzip and brotli codecs the cache
//! uses once per stored object (on a blocking thread, never on the request
//! path). The streaming gunzip that decodes for identity clients wraps a
//! body and lives with the other body wrappers (`body::gunzip`).
//!
//! A leaf: it knows nothing of requests, the cache or the configuration.

use std::io::{Read, Write};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

/// A coding Shellac can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// The body as it is.
    Identity,
    /// `gzip` (RFC 1952).
    Gzip,
    /// `br` (RFC 7932).
    Br,
}

/// The coding a client with request headers `request` gets, of those
/// Shellac has (`br` only when `br_available`): the highest `q` among
/// `br` and `gzip` (`x-gzip` counts as `gzip`; `*` stands for a coding not
/// named; `q=0` refuses), `br` on a tie; identity when neither is
/// acceptable or identity has a strictly higher `q`. No `Accept-Encoding`
/// at all is identity: RFC 9110 §12.5.3 allows any coding then, but
/// Varnish, nginx and every browser-era client expect the plain body.
pub fn preferred(request: &HeaderMap, br_available: bool) -> Coding {
    let (mut gzip, mut br, mut identity, mut star) = (None, None, None, None);
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut params = item.split(';');
            let name = params.next().unwrap_or("").trim();
            let q = params
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1000, |(_, v)| qvalue(v.trim()));
            let slot = if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if name.eq_ignore_ascii_case("br") {
                &mut br
            } else if name.eq_ignore_ascii_case("identity") {
                &mut identity
            } else if name == "*" {
                &mut star
            } else {
                continue;
            };
            *slot = Some(q);
        }
    }
    let gzip = gzip.or(star).unwrap_or(0);
    let br = if br_available {
        br.or(star).unwrap_or(0)
    } else {
        0
    };
    let identity = identity.or(star).unwrap_or(1000);
    let (coding, q) = if br >= gzip {
        (Coding::Br, br)
    } else {
        (Coding::Gzip, gzip)
    };
    if q == 0 || identity > q {
        Coding::Identity
    } else {
        coding
    }
}

/// A `qvalue` in thousandths (RFC 9110 §12.4.2); malformed counts as 0,
/// refusing rather than guessing.
fn qvalue(text: &str) -> u16 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    match whole {
        "1" => 1000,
        "0" => {
            let mut thousandths = 0u16;
            for (i, digit) in fraction.bytes().take(3).enumerate() {
                if !digit.is_ascii_digit() {
                    return 0;
                }
                thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
            }
            thousandths
        }
        _ => 0,
    }
}

/// The weak form of an entity tag (`W/"…"`): a transformed
/// representation's bytes differ from the original's, so it may only
/// claim weak equivalence (RFC 9110 §8.8.3).
pub fn weakened(etag: &HeaderValue) -> HeaderValue {
    if etag.as_bytes().starts_with(b"W/") {
        return etag.clone();
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    HeaderValue::from_bytes(&weak).unwrap_or_else(|_| etag.clone())
}

/// `body` gzipped at `level` (0–9), or none when that would not make it
/// smaller: compression never grows a response.
pub fn gzip(body: &[u8], level: u32) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::new(level.min(9)),
    );
    encoder.write_all(body).ok()?;
    let out = encoder.finish().ok()?;
    (out.len() < body.len()).then(|| Bytes::from(out))
}

/// `body` in brotli at `quality`, or none when that would not make it
/// smaller than `than` bytes.
pub fn brotli(body: &[u8], quality: u32, than: usize) -> Option<Bytes> {
    // lgwin 22: brotli's default window (4 MiB).
    let mut encoder =
        brotli::CompressorWriter::new(Vec::with_capacity(body.len() / 3), 4096, quality, 22);
    encoder.write_all(body).ok()?;
    // Ends the stream (writing into a `Vec` cannot fail).
    let out = encoder.into_inner();
    (out.len() < than).then(|| Bytes::from(out))
}

/// The whole of a gzip `body`, decoded, up to `max` bytes (a gzip bomb
/// stops there); none when it is not valid gzip or decodes to more.
pub fn gunzip(body: &[u8], max: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(body).take(max.saturating_add(1));
    decoder.read_to_end(&mut out).ok()?;
    (out.len() as u64 <= max).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(ae: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(ae).unwrap());
        headers
    }

    #[test]
    fn browsers_and_q_values() {
        assert_eq!(
            preferred(&with("gzip, deflate, br, zstd"), true),
            Coding::Br
        );
        assert_eq!(
            preferred(&with("gzip, deflate, br, zstd"), false),
            Coding::Gzip
        );
        assert_eq!(preferred(&with("gzip, deflate"), true), Coding::Gzip);
        assert_eq!(
            preferred(&with("br;q=1.0, gzip;q=0.8, *;q=0.1"), true),
            Coding::Br
        );
        assert_eq!(preferred(&with("br;q=0.5, gzip"), true), Coding::Gzip);
        assert_eq!(preferred(&with("identity"), true), Coding::Identity);
        assert_eq!(preferred(&HeaderMap::new(), true), Coding::Identity);
        assert_eq!(preferred(&with("gzip;q=0, br;q=0"), true), Coding::Identity);
        assert_eq!(preferred(&with("*"), true), Coding::Br);
        assert_eq!(
            preferred(&with("*;q=0.5, identity"), true),
            Coding::Identity
        );
        assert_eq!(
            preferred(&with("gzip;q=0.5, identity;q=0.1"), true),
            Coding::Gzip
        );
        assert_eq!(preferred(&with("X-GZIP"), true), Coding::Gzip);
        assert_eq!(preferred(&with("gzip;q=bogus"), true), Coding::Identity);
    }

    #[test]
    fn codecs_round_trip_and_never_grow() {
        let text = "hello shellac ".repeat(200);
        let gz = gzip(text.as_bytes(), 6).expect("smaller");
        assert_eq!(gunzip(&gz, 1 << 20).unwrap(), text.as_bytes());
        assert!(gunzip(&gz, 10).is_none(), "the bound holds");
        assert!(brotli(text.as_bytes(), 5, gz.len()).is_some());
        assert!(gzip(b"abc", 6).is_none());
    }
}
