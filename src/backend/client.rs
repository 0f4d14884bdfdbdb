//! One pooled keep-alive HTTP/1.1 client per backend, with each timeout and
//! limit enforced in exactly one place:
//!
//! | limit | where |
//! |---|---|
//! | `connect_timeout` | around the TCP connect of a new connection, and its TLS handshake when `tls = true` |
//! | `first_byte_timeout` | from the last request body byte handed to the connection to the response head ([`BackendClient::send_returning`]) |
//! | `[retry] deadline` | caps both of those by the time the request has left |
//! | `http_resp_size` | hyper's `max_header_size` on the connection |
//! | `http_resp_hdr_len` | checked on the received head, line by line |
//! | `between_bytes_timeout` | [`TimedBody`] around the response body; and [`Outgoing`] around the client's request body, which may not keep the backend waiting that long for its next bytes |
//!
//! The first-byte timer starts when the request body has been sent, not
//! when the send starts: an upload takes as long as the client takes, and a
//! 3 s upload behind a 2 s `first_byte_timeout` used to end in a 503 blamed
//! on the backend. The upload itself is timed on the client's side, by an
//! idle rule: a client that sends nothing for `between_bytes_timeout`
//! fails the request with [`FetchError::RequestBodyTimeout`] (a 408 for the
//! client, not a failure of the backend).
//!
//! **A pooled connection the backend closed is retried once, on a fresh
//! connection.** A backend closes an idle keep-alive connection when its
//! own timer says so, and a request written at that moment meets the
//! close: with an origin idle timeout of 100 ms and requests every ~100 ms,
//! 13 of 70 requests got `503 invalid_response` although the app never saw
//! them. A request that failed on a *reused* connection before any byte of
//! an answer came back ([`Counted`] counts the bytes each connection
//! received) fails with [`FetchError::PooledConnectionClosed`], which does
//! not count against the backend, and with its body when that body was
//! complete and small enough to keep ([`MAX_REPLAY_BODY`]; always for
//! GET and HEAD): the fetch phase sends it once more on a fresh connection
//! ([`BackendClient::send_fresh`]), whatever `retry_on` says and without
//! the retry budget (Varnish's "extrachance" in `vbe_dir_gethdrs`; nginx
//! retries a cached peer connection the same way). And a connection is not
//! reused past a margin below the backend's announced `Keep-Alive:
//! timeout=N` ([`reuse_limit`]), nor past `backend_idle_timeout`.
//!
//! Why not hyper-util's pooled `Client`: it runs connect and send as one
//! future, so a first-byte timer around it would also count the connect, and a
//! refused connection could not be told from a slow backend. Here the pool is
//! hyper's own `client::conn::http1` connections in a per-backend idle list
//! (a short mutex per backend, never a global one); a connection goes back
//! to the list when its response body has been read to the end ([`Checkin`],
//! carried by the body), without a task or a channel per request.
//!
//! **HTTPS backends** (`tls = true`, see `tls.rs`) and **Unix socket
//! backends** (`address = "unix:/path"`) use the same pool: a
//! connection's stream is [`Io`], plain TCP, TLS over it, or a Unix
//! socket, so every timeout, limit and pool rule above holds for each; a
//! new connection is made in one place ([`BackendClient::dial`]: the next
//! address of the latest answer of the backend's name, `resolve.rs`; the
//! PROXY header, `proxy_protocol.rs`). A backend with `proxy_protocol`
//! pools nothing: its header names one client, so each connection serves
//! one request and is closed, as Varnish does. A pooled
//! TLS connection is reused exactly as a plain one (one `match` per read
//! or write on the plain path, no box). **`host_header`** is applied here,
//! right before the head goes out ([`BackendClient::send_via`]), rather
//! than where the proxy builds the head (`proxy/upstream.rs`): the head is
//! built before a backend is picked, and a retry may go to another backend
//! with another `host_header`; at this point the backend is known, and
//! every request to it passes here (fetches, background refreshes, the
//! one resend). The cache key was computed earlier, from the client's Host.
//!
//! The client is generic over the body of the requests it sends
//! ([`RequestBody`]), as hyper's own client is: the crate's `Body` wraps this
//! module's response body, so naming `Body` here would tie `backend` and
//! `body` in a knot. The proxy fixes `B` to `Body`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::error::FetchError;
use super::proxy_protocol::{self, ClientEnds};
use super::resolve::Addresses;
use super::response::TimedBody;
use super::tls::BackendTls;
use crate::config::{BackendAddr, BackendConfig, MIN_READ_BUFFER};
use crate::retry::Deadline;

