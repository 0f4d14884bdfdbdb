//! The request pipeline: one ordered async function, [`Proxy::handle`],
//! whose phases are written out top to bottom. This is the only module that
//! uses both the cache and the backends.
//!
//! ```text
//! limits → route → cache lookup ─ fresh ──────────────► deliver (304 / 206 / 200)
//!                               ├ stale in grace ─────► deliver + one background refresh
//!                               └ miss / revalidate ──► waiting list ─ writer ─► fetch
//!                                                                     └ waiter ─► look up again
//! fetch → 304: refresh the stored object │ storable: store while streaming │ else hit-for-miss
//!       → failed: stale-if-error, else the synthetic 503
//! single exit: one log line from RequestCtx
//! ```

mod context;
mod fetch;
pub mod headers;
pub mod range;
pub mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

pub use context::{Attempt, Outcome, RequestCtx};

use crate::access_log::AccessLogger;
use crate::backend::FetchError;
use crate::body::{self, Body, CaptureBody, Captured, RequestBodyFault, RequestBodyState};
use crate::cache::coalesce::{Outcome as Flight, Role, Waiter, WriterGuard};
use crate::cache::policy::{self, CacheControl, RequestMode, StoreRules, Usability};
use crate::cache::{Cache, CacheKey, CachedObject, Found, ObjectStore};
use crate::config::defaults::{RETRY_AFTER_MAX, RETRY_AFTER_MIN};
use crate::config::Config;
use crate::limits;
use crate::ops::Ops;
use crate::ratelimit::RateLimits;
use crate::reason::Reason;
use crate::synth::{self, Facts, Pages, Synthetic};
use context::LogHead;
use fetch::{Backends, Pool};
use range::RangeAnswer;

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

/// The facts about the client's request that later phases need.
struct Exchange {
    key: CacheKey,
    mode: RequestMode,
    pool: usize,
    /// Index into the configuration's routes, for their overrides.
    route: usize,
    host: Option<String>,
    /// Directives of the client's `Cache-Control`.
    cc: CacheControl,
    /// Why the client's request body was cut off, if it was; none for a
    /// request without a body (most of them), which then costs no allocation.
    body_state: Option<Arc<RequestBodyState>>,
}

impl Proxy {
    /// A proxy for `config` over `store`, with fresh operational state
    /// (tests and benches; `run` uses [`Proxy::build`]).
    pub fn new(config: Arc<Config>, store: Arc<dyn ObjectStore>) -> Proxy {
        let ops = Arc::new(Ops::default());
        let access_log = AccessLogger::start(&config.log, ops.metrics.access_log_dropped.clone())
            .unwrap_or_else(|_| AccessLogger::off());
        Proxy::build(config, Arc::new(Cache::new(store)), ops, access_log, None)
    }

    /// A proxy for `config` sharing `cache` and `ops` with earlier
    /// generations; backends whose settings did not change are taken over
    /// from `previous`, with their connection pools and health history.
    pub fn build(
        config: Arc<Config>,
        cache: Arc<Cache>,
        ops: Arc<Ops>,
        access_log: AccessLogger,
        previous: Option<&Proxy>,
    ) -> Proxy {
        let backends = Arc::new(Backends::build(
            &config,
            previous.map(|p| p.backends.as_ref()),
        ));
        Proxy {
            pages: Pages::new(&config.server),
            rate_limits: RateLimits::new(&config.rate_limits),
            config,
            cache,
            backends,
            ops,
            access_log,
        }
    }

    /// The configuration this generation runs on.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The backends and pools.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// Operational state shared across reloads.
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    /// The access-log writer.
    pub fn access_log(&self) -> &AccessLogger {
        &self.access_log
    }

    /// The rate limiters (the server trims them now and then).
    pub fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// The cache (for tests and metrics).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// `[server] max_connections` (0: no cap), for the accept loop.
    pub fn max_connections(&self) -> usize {
        self.config.server.max_connections
    }

    /// The answer on a connection accepted over `[server] max_connections`:
    /// the synthetic 503 with `Retry-After`, and the connection closed.
    pub fn over_capacity(&self, version: Version) -> Response<Body> {
        let refusal =
            Synthetic::backend_fetch_failed(Reason::MaxConnections, self.config.server.retry_after);
        let mut response = refusal.render(self.xid());
        response
            .headers_mut()
            .insert(headers::X_CACHE, HeaderValue::from_static("SYNTH"));
        close_connection(response, version)
    }

