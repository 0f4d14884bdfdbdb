//! Stored objects in gzip (`[compression] gzip_support`): the one object
//! kept per URL is gzip whenever that is smaller, and it carries what the
//! other representations need — the identity length and `ETag` for a
//! client that gets it decoded, and a `br` copy made once beside it.
//!
//! [`Compress::apply`] runs once per stored object, on a blocking thread
//! (`cache::busy`), never on a request's path: compressing a large body
//! takes milliseconds, and a runtime worker spending them would stall
//! every connection it serves.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

use super::object::CachedObject;
use super::vary_names;
use crate::encoding;

/// What the store phase asks of a compressible object once its body is
/// whole.
#[derive(Clone, Copy, Debug)]
pub struct Compress {
    /// `[compression] gzip_level`.
    pub gzip_level: u32,
    /// The quality of the `br` copy; none without `[compression] brotli`.
    pub brotli_quality: Option<u32>,
    /// `[compression] min_size`: smaller bodies stay as they are.
    pub min_size: u64,
    /// The most a backend's gzip body may decode to (`max_object_size`).
    pub max_size: u64,
}

/// The other representations of a stored gzip object.
#[derive(Debug)]
pub struct Encoded {
    /// The decoded body's length, when known.
    pub identity_len: Option<u64>,
    /// The backend's own `ETag` of the identity body, when Shellac did the
    /// compressing (the stored one is weakened); none when the backend sent
    /// gzip, whose decoded form then gets a weakened one.
    pub identity_etag: Option<HeaderValue>,
    /// The same content in brotli, when that is smaller than the gzip.
    pub br: Option<Bytes>,
}

impl Compress {
    /// `object` as it is best kept: an identity body of at least `min_size`
    /// gzipped (unless that does not make it smaller), a backend's gzip
    /// body as it is; either with its identity length and `br` copy noted,
    /// `Vary: Accept-Encoding` added and (when Shellac compressed) the
    /// `ETag` weakened (RFC 9110 §8.8.3: another representation's bytes).
    pub fn apply(&self, object: CachedObject) -> CachedObject {
        if is_gzip(&object.headers) {
            let Some(identity) = encoding::gunzip(&object.body, self.max_size) else {
                return object;
            };
            let br = self
                .brotli_quality
                .and_then(|q| encoding::brotli(&identity, q, object.body.len()));
            let mut headers = object.headers.clone();
            add_vary(&mut headers);
            let encoded = Encoded {
                identity_len: Some(identity.len() as u64),
                identity_etag: None,
                br,
            };
            return object.encoded(headers, object.body.clone(), encoded);
        }
        if (object.body.len() as u64) < self.min_size {
            return object;
        }
        let Some(gzip) = encoding::gzip(&object.body, self.gzip_level) else {
            return object;
        };
        let br = self
            .brotli_quality
            .and_then(|q| encoding::brotli(&object.body, q, gzip.len()));
        let mut headers = object.headers.clone();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(gzip.len()));
        let identity_etag = headers.get(header::ETAG).cloned();
        if let Some(etag) = &identity_etag {
            headers.insert(header::ETAG, encoding::weakened(etag));
        }
        add_vary(&mut headers);
        let encoded = Encoded {
            identity_len: Some(object.body.len() as u64),
            identity_etag,
            br,
        };
        object.encoded(headers, gzip, encoded)
    }
}

/// Whether stored headers say the body is gzip.
pub fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"))
}

/// `Vary: Accept-Encoding`, unless `Vary` names it already or is `*`.
pub fn add_vary(headers: &mut HeaderMap) {
    let star = headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() == b"*");
    if !star && !vary_names(headers).contains(&header::ACCEPT_ENCODING) {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}
