//! One client connection: HTTP/1.1 with keep-alive, or HTTP/2 cleartext
//! with prior knowledge (told apart by the first bytes, [`sniff`]), the
//! request-head limits hyper enforces itself, and the idle timeout. Over
//! TLS (`tls.rs` does the handshake) the same code serves the decrypted
//! stream, HTTP/2 when ALPN chose `h2`.
//!
//! hyper's `header_read_timeout` runs while a head is awaited, which on a
//! keep-alive connection includes the idle time before the next request;
//! `timeout_idle` (usually shorter) is enforced here by a watchdog that asks
//! hyper for a graceful close once the connection has had no request in
//! flight and no bytes moving for that long.
//!
//! The socket wrapper, [`ActivityIo`], also owns two guards that need the
//! raw byte stream:
//!
//! - `send_timeout`: a write that has been pending (the client is not
//!   reading, its window is full) for that long fails with `TimedOut`, and
//!   hyper drops the connection. Only this connection's task waits, so a
//!   client that never reads stalls no one else.
//! - the framing watch (`framing.rs`), which counts `Content-Length` and
//!   `Transfer-Encoding` lines per head for `limits::check`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::framing::FramingWatch;
use crate::config::{ServerConfig, MIN_READ_BUFFER};
use crate::generation::Current;
use crate::peer::ClientAddr;
use crate::proxy::{Handled, Tunnel};

/// Bytes read from the client per read call (the framing watch sees them
/// on the way through).
const READ_CHUNK: usize = 16 * 1024;
/// The HTTP/2 connection preface (RFC 9113 §3.4): a client that starts with
/// it speaks HTTP/2 with prior knowledge (h2c); anything else is HTTP/1.x.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Requests a connection's client may abandon before their answer (an
/// HTTP/2 stream reset, a dropped HTTP/1 connection) before the connection
/// is closed — once they are also at least half of its waiting requests.
/// Each abandoned request may already have cost a backend fetch: this is
/// the HTTP/2 "rapid reset" attack (CVE-2023-44487), against which Envoy
/// counts premature resets the same way. Before, 1,500 streams reset 0.5 ms
/// after opening became ~1,450 origin requests on one connection, with no
/// GOAWAY. A browser that cancels a page's images stays far below.
const PREMATURE_RESETS_MAX: usize = 100;

