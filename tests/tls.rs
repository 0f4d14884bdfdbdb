//! TLS listeners (issue 16, the listener side) over real sockets, with
//! certificates made at test time by rcgen: SNI selection, ALPN h2 and
//! http/1.1, plain HTTP on a TLS port, `--check` for broken certificate
//! files, a reload swapping the certificate under an open connection, the
//! scheme in the cache key, `X-Forwarded-Proto` / `Forwarded`, and the
//! expiry gauge.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use support::{get, send, send_body, Got, Origin, Reply};

// === certificates ===

/// A test CA that signs leaf certificates.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate as PEM files' contents, and its DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("ca key");
        Pki {
            ca: CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.ca.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }
}

/// 2030-01-01T00:00:00Z, the test leaves' `notAfter`.
const NOT_AFTER: i64 = 1_893_456_000;

fn write_leaf(dir: &Path, stem: &str, leaf: &Leaf) {
    std::fs::write(dir.join(format!("{stem}.pem")), &leaf.cert_pem).expect("write cert");
    std::fs::write(dir.join(format!("{stem}.key")), &leaf.key_pem).expect("write key");
}

// === clients ===

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting only the test CA, offering `alpn`.
fn verifying_client(ca: CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("add ca");
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Accepts any certificate: for the tests that look at which one was
/// served for a name it does not cover.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn trusting_client() -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `addr` with SNI `sni` (an IP address: no SNI).
async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake not finished within 10 s"))?
}

/// The leaf certificate the server presented on `tls`.
fn served(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// A request sender over an HTTP/1.1 or HTTP/2 TLS connection.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// hyper's client on `tls`: HTTP/2 when ALPN chose `h2`.
    async fn on(tls: TlsStream<TcpStream>) -> Sender {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            Sender::H1(sender)
        }
    }

    /// GET `path` on host `host`: the response's version and contents.
    async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> (Version, Got) {
        let mut builder = Request::builder();
        builder = match self {
            Sender::H1(_) => builder.uri(path).header("host", host),
            Sender::H2(_) => builder.uri(format!("https://{host}{path}")),
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Empty::<Bytes>::new()).expect("request");
        let sent = async {
            match self {
                Sender::H1(s) => s.send_request(req).await,
                Sender::H2(s) => s.send_request(req).await,
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(30), sent)
            .await
            .expect("a response head within 30 s")
            .expect("a response");
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .expect("the body within 30 s")
            .expect("a body")
            .to_bytes();
        (
            parts.version,
            Got {
                status: parts.status,
                headers: parts.headers,
                body,
            },
        )
    }
}

// === Shellac with a TLS listener ===

/// Shellac on a plain and a TLS listener (both port 0), from a config file
/// in `dir` (so relative certificate paths and reloads work), with an admin
/// listener.
struct Running {
    plain: SocketAddr,
    tls: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

const ADMIN: &str =
    "[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"test.example\", \"admin.test\"]\n";

/// The configuration file's text: both listeners, `extra`, one backend.
fn config_text(backend: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\", {{ address = \"127.0.0.1:0\", tls = true }}]\n{extra}\n{ADMIN}\n[[backend]]\nname = \"origin\"\naddress = \"{backend}\"\n"
    )
}

