//! Upgrade tunnels (issue 17, item 1) over real sockets: a WebSocket echo
//! through Shellac (handshake, messages both ways, the close handshake),
//! what the backend sees, `pipe_timeout` closing a silent tunnel and
//! sparing a busy one, a non-101 answer relayed and never stored, no
//! coalescing, the synthetic 503 for an unreachable backend, the metrics
//! and the access-log line at the tunnel's end, the `max_connections`
//! permit a tunnel holds, the drain, and `wss://` over a TLS listener.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use support::ws::{self, WsOrigin};
use support::{config, get, send, Origin, Reply, Shellac};

/// The headers of a WebSocket handshake, for clients that are not one.
const UPGRADE: [(&str, &str); 4] = [
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
];

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\"]\n";

fn text(s: &str) -> Message {
    Message::text(s)
}

/// Waits until `check` holds, up to `within`.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sample from the admin `/metrics`, by its exact name and labels.
async fn metric(admin: SocketAddr, sample: &str) -> Option<f64> {
    let text = get(admin, "/metrics").await.text();
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The HTTP status a failed WebSocket handshake got.
fn refused_with(result: Result<impl Sized, WsError>) -> Option<u16> {
    match result {
        Err(WsError::Http(response)) => Some(response.status().as_u16()),
        _ => None,
    }
}

#[tokio::test]
async fn websocket_echo_through_shellac() {
    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let mut ws = ws::connect(shellac.addr, "/chat").await.expect("handshake");
    for i in 0..3 {
        let sent = text(&format!("hello {i}"));
        assert_eq!(ws::round_trip(&mut ws, sent.clone()).await, Some(sent));
    }
    for size in [1usize, 70_000] {
        let sent = Message::binary(vec![7u8; size]);
        assert_eq!(ws::round_trip(&mut ws, sent.clone()).await, Some(sent));
    }
    // The close handshake: our close, the origin's answer, then the end.
    ws.close(None).await.expect("close sent");
    assert!(ws::closed_within(&mut ws, Duration::from_secs(5)).await);
    assert!(eventually(Duration::from_secs(5), || origin.open() == 0).await);
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn the_backend_sees_the_upgrade_fields() {
    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let mut ws = ws::connect(shellac.addr, "/chat").await.expect("handshake");
    assert!(ws::round_trip(&mut ws, text("x")).await.is_some());
    let seen = &origin.handshakes()[0];
    let field = |name| seen.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(
        field("upgrade").eq_ignore_ascii_case("websocket"),
        "{seen:?}"
    );
    assert!(
        field("connection").eq_ignore_ascii_case("upgrade"),
        "{seen:?}"
    );
    assert!(!field("sec-websocket-key").is_empty(), "{seen:?}");
    assert_eq!(field("sec-websocket-version"), "13");
    assert_eq!(field("x-forwarded-for"), "127.0.0.1");
    assert_eq!(field("x-forwarded-proto"), "http");
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_pipe_timeout() {
    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[defaults]\npipe_timeout = \"300ms\"\n",
    ))
    .await;
    let mut ws = ws::connect(shellac.addr, "/").await.expect("handshake");
    assert!(ws::round_trip(&mut ws, text("once")).await.is_some());
    let quiet_since = Instant::now();
    assert!(
        ws::closed_within(&mut ws, Duration::from_secs(3)).await,
        "still open after 3 s of silence"
    );
    let after = quiet_since.elapsed();
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}"
    );
    assert!(eventually(Duration::from_secs(3), || origin.open() == 0).await);
}

#[tokio::test]
async fn a_busy_tunnel_outlives_pipe_timeout() {
    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(
        origin.addr,
        "[defaults]\npipe_timeout = \"300ms\"\n",
    ))
    .await;
    let mut ws = ws::connect(shellac.addr, "/").await.expect("handshake");
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        let sent = text(&format!("tick {n}"));
        assert_eq!(ws::round_trip(&mut ws, sent.clone()).await, Some(sent));
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 8, "{n} messages");
    assert_eq!(origin.connections(), 1, "one tunnel all along");
}

#[tokio::test]
async fn a_non_101_answer_is_relayed_and_never_stored() {
    // An origin that knows no WebSocket, with a cacheable plain answer.
    let origin = Origin::fixed(Reply::ok("plain page").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    for n in 1..=2 {
        let got = send(shellac.addr, "GET", "/page", &UPGRADE).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "plain page");
        assert_eq!(got.header("x-cache"), Some("PASS"));
        assert_eq!(
            origin.requests(),
            n,
            "every Upgrade request reaches the origin"
        );
    }
    let first = send(shellac.addr, "GET", "/page", &[]).await;
    assert_eq!(
        first.header("x-cache"),
        Some("MISS"),
        "not a hit of the upgrade's answer"
    );
    assert_eq!(origin.requests(), 3);
    let second = send(shellac.addr, "GET", "/page", &[]).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 3);

    let refusing = Origin::fixed(Reply::ok("upgrade required").status(426)).await;
    let shellac = Shellac::start(&config(refusing.addr, "")).await;
    let got = send(shellac.addr, "GET", "/ws", &UPGRADE).await;
    assert_eq!(got.status, 426);
    assert_eq!(got.text(), "upgrade required");
}

