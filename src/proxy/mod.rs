//! The request pipeline: [`Proxy::handle`] and the phases it runs, top to
//! bottom. This file holds only the sequence; each phase calls into the
//! file named after what it does (docs/architecture.md has the map). This
//! is the only module that uses both the cache and the backends.
//!
//! ```text
//! handle ─ start: gate (limits) → rules (rewrite, or answer) → exchange (route, key, mode) → look
//!   look (lookup.rs): fresh ─────────────► deliver (304 / 206 / 200)
//!                     stale in grace ────► deliver + one background refresh (store.rs)
//!                     miss / revalidate ─► waiting list: writer → fetch
//!                                          | waiter → stream the busy object, or look again
//!   fetch: upstream.rs (backend head, peers) → fetch.rs (attempts, retries)
//!          → store.rs (304 refresh, a busy object filled by its own task, hit-for-miss)
//!          → deliver.rs
//!          → failed: rescue.rs (stale-if-error, else the synthetic 503)
//!   tunnel (tunnel.rs): an Upgrade request, never the cache: a fresh
//!          backend connection (fetch.rs), a 101 relayed and then a byte pipe
//!   exit: one log line and the metrics, from RequestCtx (a tunnel's line
//!         when it closes)
//! ```

mod compress;
mod context;
mod deliver;
mod esi;
mod exchange;
mod exit;
mod fetch;
mod gate;
pub mod headers;
mod invalidate;
mod lookup;
pub mod range;
mod rescue;
pub mod route;
mod rules;
mod setup;
mod store;
mod tunnel;
mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;

pub use context::{Attempt, Outcome, RequestCtx};
pub use tunnel::Tunnel;

use crate::access_log::AccessLogger;
use crate::body::{self, Body, RequestBodyState};
use crate::cache::coalesce::{Outcome as Flight, Role, Waiter, WriterGuard};
use crate::cache::policy::{self, RequestMode};
use crate::cache::{Cache, CachedObject, Found};
use crate::config::Config;
use crate::limits;
use crate::ops::Ops;
use crate::peer::ClientAddr;
use crate::ratelimit::RateLimits;
use crate::reason::Reason;
use crate::synth::{self, Pages, Synthetic};
use context::LogHead;
use exchange::Exchange;
use fetch::Backends;
use upstream::ClientHead;

/// How many times a waiter looks up again after its writer stored or went
/// away before it fetches on its own (a bound, not a tuning knob: one
/// look-up normally suffices).
const MAX_COLLAPSE_ROUNDS: usize = 3;

