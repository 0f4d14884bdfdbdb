//! The validated configuration: what `shellac --check` checks and what
//! `shellac::run` runs on.
//!
//! Loading goes in two steps, as in sozu and pingora: the TOML is parsed into
//! the raw structs of `file.rs` (unknown keys refused), then [`Config`] is
//! built from them by `build/`, resolving names, filling defaults from
//! `defaults.rs` and checking ranges and cross-references. Every error names
//! the file, the line and the key.
//!
//! This file holds only the validated types and the two entry points
//! ([`Config::load`], [`Config::parse`]), so that what the rest of Shellac
//! may rely on can be read in one place, apart from how it is checked:
//!
//! - `file.rs`: the raw serde structs, exactly the TOML's shape;
//! - `settings.rs`: the per-backend settings, listed once for `[defaults]`
//!   and `[[backend]]`;
//! - `build/`: one file per section, raw into validated;
//! - `check.rs`: the checks every section shares (positive durations and
//!   sizes, integer ranges, addresses, names);
//! - `defaults.rs`, `units.rs`, `error.rs`: the built-in defaults, the
//!   duration and size syntax, and the located `ConfigError`.

mod build;
mod check;
pub mod defaults;
mod error;
mod file;
mod settings;
pub mod units;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::Method;
use ipnet::IpNet;

pub use defaults::CONFIG_PATH;
pub use error::ConfigError;
pub use units::{parse_duration, parse_size};

use error::Locator;
use file::RawConfig;

/// The cryptography under every TLS listener: rustls with *ring* (no
/// cmake or C toolchain beyond `cc`, unlike aws-lc-rs), built once. Config
/// loading uses it to check that each private key matches its certificate,
/// the server to build its listeners.
pub fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// hyper's smallest HTTP/1 read buffer; request and response heads up to
/// this size are always buffered, larger limits raise the buffer.
pub const MIN_READ_BUFFER: usize = 8192;

/// A complete, checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// `[server]`: the client side.
    pub server: ServerConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[[backend]]`, with `[defaults]` applied.
    pub backends: Vec<BackendConfig>,
    /// `[[pool]]`, or the implicit pool `default` of all backends.
    pub pools: Vec<PoolConfig>,
    /// `[[route]]`, most specific first; the last one always matches.
    pub routes: Vec<RouteConfig>,
    /// `[[rule]]`, in the file's order (every matching rule applies).
    pub rules: Vec<RuleConfig>,
    /// `[retry]`.
    pub retry: RetryConfig,
    /// `[admin]`, when the admin listener is on.
    pub admin: Option<AdminConfig>,
    /// `[log]`.
    pub log: LogConfig,
    /// `[[rate_limit]]`.
    pub rate_limits: Vec<RateLimitConfig>,
    /// `[cluster]`: consistent-hash peering, when configured.
    pub cluster: Option<ClusterConfig>,
    /// `[tls]`: the certificates, loaded and checked (none without `[tls]`).
    pub tls: TlsConfig,
    /// `[compression]`: gzip and brotli the Varnish way.
    pub compression: CompressionConfig,
    /// `[esi]`: Edge Side Includes.
    pub esi: EsiConfig,
    /// What an operator should know about this configuration although it
    /// is valid (a certificate about to expire), one sentence each. Logged
    /// by `run` and on every reload, printed by `--check`: the configuration
    /// is loaded before logging starts.
    pub warnings: Vec<String>,
}

/// One `[server] listen` entry: where, and what a client must speak there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The address to accept clients on.
    pub addr: ListenAddr,
    /// Clients speak TLS here (HTTPS; HTTP/2 or HTTP/1.1 chosen by ALPN).
    pub tls: bool,
    /// Every connection starts with a PROXY protocol header (v1 or v2),
    /// before TLS; its source address is the client's.
    pub proxy_protocol: bool,
    /// A Unix socket's permission bits (`mode = "0660"`), set after bind;
    /// none: what the umask leaves.
    pub mode: Option<u32>,
}

/// Where a listener accepts clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// One TCP address.
    Tcp(SocketAddr),
    /// `":6081"`: every interface, IPv4 and (where the host has it) IPv6,
    /// on this port, as `varnishd -a :6081`.
    AllInterfaces(u16),
    /// `"unix:/run/shellac/http.sock"`: a Unix domain socket.
    Unix(PathBuf),
}

impl Listen {
    /// A plain-HTTP listener on `addr`.
    pub fn plain(addr: SocketAddr) -> Listen {
        Listen {
            addr: ListenAddr::Tcp(addr),
            tls: false,
            proxy_protocol: false,
            mode: None,
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => addr.fmt(f),
            ListenAddr::AllInterfaces(port) => write!(f, ":{port}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[tls]`: what every TLS listener serves.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// The oldest protocol version offered; default TLS 1.2.
    pub min_version: TlsVersion,
    /// `[[tls.certificate]]` in file order; the first one is served to a
    /// client whose SNI matches none (or that sends none).
    pub certificates: Vec<CertificateConfig>,
}

