//! What goes out to the client: a stored object as a 200, 304, 206 or 416
//! (its body shared, never copied), a fetched response with its final
//! headers, and the headers every proxied response gets (`X-Cache`,
//! `Cache-Status` per RFC 9211, `Via`; internal fields removed).

use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::response::Parts as ResponseParts;
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt;

use super::compress::{self, Representation};
use super::esi;
use super::range::{self, RangeAnswer};
use super::{headers, Outcome, Proxy, RequestCtx};
use crate::body::gunzip::Gunzip;
use crate::body::Body;
use crate::cache::policy;
use crate::cache::CachedObject;

impl Proxy {
    /// A response from a stored object: 304 when the client's condition
    /// holds, 206/416 for a range, else the whole object. The body is shared,
    /// not copied.
    pub(super) fn deliver(
        &self,
        parts: &Parts,
        object: &CachedObject,
        now: Instant,
        x_cache: &'static str,
        cache_status: HeaderValue,
    ) -> Response<Body> {
        self.deliver_object(parts, object, None, now, x_cache, cache_status)
    }

    /// [`Proxy::deliver`], its body read from `live` (a busy object's
    /// reader) instead of the stored body when given. The representation
    /// (stored bytes, `br` copy, decoded gzip) is the one the client accepts
    /// (`compress.rs`); conditions and ranges apply to it.
    pub(super) fn deliver_object(
        &self,
        parts: &Parts,
        object: &CachedObject,
        live: Option<Body>,
        now: Instant,
        x_cache: &'static str,
        cache_status: HeaderValue,
    ) -> Response<Body> {
        let repr = Representation::of(&self.config.compression, &parts.headers, object);
        let mut response = Response::new(Body::Empty);
        let headers = response.headers_mut();
        headers.clone_from(&object.headers);
        repr.describe(headers, object);
        headers.insert(header::AGE, headers::age_value(object.age(now).as_secs()));
        let template = esi::is_marked_template(&object.headers);
        if !template && policy::not_modified(&parts.headers, headers) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response.headers_mut().remove(header::CONTENT_LENGTH);
        } else {
            *response.status_mut() = object.status;
            deliver_body(&mut response, parts, object, &repr, live, template);
        }
        let ranges = !matches!(repr, Representation::Decoded { len: None });
        if object.status == StatusCode::OK && ranges {
            response
                .headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        self.finish_headers(response.headers_mut(), parts.version, x_cache, cache_status);
        response
    }

    /// A fetched response on its way out: its final headers, or a 304 when
    /// the client's own condition holds (`not_modified`; the body then
    /// still streams into the cache, in the background).
    pub(super) fn deliver_fetched(
        &self,
        ctx: &RequestCtx,
        version: Version,
        mut head: ResponseParts,
        body: Body,
        cache_status: String,
        not_modified: bool,
    ) -> Response<Body> {
        let x_cache = if ctx.outcome == Outcome::Pass {
            "PASS"
        } else {
            "MISS"
        };
        let cache_status = headers::status_value(cache_status);
        if not_modified && !esi::is_marked_template(&head.headers) {
            tokio::spawn(drain(body));
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = head.headers;
            response.headers_mut().remove(header::CONTENT_LENGTH);
            self.finish_headers(response.headers_mut(), version, x_cache, cache_status);
            return response;
        }
        self.finish_headers(&mut head.headers, version, x_cache, cache_status);
        Response::from_parts(head, body)
    }

    /// The headers every proxied response gets: `X-Cache`, `Cache-Status`
    /// (RFC 9211), `Via`; targeted cache-control fields removed when configured.
    fn finish_headers(
        &self,
        headers: &mut HeaderMap,
        version: Version,
        x_cache: &'static str,
        cache_status: HeaderValue,
    ) {
        headers.insert(headers::X_CACHE, HeaderValue::from_static(x_cache));
        headers.insert(headers::CACHE_STATUS, cache_status);
        // One pass over the names instead of three hashed removals: these
        // fields are rarely there, and this runs on every response.
        let tag = &self.config.cache.tag_header;
        let strip_targeted = self.config.cache.strip_targeted;
        let internal = |name: &HeaderName| {
            name == tag
                || (strip_targeted
                    && (name == policy::SHELLAC_CACHE_CONTROL || name == policy::CDN_CACHE_CONTROL))
        };
        if headers.keys().any(internal) {
            headers.remove(tag);
            if strip_targeted {
                headers.remove(policy::SHELLAC_CACHE_CONTROL);
                headers.remove(policy::CDN_CACHE_CONTROL);
            }
        }
        headers::append_via(headers, version);
    }
}

