//! Upgrade tunnels: an HTTP/1.1 request with `Connection: upgrade` and an
//! `Upgrade` header (WebSocket, or any other protocol) goes to a backend,
//! and when that backend answers `101 Switching Protocols` the two
//! connections become one byte pipe — Varnish's `pipe`, nginx's
//! `proxy_set_header Upgrade $http_upgrade`.
//!
//! - **Never the cache.** No lookup, no store, no waiting list: each such
//!   request is a pass with a connection of its own, so two clients never
//!   share one tunnel.
//! - **The backend** is picked and admitted as for any request; the
//!   connection is fresh and never pooled (`fetch::upgrade`,
//!   `BackendClient::send_upgrade`).
//! - **Headers.** Hop-by-hop removal keeps `Connection: upgrade`, `Upgrade`
//!   and the `Sec-WebSocket-*` fields, both ways, for this case only
//!   ([`UpgradeFields`]).
//! - **Answers.** A `101` is relayed and the tunnel opens; any other answer
//!   (200, 400, 426…) is relayed as a pass response and never stored.
//! - **The pipe** moves bytes both ways until either side closes (then
//!   both are closed), or until nothing moved either way for the backend's
//!   `pipe_timeout` ([`pipe`]).
//! - **While open** it counts as a request in flight: it keeps the
//!   backend's slot (`max_connections`, its queue) through the `101`'s body,
//!   which it holds, and the server's connection task drives it
//!   ([`Tunnel`]), so the client connection keeps its `[server]
//!   max_connections` permit and the drain waits for it (up to
//!   `drain_timeout`, then it is closed).
//! - **HTTP/2** (RFC 8441): an extended CONNECT with `:protocol =
//!   websocket` goes on as the HTTP/1.1 handshake
//!   ([`from_extended_connect`]), and the backend's `101` becomes the
//!   stream's `200`; the tunnel is that one stream.
//! - **Logs and metrics.** The request is counted when the `101` goes out;
//!   its access-log line is written once, when the tunnel ends (however it
//!   ends: [`Open`]'s `Drop`), with status 101, the whole duration and the
//!   bytes each way; `shellac_tunnels_*` count the tunnels and their bytes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::Uri;
use http::{Response, StatusCode, Version};
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::context::LogHead;
use super::exit::log_request;
use super::upstream::ClientHead;
use super::{deliver, fetch, headers, Exchange, Proxy, RequestCtx};
use crate::access_log::AccessLogger;
use crate::body::Body;
use crate::ops::Ops;

/// Bytes read at a time in each direction of a tunnel.
const PIPE_BUFFER: usize = 16 * 1024;

/// The prefix of the WebSocket handshake's fields (RFC 6455 §11.3), kept
/// across the hop-by-hop removal.
const SEC_WEBSOCKET: &str = "sec-websocket-";