/// `[tls] min_version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// `"1.2"`: TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// `"1.3"`: TLS 1.3 only.
    Tls13,
}

/// One `[[tls.certificate]]`, read from its files when the configuration
/// was loaded (so `--check` and a reload refuse a bad file) and checked:
/// the chain parses, the key matches the leaf.
#[derive(Clone, Debug)]
pub struct CertificateConfig {
    /// The `certificate` file as resolved (for messages).
    pub file: PathBuf,
    /// The names it is served for, lower-case: `names`, or else the leaf's
    /// DNS subject alternative names; `*.example.com` matches one label.
    pub names: Vec<String>,
    /// The leaf's `notAfter`, as Unix time in seconds.
    pub not_after: i64,
    /// The chain and the signing key, as the TLS listener serves them.
    pub key: Arc<rustls::sign::CertifiedKey>,
}

impl CertificateConfig {
    /// Its names as one label, comma-separated (`/metrics`, logs).
    pub fn names_label(&self) -> String {
        if self.names.is_empty() {
            String::from("(none)")
        } else {
            self.names.join(",")
        }
    }
}

/// `[cluster]`: every node lists the same peers (itself included); a miss
/// for a key another live peer owns on the hash ring is fetched from that
/// peer instead of the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Every node, as backends named `peer:<address as written>` (the ring
    /// is built from the names, so every node must spell them alike).
    pub peers: Vec<BackendConfig>,
    /// Which of `peers` is this node.
    pub self_index: usize,
}

/// `[server]`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Addresses to accept clients on, each plain HTTP or TLS.
    pub listen: Vec<Listen>,
    /// Close an idle keep-alive client connection after this.
    pub timeout_idle: Duration,
    /// The whole request head must arrive within this.
    pub header_timeout: Duration,
    /// The longest single request header line, in bytes.
    pub http_req_hdr_len: usize,
    /// The largest whole request head, in bytes.
    pub http_req_size: usize,
    /// The most header fields in one request.
    pub http_max_hdr: usize,
    /// `Retry-After` of a synthetic 503 when nothing better is known.
    pub retry_after: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub drain_timeout: Duration,
    /// The text of `synthetic_template`, read when the configuration was
    /// loaded (so a missing file fails `--check`, not the first error page).
    pub synthetic_template: Option<Arc<str>>,
    /// Send `X-Shellac-Error: <reason>` on synthetic responses.
    pub debug_headers: bool,
    /// Peers whose `X-Forwarded-For` is believed (rate limits, purge ACL,
    /// logs), and whose `X-Forwarded-Proto` and `Forwarded` are passed on.
    pub trusted_proxies: Vec<IpNet>,
    /// Maintenance mode is on while this file exists.
    pub maintenance_file: Option<PathBuf>,
    /// A write to a client that makes no progress for this long fails.
    pub send_timeout: Duration,
    /// The most client connections at once; 0 means no cap.
    pub max_connections: usize,
    /// The largest request body forwarded, in bytes; larger ones get 413.
    pub max_request_body: u64,
    /// Runtime worker threads; 0: one per CPU this process may run on.
    pub workers: usize,
}

