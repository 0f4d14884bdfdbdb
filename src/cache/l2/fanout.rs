//! Invalidation fan-out: PURGE, bans and the invalidations of unsafe
//! methods are published on the Redis channel `{prefix}invalidate` as small
//! JSON messages carrying this node's id, and every other node applies them
//! to its L1 (a node ignores its own messages).
//!
//! One task per node holds a dedicated pub/sub connection (in a Redis
//! Cluster, to one seed: PUBLISH reaches every node of a cluster). It pings
//! the server every second, so a connection that silently died is noticed;
//! it reconnects with backoff (100 ms doubling to 5 s). **Every time the
//! subscription is (re)established, the node flushes its L1**: while it was
//! not subscribed it may have missed invalidations, and an object it still
//! holds could be one that was purged elsewhere. L2 is not flushed: PURGE
//! deletes there directly, and bans are checked against each L2 object's
//! stored time when it is read.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::codec::unix_ms;
use super::L2;
use crate::cache::ban::BanMatcher;
use crate::cache::key::CacheKey;
use crate::cache::Cache;
use crate::config::defaults::L2_RECONNECT_MAX;

/// How often the subscription is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(1);

/// One message on the channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    /// The sending node.
    pub node: u64,
    /// What to invalidate.
    pub what: Invalidation,
}

/// What a message invalidates.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invalidation {
    /// One URL, every variant (PURGE; unsafe methods).
    Purge {
        /// The cache key's text.
        key: String,
    },
    /// A ban made at `at_ms` (unix ms).
    Ban {
        /// When it was made.
        at_ms: u64,
        /// What it matches.
        matcher: WireMatcher,
    },
}

/// A ban as kept in the sorted set `{prefix}bans` (scored by `at_ms`), so
/// that a node that starts (or resubscribes) later learns it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredBan {
    node: u64,
    at_ms: u64,
    matcher: WireMatcher,
}

/// A [`BanMatcher`] as sent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireMatcher {
    /// `path_prefix`.
    PathPrefix(String),
    /// `path_regex`, as written.
    PathRegex(String),
    /// `host`.
    Host(String),
    /// `tag` under a tag header.
    Tag {
        /// The header name.
        header: String,
        /// The tag.
        tag: String,
    },
    /// A regex on a response header.
    HeaderRegex {
        /// The header name.
        header: String,
        /// The pattern, as written.
        regex: String,
    },
    /// A path regex on one host.
    HostPathRegex {
        /// The host.
        host: String,
        /// The pattern, as written.
        regex: String,
    },
    /// Any of several tags in any of several headers.
    AnyTag {
        /// The header names.
        headers: Vec<String>,
        /// The tags.
        tags: Vec<String>,
    },
    /// A soft ban (stale, not gone) of the inner matcher.
    Soft(Box<WireMatcher>),
}

impl WireMatcher {
    fn from_matcher(matcher: &BanMatcher) -> WireMatcher {
        match matcher {
            BanMatcher::PathPrefix(p) => WireMatcher::PathPrefix(p.clone()),
            BanMatcher::PathRegex(r) => WireMatcher::PathRegex(r.as_str().to_string()),
            BanMatcher::Host(h) => WireMatcher::Host(h.clone()),
            BanMatcher::Tag { header, tag } => WireMatcher::Tag {
                header: header.as_str().to_string(),
                tag: tag.clone(),
            },
            BanMatcher::HeaderRegex { header, regex } => WireMatcher::HeaderRegex {
                header: header.as_str().to_string(),
                regex: regex.as_str().to_string(),
            },
            BanMatcher::HostPathRegex { host, regex } => WireMatcher::HostPathRegex {
                host: host.clone(),
                regex: regex.as_str().to_string(),
            },
            BanMatcher::AnyTag { headers, tags } => WireMatcher::AnyTag {
                headers: headers.iter().map(|h| h.as_str().to_string()).collect(),
                tags: tags.clone(),
            },
            BanMatcher::Soft(inner) => {
                WireMatcher::Soft(Box::new(WireMatcher::from_matcher(inner)))
            }
        }
    }

    fn to_matcher(&self) -> Option<BanMatcher> {
        Some(match self {
            WireMatcher::PathPrefix(p) => BanMatcher::PathPrefix(p.clone()),
            WireMatcher::PathRegex(r) => BanMatcher::PathRegex(regex::Regex::new(r).ok()?),
            WireMatcher::Host(h) => BanMatcher::Host(h.clone()),
            WireMatcher::Tag { header, tag } => BanMatcher::Tag {
                header: http::HeaderName::from_bytes(header.as_bytes()).ok()?,
                tag: tag.clone(),
            },
            WireMatcher::HeaderRegex { header, regex } => BanMatcher::HeaderRegex {
                header: http::HeaderName::from_bytes(header.as_bytes()).ok()?,
                regex: regex::Regex::new(regex).ok()?,
            },
            WireMatcher::HostPathRegex { host, regex } => BanMatcher::HostPathRegex {
                host: host.clone(),
                regex: regex::Regex::new(regex).ok()?,
            },
            WireMatcher::AnyTag { headers, tags } => BanMatcher::AnyTag {
                headers: headers
                    .iter()
                    .map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect::<Option<Vec<_>>>()?,
                tags: tags.clone(),
            },
            WireMatcher::Soft(inner) => BanMatcher::Soft(Box::new(inner.to_matcher()?)),
        })
    }
}

