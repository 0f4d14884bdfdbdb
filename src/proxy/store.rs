//! What a fetched response does to the cache: whether it may be stored
//! (RFC 9111 via `cache::policy`, plus `[[route]]` overrides), storing it
//! while it streams to the client, hit-for-miss when it may not be, the
//! refresh of a stale object by a 304, the one background refresh in
//! grace, and the invalidation after unsafe methods (`PURGE` and the
//! apps' protocols are `invalidate.rs`).
//!
//! Every path releases the waiting list's writer guard with the outcome
//! the waiters need: `Stored`, `Uncacheable` or (elsewhere) `Failed`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use http::header::{self, HeaderMap, HeaderValue};
use http::response::Parts as ResponseParts;
use http::uri::Uri;
use http::{Method, Request, Response};

use super::upstream::ClientHead;
use super::{deliver, release, Exchange, Outcome, Proxy, RequestCtx};
use crate::body::Body;
use crate::cache::busy::{BusyObject, Destination};
use crate::cache::coalesce::{Outcome as Flight, Role, WriterGuard};
use crate::cache::policy::{self, CacheControl, Lifetimes, NotStored, RequestMode, StoreRules};
use crate::cache::{CacheKey, CachedObject};
use crate::peer::ClientAddr;

impl Proxy {
    /// Whether the fetched response may be stored, and for how long. Only a
    /// GET that may use the cache stores; a close-delimited body never does
    /// (its end cannot be told from a cut).
    pub(super) fn storable(
        &self,
        exchange: &Exchange,
        method: &Method,
        head: &ResponseParts,
        close_delimited: bool,
    ) -> Result<Lifetimes, NotStored> {
        if *method != Method::GET || exchange.mode == RequestMode::Pass {
            return Err(NotStored::Method);
        }
        let lifetimes = policy::storable(
            method,
            exchange.mode,
            &exchange.cc,
            head.status,
            &head.headers,
            self.store_rules(),
        )
        .map(|lifetimes| self.route_overrides(exchange, lifetimes))?;
        if close_delimited {
            return Err(NotStored::CloseDelimited);
        }
        Ok(lifetimes)
    }

    /// The body to send: for a storable response, a reader of the busy
    /// object that a task of the fetch's own fills at the backend's speed
    /// and stores when whole (every waiter of the key reads the same busy
    /// object, handed to them through `guard`); else the backend's body as
    /// it is (and hit-for-miss when the response itself made it
    /// uncacheable). Appends `; stored` to `cache_status` when storing.
    ///
    /// A response too large to be stored (its `Content-Length` over
    /// `max_object_size` or `transit_capacity`) is passed; so is one for
    /// which the transit budget has no room now (not stored this time, the
    /// waiters try again), so that the memory of fetches in progress stays
    /// bounded (docs/caching.md, "Fetches in progress").
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_or_pass(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        client_headers: HeaderMap,
        head: &ResponseParts,
        body: Body,
        decision: Result<Lifetimes, NotStored>,
        times: (SystemTime, SystemTime),
        guard: Option<WriterGuard>,
        cache_status: &mut String,
    ) -> Body {
        let c = &self.config.cache;
        let declared = deliver::content_length(&head.headers);
        // An object larger than the transit budget could never be buffered.
        let max_size = c.max_object_size.min(c.transit_capacity);
        let too_big = declared.is_some_and(|len| len > max_size);
        match (decision, body) {
            (Ok(lifetimes), Body::Backend(timed)) if !too_big => {
                let Some(reservation) = self
                    .cache
                    .transit()
                    .reserve(declared.unwrap_or(0), c.transit_capacity)
                else {
                    ctx.not_stored = Some("transit-full");
                    release(guard, Flight::Abandoned);
                    return Body::Backend(timed);
                };
                cache_status.push_str("; stored");
                let initial_age = policy::initial_age(&head.headers, times.0, times.1);
                let busy = BusyObject::start(
                    Destination {
                        cache: self.cache.clone(),
                        key: exchange.key.clone(),
                        request: client_headers,
                        hit_for_miss: c.hit_for_miss,
                        max_size,
                        compress: self.compress_plan(head, c.max_object_size),
                    },
                    stored_head(head, initial_age, lifetimes),
                    declared,
                    reservation,
                    Body::Backend(timed),
                    guard,
                );
                Body::Shared(busy.reader())
            }
            (decision, body) => {
                let reason = decision.err();
                ctx.not_stored = reason
                    .map(NotStored::as_str)
                    .or(too_big.then_some("too-large"));
                let response_made_it_uncacheable =
                    too_big || reason.is_some_and(|r| r.is_response_decision());
                if guard.is_some() && response_made_it_uncacheable {
                    self.cache
                        .mark_hit_for_miss(&exchange.key, self.config.cache.hit_for_miss);
                }
                release(guard, Flight::Uncacheable);
                body
            }
        }
    }