thread_local! {
    /// The buffer reads pass through on their way to hyper's. One per worker
    /// thread rather than one per connection: a read never suspends while
    /// holding it, and 10,000 idle keep-alive connections then hold no
    /// scratch memory at all.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The connection settings derived from `[server]`, built once.
pub struct Settings {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    timeout_idle: Duration,
    send_timeout: Duration,
    header_timeout: Duration,
    /// How long an open Upgrade tunnel may go on once shutdown begins.
    drain_timeout: Duration,
}

impl Settings {
    /// hyper settings for `[server]`.
    pub fn new(config: &ServerConfig) -> Settings {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(config.header_timeout)
            .max_headers(config.http_max_hdr)
            .max_buf_size(config.http_req_size.max(MIN_READ_BUFFER));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            // RFC 8441: WebSockets over HTTP/2 (`proxy/tunnel.rs`).
            .enable_connect_protocol()
            .max_header_list_size(u32::try_from(config.http_req_size).unwrap_or(u32::MAX));
        Settings {
            http1,
            http2,
            timeout_idle: config.timeout_idle,
            send_timeout: config.send_timeout,
            header_timeout: config.header_timeout,
            drain_timeout: config.drain_timeout,
        }
    }

    /// How long a new connection may take to send its first bytes.
    fn first_bytes_timeout(&self) -> Duration {
        self.timeout_idle.min(self.header_timeout)
    }

    /// How long a TLS handshake may take: `header_timeout`, the bound on
    /// everything a client sends before its first request.
    pub(super) fn handshake_timeout(&self) -> Duration {
        self.header_timeout
    }

    /// How long a PROXY protocol header may take: `header_timeout` too.
    pub(super) fn proxy_header_timeout(&self) -> Duration {
        self.header_timeout
    }
}

/// The protocol a client connection speaks, told by its first bytes.
enum Protocol {
    Http1,
    Http2,
}

/// Reads a new connection's first bytes until they tell HTTP/2's preface
/// from HTTP/1.x; the bytes wait in the socket wrapper for hyper. `None`
/// when the client left before saying anything.
///
/// Why not hyper-util's auto builder, which does the same: it reads the
/// first 24 bytes on their own and replays them, so hyper's first read
/// gets only those and its read buffer grows to 16 KiB on the second; with
/// the whole head waiting here, hyper reads it at once into 8 KiB. That is
/// 4 KiB of resident memory less per idle keep-alive connection, and one
/// `recvfrom` and a replaying wrapper less per connection.
async fn sniff<S: AsyncRead + Unpin>(io: &mut ActivityIo<S>) -> std::io::Result<Option<Protocol>> {
    loop {
        let seen = io.read_ahead.len().min(H2_PREFACE.len());
        if io.read_ahead[..seen] != H2_PREFACE[..seen] {
            return Ok(Some(Protocol::Http1));
        }
        if seen == H2_PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        if std::future::poll_fn(|cx| io.poll_read_ahead(cx)).await? == 0 {
            return Ok(None);
        }
    }
}

/// Serves one connection until the client leaves, it idles out, or
/// shutdown; `tls`: the stream is a TLS listener's, decrypted. Generic over
/// the stream so that the plain path stays the `TcpStream` code it was,
/// with TLS a second instance of it.
///
/// Over TLS the protocol is still told by the first bytes, not taken from
/// ALPN: what ALPN chose is what the client then sends (`h2` starts with the
/// preface), and waiting for those bytes here keeps the bound and the
/// shutdown watch that hyper's HTTP/2 handshake lacks (it would wait for a
/// preface that never comes, holding the connection past `timeout_idle`
/// and the drain).
pub(super) async fn serve_connection<S>(
    stream: S,
    client: ClientAddr,
    current: Current,
    settings: &Settings,
    mut stop_rx: watch::Receiver<bool>,
    tls: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // TCP_NODELAY came from the listening socket (`server::listen`).
    let activity = Arc::new(Activity::new());
    let framing = Arc::new(Mutex::new(FramingWatch::new()));
    let mut io = ActivityIo::new(
        stream,
        activity.clone(),
        framing.clone(),
        settings.send_timeout,
    );
    let service_activity = activity.clone();
    let tunnel_framing = framing.clone();
    let (drain_timeout, tunnel_stop) = (settings.drain_timeout, stop_rx.clone());
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        // Each request runs on the generation current when it arrived;
        // a reload never changes the rules under a request in flight.
        let proxy = current.load_full();
        let activity = service_activity.clone();
        // The raw framing counts go along as an argument rather than a
        // request extension: an extension costs the request a map and a box.
        let raw = (req.version() < hyper::Version::HTTP_2).then(|| {
            framing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .next_head()
        });
        // A hit is answered right here; what has to wait comes as a boxed
        // future (see `Proxy::handle`), so the future hyper keeps in its slot
        // per connection stays small.
        let h2 = req.version() == hyper::Version::HTTP_2;
        let handled = proxy.handle(req, client, tls, raw);
        let tunnel_stop = tunnel_stop.clone();
        async move {
            let response = match handled {
                Handled::Ready(response) => response,
                Handled::Waiting(waiting) => {
                    let mut waiting_on = Waiting::start(&activity);
                    let response = waiting.await;
                    waiting_on.answered();
                    response
                }
            };
            activity.touch();
            let mut response = response;
            if let Some(tunnel) = Tunnel::take(&mut response) {
                if h2 {
                    // One stream of the connection (RFC 8441): the
                    // connection, which lasts as long as its streams, keeps
                    // the permit and the drain waiting.
                    tokio::spawn(run_tunnel(tunnel, drain_timeout, tunnel_stop));
                } else {
                    *activity
                        .tunnel
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(tunnel);
                }
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let sniffed = tokio::select! {
        sniffed = tokio::time::timeout(settings.first_bytes_timeout(), sniff(&mut io)) => sniffed,
        _ = stop_rx.changed() => return,
    };
    let protocol = match sniffed {
        Ok(Ok(Some(protocol))) => protocol,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::debug!(client = %client, %error, "client connection failed before a request");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %client, "client connection sent nothing in time");
            return;
        }
    };
    match protocol {
        Protocol::Http1 => {
            let connection = settings.http1.serve_connection(io, service).with_upgrades();
            watch_connection(connection, client, &activity, settings, stop_rx.clone()).await;
            // A 101 hands the connection over to its tunnel: it goes on in
            // this task, which keeps the connection's permit and the drain
            // waiting for it.
            let tunnel = activity
                .tunnel
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(tunnel) = tunnel {
                tunnel_framing
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .stop();
                run_tunnel(tunnel, settings.drain_timeout, stop_rx).await;
            }
        }
        Protocol::Http2 => {
            let connection = settings.http2.serve_connection(io, service);
            watch_connection(connection, client, &activity, settings, stop_rx).await
        }
    }
}

/// Drives an open Upgrade tunnel to its end; once shutdown has begun it
/// gets `drain_timeout` more, then it is dropped, which closes both of its
/// connections (and writes its log line).
async fn run_tunnel(tunnel: Tunnel, drain_timeout: Duration, mut stop_rx: watch::Receiver<bool>) {
    tokio::pin!(tunnel);
    if !*stop_rx.borrow_and_update() {
        tokio::select! {
            _ = &mut tunnel => return,
            _ = stop_rx.changed() => {}
        }
    }
    if tokio::time::timeout(drain_timeout, tunnel).await.is_err() {
        tracing::info!("drain_timeout expired: closing an Upgrade tunnel");
    }
}

/// A hyper connection that can be asked to close gracefully: hyper-util's
/// `GracefulConnection`, which does not cover HTTP/1's
/// `UpgradeableConnection` (the one that hands a connection over after a
/// `101`).
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Read + Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Read + Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// Drives hyper's connection to its end, asking it to close gracefully on
/// shutdown or once it has been idle for `timeout_idle`.
async fn watch_connection<C>(
    connection: C,
    client: ClientAddr,
    activity: &Activity,
    settings: &Settings,
    mut stop_rx: watch::Receiver<bool>,
) where
    C: Graceful,
{
    tokio::pin!(connection);
    let idle_check = settings
        .timeout_idle
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(50));
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(client = %client, %error, "client connection ended with an error");
                }
                return;
            }
            _ = stop_rx.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = activity.reset_flood.notified(), if !closing => {
                tracing::warn!(
                    client = %client,
                    abandoned = activity.abandoned.load(Ordering::Relaxed),
                    limit = PREMATURE_RESETS_MAX,
                    "client abandoned too many requests before their answer: closing the connection"
                );
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_check), if !closing => {
                if activity.idle_for() >= settings.timeout_idle {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Serves a connection accepted over `[server] max_connections`: its first
/// request is answered with the synthetic 503 and the connection closed. The
/// whole exchange is bounded by `header_timeout` plus `send_timeout`, so
/// refused connections cannot pile up.
pub(super) async fn refuse_connection<S>(
    stream: S,
    proxy: Arc<crate::proxy::Proxy>,
    settings: &Settings,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = ActivityIo::new(
        stream,
        Arc::new(Activity::new()),
        Arc::new(Mutex::new(FramingWatch::new())),
        settings.send_timeout,
    );
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let response = proxy.over_capacity(req.version());
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let bound = settings.header_timeout + settings.send_timeout.min(Duration::from_secs(5));
    let _ = tokio::time::timeout(bound, async move {
        match sniff(&mut io).await {
            Ok(Some(Protocol::Http1)) => {
                let _ = settings.http1.serve_connection(io, service).await;
            }
            Ok(Some(Protocol::Http2)) => {
                let _ = settings.http2.serve_connection(io, service).await;
            }
            Ok(None) | Err(_) => {}
        }
    })
    .await;
}

/// When the connection last moved bytes, how many requests it has open,
/// and how many of those that had to wait its client abandoned.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests that had to wait (for a backend, another fetch, the L2).
    waited: AtomicUsize,
    /// Of those, the ones dropped before their answer was ready.
    abandoned: AtomicUsize,
    /// Woken once when `abandoned` passes [`PREMATURE_RESETS_MAX`] and
    /// half of `waited`; `flooded` says it was.
    reset_flood: tokio::sync::Notify,
    flooded: std::sync::atomic::AtomicBool,
    /// The tunnel a `101` opened, for the connection's task to drive once
    /// hyper has handed the connection over.
    tunnel: Mutex<Option<Tunnel>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            waited: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            reset_flood: tokio::sync::Notify::new(),
            flooded: std::sync::atomic::AtomicBool::new(false),
            tunnel: Mutex::new(None),
        }
    }

    fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Zero while a request is in flight, else the time since bytes last moved.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// One request of the connection waiting for its answer. Dropped without