impl L2 {
    /// Tells the other nodes to drop `key`.
    pub fn publish_purge(self: &Arc<Self>, key: &CacheKey) {
        self.send(Invalidation::Purge {
            key: key.as_str().to_string(),
        });
    }

    /// Tells the other nodes about a ban made now, and records it in
    /// `{prefix}bans` for nodes that start later; remembers it for L2 reads.
    pub fn publish_ban(self: &Arc<Self>, matcher: &BanMatcher) {
        let at_ms = unix_ms(SystemTime::now());
        self.remember_ban(at_ms, matcher.clone());
        let stored = StoredBan {
            node: self.node_id,
            at_ms,
            matcher: WireMatcher::from_matcher(matcher),
        };
        if let Ok(member) = serde_json::to_string(&stored) {
            let l2 = self.clone();
            let forget_before = at_ms.saturating_sub(self.ban_horizon_ms());
            super::spawn(async move {
                let mut add = redis::cmd("ZADD");
                add.arg(l2.bans_key()).arg(at_ms).arg(member);
                let mut trim = redis::cmd("ZREMRANGEBYSCORE");
                trim.arg(l2.bans_key())
                    .arg("-inf")
                    .arg(format!("({forget_before}"));
                for cmd in [add, trim] {
                    if let Err(error) = l2.run::<i64>(&cmd, l2.background_timeout()).await {
                        l2.metrics.error(error.kind());
                        tracing::warn!(%error, "could not record a ban in L2: nodes started later will not know it");
                        return;
                    }
                }
            });
        }
        self.send(Invalidation::Ban {
            at_ms,
            matcher: WireMatcher::from_matcher(matcher),
        });
    }

    /// The sorted set of recent bans.
    fn bans_key(&self) -> String {
        format!("{}bans", self.config.prefix)
    }