/// `[compression]`: with `gzip_support`, Varnish's `http_gzip_support`:
/// the backend is asked for gzip, compressible answers are stored gzipped,
/// and each client gets the encoding it accepts (docs/caching.md,
/// "Compression").
#[derive(Clone, Debug)]
pub struct CompressionConfig {
    /// Normalise `Accept-Encoding`, store gzip, decode for identity clients.
    /// Off: `Accept-Encoding` passes through and splits `Vary` variants.
    pub gzip_support: bool,
    /// Also serve `br` (made once from the stored object) to clients that
    /// accept it.
    pub brotli: bool,
    /// Media types (without parameters, lower-cased) worth compressing:
    /// `text/*`-style globs.
    pub types: Vec<crate::pattern::Glob>,
    /// Bodies smaller than this are stored as they are.
    pub min_size: u64,
    /// The gzip level, 0 (stored) to 9 (smallest).
    pub gzip_level: u32,
}

impl CompressionConfig {
    /// Whether a response of `content_type` (a `Content-Type` value) is
    /// worth compressing: its media type, parameters dropped, matches one
    /// of `types`.
    pub fn compressible(&self, content_type: &str) -> bool {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = media.to_ascii_lowercase();
            return self.types.iter().any(|t| t.matches(&lower));
        }
        self.types.iter().any(|t| t.matches(media))
    }
}

/// `[esi]`: how deep includes nest and which responses are parsed
/// (docs/caching.md, "ESI").
#[derive(Clone, Debug)]
pub struct EsiConfig {
    /// Varnish's `max_esi_depth`: an include deeper than this is not made.
    pub max_depth: u32,
    /// Media types (lower-cased globs) whose responses are parsed for ESI.
    pub types: Vec<crate::pattern::Glob>,
}

impl EsiConfig {
    /// Whether a response of `content_type` (a `Content-Type` value) is
    /// parsed: its media type, parameters dropped, matches one of `types`.
    pub fn parses(&self, content_type: &str) -> bool {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let lower = media.to_ascii_lowercase();
        self.types.iter().any(|t| t.matches(&lower))
    }
}

/// `[cache]`.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Memory bound of the cache in bytes (bodies plus headers).
    pub capacity: u64,
    /// Freshness lifetime of responses that give none.
    pub default_ttl: Duration,
    /// Larger responses stream through and are not stored.
    pub max_object_size: u64,
    /// Bytes that fetches in progress may buffer in all (default a quarter
    /// of `capacity`); beyond it a miss is passed to its client unbuffered.
    pub transit_capacity: u64,
    /// Store error responses (400, 413, 414, 431, 5xx) when they say they
    /// are cacheable.
    pub store_errors: bool,
    /// Stale objects are served at once for this long while refreshed.
    pub default_grace: Duration,
    /// Stale objects are kept this long past grace for revalidation.
    pub default_keep: Duration,
    /// A key whose response was uncacheable bypasses the waiting list this long.
    pub hit_for_miss: Duration,
    /// The cap on heuristic freshness.
    pub heuristic_max: Duration,
    /// Remove targeted cache-control fields from responses to clients.
    pub strip_targeted: bool,
    /// Whether the client's `Cache-Control` and `Pragma` may force a fetch
    /// (default false; `only-if-cached` always applies).
    pub honor_request_cache_control: bool,
    /// Client addresses allowed to send `PURGE`; empty means PURGE is off (405).
    pub purge_allow: Vec<IpNet>,
    /// The response header whose space-separated values tag an object for bans.
    pub tag_header: HeaderName,
    /// `invalidation`: the apps' purge protocols accepted besides plain `PURGE`.
    pub invalidation: Invalidation,
    /// `[cache.l2]`: the shared second tier, when configured.
    pub l2: Option<L2Config>,
}