/// [`Waiting::answered`] — hyper drops the future when the client resets
/// the stream or goes away — it counts as abandoned.
struct Waiting<'a> {
    activity: &'a Activity,
    answered: bool,
}

impl<'a> Waiting<'a> {
    fn start(activity: &'a Activity) -> Waiting<'a> {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.waited.fetch_add(1, Ordering::Relaxed);
        Waiting {
            activity,
            answered: false,
        }
    }

    fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let activity = self.activity;
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.answered {
            return;
        }
        let abandoned = activity.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        let waited = activity.waited.load(Ordering::Relaxed);
        if abandoned >= PREMATURE_RESETS_MAX
            && abandoned * 2 >= waited
            && !activity.flooded.swap(true, Ordering::Relaxed)
        {
            activity.reset_flood.notify_one();
        }
    }
}

/// The client socket: notes each read and write in [`Activity`], shows
/// every byte read to the framing watch, and fails a write that has made no
/// progress for `send_timeout`.
struct ActivityIo<S> {
    inner: TokioIo<S>,
    activity: Arc<Activity>,
    framing: Arc<Mutex<FramingWatch>>,
    send_timeout: Duration,
    /// Running while a write is pending; reset whenever a write progresses.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Bytes [`sniff`] read before hyper took over, handed to hyper (from
    /// `read_ahead_at`) before the socket is read again.
    read_ahead: Vec<u8>,
    read_ahead_at: usize,
}

