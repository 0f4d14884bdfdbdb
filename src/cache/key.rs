//! The cache key: which stored object a request may be answered with.
//!
//! Scheme, Host (lower-cased, default port dropped) and the request target
//! (path and query, byte for byte) are in the key; GET and HEAD share one
//! key, since a HEAD can be answered from a stored GET. Nothing a client can
//! add without changing the response (`X-Forwarded-Host` and the like) is
//! in it: that is what makes cache poisoning through unkeyed headers
//! impossible, unless an operator's `[[rule]] key_headers` / `key_cookies`
//! add a header's or a cookie's value on purpose. The key keeps the full text rather than a hash, so two
//! requests can never collide onto one object.

use std::fmt;
use std::sync::Arc;

/// The identity of a cached object (before `Vary` picks a variant).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(Arc<str>);

impl CacheKey {
    /// The key of a GET or HEAD for `host` (already normalized) and `target`
    /// (`/path?query`).
    pub fn new(scheme: &str, host: &str, target: &str) -> CacheKey {
        let pieces = [scheme, "://", host, target];
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        // Joined on the stack when it fits (nearly always), so that the
        // shared key is the request's only allocation for it.
        let mut joined = [0u8; 512];
        if len <= joined.len() {
            let mut at = 0;
            for piece in pieces {
                joined[at..at + piece.len()].copy_from_slice(piece.as_bytes());
                at += piece.len();
            }
            if let Ok(text) = std::str::from_utf8(&joined[..len]) {
                return CacheKey(Arc::from(text));
            }
        }
        CacheKey(Arc::from(pieces.concat()))
    }

    /// The key of a GET or HEAD as [`CacheKey::new`], followed by `extra`:
    /// the values `[[rule]] key_headers` and `key_cookies` add, each after
    /// a NUL (as a variant's values are, so a ban's host and path still
    /// end at the first NUL).
    pub fn with_extra(scheme: &str, host: &str, target: &str, extra: &str) -> CacheKey {
        CacheKey(Arc::from([scheme, "://", host, target, extra].concat()))
    }

    /// The key of one variant of this (primary) key: the `Vary` spec's
    /// generation and the normalized request values, NUL-separated (a NUL
    /// cannot occur in a header value, so values cannot run into each other).
    pub fn variant(&self, generation: u64, values: &[String]) -> CacheKey {
        let mut text = String::with_capacity(
            self.0.len() + 24 + values.iter().map(|v| v.len() + 1).sum::<usize>(),
        );
        text.push_str(&self.0);
        text.push('\0');
        text.push_str(&generation.to_string());
        for value in values {
            text.push('\0');
            text.push_str(value);
        }
        CacheKey(Arc::from(text))
    }

    /// A key from its text (as [`CacheKey::as_str`] gave it), for keys
    /// received from other nodes.
    pub fn from_text(text: &str) -> CacheKey {
        CacheKey(Arc::from(text))
    }

    /// The same URL under the other scheme (`http` ↔ `https`): an
    /// invalidation of a URL applies to both, since the scheme is in the key
    /// only so that one scheme's redirect is never served on the other.
    pub fn other_scheme(&self) -> Option<CacheKey> {
        let text: &str = &self.0;
        if let Some(rest) = text.strip_prefix("http://") {
            return Some(CacheKey(Arc::from(format!("https://{rest}"))));
        }
        text.strip_prefix("https://")
            .map(|rest| CacheKey(Arc::from(format!("http://{rest}"))))
    }

    /// The key as text, e.g. `http://example.com/a?b`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Bytes the key occupies, for the cache's weigher.
    pub fn weight(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_target_are_in_the_key() {
        let a = CacheKey::new("http", "example.com", "/a?x=1");
        assert_eq!(a.as_str(), "http://example.com/a?x=1");
        assert_ne!(a, CacheKey::new("http", "example.org", "/a?x=1"));
        assert_ne!(a, CacheKey::new("http", "example.com", "/a?x=2"));
        assert_ne!(a, CacheKey::new("https", "example.com", "/a?x=1"));
        let tls = CacheKey::new("https", "example.com", "/a?x=1");
        assert_eq!(a.other_scheme(), Some(tls.clone()));
        assert_eq!(tls.other_scheme(), Some(a.clone()));
    }
}
