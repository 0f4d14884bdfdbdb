//! A WebSocket echo origin on port 0 (tokio-tungstenite's server side),
//! counting its connections and keeping each handshake's request headers,
//! and a WebSocket client that connects through Shellac over plain TCP or
//! any other stream (TLS for `wss://`).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket echo origin: every text and binary message comes back as
/// it was sent; a close is answered with a close.
pub struct WsOrigin {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<HeaderMap>>>,
}

impl WsOrigin {
    pub async fn echo() -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ws origin");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let (c, o, h) = (connections.clone(), open.clone(), handshakes.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (open, handshakes) = (o.clone(), h.clone());
                tokio::spawn(async move {
                    // tungstenite's callback type, not ours.
                    #[allow(clippy::result_large_err)]
                    let record = |req: &Request, res: Response| {
                        handshakes
                            .lock()
                            .expect("handshakes")
                            .push(req.headers().clone());
                        Ok(res)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                    else {
                        return;
                    };
                    open.fetch_add(1, Ordering::SeqCst);
                    // tungstenite answers pings and closes itself.
                    while let Some(Ok(message)) = ws.next().await {
                        let data = matches!(message, Message::Text(_) | Message::Binary(_));
                        if data && ws.send(message).await.is_err() {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        WsOrigin {
            addr,
            connections,
            open,
            handshakes,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// WebSocket sessions open now (handshake done, not yet closed).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The request headers of every handshake so far.
    pub fn handshakes(&self) -> Vec<HeaderMap> {
        self.handshakes.lock().expect("handshakes").clone()
    }
}

/// A WebSocket session through Shellac at `addr`, path `path`.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let stream = TcpStream::connect(addr).await?;
    connect_on(stream, &format!("ws://test.example{path}")).await
}

/// A WebSocket handshake for `url` on an open stream (TLS for `wss://`).
pub async fn connect_on<S>(
    stream: S,
    url: &str,
) -> Result<WebSocketStream<S>, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .map_err(|_| std::io::Error::other("no handshake within 10 s"))??;
    Ok(ws)
}

/// Sends `message` and returns the next text or binary message (pings and
/// pongs skipped), or `None` when the session ended first or within 5 s.
pub async fn round_trip<S>(ws: &mut WebSocketStream<S>, message: Message) -> Option<Message>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(message).await.ok()?;
    next_data(ws, Duration::from_secs(5)).await
}

/// The next text or binary message within `wait`.
pub async fn next_data<S>(ws: &mut WebSocketStream<S>, wait: Duration) -> Option<Message>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return Some(m),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Waits up to `wait` for the session to end (the server closed it);
/// true when it did.
pub async fn closed_within<S>(ws: &mut WebSocketStream<S>, wait: Duration) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}
