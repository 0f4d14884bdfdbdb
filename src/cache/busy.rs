//! A busy object (Varnish's term): an object whose response head is known
//! and whose body is still arriving. The waiting list hands it to the
//! requests that wait for its fetch ([`super::coalesce::Outcome::Streaming`])
//! so that each can answer at once, reading the body as it arrives at its
//! own pace, instead of waiting for the whole body to be stored.
//!
//! It is the stored object to be, minus the body: the same status, stored
//! headers, age and lifetimes the [`CachedObject`] will have, so that a
//! waiter is answered exactly as it would be from the stored object; and
//! the `Vary` values of the request that fetched it, so that a waiter for
//! another variant does not get this one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};

use super::coalesce::{Outcome, WriterGuard};
use super::encoded::Compress;
use super::key::CacheKey;
use super::object::CachedObject;
use super::{vary_values, Cache};
use crate::body::shared::{self, Filled, Reservation, SharedBody, SharedReader};
use crate::body::Body;

/// Bodies up to this size are compressed where they complete, in well
/// under a millisecond, so that a client that has the whole body finds the
/// object stored; larger ones on a blocking thread (`cache::encoded`).
const INLINE_COMPRESS: usize = 64 * 1024;

/// Where a busy object goes once whole, and how large it may grow.
pub struct Destination {
    /// The cache to store it in.
    pub cache: Arc<Cache>,
    /// Its key.
    pub key: CacheKey,
    /// The headers of the request that fetched it (for `Vary`).
    pub request: HeaderMap,
    /// `[cache] hit_for_miss`, for a body that grew past `max_size`.
    pub hit_for_miss: Duration,
    /// The most it may hold: `[cache] max_object_size`, or
    /// `transit_capacity` when that is smaller.
    pub max_size: u64,
    /// `[compression]`: how to keep it once whole (on a blocking thread),
    /// when it is compressible; none stores it as it came.
    pub compress: Option<Compress>,
}

/// An object being fetched.
pub struct BusyObject {
    /// Status, stored headers, age and lifetimes; an empty body.
    pub head: CachedObject,
    names: Vec<HeaderName>,
    values: Vec<String>,
    body: Arc<SharedBody>,
}

impl std::fmt::Debug for BusyObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusyObject")
            .field("status", &self.head.status)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl BusyObject {
    /// Starts reading `body` into a busy object whose head is `head`, in a
    /// task of the fetch's own (it goes on when every client has left),
    /// hands it to the waiters through `guard`, and, when the body is
    /// whole, stores the object and releases the waiting list `Stored`.
    /// A body that outgrows `max_size` marks the key hit-for-miss
    /// (`Uncacheable`); one the transit budget has no more room for is not
    /// stored (`Abandoned`: a waiter tries again); one that fails stores
    /// nothing (`Abandoned`, as the guard drops).
    pub fn start(
        to: Destination,
        head: CachedObject,
        declared: Option<u64>,
        reservation: Reservation,
        body: Body,
        guard: Option<WriterGuard>,
    ) -> Arc<BusyObject> {
        let shared = SharedBody::new(declared, to.max_size, reservation);
        let names = to.cache.variant_names(&head.headers);
        let busy = Arc::new(BusyObject::new(head, names, &to.request, shared.clone()));
        if let Some(guard) = &guard {
            guard.stream(busy.clone());
        }
        let object = busy.clone();
        let on_filled = Box::new(move |filled: Filled| {
            let outcome = match filled {
                Filled::Complete(bytes) => {
                    let stored = object.complete(bytes);
                    match to.compress {
                        Some(plan) if stored.body.len() > INLINE_COMPRESS => {
                            // On a thread of its own; the waiting list stays
                            // held (new requests follow the busy object)
                            // until the object is stored.
                            drop(object);
                            tokio::task::spawn_blocking(move || {
                                let stored = Arc::new(plan.apply(stored));
                                to.cache.insert(&to.key, &to.request, stored);
                                if let Some(guard) = guard {
                                    guard.release(Outcome::Stored);
                                }
                            });
                            return;
                        }
                        Some(plan) => {
                            let stored = Arc::new(plan.apply(stored));
                            to.cache.insert(&to.key, &to.request, stored);
                        }
                        None => to.cache.insert(&to.key, &to.request, Arc::new(stored)),
                    }
                    Outcome::Stored
                }
                Filled::TooLarge => {
                    to.cache.mark_hit_for_miss(&to.key, to.hit_for_miss);
                    Outcome::Uncacheable
                }
                Filled::NoRoom => Outcome::Abandoned,
            };
            if let Some(guard) = guard {
                guard.release(outcome);
            }
        });
        shared::fill(body, shared, on_filled);
        busy
    }

    /// The object being fetched for a request with headers `request`,
    /// its variant picked by the `Vary` names `names`.
    pub(super) fn new(
        head: CachedObject,
        names: Vec<HeaderName>,
        request: &HeaderMap,
        body: Arc<SharedBody>,
    ) -> BusyObject {
        let values = vary_values(&names, request);
        BusyObject {
            head,
            names,
            values,
            body,
        }
    }

    /// Whether a request with headers `request` would be answered with this
    /// variant (always, without `Vary`).
    pub fn fits(&self, request: &HeaderMap) -> bool {
        self.names.is_empty() || vary_values(&self.names, request) == self.values
    }

    /// A body reading this object from its first byte.
    pub fn reader(&self) -> SharedReader {
        self.body.reader()
    }

    /// The object to store once the whole `body` has arrived.
    pub fn complete(&self, body: Bytes) -> CachedObject {
        self.head.with_body(body)
    }
}