impl Running {
    async fn start(file: &Path) -> Running {
        let config = shellac::Config::load(file).unwrap_or_else(|e| panic!("config: {e}"));
        let listeners = shellac::bind(&config).await.expect("bind");
        let addrs = shellac::local_addrs(&listeners);
        let admin_listener = shellac::bind_admin(&config).await.expect("bind admin");
        let admin = admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .expect("admin");
        let launch = shellac::Launch {
            admin: admin_listener,
            ..shellac::Launch::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(shellac::run_with(config, listeners, launch, async move {
            let _ = rx.await;
        }));
        Running {
            plain: addrs[0],
            tls: *addrs.get(1).unwrap_or(&addrs[0]),
            admin,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

/// Two certificates in `dir`: `first` (default.test) and `second`
/// (a.test, *.b.test), and the config text naming them.
fn two_certificates(pki: &Pki, dir: &Path) -> (Leaf, Leaf, String) {
    let first = pki.leaf(&["default.test"]);
    let second = pki.leaf(&["a.test", "*.b.test"]);
    write_leaf(dir, "first", &first);
    write_leaf(dir, "second", &second);
    let tls = "[[tls.certificate]]\ncertificate = \"first.pem\"\nprivate_key = \"first.key\"\n\
               [[tls.certificate]]\ncertificate = \"second.pem\"\nprivate_key = \"second.key\"\n";
    (first, second, tls.to_string())
}

fn ok(body: &'static str) -> Reply {
    Reply::ok(body).header("cache-control", "max-age=60")
}

// === tests ===

#[tokio::test]
async fn sni_picks_the_exact_name_then_a_wildcard_else_the_first_certificate() {
    let origin = Origin::fixed(ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second, tls) = two_certificates(&pki, dir.path());
    let file = dir.path().join("shellac.toml");
    std::fs::write(&file, config_text(origin.addr, &tls)).expect("write");
    let shellac = Running::start(&file).await;

    for (sni, expected, which) in [
        ("a.test", &second, "second (exact)"),
        ("x.b.test", &second, "second (wildcard)"),
        ("default.test", &first, "first (exact)"),
        ("y.x.b.test", &first, "first (a wildcard is one label deep)"),
        ("unknown.test", &first, "first (no name matches)"),
        ("127.0.0.1", &first, "first (no SNI)"),
    ] {
        let tls = connect(shellac.tls, sni, trusting_client())
            .await
            .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
        assert!(
            served(&tls) == expected.der,
            "SNI {sni}: expected the {which} certificate"
        );
    }
    // A client that verifies: the chain and the name check out.
    let tls = connect(shellac.tls, "x.b.test", verifying_client(pki.ca_der(), &[]))
        .await
        .expect("verified handshake");
    let (_, got) = Sender::on(tls).await.get("x.b.test", "/", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "hello");
    shellac.stop().await;
}

#[tokio::test]
async fn alpn_chooses_http2_or_http11_and_the_backend_hears_https() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, tls) = two_certificates(&pki, dir.path());
    let file = dir.path().join("shellac.toml");
    std::fs::write(&file, config_text(origin.addr, &tls)).expect("write");
    let shellac = Running::start(&file).await;

    for (alpn, version) in [
        (
            &[b"h2".as_slice(), b"http/1.1".as_slice()][..],
            Version::HTTP_2,
        ),
        (&[b"http/1.1".as_slice()][..], Version::HTTP_11),
        (&[][..], Version::HTTP_11),
    ] {
        let tls = connect(shellac.tls, "a.test", verifying_client(pki.ca_der(), alpn))
            .await
            .expect("handshake");
        let mut sender = Sender::on(tls).await;
        for _ in 0..2 {
            let (got_version, got) = sender.get("a.test", "/", &[]).await;
            assert_eq!(got_version, version, "ALPN {alpn:?}");
            assert_eq!(got.status, 200, "{}", got.text());
            assert_eq!(got.text(), "hello");
        }
    }
    let seen = origin.seen();
    assert!(!seen.is_empty());
    for request in &seen {
        assert_eq!(request.headers["x-forwarded-proto"], "https");
        assert_eq!(
            request.headers["forwarded"],
            "for=127.0.0.1;proto=https;host=\"a.test\""
        );
    }
    // And the plain listener still says http.
    assert_eq!(get(shellac.plain, "/plain").await.status, 200);
    let last = origin.seen().pop().expect("a request");
    assert_eq!(last.headers["x-forwarded-proto"], "http");
    shellac.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_and_a_close_at_once() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, tls) = two_certificates(&pki, dir.path());
    let file = dir.path().join("shellac.toml");
    // A long header_timeout: the close must not come from it.
    std::fs::write(
        &file,
        config_text(origin.addr, &tls).replace(
            "[server]\n",
            "[server]\nheader_timeout = \"20s\"\ntimeout_idle = \"20s\"\n",
        ),
    )
    .expect("write");
    let shellac = Running::start(&file).await;
    let started = Instant::now();
    let answer = support::raw(
        shellac.tls,
        b"GET / HTTP/1.1\r\nHost: test.example\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "closed after {took:?}, not at once"
    );
    assert!(
        !answer.contains("hello"),
        "served over plain HTTP: {answer:?}"
    );
    assert!(
        answer.starts_with("HTTP/1.1 400 ") && answer.contains("use https://"),
        "{answer:?}"
    );
    assert_eq!(origin.requests(), 0);
    shellac.stop().await;
}

#[tokio::test]
async fn a_slow_tls_handshake_is_bounded_by_header_timeout() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, tls) = two_certificates(&pki, dir.path());
    let file = dir.path().join("shellac.toml");
    std::fs::write(
        &file,
        config_text(origin.addr, &tls).replace("[server]\n", "[server]\nheader_timeout = \"1s\"\n"),
    )
    .expect("write");
    let shellac = Running::start(&file).await;
    // Three bytes of a TLS record header, then nothing.
    let started = Instant::now();
    let answer = support::raw(shellac.tls, b"\x16\x03\x01", Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert!(answer.len() < 64, "{answer:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(8),
        "closed after {took:?}; header_timeout is 1 s"
    );
    shellac.stop().await;
}

