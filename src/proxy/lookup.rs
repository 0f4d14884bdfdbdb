//! The look phase's verdicts: what a stored object found in the cache (or
//! in the shared second tier) means for this request — a fresh hit, a
//! stale answer within grace or `max-stale` (with one background refresh),
//! or an object to revalidate — and what a waiter makes of the fetch it
//! waits for: an answer streamed from the busy object as soon as its head
//! is known, or the fetch's outcome.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::Response;

use super::deliver::ttl_left;
use super::{headers, Exchange, Outcome, Proxy, RequestCtx};
use crate::body::Body;
use crate::cache::coalesce::{Outcome as Flight, Waiter};
use crate::cache::policy::{self, Usability};
use crate::cache::{BusyObject, CachedObject};

impl Proxy {
    /// The answer from a stored `object`, or the object back when it must
    /// be revalidated with the backend first.
    pub(super) fn serve_stored(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        parts: &Parts,
        object: Arc<CachedObject>,
        now: Instant,
    ) -> Result<Response<Body>, Arc<CachedObject>> {
        let age = object.age(now);
        match policy::usability(&object.lifetimes, age, &exchange.cc) {
            Usability::Fresh if ctx.collapsed => {
                // It waited for another request's fetch: a miss
                // that cost the backend nothing.
                ctx.outcome = Outcome::Miss;
                let status = HeaderValue::from_static("shellac; fwd=uri-miss; collapsed");
                Ok(self.deliver(parts, &object, now, "MISS", status))
            }
            Usability::Fresh => {
                ctx.outcome = Outcome::Hit;
                let status = headers::hit_status(ttl_left(&object, now));
                Ok(self.deliver(parts, &object, now, "HIT", status))
            }
            usable @ (Usability::StaleAccepted | Usability::Grace) => {
                ctx.outcome = Outcome::HitStale;
                let detail = if usable == Usability::Grace {
                    self.refresh_in_background(exchange, parts, &object);
                    "stale-while-revalidate"
                } else {
                    "max-stale"
                };
                let ttl = ttl_left(&object, now);
                let status = format!("shellac; hit; ttl={ttl}; detail={detail}");
                let status = headers::status_value(status);
                Ok(self.deliver(parts, &object, now, "HIT-STALE", status))
            }
            Usability::Revalidate => Err(object),
        }
    }

    /// The waiting list's writer looks in the second tier (`[cache.l2]`)
    /// before the backend: a fresh object there is a hit; a stale one
    /// joins `stale` as the object to revalidate or fall back on.
    pub(super) async fn look_l2(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        parts: &Parts,
        stale: Option<Arc<CachedObject>>,
    ) -> Result<Response<Body>, Option<Arc<CachedObject>>> {
        let Some(object) = self.cache.lookup_l2(&exchange.key, &parts.headers).await else {
            return Err(stale);
        };
        let now = Instant::now();
        let usable = policy::usability(&object.lifetimes, object.age(now), &exchange.cc);
        if usable == Usability::Fresh {
            ctx.outcome = Outcome::Hit;
            let status = format!("shellac; hit; ttl={}; detail=l2", ttl_left(&object, now));
            let status = headers::status_value(status);
            return Ok(self.deliver(parts, &object, now, "HIT", status));
        }
        Err(stale.or(Some(object)))
    }

    /// A waiter's wait: the answer streamed from the busy object as soon
    /// as the writer knows the response head, when the object fits this
    /// request; otherwise (and when the fetch ended before that) how the
    /// fetch ended.
    pub(super) async fn follow(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        parts: &Parts,
        mut waiter: Waiter,
    ) -> Result<Response<Body>, Flight> {
        match waiter.news().await {
            Flight::Streaming(busy) => match self.serve_busy(ctx, exchange, parts, &busy) {
                Some(response) => Ok(response),
                None => {
                    drop(busy);
                    Err(waiter.outcome().await)
                }
            },
            settled => Err(settled),
        }
    }

    /// The answer from a busy object, as from the stored object it will
    /// be (304 to a matching condition, `Age`, `Cache-Status: collapsed`),
    /// its body read as it arrives. `None` when it does not fit the
    /// request: another `Vary` variant, a `Range` (answered from the
    /// stored object once whole), or not fresh enough for the request.
    fn serve_busy(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        parts: &Parts,
        busy: &BusyObject,
    ) -> Option<Response<Body>> {
        let now = Instant::now();
        let fresh = policy::usability(&busy.head.lifetimes, busy.head.age(now), &exchange.cc)
            == Usability::Fresh;
        if !fresh || parts.headers.contains_key(header::RANGE) || !busy.fits(&parts.headers) {
            return None;
        }
        ctx.outcome = Outcome::Miss;
        let status = HeaderValue::from_static("shellac; fwd=uri-miss; collapsed");
        let live = Body::Shared(busy.reader());
        Some(self.deliver_object(parts, &busy.head, Some(live), now, "MISS", status))
    }
}
