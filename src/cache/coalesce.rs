//! The waiting list (Varnish's term): concurrent misses for one key wait
//! for a single backend fetch instead of each going to the backend.
//!
//! The first request for a key becomes the *writer* and fetches; later ones
//! become *waiters* and wait for the writer's outcome, modelled on
//! pingora's cache lock:
//!
//! - `Stored`: the object is in the cache; look it up again.
//! - `Uncacheable`: the response cannot be shared; fetch on your own (and
//!   the key is marked hit-for-miss so later requests do not queue).
//! - `Failed(reason)`: the fetch failed; answer with the same failure
//!   (or stale content) rather than repeat it against a failing backend.
//! - `Abandoned`: the writer went away (its client disconnected, the body
//!   broke); try to become the writer yourself.
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

use super::key::CacheKey;
use crate::reason::Reason;

const SHARDS: usize = 64;

/// One shard of the table: key → the receiver waiters clone.
type Shard = Mutex<HashMap<CacheKey, watch::Receiver<Outcome>>>;

/// How a fetch that others waited for ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still fetching.
    Pending,
    /// Stored: the waiters' lookup will hit.
    Stored,
    /// Not storable: each waiter fetches for itself.
    Uncacheable,
    /// The fetch failed for this reason.
    Failed(Reason),
    /// The writer went away without an outcome.
    Abandoned,
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
    /// Waits until the writer releases the key.
    pub async fn outcome(mut self) -> Outcome {
        match self.receiver.wait_for(|o| *o != Outcome::Pending).await {
            Ok(outcome) => *outcome,
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
            assert_eq!(w.await.ok(), Some(Outcome::Stored));
        }
        assert_eq!(table.in_flight(), 0);
        assert!(matches!(table.join(&key), Role::Writer(_)));
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
        assert_eq!(waiter.outcome().await, Outcome::Abandoned);
    }
}