/// `[cache] invalidation`: which applications' Varnish purge protocols
/// Shellac speaks (`proxy/invalidate.rs`). All off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invalidation {
    /// `PURGE` with `X-Magento-Tags-Pattern` / `X-Pool` (Magento 2).
    pub magento2: bool,
    /// `PURGE` with `X-Purge-Method: regex` (WordPress purge plugins).
    pub wordpress: bool,
    /// `BAN` with `Purge-Cache-Tags` / `Cache-Tags` (Drupal's purge module).
    pub drupal: bool,
    /// `PURGE` with `xkey-purge` (varnish-modules' vmod_xkey).
    pub xkey: bool,
}

impl Invalidation {
    /// The names accepted in the config.
    pub const NAMES: [&'static str; 4] = ["magento2", "wordpress", "drupal", "xkey"];
}

/// Where the second tier lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L2Endpoint {
    /// One Redis/Valkey server (`redis://host:port[/db]`).
    Standalone(String),
    /// A Redis Cluster, by its seed nodes (each `redis://host:port`).
    Cluster(Vec<String>),
}

/// `[cache.l2]`: a Redis/Valkey shared by every node as a second cache tier
/// and as the channel for invalidation fan-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Config {
    /// `url` as written (for logs).
    pub url: String,
    /// `url` resolved into a server or cluster seeds.
    pub endpoint: L2Endpoint,
    /// Put before every key and the channel name (default `"shellac:"`).
    pub prefix: String,
    /// The longest an L2 lookup may take (default 50 ms).
    pub timeout: Duration,
    /// Larger objects are not written to L2 (default 1 MiB).
    pub max_object_size: u64,
}

/// `[admin]`: the admin listener, off when `listen` is absent.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Where the admin endpoints listen.
    pub listen: SocketAddr,
    /// When set, every admin request except `GET /health` needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Host names (besides IP literals and `localhost`) under which the
    /// admin listener answers; others get 421 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// Standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

/// The access-log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// NCSA combined (varnishncsa's default) plus cache handling, XID and duration.
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Where lines go.
    pub access: AccessLog,
    /// Their format.
    pub format: LogFormat,
}

/// What a rate limit counts by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address (after `trusted_proxies`).
    ClientIp,
    /// A request header's value, e.g. an API key; requests without it share one bucket.
    Header(HeaderName),
}

/// One `[[rate_limit]]`.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// What the quota is per.
    pub key: RateKey,
    /// Requests allowed per `per`.
    pub count: u32,
    /// The period of `count`.
    pub per: Duration,
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Only requests under this path count.
    pub path_prefix: Option<String>,
}

