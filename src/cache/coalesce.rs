//! The waiting list (Varnish's term): concurrent misses for one key wait
//! for a single backend fetch instead of each going to the backend.
//!
//! The first request for a key becomes the *writer* and fetches; later ones
//! become *waiters* and wait for the writer's outcome, modelled on
//! pingora's cache lock:
//!
//! - `Streaming(busy)`: the response head is known and the body is being
//!   stored as it arrives; answer from the busy object at once, reading its
//!   body at your own pace (Varnish streams the busy object to all waiters).
//!   A waiter it does not fit (another `Vary` variant, a `Range`) waits on
//!   for one of the outcomes below. This is not the end of the fetch: the
//!   entry stays, so that requests arriving meanwhile stream it too.
//! - `Stored`: the object is in the cache; look it up again.
//! - `Uncacheable`: the response cannot be shared; fetch on your own (and
//!   the key is marked hit-for-miss so later requests do not queue).
//! - `Failed(reason)`: the fetch failed; answer with the same failure
//!   (or stale content) rather than repeat it against a failing backend.
//! - `Abandoned`: the writer went away (its client disconnected before the
//!   response head, the body broke, no room to buffer it); try to become
//!   the writer yourself.
//!
//! A waiter never waits longer than the fetch it waits for: the writer's own
//! timeouts bound it, and a writer that disappears releases its waiters
//! through `Drop`. A waiter whose client leaves is simply dropped.
//! The table is sharded so that different keys rarely share a lock, and a
//! lock is only held to insert or remove a key, never across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::busy::BusyObject;
use super::key::CacheKey;
use crate::reason::Reason;

const SHARDS: usize = 64;

/// One shard of the table: key → the receiver waiters clone.
type Shard = Mutex<HashMap<CacheKey, watch::Receiver<Outcome>>>;

/// How a fetch that others waited for ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Still fetching.
    Pending,
    /// The head is known and the body is being stored as it arrives.
    Streaming(Arc<BusyObject>),
    /// Stored: the waiters' lookup will hit.
    Stored,
    /// Not storable: each waiter fetches for itself.
    Uncacheable,
    /// The fetch failed for this reason.
    Failed(Reason),
    /// The writer went away without an outcome.
    Abandoned,
}

impl Outcome {
    /// Whether the fetch has ended (not pending, not streaming).
    pub fn is_settled(&self) -> bool {
        !matches!(self, Outcome::Pending | Outcome::Streaming(_))
    }
}

