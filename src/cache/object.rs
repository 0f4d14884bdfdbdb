//! A stored response: status, headers, body and the lifetimes that decide
//! its freshness. Objects are immutable and shared (`Arc`); the body is a
//! `Bytes` handed to every client without copying. A revalidation makes a
//! new object that shares the old body.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use std::sync::Arc;

use super::encoded::Encoded;
use super::policy::Lifetimes;

/// Bytes counted per object beyond its body, key and headers: the `Arc`,
/// this struct, the `HeaderMap`'s tables, moka's entry with its timer and
/// frequency structures, and allocator rounding. Measured with
/// `cargo bench --bench hit_lookup`: 3,211 bytes of RSS per 1 KiB object,
/// of which the rest of the weigher accounts for 1,533; the weigher adds
/// this so that `capacity` bounds real memory (docs/caching.md).
pub const OBJECT_OVERHEAD: usize = 1_700;

/// One cached response.
#[derive(Debug)]
pub struct CachedObject {
    /// The response status.
    pub status: StatusCode,
    /// Response headers as stored: hop-by-hop headers removed, no `Age`.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When it was stored or last revalidated (monotonic).
    pub stored_at: Instant,
    /// The age it had when it arrived (RFC 9111 §4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// Freshness, grace, keep and revalidation rules.
    pub lifetimes: Lifetimes,
    /// For a gzip body kept by `[compression]`: what its other
    /// representations need (`cache::encoded`); none otherwise.
    pub encoded: Option<Arc<Encoded>>,
}

impl CachedObject {
    /// Builds an object from a response head and its complete body.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        initial_age: Duration,
        lifetimes: Lifetimes,
    ) -> CachedObject {
        CachedObject {
            status,
            headers: compact(&headers),
            body,
            stored_at: Instant::now(),
            initial_age,
            lifetimes,
            encoded: None,
        }
    }

    /// The object a `304 Not Modified` turns this one into (RFC 9111
    /// §4.3.4): the stored headers updated with the 304's, the same body,
    /// new lifetimes, age restarting from the 304's.
    pub fn revalidated(
        &self,
        not_modified: &HeaderMap,
        initial_age: Duration,
        lifetimes: Lifetimes,
    ) -> CachedObject {
        let mut headers = self.headers.clone();
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in not_modified {
            // The 304 describes the selected representation's metadata, not
            // its framing: the stored body's length stays.
            if name == header::CONTENT_LENGTH || name == header::AGE {
                continue;
            }
            if !replaced.contains(&name) {
                headers.remove(name);
                replaced.push(name);
            }
            headers.append(name.clone(), value.clone());
        }
        let mut encoded = self.encoded.clone();
        // An object Shellac gzipped keeps a weak `ETag`; the 304's is the
        // backend's, of the identity body.
        if let (Some(enc), Some(etag)) = (&self.encoded, not_modified.get(header::ETAG)) {
            if enc.identity_etag.is_some() {
                headers.insert(header::ETAG, crate::encoding::weakened(etag));
                encoded = Some(Arc::new(Encoded {
                    identity_len: enc.identity_len,
                    identity_etag: Some(etag.clone()),
                    br: enc.br.clone(),
                }));
            }
        }
        CachedObject {
            status: self.status,
            headers: compact(&headers),
            body: self.body.clone(),
            stored_at: Instant::now(),
            initial_age,
            lifetimes,
            encoded,
        }
    }

    /// The same object with `body`, stored now: a busy object's head once
    /// its body has arrived (`cache::busy`). The headers are shared, not
    /// copied again.
    pub fn with_body(&self, body: Bytes) -> CachedObject {
        CachedObject {
            status: self.status,
            headers: self.headers.clone(),
            body,
            stored_at: Instant::now(),
            initial_age: self.initial_age,
            lifetimes: self.lifetimes,
            encoded: None,
        }
    }

    /// The same object with `headers` and `body` in gzip, and its other
    /// representations (`cache::encoded`).
    pub fn encoded(&self, headers: HeaderMap, body: Bytes, encoded: Encoded) -> CachedObject {
        CachedObject {
            status: self.status,
            headers: compact(&headers),
            body,
            stored_at: self.stored_at,
            initial_age: self.initial_age,
            lifetimes: self.lifetimes,
            encoded: Some(Arc::new(encoded)),
        }
    }

    /// The current age (RFC 9111 §4.2.3): initial age plus time in the cache.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    /// This object made stale now, as a soft purge leaves it: stored again
    /// now with the age it has (so the soft ban is behind it), fresh no
    /// longer, grace and keep from now on.
    pub fn staled(&self, now: Instant) -> CachedObject {
        let age = self.age(now);
        let mut lifetimes = self.lifetimes;
        lifetimes.ttl = lifetimes.ttl.min(age);
        CachedObject {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            stored_at: now,
            initial_age: age,
            lifetimes,
            encoded: self.encoded.clone(),
        }
    }

    /// How long the store should keep the object from now on: the rest of
    /// its freshness plus grace and keep (or stale-if-error, if longer).
    pub fn time_to_live(&self) -> Duration {
        self.lifetimes.ttl.saturating_sub(self.initial_age) + self.lifetimes.retention()
    }

    /// Whether it can be revalidated with a conditional request.
    pub fn has_validator(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }

    /// Bytes this object holds, for the cache's memory bound.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let br = self
            .encoded
            .as_ref()
            .and_then(|e| e.br.as_ref())
            .map_or(0, Bytes::len);
        self.body.len() + br + headers + OBJECT_OVERHEAD
    }
}

/// The same headers with every value copied into one allocation of their
/// own. hyper parses a response head without copying: each value is a view
/// into the backend connection's read buffer (8 KiB or more), so storing
/// the parsed map would keep that whole buffer alive as long as the object
/// (measured: ~6 KiB of RSS per stored 1 KiB object beyond what the weigher
/// counts). One copy per store, never per hit.
fn compact(headers: &HeaderMap) -> HeaderMap {
    let total = headers.values().map(HeaderValue::len).sum();
    let mut arena = BytesMut::with_capacity(total);
    for value in headers.values() {
        arena.extend_from_slice(value.as_bytes());
    }
    let arena = arena.freeze();
    let mut compacted = HeaderMap::with_capacity(headers.keys_len());
    let mut at = 0;
    for (name, value) in headers {
        let end = at + value.len();
        let mut copy =
            HeaderValue::from_maybe_shared(arena.slice(at..end)).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        compacted.append(name.clone(), copy);
        at = end;
    }
    compacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_every_value_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        headers.insert("x-custom", HeaderValue::from_static("v1"));
        let compacted = compact(&headers);
        assert_eq!(compacted, headers);
        let cookies: Vec<_> = compacted.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }
}
