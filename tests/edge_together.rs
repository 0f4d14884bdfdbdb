//! The edge features of issue 17 together and under faults, the way an
//! operator's bad day looks: a WebSocket arriving through a local TLS
//! terminator's Unix socket with a PROXY header and going to an app
//! server's Unix socket; WebSocket clients that vanish without a close
//! (a client's fault, which must never eject a backend); and a Unix-socket
//! app server that restarts (the socket file removed and made again),
//! which must cost about the restart, not a long outage.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use support::ws::{self, WsOrigin};
use support::{get, Shellac};

/// Waits until `check` holds, up to `within`.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket echo server on a Unix socket at `path` that records each
/// handshake's headers.
fn unix_ws_echo(path: &Path, seen: Arc<Mutex<Vec<HeaderMap>>>) -> JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind unix ws origin");
    tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            sessions.spawn(async move {
                // tungstenite's callback type, not ours.
                #[allow(clippy::result_large_err)]
                let record = |req: &Request, res: Response| {
                    seen.lock().expect("seen").push(req.headers().clone());
                    Ok(res)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let data = matches!(message, Message::Text(_) | Message::Binary(_));
                    if data && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

#[tokio::test]
async fn a_websocket_through_a_proxy_protocol_unix_listener_reaches_a_unix_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let front = dir.path().join("front.sock");
    let app = dir.path().join("app.sock");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _origin = unix_ws_echo(&app, seen.clone());
    let shellac = Shellac::start_as_configured(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\", {{ address = \"unix:{}\", proxy_protocol = true }}]\n\
         [[backend]]\nname = \"app\"\naddress = \"unix:{}\"\n",
        front.display(),
        app.display()
    ))
    .await;

    // hitch's part: the PROXY header naming the browser, then its bytes.
    let mut stream = UnixStream::connect(&front).await.expect("connect");
    stream
        .write_all(b"PROXY TCP4 198.51.100.20 192.0.2.1 50123 443\r\n")
        .await
        .expect("header");
    let mut session = ws::connect_on(stream, "ws://chat.example/live")
        .await
        .expect("handshake through both sockets");
    for i in 0..3 {
        let sent = Message::text(format!("tick {i}"));
        assert_eq!(ws::round_trip(&mut session, sent.clone()).await, Some(sent));
    }
    session.close(None).await.expect("close");
    assert!(ws::closed_within(&mut session, Duration::from_secs(5)).await);

    let handshakes = seen.lock().expect("seen").clone();
    assert_eq!(handshakes.len(), 1);
    let xff = handshakes[0]
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(
        xff, "198.51.100.20",
        "the app sees the browser, not the terminator"
    );
    shellac.stop().await;
}

/// The admin's `/backends` list.
async fn backends(admin: SocketAddr) -> Vec<serde_json::Value> {
    let got = get(admin, "/backends").await;
    let json: serde_json::Value = serde_json::from_slice(&got.body).expect("backends json");
    json["backends"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn websocket_clients_that_vanish_never_eject_a_backend() {
    let (a, b) = (WsOrigin::echo().await, WsOrigin::echo().await);
    let shellac = Shellac::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\"]\n\
         [defaults]\nconsecutive_failures = 2\n\
         [[backend]]\nname = \"a\"\naddress = \"{}\"\n\
         [[backend]]\nname = \"b\"\naddress = \"{}\"\n",
        a.addr, b.addr
    ))
    .await;
    let admin = shellac.admin.expect("admin listener");

    // Ten clients open a session, send half a frame's worth of intent and
    // drop the TCP connection without a close: phones going into tunnels.
    for _ in 0..10 {
        let mut session = ws::connect(shellac.addr, "/live").await.expect("handshake");
        session.send(Message::text("bye?")).await.expect("send");
        drop(session);
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.open() + b.open() == 0
        })
        .await,
        "every vanished client's tunnel is closed on the backend side too"
    );
    for backend in backends(admin).await {
        assert_eq!(backend["ejected"], false, "{backend}");
        assert_eq!(backend["healthy"], true, "{backend}");
    }
    // New sessions still go to both backends.
    let (before_a, before_b) = (a.connections(), b.connections());
    for _ in 0..4 {
        let mut session = ws::connect(shellac.addr, "/live").await.expect("handshake");
        let sent = Message::text("still here");
        assert_eq!(ws::round_trip(&mut session, sent.clone()).await, Some(sent));
    }
    assert!(a.connections() > before_a && b.connections() > before_b);
    shellac.stop().await;
}

/// A plain HTTP app server on a Unix socket; aborting the handle ends the
/// listener and every connection, as a process exit would.
fn unix_app(path: &Path) -> JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind unix app");
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("cache-control", "no-store")
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"up")))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[tokio::test]
async fn a_restarted_unix_socket_backend_is_used_again_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app: PathBuf = dir.path().join("app.sock");
    let server = unix_app(&app);
    let shellac = Shellac::start(&format!(
        "[[backend]]\nname = \"app\"\naddress = \"unix:{}\"\n",
        app.display()
    ))
    .await;
    assert_eq!(get(shellac.addr, "/page").await.status, 200);

    // The app server goes away (its pooled connection with it) and its
    // socket file is gone: requests get the synthetic 503 meanwhile.
    server.abort();
    let _ = server.await;
    std::fs::remove_file(&app).expect("remove socket");
    let down = get(shellac.addr, "/page").await;
    assert_eq!(down.status, 503);
    assert!(down.header("retry-after").is_some());

    // It comes back at the same path: served again within a second.
    let _server = unix_app(&app);
    let back = Instant::now();
    let served = eventually(Duration::from_secs(5), || async {
        get(shellac.addr, "/page").await.status == 200
    })
    .await;
    assert!(served, "the restarted app is never used again");
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "a restart cost {:?} of outage after the app was back",
        back.elapsed()
    );
    shellac.stop().await;
}