/// The body of the requests a backend client sends: what hyper needs of
/// it, and a way to hold a backend's response body, since the proxy hands one
/// body type to hyper in both directions (the crate's `Body` is the one).
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<BoxError>>
    + From<TimedBody<Self>>
    + Send
    + Unpin
    + Sized
    + 'static
{
}

impl<T> RequestBody for T where
    T: http_body::Body<Data = Bytes, Error: Into<BoxError>>
        + From<TimedBody<T>>
        + Send
        + Unpin
        + 'static
{
}

/// What hyper takes as a request body's error.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most idle connections kept per backend; more are closed when they
/// come back. Bounded so that a burst does not leave thousands of sockets open.
const MAX_IDLE_PER_BACKEND: usize = 1024;

/// The largest request body kept while it is sent on a reused connection,
/// so that the request can go out once more if the backend had closed that
/// connection. The pieces are hyper's own buffers, shared, not copied;
/// larger (or still streaming) bodies are not sent again.
const MAX_REPLAY_BODY: usize = 64 * 1024;

/// One backend connection: hyper's sender, and the bytes received on it.
struct Conn<B> {
    sender: SendRequest<Outgoing<B>>,
    /// Bytes received on this connection so far ([`Counted`]): a request
    /// that failed with none received since it was sent got no answer.
    received: Arc<AtomicU64>,
}

struct IdleConn<B> {
    conn: Conn<B>,
    since: Instant,
    /// How long it may stay idle and still be reused ([`reuse_limit`]).
    max_idle: Duration,
}

/// The idle connections of one backend, newest at the back.
type IdleList<B> = Arc<Mutex<VecDeque<IdleConn<B>>>>;

/// A backend's connection pool and limits; `B` is the body of the requests
/// it sends.
pub struct BackendClient<B> {
    name: Arc<str>,
    config: BackendConfig,
    builder: http1::Builder,
    idle: IdleList<B>,
    /// The TLS connector and server name, for a `tls = true` backend.
    tls: Option<BackendTls>,
    /// The addresses new connections go to (`resolve.rs`).
    addresses: Addresses,
}