/// The error `Config::load` gives for `tls` (with a TLS listener).
fn load_error(dir: &Path, tls: &str) -> shellac::config::ConfigError {
    let file = dir.join("broken.toml");
    std::fs::write(
        &file,
        config_text("127.0.0.1:9".parse().expect("addr"), tls),
    )
    .expect("write");
    shellac::Config::load(&file).expect_err("a broken certificate is refused")
}

#[test]
fn broken_certificate_files_are_refused_with_file_line_and_key() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let one = pki.leaf(&["one.test"]);
    let other = pki.leaf(&["other.test"]);
    write_leaf(dir.path(), "one", &one);
    write_leaf(dir.path(), "other", &other);

    // A missing file.
    let e = load_error(
        dir.path(),
        "[[tls.certificate]]\ncertificate = \"missing.pem\"\nprivate_key = \"one.key\"\n",
    );
    let text = e.to_string();
    assert_eq!(e.key(), Some("tls.certificate[0].certificate"), "{text}");
    assert!(e.line().is_some(), "{text}");
    assert!(
        text.contains("broken.toml") && text.contains("missing.pem"),
        "{text}"
    );
    assert!(text.contains("cannot read"), "{text}");

    // A key that is not the certificate's.
    let e = load_error(
        dir.path(),
        "[[tls.certificate]]\ncertificate = \"one.pem\"\nprivate_key = \"other.key\"\n",
    );
    let text = e.to_string();
    assert_eq!(e.key(), Some("tls.certificate[0].private_key"), "{text}");
    assert!(text.contains("does not match"), "{text}");

    // A PEM file with no certificate in it (the key given twice).
    let e = load_error(
        dir.path(),
        "[[tls.certificate]]\ncertificate = \"one.key\"\nprivate_key = \"one.key\"\n",
    );
    let text = e.to_string();
    assert_eq!(e.key(), Some("tls.certificate[0].certificate"), "{text}");
    assert!(text.contains("has none"), "{text}");

    // A key file without a key.
    let e = load_error(
        dir.path(),
        "[[tls.certificate]]\ncertificate = \"one.pem\"\nprivate_key = \"one.pem\"\n",
    );
    assert_eq!(e.key(), Some("tls.certificate[0].private_key"), "{e}");

    // A TLS listener and no certificate at all.
    let e = load_error(dir.path(), "");
    assert_eq!(e.key(), Some("server.listen"), "{e}");
    assert!(e.to_string().contains("[[tls.certificate]]"), "{e}");

    // A bad min_version, a bad listener table.
    let e = load_error(
        dir.path(),
        "[tls]\nmin_version = \"1.1\"\n[[tls.certificate]]\ncertificate = \"one.pem\"\nprivate_key = \"one.key\"\n",
    );
    assert_eq!(e.key(), Some("tls.min_version"), "{e}");
    let file = dir.path().join("listen.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [{ address = \"127.0.0.1:0\", tsl = true }]\n[[backend]]\naddress = \"127.0.0.1:9\"\n",
    )
    .expect("write");
    let e = shellac::Config::load(&file).expect_err("unknown listener key");
    assert_eq!(e.key(), Some("server.listen"), "{e}");
    assert!(e.to_string().contains("tsl"), "{e}");
}