/// What [`Proxy::handle`] gives back: the response at once, or the future
/// that makes it.
// The large variant is the common one (a hit): boxing it would put back
// the allocation per hit this type exists to avoid.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    /// Answered without waiting: a fresh hit, a refusal, a synthetic page.
    Ready(Response<Body>),
    /// Waits for a backend, another request's fetch or the second tier.
    Waiting(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

/// How [`Proxy::start`] ended.
#[allow(clippy::large_enum_variant)] // as for `Handled`
enum Started {
    Answered(Response<Body>),
    /// Boxed: it is moved several times on its way into the future.
    Waiting(Box<Waiting>),
}

/// A request that has to wait, and for what.
struct Waiting {
    exchange: Exchange,
    parts: Parts,
    body: Body,
    next: Next,
}

/// What a look in the cache leads to.
#[allow(clippy::large_enum_variant)] // as for `Handled`
enum Next {
    /// The answer, at once.
    Answer(Response<Body>),
    /// A fetch from the backend, outside the waiting list; `stale`, if
    /// any, is revalidated or stands in on failure.
    Fetch { stale: Option<Arc<CachedObject>> },
    /// This request leads the waiting list: the second tier, then the backend.
    Lead {
        guard: WriterGuard,
        stale: Option<Arc<CachedObject>>,
    },
    /// Another request is fetching the key: wait for it, then look again.
    Wait {
        waiter: Waiter,
        stale: Option<Arc<CachedObject>>,
    },
    /// An Upgrade request (WebSocket): a tunnel to the backend, never the cache.
    Tunnel,
}

/// Everything a request needs: configuration, cache and backends.
pub struct Proxy {
    config: Arc<Config>,
    cache: Arc<Cache>,
    backends: Arc<Backends>,
    pages: Pages,
    ops: Arc<Ops>,
    rate_limits: RateLimits,
    access_log: AccessLogger,
}

impl Proxy {
    /// Handles one client request, start to finish. `tls`: it came over a
    /// TLS listener (the scheme of its cache key). `framing` is what the
    /// server counted in the raw head (HTTP/1), for `limits::check`.
    ///
    /// What needs no waiting (a fresh hit, a refusal, a synthetic answer)
    /// is answered here and now, with no future at all; only a request that
    /// must wait (for a backend, another request's fetch, the second tier)
    /// gets one, boxed. The pipeline's state machine is several KiB: built
    /// and moved for every hit, it cost a copy of all of it and an
    /// allocation per request, and kept in hyper's per-connection slot, it
    /// held that much memory on every idle keep-alive connection.
    pub fn handle<B>(
        self: &Arc<Self>,
        mut req: Request<B>,
        client: ClientAddr,
        tls: bool,
        framing: Option<limits::RawFraming>,
    ) -> Handled
    where
        B: Into<Body>,
    {
        // An HTTP/2 WebSocket (RFC 8441) goes on as the HTTP/1.1 handshake.
        if req.method() == Method::CONNECT {
            tunnel::from_extended_connect(&mut req);
        }
        let mut ctx = RequestCtx::new(self.xid(), client, req.method().clone());
        ctx.tls = tls;
        ctx.client_ip = headers::client_ip(
            client.ip(),
            req.headers(),
            &self.config.server.trusted_proxies,
        );
        ctx.wants_json = synth::wants_json(req.headers());
        if let Some(depth) = req.extensions().get::<esi::Depth>() {
            ctx.esi_depth = depth.0;
        }
        let log_head = self.access_log.is_on().then(|| LogHead::of(&req));
        let uri = req.uri().clone();
        match self.start(req, framing, &mut ctx) {
            Started::Answered(response) => {
                Handled::Ready(self.exit(&mut ctx, &uri, log_head, response))
            }
            Started::Waiting(waiting) => {
                let proxy = self.clone();
                let template = esi::Template::of(&waiting.parts);
                Handled::Waiting(Box::pin(async move {
                    let response = proxy.wait(waiting, &mut ctx).await;
                    let response = proxy.esi_waited(&ctx, template, response);
                    match ctx.tunnel.take() {
                        // A 101: the log line waits for the tunnel's end.
                        Some(pending) => {
                            proxy.exit_into_tunnel(ctx, uri, log_head, response, *pending)
                        }
                        None => proxy.exit(&mut ctx, &uri, log_head, response),
                    }
                }))
            }
        }
    }

    /// Steps 1 to 4 of the pipeline, none of which waits: limits, rules,
    /// route, the request's mode and the first look in the cache.
    fn start<B: Into<Body>>(
        self: &Arc<Self>,
        mut req: Request<B>,
        framing: Option<limits::RawFraming>,
        ctx: &mut RequestCtx,
    ) -> Started {
        // 1. Limits.
        if let Some(refusal) = self.gate(&req, framing, ctx) {
            return Started::Answered(refusal);
        }

        // 2. Rules: the request as `[[rule]]` rewrites it, or their answer.
        let applied = match self.request_rules(&mut req, ctx) {
            Ok(applied) => applied,
            Err(answer) => return Started::Answered(answer),
        };

        // 3. Route, from the rewritten request.
        let Some(mut exchange) = Exchange::of(
            &req,
            ctx.tls,
            &self.config.routes,
            &self.config.cache,
            applied,
        ) else {
            let refusal =
                Synthetic::backend_fetch_failed(Reason::NoRoute, self.config.server.retry_after);
            return Started::Answered(self.synthetic(ctx, refusal));
        };
        if let Some(answer) = self.invalidation(ctx, &req, &exchange) {
            return Started::Answered(answer);
        }
        let (parts, body) = req.into_parts();
        let mut body: Body = body.into();
        if !body.is_end_stream() {
            let state = Arc::<RequestBodyState>::default();
            body = body::limit_request(body, self.config.server.max_request_body, state.clone());
            exchange.body_state = Some(state);
        }

        // 4. Requests that may not use the cache go straight to the backend;
        // an Upgrade request (WebSocket) becomes a tunnel.
        if tunnel::is_requested(&parts) {
            ctx.outcome = Outcome::Pass;
            exchange.mode = RequestMode::Pass;
            return Started::Waiting(Box::new(Waiting {
                exchange,
                parts,
                body,
                next: Next::Tunnel,
            }));
        }
        if exchange.mode != RequestMode::Lookup {
            ctx.outcome = Outcome::Pass;
            let next = Next::Fetch { stale: None };
            return Started::Waiting(Box::new(Waiting {
                exchange,
                parts,
                body,
                next,
            }));
        }

        // 5. Look up.
        match self.look(ctx, &exchange, &parts, 0) {
            Next::Answer(response) => Started::Answered(self.esi_deliver(ctx, &parts, response)),
            next => Started::Waiting(Box::new(Waiting {
                exchange,
                parts,
                body,
                next,
            })),
        }
    }

    /// One look in the cache for `exchange`, and what follows from it: an
    /// answer (a hit, a refusal), or what to wait for. `rounds`: how many
    /// times this request has waited for another one's fetch already.
    fn look(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        parts: &Parts,
        rounds: usize,
    ) -> Next {
        let now = Instant::now();
        let mut stale = None;
        match self.cache.lookup(&exchange.key, &parts.headers) {
            Found::Object(object) => match self.serve_stored(ctx, exchange, parts, object, now) {
                Ok(response) => return Next::Answer(response),
                Err(revalidate) => stale = Some(revalidate),
            },
            Found::HitForMiss => {
                ctx.outcome = Outcome::Miss;
                ctx.not_stored = Some("hit-for-miss");
                return Next::Fetch { stale: None };
            }
            Found::Miss => {}
        }
        if exchange.cc.only_if_cached {
            let refusal = Synthetic::refuse(StatusCode::GATEWAY_TIMEOUT, Reason::OnlyIfCached);
            return Next::Answer(self.synthetic(ctx, refusal));
        }
        ctx.outcome = Outcome::Miss;
        // HEAD is not stored (the backend sends no body to store), so it
        // neither leads nor joins the waiting list.
        if parts.method == Method::HEAD || rounds >= MAX_COLLAPSE_ROUNDS {
            return Next::Fetch { stale };
        }
        match self.cache.coalescer.join(&exchange.key) {
            Role::Writer(guard) => Next::Lead { guard, stale },
            Role::Waiter(waiter) => Next::Wait { waiter, stale },
        }
    }

    /// The rest of the pipeline for a request that waits: for the backend,
    /// for another request's fetch of the same key (then it looks again), or
    /// for the second tier.
    async fn wait(self: &Arc<Self>, waiting: Box<Waiting>, ctx: &mut RequestCtx) -> Response<Body> {
        let Waiting {
            exchange,
            parts,
            body,
            mut next,
        } = *waiting;
        let mut rounds = 0;
        loop {
            match next {
                Next::Answer(response) => return response,
                Next::Fetch { stale } => {
                    return self.fetch(ctx, &exchange, parts, body, stale, None).await;
                }
                Next::Tunnel => return self.tunnel(ctx, &exchange, parts, body).await,
                Next::Lead { guard, stale } => {
                    // The writer asks the shared second tier before the backend.
                    let stale = match self.look_l2(ctx, &exchange, &parts, stale).await {
                        Ok(response) => {
                            guard.release(Flight::Stored);
                            return response;
                        }
                        Err(stale) => stale,
                    };
                    return self
                        .fetch(ctx, &exchange, parts, body, stale, Some(guard))
                        .await;
                }
                Next::Wait { waiter, stale } => {
                    ctx.collapsed = true;
                    // Streamed from the busy object as soon as its head is
                    // known, or told how the fetch ended.
                    let outcome = match self.follow(ctx, &exchange, &parts, waiter).await {
                        Ok(response) => return response,
                        Err(outcome) => outcome,
                    };
                    match outcome {
                        Flight::Stored
                        | Flight::Abandoned
                        | Flight::Pending
                        | Flight::Streaming(_) => rounds += 1,
                        Flight::Uncacheable => {
                            return self.fetch(ctx, &exchange, parts, body, stale, None).await;
                        }
                        Flight::Failed(reason) => {
                            let pool = &self.backends.pools[exchange.pool];
                            return self.stale_or_fail(ctx, &parts, stale, reason, pool);
                        }
                    }
                    next = self.look(ctx, &exchange, &parts, rounds);
                }
            }
        }
    }

    /// The fetch phase: the backend (with retries), then what its answer
    /// does to the cache, then delivery. `stale` is the object to
    /// revalidate (conditionally) or to fall back on; `guard` releases the
    /// waiting list.
    async fn fetch(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        parts: Parts,
        body: Body,
        stale: Option<Arc<CachedObject>>,
        guard: Option<WriterGuard>,
    ) -> Response<Body> {
        let client = ClientHead::of(&parts);
        let for_writer = guard.is_some();
        let fetched = self
            .fetch_upstream(
                ctx,
                exchange,
                &client,
                parts,
                body,
                stale.as_deref(),
                for_writer,
            )
            .await;
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err((error, pool)) => {
                return self.fetch_failed(ctx, exchange, pool, error, &client, stale, guard);
            }
        };
        let times = (fetched.request_time, fetched.response_time);
        let (mut head, body) = fetched.response.into_parts();
        let close_delimited = store::is_close_delimited(&client.method, &head);
        headers::remove_hop_by_hop(&mut head.headers);
        // `[[rule]] cookies = "strip"`: before the storability decision.
        if exchange.effects.strip_set_cookie {
            head.headers.remove(http::header::SET_COOKIE);
        }

        // Unsafe methods invalidate what the cache holds for the target.
        if policy::invalidates(&client.method, head.status) {
            self.invalidate_after_write(&exchange.key, exchange.host.as_deref(), &head.headers);
        }
        // An error answer is replaced by a stale object that may stand in for one.
        if rescue::is_error_status(head.status) {
            if let Some(stale) = rescue::stale_for_error(stale.as_ref()) {
                return self.stale_instead_of_status(ctx, &client, stale, head.status, guard);
            }
        }
        // A 304 to our own conditional request refreshes the stale object.
        if let (true, StatusCode::NOT_MODIFIED, Some(stale)) =
            (fetched.revalidating, head.status, &stale)
        {
            return self.refresh_stale(ctx, exchange, &client, &head, stale, times, guard);
        }

        let decision = self.storable(exchange, &client.method, &head, close_delimited);
        // A conditional client request is answered with a 304 once the full
        // response is known; the body still streams into the cache.
        let not_modified = exchange.mode == RequestMode::Lookup
            && head.status == StatusCode::OK
            && policy::not_modified(&client.headers, &head.headers);
        let mut cache_status = deliver::fetched_cache_status(ctx, stale.is_some());
        let version = client.version;
        let decode = self.must_decode(exchange.mode, &client.headers, &head);
        // The miss of an object about to be kept in gzip already says so.
        let varies = decision.is_ok()
            && self
                .compress_plan(&head, self.config.cache.max_object_size)
                .is_some();
        let body = self.store_or_pass(
            ctx,
            exchange,
            client.headers,
            &head,
            body,
            decision,
            times,
            guard,
            &mut cache_status,
        );
        if ctx.collapsed {
            cache_status.push_str("; collapsed");
        }
        // What was stored stays gzip; a client that cannot take it gets it decoded.
        let body = compress::decode_for_client(decode, &mut head.headers, body);
        if varies {
            compress::add_vary(&mut head.headers);
        }
        self.deliver_fetched(ctx, version, head, body, cache_status, not_modified)
    }
}

fn release(guard: Option<WriterGuard>, outcome: Flight) {
    if let Some(guard) = guard {
        guard.release(outcome);
    }
}