/// The body (whole, a range, or none for 416) of a stored object's
/// response in representation `repr`, with `Content-Range` where it takes
/// one; from `live` when given (a busy object, never with a range).
fn deliver_body(
    response: &mut Response<Body>,
    parts: &Parts,
    object: &CachedObject,
    repr: &Representation<'_>,
    live: Option<Body>,
    template: bool,
) {
    let bytes = repr.bytes(object);
    let len = match (bytes, repr) {
        (Some(bytes), _) => Some(bytes.len() as u64),
        (None, Representation::Decoded { len }) => *len,
        (None, _) => None,
    };
    // A decoded body of unknown length takes no range: the whole, a 200.
    let range = match len {
        Some(len)
            if object.status == StatusCode::OK && parts.method == Method::GET && !template =>
        {
            range::answer(&parts.headers, response.headers(), len)
        }
        _ => RangeAnswer::Whole,
    };
    let whole = |live: Option<Body>| match (bytes, live) {
        (_, Some(live)) if bytes.is_some() => live,
        (Some(bytes), _) => Body::Full(Some(bytes.clone())),
        (None, live) => compress::decoded(
            live.unwrap_or_else(|| Body::Full(Some(object.body.clone()))),
            len,
        ),
    };
    let len = len.unwrap_or(0);
    match range {
        RangeAnswer::Whole => *response.body_mut() = whole(live),
        RangeAnswer::Part { start, end } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            *response.body_mut() = match bytes {
                Some(bytes) => Body::Full(Some(bytes.slice(start as usize..=end as usize))),
                None => Body::Gunzip(Box::new(
                    Gunzip::new(Body::Full(Some(object.body.clone())), None).range(start, end),
                )),
            };
            let headers = response.headers_mut();
            headers.remove(header::CONTENT_LENGTH);
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
        RangeAnswer::Unsatisfiable => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let headers = response.headers_mut();
            headers.remove(header::CONTENT_LENGTH);
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
    }
    if parts.method == Method::HEAD {
        // hyper sends no body for HEAD but derives Content-Length from
        // the body it is given: the whole representation's length.
        *response.body_mut() = whole(None);
    }
}

/// The start of a fetched response's `Cache-Status`: how it was forwarded
/// (`bypass`, `stale` when revalidating, `uri-miss`) and why it is not
/// stored when that was known before the fetch (hit-for-miss).
pub(super) fn fetched_cache_status(ctx: &RequestCtx, revalidated: bool) -> String {
    // Room for the longest value built from it, so it never regrows.
    let mut cache_status = String::with_capacity(96);
    cache_status.push_str("shellac; fwd=");
    cache_status.push_str(match ctx.outcome {
        Outcome::Pass => "bypass",
        _ if revalidated => "stale",
        _ => "uri-miss",
    });
    if let Some(reason) = ctx.not_stored {
        cache_status.push_str("; detail=");
        cache_status.push_str(reason);
    }
    cache_status
}

/// Asks hyper to close an HTTP/1 connection after `response` (HTTP/2 has no
/// `Connection` header; its stream ends on its own).
pub(super) fn close_connection(mut response: Response<Body>, version: Version) -> Response<Body> {
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads a body to its end so that a capture completes (background
/// refreshes; 304s answered while the full response is stored).
pub(super) async fn drain(body: Body) {
    let _ = body.collect().await;
}

/// Seconds of freshness left (negative when stale), for `Cache-Status`.
pub(super) fn ttl_left(object: &CachedObject, now: Instant) -> i64 {
    let ttl = object.lifetimes.ttl.as_secs() as i64;
    ttl - object.age(now).as_secs() as i64
}

pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
