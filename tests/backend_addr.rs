//! Backend addresses (issue 17, items 3 and 4, and `proxy_protocol` on
//! backends) over real sockets: a Unix-socket backend end to end (MISS
//! then HIT, a probe that makes it healthy and sick, first_byte_timeout
//! against a slow answer); a host name whose answer changes while Shellac
//! runs, followed without a reload, a failing lookup that keeps the last
//! good answer and is counted and shown in `/backends`; PROXY v1 and v2
//! headers to a backend, naming each client, on connections never shared
//! between clients; and the config errors for a bad address or version.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::addr::{parse, Client, InProcess, ProxyOrigin, TestResolver, UnixOrigin};
use support::{get, Origin, Reply, Shellac};

// === helpers ===

/// Polls `check` every 50 ms until it holds or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The admin's `/backends` entry of `name`.
async fn backend_json(admin: SocketAddr, name: &str) -> serde_json::Value {
    let got = get(admin, "/backends").await;
    let json: serde_json::Value = serde_json::from_slice(&got.body).expect("backends json");
    let list = json
        .as_array()
        .or_else(|| json["backends"].as_array())
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {json}"))
}

/// One sample of the admin's `/metrics`, or `None` when it is not there.
async fn metric(admin: SocketAddr, name_and_labels: &str) -> Option<f64> {
    let text = get(admin, "/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\"]\n";

// === Unix socket backends ===

fn unix_config(origin: &UnixOrigin, settings: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndebug_headers = true\n{ADMIN}\n\
         [[backend]]\nname = \"app\"\naddress = \"unix:{}\"\n{settings}\n{extra}\n",
        origin.path.display()
    )
}

/// A backend at `unix:/path`: the first GET is a MISS fetched over the
/// socket, the second a HIT; `/backends` shows `unix:/path`.
#[tokio::test]
async fn a_unix_socket_backend_serves_a_miss_then_a_hit() {
    let origin = UnixOrigin::start().await;
    let shellac = Shellac::start(&unix_config(&origin, "", "")).await;

    let first = get(shellac.addr, "/page").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "unix origin: /page");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = get(shellac.addr, "/page").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests(), 1, "the HIT came from the cache");

    // Uncached requests on one keep-alive backend connection: pooled as TCP.
    for i in 0..3 {
        let got = get(shellac.addr, &format!("/fresh/{i}")).await;
        assert_eq!(got.status, 200);
    }
    let admin = shellac.admin.expect("admin listener");
    let json = backend_json(admin, "app").await;
    let expected = format!("unix:{}", origin.path.display());
    assert_eq!(json["address"], expected.as_str());
    assert_eq!(json["addresses"], serde_json::json!([expected]));
    assert_eq!(json["idle_connections"], 1, "{json}");
}

/// A probe over the Unix socket makes the backend healthy, and sick when
/// the health URL starts failing (then the synthetic 503).
#[tokio::test]
async fn a_probe_over_the_unix_socket_makes_the_backend_healthy_then_sick() {
    let origin = UnixOrigin::start().await;
    let probe = "[backend.probe]\nurl = \"/health\"\ninterval = \"100ms\"\ntimeout = \"1s\"\n\
                 window = 3\nthreshold = 2\n";
    let shellac = Shellac::start(&unix_config(&origin, "", probe)).await;

    let mut n = 0;
    let healthy = eventually(Duration::from_secs(5), || {
        n += 1;
        let path = format!("/fresh/up/{n}");
        async move { get(shellac.addr, &path).await.status == 200 }
    })
    .await;
    assert!(healthy, "the probe never made the unix backend healthy");

    origin.set_health(500);
    let sick = eventually(Duration::from_secs(5), || {
        n += 1;
        let path = format!("/fresh/down/{n}");
        async move { get(shellac.addr, &path).await.status == 503 }
    })
    .await;
    assert!(sick, "failing probes never made the unix backend sick");
    let admin = shellac.admin.expect("admin listener");
    let json = backend_json(admin, "app").await;
    assert_eq!(json["probe_healthy"], false, "{json}");
}

/// first_byte_timeout holds on a Unix socket as on TCP: the slow answer
/// becomes the synthetic 503 naming it.
#[tokio::test]
async fn first_byte_timeout_against_a_slow_unix_origin_gives_the_synthetic_503() {
    let origin = UnixOrigin::start().await;
    let toml = unix_config(&origin, "first_byte_timeout = \"300ms\"\n", "");
    let shellac = Shellac::start(&toml).await;

    let started = Instant::now();
    let got = get(shellac.addr, "/slow").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-shellac-error"), Some("first_byte_timeout"));
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "answered after {:?}, not at the timeout",
        started.elapsed()
    );
}

