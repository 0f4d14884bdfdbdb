//! HTTPS backends and `host_header` (issue 16, items 5 and 6) over real
//! sockets: an HTTPS origin (tokio-rustls and hyper) with a certificate
//! from a test CA made by rcgen; Shellac trusts it through `tls_ca`,
//! reuses its TLS connections, answers the synthetic 503 with reason `tls`
//! for the wrong CA or name, accepts anything with `tls_verify = false`,
//! probes it over TLS, and sends `host_header` while keying the cache by
//! the client's host.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use support::{send, Shellac, ShellacProcess};

// === certificates ===

/// A test CA that signs leaf certificates.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate: its chain and key as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
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
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.ca.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the full path.
    fn write_ca(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, self.ca.pem()).expect("write ca");
        path.display().to_string()
    }
}

// === the HTTPS origin ===

/// An HTTPS origin on port 0: counts TLS connections and requests, and
/// remembers the `Host` of each request. `/health` answers 200 uncached,
/// every other path 200 cacheable for 60 s with the path in the body.
struct TlsOrigin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    hosts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsOrigin {
    async fn start(leaf: &Leaf) -> TlsOrigin {
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let (c, r, h) = (connections.clone(), requests.clone(), hosts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, c, r, h) = (acceptor.clone(), c.clone(), r.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    c.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (r, h) = (r.clone(), h.clone());
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            h.lock().expect("hosts").push(host.clone());
                            let path = req.uri().path().to_string();
                            let cache = if path == "/health" {
                                "no-store"
                            } else {
                                "max-age=60"
                            };
                            let response = hyper::Response::builder()
                                .header("cache-control", cache)
                                .body(Full::new(Bytes::from(format!("tls origin {path}"))))
                                .expect("response");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsOrigin {
            addr,
            connections,
            requests,
            hosts,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn hosts(&self) -> Vec<String> {
        self.hosts.lock().expect("hosts").clone()
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTPS backend at `origin` with `settings` (TOML lines), debug
/// headers on, and `extra` after it (a `[backend.probe]`).
fn config(origin: SocketAddr, settings: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndebug_headers = true\n\n\
         [[backend]]\nname = \"secure\"\naddress = \"{origin}\"\ntls = true\n{settings}\n{extra}\n"
    )
}

/// `tls_ca` as a TOML line (a path with backslashes escaped).
fn ca_line(path: &str) -> String {
    format!("tls_ca = '{path}'\n")
}

// === tests ===

/// The test CA in `tls_ca`, the right name: 200 from the origin; a second
/// request (another URL) goes out on the same, pooled TLS connection.
#[tokio::test]
async fn an_https_backend_with_its_ca_answers_and_its_connection_is_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf(&["origin.test"])).await;
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let toml = config(
        origin.addr,
        &format!("{}tls_server_name = \"origin.test\"\n", ca_line(&ca)),
        "",
    );
    let shellac = Shellac::start(&toml).await;

    let first = send(shellac.addr, "GET", "/one", &[]).await;
    assert_eq!(first.status, 200, "{:?} {}", first.headers, first.text());
    assert_eq!(first.text(), "tls origin /one");
    let second = send(shellac.addr, "GET", "/two", &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "tls origin /two");
    assert_eq!(origin.requests(), 2);
    assert_eq!(
        origin.connections(),
        1,
        "the second request reused the pooled TLS connection"
    );
    shellac.stop().await;
}

/// A CA that did not sign the origin's certificate: the synthetic 503,
/// reason `tls` in `X-Shellac-Error` and in the JSON body; the origin
/// never sees a request.
#[tokio::test]
async fn the_wrong_ca_gives_the_synthetic_503_with_reason_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let other = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf(&["origin.test"])).await;
    let ca = other.write_ca(dir.path(), "other-ca.pem");
    let toml = config(
        origin.addr,
        &format!("{}tls_server_name = \"origin.test\"\n", ca_line(&ca)),
        "",
    );
    let shellac = Shellac::start(&toml).await;

    let got = send(shellac.addr, "GET", "/", &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-shellac-error"), Some("tls"));
    let json = send(shellac.addr, "GET", "/", &[("accept", "application/json")]).await;
    assert_eq!(json.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&json.body).expect("json body");
    assert_eq!(body["reason"], "tls", "{body}");
    assert_eq!(origin.requests(), 0);
    shellac.stop().await;
}

/// A `tls_server_name` the certificate is not for: 503 `tls`, and the log
/// names the mismatch and the backend.
#[tokio::test]
async fn the_wrong_server_name_is_a_tls_failure_naming_the_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf(&["origin.test"])).await;
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let toml = config(
        origin.addr,
        &format!("{}tls_server_name = \"elsewhere.test\"\n", ca_line(&ca)),
        "",
    );
    let shellac = ShellacProcess::spawn(&toml);

    let got = send(shellac.addr, "GET", "/", &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("x-shellac-error"), Some("tls"));
    assert!(
        shellac
            .wait_for_log(
                "certificate name mismatch: expected elsewhere.test",
                Duration::from_secs(10)
            )
            .await,
        "{}",
        shellac.log()
    );
    assert!(
        shellac.log().contains("backend secure"),
        "{}",
        shellac.log()
    );
    assert_eq!(origin.requests(), 0);
}

