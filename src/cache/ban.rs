//! Bans: invalidation by pattern (`path_prefix`, `path_regex`, `host`,
//! surrogate-key `tag`, and the matchers of the apps' invalidation
//! protocols: a regex on a response header, a path regex on one host, any
//! of several tags), applied lazily as Varnish does.
//!
//! A ban applies to every object stored before it. Two things apply it:
//! a lookup that finds an older object tests it against the newer bans
//! (so a banned object is never served, even a moment after the ban), and
//! the *lurker* task walks the store in the background, removing matching
//! objects; once it has walked the whole store, the bans it checked are
//! complete and dropped. The list is read on every lookup without a lock
//! (`ArcSwap`); it is only written when a ban is added or completed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::HeaderName;
use regex::Regex;

use super::key::CacheKey;
use super::object::CachedObject;

/// What a ban matches.
#[derive(Clone, Debug)]
pub enum BanMatcher {
    /// Paths starting with this.
    PathPrefix(String),
    /// Paths (with query) matching this regular expression.
    PathRegex(Regex),
    /// Exactly this host (lower-case, as in the key).
    Host(String),
    /// Objects whose tag header lists this tag.
    Tag {
        /// The tag header's name when the ban was made.
        header: HeaderName,
        /// The tag.
        tag: String,
    },
    /// Objects whose `header` value matches `regex` (Varnish's
    /// `obj.http.X ~ "…"`, Magento's tag patterns). An object without the
    /// header is tested as if it were empty, so `.*` matches everything.
    HeaderRegex {
        /// The response header tested.
        header: HeaderName,
        /// The pattern, unanchored as in VCL.
        regex: Regex,
    },
    /// Paths (with query) matching `regex` on exactly this host (`req.url ~
    /// … && req.http.host == …`: WordPress's and Drupal's URL bans).
    HostPathRegex {
        /// The host, lower-case, as in the key.
        host: String,
        /// The path pattern, unanchored.
        regex: Regex,
    },
    /// Objects listing any of `tags` (separated by spaces or commas) in any
    /// of `headers` (Drupal's cache tags, vmod_xkey's keys).
    AnyTag {
        /// The response headers that carry tags.
        headers: Vec<HeaderName>,
        /// The tags; one match is enough.
        tags: Vec<String>,
    },
}

/// One ban.
#[derive(Debug)]
pub struct Ban {
    /// When it was made: it applies to objects stored before.
    pub at: Instant,
    /// What it matches.
    pub matcher: BanMatcher,
}

impl Ban {
    /// Whether the ban removes `object` stored under `key`.
    pub fn matches(&self, key: &CacheKey, object: &CachedObject) -> bool {
        object.stored_at < self.at && self.matcher.matches(key, object)
    }
}

impl BanMatcher {
    /// Whether `object` stored under `key` matches, whenever it was stored
    /// (the caller compares times: monotonic in L1, wall-clock for L2).
    pub fn matches(&self, key: &CacheKey, object: &CachedObject) -> bool {
        let (host, target) = split_key(key.as_str());
        match self {
            BanMatcher::PathPrefix(prefix) => target.starts_with(prefix.as_str()),
            BanMatcher::PathRegex(regex) => regex.is_match(target),
            BanMatcher::Host(want) => host == want,
            BanMatcher::Tag { header, tag } => object
                .headers
                .get_all(header)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(str::split_ascii_whitespace)
                .any(|t| t == tag),
            BanMatcher::HeaderRegex { header, regex } => {
                let mut values = object.headers.get_all(header).iter().peekable();
                if values.peek().is_none() {
                    return regex.is_match("");
                }
                values.any(|v| v.to_str().is_ok_and(|v| regex.is_match(v)))
            }
            BanMatcher::HostPathRegex { host: want, regex } => {
                host == want && regex.is_match(target)
            }
            BanMatcher::AnyTag { headers, tags } => headers
                .iter()
                .flat_map(|name| object.headers.get_all(name).iter())
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(|c: char| c.is_ascii_whitespace() || c == ','))
                .any(|t| !t.is_empty() && tags.iter().any(|want| want == t)),
        }
    }
}

/// The host and the target of a key `scheme://host/target[\0variant…]`.
fn split_key(key: &str) -> (&str, &str) {
    let key = key.split('\0').next().unwrap_or(key);
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    }
}

/// The bans not yet applied to the whole store.
#[derive(Default)]
pub struct BanList {
    bans: ArcSwap<Vec<Arc<Ban>>>,
    issued: AtomicU64,
}

impl BanList {
    /// Adds a ban; returns how many are active.
    pub fn add(&self, matcher: BanMatcher) -> usize {
        let ban = Arc::new(Ban {
            at: Instant::now(),
            matcher,
        });
        self.issued.fetch_add(1, Ordering::Relaxed);
        self.bans.rcu(|bans| {
            let mut bans = Vec::clone(bans);
            bans.push(ban.clone());
            bans
        });
        self.active()
    }

    /// Bans waiting for the lurker.
    pub fn active(&self) -> usize {
        self.bans.load().len()
    }

    /// Whether any ban made after `object` was stored matches it.
    pub fn bans(&self, key: &CacheKey, object: &CachedObject) -> bool {
        let bans = self.bans.load();
        !bans.is_empty() && bans.iter().any(|ban| ban.matches(key, object))
    }

    /// The current bans (for the lurker).
    pub(super) fn snapshot(&self) -> Arc<Vec<Arc<Ban>>> {
        self.bans.load_full()
    }

    /// Drops the bans the lurker has applied to the whole store.
    pub(super) fn complete(&self, done: &[Arc<Ban>]) {
        self.bans.rcu(|bans| {
            bans.iter()
                .filter(|b| !done.iter().any(|d| Arc::ptr_eq(b, d)))
                .cloned()
                .collect::<Vec<_>>()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_host_and_target() {
        assert_eq!(split_key("http://a.com/x/y?z"), ("a.com", "/x/y?z"));
        assert_eq!(split_key("http://a.com/x\u{0}3\u{0}gzip"), ("a.com", "/x"));
        assert_eq!(split_key("http://a.com"), ("a.com", "/"));
    }
}