    /// Reads the recent bans from `{prefix}bans` into the ban memory;
    /// returns how many there were.
    pub(super) async fn load_bans(&self, conn: super::Conn) -> Result<usize, super::L2Error> {
        let since = unix_ms(SystemTime::now()).saturating_sub(self.ban_horizon_ms());
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.bans_key()).arg(since).arg("+inf");
        let members: Vec<String> = super::run_on(conn, &cmd, self.background_timeout()).await?;
        let count = members.len();
        for member in members {
            let parsed = serde_json::from_str::<StoredBan>(&member)
                .ok()
                .and_then(|b| Some((b.at_ms, b.matcher.to_matcher()?)));
            match parsed {
                Some((at_ms, matcher)) => self.remember_ban(at_ms, matcher),
                None => self.metrics.error("decode"),
            }
        }
        Ok(count)
    }

    fn send(self: &Arc<Self>, what: Invalidation) {
        let message = Message {
            node: self.node_id,
            what,
        };
        if let Ok(payload) = serde_json::to_string(&message) {
            self.publish(payload);
        }
    }

    /// Starts the subscriber task: applies other nodes' invalidations to
    /// `cache` until the cache is dropped or the task aborted.
    pub fn subscribe_in_background(
        self: &Arc<Self>,
        cache: Weak<Cache>,
    ) -> tokio::task::JoinHandle<()> {
        let l2 = self.clone();
        tokio::spawn(async move { l2.subscriber(cache).await })
    }

    async fn subscriber(&self, cache: Weak<Cache>) {
        let mut delay = Duration::from_millis(100);
        let mut established_before = false;
        let mut logged_failure = false;
        loop {
            match self.open_pubsub().await {
                Ok(pubsub) => {
                    delay = Duration::from_millis(100);
                    logged_failure = false;
                    self.metrics.subscribed.set(1);
                    let Some(strong) = cache.upgrade() else {
                        return;
                    };
                    let removed = strong.flush();
                    drop(strong);
                    if established_before || removed > 0 {
                        tracing::warn!(removed, "fan-out subscription re-established: flushed L1, since invalidations may have been missed");
                    } else {
                        tracing::info!(channel = %self.channel(), "fan-out subscribed");
                    }
                    if established_before {
                        // Bans published while not subscribed still hide
                        // older L2 objects.
                        if let Some(conn) = self.conn.get().cloned() {
                            if let Err(error) = self.load_bans(conn).await {
                                self.metrics.error(error.kind());
                                tracing::warn!(%error, "cannot re-read the bans from L2");
                            }
                        }
                    }
                    established_before = true;
                    self.listen(pubsub, &cache).await;
                    self.metrics.subscribed.set(0);
                    if cache.upgrade().is_none() {
                        return;
                    }
                    tracing::warn!("fan-out subscription lost: reconnecting (L1 will be flushed)");
                }
                Err(error) => {
                    self.metrics.error("connection");
                    if !logged_failure {
                        tracing::warn!(%error, "cannot subscribe to the fan-out channel; retrying");
                        logged_failure = true;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(L2_RECONNECT_MAX);
        }
    }

    /// A subscribed pub/sub connection, to the server or to the first
    /// cluster seed that answers.
    async fn open_pubsub(&self) -> Result<redis::aio::PubSub, String> {
        let urls = match &self.config.endpoint {
            crate::config::L2Endpoint::Standalone(url) => vec![url.clone()],
            crate::config::L2Endpoint::Cluster(seeds) => seeds.clone(),
        };
        let limit = self.background_timeout();
        let mut last = String::from("no address");
        for url in urls {
            let attempt = async {
                let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
                pubsub
                    .subscribe(self.channel())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(pubsub)
            };
            match tokio::time::timeout(limit, attempt).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = format!("{url}: {e}"),
                Err(_) => last = format!("{url}: no answer within {limit:?}"),
            }
        }
        Err(last)
    }

    /// Applies messages until the connection ends or stops answering pings.
    async fn listen(&self, pubsub: redis::aio::PubSub, cache: &Weak<Cache>) {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return };
                    let Some(cache) = cache.upgrade() else { return };
                    self.apply(&cache, message.get_payload_bytes());
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(
                        self.background_timeout(),
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }

    fn apply(&self, cache: &Cache, payload: &[u8]) {
        let message: Message = match serde_json::from_slice(payload) {
            Ok(message) => message,
            Err(error) => {
                self.metrics.error("decode");
                tracing::warn!(%error, "ignoring an unreadable fan-out message");
                return;
            }
        };
        if message.node == self.node_id {
            return;
        }
        match message.what {
            Invalidation::Purge { key } => {
                cache.invalidate_url(&CacheKey::from_text(&key));
                tracing::debug!(key, from = message.node, "purge from another node");
            }
            Invalidation::Ban { at_ms, matcher } => {
                let Some(matcher) = matcher.to_matcher() else {
                    self.metrics.error("decode");
                    tracing::warn!(
                        ?matcher,
                        "ignoring a ban from another node that does not parse"
                    );
                    return;
                };
                self.remember_ban(at_ms, matcher.clone());
                cache.bans.add(matcher);
                tracing::info!(from = message.node, "ban from another node");
            }
        }
        self.metrics.invalidations_received.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let message = Message {
            node: 7,
            what: Invalidation::Ban {
                at_ms: 1,
                matcher: WireMatcher::from_matcher(&BanMatcher::Tag {
                    header: http::HeaderName::from_static("surrogate-key"),
                    tag: "t1".into(),
                }),
            },
        };
        let text = serde_json::to_string(&message).expect("json");
        let back: Message = serde_json::from_str(&text).expect("parses");
        assert_eq!(back.node, 7);
        let Invalidation::Ban { matcher, .. } = back.what else {
            panic!("a ban")
        };
        assert!(matches!(matcher.to_matcher(), Some(BanMatcher::Tag { .. })));
        assert!(WireMatcher::PathRegex("(".into()).to_matcher().is_none());
    }

    #[test]
    fn the_apps_matchers_round_trip() {
        let matchers = [
            BanMatcher::HeaderRegex {
                header: http::HeaderName::from_static("x-magento-tags"),
                regex: regex::Regex::new("((^|,)cat_p_1(,|$))").expect("regex"),
            },
            BanMatcher::HostPathRegex {
                host: "a.example".into(),
                regex: regex::Regex::new("/category/.*").expect("regex"),
            },
            BanMatcher::AnyTag {
                headers: vec![http::HeaderName::from_static("xkey")],
                tags: vec!["k1".into(), "k2".into()],
            },
            BanMatcher::Soft(Box::new(BanMatcher::AnyTag {
                headers: vec![http::HeaderName::from_static("xkey")],
                tags: vec!["k3".into()],
            })),
        ];
        for matcher in matchers {
            let wire = WireMatcher::from_matcher(&matcher);
            let text = serde_json::to_string(&wire).expect("json");
            let back: WireMatcher = serde_json::from_str(&text).expect("parses");
            let back = back.to_matcher().expect("a matcher");
            assert_eq!(format!("{back:?}"), format!("{matcher:?}"));
        }
    }
}