/// Whether the client's request asks for a tunnel: HTTP/1.1, `Connection`
/// lists `upgrade` (in any case, among other options), an `Upgrade` field
/// names a protocol other than `h2c`, and hyper holds the connection ready
/// to hand over.
///
/// `h2c` alone is ignored, as RFC 9110 §7.8 lets a server do: it asks to
/// turn this hop into HTTP/2, which Shellac speaks only with prior
/// knowledge, and `curl --http2` sends it with every plain-HTTP request,
/// which must go on using the cache (served as HTTP/1.1, the `Upgrade`
/// dropped as any hop-by-hop field).
///
/// Every request passes here, hits included: hyper's pending upgrade is
/// looked at first, since a request without one has an empty extension map
/// and costs no header lookup.
pub(super) fn is_requested(parts: &Parts) -> bool {
    let version = match parts.version {
        Version::HTTP_11 => true,
        // An extended CONNECT, made the handshake by `from_extended_connect`.
        Version::HTTP_2 => parts.extensions.get::<Protocol>().is_some(),
        _ => false,
    };
    version
        && parts.extensions.get::<OnUpgrade>().is_some()
        && parts
            .headers
            .get_all(header::UPGRADE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .any(|protocol| !protocol.is_empty() && !protocol.eq_ignore_ascii_case(b"h2c"))
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// RFC 8441: an HTTP/2 client opens a WebSocket with an extended CONNECT
/// (`:protocol = websocket`, `:path` the resource, no `Sec-WebSocket-Key`),
/// and expects a `200` on that stream, which then carries the WebSocket
/// frames. Backends speak the HTTP/1.1 handshake (RFC 6455), so the request
/// goes on, from the gate onwards, as that handshake: a `GET` of the same
/// target with `Upgrade: websocket`, `Connection: upgrade` and a fresh
/// `Sec-WebSocket-Key` (the client's `Sec-WebSocket-Version`, `-Protocol`
/// and `-Extensions` stay). The backend's `101` becomes the client's `200`
/// in [`Proxy::switch`]. Any other extended CONNECT stays a CONNECT (501).
pub(super) fn from_extended_connect<B>(req: &mut http::Request<B>) {
    let websocket = req.version() == Version::HTTP_2
        && req
            .extensions()
            .get::<Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return;
    }
    *req.method_mut() = http::Method::GET;
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let key = base64(&rand::random::<[u8; 16]>());
    if let Ok(key) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
}

/// Standard base64 with padding (RFC 4648 §4), for the 16 bytes of a
/// `Sec-WebSocket-Key`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The fields of a head that an upgrade needs on the next hop: `Upgrade`
/// and `Sec-WebSocket-*`, taken before the hop-by-hop removal and put back
/// after it, with `Connection: upgrade`.
struct UpgradeFields(Vec<(HeaderName, HeaderValue)>);

impl UpgradeFields {
    fn of(headers: &HeaderMap) -> UpgradeFields {
        let kept = headers
            .iter()
            .filter(|(name, _)| {
                *name == header::UPGRADE || name.as_str().starts_with(SEC_WEBSOCKET)
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        UpgradeFields(kept)
    }

    fn restore(&self, headers: &mut HeaderMap) {
        for (name, _) in &self.0 {
            headers.remove(name);
        }
        for (name, value) in &self.0 {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What a tunnel needs once its `101` has gone out: both connections'
/// upgrades, the backend answer's body (which holds the backend's slot)
/// and the idle limit.
pub(super) struct Pending {
    client: OnUpgrade,
    backend: OnUpgrade,
    held: Body,
    pipe_timeout: Duration,
}

/// An open tunnel, for the client connection's task to drive once hyper
/// has written the `101` and handed the connection over (`server/conn.rs`).
/// It ends when either side closes or `pipe_timeout` passes in silence;
/// dropping it closes both connections (the drain does, after
/// `drain_timeout`). Either way its access-log line is written.
pub struct Tunnel(Pin<Box<dyn Future<Output = ()> + Send>>);

/// How a [`Tunnel`] rides on its `101` response to the server: response
/// extensions must be `Clone + Sync`, a future is neither.
#[derive(Clone)]
struct Attached(Arc<Mutex<Option<Tunnel>>>);

impl Tunnel {
    /// The tunnel of a response the proxy made (a `101`, or the `200` of
    /// an HTTP/2 extended CONNECT), taken out of it; none for every other
    /// response (an empty extension map: one look).
    pub fn take(response: &mut Response<Body>) -> Option<Tunnel> {
        let attached = response.extensions_mut().remove::<Attached>()?;
        let mut slot = attached
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.take()
    }

    fn attach(self, response: &mut Response<Body>) {
        response
            .extensions_mut()
            .insert(Attached(Arc::new(Mutex::new(Some(self)))));
    }
}

impl Future for Tunnel {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Proxy {
    /// The tunnel phase: the request to a backend of the route's pool on a
    /// connection of its own, then a `101` relayed (the tunnel opens at the
    /// exit), any other answer passed as it is, or a failure rescued.
    pub(super) async fn tunnel(
        &self,
        ctx: &mut RequestCtx,
        exchange: &Exchange,
        mut parts: Parts,
        body: Body,
    ) -> Response<Body> {
        // Taken out before the head goes on to the backend's request.
        let client_upgrade = parts.extensions.remove::<OnUpgrade>();
        let client = ClientHead::of(&parts);
        let fields = UpgradeFields::of(&parts.headers);
        let (peer, tls) = (ctx.client, ctx.tls);
        let backend_head = |parts: Parts| {
            let (mut parts, _) = self.backend_head(parts, peer, tls, exchange, None, false, false);
            fields.restore(&mut parts.headers);
            parts
        };
        let first = backend_head(parts);
        let again = || backend_head(client.request_parts());
        let pool = &self.backends.pools[exchange.pool];
        let route = &self.config.routes[exchange.route];
        let key = exchange.key.as_str();
        let fetched = fetch::upgrade(
            pool,
            route,
            &self.config.retry,
            key,
            first,
            body,
            &again,
            ctx,
        )
        .await;
        let response = match fetched {
            Ok(response) => response,
            Err(error) => {
                return self.fetch_failed(ctx, exchange, pool, error, &client, None, None)
            }
        };
        match (response.status(), client_upgrade) {
            (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) => {
                let pipe_timeout = pool
                    .members()
                    .iter()
                    .find(|b| Some(b.name()) == ctx.backend.as_ref())
                    .map_or(crate::config::defaults::PIPE_TIMEOUT, |b| {
                        b.client.config().pipe_timeout
                    });
                self.switch(ctx, response, client_upgrade, client.version, pipe_timeout)
            }
            // (A 101 without the client's pending upgrade cannot come:
            // `is_requested` saw it.)
            _ => {
                // Relayed as a pass: never stored, nobody waits for it.
                let (mut head, body) = response.into_parts();
                headers::remove_hop_by_hop(&mut head.headers);
                let cache_status = deliver::fetched_cache_status(ctx, false);
                self.deliver_fetched(ctx, client.version, head, body, cache_status, false)
            }
        }
    }

    /// The `101` for the client, with the backend's upgrade fields
    /// (`Upgrade`, `Sec-WebSocket-Accept`…), or for an HTTP/2 client the
    /// `200` of its extended CONNECT; what the tunnel needs goes into `ctx`
    /// for the exit.
    fn switch(
        &self,
        ctx: &mut RequestCtx,
        mut response: Response<Body>,
        client: OnUpgrade,
        version: Version,
        pipe_timeout: Duration,
    ) -> Response<Body> {
        let backend = hyper::upgrade::on(&mut response);
        let (mut head, held) = response.into_parts();
        let fields = UpgradeFields::of(&head.headers);
        headers::remove_hop_by_hop(&mut head.headers);
        fields.restore(&mut head.headers);
        if version == Version::HTTP_2 {
            // RFC 8441 §5: the extended CONNECT's answer is a 200; the
            // accept value answered our key, not the client's (it sent
            // none), and hyper drops `Connection` and `Upgrade` itself.
            head.status = StatusCode::OK;
            head.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
        }
        headers::append_via(&mut head.headers, version);
        ctx.tunnel = Some(Box::new(Pending {
            client,
            backend,
            held,
            pipe_timeout,
        }));
        Response::from_parts(head, Body::Empty)
    }

    /// The exit of a request whose `101` goes out: counted now, like any
    /// request at its response head; its log line waits for the tunnel's
    /// end, which the returned response carries to the server.
    pub(super) fn exit_into_tunnel(
        &self,
        mut ctx: RequestCtx,
        uri: Uri,
        log_head: Option<LogHead>,
        mut response: Response<Body>,
        pending: Pending,
    ) -> Response<Body> {
        self.count(&mut ctx, &mut response);
        let Pending {
            client,
            backend,
            held,
            pipe_timeout,
        } = pending;
        self.ops.metrics.tunnels.opened();
        let open = Open {
            status: response.status(),
            ops: self.ops.clone(),
            access_log: self.access_log.clone(),
            ctx,
            uri,
            log_head,
            moved: Moved::new(),
            held: Some(held),
        };
        let tunnel = Tunnel(Box::pin(open.run(client, backend, pipe_timeout)));
        tunnel.attach(&mut response);
        response
    }
}

/// Bytes moved through one tunnel, and when they last moved.
struct Moved {
    started: Instant,
    client_to_backend: AtomicU64,
    backend_to_client: AtomicU64,
    /// Milliseconds since `started` at the last byte either way.
    last_ms: AtomicU64,
}

impl Moved {
    fn new() -> Moved {
        Moved {
            started: Instant::now(),
            client_to_backend: AtomicU64::new(0),
            backend_to_client: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Time since bytes last moved either way.
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// A tunnel from its `101` to its end: what its log line and the metrics
/// need. Its `Drop` is the tunnel's exit, so that the line is written
/// once however the tunnel ends (a side closed, `pipe_timeout`, the drain
/// dropping it, the client gone before the upgrade completed).
struct Open {
    /// What the client got: `101`, or `200` for HTTP/2 (RFC 8441).
    status: StatusCode,
    ops: Arc<Ops>,
    access_log: AccessLogger,
    ctx: RequestCtx,
    uri: Uri,
    log_head: Option<LogHead>,
    moved: Moved,
    /// The `101`'s body, which holds the backend's in-flight slot.
    held: Option<Body>,
}

/// How a tunnel ended (for the debug log).
#[derive(Debug)]
enum Ended {
    /// The client closed its end (or its connection failed).
    ClientClosed,
    /// The backend closed its end (or its connection failed).
    BackendClosed,
    /// Nothing moved either way for `pipe_timeout`.
    Idle,
    /// An upgrade did not complete (the client left before the `101` was
    /// written, or a connection failed).
    NotUpgraded,
}

impl Open {
    async fn run(self, client: OnUpgrade, backend: OnUpgrade, pipe_timeout: Duration) {
        let ended = match tokio::try_join!(client, backend) {
            Ok((client, backend)) => {
                let metrics = &self.ops.metrics.tunnels;
                pipe(
                    TokioIo::new(client),
                    TokioIo::new(backend),
                    pipe_timeout,
                    &self.moved,
                    (&metrics.client_to_backend, &metrics.backend_to_client),
                )
                .await
            }
            Err(error) => {
                tracing::debug!(xid = self.ctx.xid, %error, "upgrade did not complete");
                Ended::NotUpgraded
            }
        };
        tracing::debug!(xid = self.ctx.xid, ?ended, "tunnel ended");
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.ops.metrics.tunnels.closed();
        // The backend's slot goes with its body.
        self.held = None;
        self.ctx.tunnel_bytes = Some((
            self.moved.client_to_backend.load(Ordering::Relaxed),
            self.moved.backend_to_client.load(Ordering::Relaxed),
        ));
        log_request(
            &self.access_log,
            &self.ctx,
            &self.uri,
            self.log_head.as_ref(),
            self.status,
            None,
        );
    }
}

/// Copies bytes both ways until either side closes its end (what it sent
/// before is passed on first, then the end), or until nothing moved either
/// way for `idle` (`pipe_timeout`); then both connections are closed, as
/// nginx ends an upgraded connection. Waiting for the other side's own end
/// would keep a tunnel (and its permit and slot) open as long as a client
/// that keeps its socket after the WebSocket close handshake. Each
/// direction runs on its own, so a side that does not read never stops the
/// other from being read.
async fn pipe<C, B>(
    client: C,
    backend: B,
    idle: Duration,
    moved: &Moved,
    counters: (&Counter, &Counter),
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (backend_read, backend_write) = tokio::io::split(backend);
    moved.touch();
    let up = copy(
        client_read,
        backend_write,
        moved,
        &moved.client_to_backend,
        counters.0,
    );
    let down = copy(
        backend_read,
        client_write,
        moved,
        &moved.backend_to_client,
        counters.1,
    );
    let silence = async {
        loop {
            let idle_for = moved.idle_for();
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    };
    tokio::select! {
        _ = up => Ended::ClientClosed,
        _ = down => Ended::BackendClosed,
        _ = silence => Ended::Idle,
    }
}

/// One direction of a tunnel: reads from `from` and writes to `to` until
/// `from` ends or fails, or `to` fails; then shuts `to` down.
async fn copy<R, W>(mut from: R, mut to: W, moved: &Moved, count: &AtomicU64, counter: &Counter)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; PIPE_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        moved.touch();
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
        moved.touch();
        count.fetch_add(n as u64, Ordering::Relaxed);
        counter.inc_by(n as u64);
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, fields: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::new(());
        *request.version_mut() = version;
        for (name, value) in fields {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        request.into_parts().0
    }

    /// A request whose connection hyper holds ready to hand over.
    fn upgradable(version: Version, fields: &[(&str, &str)]) -> Parts {
        let mut p = parts(version, fields);
        let pending = hyper::upgrade::on(http::Request::new(()));
        p.extensions.insert(pending);
        p
    }

    #[test]
    fn only_http11_connection_upgrade_with_an_upgrade_field_asks_for_a_tunnel() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert!(is_requested(&upgradable(Version::HTTP_11, &ws)));
        assert!(
            !is_requested(&parts(Version::HTTP_11, &ws)),
            "no upgrade pending"
        );
        assert!(!is_requested(&upgradable(Version::HTTP_10, &ws)));
        let no_connection = [("upgrade", "websocket")];
        assert!(!is_requested(&upgradable(Version::HTTP_11, &no_connection)));
        let empty = [("connection", "upgrade"), ("upgrade", " ")];
        assert!(!is_requested(&upgradable(Version::HTTP_11, &empty)));
        let other = [("connection", "UPGRADE"), ("upgrade", "IRC/6.9")];
        assert!(is_requested(&upgradable(Version::HTTP_11, &other)));
        let h2c = [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ];
        assert!(
            !is_requested(&upgradable(Version::HTTP_11, &h2c)),
            "served as HTTP/1.1"
        );
    }

    #[test]
    fn base64_as_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // RFC 6455 §1.3's sample nonce.
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn upgrade_fields_survive_the_hop_by_hop_removal() {
        let mut p = parts(
            Version::HTTP_11,
            &[
                ("connection", "Upgrade, Sec-WebSocket-Key"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
                ("keep-alive", "timeout=5"),
            ],
        );
        let fields = UpgradeFields::of(&p.headers);
        headers::remove_hop_by_hop(&mut p.headers);
        assert!(
            !p.headers.contains_key("sec-websocket-key"),
            "named in Connection"
        );
        fields.restore(&mut p.headers);
        assert_eq!(p.headers["connection"], "upgrade");
        assert_eq!(p.headers["upgrade"], "websocket");
        assert_eq!(p.headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(p.headers["sec-websocket-version"], "13");
        assert!(!p.headers.contains_key("keep-alive"));
    }
}