/// One `[[backend]]` with `[defaults]` applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// Its name in logs and pools.
    pub name: String,
    /// `host:port` or `unix:/path`, as written (logs and the admin view
    /// show it so).
    pub address: String,
    /// Where it is: a TCP address with the answer of its name at load, or
    /// a Unix socket.
    pub addr: BackendAddr,
    /// `resolve_interval`: how often a host name in `address` is looked up
    /// again; zero looks it up only at load. Literal IP addresses and Unix
    /// sockets are never looked up again.
    pub resolve_interval: Duration,
    /// `proxy_protocol`: the PROXY protocol version (1 or 2) each new
    /// connection starts with; 0 sends none.
    pub proxy_protocol: u8,
    /// How the host name is looked up again (the system's resolver; tests
    /// put in their own).
    pub resolver: Resolver,
    /// TCP connect must finish within this.
    pub connect_timeout: Duration,
    /// From the request sent to the response head received.
    pub first_byte_timeout: Duration,
    /// The longest pause between two pieces of the response body.
    pub between_bytes_timeout: Duration,
    /// An Upgrade tunnel (WebSocket) to this backend that moves no byte
    /// either way for this long is closed.
    pub pipe_timeout: Duration,
    /// The longest single response header line, in bytes.
    pub http_resp_hdr_len: usize,
    /// The largest whole response head, in bytes.
    pub http_resp_size: usize,
    /// Pooled connections unused this long are closed.
    pub backend_idle_timeout: Duration,
    /// Relative share of traffic under the `random` and `hash` policies.
    pub weight: u32,
    /// The most in-flight requests; 0 means unlimited.
    pub max_connections: usize,
    /// How many requests may wait for a free slot when `max_connections` is reached.
    pub queue_length: usize,
    /// The longest a request waits in that queue.
    pub queue_timeout: Duration,
    /// Failed fetches in a row that eject the backend; 0 disables ejection.
    pub consecutive_failures: u32,
    /// The first ejection's length; it doubles on each repeat.
    pub ejection_time: Duration,
    /// `tls`: connect with TLS (HTTPS backend). Default false.
    pub tls: bool,
    /// `tls_server_name`: the SNI sent and the name the certificate must
    /// carry; `None` is the host part of `address`
    /// ([`BackendConfig::tls_name`]).
    pub tls_server_name: Option<String>,
    /// `tls_ca`: trust these roots instead of the Mozilla root store.
    pub tls_ca: Option<CaFile>,
    /// `tls_verify`: false accepts any certificate (warned at every load).
    /// Default true.
    pub tls_verify: bool,
    /// `host_header`: the `Host` sent to this backend (and its probes) in
    /// place of the client's. Default: none (the client's `Host`).
    pub host_header: Option<http::HeaderValue>,
    /// The active health probe, if any (none: always healthy).
    pub probe: Option<ProbeConfig>,
}

/// Where a backend is (`address`). Two are equal when they name the same
/// place and their answers at load hold the same addresses in any order:
/// a DNS server that rotates its answer must not make a reload see a
/// changed backend (which would lose its pool and probe history).
#[derive(Clone, Debug, Eq)]
pub enum BackendAddr {
    /// `host:port`. `resolved` is the answer at load (never empty);
    /// `literal` says `host` is an IP address, never looked up again.
    Tcp {
        /// The host part, without the brackets of an IPv6 literal.
        host: String,
        /// The port.
        port: u16,
        /// What `host` resolved to at load, in the resolver's order.
        resolved: Vec<SocketAddr>,
        /// `host` is an IP address.
        literal: bool,
    },
    /// `unix:/path`: a Unix domain socket.
    Unix(PathBuf),
}

impl BackendAddr {
    /// A literal IP address and port (cluster peers, the `--demo` origin).
    pub fn literal(addr: SocketAddr) -> BackendAddr {
        BackendAddr::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
            resolved: vec![addr],
            literal: true,
        }
    }

    /// Whether a background task should look the name up again.
    pub fn is_name(&self) -> bool {
        matches!(self, BackendAddr::Tcp { literal: false, .. })
    }
}

impl PartialEq for BackendAddr {
    fn eq(&self, other: &BackendAddr) -> bool {
        match (self, other) {
            (BackendAddr::Unix(a), BackendAddr::Unix(b)) => a == b,
            (
                BackendAddr::Tcp {
                    host,
                    port,
                    resolved,
                    literal,
                },
                BackendAddr::Tcp {
                    host: other_host,
                    port: other_port,
                    resolved: other_resolved,
                    literal: other_literal,
                },
            ) => {
                let sorted = |addrs: &[SocketAddr]| {
                    let mut addrs = addrs.to_vec();
                    addrs.sort_unstable();
                    addrs
                };
                host == other_host
                    && port == other_port
                    && literal == other_literal
                    && sorted(resolved) == sorted(other_resolved)
            }
            _ => false,
        }
    }
}

/// Looks a backend's host name up: what [`Resolver`] calls. The answer
/// carries ports, so a test resolver may also move a backend to another port.
pub trait Resolve: Send + Sync {
    /// The addresses `host` has now, each with `port`.
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'static>>;
}