/// A socket path nobody listens on is a refused connect, as a closed TCP
/// port is: the synthetic 503 with reason `connect`.
#[tokio::test]
async fn a_missing_unix_socket_is_a_connect_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndebug_headers = true\n\
         [[backend]]\nname = \"app\"\naddress = \"unix:{}\"\n",
        dir.path().join("nobody.sock").display()
    );
    let shellac = Shellac::start(&toml).await;
    let got = get(shellac.addr, "/").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-shellac-error"), Some("connect"));
}

// === re-resolution ===

/// A backend named `localhost`, its answer moved by the test's resolver
/// from origin A to origin B: new requests follow without a reload; then
/// lookups fail, B stays in use, the failure is counted and `/backends`
/// shows the address in use and the error.
#[tokio::test]
async fn a_host_name_backend_follows_its_new_address_without_reload() {
    let a = Origin::fixed(Reply::ok("A").header("cache-control", "no-store")).await;
    let b = Origin::fixed(Reply::ok("B").header("cache-control", "no-store")).await;
    // Idle connections are not kept, so each request connects anew: a
    // pooled connection to A would (rightly) stay in use until it closes.
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{ADMIN}\n\
         [[backend]]\nname = \"app\"\naddress = \"localhost:{}\"\n\
         resolve_interval = \"100ms\"\nbackend_idle_timeout = \"0s\"\n",
        a.addr.port()
    );
    let mut config = parse(&toml);
    let resolver = Arc::new(TestResolver::default());
    resolver.answer(&[a.addr]);
    config.backends[0].resolver = shellac::config::Resolver::custom(resolver.clone());
    let shellac = InProcess::start(config).await;
    let admin = shellac.admin.expect("admin listener");

    // `localhost` resolved at load (perhaps to ::1 too); the first lookup
    // of the task answers A alone.
    let only_a = serde_json::json!([a.addr.to_string()]);
    let settled = eventually(Duration::from_secs(5), || async {
        backend_json(admin, "app").await["addresses"] == only_a
    })
    .await;
    assert!(settled, "the resolver's answer was never taken");
    for i in 0..3 {
        let got = get(shellac.addr, &format!("/a/{i}")).await;
        assert_eq!(got.text(), "A");
    }

    resolver.answer(&[b.addr]);
    let mut n = 0;
    let moved = eventually(Duration::from_secs(5), || {
        n += 1;
        let path = format!("/b/{n}");
        async move { get(shellac.addr, &path).await.text() == "B" }
    })
    .await;
    assert!(moved, "new requests never went to the new address");
    let seen_b = b.requests();
    for i in 0..3 {
        assert_eq!(
            get(shellac.addr, &format!("/b/again/{i}")).await.text(),
            "B"
        );
    }
    assert_eq!(b.requests(), seen_b + 3);
    let json = backend_json(admin, "app").await;
    assert_eq!(json["addresses"], serde_json::json!([b.addr.to_string()]));
    assert_eq!(
        json["address"],
        format!("localhost:{}", a.addr.port()).as_str()
    );
    assert!(json["resolve_error"].is_null(), "{json}");

    resolver.fail();
    let errors = "shellac_backend_resolve_errors_total{backend=\"app\"}";
    let counted = eventually(Duration::from_secs(5), || async {
        metric(admin, errors).await.unwrap_or(0.0) >= 2.0
    })
    .await;
    assert!(counted, "failed lookups were not counted");
    for i in 0..3 {
        let got = get(shellac.addr, &format!("/kept/{i}")).await;
        assert_eq!(
            got.text(),
            "B",
            "a failed lookup keeps the last good answer"
        );
    }
    let json = backend_json(admin, "app").await;
    assert_eq!(json["addresses"], serde_json::json!([b.addr.to_string()]));
    let error = json["resolve_error"].as_str().unwrap_or_default();
    assert!(error.contains("no such host"), "{json}");

    resolver.answer(&[b.addr]);
    let recovered = eventually(Duration::from_secs(5), || async {
        backend_json(admin, "app").await["resolve_error"].is_null()
    })
    .await;
    assert!(recovered, "a good answer did not clear the error");
    assert!(resolver.lookups() >= 4);
}

