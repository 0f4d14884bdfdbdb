//! Shared helpers for the integration tests: Shellac started from a TOML
//! string, misbehaving origins, and small clients. Everything talks over
//! real sockets on 127.0.0.1 with port 0.

#![allow(dead_code, unreachable_pub)]

pub mod addr;
pub mod origin;
pub mod redis;
pub mod shellac;
pub mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(unused_imports)]
pub use origin::{Origin, Reply, Step};
#[allow(unused_imports)]
pub use shellac::{Shellac, ShellacProcess};

/// A config with one backend at `backend` and extra TOML appended.
pub fn config(backend: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[[backend]]\nname = \"origin\"\naddress = \"{backend}\"\n"
    )
}

/// A response as a client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// Sends a request on a fresh connection and reads the whole response.
pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    try_send(addr, method, path, headers)
        .await
        .expect("request failed")
}

/// Like [`send`], but returns the error when the response fails mid-way.
pub async fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Got, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut builder = Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", "test.example");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| "no response head within 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .map_err(|_| "body not finished within 30 s".to_string())?
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// GET with no extra headers.
pub async fn get(addr: SocketAddr, path: &str) -> Got {
    send(addr, "GET", path, &[]).await
}

/// Writes raw bytes and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// Sends a request with a body on a fresh connection.
pub async fn send_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// What a client saw on one raw connection.
pub struct RawReply {
    pub text: String,
    /// The server closed the connection (EOF or reset) within the wait.
    pub closed: bool,
}

impl RawReply {
    /// The status of the first response (HTTP/1.1 or HTTP/1.0).
    pub fn status(&self) -> Option<u16> {
        self.text
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| self.text.strip_prefix("HTTP/1.0 "))?
            .get(..3)?
            .parse()
            .ok()
    }

    /// Everything after the first head.
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Reads until the server closes or `wait` passes.
pub async fn read_reply(stream: &mut TcpStream, wait: Duration) -> RawReply {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + wait;
    let mut closed = false;
    loop {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
    RawReply {
        text: String::from_utf8_lossy(&out).to_string(),
        closed,
    }
}