impl<S> ActivityIo<S> {
    fn new(
        stream: S,
        activity: Arc<Activity>,
        framing: Arc<Mutex<FramingWatch>>,
        send_timeout: Duration,
    ) -> ActivityIo<S> {
        ActivityIo {
            inner: TokioIo::new(stream),
            activity,
            framing,
            send_timeout,
            stalled: None,
            read_ahead: Vec::new(),
            read_ahead_at: 0,
        }
    }

    /// After a write was polled: progress clears the stall timer; `Pending`
    /// starts it (or polls it), and when it fires the write fails.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            self.activity.touch();
            return polled;
        }
        let timeout = self.send_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("send_timeout ({timeout:?}) expired: the client stopped reading"),
        )))
    }
}

impl<S: AsyncRead + Unpin> ActivityIo<S> {
    /// Reads from the socket into `read_ahead` (for [`sniff`]); the number
    /// of bytes read, 0 at end of stream.
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut read = tokio::io::ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(self.inner.inner_mut()).poll_read(cx, &mut read))?;
            let filled = read.filled();
            self.watch(filled);
            self.read_ahead.extend_from_slice(filled);
            Poll::Ready(Ok(filled.len()))
        })
    }

    /// Shows bytes just read to the framing watch and notes the activity.
    fn watch(&self, bytes: &[u8]) {
        self.framing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .feed(bytes);
        self.activity.touch();
    }
}

impl<S: AsyncRead + Unpin> Read for ActivityIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read_ahead_at < this.read_ahead.len() {
            let ahead = &this.read_ahead[this.read_ahead_at..];
            let n = ahead.len().min(buf.remaining());
            buf.put_slice(&ahead[..n]);
            this.read_ahead_at += n;
            if this.read_ahead_at == this.read_ahead.len() {
                // Released, not kept: idle connections hold no read memory here.
                this.read_ahead = Vec::new();
                this.read_ahead_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let room = buf.remaining().min(scratch.len());
            let mut read = tokio::io::ReadBuf::new(&mut scratch[..room]);
            ready!(Pin::new(this.inner.inner_mut()).poll_read(cx, &mut read))?;
            let filled = read.filled();
            this.watch(filled);
            buf.put_slice(filled);
            Poll::Ready(Ok(()))
        })
    }
}

impl<S: AsyncWrite + Unpin> Write for ActivityIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
