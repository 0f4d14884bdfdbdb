//! The route phase: the facts about the client's request that every later
//! phase needs — its route and pool, its cache key, whether it may use the
//! cache at all, and its `Cache-Control` — worked out once.

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::Request;

use super::route;
use super::rules::{Applied, Effects};
use crate::body::RequestBodyState;
use crate::cache::policy::{self, CacheControl, RequestMode};
use crate::cache::CacheKey;
use crate::config::{CacheConfig, RouteConfig};
use crate::limits;

/// The facts about the client's request that later phases need.
pub(super) struct Exchange {
    pub(super) key: CacheKey,
    pub(super) mode: RequestMode,
    pub(super) pool: usize,
    /// Index into the configuration's routes, for their overrides.
    pub(super) route: usize,
    pub(super) host: Option<String>,
    /// Directives of the client's `Cache-Control`.
    pub(super) cc: CacheControl,
    /// What the matching `[[rule]]`s decided for the store phase.
    pub(super) effects: Effects,
    /// Why the client's request body was cut off, if it was; none for a
    /// request without a body (most of them), which then costs no allocation.
    pub(super) body_state: Option<Arc<RequestBodyState>>,
}

impl Exchange {
    /// The exchange for `req` (as the rules rewrote it; `applied` is what
    /// else they decided) under the first matching route; none when no
    /// route matches. `tls`: it came over TLS, so its key's scheme is
    /// `https` — a `301` to `https://` stored for plain HTTP is never served
    /// on HTTPS (Varnish's classic redirect loop).
    pub(super) fn of<B>(
        req: &Request<B>,
        tls: bool,
        routes: &[RouteConfig],
        cache: &CacheConfig,
        applied: Applied,
    ) -> Option<Exchange> {
        let host = request_host(req).map(str::to_string);
        let route = route::select(routes, req.method(), host.as_deref(), req.uri().path())?;
        let target = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        // A GET or HEAD with a body ("fat GET") is passed: the body is
        // forwarded untouched, but a response that may depend on it is
        // neither served from nor stored under a key that ignores it.
        let mode = if limits::has_body(req) {
            RequestMode::Pass
        } else {
            policy::request_mode(req.method(), req.headers())
        };
        let scheme = if tls { "https" } else { "http" };
        let key_host = crate::host::for_key(host.as_deref());
        let key = if applied.key_extra.is_empty() {
            CacheKey::new(scheme, &key_host, target)
        } else {
            CacheKey::with_extra(scheme, &key_host, target, &applied.key_extra)
        };
        Some(Exchange {
            key,
            mode: match mode {
                // `[[route]] pass = true`, or a rule's `pass = true`: neither
                // looked up nor stored.
                _ if route.pass || applied.pass == Some(true) => RequestMode::Pass,
                // Every cookie left is in the key (`[[rule]] key_cookies`):
                // one object per value, as if there were no `Cookie`.
                RequestMode::PassMaybeStore
                    if applied.cookies_keyed
                        && !req.headers().contains_key(header::AUTHORIZATION) =>
                {
                    RequestMode::Lookup
                }
                mode => mode,
            },
            pool: route.pool,
            route: routes
                .iter()
                .position(|r| std::ptr::eq(r, route))
                .unwrap_or(0),
            host,
            cc: client_cache_control(req.headers(), cache.honor_request_cache_control),
            effects: applied.effects,
            body_state: None,
        })
    }
}

/// The client's `Cache-Control` as far as Shellac listens to it. By default
/// (`honor_request_cache_control = false`, Varnish's builtin behaviour) only
/// `only-if-cached` counts: a browser's reload (`max-age=0`, `no-cache`,
/// `Pragma: no-cache`) must not send every such request to the origin. When
/// honoured, `Pragma: no-cache` counts as `no-cache` if the request has no
/// `Cache-Control` (RFC 9111 §5.4).
fn client_cache_control(headers: &HeaderMap, honor: bool) -> CacheControl {
    let parsed = CacheControl::from_headers(headers);
    if !honor {
        return CacheControl {
            only_if_cached: parsed.only_if_cached,
            ..CacheControl::default()
        };
    }
    let mut cc = parsed;
    if !headers.contains_key(header::CACHE_CONTROL)
        && headers
            .get_all(header::PRAGMA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
            })
    {
        cc.no_cache = true;
    }
    cc
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