impl<B> BackendClient<B> {
    /// A client for one backend; no connection is opened until needed.
    pub fn new(config: BackendConfig) -> BackendClient<B> {
        let mut builder = http1::Builder::new();
        builder
            .max_header_size(config.http_resp_size)
            .max_buf_size(config.http_resp_size.max(MIN_READ_BUFFER));
        BackendClient {
            name: Arc::from(config.name.as_str()),
            tls: BackendTls::new(&config),
            addresses: Addresses::new(&config.addr),
            config,
            builder,
            idle: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// The backend's name, shared with the errors and bodies it makes.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The settings this client runs with.
    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    /// The addresses new connections go to now, and the lookups' state.
    pub(super) fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// Where new connections go now, as the admin view shows it:
    /// `unix:/path`, or each address of the latest answer.
    pub fn addresses_in_use(&self) -> Vec<String> {
        match &self.config.addr {
            BackendAddr::Unix(path) => vec![format!("unix:{}", path.display())],
            BackendAddr::Tcp { .. } => self
                .addresses
                .current()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// Why the last lookup of the backend's host name failed, while the
    /// last good answer is kept; `None` when it worked.
    pub fn resolve_error(&self) -> Option<String> {
        self.addresses.last_error()
    }

    /// Whether connections may go back to the pool: not when each starts
    /// with a PROXY header, which names one client (as Varnish, which
    /// closes such connections after one use).
    fn pools(&self) -> bool {
        self.config.proxy_protocol == 0
    }

    /// How many idle connections are pooled (for tests and the admin view).
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

impl<B: RequestBody> BackendClient<B> {
    /// Sends `req` (origin-form URI, `Host` set) and returns the response
    /// whose body streams under `between_bytes_timeout`.
    pub async fn send(&self, req: Request<B>) -> Result<Response<B>, FetchError> {
        self.send_returning(req, self.config.first_byte_timeout, None)
            .await
            .map_err(|failure| failure.error)
    }

    /// Like [`BackendClient::send`] with a route's `first_byte_timeout`
    /// and the request's `[retry] deadline`, which caps the connect and the
    /// wait for the head; when the request was certainly not sent (connect
    /// failed), it comes back in the error so it can go to another backend,
    /// body and all.
    pub async fn send_returning(
        &self,
        req: Request<B>,
        first_byte_timeout: Duration,
        deadline: Option<Deadline>,
    ) -> Result<Response<B>, SendFailure<B>> {
        self.send_via(req, first_byte_timeout, deadline, true).await
    }

    /// Like [`BackendClient::send_returning`] on a new connection, never a
    /// pooled one: the one resend after [`FetchError::PooledConnectionClosed`].
    pub async fn send_fresh(
        &self,
        req: Request<B>,
        first_byte_timeout: Duration,
        deadline: Option<Deadline>,
    ) -> Result<Response<B>, SendFailure<B>> {
        self.send_via(req, first_byte_timeout, deadline, false)
            .await
    }

    /// Sends an Upgrade request (WebSocket and the like, `proxy/tunnel.rs`)
    /// on a connection made for it alone, never a pooled one and never
    /// pooled afterwards: after a `101` the connection belongs to the
    /// tunnel, and hyper hands it over only to a connection driven
    /// `with_upgrades` (`hyper::upgrade::on` on the response then yields
    /// it). The stream is dialled as for any request (`dial`: TCP or a Unix
    /// socket, the PROXY header of a `proxy_protocol` backend, TLS for an
    /// HTTPS backend) within `connect_timeout`, and the head must
    /// come within `first_byte_timeout`, both capped by `deadline`. When
    /// the connect failed, the request comes back in the error, so that it
    /// can go to another backend. Any other answer than a `101` streams
    /// under `between_bytes_timeout`, and the connection is closed after it.
    pub async fn send_upgrade(
        &self,
        mut req: Request<B>,
        first_byte_timeout: Duration,
        deadline: Option<Deadline>,
    ) -> Result<Response<B>, SendFailure<B>> {
        if let Some(host) = &self.config.host_header {
            req.headers_mut().insert(http::header::HOST, host.clone());
        }
        let ends = req.extensions().get::<ClientEnds>().copied();
        let (timeout, cut) = capped(self.config.connect_timeout, deadline);
        let dialled = self.dial(Dial::Request(ends.as_ref()));
        let stream = match tokio::time::timeout(timeout, dialled).await {
            Ok(Ok(stream)) => stream,
            failed => {
                let error = match (failed, cut) {
                    (Ok(Err(error)), _) => error,
                    (_, Some(deadline)) => self.deadline_reached(deadline),
                    _ => FetchError::ConnectTimeout {
                        backend: self.name.clone(),
                        timeout,
                    },
                };
                return Err(SendFailure {
                    error,
                    request: Some(Box::new(req)),
                    replay: None,
                });
            }
        };
        let received = Arc::new(AtomicU64::new(0));
        let stream = Counted {
            stream,
            received: received.clone(),
        };
        let (mut sender, connection) =
            self.builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|source| {
                    let error = FetchError::Protocol {
                        backend: self.name.clone(),
                        source,
                    };
                    SendFailure::sent(error, None)
                })?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(backend = %name, %error, "backend upgrade connection ended with an error");
            }
        });
        let idle = self.config.between_bytes_timeout;
        let req = req.map(|body| Outgoing::new(body, None, idle, false));
        let (timeout, cut) = capped(first_byte_timeout, deadline);
        let response = tokio::select! {
            sent = sender.send_request(req) => sent
                .map_err(|error| SendFailure::sent(self.classify(error), None))?,
            _ = tokio::time::sleep(timeout) => {
                let error = match cut {
                    Some(deadline) => self.deadline_reached(deadline),
                    None => FetchError::FirstByteTimeout {
                        backend: self.name.clone(),
                        timeout,
                    },
                };
                return Err(SendFailure::sent(error, None));
            }
        };
        self.check_head(&response)
            .map_err(|error| SendFailure::sent(error, None))?;
        // Never back to the idle list: a zero reuse limit closes it at the end.
        let checkin = Checkin {
            conn: Conn { sender, received },
            idle: self.idle.clone(),
            max_idle: Duration::ZERO,
        };
        Ok(response.map(|incoming| {
            B::from(TimedBody::new(
                incoming,
                self.name.clone(),
                self.config.between_bytes_timeout,
                checkin,
            ))
        }))
    }

    async fn send_via(
        &self,
        req: Request<B>,
        first_byte_timeout: Duration,
        deadline: Option<Deadline>,
        pooled: bool,
    ) -> Result<Response<B>, SendFailure<B>> {
        let mut req = req;
        if let Some(host) = &self.config.host_header {
            req.headers_mut().insert(http::header::HOST, host.clone());
        }
        let pooled = pooled && self.pools();
        let ends = req.extensions().get::<ClientEnds>().copied();
        // A pooled connection may have been closed by the backend while idle;
        // hyper gives the request back when it was not sent, and then it goes
        // out once more on the next one, or a fresh connection.
        while let Some(conn) = pooled.then(|| self.checkout()).flatten() {
            match self
                .send_on(conn, true, req, first_byte_timeout, deadline)
                .await
            {
                Ok(response) => return Ok(response),
                Err(Retry::Again(returned)) => req = *returned,
                Err(Retry::Closed { error, replay }) => {
                    return Err(SendFailure::sent(error, replay))
                }
                Err(Retry::Failed(error)) => return Err(SendFailure::sent(error, None)),
            }
        }
        let conn = match self.connect(deadline, ends.as_ref()).await {
            Ok(conn) => conn,
            Err(error) => {
                return Err(SendFailure {
                    error,
                    request: Some(Box::new(req)),
                    replay: None,
                })
            }
        };
        match self
            .send_on(conn, false, req, first_byte_timeout, deadline)
            .await
        {
            Ok(response) => Ok(response),
            Err(Retry::Again(returned)) => Err(SendFailure {
                error: FetchError::ClosedBeforeSend {
                    backend: self.name.clone(),
                },
                request: Some(returned),
                replay: None,
            }),
            Err(Retry::Closed { error, replay }) => Err(SendFailure::sent(error, replay)),
            Err(Retry::Failed(error)) => Err(SendFailure::sent(error, None)),
        }
    }

    fn checkout(&self) -> Option<Conn<B>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The oldest connections sit at the front: close those idle for
        // longer than they may be, so the pool shrinks after a burst.
        while idle
            .front()
            .is_some_and(|c| c.since.elapsed() >= c.max_idle || c.conn.sender.is_closed())
        {
            idle.pop_front();
        }
        // The newest is the most likely to still be open on the backend's side.
        while let Some(idle) = idle.pop_back() {
            if idle.conn.sender.is_ready() && idle.since.elapsed() < idle.max_idle {
                return Some(idle.conn);
            }
        }
        None
    }