    /// A 304 to our own conditional request: the stale object, refreshed
    /// with the 304's headers and a new age, is stored again (when it still
    /// may be) and delivered.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refresh_stale(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        client: &ClientHead,
        head: &ResponseParts,
        stale: &CachedObject,
        times: (SystemTime, SystemTime),
        guard: Option<WriterGuard>,
    ) -> Response<Body> {
        let initial_age = || policy::initial_age(&head.headers, times.0, times.1);
        let mut merged = stale.headers.clone();
        for (name, value) in &head.headers {
            merged.insert(name.clone(), value.clone());
        }
        let decision = policy::storable(
            &client.method,
            exchange.mode,
            &exchange.cc,
            stale.status,
            &merged,
            self.store_rules(),
        )
        .map(|lifetimes| self.route_overrides(exchange, lifetimes));
        let refreshed = match decision {
            Ok(lifetimes) => {
                let refreshed =
                    Arc::new(stale.revalidated(&head.headers, initial_age(), lifetimes));
                self.cache
                    .insert(&exchange.key, &client.headers, refreshed.clone());
                release(guard, Flight::Stored);
                refreshed
            }
            Err(reason) => {
                ctx.not_stored = Some(reason.as_str());
                release(guard, Flight::Uncacheable);
                Arc::new(stale.revalidated(&head.headers, initial_age(), stale.lifetimes))
            }
        };
        self.deliver(
            &client.parts(),
            &refreshed,
            Instant::now(),
            "MISS",
            HeaderValue::from_static("shellac; fwd=stale; fwd-status=304; stored"),
        )
    }

    /// `[[route]] ttl` and `grace` replace what the response said, and the
    /// matching `[[rule]]`s' `ttl`, `grace` and `keep` replace those.
    fn route_overrides(&self, exchange: &Exchange, lifetimes: Lifetimes) -> Lifetimes {
        exchange
            .effects
            .apply(self.route_only_overrides(exchange, lifetimes))
    }

    fn route_only_overrides(&self, exchange: &Exchange, mut lifetimes: Lifetimes) -> Lifetimes {
        let route = &self.config.routes[exchange.route];
        if let Some(ttl) = route.ttl {
            lifetimes.ttl = ttl;
        }
        if let (Some(grace), false) = (route.grace, lifetimes.must_revalidate) {
            lifetimes.grace = grace;
            lifetimes.stale_if_error = lifetimes.stale_if_error.max(grace + lifetimes.keep);
        }
        lifetimes
    }

    fn store_rules(&self) -> StoreRules {
        let c = &self.config.cache;
        StoreRules {
            default_ttl: c.default_ttl,
            heuristic_max: c.heuristic_max,
            default_grace: c.default_grace,
            default_keep: c.default_keep,
            store_errors: c.store_errors,
        }
    }

    /// Starts one background fetch for a stale object served in grace, unless
    /// one is already running for the key.
    pub(super) fn refresh_in_background(
        self: &Arc<Self>,
        exchange: &Exchange,
        parts: &http::request::Parts,
        stale: &Arc<CachedObject>,
    ) {
        let Role::Writer(guard) = self.cache.coalescer.join(&exchange.key) else {
            return;
        };
        let proxy = self.clone();
        let exchange = Exchange {
            key: exchange.key.clone(),
            mode: exchange.mode,
            pool: exchange.pool,
            route: exchange.route,
            host: exchange.host.clone(),
            effects: exchange.effects,
            cc: CacheControl::default(),
            body_state: None,
        };
        let mut request = Request::new(());
        *request.uri_mut() = parts.uri.clone();
        *request.headers_mut() = parts.headers.clone();
        request.headers_mut().remove(header::CACHE_CONTROL);
        let (bg_parts, ()) = request.into_parts();
        let stale = stale.clone();
        let client = ClientAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 0)));
        tokio::spawn(async move {
            let mut ctx = RequestCtx::new(proxy.xid(), client, Method::GET);
            ctx.outcome = Outcome::Miss;
            let uri = bg_parts.uri.clone();
            let response = proxy
                .fetch(
                    &mut ctx,
                    &exchange,
                    bg_parts,
                    Body::Empty,
                    Some(stale),
                    Some(guard),
                )
                .await;
            let status = response.status();
            deliver::drain(response.into_body()).await;
            tracing::debug!(xid = ctx.xid, %uri, status = status.as_u16(), "background refresh done");
        });
    }

    /// RFC 9111 §4.4: the target URI, and `Location` / `Content-Location`
    /// when they point at the same host.
    pub(super) fn invalidate_after_write(
        &self,
        key: &CacheKey,
        host: Option<&str>,
        response: &HeaderMap,
    ) {
        self.cache.purge(key);
        let host = crate::host::for_key(host);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(location) = response.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = location.parse::<Uri>() else {
                continue;
            };
            let same_host = uri
                .authority()
                .is_none_or(|a| crate::host::for_key(Some(a.as_str())) == host);
            if let (true, Some(target)) = (same_host, uri.path_and_query()) {
                self.cache
                    .purge(&CacheKey::new("http", &host, target.as_str()));
            }
        }
    }
}

/// The object a fetched response will be once stored, without its body:
/// no `Age` (computed on every hit), no fields named by `no-cache="…"` or
/// `private="…"`.
fn stored_head(head: &ResponseParts, initial_age: Duration, lifetimes: Lifetimes) -> CachedObject {
    let mut headers = head.headers.clone();
    headers.remove(header::AGE);
    for field in policy::qualified_fields(&head.headers) {
        headers.remove(field.as_str());
    }
    CachedObject::new(head.status, headers, Bytes::new(), initial_age, lifetimes)
}

/// Whether a backend response's body ends only when the backend closes the
/// connection (RFC 9112 §6.3 item 8): a body that may have a status to carry
/// one, with neither `Content-Length` nor `Transfer-Encoding`.
pub(super) fn is_close_delimited(method: &Method, head: &ResponseParts) -> bool {
    let bodyless = *method == Method::HEAD
        || head.status.is_informational()
        || matches!(head.status.as_u16(), 204 | 304);
    !bodyless
        && !head.headers.contains_key(header::CONTENT_LENGTH)
        && !head.headers.contains_key(header::TRANSFER_ENCODING)
}