#[tokio::test]
async fn upgrade_requests_never_coalesce() {
    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let (a, b) = tokio::join!(
        ws::connect(shellac.addr, "/same"),
        ws::connect(shellac.addr, "/same")
    );
    let (mut a, mut b) = (a.expect("first"), b.expect("second"));
    assert_eq!(ws::round_trip(&mut a, text("a")).await, Some(text("a")));
    assert_eq!(ws::round_trip(&mut b, text("b")).await, Some(text("b")));
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn an_unreachable_backend_gives_the_synthetic_503() {
    let nobody = Origin::refusing().await;
    let shellac = Shellac::start(&config(nobody, "")).await;
    let got = send(shellac.addr, "GET", "/ws", &UPGRADE).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-cache"), Some("SYNTH"));
    assert_eq!(
        refused_with(ws::connect(shellac.addr, "/ws").await),
        Some(503)
    );
}

#[tokio::test]
async fn a_tunnel_is_counted_and_logged_once_at_its_end() {
    let origin = WsOrigin::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let extra = format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n{ADMIN}",
        path.display()
    );
    let shellac = Shellac::start(&config(origin.addr, &extra)).await;
    let admin = shellac.admin.expect("admin listener");
    let mut ws = ws::connect(shellac.addr, "/live?x=1")
        .await
        .expect("handshake");
    assert!(ws::round_trip(&mut ws, text("hello")).await.is_some());
    assert_eq!(metric(admin, "shellac_tunnels_open").await, Some(1.0));
    assert_eq!(metric(admin, "shellac_tunnels_total").await, Some(1.0));
    let up = "shellac_tunnel_bytes_total{direction=\"client_to_backend\"}";
    let down = "shellac_tunnel_bytes_total{direction=\"backend_to_client\"}";
    // Counted as they move, before the end.
    assert!(metric(admin, up).await.unwrap_or(0.0) > 0.0);
    assert!(metric(admin, down).await.unwrap_or(0.0) > 0.0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(!read().contains("/live"), "no line while open: {}", read());

    ws.close(None).await.expect("close");
    assert!(ws::closed_within(&mut ws, Duration::from_secs(5)).await);
    assert!(eventually(Duration::from_secs(5), || read().contains("/live")).await);
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .filter(|l| l.contains("/live"))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["status"], 101);
    assert_eq!(line["cache"], "pass");
    assert_eq!(line["backend"], "origin");
    assert!(
        line["duration_ms"].as_f64().unwrap_or(0.0) >= 200.0,
        "{line}"
    );
    let moved_up = line["tunnel"]["client_to_backend"].as_u64().unwrap_or(0);
    let moved_down = line["tunnel"]["backend_to_client"].as_u64().unwrap_or(0);
    // "hello" is 5 bytes; each frame adds its header (and the client's mask).
    assert!(moved_up > 5 && moved_down > 5, "{line}");
    assert_eq!(line["bytes"].as_u64(), Some(moved_down));
    assert_eq!(metric(admin, "shellac_tunnels_open").await, Some(0.0));
    assert_eq!(metric(admin, up).await, Some(moved_up as f64));
    assert_eq!(metric(admin, down).await, Some(moved_down as f64));
}

#[tokio::test]
async fn a_tunnel_holds_a_max_connections_permit() {
    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(origin.addr, "max_connections = 1\n")).await;
    let mut first = ws::connect(shellac.addr, "/").await.expect("handshake");
    assert!(ws::round_trip(&mut first, text("in")).await.is_some());
    // The tunnel still holds the one permit: the next client is refused.
    assert_eq!(
        refused_with(ws::connect(shellac.addr, "/").await),
        Some(503)
    );
    first.close(None).await.expect("close");
    assert!(ws::closed_within(&mut first, Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut second = loop {
        match ws::connect(shellac.addr, "/").await {
            Ok(ws) => break ws,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("still refused after the tunnel closed: {error}"),
        }
    };
    assert!(ws::round_trip(&mut second, text("again")).await.is_some());
}

#[tokio::test]
async fn the_drain_closes_an_open_tunnel_after_drain_timeout() {
    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(origin.addr, "drain_timeout = \"1s\"\n")).await;
    let addr = shellac.addr;
    let mut ws = ws::connect(addr, "/").await.expect("handshake");
    assert!(ws::round_trip(&mut ws, text("before")).await.is_some());
    let stopping = Instant::now();
    let stopped = tokio::spawn(shellac.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: the tunnel goes on, new connections are not accepted.
    assert_eq!(
        ws::round_trip(&mut ws, text("during")).await,
        Some(text("during"))
    );
    assert!(ws::closed_within(&mut ws, Duration::from_secs(5)).await);
    let after = stopping.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "closed {after:?} after the stop"
    );
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("Shellac stopped")
        .expect("no panic");
    assert!(eventually(Duration::from_secs(3), || origin.open() == 0).await);
}

