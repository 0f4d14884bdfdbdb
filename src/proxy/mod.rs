//! The request pipeline: one ordered async function, [`Proxy::handle`],
//! whose phases are written out top to bottom. This is the only module that
//! uses both the cache and the backends.
//!
//! ```text
//! limits → route → cache lookup (hit: answer) → backend fetch
//!        → store while streaming (if storable) → headers → single exit (log)
//! ```

mod context;
mod fetch;
pub mod headers;
pub mod route;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, Version};

pub use context::{Outcome, RequestCtx};

use crate::backend::Pool;
use crate::backend::{Backends, FetchError};
use crate::body::{Body, CaptureBody};
use crate::cache::policy::{self, RequestMode, StoreRules};
use crate::cache::{CacheKey, CachedObject, ObjectStore};
use crate::config::defaults::{RETRY_AFTER_MAX, RETRY_AFTER_MIN};
use crate::config::Config;
use crate::limits;
use crate::synth::{self, Facts, Pages, Synthetic};

/// Lower-cases a host and drops its port, for route hosts in the configuration.
pub fn normalize_host(host: &str) -> String {
    route::host_without_port(host.trim()).to_ascii_lowercase()
}

/// Everything a request needs: configuration, cache and backends.
pub struct Proxy {
    config: Arc<Config>,
    store: Arc<dyn ObjectStore>,
    backends: Backends,
    pages: Pages,
    next_xid: AtomicU64,
}

impl Proxy {
    /// A proxy for `config` with an empty cache.
    pub fn new(config: Arc<Config>, store: Arc<dyn ObjectStore>) -> Proxy {
        let backends = Backends::new(&config);
        Proxy {
            pages: Pages::new(&config.server),
            config,
            store,
            backends,
            next_xid: AtomicU64::new(1),
        }
    }

    /// The cache this proxy stores into.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Handles one client request, start to finish.
    pub async fn handle<B>(&self, req: Request<B>, client: SocketAddr) -> Response<Body>
    where
        B: Into<Body>,
    {
        let xid = self.next_xid.fetch_add(1, Ordering::Relaxed);
        let mut ctx = RequestCtx::new(xid, client, req.method().clone());
        ctx.wants_json = synth::wants_json(req.headers());
        let uri = req.uri().clone();
        let mut response = self.process(req, &mut ctx).await;
        if ctx.retries > 0 {
            response
                .headers_mut()
                .insert(headers::X_SHELLAC_RETRIES, HeaderValue::from(ctx.retries));
        }
        ctx.finish(&uri, response.status());
        response
    }

