//! At the edge of real deployments (issue 17): the PROXY protocol (v1 and
//! v2) on `proxy_protocol = true` listeners, Unix-socket listeners, and
//! `listen = ":port"` on every interface. Everything over real sockets:
//! the client writes the header a load balancer would, and the test looks
//! at what the backend, the access log and the metrics saw.

mod support;

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use support::{Origin, Reply, Shellac};

// === helpers ===

fn cacheable(body: &'static str) -> Reply {
    Reply::ok(body).header("cache-control", "max-age=60")
}

/// A config whose listeners are `listen` (a TOML value), one backend, and `extra`.
fn config(listen: &str, backend: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = {listen}\n{extra}\n[[backend]]\nname = \"origin\"\naddress = \"{backend}\"\n"
    )
}

/// The TCP address of listener `i`.
fn tcp(shellac: &Shellac, i: usize) -> SocketAddr {
    match &shellac.bound[i] {
        shellac::server::Bound::Tcp(addr) => *addr,
        other => panic!("listener {i} is {other}, not TCP"),
    }
}

/// A PROXY v1 line for a TCP client at `src` reaching `dst`.
fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A PROXY v2 `PROXY` header for `src` reaching `dst` (ppp's builder).
fn v2_proxy(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    v2::Builder::with_addresses(0x21, v2::Protocol::Stream, (src, dst))
        .write_tlv(v2::Type::NoOp, b"padding")
        .and_then(v2::Builder::build)
        .expect("v2 header")
}

/// A PROXY v2 `LOCAL` header (a balancer's own health check).
fn v2_local() -> Vec<u8> {
    v2::Builder::new(0x20, 0x00).build().expect("v2 local")
}

/// A request that closes its connection.
fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: edge.test\r\nconnection: close\r\n\r\n").into_bytes()
}

/// Writes each of `parts` (pausing between them) and reads until the
/// server closes: what came back, or the read error.
async fn exchange<S>(mut stream: S, parts: &[&[u8]], pause: Duration) -> std::io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        stream.write_all(part).await?;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no close in 10 s"))??;
    Ok(answer)
}