    /// Handles one client request, start to finish. `framing` is what the
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
        req: Request<B>,
        client: SocketAddr,
        framing: Option<limits::RawFraming>,
    ) -> Handled
    where
        B: Into<Body>,
    {
        let mut ctx = RequestCtx::new(self.xid(), client, req.method().clone());
        ctx.client_ip = headers::client_ip(
            client.ip(),
            req.headers(),
            &self.config.server.trusted_proxies,
        );
        ctx.wants_json = synth::wants_json(req.headers());
        let log_head = self.access_log.is_on().then(|| LogHead::of(&req));
        let uri = req.uri().clone();
        match self.start(req, framing, &mut ctx) {
            Started::Answered(response) => {
                Handled::Ready(self.exit(&mut ctx, &uri, log_head, response))
            }
            Started::Waiting(waiting) => {
                let proxy = self.clone();
                Handled::Waiting(Box::pin(async move {
                    let response = proxy.wait(waiting, &mut ctx).await;
                    proxy.exit(&mut ctx, &uri, log_head, response)
                }))
            }
        }
    }

    /// The single exit: metrics, the debug trace and the access log.
    fn exit(
        &self,
        ctx: &mut RequestCtx,
        uri: &Uri,
        log_head: Option<LogHead>,
        mut response: Response<Body>,
    ) -> Response<Body> {
        if ctx.retries > 0 {
            response
                .headers_mut()
                .insert(headers::X_SHELLAC_RETRIES, HeaderValue::from(ctx.retries));
        }
        let status = response.status();
        self.ops.metrics.record(&ctx.finished(status.as_u16()));
        ctx.trace(uri, status);
        if let Some(head) = log_head {
            let bytes = content_length(response.headers());
            self.access_log
                .log(ctx.access_line(self.access_log.format(), &head, status, bytes));
        }
        response
    }

    fn xid(&self) -> u64 {
        self.ops.next_xid()
    }

    /// Steps 1 to 4 of the pipeline, none of which waits: limits, route, the
    /// request's mode and the first look in the cache.
    fn start<B: Into<Body>>(
        self: &Arc<Self>,
        req: Request<B>,
        framing: Option<limits::RawFraming>,
        ctx: &mut RequestCtx,
    ) -> Started {
        // 1. Limits.
        if let Some(retry_after) = self.ops.maintenance(self.config.server.retry_after) {
            return Started::Answered(self.synthetic(ctx, Synthetic::maintenance(retry_after)));
        }
        if let Err(refusal) = limits::check(&req, framing, &self.config.server) {
            let response = self.synthetic(ctx, refusal);
            return Started::Answered(close_connection(response, req.version()));
        }
        if !self.rate_limits.is_empty() {
            if let Some(wait) =
                self.rate_limits
                    .check(req.uri().path(), ctx.client_ip, req.headers())
            {
                return Started::Answered(self.synthetic(ctx, Synthetic::rate_limited(wait)));
            }
        }

        // 2. Route.
        let host = request_host(&req).map(str::to_string);
        let routes = &self.config.routes;
        let Some(route) = route::select(routes, req.method(), host.as_deref(), req.uri().path())
        else {
            let refusal =
                Synthetic::backend_fetch_failed(Reason::NoRoute, self.config.server.retry_after);
            return Started::Answered(self.synthetic(ctx, refusal));
        };
        let target = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        // A GET or HEAD with a body ("fat GET") is passed: the body is
        // forwarded untouched, but a response that may depend on it is
        // neither served from nor stored under a key that ignores it.
        let mode = if limits::has_body(&req) {
            RequestMode::Pass
        } else {
            policy::request_mode(req.method(), req.headers())
        };
        let mut exchange = Exchange {
            key: CacheKey::new("http", &crate::host::for_key(host.as_deref()), target),
            mode: match mode {
                // `[[route]] pass = true`: neither looked up nor stored.
                _ if route.pass => RequestMode::Pass,
                mode => mode,
            },
            pool: route.pool,
            route: routes
                .iter()
                .position(|r| std::ptr::eq(r, route))
                .unwrap_or(0),
            host,
            cc: CacheControl::from_headers(req.headers()),
            body_state: None,
        };
        if req.method().as_str() == "PURGE" {
            return Started::Answered(self.purge(ctx, &exchange.key));
        }
        let (parts, body) = req.into_parts();
        let mut body: Body = body.into();
        if !body.is_end_stream() {
            let state = Arc::<RequestBodyState>::default();
            body = body::limit_request(body, self.config.server.max_request_body, state.clone());
            exchange.body_state = Some(state);
        }

        // 3. Requests that may not use the cache go straight to the backend.
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

        // 4. Look up.
        match self.look(ctx, &exchange, &parts, 0) {
            Next::Answer(response) => Started::Answered(response),
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
            Found::Object(object) => {
                let age = object.age(now);
                match policy::usability(&object.lifetimes, age, &exchange.cc) {
                    Usability::Fresh if ctx.collapsed => {
                        // It waited for another request's fetch: a miss
                        // that cost the backend nothing.
                        ctx.outcome = Outcome::Miss;
                        let status = HeaderValue::from_static("shellac; fwd=uri-miss; collapsed");
                        return Next::Answer(self.deliver(parts, &object, now, "MISS", status));
                    }
                    Usability::Fresh => {
                        ctx.outcome = Outcome::Hit;
                        let status = headers::hit_status(ttl_left(&object, now));
                        return Next::Answer(self.deliver(parts, &object, now, "HIT", status));
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
                        return Next::Answer(self.deliver(
                            parts,
                            &object,
                            now,
                            "HIT-STALE",
                            status,
                        ));
                    }
                    Usability::Revalidate => stale = Some(object),
                }
            }
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
                Next::Lead { guard, stale } => {
                    // The writer asks the shared second tier before the backend.
                    let mut stale = stale;
                    if let Some(object) = self.cache.lookup_l2(&exchange.key, &parts.headers).await
                    {
                        let now = Instant::now();
                        let usable =
                            policy::usability(&object.lifetimes, object.age(now), &exchange.cc);
                        if usable == Usability::Fresh {
                            guard.release(Flight::Stored);
                            ctx.outcome = Outcome::Hit;
                            let status =
                                format!("shellac; hit; ttl={}; detail=l2", ttl_left(&object, now));
                            let status = headers::status_value(status);
                            return self.deliver(&parts, &object, now, "HIT", status);
                        }
                        stale = stale.or(Some(object));
                    }
                    return self
                        .fetch(ctx, &exchange, parts, body, stale, Some(guard))
                        .await;
                }
                Next::Wait { waiter, stale } => {
                    ctx.collapsed = true;
                    match waiter.outcome().await {
                        Flight::Stored | Flight::Abandoned | Flight::Pending => rounds += 1,
                        Flight::Uncacheable => {
                            return self.fetch(ctx, &exchange, parts, body, stale, None).await;
                        }
                        Flight::Failed(reason) => {
                            if let Some(stale) = stale.filter(|s| {
                                policy::usable_on_error(&s.lifetimes, s.age(Instant::now()))
                            }) {
                                return self.serve_stale_on_error(ctx, &parts, &stale, reason);
                            }
                            ctx.error = Some(reason);
                            let pool = &self.backends.pools[exchange.pool];
                            let refusal =
                                Synthetic::backend_fetch_failed(reason, self.retry_after(pool));
                            return self.synthetic(ctx, refusal);
                        }
                    }
                    next = self.look(ctx, &exchange, &parts, rounds);
                }
            }
        }
    }

    /// Fetches from the route's pool; stores the response while it streams
    /// when it may be stored; releases the waiting list through `guard`.
    /// `stale` is the object to revalidate (conditionally) or to fall back on.
    async fn fetch(
        self: &Arc<Self>,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        parts: Parts,
        body: Body,
        stale: Option<Arc<CachedObject>>,
        guard: Option<WriterGuard>,
    ) -> Response<Body> {
        let method = parts.method.clone();
        let version = parts.version;
        // The client's head stays as it came: the storing decisions read
        // it, and a retry rebuilds the backend's head from it (the first
        // attempt's head goes to hyper, which keeps it once sent).
        let client_headers = parts.headers.clone();
        let client_uri = parts.uri.clone();
        let storing = method == Method::GET && exchange.mode != RequestMode::Pass;
        // `[cluster]`: a key another live peer owns is fetched from it.
        let via_peer = guard.is_some()
            && method == Method::GET
            && self.owned_elsewhere(exchange, &client_headers);
        let for_writer = guard.is_some();
        let client = ctx.client;
        let backend_head = |parts: Parts, via_peer: bool| {
            self.backend_head(
                parts,
                client,
                exchange,
                stale.as_deref(),
                for_writer,
                via_peer,
            )
        };
        let (backend_parts, revalidating) = backend_head(parts, via_peer);
        // Another copy of the head, only when a retry needs one.
        let again = |via_peer: bool| {
            let mut parts = client_parts(&method, version, &client_headers);
            parts.uri = client_uri.clone();
            backend_head(parts, via_peer).0
        };
        let mut pool = match (&self.backends.peers, via_peer) {
            (Some(peers), true) => &peers.others,
            _ => &self.backends.pools[exchange.pool],
        };
        let request_time = SystemTime::now();
        let route = &self.config.routes[exchange.route];
        let retry = &self.config.retry;
        let key = exchange.key.as_str();
        let mut fetched = fetch::fetch(
            pool,
            route,
            retry,
            key,
            backend_parts,
            body,
            &|| again(via_peer),
            ctx,
        )
        .await;
        if via_peer {
            if let Err(error) = &fetched {
                // No peer answered: the origin, as without peering.
                tracing::info!(xid = ctx.xid, %error, "peer fetch failed: fetching from the origin");
                pool = &self.backends.pools[exchange.pool];
                let parts = again(false);
                let again = || again(false);
                fetched =
                    fetch::fetch(pool, route, retry, key, parts, Body::Empty, &again, ctx).await;
            }
        }
        let response = match fetched {
            Ok(response) => response,
            Err(error) => {
                if let Some(fault) = exchange.body_state.as_ref().and_then(|s| s.fault()) {
                    // The client's body failed first: its fault, not the backend's.
                    release(guard, Flight::Abandoned);
                    return self.request_body_refused(ctx, fault, version);
                }
                return self.fetch_failed(ctx, pool, error, &client_headers, version, stale, guard);
            }
        };
        let response_time = SystemTime::now();
        let (mut head, body) = response.into_parts();
        let close_delimited = is_close_delimited(&method, &head);
        headers::remove_hop_by_hop(&mut head.headers);

        // Unsafe methods invalidate what the cache holds for the target.
        if policy::invalidates(&method, head.status) {
            self.invalidate_after_write(&exchange.key, exchange.host.as_deref(), &head.headers);
        }

        // RFC 5861 §4: an error answer (500, 502, 503, 504) is replaced by
        // a stale object that may stand in for one.
        if matches!(head.status.as_u16(), 500 | 502 | 503 | 504) {
            if let Some(stale) = stale
                .as_ref()
                .filter(|s| policy::usable_on_error(&s.lifetimes, s.age(Instant::now())))
            {
                let reason = Reason::BackendErrorStatus;
                release(guard, Flight::Failed(reason));
                ctx.error = Some(reason);
                let client = client_parts(&method, version, &client_headers);
                let mut response = self.serve_stale_on_error(ctx, &client, stale, reason);
                if let Ok(value) = HeaderValue::from_str(&format!(
                    "shellac; hit; fwd=stale; fwd-status={}",
                    head.status.as_u16()
                )) {
                    response.headers_mut().insert(headers::CACHE_STATUS, value);
                }
                return response;
            }
        }

        let rules = self.store_rules();
        // Only a response that is stored or refreshes one needs its age.
        let initial_age = || policy::initial_age(&head.headers, request_time, response_time);

        // A 304 to our own conditional request refreshes the stale object.
        if let (true, StatusCode::NOT_MODIFIED, Some(stale)) = (revalidating, head.status, &stale) {
            let mut merged = stale.headers.clone();
            for (name, value) in &head.headers {
                merged.insert(name.clone(), value.clone());
            }
            let decision = policy::storable(
                &method,
                exchange.mode,
                &exchange.cc,
                stale.status,
                &merged,
                rules,
            )
            .map(|lifetimes| self.route_overrides(exchange, lifetimes));
            let refreshed = match decision {
                Ok(lifetimes) => {
                    let refreshed =
                        Arc::new(stale.revalidated(&head.headers, initial_age(), lifetimes));
                    self.cache
                        .insert(&exchange.key, &client_headers, refreshed.clone());
                    release(guard, Flight::Stored);
                    refreshed
                }
                Err(reason) => {
                    ctx.not_stored = Some(reason.as_str());
                    release(guard, Flight::Uncacheable);
                    Arc::new(stale.revalidated(&head.headers, initial_age(), stale.lifetimes))
                }
            };
            let fake_parts = client_parts(&method, version, &client_headers);
            return self.deliver(
                &fake_parts,
                &refreshed,
                Instant::now(),
                "MISS",
                HeaderValue::from_static("shellac; fwd=stale; fwd-status=304; stored"),
            );
        }

        let decision = if storing {
            policy::storable(
                &method,
                exchange.mode,
                &exchange.cc,
                head.status,
                &head.headers,
                rules,
            )
            .map(|lifetimes| self.route_overrides(exchange, lifetimes))
        } else {
            Err(policy::NotStored::Method)
        }
        .and_then(|lifetimes| {
            if close_delimited {
                Err(policy::NotStored::CloseDelimited)
            } else {
                Ok(lifetimes)
            }
        });
        let too_big = content_length(&head.headers)
            .is_some_and(|len| len > self.config.cache.max_object_size);
        // A conditional client request is answered with a 304 once the full
        // response is known; the body still streams into the cache.
        let answer_not_modified = exchange.mode == RequestMode::Lookup
            && head.status == StatusCode::OK
            && policy::not_modified(&client_headers, &head.headers);
        // Room for the longest value built below, so it never regrows.
        let mut cache_status = String::with_capacity(96);
        cache_status.push_str("shellac; fwd=");
        cache_status.push_str(match ctx.outcome {
            Outcome::Pass => "bypass",
            _ if stale.is_some() => "stale",
            _ => "uri-miss",
        });
        if let Some(reason) = ctx.not_stored {
            cache_status.push_str("; detail=");
            cache_status.push_str(reason);
        }
        let body = match (decision, body) {
            (Ok(lifetimes), Body::Backend(timed)) if !too_big => {
                let initial_age = initial_age();
                let mut stored_headers = head.headers.clone();
                stored_headers.remove(header::AGE);
                for field in policy::qualified_fields(&head.headers) {
                    stored_headers.remove(field.as_str());
                }
                cache_status.push_str("; stored");
                let cache = self.cache.clone();
                let key = exchange.key.clone();
                let status = head.status;
                let hit_for_miss = self.config.cache.hit_for_miss;
                let mut guard = guard;
                let on_complete = Box::new(move |captured: Captured| match captured {
                    Captured::Complete(bytes) => {
                        let object = CachedObject::new(
                            status,
                            stored_headers,
                            bytes,
                            initial_age,
                            lifetimes,
                        );
                        cache.insert(&key, &client_headers, Arc::new(object));
                        release(guard.take(), Flight::Stored);
                    }
                    Captured::TooLarge => {
                        cache.mark_hit_for_miss(&key, hit_for_miss);
                        release(guard.take(), Flight::Uncacheable);
                    }
                });
                Body::Capture(Box::new(CaptureBody::new(
                    timed,
                    self.config.cache.max_object_size,
                    on_complete,
                )))
            }
            (decision, body) => {
                let reason = decision.err();
                ctx.not_stored = reason
                    .map(policy::NotStored::as_str)
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
        };
        if ctx.collapsed {
            cache_status.push_str("; collapsed");
        }

        if answer_not_modified {
            tokio::spawn(drain(body));
            let mut response = Response::new(Body::Empty);
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = head.headers;
            response.headers_mut().remove(header::CONTENT_LENGTH);
            self.finish_headers(
                response.headers_mut(),
                version,
                if ctx.outcome == Outcome::Pass {
                    "PASS"
                } else {
                    "MISS"
                },
                headers::status_value(cache_status),
            );
            return response;
        }

        let x_cache = if ctx.outcome == Outcome::Pass {
            "PASS"
        } else {
            "MISS"
        };
        self.finish_headers(
            &mut head.headers,
            version,
            x_cache,
            headers::status_value(cache_status),
        );
        Response::from_parts(head, body)
    }

    /// The backend's request head made from the client's: see
    /// [`prepare_backend_request`]; then conditional on `stale`'s validators
    /// when revalidating (the second value says whether it became
    /// conditional), or stripped of the client's own conditions (and, for the
    /// waiting list's writer, its range) when filling the cache; marked for a
    /// peer when `via_peer`.
    fn backend_head(
        &self,
        mut parts: Parts,
        client: SocketAddr,
        exchange: &Exchange,
        stale: Option<&CachedObject>,
        for_writer: bool,
        via_peer: bool,
    ) -> (Parts, bool) {
        prepare_backend_request(&mut parts, client, exchange.host.as_deref());
        let revalidating = match (stale, exchange.mode) {
            (Some(stale), RequestMode::Lookup) => add_validators(&mut parts.headers, stale),
            (None, RequestMode::Lookup) if parts.method == Method::GET => {
                // Fill the cache with the whole representation; the client's
                // own conditions and range are answered from it afterwards.
                strip_conditionals(&mut parts.headers);
                if for_writer {
                    parts.headers.remove(header::RANGE);
                }
                false
            }
            _ => false,
        };
        if via_peer {
            parts
                .headers
                .insert(headers::X_SHELLAC_PEER, HeaderValue::from_static("1"));
        }
        (parts, revalidating)
    }

    /// Whether `[cluster]` peering sends this miss to another peer: the
    /// key's owner on the ring is live and not this node, and the request
    /// did not come from a peer already.
    fn owned_elsewhere(&self, exchange: &Exchange, client_headers: &HeaderMap) -> bool {
        let Some(peers) = &self.backends.peers else {
            return false;
        };
        !client_headers.contains_key(headers::X_SHELLAC_PEER)
            && peers
                .ring
                .pick(exchange.key.as_str(), &[])
                .is_some_and(|(owner, _)| owner != peers.me)
    }

    /// `[[route]] ttl` and `grace` replace what the response said.
    fn route_overrides(
        &self,
        exchange: &Exchange,
        mut lifetimes: policy::Lifetimes,
    ) -> policy::Lifetimes {
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

    /// A failed fetch: the stale object when it may stand in (stale-if-error),
    /// else the synthetic 503. The failure is logged once, here.
    #[allow(clippy::too_many_arguments)]
    fn fetch_failed(
        &self,
        ctx: &mut RequestCtx,
        pool: &Pool,
        error: FetchError,
        client_headers: &HeaderMap,
        version: Version,
        stale: Option<Arc<CachedObject>>,
        guard: Option<WriterGuard>,
    ) -> Response<Body> {
        tracing::warn!(
            xid = ctx.xid,
            backend = error.backend().unwrap_or("-"),
            reason = error.reason().as_str(),
            %error,
            "backend fetch failed"
        );
        release(guard, Flight::Failed(error.reason()));
        ctx.error = Some(error.reason());
        if let Some(stale) =
            stale.filter(|s| policy::usable_on_error(&s.lifetimes, s.age(Instant::now())))
        {
            let parts = client_parts(&ctx.method.clone(), version, client_headers);
            return self.serve_stale_on_error(ctx, &parts, &stale, error.reason());
        }
        let refusal = Synthetic::backend_fetch_failed(error.reason(), self.retry_after(pool));
        self.synthetic(ctx, refusal)
    }

    /// The honest `Retry-After`: when a backend of the pool may take traffic
    /// again, within [1 s, 300 s]; `[server] retry_after` when nothing is known.
    fn retry_after(&self, pool: &Pool) -> std::time::Duration {
        pool.retry_after()
            .map_or(self.config.server.retry_after, |d| {
                d.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
            })
    }

    /// The answer when forwarding the client's body failed because of the
    /// body itself: 413 past `max_request_body`, else 400. The connection is
    /// closed: the rest of the body is unread, and may be unreadable.
    fn request_body_refused(
        &self,
        ctx: &mut RequestCtx,
        fault: RequestBodyFault,
        version: Version,
    ) -> Response<Body> {
        let refusal = match fault {
            RequestBodyFault::TooLarge => {
                Synthetic::refuse(StatusCode::PAYLOAD_TOO_LARGE, Reason::MaxRequestBody)
            }
            RequestBodyFault::Malformed => {
                Synthetic::refuse(StatusCode::BAD_REQUEST, Reason::InvalidRequestBody)
            }
        };
        tracing::info!(
            xid = ctx.xid,
            reason = refusal.reason.as_str(),
            "request body refused"
        );
        let response = self.synthetic(ctx, refusal);
        close_connection(response, version)
    }

    fn serve_stale_on_error(
        &self,
        ctx: &mut RequestCtx,
        parts: &Parts,
        stale: &CachedObject,
        reason: Reason,
    ) -> Response<Body> {
        tracing::info!(
            xid = ctx.xid,
            reason = reason.as_str(),
            "serving stale content instead of an error (stale-if-error)"
        );
        ctx.outcome = Outcome::HitStale;
        let status = headers::status_value(format!("shellac; hit; fwd=stale; detail={reason}"));
        self.deliver(parts, stale, Instant::now(), "HIT-STALE", status)
    }

    fn synthetic(&self, ctx: &mut RequestCtx, refusal: Synthetic) -> Response<Body> {
        ctx.outcome = Outcome::Synth;
        ctx.error.get_or_insert(refusal.reason);
        let facts = Facts {
            xid: ctx.xid,
            json: ctx.wants_json,
            backends_tried: &ctx.tried,
        };
        let mut response = refusal.render_with(&self.pages, &facts);
        response
            .headers_mut()
            .insert(headers::X_CACHE, HeaderValue::from_static("SYNTH"));
        response
    }

    /// `PURGE`: removes every variant of the URL, for clients in
    /// `[cache] purge_allow` (403 for others; 405 when the list is empty).
    fn purge(&self, ctx: &mut RequestCtx, key: &CacheKey) -> Response<Body> {
        let allow = &self.config.cache.purge_allow;
        if allow.is_empty() {
            return self.synthetic(
                ctx,
                Synthetic::refuse(StatusCode::METHOD_NOT_ALLOWED, Reason::PurgeNotEnabled),
            );
        }
        if !allow.iter().any(|net| net.contains(&ctx.client_ip)) {
            return self.synthetic(
                ctx,
                Synthetic::refuse(StatusCode::FORBIDDEN, Reason::PurgeNotAllowed),
            );
        }
        self.cache.purge(key);
        ctx.outcome = Outcome::Synth;
        ctx.error = Some(Reason::Purge);
        tracing::info!(xid = ctx.xid, key = key.as_str(), client = %ctx.client_ip, "purged");
        let mut response = Response::new(Body::full("Purged\n"));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// Starts one background fetch for a stale object served in grace, unless
    /// one is already running for the key.
    fn refresh_in_background(
        self: &Arc<Self>,
        exchange: &Exchange,
        parts: &Parts,
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
            cc: CacheControl::default(),
            body_state: None,
        };
        let mut request = Request::new(());
        *request.uri_mut() = parts.uri.clone();
        *request.headers_mut() = parts.headers.clone();
        request.headers_mut().remove(header::CACHE_CONTROL);
        let (bg_parts, ()) = request.into_parts();
        let stale = stale.clone();
        let client = SocketAddr::from(([127, 0, 0, 1], 0));
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
            drain(response.into_body()).await;
            tracing::debug!(xid = ctx.xid, %uri, status = status.as_u16(), "background refresh done");
        });
    }

    /// RFC 9111 §4.4: the target URI, and `Location` / `Content-Location`
    /// when they point at the same host.
    fn invalidate_after_write(&self, key: &CacheKey, host: Option<&str>, response: &HeaderMap) {
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

    /// A response from a stored object: 304 when the client's condition
    /// holds, 206/416 for a range, else the whole object. The body is shared,
    /// not copied.
    fn deliver(
        &self,
        parts: &Parts,
        object: &CachedObject,
        now: Instant,
        x_cache: &'static str,
        cache_status: HeaderValue,
    ) -> Response<Body> {
        let mut response = Response::new(Body::Empty);
        let headers = response.headers_mut();
        headers.clone_from(&object.headers);
        headers.insert(header::AGE, headers::age_value(object.age(now).as_secs()));
        if policy::not_modified(&parts.headers, &object.headers) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response.headers_mut().remove(header::CONTENT_LENGTH);
        } else {
            *response.status_mut() = object.status;
            let len = object.body.len() as u64;
            let range = if object.status == StatusCode::OK && parts.method == Method::GET {
                range::answer(&parts.headers, &object.headers, len)
            } else {
                RangeAnswer::Whole
            };
            match range {
                RangeAnswer::Whole => *response.body_mut() = Body::Full(Some(object.body.clone())),
                RangeAnswer::Part { start, end } => {
                    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                    *response.body_mut() =
                        Body::Full(Some(object.body.slice(start as usize..=end as usize)));
                    let headers = response.headers_mut();
                    headers.remove(header::CONTENT_LENGTH);
                    if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                    {
                        headers.insert(header::CONTENT_RANGE, value);
                    }
                }
                RangeAnswer::Unsatisfiable => {
                    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    let headers = response.headers_mut();
                    headers.remove(header::CONTENT_LENGTH);
                    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        headers.insert(header::CONTENT_RANGE, value);
                    }
                }
            }
            if parts.method == Method::HEAD {
                // hyper sends no body for HEAD but derives Content-Length from
                // the body it is given: keep the stored length.
                *response.body_mut() = Body::Full(Some(object.body.clone()));
            }
        }
        if object.status == StatusCode::OK {
            response
                .headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        self.finish_headers(response.headers_mut(), parts.version, x_cache, cache_status);
        response
    }

    /// The headers every proxied response gets: `X-Cache`, `Cache-Status`
    /// (RFC 9211), `Via`; targeted cache-control fields removed when configured.
    fn finish_headers(
        &self,
        headers: &mut HeaderMap,
        version: Version,
        x_cache: &'static str,
        cache_status: HeaderValue,
    ) {
        headers.insert(headers::X_CACHE, HeaderValue::from_static(x_cache));
        headers.insert(headers::CACHE_STATUS, cache_status);
        // One pass over the names instead of three hashed removals: these
        // fields are rarely there, and this runs on every response.
        let tag = &self.config.cache.tag_header;
        let strip_targeted = self.config.cache.strip_targeted;
        let internal = |name: &HeaderName| {
            name == tag
                || (strip_targeted
                    && (name == policy::SHELLAC_CACHE_CONTROL || name == policy::CDN_CACHE_CONTROL))
        };
        if headers.keys().any(internal) {
            headers.remove(tag);
            if strip_targeted {
                headers.remove(policy::SHELLAC_CACHE_CONTROL);
                headers.remove(policy::CDN_CACHE_CONTROL);
            }
        }
        headers::append_via(headers, version);
    }
}