    async fn connect(
        &self,
        deadline: Option<Deadline>,
        ends: Option<&ClientEnds>,
    ) -> Result<Conn<B>, FetchError> {
        // `connect_timeout` covers the connect, the PROXY header and the
        // TLS handshake.
        let (timeout, cut) = capped(self.config.connect_timeout, deadline);
        let stream = match tokio::time::timeout(timeout, self.dial(Dial::Request(ends))).await {
            Err(_) => {
                return Err(match cut {
                    Some(deadline) => self.deadline_reached(deadline),
                    None => FetchError::ConnectTimeout {
                        backend: self.name.clone(),
                        timeout,
                    },
                })
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok(stream)) => stream,
        };
        let received = Arc::new(AtomicU64::new(0));
        let stream = Counted {
            stream,
            received: received.clone(),
        };
        let (sender, connection) =
            self.builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|source| FetchError::Protocol {
                    backend: self.name.clone(),
                    source,
                })?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(backend = %name, %error, "backend connection ended with an error");
            }
        });
        Ok(Conn { sender, received })
    }

    /// A new connection's stream, ready for HTTP: a Unix socket, or TCP to
    /// the next address of the backend's latest answer; then the PROXY
    /// header when `proxy_protocol` is set (before TLS, as HAProxy sends
    /// it); then TLS for an HTTPS backend. The requests' connections and
    /// the probes' both come from here. The caller bounds it
    /// (`connect_timeout`, the probe's `timeout`).
    pub(super) async fn dial(&self, purpose: Dial<'_>) -> Result<Io, FetchError> {
        let connect_error = |source| FetchError::Connect {
            backend: self.name.clone(),
            source,
        };
        let mut stream = match &self.config.addr {
            BackendAddr::Unix(path) => {
                Io::Unix(UnixStream::connect(path).await.map_err(connect_error)?)
            }
            BackendAddr::Tcp { .. } => {
                let mut failed = std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    "no address to connect to",
                );
                let mut connected = None;
                for addr in self.addresses.candidates() {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            connected = Some(stream);
                            break;
                        }
                        Err(error) => failed = error,
                    }
                }
                let stream = connected.ok_or_else(|| connect_error(failed))?;
                // Small requests and heads must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                Io::Plain(stream)
            }
        };
        if self.config.proxy_protocol != 0 {
            let local = match &stream {
                Io::Plain(tcp) => tcp.local_addr().ok(),
                _ => None,
            };
            let header = match purpose {
                Dial::Request(ends) => {
                    proxy_protocol::header(self.config.proxy_protocol, ends, local)
                }
                Dial::Probe => proxy_protocol::local(self.config.proxy_protocol),
            };
            tokio::io::AsyncWriteExt::write_all(&mut stream, &header)
                .await
                .map_err(connect_error)?;
        }
        match (&self.tls, stream) {
            (Some(tls), Io::Plain(tcp)) => match tls.handshake(tcp).await {
                Ok(stream) => Ok(Io::Tls(Box::new(stream))),
                Err(detail) => Err(FetchError::Tls {
                    backend: self.name.clone(),
                    detail,
                }),
            },
            (_, stream) => Ok(stream),
        }
    }

    /// Sends `req` on one connection. The first-byte timer starts when the
    /// request body has been handed to the connection (at once for a
    /// bodiless request); the deadline is pushed back by the time that
    /// took, which was the client's, not the backend's. On a `reused`
    /// connection the body is kept while it is small, for the one resend.
    async fn send_on(
        &self,
        conn: Conn<B>,
        reused: bool,
        req: Request<B>,
        first_byte_timeout: Duration,
        deadline: Option<Deadline>,
    ) -> Result<Response<B>, Retry<B>> {
        let Conn {
            mut sender,
            received,
        } = conn;
        let started = Instant::now();
        let received_before = received.load(Ordering::Acquire);
        // A request without a body (GET, HEAD) has nothing to watch: its
        // first-byte timer starts at once and a resend needs no copy; only
        // a body gets the shared progress (one allocation fewer per GET).
        let progress = (!req.body().is_end_stream()).then(|| Arc::new(Progress::new(started)));
        let idle = self.config.between_bytes_timeout;
        let req = req.map(|body| Outgoing::new(body, progress.clone(), idle, reused));
        let send = sender.try_send_request(req);
        let first_byte = async {
            // While the body goes out the backend must keep taking it: no
            // body byte taken for first_byte_timeout, while the client had
            // some to give, is the backend not answering.
            let mut due = started + first_byte_timeout;
            while let Some(progress) = &progress {
                tokio::select! {
                    _ = progress.ended.notified() => break,
                    _ = tokio::time::sleep_until(due.into()) => {
                        let last = started + progress.last_frame();
                        if progress.awaiting_client.load(Ordering::Acquire) {
                            due = Instant::now() + first_byte_timeout;
                        } else if last + first_byte_timeout > Instant::now() {
                            due = last + first_byte_timeout;
                        } else {
                            return FetchError::FirstByteTimeout {
                                backend: self.name.clone(),
                                timeout: first_byte_timeout,
                            };
                        }
                    }
                }
            }
            let deadline = deadline.map(|d| d.pushed_back(started.elapsed()));
            let (timeout, cut) = capped(first_byte_timeout, deadline);
            tokio::time::sleep(timeout).await;
            match cut {
                Some(deadline) => self.deadline_reached(deadline),
                None => FetchError::FirstByteTimeout {
                    backend: self.name.clone(),
                    timeout,
                },
            }
        };
        let sent = tokio::select! {
            biased;
            sent = send => sent,
            timed_out = first_byte => return Err(Retry::Failed(timed_out)),
        };
        let response = match sent {
            Ok(response) => response,
            Err(_)
                if progress
                    .as_ref()
                    .is_some_and(|p| p.stalled.load(Ordering::Acquire)) =>
            {
                return Err(Retry::Failed(FetchError::RequestBodyTimeout {
                    backend: self.name.clone(),
                    timeout: idle,
                }))
            }
            Err(mut failed) => {
                return Err(match failed.take_message() {
                    Some(req) if is_closed_before_send(failed.error()) => {
                        Retry::Again(Box::new(req.map(Outgoing::into_inner)))
                    }
                    // Sent on a reused connection, and not one byte came
                    // back: the backend had closed it (the keep-alive race).
                    _ if reused
                        && !failed.error().is_user()
                        && received.load(Ordering::Acquire) == received_before =>
                    {
                        Retry::Closed {
                            error: FetchError::PooledConnectionClosed {
                                backend: self.name.clone(),
                                source: failed.into_error(),
                            },
                            replay: match &progress {
                                Some(progress) => progress.take_replay(),
                                // No body: the head alone is the whole request.
                                None => Some(Bytes::new()),
                            },
                        }
                    }
                    _ => Retry::Failed(self.classify(failed.into_error())),
                });
            }
        };
        self.check_head(&response).map_err(Retry::Failed)?;
        let max_idle = if self.pools() {
            reuse_limit(response.headers(), self.config.backend_idle_timeout)
        } else {
            Duration::ZERO
        };
        let (parts, incoming) = response.into_parts();
        let checkin = Checkin {
            conn: Conn { sender, received },
            idle: self.idle.clone(),
            max_idle,
        };
        let body = TimedBody::new(
            incoming,
            self.name.clone(),
            self.config.between_bytes_timeout,
            checkin,
        );
        Ok(Response::from_parts(parts, B::from(body)))
    }

    fn deadline_reached(&self, deadline: Deadline) -> FetchError {
        FetchError::Deadline {
            backend: self.name.clone(),
            deadline: deadline.total,
        }
    }

    /// `http_resp_hdr_len`: no single header line may be longer.
    fn check_head(&self, response: &Response<hyper::body::Incoming>) -> Result<(), FetchError> {
        let max = self.config.http_resp_hdr_len;
        let too_long = response
            .headers()
            .iter()
            .any(|(name, value)| name.as_str().len() + 2 + value.len() > max);
        if too_long {
            return Err(FetchError::HeadTooLarge {
                backend: self.name.clone(),
                limit: "http_resp_hdr_len",
                max,
            });
        }
        Ok(())
    }

    fn classify(&self, source: hyper::Error) -> FetchError {
        if source.is_parse_too_large() {
            FetchError::HeadTooLarge {
                backend: self.name.clone(),
                limit: "http_resp_size",
                max: self.config.http_resp_size,
            }
        } else {
            FetchError::Protocol {
                backend: self.name.clone(),
                source,
            }
        }
    }
}

