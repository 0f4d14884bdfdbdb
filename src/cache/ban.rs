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
    /// What the inner matcher matches becomes stale instead of going
    /// (vmod_xkey's soft purge): served in grace while it is refetched,
    /// revalidated if it has a validator. L2 treats it as a plain ban.
    Soft(Box<BanMatcher>),
}

/// What the active bans do to one stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No ban matches it.
    Keep,
    /// A soft ban matches it, and no other: it becomes stale.
    Stale,
    /// A ban matches it: it goes.
    Remove,
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
            BanMatcher::Soft(inner) => inner.matches(key, object),
        }
    }
}

/// What `bans` do to `object`: a hard ban wins over a soft one.
pub(super) fn verdict(bans: &[Arc<Ban>], key: &CacheKey, object: &CachedObject) -> Verdict {
    let mut verdict = Verdict::Keep;
    for ban in bans.iter().filter(|ban| ban.matches(key, object)) {
        if !matches!(ban.matcher, BanMatcher::Soft(_)) {
            return Verdict::Remove;
        }
        verdict = Verdict::Stale;
    }
    verdict
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

    /// What the bans made after `object` was stored do to it.
    pub fn verdict(&self, key: &CacheKey, object: &CachedObject) -> Verdict {
        let bans = self.bans.load();
        if bans.is_empty() {
            return Verdict::Keep;
        }
        verdict(&bans, key, object)
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

    #[test]
    fn a_hard_ban_wins_over_a_soft_one() {
        use crate::cache::policy::Lifetimes;
        let mut headers = http::HeaderMap::new();
        headers.insert("xkey", http::HeaderValue::from_static("k1 k2"));
        let mut object = CachedObject::new(
            http::StatusCode::OK,
            headers,
            bytes::Bytes::new(),
            std::time::Duration::ZERO,
            Lifetimes {
                ttl: std::time::Duration::from_secs(60),
                grace: std::time::Duration::ZERO,
                keep: std::time::Duration::ZERO,
                stale_if_error: std::time::Duration::ZERO,
                must_revalidate: false,
                no_cache: false,
            },
        );
        // Bans apply to objects stored before them.
        object.stored_at -= std::time::Duration::from_millis(1);
        let key = CacheKey::new("http", "a.com", "/x");
        let tag = |t: &str| BanMatcher::AnyTag {
            headers: vec![HeaderName::from_static("xkey")],
            tags: vec![t.to_string()],
        };
        let list = BanList::default();
        assert_eq!(list.verdict(&key, &object), Verdict::Keep);
        list.add(tag("k3"));
        assert_eq!(list.verdict(&key, &object), Verdict::Keep);
        list.add(BanMatcher::Soft(Box::new(tag("k2"))));
        assert_eq!(list.verdict(&key, &object), Verdict::Stale);
        list.add(tag("k1"));
        assert_eq!(list.verdict(&key, &object), Verdict::Remove);
    }
}
