//! One client connection: hyper-util's auto builder (HTTP/1.1 with
//! keep-alive, or HTTP/2 cleartext), the request-head limits hyper enforces
//! itself, and the idle timeout.
//!
//! hyper's `header_read_timeout` runs while a head is awaited, which on a
//! keep-alive connection includes the idle time before the next request;
//! `timeout_idle` (usually shorter) is enforced here by a watchdog that asks
//! hyper for a graceful close once the connection has had no request in
//! flight and no bytes moving for that long.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{ServerConfig, MIN_READ_BUFFER};

/// The connection settings derived from `[server]`, built once.
pub struct Settings {
    builder: auto::Builder<TokioExecutor>,
    timeout_idle: Duration,
}

impl Settings {
    /// hyper settings for `[server]`.
    pub fn new(config: &ServerConfig) -> Settings {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(config.header_timeout)
            .max_headers(config.http_max_hdr)
            .max_buf_size(config.http_req_size.max(MIN_READ_BUFFER));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.http_req_size).unwrap_or(u32::MAX));
        Settings {
            builder,
            timeout_idle: config.timeout_idle,
        }
    }
}

/// Serves one connection until the client leaves, it idles out, or shutdown.
pub(super) async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    current: super::Current,
    settings: &Settings,
    mut stop_rx: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = ActivityIo {
        inner: TokioIo::new(stream),
        activity: activity.clone(),
    };
    let service_activity = activity.clone();
    let service = service_fn(move |req| {
        // Each request runs on the generation current when it arrived;
        // a reload never changes the rules under a request in flight.
        let proxy = current.load_full();
        let activity = service_activity.clone();
        // Boxed: hyper keeps one slot per connection for the request future,
        // sized for the largest future the service returns. `handle`'s state
        // machine is several KiB; unboxed, every connection, even an idle
        // one, keeps that much touched memory, and each request moves it in.
        let handled = Box::pin(async move { proxy.handle(req, client).await });
        async move {
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let response = handled.await;
            activity.in_flight.fetch_sub(1, Ordering::Relaxed);
            activity.touch();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = settings.builder.serve_connection(io, service);
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
            _ = tokio::time::sleep(idle_check), if !closing => {
                if activity.idle_for() >= settings.timeout_idle {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When the connection last moved bytes, and how many requests it has open.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
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

/// The client socket, noting each read and write in [`Activity`].
struct ActivityIo {
    inner: TokioIo<TcpStream>,
    activity: Arc<Activity>,
}

impl Read for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }
}

impl Write for ActivityIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