/// A connection lent to one response: it goes back to the idle list when
/// that response's body has been read to its end ([`TimedBody`] calls
/// [`Checkin::body_ended`]); a body dropped half-way drops it, and hyper
/// closes the connection.
pub(super) struct Checkin<B> {
    conn: Conn<B>,
    idle: IdleList<B>,
    max_idle: Duration,
}

impl<B: RequestBody> Checkin<B> {
    /// The response body was read to its end. By then hyper's connection
    /// task has almost always finished the message and is waiting for the
    /// next request, so the connection goes straight back; otherwise a
    /// small task waits until hyper says it is ready (or closed).
    pub(super) fn body_ended(self) {
        let Checkin {
            mut conn,
            idle,
            max_idle,
        } = self;
        if max_idle.is_zero() {
            return;
        }
        if conn.sender.is_ready() {
            park(&idle, conn, max_idle);
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if conn.sender.ready().await.is_ok() {
                    park(&idle, conn, max_idle);
                }
            });
        }
    }
}

/// Puts a ready connection at the back (newest end) of the idle list.
fn park<B>(idle: &Mutex<VecDeque<IdleConn<B>>>, conn: Conn<B>, max_idle: Duration) {
    let mut idle = idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if idle.len() < MAX_IDLE_PER_BACKEND {
        idle.push_back(IdleConn {
            conn,
            since: Instant::now(),
            max_idle,
        });
    }
}