#[test]
fn check_refuses_a_key_that_does_not_match_and_accepts_a_good_pair() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    write_leaf(dir.path(), "one", &pki.leaf(&["one.test"]));
    write_leaf(dir.path(), "other", &pki.leaf(&["other.test"]));
    let check = |tls: &str| {
        let file: PathBuf = dir.path().join("check.toml");
        std::fs::write(
            &file,
            config_text("127.0.0.1:9".parse().expect("addr"), tls),
        )
        .expect("write");
        std::process::Command::new(env!("CARGO_BIN_EXE_shellac"))
            .arg("--check")
            .arg("--config")
            .arg(&file)
            .output()
            .expect("run shellac --check")
    };
    let bad =
        check("[[tls.certificate]]\ncertificate = \"one.pem\"\nprivate_key = \"other.key\"\n");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{stderr}");
    assert!(
        stderr.contains("check.toml:") && stderr.contains("tls.certificate[0].private_key"),
        "{stderr}"
    );
    let good = check("[[tls.certificate]]\ncertificate = \"one.pem\"\nprivate_key = \"one.key\"\n");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_handshakes_and_keeps_open_connections() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let old = pki.leaf(&["site.test"]);
    write_leaf(dir.path(), "site", &old);
    let file = dir.path().join("shellac.toml");
    let tls = "[[tls.certificate]]\ncertificate = \"site.pem\"\nprivate_key = \"site.key\"\n";
    std::fs::write(&file, config_text(origin.addr, tls)).expect("write");
    let shellac = Running::start(&file).await;

    let client = verifying_client(pki.ca_der(), &[b"h2"]);
    let open = connect(shellac.tls, "site.test", client.clone())
        .await
        .expect("handshake");
    assert!(served(&open) == old.der);
    let mut open = Sender::on(open).await;
    assert_eq!(open.get("site.test", "/", &[]).await.1.status, 200);

    let new = pki.leaf(&["site.test"]);
    write_leaf(dir.path(), "site", &new);
    let reloaded = send_body(shellac.admin, "POST", "/reload", &[], "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());

    let fresh = connect(shellac.tls, "site.test", client.clone())
        .await
        .expect("handshake after reload");
    assert!(
        served(&fresh) == new.der,
        "a new handshake gets the new certificate"
    );
    // The connection opened before the reload still serves.
    let (_, got) = open.get("site.test", "/again", &[]).await;
    assert_eq!(got.status, 200);

    // A broken certificate file refuses the reload; the last good one stays.
    std::fs::write(dir.path().join("site.pem"), "not a certificate\n").expect("write");
    let refused = send_body(shellac.admin, "POST", "/reload", &[], "").await;
    assert_ne!(refused.status, 200, "{}", refused.text());
    assert!(refused.text().contains("site.pem"), "{}", refused.text());
    let after = connect(shellac.tls, "site.test", client)
        .await
        .expect("handshake after a refused reload");
    assert!(served(&after) == new.der);
    shellac.stop().await;
}

#[tokio::test]
async fn a_redirect_cached_for_http_is_not_served_over_https() {
    // The origin redirects plain HTTP to HTTPS, as so many do.
    let origin = Origin::start(|seen: support::origin::Seen| async move {
        let proto = seen
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if proto == "https" {
            ok("secure page")
        } else {
            Reply::ok("moved")
                .status(301)
                .header("location", "https://site.test/page")
                .header("cache-control", "max-age=300")
        }
    })
    .await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    write_leaf(dir.path(), "site", &pki.leaf(&["site.test"]));
    let file = dir.path().join("shellac.toml");
    let tls = "[[tls.certificate]]\ncertificate = \"site.pem\"\nprivate_key = \"site.key\"\n";
    std::fs::write(&file, config_text(origin.addr, tls)).expect("write");
    let shellac = Running::start(&file).await;

    let host = [("host", "site.test")];
    let plain = send(shellac.plain, "GET", "/page", &host).await;
    assert_eq!(plain.status, 301);
    let again = send(shellac.plain, "GET", "/page", &host).await;
    assert_eq!(again.status, 301, "{:?}", again.headers);
    assert_eq!(
        origin.requests(),
        1,
        "the redirect is cached for http: {:?}",
        again.headers
    );

    let tls = connect(
        shellac.tls,
        "site.test",
        verifying_client(pki.ca_der(), &[]),
    )
    .await
    .expect("handshake");
    let mut sender = Sender::on(tls).await;
    let (_, secure) = sender.get("site.test", "/page", &[]).await;
    assert_eq!(
        secure.status, 200,
        "the http redirect was served on https: a loop"
    );
    assert_eq!(secure.text(), "secure page");
    let (_, hit) = sender.get("site.test", "/page", &[]).await;
    assert_eq!(hit.text(), "secure page");
    assert_eq!(origin.requests(), 2, "each scheme has its own object");
    shellac.stop().await;
}