/// `tls_verify = false` accepts a certificate from an unknown CA (and
/// warns at load).
#[tokio::test]
async fn tls_verify_false_accepts_an_untrusted_certificate_and_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let other = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf(&["origin.test"])).await;
    let ca = other.write_ca(dir.path(), "other-ca.pem");
    let toml = config(
        origin.addr,
        &format!(
            "{}tls_server_name = \"origin.test\"\ntls_verify = false\n",
            ca_line(&ca)
        ),
        "",
    );
    let shellac = ShellacProcess::spawn(&toml);
    let got = send(shellac.addr, "GET", "/any", &[]).await;
    assert_eq!(got.status, 200, "{}", shellac.log());
    assert_eq!(got.text(), "tls origin /any");
    assert!(
        shellac.log().contains("tls_verify = false"),
        "{}",
        shellac.log()
    );
}

/// `host_header` is the Host the origin sees; the cache key keeps the
/// client's host, so two client hosts are two objects (two fetches), and
/// a repeat of either is a hit.
#[tokio::test]
async fn host_header_goes_to_the_backend_while_the_cache_key_keeps_the_clients_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf(&["origin.test"])).await;
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let toml = config(
        origin.addr,
        &format!(
            "{}tls_server_name = \"origin.test\"\nhost_header = \"api.origin.test\"\n",
            ca_line(&ca)
        ),
        "",
    );
    let shellac = Shellac::start(&toml).await;

    for host in ["a.example", "b.example", "a.example", "b.example"] {
        let got = send(shellac.addr, "GET", "/page", &[("host", host)]).await;
        assert_eq!(got.status, 200, "{host}");
    }
    assert_eq!(origin.requests(), 2, "one object per client host");
    assert_eq!(origin.hosts(), vec!["api.origin.test", "api.origin.test"]);
    shellac.stop().await;
}

/// A probe over TLS (with `host_header` as its Host) makes a backend that
/// starts sick healthy: requests go from 503 to 200.
#[tokio::test]
async fn a_probe_over_tls_marks_the_backend_healthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let origin = TlsOrigin::start(&pki.leaf(&["origin.test"])).await;
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let toml = config(
        origin.addr,
        &format!(
            "{}tls_server_name = \"origin.test\"\nhost_header = \"probe.origin.test\"\n",
            ca_line(&ca)
        ),
        "[backend.probe]\nurl = \"/health\"\ninterval = \"100ms\"\ntimeout = \"2s\"\n\
         window = 1\nthreshold = 1\ninitial = 0\n",
    );
    let shellac = Shellac::start(&toml).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    while Instant::now() < deadline {
        status = send(shellac.addr, "GET", "/after-probe", &[])
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the TLS probe never made the backend healthy");
    let hosts = origin.hosts();
    assert!(
        hosts.iter().any(|h| h == "probe.origin.test"),
        "the probes send host_header: {hosts:?}"
    );
    shellac.stop().await;
}

/// `--check` (a load) refuses an unreadable `tls_ca`, a PEM without a
/// certificate and an invalid server name, with file, line and key; a
/// relative `tls_ca` is read from the configuration file's directory.
#[test]
fn check_refuses_broken_tls_settings_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    pki.write_ca(dir.path(), "ca.pem");
    std::fs::write(dir.path().join("empty.pem"), "no certificate here\n").expect("write");
    let file = dir.path().join("shellac.toml");
    let load = |settings: &str| {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[backend]]\nname = \"secure\"\n\
             address = \"127.0.0.1:9\"\ntls = true\n{settings}"
        );
        std::fs::write(&file, text).expect("write config");
        shellac::Config::load(&file)
    };

    let good = load("tls_ca = \"ca.pem\"\n").expect("a relative tls_ca is found");
    assert!(good.backends[0].tls);
    assert_eq!(good.backends[0].tls_name(), "127.0.0.1");

    let missing = load("tls_ca = \"missing.pem\"\n")
        .expect_err("an unreadable tls_ca")
        .to_string();
    assert!(missing.contains("shellac.toml:8"), "{missing}");
    assert!(missing.contains("backend[0].tls_ca"), "{missing}");
    assert!(missing.contains("missing.pem"), "{missing}");

    let empty = load("tls_ca = \"empty.pem\"\n")
        .expect_err("a PEM without certificates")
        .to_string();
    assert!(empty.contains("backend[0].tls_ca"), "{empty}");
    assert!(empty.contains("has none"), "{empty}");

    let name = load("tls_server_name = \"not a name\"\n")
        .expect_err("an invalid server name")
        .to_string();
    assert!(name.contains("backend[0].tls_server_name"), "{name}");

    // In [defaults] too.
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[defaults]\ntls_ca = \"gone.pem\"\n\n\
                [[backend]]\naddress = \"127.0.0.1:9\"\n";
    std::fs::write(&file, text).expect("write config");
    let dflt = shellac::Config::load(&file)
        .expect_err("an unreadable tls_ca in [defaults]")
        .to_string();
    assert!(dflt.contains("defaults.tls_ca"), "{dflt}");

    // The binary's --check says the same and exits non-zero.
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[backend]]\naddress = \"127.0.0.1:9\"\n\
         tls = true\ntls_ca = \"missing.pem\"\n",
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shellac"))
        .arg("--check")
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run --check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backend[0].tls_ca"), "{stderr}");
}