/// How long a connection may stay idle and still be reused: at most
/// `backend_idle_timeout`, and below the backend's own `Keep-Alive:
/// timeout=N` by a margin of 20 % of it, at most 1 s (4 s of Apache's 5,
/// 59 s of 60, 0.8 s of 1): the backend's close may already be on its way
/// when its timer is about to fire.
fn reuse_limit(headers: &http::HeaderMap, backend_idle_timeout: Duration) -> Duration {
    let announced = headers
        .get_all("keep-alive")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("timeout")
                .then(|| value.trim().parse::<u64>().ok())?
        })
        .next();
    match announced {
        None => backend_idle_timeout,
        Some(seconds) => {
            let n = Duration::from_secs(seconds);
            let margin = (n / 5).min(Duration::from_secs(1));
            backend_idle_timeout.min(n - margin)
        }
    }
}

/// A send that failed, with the request when it was certainly not sent.
pub struct SendFailure<B> {
    /// Why it failed.
    pub error: FetchError,
    /// The untouched request, when it never left Shellac.
    pub request: Option<Box<Request<B>>>,
    /// With [`FetchError::PooledConnectionClosed`]: the request's whole
    /// body when it was complete and kept (empty for GET and HEAD), so the
    /// request can go out once more with a new copy of its head. `None`
    /// when the body was still streaming or too large: it is gone.
    pub replay: Option<Bytes>,
}