/// An answer of two addresses, one refusing (as `localhost` answers `::1`
/// where an app listens on 127.0.0.1 only): new connections take them in
/// turn, and the refusing one is passed over, so every request is served.
#[tokio::test]
async fn a_refusing_address_of_the_answer_is_passed_over() {
    let a = Origin::fixed(Reply::ok("A").header("cache-control", "no-store")).await;
    let dead = Origin::refusing().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{ADMIN}\n\
         [[backend]]\nname = \"app\"\naddress = \"localhost:{}\"\n\
         resolve_interval = \"100ms\"\nbackend_idle_timeout = \"0s\"\n",
        a.addr.port()
    );
    let mut config = parse(&toml);
    let resolver = Arc::new(TestResolver::default());
    resolver.answer(&[dead, a.addr]);
    config.backends[0].resolver = shellac::config::Resolver::custom(resolver.clone());
    let shellac = InProcess::start(config).await;
    let admin = shellac.admin.expect("admin listener");
    let both = serde_json::json!([dead.to_string(), a.addr.to_string()]);
    let settled = eventually(Duration::from_secs(5), || async {
        backend_json(admin, "app").await["addresses"] == both
    })
    .await;
    assert!(settled, "the resolver's answer was never taken");
    for i in 0..6 {
        let got = get(shellac.addr, &format!("/{i}")).await;
        assert_eq!(got.status, 200, "request {i}");
        assert_eq!(got.text(), "A");
    }
}

/// `resolve_interval = "0s"` and literal addresses: no lookup after load.
#[tokio::test]
async fn literal_addresses_and_a_zero_interval_are_never_looked_up_again() {
    let origin = Origin::fixed(Reply::ok("o").header("cache-control", "no-store")).await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[defaults]\nresolve_interval = \"50ms\"\n\
         [[backend]]\nname = \"ip\"\naddress = \"{}\"\n\
         [[backend]]\nname = \"named\"\naddress = \"localhost:{}\"\nresolve_interval = \"0s\"\n",
        origin.addr,
        origin.addr.port()
    );
    let mut config = parse(&toml);
    assert_eq!(config.backends[1].resolve_interval, Duration::ZERO);
    assert_eq!(
        config.backends[0].resolve_interval,
        Duration::from_millis(50)
    );
    let resolver = Arc::new(TestResolver::default());
    resolver.answer(&[origin.addr]);
    for backend in &mut config.backends {
        backend.resolver = shellac::config::Resolver::custom(resolver.clone());
    }
    let shellac = InProcess::start(config).await;
    assert_eq!(get(shellac.addr, "/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(resolver.lookups(), 0);
}

// === PROXY protocol to backends ===

fn proxy_config(origin: &ProxyOrigin, version: u8) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[backend]]\nname = \"app\"\naddress = \"{}\"\nproxy_protocol = {version}\n",
        origin.addr
    )
}

/// `proxy_protocol = 1`: each backend connection starts with `PROXY TCP4
/// <client> <shellac> <client port> <shellac port>`; two requests on one
/// client connection and one on another make three backend connections,
/// none shared, each naming its own client.
#[tokio::test]
async fn proxy_protocol_1_names_each_client_and_never_shares_a_connection() {
    let origin = ProxyOrigin::start().await;
    let shellac = Shellac::start(&proxy_config(&origin, 1)).await;

    let mut first = Client::connect(shellac.addr).await;
    let mut second = Client::connect(shellac.addr).await;
    assert_eq!(first.get("/1").await.status, 200);
    assert_eq!(second.get("/2").await.status, 200);
    assert_eq!(first.get("/3").await.status, 200);

    let conns = origin.conns();
    assert_eq!(origin.requests(), 3);
    assert_eq!(conns.len(), 3, "one backend connection per request");
    let clients = [first.local, second.local, first.local];
    for (conn, client) in conns.iter().zip(clients) {
        let expected = format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
            client.port(),
            conn.peer.port()
        );
        assert_eq!(String::from_utf8_lossy(&conn.header), expected);
    }
}

