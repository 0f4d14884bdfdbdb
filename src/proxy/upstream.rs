//! The backend's side of a fetch: the request head a backend gets (made
//! from the client's), the validators added when revalidating a stale
//! object, `[cluster]` peer ownership, and the fall-back from a peer to the
//! origin pool when no peer answers. The retry loop itself is `fetch.rs`.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, Version};

use super::fetch::Pool;
use super::{compress, fetch, headers, Exchange, Proxy, RequestCtx};
use crate::backend::FetchError;
use crate::body::Body;
use crate::cache::policy::RequestMode;
use crate::cache::CachedObject;
use crate::peer::ClientAddr;

/// The client's request head as it came, kept while the backend has the
/// request: the storing decisions read it, and a retry rebuilds the
/// backend's head from it (the first attempt's head goes to hyper, which
/// keeps it once sent).
pub(super) struct ClientHead {
    pub(super) method: Method,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    uri: Uri,
}

impl ClientHead {
    pub(super) fn of(parts: &Parts) -> ClientHead {
        ClientHead {
            method: parts.method.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            uri: parts.uri.clone(),
        }
    }

    /// A request head with the client's method, version and headers, for
    /// `deliver` after a fetch (which reads no URI).
    pub(super) fn parts(&self) -> Parts {
        client_parts(&self.method, self.version, &self.headers)
    }

    /// The client's whole head again, URI included, for a retry.
    pub(super) fn request_parts(&self) -> Parts {
        let mut parts = self.parts();
        parts.uri = self.uri.clone();
        parts
    }
}

/// What the backend answered, with the times RFC 9111 §4.2.3 needs for the age.
pub(super) struct Fetched {
    pub(super) response: Response<Body>,
    /// The request was made conditional on the stale object's validators.
    pub(super) revalidating: bool,
    pub(super) request_time: SystemTime,
    pub(super) response_time: SystemTime,
}

impl Proxy {
    /// Sends the request to the route's pool (or, for a key another live
    /// `[cluster]` peer owns, to that peer first, then the origin), with
    /// the retries `[retry]` allows. On failure, the error and the pool
    /// that failed (for the honest `Retry-After`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch_upstream(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        client: &ClientHead,
        parts: Parts,
        body: Body,
        stale: Option<&CachedObject>,
        for_writer: bool,
    ) -> Result<Fetched, (FetchError, &Pool)> {
        let via_peer = for_writer
            && client.method == Method::GET
            && self.owned_elsewhere(exchange, &client.headers);
        let peer = ctx.client;
        let tls = ctx.tls;
        let backend_head = |parts: Parts, via_peer: bool| {
            self.backend_head(parts, peer, tls, exchange, stale, for_writer, via_peer)
        };
        let (backend_parts, revalidating) = backend_head(parts, via_peer);
        // Another copy of the head, only when a retry needs one.
        let again = |via_peer: bool| backend_head(client.request_parts(), via_peer).0;
        let mut pool = match (&self.backends.peers, via_peer) {
            (Some(peers), true) => &peers.others,
            _ => &self.backends.pools[exchange.pool],
        };
        let request_time = SystemTime::now();
        let route = &self.config.routes[exchange.route];
        let retry = &self.config.retry;
        let key = exchange.key.as_str();
        let again_here = || again(via_peer);
        let body_state = exchange.body_state.as_deref();
        let mut fetched = fetch::fetch(
            pool,
            route,
            retry,
            key,
            backend_parts,
            body,
            &again_here,
            body_state,
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
                fetched = fetch::fetch(
                    pool,
                    route,
                    retry,
                    key,
                    parts,
                    Body::Empty,
                    &again,
                    body_state,
                    ctx,
                )
                .await;
            }
        }
        match fetched {
            Ok(response) => Ok(Fetched {
                response,
                revalidating,
                request_time,
                response_time: SystemTime::now(),
            }),
            Err(error) => Err((error, pool)),
        }
    }

    /// The backend's request head made from the client's: see
    /// [`prepare_backend_request`]; then conditional on `stale`'s validators
    /// when revalidating (the second value says whether it became
    /// conditional), or stripped of the client's own conditions (and, for the
    /// waiting list's writer, its range) when filling the cache; marked for a
    /// peer when `via_peer`. `X-Forwarded-Proto` and `Forwarded` say how
    /// the client (`tls`) reached us.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backend_head(
        &self,
        mut parts: Parts,
        client: ClientAddr,
        tls: bool,
        exchange: &Exchange,
        stale: Option<&CachedObject>,
        for_writer: bool,
        via_peer: bool,
    ) -> (Parts, bool) {
        prepare_backend_request(&mut parts, client, exchange.host.as_deref());
        let peer = client.ip();
        let trusted = self
            .config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer));
        headers::set_forwarded_proto(&mut parts.headers, peer, tls, trusted);
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
        compress::backend_accept_encoding(&self.config.compression, exchange.mode, &mut parts);
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
}

/// A request head rebuilt from its pieces.
pub(super) fn client_parts(method: &Method, version: Version, headers: &HeaderMap) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = method.clone();
    *request.version_mut() = version;
    *request.headers_mut() = headers.clone();
    request.into_parts().0
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
    // An object Shellac gzipped holds a weakened tag; the backend knows its own.
    let own = stale
        .encoded
        .as_ref()
        .and_then(|e| e.identity_etag.as_ref());
    if let Some(etag) = own.or(stale.headers.get(header::ETAG)) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(modified) = stale.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
        added = true;
    }
    added
}

/// RFC 9113 §8.2.3: an HTTP/2 client may split `Cookie` into one field per
/// cookie ("crumbs") for better compression; before the request goes to an
/// HTTP/1.1 backend they are joined into one field with `"; "`, since many
/// HTTP/1.1 servers read only the first `Cookie` line.
fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for crumb in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Turns the client's request head into the backend's: origin-form target,
/// HTTP/1.1, `Host` kept (set from the authority for HTTP/2 and
/// absolute-form), hop-by-hop headers dropped, HTTP/2 cookie crumbs joined, `X-Forwarded-For` and `Via` added.
fn prepare_backend_request(parts: &mut Parts, client: ClientAddr, host: Option<&str>) {
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
    if received == Version::HTTP_2 {
        join_cookie_crumbs(&mut parts.headers);
    }
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
