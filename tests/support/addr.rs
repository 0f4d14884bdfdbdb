//! Helpers for backend addresses (tests/backend_addr.rs): an HTTP origin
//! on a Unix socket, an origin that reads the PROXY header each connection
//! starts with, a resolver whose answer a test changes while Shellac runs,
//! and Shellac started in-process from a `Config` (so the resolver can be
//! put in before it starts).

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::oneshot;

use super::Got;

// === UnixOrigin ===

/// An HTTP/1.1 origin on a Unix socket in a temporary directory.
/// `/slow…` answers after 2 s; `/health` answers the status set by
/// [`UnixOrigin::set_health`] (200 at first); anything else answers 200,
/// cacheable for a minute, with the path in the body.
pub struct UnixOrigin {
    pub path: PathBuf,
    requests: Arc<AtomicUsize>,
    health: Arc<AtomicU16>,
    _dir: tempfile::TempDir,
}

impl UnixOrigin {
    pub async fn start() -> UnixOrigin {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("origin.sock");
        let listener = UnixListener::bind(&path).expect("bind unix origin");
        let requests = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let (count, status) = (requests.clone(), health.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (count, status) = (count.clone(), status.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (count, status) = (count.clone(), status.clone());
                        async move { Ok::<_, Infallible>(unix_answer(req, &count, &status).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        UnixOrigin {
            path,
            requests,
            health,
            _dir: dir,
        }
    }

    /// Requests served, probes excluded.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The status `/health` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }
}

async fn unix_answer(
    req: Request<hyper::body::Incoming>,
    count: &AtomicUsize,
    health: &AtomicU16,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        return Response::builder()
            .status(health.load(Ordering::SeqCst))
            .body(Full::new(Bytes::from_static(b"health")))
            .expect("response");
    }
    count.fetch_add(1, Ordering::SeqCst);
    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let cache_control = if path.starts_with("/fresh") {
        "no-store"
    } else {
        "max-age=60"
    };
    Response::builder()
        .header("cache-control", cache_control)
        .body(Full::new(Bytes::from(format!("unix origin: {path}"))))
        .expect("response")
}

// === ProxyOrigin ===

/// One backend connection as a [`ProxyOrigin`] saw it: the PROXY header
/// it started with, exactly as sent, and Shellac's end of it.
#[derive(Clone, Debug)]
pub struct ProxyConn {
    pub header: Vec<u8>,
    pub peer: SocketAddr,
}

/// A TCP origin that reads the PROXY header (v1 or v2) at the start of
/// each connection, records it, then serves HTTP/1.1 on the rest: 200,
/// `no-store`, the number of the connection in the body.
pub struct ProxyOrigin {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<ProxyConn>>>,
    requests: Arc<AtomicUsize>,
}

impl ProxyOrigin {
    pub async fn start() -> ProxyOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let conns: Arc<Mutex<Vec<ProxyConn>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, peer)) = listener.accept().await else {
                    return;
                };
                let (seen, count) = (seen.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(header) = read_proxy_header(&mut stream).await else {
                        return;
                    };
                    let index = {
                        let mut seen = seen.lock().expect("conns lock");
                        seen.push(ProxyConn { header, peer });
                        seen.len()
                    };
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("cache-control", "no-store")
                                    .body(Full::new(Bytes::from(format!("connection {index}"))))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ProxyOrigin {
            addr,
            conns,
            requests,
        }
    }

    /// Every connection so far, in the order they were accepted.
    pub fn conns(&self) -> Vec<ProxyConn> {
        self.conns.lock().expect("conns lock").clone()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads exactly one PROXY header: a v1 line up to CRLF (at most 107
/// bytes), or the 16 bytes of a v2 header and the length they announce.
async fn read_proxy_header<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut header = vec![0u8; 16];
    stream.read_exact(&mut header[..1]).await?;
    if header[0] == b'P' {
        header.truncate(1);
        while !header.ends_with(b"\r\n") && header.len() < 108 {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await?;
            header.push(byte[0]);
        }
        return Ok(header);
    }
    stream.read_exact(&mut header[1..]).await?;
    let len = u16::from_be_bytes([header[14], header[15]]) as usize;
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await?;
    header.extend_from_slice(&rest);
    Ok(header)
}

// === TestResolver ===

/// A resolver whose answer the test sets: addresses, or a failure.
#[derive(Default)]
pub struct TestResolver {
    answer: Mutex<Option<Vec<SocketAddr>>>,
    lookups: AtomicUsize,
}

impl TestResolver {
    /// From now on every lookup answers `addrs`.
    pub fn answer(&self, addrs: &[SocketAddr]) {
        *self.answer.lock().expect("answer lock") = Some(addrs.to_vec());
    }

    /// From now on every lookup fails.
    pub fn fail(&self) {
        *self.answer.lock().expect("answer lock") = None;
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl shellac::config::Resolve for TestResolver {
    fn lookup(
        &self,
        _host: &str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().expect("answer lock").clone();
        Box::pin(async move {
            answer.ok_or_else(|| std::io::Error::other("test resolver: no such host"))
        })
    }
}

// === InProcess ===

/// Shellac in-process from a parsed `Config` (for hooks a TOML string
/// cannot carry), listening on port 0, with its admin listener if
/// configured. Dropping it shuts Shellac down.
pub struct InProcess {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl InProcess {
    pub async fn start(mut config: shellac::Config) -> InProcess {
        config.server.listen = vec![shellac::config::Listen::plain(
            "127.0.0.1:0".parse().expect("addr"),
        )];
        let listeners = shellac::bind(&config).await.expect("bind shellac");
        let addr = shellac::local_addrs(&listeners)[0];
        let admin_listener = shellac::bind_admin(&config).await.expect("bind admin");
        let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let launch = shellac::Launch {
            admin: admin_listener,
            demo_origin: None,
            ..shellac::Launch::default()
        };
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(shellac::run_with(config, listeners, launch, async move {
            let _ = rx.await;
        }));
        InProcess {
            addr,
            admin,
            shutdown: Some(tx),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Parses `toml` as `test.toml`, panicking on an invalid config.
pub fn parse(toml: &str) -> shellac::Config {
    shellac::Config::parse(Path::new("test.toml"), toml)
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
}

// === a client that knows its own address ===

/// A client connection to Shellac whose local address the test knows (the
/// source a PROXY header should name).
pub struct Client {
    pub local: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let local = stream.local_addr().expect("local addr");
        Client::over(stream, local).await
    }

    async fn over<S>(stream: S, local: SocketAddr) -> Client
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { local, sender }
    }

    /// GET `path` on this connection (keep-alive), the whole response.
    pub async fn get(&mut self, path: &str) -> Got {
        let req = Request::get(path)
            .header("host", "test.example")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(30), self.sender.send_request(req))
            .await
            .expect("a response head within 30 s")
            .expect("a response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Got {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}