/// `proxy_protocol = 2`: the binary header (its 12-byte signature,
/// version 2, PROXY) naming the client; connections not shared either.
#[tokio::test]
async fn proxy_protocol_2_sends_the_binary_header() {
    let origin = ProxyOrigin::start().await;
    let shellac = Shellac::start(&proxy_config(&origin, 2)).await;

    let mut first = Client::connect(shellac.addr).await;
    let mut second = Client::connect(shellac.addr).await;
    assert_eq!(first.get("/1").await.status, 200);
    assert_eq!(second.get("/2").await.status, 200);

    let conns = origin.conns();
    assert_eq!(conns.len(), 2);
    for (conn, client) in conns.iter().zip([first.local, second.local]) {
        assert!(
            conn.header.starts_with(b"\r\n\r\n\0\r\nQUIT\n"),
            "{:?}",
            conn.header
        );
        assert_eq!(conn.header[12], 0x21, "version 2, command PROXY");
        assert_eq!(conn.header[13], 0x11, "TCP over IPv4");
        let parsed = ppp::v2::Header::try_from(conn.header.as_slice()).expect("a v2 header");
        assert_eq!(
            parsed.addresses,
            ppp::v2::Addresses::from((client, conn.peer))
        );
    }
}

/// A probe of a `proxy_protocol` backend sends a header that names nobody
/// (v2 LOCAL), so the backend can tell its own health check.
#[tokio::test]
async fn a_probe_of_a_proxy_protocol_backend_sends_local() {
    let origin = ProxyOrigin::start().await;
    let toml = format!(
        "{}[backend.probe]\nurl = \"/health\"\ninterval = \"100ms\"\n",
        proxy_config(&origin, 2)
    );
    let _shellac = Shellac::start(&toml).await;
    let probed = eventually(Duration::from_secs(5), || async {
        !origin.conns().is_empty()
    })
    .await;
    assert!(probed, "no probe came");
    let header = origin.conns()[0].header.clone();
    assert_eq!(header.len(), 16, "{header:?}");
    assert_eq!(header[12], 0x20, "version 2, command LOCAL");
}

// === config errors ===

fn parse_error(toml: &str) -> shellac::config::ConfigError {
    shellac::Config::parse(Path::new("test.toml"), toml).expect_err("an invalid config")
}

#[test]
fn an_empty_unix_path_is_refused_with_file_line_and_key() {
    let err = parse_error("[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"unix:\"\n");
    assert_eq!(err.line(), Some(4), "{err}");
    assert_eq!(err.key(), Some("backend[0].address"), "{err}");
    let text = err.to_string();
    assert!(text.contains("test.toml:4"), "{text}");
    assert!(text.contains("expected a socket path"), "{text}");
}

#[test]
fn proxy_protocol_3_is_refused_with_file_line_and_key() {
    let err = parse_error(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"127.0.0.1:1\"\nproxy_protocol = 3\n",
    );
    assert_eq!(err.line(), Some(5), "{err}");
    assert_eq!(err.key(), Some("backend[0].proxy_protocol"), "{err}");
    assert!(err.to_string().contains("PROXY protocol version"), "{err}");
}

#[test]
fn tls_over_a_unix_socket_and_a_bad_resolve_interval_are_refused() {
    let err = parse_error(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"unix:/run/app.sock\"\ntls = true\n",
    );
    assert_eq!(err.key(), Some("backend[0].address"), "{err}");
    assert!(err.to_string().contains("tls"), "{err}");
    let err = parse_error(
        "[server]\nlisten = \"127.0.0.1:0\"\n[defaults]\nresolve_interval = \"often\"\n\
         [[backend]]\naddress = \"127.0.0.1:1\"\n",
    );
    assert_eq!(err.line(), Some(4), "{err}");
    assert_eq!(err.key(), Some("defaults.resolve_interval"), "{err}");
}

/// A host name that does not resolve is still an error at load (the same
/// as before re-resolution existed).
#[test]
fn a_name_that_does_not_resolve_is_still_an_error_at_load() {
    let err = parse_error(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"no-such-host.invalid:80\"\n",
    );
    assert_eq!(err.key(), Some("backend[0].address"), "{err}");
}

/// The Unix backend's probe sends `Host: localhost` (a path is no host).
#[test]
fn a_unix_backends_probe_sends_host_localhost() {
    let config = parse(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\naddress = \"unix:/run/app.sock\"\n\
         [backend.probe]\nurl = \"/health\"\n",
    );
    let probe = config.backends[0].probe.as_ref().expect("a probe");
    assert!(
        probe.request.contains("Host: localhost\r\n"),
        "{}",
        probe.request
    );
}
