//! Origins on `127.0.0.1:0` that count and record the requests they get.
//!
//! [`Origin::start`] is a real hyper server answering with a [`Reply`]
//! (status, headers, body, delay). [`Origin::raw`] speaks raw TCP from a
//! script of [`Step`]s, for the backends that misbehave on purpose: closing
//! mid-body, stalling, sending oversized heads, never answering.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a hyper origin answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// One step of a raw origin's answer.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send these bytes.
    Write(Vec<u8>),
    /// Send `total` bytes of `b'x'` in pieces of `piece`.
    WriteFill { total: usize, piece: usize },
    /// Wait.
    Sleep(Duration),
    /// Close the connection now.
    Close,
    /// Keep the connection open and never say anything again.
    Hang,
}

/// A running origin.
#[derive(Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    /// A hyper origin; `handler` decides each answer.
    pub async fn start<F, Fut>(handler: F) -> Origin
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Origin::accepting(move |stream, recorder| {
            let handler = handler.clone();
            async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let recorder = recorder.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let seen = Seen {
                            method: parts.method.to_string(),
                            target: parts
                                .uri
                                .path_and_query()
                                .map_or("/".into(), |p| p.to_string()),
                            headers: parts.headers,
                            body,
                        };
                        recorder.record(seen.clone());
                        let reply = handler(seen).await;
                        if !reply.delay.is_zero() {
                            tokio::time::sleep(reply.delay).await;
                        }
                        let mut response = Response::new(Full::new(reply.body));
                        *response.status_mut() =
                            StatusCode::from_u16(reply.status).expect("valid status");
                        for (name, value) in reply.headers {
                            response.headers_mut().append(
                                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                                http::HeaderValue::from_str(&value).expect("value"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await
    }

    /// Binds `127.0.0.1:0` and serves every accepted connection with
    /// `serve` (given the stream and the origin, to record into), each on
    /// its own task.
    async fn accepting<S, Fut>(serve: S) -> Origin
    where
        S: Fn(TcpStream, Origin) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let origin = Origin {
            addr: listener.local_addr().expect("origin addr"),
            count: Arc::default(),
            seen: Arc::default(),
        };
        let recorder = origin.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, recorder.clone()));
            }
        });
        origin
    }

    /// An origin that answers every request with the same reply.
    pub async fn fixed(reply: Reply) -> Origin {
        Origin::start(move |_| {
            let reply = reply.clone();
            async move { reply }
        })
        .await
    }

    /// A raw-TCP origin: reads each request head (and a Content-Length
    /// body), then plays the script `handler` returns for it.
    pub async fn raw<F>(handler: F) -> Origin
    where
        F: Fn(&Seen) -> Vec<Step> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let origin = Origin {
            addr: listener.local_addr().expect("origin addr"),
            count: Arc::default(),
            seen: Arc::default(),
        };
        let handler = Arc::new(handler);
        let recorder = origin.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let recorder = recorder.clone();
                tokio::spawn(async move { raw_connection(stream, handler, recorder).await });
            }
        });
        origin
    }

    /// An address where nothing listens: connections are refused.
    pub async fn refusing() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        addr
    }

    fn record(&self, seen: Seen) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().expect("seen lock").push(seen);
    }

    /// How many requests reached the origin.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Every request the origin saw, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }
}