// === wss:// over a TLS listener ===

/// A CA-signed certificate for `test.example` in `dir` (`leaf.pem`,
/// `leaf.key`), and the CA to trust.
fn certificate(dir: &Path) -> rustls_pki_types::CertificateDer<'static> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca");
    let params = CertificateParams::new(vec!["test.example".to_string()]).expect("leaf params");
    let key = KeyPair::generate().expect("leaf key");
    let leaf = params.signed_by(&key, &ca).expect("sign");
    std::fs::write(dir.join("leaf.pem"), format!("{}{}", leaf.pem(), ca.pem())).expect("pem");
    std::fs::write(dir.join("leaf.key"), key.serialize_pem()).expect("key");
    ca.der().clone()
}

#[tokio::test]
async fn wss_through_a_tls_listener() {
    let origin = WsOrigin::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certificate(dir.path());
    let file = dir.path().join("shellac.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = [{{ address = \"127.0.0.1:0\", tls = true }}]\n\
             [[tls.certificate]]\ncertificate = \"leaf.pem\"\nprivate_key = \"leaf.key\"\n\
             [[backend]]\nname = \"origin\"\naddress = \"{}\"\n",
            origin.addr
        ),
    )
    .expect("write config");
    let config = shellac::Config::load(&file).unwrap_or_else(|e| panic!("config: {e}"));
    let listeners = shellac::bind(&config).await.expect("bind");
    let addr = shellac::local_addrs(&listeners)[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shellac::run_with(
        config,
        listeners,
        shellac::Launch::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("add ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("test.example").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut ws = ws::connect_on(tls, "wss://test.example/secure")
        .await
        .expect("wss handshake");
    for i in 0..3 {
        let sent = text(&format!("secret {i}"));
        assert_eq!(ws::round_trip(&mut ws, sent.clone()).await, Some(sent));
    }
    let seen = &origin.handshakes()[0];
    assert_eq!(
        seen.get("x-forwarded-proto").and_then(|v| v.to_str().ok()),
        Some("https")
    );
    ws.close(None).await.expect("close");
    assert!(ws::closed_within(&mut ws, Duration::from_secs(5)).await);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

#[tokio::test]
async fn a_tunnel_holds_its_backend_slot() {
    let origin = WsOrigin::echo().await;
    let extra = "[defaults]\nmax_connections = 1\nqueue_length = 0\n";
    let shellac = Shellac::start(&config(origin.addr, extra)).await;
    let mut first = ws::connect(shellac.addr, "/").await.expect("handshake");
    assert!(ws::round_trip(&mut first, text("in")).await.is_some());
    // The backend's one slot is the tunnel's: queue_full, a quick 503.
    assert_eq!(
        refused_with(ws::connect(shellac.addr, "/").await),
        Some(503)
    );
    first.close(None).await.expect("close");
    assert!(ws::closed_within(&mut first, Duration::from_secs(5)).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut second = loop {
        match ws::connect(shellac.addr, "/").await {
            Ok(ws) => break ws,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("slot not released after the tunnel closed: {error}"),
        }
    };
    assert!(ws::round_trip(&mut second, text("again")).await.is_some());
}

#[tokio::test]
async fn a_refused_connect_moves_on_to_another_backend() {
    let origin = WsOrigin::echo().await;
    let dead = Origin::refusing().await;
    let shellac = Shellac::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[backend]]\nname = \"dead\"\naddress = \"{dead}\"\n\
         [[backend]]\nname = \"live\"\naddress = \"{}\"\n\
         [[pool]]\nname = \"default\"\nbackends = [\"dead\", \"live\"]\n",
        origin.addr
    ))
    .await;
    for i in 0..4 {
        let mut ws = ws::connect(shellac.addr, "/")
            .await
            .unwrap_or_else(|e| panic!("tunnel {i}: {e}"));
        assert!(ws::round_trip(&mut ws, text("hi")).await.is_some());
    }
    assert_eq!(origin.connections(), 4);
}

#[tokio::test]
async fn the_combined_log_line_of_a_tunnel_has_its_bytes_each_way() {
    let origin = WsOrigin::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let extra = format!("[log]\naccess = \"{}\"\n", path.display());
    let shellac = Shellac::start(&config(origin.addr, &extra)).await;
    let mut ws = ws::connect(shellac.addr, "/c").await.expect("handshake");
    assert!(ws::round_trip(&mut ws, text("hello")).await.is_some());
    ws.close(None).await.expect("close");
    assert!(ws::closed_within(&mut ws, Duration::from_secs(5)).await);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || !read().is_empty()).await);
    let text = read();
    let line = text.lines().next().unwrap_or_default();
    assert!(line.contains("\"GET /c HTTP/1.1\" 101 "), "{line}");
    assert!(line.contains(" pass "), "{line}");
    let (_, moved) = line.rsplit_once(" tunnel=").expect("tunnel field");
    let (up, down) = moved.split_once('/').expect("up/down");
    let (up, down): (u64, u64) = (up.parse().expect("up"), down.parse().expect("down"));
    assert!(up > 5 && down > 5, "{line}");
    assert!(
        line.contains(&format!(" 101 {down} ")),
        "bytes is what the client got: {line}"
    );
}