    async fn process<B: Into<Body>>(
        &self,
        req: Request<B>,
        ctx: &mut RequestCtx,
    ) -> Response<Body> {
        // 1. Limits.
        if let Err(refusal) = limits::check(&req, &self.config.server) {
            return self.synthetic(ctx, refusal);
        }

        // 2. Route.
        let host = request_host(&req).map(str::to_string);
        let path = req.uri().path();
        let Some(route) = route::select(&self.config.routes, req.method(), host.as_deref(), path)
        else {
            ctx.error = Some("no_route");
            let refusal =
                Synthetic::backend_fetch_failed("no_route", self.config.server.retry_after);
            return self.synthetic(ctx, refusal);
        };
        let pool = &self.backends.pools[route.pool];

        // 3. Cache lookup.
        let mode = match policy::request_mode(req.method(), req.headers()) {
            // `[[route]] pass = true`: neither looked up nor stored.
            _ if route.pass => RequestMode::Pass,
            mode => mode,
        };
        let target = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        let key = CacheKey::new("http", &key_host(host.as_deref()), target);
        if mode == RequestMode::Lookup {
            if let Some(object) = self.store.get(&key) {
                let now = Instant::now();
                if object.matches_vary(req.headers()) && object.is_fresh(now) {
                    ctx.outcome = Outcome::Hit;
                    return hit_response(&object, req.version(), now);
                }
            }
            ctx.outcome = Outcome::Miss;
        } else {
            ctx.outcome = Outcome::Pass;
        }

        // 4. Backend fetch.
        let version = req.version();
        let method = req.method().clone();
        let (mut parts, body) = req.into_parts();
        // The request head is kept for the storage decision only when the
        // response might be stored.
        let request_headers =
            (method == Method::GET && mode != RequestMode::Pass).then(|| parts.headers.clone());
        prepare_backend_request(&mut parts, ctx.client, host.as_deref());
        let request_time = SystemTime::now();
        let fetched = fetch::fetch(
            pool,
            route,
            &self.config.retry,
            key.as_str(),
            parts,
            body.into(),
            ctx,
        )
        .await;
        let response = match fetched {
            Ok(response) => response,
            Err(error) => return self.fetch_failed(ctx, pool, error),
        };

        // 5. Store while streaming, when the response allows it.
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        let rules = StoreRules {
            default_ttl: self.config.cache.default_ttl,
            store_errors: self.config.cache.store_errors,
        };
        let decision = match &request_headers {
            Some(req_headers) => policy::storable(
                &method,
                mode,
                req_headers,
                parts.status,
                &parts.headers,
                rules,
            ),
            None => Err(policy::NotStored::Method),
        };
        let too_big = content_length(&parts.headers)
            .is_some_and(|len| len > self.config.cache.max_object_size);
        // `[[route]] ttl` replaces the lifetime the response gave itself.
        let decision = decision.map(|ttl| route.ttl.unwrap_or(ttl));
        let body = match (decision, request_headers, body) {
            (Ok(ttl), Some(req_headers), Body::Backend(timed)) if !too_big => {
                let initial_age =
                    policy::initial_age(&parts.headers, request_time, SystemTime::now());
                let mut stored_headers = parts.headers.clone();
                stored_headers.remove(header::AGE);
                let store = self.store.clone();
                let status = parts.status;
                let store_key = key.clone();
                let on_complete = Box::new(move |bytes| {
                    let object = CachedObject::new(
                        status,
                        stored_headers,
                        bytes,
                        initial_age,
                        ttl,
                        &req_headers,
                    );
                    store.insert(store_key, Arc::new(object));
                });
                Body::Capture(CaptureBody::new(
                    timed,
                    self.config.cache.max_object_size,
                    on_complete,
                ))
            }
            (decision, _, body) => {
                ctx.not_stored = decision.err().map(policy::NotStored::as_str);
                body
            }
        };

        // 6. Response headers.
        let cache_header = match ctx.outcome {
            Outcome::Miss => "MISS",
            _ => "PASS",
        };
        parts
            .headers
            .insert(headers::X_CACHE, HeaderValue::from_static(cache_header));
        let status_text = match (ctx.outcome, ctx.not_stored) {
            (Outcome::Miss, None) => "shellac; fwd=uri-miss; stored",
            (Outcome::Miss, Some(_)) => "shellac; fwd=uri-miss",
            _ => "shellac; fwd=bypass",
        };
        parts
            .headers
            .insert(headers::CACHE_STATUS, HeaderValue::from_static(status_text));
        headers::append_via(&mut parts.headers, version);
        Response::from_parts(parts, body)
    }

    fn fetch_failed(&self, ctx: &mut RequestCtx, pool: &Pool, error: FetchError) -> Response<Body> {
        tracing::warn!(
            xid = ctx.xid,
            backend = error.backend().unwrap_or("-"),
            reason = error.reason(),
            %error,
            "backend fetch failed"
        );
        ctx.error = Some(error.reason());
        // The honest Retry-After: when a backend may take traffic again.
        let retry_after = pool
            .retry_after()
            .map_or(self.config.server.retry_after, |d| {
                d.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
            });
        let refusal = Synthetic::backend_fetch_failed(error.reason(), retry_after);
        self.synthetic(ctx, refusal)
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

/// The host as it goes into the cache key: lower-cased, `:80` dropped.
fn key_host(host: Option<&str>) -> String {
    let host = host.unwrap_or("");
    let host = host.strip_suffix(":80").unwrap_or(host);
    host.to_ascii_lowercase()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Turns the client's request head into the backend's: origin-form target,
/// HTTP/1.1, `Host` kept (set from the authority for HTTP/2 and
/// absolute-form), hop-by-hop headers dropped, `X-Forwarded-For` and `Via` added.
fn prepare_backend_request(
    parts: &mut http::request::Parts,
    client: SocketAddr,
    host: Option<&str>,
) {
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
    if let Some(host) = host {
        if let Ok(value) = HeaderValue::from_str(host) {
            parts.headers.insert(header::HOST, value);
        }
    }
    headers::append_forwarded_for(&mut parts.headers, client.ip());
    headers::append_via(&mut parts.headers, received);
}

/// A response from a cached object: its stored head plus `Age`, `X-Cache`,
/// `Cache-Status` and `Via`; the body is shared, not copied.
fn hit_response(object: &CachedObject, version: Version, now: Instant) -> Response<Body> {
    let mut response = Response::new(Body::Full(Some(object.body.clone())));
    *response.status_mut() = object.status;
    let headers = response.headers_mut();
    headers.clone_from(&object.headers);
    let age = object.age(now);
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    headers.insert(headers::X_CACHE, HeaderValue::from_static("HIT"));
    let remaining = object.ttl.saturating_sub(age).as_secs();
    if let Ok(value) = HeaderValue::from_str(&format!("shellac; hit; ttl={remaining}")) {
        headers.insert(headers::CACHE_STATUS, value);
    }
    headers::append_via(headers, version);
    response
}