/// The table of fetches in flight.
pub struct Coalescer {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

/// What joining the waiting list made of a request.
pub enum Role {
    /// Fetch, then release the waiters through the guard.
    Writer(WriterGuard),
    /// Wait for the writer.
    Waiter(Waiter),
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Coalescer {
    fn shard(&self, key: &CacheKey) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Becomes the writer for `key`, or a waiter when a fetch is in flight.
    pub fn join(self: &Arc<Self>, key: &CacheKey) -> Role {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(receiver) = shard.get(key) {
            return Role::Waiter(Waiter {
                receiver: receiver.clone(),
            });
        }
        let (sender, receiver) = watch::channel(Outcome::Pending);
        shard.insert(key.clone(), receiver);
        Role::Writer(WriterGuard {
            table: self.clone(),
            key: key.clone(),
            sender: Some(sender),
        })
    }

    /// Fetches in flight now (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// Held by the one request that fetches; releasing it (or dropping it)
/// wakes every waiter.
pub struct WriterGuard {
    table: Arc<Coalescer>,
    key: CacheKey,
    sender: Option<watch::Sender<Outcome>>,
}

impl WriterGuard {
    /// Hands the busy object to the waiters (and to every request that
    /// joins until the fetch ends); the fetch goes on.
    pub fn stream(&self, busy: Arc<BusyObject>) {
        if let Some(sender) = &self.sender {
            sender.send_replace(Outcome::Streaming(busy));
        }
    }

    /// Ends the fetch with `outcome` and wakes the waiters.
    pub fn release(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(sender) = self.sender.take() {
            // Remove first, so a request arriving after the wake-up starts
            // afresh (and finds the stored object) instead of joining a
            // finished flight.
            self.table
                .shard(&self.key)
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.key);
            sender.send_replace(outcome);
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}

/// A request waiting for another's fetch.
pub struct Waiter {
    receiver: watch::Receiver<Outcome>,
}

impl Waiter {
    /// Waits for the writer's first news: the busy object as soon as the
    /// response head is known, or how the fetch ended.
    pub async fn news(&mut self) -> Outcome {
        self.wait_for(|o| !matches!(o, Outcome::Pending)).await
    }

    /// Waits until the writer releases the key (past `Streaming`).
    pub async fn outcome(mut self) -> Outcome {
        self.wait_for(Outcome::is_settled).await
    }

    async fn wait_for(&mut self, ready: impl FnMut(&Outcome) -> bool) -> Outcome {
        match self.receiver.wait_for(ready).await {
            Ok(outcome) => outcome.clone(),
            // The sender is gone without a word: same as abandoned.
            Err(_) => Outcome::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_writer_many_waiters() {
        let table = Arc::new(Coalescer::default());
        let key = CacheKey::new("http", "h", "/");
        let Role::Writer(writer) = table.join(&key) else {
            panic!("first is the writer")
        };
        let waiters: Vec<_> = (0..3)
            .map(|_| match table.join(&key) {
                Role::Waiter(w) => tokio::spawn(w.outcome()),
                Role::Writer(_) => panic!("second writer"),
            })
            .collect();
        writer.release(Outcome::Stored);
        for w in waiters {
            assert!(matches!(w.await, Ok(Outcome::Stored)));
        }
        assert_eq!(table.in_flight(), 0);
        assert!(matches!(table.join(&key), Role::Writer(_)));
    }

    #[tokio::test]
    async fn waiters_get_the_busy_object_then_the_outcome() {
        use crate::body::shared::{SharedBody, Transit};
        use crate::cache::policy::Lifetimes;
        use std::time::Duration;

        let table = Arc::new(Coalescer::default());
        let key = CacheKey::new("http", "h", "/");
        let Role::Writer(writer) = table.join(&key) else {
            panic!("first is the writer")
        };
        let Role::Waiter(mut early) = table.join(&key) else {
            panic!("waiter")
        };
        let lifetimes = Lifetimes {
            ttl: Duration::from_secs(60),
            grace: Duration::ZERO,
            keep: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            no_cache: false,
        };
        let head = super::super::CachedObject::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            bytes::Bytes::new(),
            Duration::ZERO,
            lifetimes,
        );
        let reservation = Arc::new(Transit::default()).reserve(0, 1).expect("room");
        let body = SharedBody::new(None, 1, reservation);
        let busy = Arc::new(BusyObject::new(
            head,
            Vec::new(),
            &http::HeaderMap::new(),
            body,
        ));
        writer.stream(busy.clone());
        assert!(matches!(early.news().await, Outcome::Streaming(b) if Arc::ptr_eq(&b, &busy)));
        // A request that joins while the fetch streams gets it too.
        let Role::Waiter(mut late) = table.join(&key) else {
            panic!("still one fetch in flight")
        };
        assert!(matches!(late.news().await, Outcome::Streaming(_)));
        let settled = tokio::spawn(late.outcome());
        writer.release(Outcome::Stored);
        assert!(matches!(settled.await, Ok(Outcome::Stored)));
        assert!(matches!(early.outcome().await, Outcome::Stored));
        assert_eq!(table.in_flight(), 0);
    }

    #[tokio::test]
    async fn dropped_writer_abandons() {
        let table = Arc::new(Coalescer::default());
        let key = CacheKey::new("http", "h", "/");
        let writer = table.join(&key);
        let Role::Waiter(waiter) = table.join(&key) else {
            panic!("waiter")
        };
        drop(writer);
        assert!(matches!(waiter.outcome().await, Outcome::Abandoned));
    }
}
