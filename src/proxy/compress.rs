//! Compression the Varnish way (`[compression] gzip_support`, Varnish's
//! `http_gzip_support`): the backend is asked for gzip on every lookup, a
//! compressible answer is kept as one gzip object (`cache::encoded`), and
//! each client gets the representation it accepts — the gzip bytes as
//! stored, the `br` copy made beside them, or the body decoded while it
//! streams (`body::gunzip`). `Accept-Encoding` then splits no `Vary`
//! variants (`Cache::set_gzip_support`). A pass is left alone: the client's
//! own `Accept-Encoding` goes to the backend and its answer comes back as
//! it is. docs/caching.md, "Compression", has the choices and why.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{Method, StatusCode};

use super::Proxy;
use crate::body::gunzip::Gunzip;
use crate::body::Body;
pub(super) use crate::cache::encoded::add_vary;
use crate::cache::encoded::{is_gzip, Compress};
use crate::cache::policy::{CacheControl, RequestMode};
use crate::cache::CachedObject;
use crate::config::defaults;
use crate::config::CompressionConfig;
use crate::encoding::{self, Coding};

/// Which representation of a stored object a client gets.
pub(super) enum Representation<'a> {
    /// The stored bytes: identity, or gzip for a client that takes gzip.
    Stored,
    /// The `br` copy.
    Br(&'a Bytes),
    /// The gzip body decoded, `len` bytes when known.
    Decoded { len: Option<u64> },
}

impl Representation<'_> {
    /// The representation of a stored `object` for a client with request
    /// headers `request`. Costs a header lookup on an object that is not
    /// gzip, and an `Accept-Encoding` scan (no allocation) on one that is.
    pub(super) fn of<'a>(
        config: &CompressionConfig,
        request: &HeaderMap,
        object: &'a CachedObject,
    ) -> Representation<'a> {
        let encoded = object.encoded.as_deref();
        // An object gzipped under `gzip_support` stays decodable after a
        // reload turned it off (it may be stored without its variants).
        if !(config.gzip_support || encoded.is_some()) || !is_gzip(&object.headers) {
            return Representation::Stored;
        }
        let br = encoded
            .and_then(|e| e.br.as_ref())
            .filter(|_| config.brotli);
        match encoding::preferred(request, br.is_some()) {
            Coding::Gzip => Representation::Stored,
            Coding::Br => br.map_or(Representation::Stored, Representation::Br),
            Coding::Identity => Representation::Decoded {
                len: encoded.and_then(|e| e.identity_len),
            },
        }
    }

    /// Rewrites a copy of the stored headers into this representation's:
    /// `Content-Encoding`, `Content-Length` (absent when not known) and a
    /// weak `ETag` where the bytes are not the backend's.
    pub(super) fn describe(&self, headers: &mut HeaderMap, object: &CachedObject) {
        match self {
            Representation::Stored => {}
            Representation::Br(br) => {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(br.len()));
                weaken_etag(headers);
            }
            Representation::Decoded { len } => {
                headers.remove(header::CONTENT_ENCODING);
                match len {
                    Some(len) => {
                        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(*len));
                    }
                    None => {
                        headers.remove(header::CONTENT_LENGTH);
                    }
                }
                match object
                    .encoded
                    .as_ref()
                    .and_then(|e| e.identity_etag.as_ref())
                {
                    Some(etag) => {
                        headers.insert(header::ETAG, etag.clone());
                    }
                    None => weaken_etag(headers),
                }
            }
        }
    }

    /// The bytes this representation is sent from, and its length when
    /// known: `None` for a decoded body (it is made while it streams).
    pub(super) fn bytes<'a>(&'a self, object: &'a CachedObject) -> Option<&'a Bytes> {
        match self {
            Representation::Stored => Some(&object.body),
            Representation::Br(br) => Some(br),
            Representation::Decoded { .. } => None,
        }
    }
}

fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG) {
        let weak = encoding::weakened(etag);
        headers.insert(header::ETAG, weak);
    }
}

/// A gzip body decoded as it streams; `len` when known.
pub(super) fn decoded(body: Body, len: Option<u64>) -> Body {
    Body::Gunzip(Box::new(Gunzip::new(body, len)))
}

/// The backend's `Accept-Encoding` for a request that may use the cache:
/// `gzip`, whatever the client sent (the object serves every client). A
/// pass keeps the client's; so does a request with a `Range` (a range of
/// gzip bytes is no range of the client's representation).
pub(super) fn backend_accept_encoding(
    config: &CompressionConfig,
    mode: RequestMode,
    parts: &mut Parts,
) {
    if config.gzip_support
        && mode == RequestMode::Lookup
        && matches!(parts.method, Method::GET | Method::HEAD)
        && !parts.headers.contains_key(header::RANGE)
    {
        parts
            .headers
            .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    }
}

impl Proxy {
    /// How a fetched response that is going to be stored is kept: gzipped
    /// when it is a compressible identity 200 without `no-transform`
    /// (`min_size` is checked on the whole body), indexed (its identity
    /// length and `br` copy) when the backend sent gzip; else as it came.
    pub(super) fn compress_plan(&self, head: &ResponseParts, max_size: u64) -> Option<Compress> {
        let c = &self.config.compression;
        if !c.gzip_support || head.status != StatusCode::OK {
            return None;
        }
        if CacheControl::from_headers(&head.headers).no_transform {
            return None;
        }
        let plan = Compress {
            gzip_level: c.gzip_level,
            brotli_quality: c.brotli.then_some(defaults::BROTLI_QUALITY),
            min_size: c.min_size,
            max_size,
        };
        match head.headers.get(header::CONTENT_ENCODING) {
            Some(_) if is_gzip(&head.headers) => Some(plan),
            Some(v) if !v.as_bytes().eq_ignore_ascii_case(b"identity") => None,
            _ => {
                let compressible = head
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| c.compressible(t));
                let declared = super::deliver::content_length(&head.headers);
                (compressible && declared.is_none_or(|len| len >= c.min_size)).then_some(plan)
            }
        }
    }

    /// Whether a fetched response must be decoded for its client: a gzip
    /// 200 (or 304) to a lookup whose client does not take gzip (the
    /// backend was asked for gzip on its behalf).
    pub(super) fn must_decode(
        &self,
        mode: RequestMode,
        client: &HeaderMap,
        head: &ResponseParts,
    ) -> bool {
        self.config.compression.gzip_support
            && mode == RequestMode::Lookup
            && matches!(head.status, StatusCode::OK | StatusCode::NOT_MODIFIED)
            && is_gzip(&head.headers)
            && encoding::preferred(client, false) != Coding::Gzip
    }
}

/// A fetched gzip response as its decoded form when `decode`
/// ([`Proxy::must_decode`]): no `Content-Encoding`, no `Content-Length`
/// (not known before the end), a weak `ETag`, the body decoded as it
/// streams. Else `body` as it is.
pub(super) fn decode_for_client(decode: bool, headers: &mut HeaderMap, body: Body) -> Body {
    if !decode {
        return body;
    }
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    weaken_etag(headers);
    decoded(body, None)
}