#[tokio::test]
async fn an_h2c_upgrade_is_ignored_and_the_request_cached() {
    let origin = Origin::fixed(Reply::ok("page").header("cache-control", "max-age=60")).await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    // What `curl --http2 http://…` sends with every request.
    let h2c = [
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ];
    let first = send(shellac.addr, "GET", "/h2c", &h2c).await;
    assert_eq!(
        (first.status.as_u16(), first.header("x-cache")),
        (200, Some("MISS"))
    );
    let second = send(shellac.addr, "GET", "/h2c", &h2c).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 1);
    let seen = &origin.seen()[0].headers;
    assert!(!seen.contains_key("upgrade"), "{seen:?}");
    assert!(!seen.contains_key("http2-settings"), "{seen:?}");
    // The connection goes on as HTTP/1.1 keep-alive.
    let one = "GET /h2c HTTP/1.1\r\nHost: test.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
               Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let two = support::raw(
        shellac.addr,
        format!("{one}{one}").as_bytes(),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 2, "{two}");
}

#[tokio::test]
async fn a_sick_backend_gets_no_tunnel() {
    let (sick, healthy) = (WsOrigin::echo().await, WsOrigin::echo().await);
    let shellac = Shellac::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"admin.test\"]\n\
         [[backend]]\nname = \"sick\"\naddress = \"{}\"\n\
         [[backend]]\nname = \"healthy\"\naddress = \"{}\"\n\
         [[pool]]\nname = \"default\"\nbackends = [\"sick\", \"healthy\"]\n",
        sick.addr, healthy.addr
    ))
    .await;
    let admin = shellac.admin.expect("admin listener");
    let forced = support::send_body(
        admin,
        "POST",
        "/backends/sick",
        &[],
        "{\"health\": \"sick\"}",
    )
    .await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    for _ in 0..4 {
        let mut ws = ws::connect(shellac.addr, "/").await.expect("handshake");
        assert!(ws::round_trip(&mut ws, text("hi")).await.is_some());
    }
    assert_eq!(sick.connections(), 0);
    assert_eq!(healthy.connections(), 4);
}

// === RFC 8441: WebSockets over HTTP/2 ===

/// An HTTP/2 WebSocket through Shellac (extended CONNECT, h2c with prior
/// knowledge) to the HTTP/1.1 echo origin.
#[tokio::test]
async fn an_http2_extended_connect_reaches_an_http11_websocket_backend() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let origin = WsOrigin::echo().await;
    let shellac = Shellac::start(&config(origin.addr, "")).await;
    let tcp = tokio::net::TcpStream::connect(shellac.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let connect = || {
        let mut req = http::Request::builder()
            .method("CONNECT")
            .uri("http://test.example/chat")
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        req
    };
    // The server's SETTINGS (which allow extended CONNECT) may not have
    // arrived yet when the handshake returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = loop {
        match sender.send_request(connect()).await {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("extended CONNECT refused: {error}"),
        }
    };
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = hyper::upgrade::on(response).await.expect("upgraded stream");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    for i in 0..3 {
        let sent = text(&format!("over h2 {i}"));
        assert_eq!(ws::round_trip(&mut ws, sent.clone()).await, Some(sent));
    }
    let sent = Message::binary(vec![9u8; 50_000]);
    assert_eq!(ws::round_trip(&mut ws, sent.clone()).await, Some(sent));
    let seen = &origin.handshakes()[0];
    let field = |name| seen.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(
        field("upgrade").eq_ignore_ascii_case("websocket"),
        "{seen:?}"
    );
    assert_eq!(field("sec-websocket-key").len(), 24, "{seen:?}");
    assert_eq!(field("host"), "test.example");
    ws.close(None).await.expect("close");
    assert!(ws::closed_within(&mut ws, Duration::from_secs(5)).await);
    assert!(eventually(Duration::from_secs(5), || origin.open() == 0).await);
}