#[tokio::test]
async fn forwarded_proto_from_an_untrusted_client_is_replaced() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let spoof = [
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6;proto=https"),
    ];

    let untrusted = support::Shellac::start(&support::config(origin.addr, "")).await;
    assert_eq!(send(untrusted.addr, "GET", "/a", &spoof).await.status, 200);
    let seen = origin.seen().pop().expect("a request");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"test.example\""
    );
    untrusted.stop().await;

    // Behind a trusted load balancer that terminated TLS, its word stands.
    let trusted = support::Shellac::start(&support::config(
        origin.addr,
        "trusted_proxies = [\"127.0.0.1/32\"]",
    ))
    .await;
    assert_eq!(send(trusted.addr, "GET", "/b", &spoof).await.status, 200);
    let seen = origin.seen().pop().expect("a request");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(
        seen.headers["forwarded"],
        "for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host=\"test.example\""
    );
    trusted.stop().await;
}

#[tokio::test]
async fn metrics_show_each_certificate_expiry() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, tls) = two_certificates(&pki, dir.path());
    let file = dir.path().join("shellac.toml");
    std::fs::write(&file, config_text(origin.addr, &tls)).expect("write");
    let shellac = Running::start(&file).await;
    let metrics = get(shellac.admin, "/metrics").await.text();
    for names in ["default.test", "a.test,*.b.test"] {
        let line =
            format!("shellac_tls_certificate_expiry_seconds{{names=\"{names}\"}} {NOT_AFTER}");
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
    shellac.stop().await;
}

#[test]
fn a_certificate_near_its_expiry_is_warned_about_and_names_can_be_given() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut params = CertificateParams::new(vec!["old.test".to_string()]).expect("params");
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &pki.ca).expect("sign");
    std::fs::write(dir.path().join("old.pem"), cert.pem()).expect("write");
    std::fs::write(dir.path().join("old.key"), key.serialize_pem()).expect("write");
    write_leaf(dir.path(), "new", &pki.leaf(&["new.test"]));
    let file = dir.path().join("shellac.toml");
    std::fs::write(
        &file,
        config_text(
            "127.0.0.1:9".parse().expect("addr"),
            "[[tls.certificate]]\ncertificate = \"new.pem\"\nprivate_key = \"new.key\"\nnames = [\"Override.test\", \"*.override.test\"]\n\
             [[tls.certificate]]\ncertificate = \"old.pem\"\nprivate_key = \"old.key\"\n",
        ),
    )
    .expect("write");
    let config = shellac::Config::load(&file).expect("valid, if about to expire");
    assert_eq!(
        config.tls.certificates[0].names,
        ["override.test", "*.override.test"]
    );
    assert_eq!(config.tls.certificates[1].names, ["old.test"]);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let warning = &config.warnings[0];
    assert!(
        warning.contains("old.test") && warning.contains("Wed, 01 Jan 2020"),
        "{warning}"
    );
}