/// The resolver of a backend's re-resolution task: the system's
/// (`tokio::net::lookup_host`, getaddrinfo on a blocking thread) unless a
/// test put its own in. Two configurations compare equal when both use
/// the system's or the very same custom one, so a reload takes over an
/// unchanged backend.
#[derive(Clone, Default)]
pub struct Resolver(Option<Arc<dyn Resolve>>);

impl Resolver {
    /// A custom resolver (a test hook: it lets a test change a name's
    /// answer while Shellac runs, without touching `/etc/hosts`).
    #[doc(hidden)]
    pub fn custom(resolve: Arc<dyn Resolve>) -> Resolver {
        Resolver(Some(resolve))
    }

    /// The addresses `host` has now, each with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match &self.0 {
            Some(custom) => custom.lookup(host, port).await,
            None => Ok(tokio::net::lookup_host((host, port)).await?.collect()),
        }
    }
}

impl PartialEq for Resolver {
    fn eq(&self, other: &Resolver) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Resolver {}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "custom" } else { "system" })
    }
}

/// A `tls_ca` file, read and parsed at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFile {
    /// The file, resolved against the configuration file's directory.
    pub file: PathBuf,
    /// Its certificates (at least one), the roots a backend's chain must
    /// lead to.
    pub certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl BackendConfig {
    /// A backend at `addr` with every setting at its built-in default.
    ///
    /// The one place the built-in backend defaults are applied: a
    /// configured `[[backend]]` starts from here before `[defaults]` and its
    /// own settings are merged in, and so do cluster peers and the `--demo`
    /// origin.
    pub fn with_defaults(name: &str, addr: SocketAddr) -> BackendConfig {
        BackendConfig {
            name: name.to_string(),
            address: addr.to_string(),
            addr: BackendAddr::literal(addr),
            resolve_interval: defaults::RESOLVE_INTERVAL,
            proxy_protocol: 0,
            resolver: Resolver::default(),
            connect_timeout: defaults::CONNECT_TIMEOUT,
            first_byte_timeout: defaults::FIRST_BYTE_TIMEOUT,
            between_bytes_timeout: defaults::BETWEEN_BYTES_TIMEOUT,
            pipe_timeout: defaults::PIPE_TIMEOUT,
            http_resp_hdr_len: defaults::HTTP_RESP_HDR_LEN as usize,
            http_resp_size: defaults::HTTP_RESP_SIZE as usize,
            backend_idle_timeout: defaults::BACKEND_IDLE_TIMEOUT,
            weight: defaults::WEIGHT,
            max_connections: defaults::MAX_CONNECTIONS,
            queue_length: defaults::QUEUE_LENGTH,
            queue_timeout: defaults::QUEUE_TIMEOUT,
            consecutive_failures: defaults::CONSECUTIVE_FAILURES,
            ejection_time: defaults::EJECTION_TIME,
            tls: defaults::BACKEND_TLS,
            tls_server_name: None,
            tls_ca: None,
            tls_verify: defaults::BACKEND_TLS_VERIFY,
            host_header: None,
            probe: None,
        }
    }

    /// The TLS server name: `tls_server_name`, else the host part of
    /// `address` (without the brackets of an IPv6 literal).
    pub fn tls_name(&self) -> &str {
        if let Some(name) = &self.tls_server_name {
            return name;
        }
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// A backend's health probe (`[backend.probe]` over `[defaults.probe]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The raw HTTP/1.1 request sent (built from `url`, or `request` as written).
    pub request: String,
    /// Time between probes.
    pub interval: Duration,
    /// A probe not answered within this failed.
    pub timeout: Duration,
    /// How many recent probes count (1..=64).
    pub window: u32,
    /// Healthy when at least this many of the window succeeded.
    pub threshold: u32,
    /// Successes assumed at start.
    pub initial: u32,
    /// The status a good probe answers with.
    pub expected_status: u16,
}

/// `[retry]`.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Full-jitter backoff: the sleep before retry n is random in
    /// `[0, min(backoff_max, backoff_base × 2^n)]`.
    pub backoff_base: Duration,
    /// The cap of that sleep.
    pub backoff_max: Duration,
    /// Retries may add at most this percentage to recent first attempts.
    pub budget_percent: u32,
    /// The longest a client waits for a fetch, every attempt and backoff
    /// together; `None` (the default, or `"0s"`): no bound but each
    /// attempt's own timeouts.
    pub deadline: Option<Duration>,
    /// Which failures may be retried.
    pub retry_on: RetryOn,
}