enum Retry<B> {
    /// The request was not sent; here it is back, to send on another connection.
    Again(Box<Request<B>>),
    /// A reused connection had been closed by the backend: no answer came.
    Closed {
        error: FetchError,
        replay: Option<Bytes>,
    },
    /// The fetch failed for good.
    Failed(FetchError),
}

impl<B> SendFailure<B> {
    /// A failure after the request was handed to a connection: it is gone.
    fn sent(error: FetchError, replay: Option<Bytes>) -> SendFailure<B> {
        SendFailure {
            error,
            request: None,
            replay,
        }
    }
}

/// `timeout`, or the time left before `deadline` when that is shorter
/// (then also the deadline, to name in the error).
fn capped(timeout: Duration, deadline: Option<Deadline>) -> (Duration, Option<Deadline>) {
    match deadline {
        Some(d) if d.left() < timeout => (d.left(), Some(d)),
        _ => (timeout, None),
    }
}

fn is_closed_before_send(error: &hyper::Error) -> bool {
    error.is_canceled() || error.is_closed()
}

// === impl Outgoing ===

/// What one send learns from its request body as hyper sends it.
struct Progress {
    /// When the send started.
    started: Instant,
    /// Notified once the body has been handed to the connection entirely
    /// (or was dropped): the first-byte timer starts.
    ended: Notify,
    /// The client sent nothing for `between_bytes_timeout`.
    stalled: AtomicBool,
    /// When the last body frame was handed to hyper (microseconds since
    /// `started`): the backend is taking the body.
    last_frame_us: AtomicU64,
    /// hyper is waiting for the client's next bytes (not for the backend).
    awaiting_client: AtomicBool,
    /// The whole body as sent, when it was kept to the end (see
    /// [`MAX_REPLAY_BODY`]).
    replay: Mutex<Option<Vec<Bytes>>>,
}

impl Progress {
    fn new(started: Instant) -> Progress {
        Progress {
            started,
            ended: Notify::new(),
            stalled: AtomicBool::new(false),
            last_frame_us: AtomicU64::new(0),
            awaiting_client: AtomicBool::new(false),
            replay: Mutex::new(None),
        }
    }

    /// The kept body, joined, if the whole of it was kept.
    fn take_replay(&self) -> Option<Bytes> {
        let pieces = self
            .replay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()?;
        Some(match pieces.len() {
            0 => Bytes::new(),
            1 => pieces.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(pieces.concat()),
        })
    }

    fn keep(&self, pieces: Vec<Bytes>) {
        *self
            .replay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(pieces);
    }

    fn frame_sent(&self) {
        let us = self.started.elapsed().as_micros() as u64;
        self.last_frame_us.store(us, Ordering::Release);
        self.awaiting_client.store(false, Ordering::Release);
    }

    /// When the last frame went to hyper, as time since `started`.
    fn last_frame(&self) -> Duration {
        Duration::from_micros(self.last_frame_us.load(Ordering::Acquire))
    }
}

/// Notifies [`Progress::ended`] when dropped: a body that ends, fails or is
/// dropped by hyper half-way starts the first-byte timer all the same, so
/// that no send waits without a bound.
struct EndSignal(Arc<Progress>);

impl Drop for EndSignal {
    fn drop(&mut self) {
        self.0.ended.notify_one();
    }
}