/// Asks hyper to close an HTTP/1 connection after `response` (HTTP/2 has no
/// `Connection` header; its stream ends on its own).
fn close_connection(mut response: Response<Body>, version: Version) -> Response<Body> {
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn release(guard: Option<WriterGuard>, outcome: Flight) {
    if let Some(guard) = guard {
        guard.release(outcome);
    }
}

/// Reads a body to its end so that a capture completes (background
/// refreshes; 304s answered while the full response is stored).
async fn drain(body: Body) {
    let _ = body.collect().await;
}

/// Seconds of freshness left (negative when stale), for `Cache-Status`.
fn ttl_left(object: &CachedObject, now: Instant) -> i64 {
    let ttl = object.lifetimes.ttl.as_secs() as i64;
    ttl - object.age(now).as_secs() as i64
}

/// A request head rebuilt from its pieces, for `deliver` after a fetch.
fn client_parts(method: &Method, version: Version, headers: &HeaderMap) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = method.clone();
    *request.version_mut() = version;
    *request.headers_mut() = headers.clone();
    request.into_parts().0
}

/// The host a request is for: the authority of an absolute-form target
/// (which RFC 9112 §3.2.2 says wins over `Host`), else the `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
}

/// Whether a backend response's body ends only when the backend closes the
/// connection (RFC 9112 §6.3 item 8): a body that may have a status to carry
/// one, with neither `Content-Length` nor `Transfer-Encoding`.
fn is_close_delimited(method: &Method, head: &http::response::Parts) -> bool {
    let bodyless = *method == Method::HEAD
        || head.status.is_informational()
        || matches!(head.status.as_u16(), 204 | 304);
    !bodyless
        && !head.headers.contains_key(header::CONTENT_LENGTH)
        && !head.headers.contains_key(header::TRANSFER_ENCODING)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn strip_conditionals(headers: &mut HeaderMap) {
    const CONDITIONALS: [HeaderName; 5] = [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ];
    // Most requests have none: one look at the few names they have is
    // cheaper than five hashed removals.
    if !headers.keys().any(|name| CONDITIONALS.contains(name)) {
        return;
    }
    for name in CONDITIONALS {
        headers.remove(name);
    }
}

/// Makes the backend request conditional on the stale object's validators
/// (RFC 9111 §4.3.1); false when it has none.
fn add_validators(headers: &mut HeaderMap, stale: &CachedObject) -> bool {
    strip_conditionals(headers);
    headers.remove(header::RANGE);
    let mut added = false;
    if let Some(etag) = stale.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(modified) = stale.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
        added = true;
    }
    added
}

/// Turns the client's request head into the backend's: origin-form target,
/// HTTP/1.1, `Host` kept (set from the authority for HTTP/2 and
/// absolute-form), hop-by-hop headers dropped, `X-Forwarded-For` and `Via` added.
fn prepare_backend_request(parts: &mut Parts, client: SocketAddr, host: Option<&str>) {
    let received = parts.version;
    if parts.uri.authority().is_some() {
        let target = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(target);
    }
    parts.version = Version::HTTP_11;
    headers::remove_hop_by_hop(&mut parts.headers);
    // Only an absolute-form target's authority differs from `Host`
    // (RFC 9112 §3.2.2); re-inserting an equal value would cost a copy.
    if let Some(host) = host {
        let same =
            parts.headers.get(header::HOST).map(HeaderValue::as_bytes) == Some(host.as_bytes());
        if !same {
            if let Ok(value) = HeaderValue::from_str(host) {
                parts.headers.insert(header::HOST, value);
            }
        }
    }
    headers::append_forwarded_for(&mut parts.headers, client.ip());
    headers::append_via(&mut parts.headers, received);
}
