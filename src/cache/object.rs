//! A stored response: status, headers, body and the times that decide its
//! freshness. Objects are immutable and shared (`Arc`); the body is a
//! `Bytes` handed to every client without copying.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, VARY};
use http::StatusCode;

/// Bytes counted per object beyond its body, key and headers: the `Arc`,
/// the struct, moka's entry and its timer-wheel node. Measured in
/// `docs/caching.md`; the weigher adds it so `capacity` bounds real memory.
pub const OBJECT_OVERHEAD: usize = 256;

/// One cached response.
#[derive(Debug)]
pub struct CachedObject {
    /// The response status.
    pub status: StatusCode,
    /// Response headers as stored: hop-by-hop headers removed, no `Age`.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When it was stored (monotonic).
    pub stored_at: Instant,
    /// The age it had when it arrived (RFC 9111 §4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// Freshness lifetime.
    pub ttl: Duration,
    /// The request header values `Vary` names, captured when stored.
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl CachedObject {
    /// Builds an object; `request_headers` supply the values `Vary` selects on.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        initial_age: Duration,
        ttl: Duration,
        request_headers: &HeaderMap,
    ) -> CachedObject {
        let vary = vary_names(&headers)
            .map(|name| {
                let value = request_headers.get(&name).cloned();
                (name, value)
            })
            .collect();
        CachedObject {
            status,
            headers,
            body,
            stored_at: Instant::now(),
            initial_age,
            ttl,
            vary,
        }
    }

    /// The current age (RFC 9111 §4.2.3): initial age plus time in the cache.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    /// Fresh when the lifetime is larger than the age.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.ttl > self.age(now)
    }

    /// How long the cache should keep the object from now on.
    pub fn time_to_live(&self) -> Duration {
        self.ttl.saturating_sub(self.initial_age)
    }

    /// Whether this variant was stored for a request with these header values.
    pub fn matches_vary(&self, request_headers: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, stored)| request_headers.get(name) == stored.as_ref())
    }

    /// Bytes this object holds, for the cache's memory bound.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        self.body.len() + headers + OBJECT_OVERHEAD
    }
}

fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
}