/// The parsed `retry_on` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `"connect"`: refused, failed or timed-out connects (never sent).
    pub connect: bool,
    /// `"first_byte_timeout"`.
    pub first_byte_timeout: bool,
    /// `"invalid_response"`: the backend closed or sent something not HTTP.
    pub invalid_response: bool,
    /// Response statuses, e.g. 502, 503, 504.
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// The tokens `retry_on` accepts besides status codes.
    pub const WORDS: [&'static str; 3] = ["connect", "first_byte_timeout", "invalid_response"];
}

/// How a pool chooses among its healthy backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Each backend in turn.
    RoundRobin,
    /// At random, in proportion to `weight`.
    Random,
    /// Consistent hashing of the cache key: each object has a home backend.
    Hash,
    /// The first healthy backend in the pool's order.
    Fallback,
    /// The fewest in-flight requests; ties broken at random.
    LeastBusy,
}

impl Policy {
    /// The names `[[pool]] policy` accepts.
    pub const NAMES: [&'static str; 5] =
        ["round_robin", "random", "hash", "fallback", "least_busy"];

    fn from_name(name: &str) -> Option<Policy> {
        Some(match name {
            "round_robin" => Policy::RoundRobin,
            "random" => Policy::Random,
            "hash" => Policy::Hash,
            "fallback" => Policy::Fallback,
            "least_busy" => Policy::LeastBusy,
            _ => return None,
        })
    }
}

/// One `[[pool]]`.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Its name, as routes refer to it.
    pub name: String,
    /// How it picks a backend.
    pub policy: Policy,
    /// Indices into [`Config::backends`].
    pub backends: Vec<usize>,
    /// The largest share of its members, in percent (0..=100), that passive
    /// ejection may take out at once; never the last usable one.
    pub max_ejection_percent: u32,
}

/// One `[[route]]`.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Exact Host match, lower-cased, port removed.
    pub host: Option<String>,
    /// Path prefix match.
    pub path_prefix: Option<String>,
    /// Method match (any of these); `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// Index into [`Config::pools`].
    pub pool: usize,
    /// Queue order at a busy backend: 9 first, 0 last (default 5).
    pub priority: u8,
    /// Overrides the backends' `first_byte_timeout` for this route.
    pub first_byte_timeout: Option<Duration>,
    /// Never look up or store in the cache.
    pub pass: bool,
    /// Overrides the freshness lifetime of stored responses.
    pub ttl: Option<Duration>,
    /// How long a stale object may still be served (for the cache side).
    pub grace: Option<Duration>,
}

impl RouteConfig {
    /// A route matching everything, sending it to pool `pool`.
    pub fn catch_all(pool: usize) -> RouteConfig {
        RouteConfig {
            host: None,
            path_prefix: None,
            methods: None,
            pool,
            priority: defaults::ROUTE_PRIORITY,
            first_byte_timeout: None,
            pass: false,
            ttl: None,
            grace: None,
        }
    }

    fn is_catch_all(&self) -> bool {
        self.host.is_none() && self.path_prefix.is_none() && self.methods.is_none()
    }
}