/// `exchange` over TCP to `addr`, as text.
async fn over_tcp(addr: SocketAddr, parts: &[&[u8]]) -> std::io::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let answer = exchange(stream, parts, Duration::from_millis(30)).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The connection was closed with no response: an empty read, or a reset
/// (closing with unread request bytes resets), or a write refused after
/// the close.
fn closed_silently(answer: std::io::Result<String>) -> bool {
    match answer {
        Ok(text) => text.is_empty(),
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// The last `X-Forwarded-For` the origin saw.
fn last_xff(origin: &Origin) -> String {
    origin
        .seen()
        .last()
        .and_then(|s| s.headers.get("x-forwarded-for").cloned())
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default()
}

/// The access log's lines, once there are at least `n` (or after 5 s).
async fn access_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = std::fs::File::open(path)
            .map(|f| {
                std::io::BufReader::new(f)
                    .lines()
                    .map_while(Result::ok)
                    .collect()
            })
            .unwrap_or_default();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A sample from the admin `/metrics`.
async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let host = admin.to_string();
    let text = over_tcp(
        admin,
        &[
            format!("GET /metrics HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        ],
    )
    .await
    .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `metric` reaches `at_least`.
async fn metric_reaches(admin: SocketAddr, name: &str, at_least: f64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(admin, name).await;
        if value.is_some_and(|v| v >= at_least) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";
const ERRORS: &str = "shellac_proxy_protocol_errors_total";

// === PROXY protocol ===

#[tokio::test]
async fn proxy_v1_source_is_the_client_in_x_forwarded_for_and_the_access_log() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let shellac = Shellac::start_as_configured(&config(
        "[{ address = \"127.0.0.1:0\", proxy_protocol = true }]",
        origin.addr,
        &format!("[log]\naccess = \"{}\"\n", log.display()),
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let header = v1("203.0.113.7:5555".parse().expect("src"), addr);
    let answer = over_tcp(addr, &[&header, &request("/v1")])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "203.0.113.7");
    let forwarded = origin.seen()[0].headers["forwarded"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(forwarded.starts_with("for=203.0.113.7;"), "{forwarded}");
    let lines = access_lines(&log, 1).await;
    assert!(lines[0].starts_with("203.0.113.7 - - ["), "{lines:?}");
    shellac.stop().await;
}

#[tokio::test]
async fn proxy_v2_ipv4_and_ipv6_sources_are_the_client() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let shellac = Shellac::start_as_configured(&config(
        "[{ address = \"127.0.0.1:0\", proxy_protocol = true }]",
        origin.addr,
        &format!("[log]\naccess = \"{}\"\nformat = \"json\"\n", log.display()),
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let v4 = v2_proxy("198.51.100.20:40000".parse().expect("src"), addr);
    let answer = over_tcp(addr, &[&v4, &request("/v2")])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "198.51.100.20");

    let v6 = v2_proxy(
        "[2001:db8::42]:40001".parse().expect("src"),
        "[2001:db8::1]:80".parse().expect("dst"),
    );
    // The header and the request in one write, as a balancer often sends them.
    let answer = over_tcp(addr, &[&[v6, request("/v2-6")].concat()])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "2001:db8::42");
    let forwarded = origin.seen()[1].headers["forwarded"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        forwarded.starts_with("for=\"[2001:db8::42]\";"),
        "{forwarded}"
    );

    let lines = access_lines(&log, 2).await;
    let clients: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["client"].to_string())
        .collect();
    assert_eq!(clients, ["\"198.51.100.20\"", "\"2001:db8::42\""]);
    shellac.stop().await;
}

#[tokio::test]
async fn proxy_v2_local_and_v1_unknown_are_served_with_the_peer_address() {
    let origin = Origin::fixed(Reply::ok("healthy")).await;
    let shellac = Shellac::start_as_configured(&config(
        "[{ address = \"127.0.0.1:0\", proxy_protocol = true }]",
        origin.addr,
        "",
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let answer = over_tcp(addr, &[&v2_local(), &request("/local")])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "127.0.0.1");
    let answer = over_tcp(addr, &[b"PROXY UNKNOWN\r\n", &request("/unknown")])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "127.0.0.1");
    shellac.stop().await;
}

#[tokio::test]
async fn a_connection_without_a_valid_header_is_closed_unanswered_and_counted() {
    let origin = Origin::fixed(Reply::ok("never")).await;
    let shellac = Shellac::start_as_configured(&config(
        "[{ address = \"127.0.0.1:0\", proxy_protocol = true }]",
        origin.addr,
        ADMIN,
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let admin = shellac.admin.expect("admin");
    assert_eq!(metric(admin, ERRORS).await, Some(0.0));

    // A plain request, as a client sent straight to the port would.
    let answer = over_tcp(addr, &[&request("/plain")]).await;
    assert!(
        closed_silently(answer),
        "a plain request must get no answer"
    );
    assert_eq!(metric_reaches(admin, ERRORS, 1.0).await, Some(1.0));

    // Garbled: right prefix, nonsense after it; and a v2 signature with a bad version.
    let answer = over_tcp(
        addr,
        &[b"PROXY TCP4 banana 10.0.0.1 1 2\r\n", &request("/g")],
    )
    .await;
    assert!(
        closed_silently(answer),
        "a garbled v1 header must get no answer"
    );
    let mut bad_v2 = v2_proxy("192.0.2.9:1".parse().expect("src"), addr);
    bad_v2[12] = 0x11;
    let answer = over_tcp(addr, &[&bad_v2, &request("/g2")]).await;
    assert!(
        closed_silently(answer),
        "a bad v2 header must get no answer"
    );
    // A v1 line that never ends within 107 bytes.
    let long = format!("PROXY TCP4 {}", "9".repeat(150));
    let answer = over_tcp(addr, &[long.as_bytes()]).await;
    assert!(
        closed_silently(answer),
        "an over-long header must get no answer"
    );

    assert_eq!(metric_reaches(admin, ERRORS, 4.0).await, Some(4.0));
    assert_eq!(origin.requests(), 0, "nothing reached the backend");
    shellac.stop().await;
}

#[tokio::test]
async fn a_header_split_across_writes_still_works() {
    let origin = Origin::fixed(Reply::ok("split")).await;
    let shellac = Shellac::start_as_configured(&config(
        "[{ address = \"127.0.0.1:0\", proxy_protocol = true }]",
        origin.addr,
        "",
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let line = v1("192.0.2.33:1234".parse().expect("src"), addr);
    let (a, rest) = line.split_at(3);
    let (b, c) = rest.split_at(17);
    let answer = over_tcp(addr, &[a, b, c, &request("/split")])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "192.0.2.33");

    let header = v2_proxy("192.0.2.34:1234".parse().expect("src"), addr);
    let (a, rest) = header.split_at(5);
    let (b, c) = rest.split_at(12);
    let answer = over_tcp(addr, &[a, b, c, &request("/split2")])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "192.0.2.34");
    shellac.stop().await;
}

#[tokio::test]
async fn a_header_slower_than_header_timeout_is_closed() {
    let origin = Origin::fixed(Reply::ok("slow")).await;
    let shellac = Shellac::start_as_configured(&config(
        "[{ address = \"127.0.0.1:0\", proxy_protocol = true }]",
        origin.addr,
        &format!("header_timeout = \"300ms\"\n{ADMIN}"),
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"PROXY TCP4 192.0.2.1")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed within 5 s");
    assert!(
        read.is_ok_and(|n| n == 0) || answer.is_empty(),
        "{answer:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let admin = shellac.admin.expect("admin");
    assert_eq!(metric_reaches(admin, ERRORS, 1.0).await, Some(1.0));
    shellac.stop().await;
}

#[tokio::test]
async fn purge_allow_and_rate_limits_see_the_proxy_address() {
    let origin = Origin::fixed(cacheable("purgeable")).await;
    let shellac = Shellac::start_as_configured(&config(
        "[{ address = \"127.0.0.1:0\", proxy_protocol = true }]",
        origin.addr,
        "[cache]\npurge_allow = [\"192.0.2.0/24\"]\n\
         [[rate_limit]]\nkey = \"client_ip\"\nrate = \"1/s\"\nburst = 2\npath_prefix = \"/limited\"\n",
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let purge = |src: &str| {
        let header = v1(src.parse().expect("src"), addr);
        async move {
            let purge = b"PURGE /p HTTP/1.1\r\nhost: edge.test\r\nconnection: close\r\n\r\n";
            over_tcp(addr, &[&header, purge]).await.expect("answer")
        }
    };
    // The peer is 127.0.0.1, not in purge_allow: only the header's address counts.
    assert!(purge("192.0.2.8:1").await.starts_with("HTTP/1.1 200"));
    assert!(purge("198.51.100.8:1").await.starts_with("HTTP/1.1 403"));

    let limited = |src: &str| {
        let header = v2_proxy(src.parse().expect("src"), addr);
        async move {
            over_tcp(addr, &[&header, &request("/limited")])
                .await
                .expect("answer")
        }
    };
    for _ in 0..2 {
        assert!(limited("203.0.113.1:1").await.starts_with("HTTP/1.1 200"));
    }
    assert!(limited("203.0.113.1:1").await.starts_with("HTTP/1.1 429"));
    // Another client behind the same balancer has its own bucket.
    assert!(limited("203.0.113.2:1").await.starts_with("HTTP/1.1 200"));
    shellac.stop().await;
}

// === PROXY protocol, then TLS ===

/// A self-signed certificate for `edge.test`, written as PEM files.
fn certificate(dir: &Path) -> rustls_pki_types::CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["edge.test".to_string()]).expect("cert");
    std::fs::write(dir.join("edge.pem"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.join("edge.key"), cert.signing_key.serialize_pem()).expect("write key");
    cert.cert.der().clone()
}

#[tokio::test]
async fn proxy_header_then_tls_handshake() {
    let origin = Origin::fixed(Reply::ok("secure")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let der = certificate(dir.path());
    let extra = format!(
        "[[tls.certificate]]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        dir.path().join("edge.pem").display(),
        dir.path().join("edge.key").display()
    );
    let shellac = Shellac::start_as_configured(&format!(
        "{}{extra}",
        config(
            "[{ address = \"127.0.0.1:0\", proxy_protocol = true, tls = true }]",
            origin.addr,
            "",
        )
    ))
    .await;
    let addr = tcp(&shellac, 0);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&v2_proxy("192.0.2.77:999".parse().expect("src"), addr))
        .await
        .expect("header");
    let name = rustls_pki_types::ServerName::try_from("edge.test").expect("name");
    let tls = connector
        .connect(name, stream)
        .await
        .expect("handshake after the header");
    let answer = exchange(tls, &[&request("/tls")], Duration::ZERO)
        .await
        .expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "192.0.2.77");
    let proto = origin.seen()[0].headers["x-forwarded-proto"].clone();
    assert_eq!(proto, "https");
    shellac.stop().await;
}

// === Unix sockets ===

fn unix_listen(path: &Path, extra: &str) -> String {
    format!("[{{ address = \"unix:{}\"{extra} }}]", path.display())
}

#[tokio::test]
async fn a_unix_listener_serves_miss_then_hit_and_logs_unix() {
    let origin = Origin::fixed(cacheable("over a socket")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("http.sock");
    let log = dir.path().join("access.log");
    let shellac = Shellac::start_as_configured(&config(
        &unix_listen(&socket, ""),
        origin.addr,
        &format!("[log]\naccess = \"{}\"\n", log.display()),
    ))
    .await;
    assert_eq!(
        shellac.bound[0].to_string(),
        format!("unix:{}", socket.display())
    );
    let mut caches = Vec::new();
    for _ in 0..2 {
        let stream = UnixStream::connect(&socket).await.expect("connect");
        let answer = exchange(stream, &[&request("/sock")], Duration::ZERO)
            .await
            .expect("answer");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("over a socket"), "{answer}");
        let cache = answer
            .lines()
            .find_map(|l| l.strip_prefix("x-cache: "))
            .unwrap_or("")
            .to_string();
        caches.push(cache);
    }
    assert_eq!(caches, ["MISS", "HIT"]);
    assert_eq!(origin.requests(), 1);
    // Varnish's habit: a Unix-socket client is 0.0.0.0 to the backend.
    assert_eq!(last_xff(&origin), "0.0.0.0");
    let forwarded = origin.seen()[0].headers["forwarded"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(forwarded.starts_with("for=unknown;"), "{forwarded}");
    let lines = access_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("unix: - - [")),
        "{lines:?}"
    );
    shellac.stop().await;
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}

#[tokio::test]
async fn a_proxy_header_on_a_unix_listener_names_the_client() {
    let origin = Origin::fixed(Reply::ok("hitch")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("proxy.sock");
    let shellac = Shellac::start_as_configured(&config(
        &unix_listen(&socket, ", proxy_protocol = true"),
        origin.addr,
        "",
    ))
    .await;
    let header = v2_proxy(
        "192.0.2.99:5000".parse().expect("src"),
        "192.0.2.1:443".parse().expect("dst"),
    );
    let stream = UnixStream::connect(&socket).await.expect("connect");
    let answer = exchange(stream, &[&header, &request("/hitch")], Duration::ZERO)
        .await
        .expect("answer");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert_eq!(last_xff(&origin), "192.0.2.99");
    shellac.stop().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_mode_is_applied() {
    let origin = Origin::fixed(Reply::ok("fresh")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("stale.sock");
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());
    let shellac = Shellac::start_as_configured(&config(
        &unix_listen(&socket, ", mode = \"0600\""),
        origin.addr,
        "",
    ))
    .await;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let stream = UnixStream::connect(&socket).await.expect("connect");
    let answer = exchange(stream, &[&request("/")], Duration::ZERO)
        .await
        .expect("answer");
    assert!(String::from_utf8_lossy(&answer).ends_with("fresh"));

    // A second instance on the same path refuses: someone serves there.
    let config_text = config(&unix_listen(&socket, ""), origin.addr, "");
    let config = shellac::Config::parse(Path::new("test.toml"), &config_text).expect("config");
    let error = match shellac::bind(&config).await {
        Ok(_) => panic!("bound a socket another listener serves"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("another process"), "{error}");
    shellac.stop().await;
}

#[tokio::test]
async fn a_regular_file_at_the_socket_path_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("not-a-socket");
    std::fs::write(&path, "precious").expect("write");
    let text = config(
        &unix_listen(&path, ""),
        "127.0.0.1:9".parse().expect("addr"),
        "",
    );
    let config = shellac::Config::parse(Path::new("test.toml"), &text).expect("config");
    let error = match shellac::bind(&config).await {
        Ok(_) => panic!("bound over a regular file"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), "precious");
}

/// Shellac run from a configuration file, reloaded through the admin listener.
struct FromFile {
    admin: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl FromFile {
    async fn start(file: &Path) -> FromFile {
        let config = shellac::Config::load(file).expect("config");
        let listeners = shellac::bind(&config).await.expect("bind");
        let admin_listener = shellac::bind_admin(&config).await.expect("admin");
        let admin = admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .expect("admin");
        let launch = shellac::Launch {
            admin: admin_listener,
            ..shellac::Launch::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(shellac::run_with(config, listeners, launch, async move {
            let _ = stopped.await;
        }));
        FromFile { admin, stop, task }
    }

    async fn reload(&self) {
        let host = self.admin.to_string();
        let answer = over_tcp(
            self.admin,
            &[format!(
                "POST /reload HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .as_bytes()],
        )
        .await
        .expect("reload");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// Writes a configuration file listening on `listen`, with an admin listener.
fn write_config(file: &Path, listen: &str, backend: SocketAddr) {
    std::fs::write(
        file,
        format!(
            "[server]\nlisten = {listen}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[backend]]\nname = \"origin\"\naddress = \"{backend}\"\n"
        ),
    )
    .expect("write config")
}

/// Waits until `ready` holds (or 5 s pass).
async fn until(ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reload_adds_and_removes_a_unix_listener() {
    let origin = Origin::fixed(Reply::ok("reloaded")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("late.sock");
    let file = dir.path().join("shellac.toml");
    write_config(&file, "[\"127.0.0.1:0\"]", origin.addr);
    let shellac = FromFile::start(&file).await;

    let with_socket = format!("[\"127.0.0.1:0\", \"unix:{}\"]", socket.display());
    write_config(&file, &with_socket, origin.addr);
    shellac.reload().await;
    until(|| socket.exists()).await;
    let stream = UnixStream::connect(&socket)
        .await
        .expect("connect after reload");
    let answer = exchange(stream, &[&request("/")], Duration::ZERO)
        .await
        .expect("answer");
    assert!(String::from_utf8_lossy(&answer).ends_with("reloaded"));

    write_config(&file, "[\"127.0.0.1:0\"]", origin.addr);
    shellac.reload().await;
    until(|| !socket.exists()).await;
    assert!(
        !socket.exists(),
        "the dropped listener's socket file is removed"
    );
    shellac.stop().await;
}

#[tokio::test]
async fn a_reload_switches_a_port_to_the_proxy_protocol_in_place() {
    let origin = Origin::fixed(Reply::ok("switched")).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("shellac.toml");
    write_config(&file, &format!("\"{addr}\""), origin.addr);
    let shellac = FromFile::start(&file).await;
    let plain = over_tcp(addr, &[&request("/before")])
        .await
        .expect("answer");
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");

    write_config(
        &file,
        &format!("[{{ address = \"{addr}\", proxy_protocol = true }}]"),
        origin.addr,
    );
    shellac.reload().await;
    // The same socket now wants the header first.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = over_tcp(addr, &[&request("/plain-after")]).await;
        if closed_silently(answer) {
            break;
        }
        assert!(Instant::now() < deadline, "plain requests are still served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let header = v1("192.0.2.200:1".parse().expect("src"), addr);
    let answer = over_tcp(addr, &[&header, &request("/proxied")])
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_xff(&origin), "192.0.2.200");
    shellac.stop().await;
}

// === ":port" ===

#[tokio::test]
async fn a_port_alone_listens_on_ipv4_and_ipv6() {
    let origin = Origin::fixed(Reply::ok("everywhere")).await;
    let shellac = Shellac::start_as_configured(&config("\":0\"", origin.addr, "")).await;
    let bound = tcp(&shellac, 0);
    let port = bound.port();
    let v4 = over_tcp(SocketAddr::from(([127, 0, 0, 1], port)), &[&request("/4")])
        .await
        .expect("IPv4 answer");
    assert!(v4.ends_with("everywhere"), "{v4}");
    // An IPv4 client on the dual-stack socket is shown in its IPv4 form.
    assert_eq!(last_xff(&origin), "127.0.0.1");
    if bound.is_ipv4() {
        eprintln!("\n!!! SKIPPED the IPv6 half of a_port_alone_listens_on_ipv4_and_ipv6: no IPv6 on this host\n");
    } else {
        match over_tcp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), &[&request("/6")]).await {
            Ok(v6) => {
                assert!(v6.ends_with("everywhere"), "{v6}");
                assert_eq!(last_xff(&origin), "::1");
            }
            Err(e) => eprintln!(
                "\n!!! SKIPPED the IPv6 half of a_port_alone_listens_on_ipv4_and_ipv6: ::1 unreachable ({e})\n"
            ),
        }
    }
    shellac.stop().await;
}

// === configuration ===

#[test]
fn bad_listen_entries_name_the_file_line_and_key() {
    let parse = |listen: &str| {
        let text = format!(
            "[server]\nlisten = {listen}\n[[backend]]\nname = \"o\"\naddress = \"127.0.0.1:9\"\n"
        );
        shellac::Config::parse(Path::new("edge.toml"), &text).expect_err(listen)
    };
    for (listen, says) in [
        ("\"unix:\"", "needs a socket path"),
        ("[{ address = \"unix:\" }]", "needs a socket path"),
        (
            "[{ address = \"unix:/tmp/x.sock\", mode = \"999\" }]",
            "octal",
        ),
        (
            "[{ address = \"unix:/tmp/x.sock\", mode = \"01777\" }]",
            "octal",
        ),
        (
            "[{ address = \"unix:/tmp/x.sock\", mode = 660 }]",
            "octal string",
        ),
        (
            "[{ address = \"127.0.0.1:0\", mode = \"0660\" }]",
            "only to a Unix socket",
        ),
        (
            "[{ address = \"127.0.0.1:0\", proxy_protocol = \"yes\" }]",
            "`proxy_protocol` must be true or false",
        ),
        ("\":http\"", "expected a port"),
    ] {
        let e = parse(listen);
        assert_eq!(e.key(), Some("server.listen"), "{listen}: {e}");
        assert_eq!(e.line(), Some(2), "{listen}: {e}");
        assert!(e.to_string().contains("edge.toml"), "{listen}: {e}");
        assert!(e.to_string().contains(says), "{listen}: {e}");
    }
    // And the good forms.
    let text = "[server]\nlisten = [\":6081\", \"unix:/run/shellac/http.sock\", \
                { address = \"127.0.0.1:6086\", proxy_protocol = true }, \
                { address = \"unix:/run/shellac/p.sock\", mode = \"0660\", proxy_protocol = true }]\n\
                trusted_proxies = [\"unix:\", \"10.0.0.0/8\"]\n\
                [[backend]]\nname = \"o\"\naddress = \"127.0.0.1:9\"\n";
    let config = shellac::Config::parse(Path::new("edge.toml"), text).expect("valid");
    let listen = &config.server.listen;
    assert_eq!(
        listen[0].addr,
        shellac::config::ListenAddr::AllInterfaces(6081)
    );
    assert_eq!(
        listen[1].addr,
        shellac::config::ListenAddr::Unix("/run/shellac/http.sock".into())
    );
    assert!(listen[2].proxy_protocol && !listen[2].tls);
    assert_eq!(listen[3].mode, Some(0o660));
    assert_eq!(config.server.trusted_proxies.len(), 2);
}

#[tokio::test]
async fn a_unix_listener_has_the_connection_cap_and_trusts_unix_peers_when_told() {
    let origin = Origin::fixed(Reply::ok("capped")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("cap.sock");
    let log = dir.path().join("access.log");
    let shellac = Shellac::start_as_configured(&config(
        &unix_listen(&socket, ""),
        origin.addr,
        &format!(
            "max_connections = 1\ntrusted_proxies = [\"unix:\"]\n[log]\naccess = \"{}\"\n",
            log.display()
        ),
    ))
    .await;
    // A local terminator's keep-alive connection holds the one permit.
    let mut held = UnixStream::connect(&socket).await.expect("connect");
    held.write_all(
        b"GET /held HTTP/1.1\r\nhost: edge.test\r\nx-forwarded-for: 203.0.113.5\r\n\r\n",
    )
    .await
    .expect("write");
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), held.read(&mut first))
        .await
        .expect("answered")
        .expect("read");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // The trusted Unix peer's X-Forwarded-For names the client.
    let lines = access_lines(&log, 1).await;
    assert!(lines[0].starts_with("203.0.113.5 - - ["), "{lines:?}");
    assert_eq!(last_xff(&origin), "203.0.113.5, 0.0.0.0");

    let stream = UnixStream::connect(&socket).await.expect("connect");
    let answer = exchange(stream, &[&request("/over")], Duration::ZERO)
        .await
        .expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    drop(held);
    shellac.stop().await;
}

#[tokio::test]
async fn purge_allow_unix_admits_unix_socket_clients_only() {
    let origin = Origin::fixed(cacheable("purgeable")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("purge.sock");
    let listen = format!("[\"127.0.0.1:0\", \"unix:{}\"]", socket.display());
    let shellac = Shellac::start_as_configured(&config(
        &listen,
        origin.addr,
        "[cache]\npurge_allow = [\"unix:\"]\n",
    ))
    .await;
    let purge = b"PURGE /p HTTP/1.1\r\nhost: edge.test\r\nconnection: close\r\n\r\n";
    let local = UnixStream::connect(&socket).await.expect("connect");
    let answer = exchange(local, &[purge], Duration::ZERO)
        .await
        .expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A TCP client is not a Unix-socket client, loopback or not.
    let answer = over_tcp(tcp(&shellac, 0), &[purge]).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    shellac.stop().await;
}