#[tokio::test]
async fn a_reload_can_turn_a_listener_into_tls_and_back_on_the_same_port() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    write_leaf(dir.path(), "site", &pki.leaf(&["site.test"]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let file = dir.path().join("shellac.toml");
    let write = |tls: bool| {
        let text = format!(
            "[server]\nlisten = [{{ address = \"127.0.0.1:{port}\", tls = {tls} }}]\n{ADMIN}\n\
             [[tls.certificate]]\ncertificate = \"site.pem\"\nprivate_key = \"site.key\"\n\
             [[backend]]\naddress = \"{}\"\n",
            origin.addr
        );
        std::fs::write(&file, text).expect("write");
    };
    write(false);
    let shellac = Running::start(&file).await;
    assert_eq!(shellac.plain.port(), port);
    assert_eq!(get(shellac.plain, "/").await.status, 200);

    let client = verifying_client(pki.ca_der(), &[]);
    for tls in [true, false] {
        write(tls);
        let reloaded = send_body(shellac.admin, "POST", "/reload", &[], "").await;
        assert_eq!(reloaded.status, 200, "{}", reloaded.text());
        // The switch is applied by the accept loop: wait for it, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let works = if tls {
                match connect(shellac.plain, "site.test", client.clone()).await {
                    Ok(stream) => {
                        Sender::on(stream)
                            .await
                            .get("site.test", "/", &[])
                            .await
                            .1
                            .status
                            == 200
                    }
                    Err(_) => false,
                }
            } else {
                support::try_send(shellac.plain, "GET", "/", &[])
                    .await
                    .is_ok_and(|got| got.status == 200)
            };
            if works {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "port {port} did not switch to tls = {tls}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    shellac.stop().await;
}

#[tokio::test]
async fn a_tls_connection_over_max_connections_gets_the_503_over_tls() {
    let origin = Origin::fixed(Reply::ok("hello")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, tls) = two_certificates(&pki, dir.path());
    let file = dir.path().join("shellac.toml");
    std::fs::write(
        &file,
        config_text(origin.addr, &tls).replace("[server]\n", "[server]\nmax_connections = 1\n"),
    )
    .expect("write");
    let shellac = Running::start(&file).await;
    let client = verifying_client(pki.ca_der(), &[b"h2"]);
    let held = connect(shellac.tls, "a.test", client.clone())
        .await
        .expect("handshake");
    let mut held = Sender::on(held).await;
    assert_eq!(held.get("a.test", "/", &[]).await.1.status, 200);
    let over = connect(shellac.tls, "a.test", client)
        .await
        .expect("a handshake over the cap too");
    let (version, got) = Sender::on(over).await.get("a.test", "/", &[]).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(got.status, 503, "{}", got.text());
    assert!(got.headers.contains_key("retry-after"));
    drop(held);
    shellac.stop().await;
}

/// `PURGE` (and the invalidation after a `POST`) removes a URL under both
/// schemes: the scheme is in the key only so that a redirect for one is
/// never served on the other.
#[tokio::test]
async fn a_purge_removes_the_url_over_both_schemes() {
    let origin = Origin::fixed(Reply::ok("page").header("cache-control", "max-age=300")).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    write_leaf(dir.path(), "site", &pki.leaf(&["site.test"]));
    let file = dir.path().join("shellac.toml");
    let extra = "[cache]\npurge_allow = [\"127.0.0.1\"]\n\
                 [[tls.certificate]]\ncertificate = \"site.pem\"\nprivate_key = \"site.key\"\n";
    std::fs::write(&file, config_text(origin.addr, extra)).expect("write");
    let shellac = Running::start(&file).await;
    let host = [("host", "site.test")];
    send(shellac.plain, "GET", "/p", &host).await;
    let tls = connect(
        shellac.tls,
        "site.test",
        verifying_client(pki.ca_der(), &[]),
    )
    .await
    .expect("handshake");
    let mut sender = Sender::on(tls).await;
    sender.get("site.test", "/p", &[]).await;
    assert_eq!(origin.requests(), 2, "one object per scheme");
    let purged = send(shellac.plain, "PURGE", "/p", &host).await;
    assert_eq!(purged.status, 200);
    let (_, secure) = sender.get("site.test", "/p", &[]).await;
    assert_eq!(
        secure.header("x-cache"),
        Some("MISS"),
        "purged over https too"
    );
    let plain = send(shellac.plain, "GET", "/p", &host).await;
    assert_eq!(plain.header("x-cache"), Some("MISS"));
    assert_eq!(origin.requests(), 4);
    shellac.stop().await;
}