/// A request body on its way to the backend: it tells the send when its
/// last byte has gone to the connection, and fails when the client keeps
/// the backend waiting for more than `between_bytes_timeout` (the idle
/// timer runs only while hyper is waiting for the client's next bytes, not
/// while the backend is slow to read them). On a reused connection it keeps
/// the pieces it sent, up to [`MAX_REPLAY_BODY`] bytes, for the one resend.
pub(super) struct Outgoing<B> {
    inner: B,
    /// The pieces sent so far, while they are being kept.
    kept: Option<Vec<Bytes>>,
    kept_len: usize,
    /// Dropped (so notifying) when the body has ended.
    end: Option<EndSignal>,
    /// None for a request without a body (nothing to watch).
    progress: Option<Arc<Progress>>,
    idle: Duration,
    /// The idle timer, armed while the client's next bytes are awaited.
    stall: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<B: RequestBody> Outgoing<B> {
    fn new(inner: B, progress: Option<Arc<Progress>>, idle: Duration, keep: bool) -> Outgoing<B> {
        let mut outgoing = Outgoing {
            inner,
            kept: keep.then(Vec::new),
            kept_len: 0,
            end: progress.clone().map(EndSignal),
            progress,
            idle,
            stall: None,
            waiting: false,
        };
        // hyper never polls a body that has ended already (GET, HEAD).
        if outgoing.inner.is_end_stream() {
            outgoing.ended();
        }
        outgoing
    }

    /// The whole body has been handed to hyper: the first-byte timer
    /// starts, and a body kept to its end can be sent again.
    fn ended(&mut self) {
        if let (Some(pieces), Some(progress)) = (self.kept.take(), &self.progress) {
            progress.keep(pieces);
        }
        self.end = None;
    }

    /// Keeps a piece sent while the whole stays within [`MAX_REPLAY_BODY`];
    /// beyond it, or for trailers (which a resend could not carry), nothing.
    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(kept) = self.kept.as_mut() else {
            return;
        };
        match frame.data_ref() {
            Some(data) if self.kept_len + data.len() <= MAX_REPLAY_BODY => {
                self.kept_len += data.len();
                kept.push(data.clone());
            }
            _ => self.kept = None,
        }
    }

    /// The body back, unsent, for another connection.
    fn into_inner(self) -> B {
        self.inner
    }
}

/// The client sent no body bytes for `between_bytes_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
struct Stalled(Duration);

impl<B: RequestBody> http_body::Body for Outgoing<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(progress) = &this.progress {
                    progress.frame_sent();
                }
                this.keep(&frame);
                if this.inner.is_end_stream() {
                    this.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.kept = None;
                this.end = None;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                this.ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    if let Some(progress) = &this.progress {
                        progress.awaiting_client.store(true, Ordering::Release);
                    }
                    let due = tokio::time::Instant::now() + this.idle;
                    match &mut this.stall {
                        Some(stall) => stall.as_mut().reset(due),
                        None => this.stall = Some(Box::pin(tokio::time::sleep_until(due))),
                    }
                }
                let Some(stall) = this.stall.as_mut() else {
                    return Poll::Pending;
                };
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(progress) = &this.progress {
                    progress.stalled.store(true, Ordering::Release);
                }
                this.kept = None;
                this.end = None;
                Poll::Ready(Some(Err(Box::new(Stalled(this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Counted ===

/// Why a connection is dialled: for requests (a PROXY header names their
/// client, when known), or for a probe (a PROXY header names nobody: v1
/// `UNKNOWN`, v2 `LOCAL`, which the receiver answers as its own health check).
#[derive(Clone, Copy)]
pub(super) enum Dial<'a> {
    Request(Option<&'a ClientEnds>),
    Probe,
}

/// A backend connection's stream: plain TCP, TLS over it (`tls =
/// true`), or a Unix socket (`unix:/path`). An enum rather than a boxed
/// trait object, so the plain path costs one `match` per read or write
/// and no allocation.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            Io::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            Io::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
            Io::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
            Io::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            Io::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            Io::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// A backend stream that counts the bytes it received (after TLS, so the
/// bytes of answers), so that a failed request can tell "no answer at
/// all" (the backend had closed the connection) from an answer that
/// broke. One relaxed atomic add per read.
struct Counted {
    stream: Io,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.received.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_alive(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("keep-alive", value.parse().expect("value"));
        headers
    }

    /// Below the backend's announced idle timeout by 20 %, at most 1 s,
    /// and never past backend_idle_timeout.
    #[test]
    fn reuse_stops_short_of_the_announced_keep_alive() {
        let ours = Duration::from_secs(60);
        assert_eq!(reuse_limit(&http::HeaderMap::new(), ours), ours);
        assert_eq!(
            reuse_limit(&keep_alive("timeout=5, max=100"), ours),
            Duration::from_secs(4)
        );
        assert_eq!(
            reuse_limit(&keep_alive("max=100, timeout=1"), ours),
            Duration::from_millis(800)
        );
        assert_eq!(
            reuse_limit(&keep_alive("timeout=120"), ours),
            ours,
            "ours is shorter"
        );
        assert_eq!(reuse_limit(&keep_alive("timeout=0"), ours), Duration::ZERO);
        assert_eq!(reuse_limit(&keep_alive("timeout=soon"), ours), ours);
    }
}