async fn raw_connection<F>(mut stream: TcpStream, handler: Arc<F>, recorder: Origin)
where
    F: Fn(&Seen) -> Vec<Step> + Send + Sync + 'static,
{
    let mut buffer = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        buffer.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((name, value)) = line.split_once(':') {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.trim().as_bytes()),
                    http::HeaderValue::from_str(value.trim()),
                ) {
                    headers.append(n, v);
                }
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = Bytes::from(buffer.drain(..length).collect::<Vec<u8>>());
        let seen = Seen {
            method,
            target,
            headers,
            body,
        };
        recorder.record(seen.clone());
        for step in handler(&seen) {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::WriteFill { total, piece } => {
                    let block = vec![b'x'; piece];
                    let mut left = total;
                    while left > 0 {
                        let n = left.min(piece);
                        if stream.write_all(&block[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Close => return,
                Step::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
            }
        }
    }
}

/// Kills a [`Origin::mortal`] origin: its listener and every open
/// connection go away, so new connects are refused, as when a process dies.
pub struct Killer {
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Killer {
    pub fn kill(&self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

impl Origin {
    /// A hyper origin answering `reply` that can be killed with the [`Killer`].
    pub async fn mortal(reply: Reply) -> (Origin, Killer) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        Origin::mortal_on(listener, reply)
    }

    /// Like [`Origin::mortal`], but on `addr`: an origin that comes back on
    /// the port of one that was killed (a restarted process). Binding is
    /// retried for up to 5 s while the killed listener goes away.
    pub async fn mortal_at(addr: SocketAddr, reply: Reply) -> (Origin, Killer) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if std::time::Instant::now() >= deadline => {
                    panic!("could not bind the restarted origin on {addr}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        Origin::mortal_on(listener, reply)
    }

    fn mortal_on(listener: TcpListener, reply: Reply) -> (Origin, Killer) {
        let origin = Origin {
            addr: listener.local_addr().expect("origin addr"),
            count: Arc::default(),
            seen: Arc::default(),
        };
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let recorder = origin.clone();
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorder = recorder.clone();
                let reply = reply.clone();
                let conn = tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let recorder = recorder.clone();
                        let reply = reply.clone();
                        async move {
                            recorder.record(Seen {
                                method: req.method().to_string(),
                                target: req.uri().to_string(),
                                headers: req.headers().clone(),
                                body: Bytes::new(),
                            });
                            let mut response = Response::new(Full::new(reply.body));
                            *response.status_mut() =
                                StatusCode::from_u16(reply.status).expect("valid status");
                            for (name, value) in reply.headers {
                                response.headers_mut().append(
                                    http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                                    http::HeaderValue::from_str(&value).expect("value"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                registry.lock().expect("tasks lock").push(conn);
            }
        });
        tasks.lock().expect("tasks lock").push(accept);
        (origin, Killer { tasks })
    }
}

// === raw recording origin (hardening tests) ===

/// A raw-TCP origin that keeps exactly the bytes it received, per request,
/// so a test can assert what a proxy forwarded byte for byte. It frames each
/// request itself (a `Content-Length` body or a chunked body, nothing else)
/// and answers each with the same canned response.
#[derive(Clone)]
pub struct RawRecorder {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
}

impl RawRecorder {
    /// Starts the recorder; every request it can frame gets `response`.
    pub async fn start(response: &'static [u8]) -> RawRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let recorder = RawRecorder {
            addr: listener.local_addr().expect("origin addr"),
            requests: Arc::default(),
            connections: Arc::default(),
        };
        let shared = recorder.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                tokio::spawn(async move { shared.serve(stream, response).await });
            }
        });
        recorder
    }

    /// Every request received, each exactly as its bytes arrived (head and
    /// body framing included).
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// The requests as (lossy) text, for assertions and messages.
    pub fn texts(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| String::from_utf8_lossy(r).to_string())
            .collect()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    async fn serve(&self, mut stream: TcpStream, response: &'static [u8]) {
        let mut buffer = Vec::new();
        loop {
            let Some(len) = read_framed(&mut stream, &mut buffer).await else {
                // Whatever arrived without a complete frame is kept too.
                if !buffer.is_empty() {
                    self.requests.lock().expect("requests lock").push(buffer);
                }
                return;
            };
            let request: Vec<u8> = buffer.drain(..len).collect();
            self.requests.lock().expect("requests lock").push(request);
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    }
}

/// Reads from `stream` into `buffer` until one whole request is in it;
/// returns its length, or `None` when the peer closed first.
async fn read_framed(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(len) = frame_length(buffer) {
            return Some(len);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the first complete request in `buffer`, if it is all there.
fn frame_length(buffer: &[u8]) -> Option<usize> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        let mut at = head_end;
        loop {
            let line_end = buffer[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&buffer[at..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailers end with an empty line.
                let end = buffer[at..].windows(2).position(|w| w == b"\r\n")?;
                if end == 0 {
                    return Some(at + 2);
                }
                let trailers_end = buffer[at..].windows(4).position(|w| w == b"\r\n\r\n")?;
                return Some(at + trailers_end + 4);
            }
            at += size + 2;
            if at > buffer.len() {
                return None;
            }
        }
    }
    let length: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (buffer.len() >= head_end + length).then_some(head_end + length)
}