/// One `[[rule]]`: what it matches (every key given must match) and what
/// it does. Everything is checked and compiled when the file loads.
#[derive(Clone, Debug, Default)]
pub struct RuleConfig {
    /// `host`: exact or `*.example.com`.
    pub host: Option<crate::pattern::HostPattern>,
    /// `path_prefix`.
    pub path_prefix: Option<String>,
    /// `path_regex`, on the path without the query.
    pub path_regex: Option<regex::Regex>,
    /// `methods`; `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// `cookies = "strip"`: no `Cookie` to the backend, no `Set-Cookie` back.
    pub strip_cookies: bool,
    /// `cookies_keep`: the request cookies that stay (all others go).
    pub cookies_keep: Option<Vec<crate::pattern::Glob>>,
    /// `query_drop`: parameters removed from the URL.
    pub query_drop: Vec<crate::pattern::Glob>,
    /// `query_sort`: the remaining parameters sorted by name.
    pub query_sort: bool,
    /// `key_headers`: request headers whose values join the cache key.
    pub key_headers: Vec<HeaderName>,
    /// `key_cookies`: cookies whose values join the cache key.
    pub key_cookies: Vec<String>,
    /// `request_headers`: changes to the request the backend gets.
    pub request_headers: HeaderEdits,
    /// `response_headers`: changes to the response the client gets.
    pub response_headers: HeaderEdits,
    /// `redirect` or `respond`: the answer that ends the request.
    pub answer: Option<RuleAnswer>,
    /// `pass`.
    pub pass: Option<bool>,
    /// `ttl`.
    pub ttl: Option<Duration>,
    /// `grace`.
    pub grace: Option<Duration>,
    /// `keep`.
    pub keep: Option<Duration>,
    /// `esi`: parse ESI in the responses to matching requests.
    pub esi: bool,
}

impl RuleConfig {
    /// Whether the rule adds anything to the cache key.
    pub fn keys(&self) -> bool {
        !self.key_headers.is_empty() || !self.key_cookies.is_empty()
    }
}

/// `request_headers` or `response_headers` of a `[[rule]]`: `remove` is
/// applied before `set`, and `set` replaces every value of its header.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    /// `set`: these headers with these values.
    pub set: Vec<(HeaderName, http::HeaderValue)>,
    /// `remove`: these headers, every value.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// The answer of a `[[rule]]` that ends the request.
#[derive(Clone, Debug)]
pub enum RuleAnswer {
    /// `redirect`: 301, 302, 303, 307 or 308 to `location`.
    Redirect {
        /// The status.
        status: http::StatusCode,
        /// `location`, split at its placeholders.
        location: Vec<LocationPart>,
    },
    /// `respond`: a fixed answer.
    Respond {
        /// The status, 200 to 599.
        status: http::StatusCode,
        /// `content_type`.
        content_type: http::HeaderValue,
        /// `body`.
        body: bytes::Bytes,
    },
}

/// A piece of a `redirect` `location`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationPart {
    /// Written as is.
    Text(String),
    /// `{host}`: the request's host, lower-case, without its port.
    Host,
    /// `{path}`: the request's path.
    Path,
    /// `{query}`: `?` and the query, or nothing when it has none.
    Query,
}

// === impl Config ===

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if it had been read from `path` (tests use this).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let locator = Locator::new(path, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| locator.toml_error(&e))?;
        build::build(path, raw, &locator)
    }

    /// Replaces every backend with one at `addr` (the `--demo` origin); pools
    /// and routes collapse to the implicit `default` pool.
    pub fn with_single_backend(mut self, name: &str, addr: SocketAddr) -> Config {
        let mut backend = self
            .backends
            .first()
            .cloned()
            .unwrap_or_else(|| BackendConfig::with_defaults(name, addr));
        // The demo origin has no health URL of the configured app.
        backend.probe = None;
        backend.name = name.to_string();
        backend.address = addr.to_string();
        backend.addr = BackendAddr::literal(addr);
        self.backends = vec![backend];
        self.pools = vec![PoolConfig {
            name: defaults::POOL_NAME.to_string(),
            policy: Policy::RoundRobin,
            backends: vec![0],
            max_ejection_percent: defaults::MAX_EJECTION_PERCENT,
        }];
        self.routes = vec![RouteConfig::catch_all(0)];
        self
    }
}

#[cfg(test)]
mod tests;
