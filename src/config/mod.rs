//! The validated configuration: what `shellac --check` checks and what
//! `shellac::run` runs on.
//!
//! Loading goes in two steps, as in sozu and pingora: the TOML is parsed into
//! the raw structs of `file.rs` (unknown keys refused), then [`Config`] is
//! built from them, resolving names, filling defaults from `defaults.rs` and
//! checking ranges and cross-references. Every error names the file, the
//! line and the key.

pub mod defaults;
mod error;
mod file;
pub mod units;

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::Method;
use ipnet::IpNet;
use toml::Spanned;

pub use defaults::CONFIG_PATH;
pub use error::ConfigError;
pub use units::{parse_duration, parse_size};

use error::Locator;
use file::{RawBackendSettings, RawConfig, RawProbe};
use units::ConfigDuration;

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
    /// Addresses to accept clients on.
    pub listen: Vec<SocketAddr>,
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
    /// Peers whose `X-Forwarded-For` is believed (rate limits, purge ACL, logs).
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

/// `[cache]`.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Memory bound of the cache in bytes (bodies plus headers).
    pub capacity: u64,
    /// Freshness lifetime of responses that give none.
    pub default_ttl: Duration,
    /// Larger responses stream through and are not stored.
    pub max_object_size: u64,
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
    /// Client addresses allowed to send `PURGE`; empty means PURGE is off (405).
    pub purge_allow: Vec<IpNet>,
    /// The response header whose space-separated values tag an object for bans.
    pub tag_header: HeaderName,
    /// `[cache.l2]`: the shared second tier, when configured.
    pub l2: Option<L2Config>,
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
    /// `host:port` as written.
    pub address: String,
    /// The address it resolved to when the configuration was loaded.
    pub addr: SocketAddr,
    /// TCP connect must finish within this.
    pub connect_timeout: Duration,
    /// From the request sent to the response head received.
    pub first_byte_timeout: Duration,
    /// The longest pause between two pieces of the response body.
    pub between_bytes_timeout: Duration,
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
    /// The active health probe, if any (none: always healthy).
    pub probe: Option<ProbeConfig>,
}

impl BackendConfig {
    /// A backend at `addr` with every setting at its built-in default.
    pub fn with_defaults(name: &str, addr: SocketAddr) -> BackendConfig {
        BackendConfig {
            name: name.to_string(),
            address: addr.to_string(),
            addr,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            first_byte_timeout: defaults::FIRST_BYTE_TIMEOUT,
            between_bytes_timeout: defaults::BETWEEN_BYTES_TIMEOUT,
            http_resp_hdr_len: defaults::HTTP_RESP_HDR_LEN as usize,
            http_resp_size: defaults::HTTP_RESP_SIZE as usize,
            backend_idle_timeout: defaults::BACKEND_IDLE_TIMEOUT,
            weight: defaults::WEIGHT,
            max_connections: defaults::MAX_CONNECTIONS,
            queue_length: defaults::QUEUE_LENGTH,
            queue_timeout: defaults::QUEUE_TIMEOUT,
            consecutive_failures: defaults::CONSECUTIVE_FAILURES,
            ejection_time: defaults::EJECTION_TIME,
            probe: None,
        }
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
        build(path, raw, &locator)
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
        backend.addr = addr;
        self.backends = vec![backend];
        self.pools = vec![PoolConfig {
            name: defaults::POOL_NAME.to_string(),
            policy: Policy::RoundRobin,
            backends: vec![0],
        }];
        self.routes = vec![RouteConfig::catch_all(0)];
        self
    }
}

fn span<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    Some(value.span())
}

fn build(path: &Path, raw: RawConfig, loc: &Locator<'_>) -> Result<Config, ConfigError> {
    let server = build_server(path, &raw, loc)?;
    let cache = build_cache(&raw, loc)?;
    let backends = build_backends(&raw, loc)?;
    let pools = build_pools(&raw, &backends, loc)?;
    let routes = build_routes(&raw, &pools, loc)?;
    let retry = build_retry(&raw, loc)?;
    let admin = build_admin(&raw, loc)?;
    let log = build_log(&raw, loc)?;
    let rate_limits = build_rate_limits(&raw, loc)?;
    let cluster = match &raw.cluster {
        None => None,
        Some(c) => Some(build_cluster(c, loc)?),
    };
    Ok(Config {
        file: path.to_path_buf(),
        server,
        cache,
        backends,
        pools,
        routes,
        retry,
        admin,
        log,
        rate_limits,
        cluster,
    })
}

fn build_cluster(raw: &file::RawCluster, loc: &Locator<'_>) -> Result<ClusterConfig, ConfigError> {
    if raw.peers.get_ref().is_empty() {
        return Err(loc.error(
            span(&raw.peers),
            "expected at least one peer \"host:port\" (this node included)",
        ));
    }
    let mut peers: Vec<BackendConfig> = Vec::new();
    for peer in raw.peers.get_ref() {
        let text = peer.get_ref().trim();
        let addr = resolve(text).map_err(|m| loc.error(span(peer), m))?[0];
        let name = format!("peer:{text}");
        if peers.iter().any(|p| p.name == name) {
            return Err(loc.error(
                span(peer),
                format!("expected each peer once, \"{text}\" is listed twice"),
            ));
        }
        let mut backend = BackendConfig::with_defaults(&name, addr);
        backend.address = text.to_string();
        backend.connect_timeout = defaults::PEER_CONNECT_TIMEOUT;
        backend.consecutive_failures = defaults::PEER_CONSECUTIVE_FAILURES;
        peers.push(backend);
    }
    let me = raw.self_.get_ref().trim();
    let self_index = peers.iter().position(|p| p.address == me).ok_or_else(|| {
        loc.error(
            span(&raw.self_),
            format!("expected one of the peers, spelled the same, found \"{me}\""),
        )
    })?;
    Ok(ClusterConfig { peers, self_index })
}

fn resolve(text: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("expected host:port, found \"{text}\" ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("\"{text}\" resolved to no address"));
    }
    Ok(addrs)
}

fn build_server(
    path: &Path,
    raw: &RawConfig,
    loc: &Locator<'_>,
) -> Result<ServerConfig, ConfigError> {
    let s = &raw.server;
    let listen_texts: Vec<String> = match &s.listen {
        None => vec![defaults::LISTEN.to_string()],
        Some(value) => {
            let expected =
                "expected an address string such as \"127.0.0.1:6081\" or an array of them";
            match value.get_ref() {
                toml::Value::String(one) => vec![one.clone()],
                toml::Value::Array(many) if !many.is_empty() => many
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| loc.error(span(value), expected))?,
                _ => return Err(loc.error(span(value), expected)),
            }
        }
    };
    let mut listen = Vec::new();
    for text in &listen_texts {
        let addrs = resolve(text).map_err(|m| {
            loc.error_at_key(s.listen.as_ref().map(|v| v.span()), "server.listen", m)
        })?;
        listen.push(addrs[0]);
    }

    let http_req_hdr_len = positive_size(&s.http_req_hdr_len, defaults::HTTP_REQ_HDR_LEN, loc)?;
    let http_req_size = positive_size(&s.http_req_size, defaults::HTTP_REQ_SIZE, loc)?;
    let http_max_hdr = int_in(
        s.http_max_hdr.as_ref(),
        defaults::HTTP_MAX_HDR as i64,
        1..=10_000,
        "a number of header fields",
        loc,
    )? as usize;
    let synthetic_template = match &s.synthetic_template {
        None => defaults::SYNTHETIC_TEMPLATE.map(Arc::from),
        Some(file) => {
            // A relative path is relative to the configuration file.
            let name = Path::new(file.get_ref());
            let full = match path.parent() {
                Some(dir) if name.is_relative() => dir.join(name),
                _ => name.to_path_buf(),
            };
            let text = std::fs::read_to_string(&full).map_err(|e| {
                loc.error(
                    span(file),
                    format!(
                        "expected a readable UTF-8 HTML file, cannot read \"{}\": {e}",
                        full.display()
                    ),
                )
            })?;
            Some(Arc::from(text))
        }
    };
    Ok(ServerConfig {
        listen,
        timeout_idle: s.timeout_idle.map_or(defaults::TIMEOUT_IDLE, |d| d.0),
        header_timeout: positive_duration(&s.header_timeout, defaults::HEADER_TIMEOUT, loc)?,
        http_req_hdr_len,
        http_req_size,
        http_max_hdr,
        retry_after: positive_duration(&s.retry_after, defaults::RETRY_AFTER, loc)?,
        drain_timeout: s.drain_timeout.map_or(defaults::DRAIN_TIMEOUT, |d| d.0),
        synthetic_template,
        debug_headers: s.debug_headers.unwrap_or(defaults::DEBUG_HEADERS),
        trusted_proxies: cidrs(s.trusted_proxies.as_deref(), "server.trusted_proxies", loc)?,
        maintenance_file: s.maintenance_file.as_ref().map(PathBuf::from),
        send_timeout: positive_duration(&s.send_timeout, defaults::SEND_TIMEOUT, loc)?,
        max_connections: match &s.max_connections {
            None => defaults::CLIENT_MAX_CONNECTIONS,
            Some(n) if (0..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                return Err(loc.error(
                    span(n),
                    format!(
                        "expected a number of connections from 0 (no cap) to 1000000, found {}",
                        n.get_ref()
                    ),
                ))
            }
        },
        max_request_body: positive_size(&s.max_request_body, defaults::MAX_REQUEST_BODY, loc)?
            as u64,
        workers: int_in(
            s.workers.as_ref(),
            defaults::WORKERS as i64,
            0..=1024,
            "a number of worker threads (0: one per CPU)",
            loc,
        )? as usize,
    })
}

/// Parses a list of CIDRs (`"10.0.0.0/8"`) or single addresses (`"127.0.0.1"`).
fn cidrs(
    values: Option<&[Spanned<String>]>,
    key: &str,
    loc: &Locator<'_>,
) -> Result<Vec<IpNet>, ConfigError> {
    let mut nets = Vec::new();
    for value in values.unwrap_or(&[]) {
        let text = value.get_ref().trim();
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                loc.error_at_key(
                    Some(value.span()),
                    key,
                    format!(
                        "expected a CIDR such as \"10.0.0.0/8\" or an address, found \"{text}\""
                    ),
                )
            })?;
        nets.push(net);
    }
    Ok(nets)
}

fn build_admin(raw: &RawConfig, loc: &Locator<'_>) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(listen) = &raw.admin.listen else {
        if let Some(token) = &raw.admin.token {
            return Err(loc.error(
                span(token),
                "a token without [admin] listen: the admin listener is off",
            ));
        }
        return Ok(None);
    };
    let addr = resolve(listen.get_ref()).map_err(|m| loc.error(span(listen), m))?[0];
    let token = match &raw.admin.token {
        Some(t) if t.get_ref().trim().is_empty() => {
            return Err(loc.error(span(t), "expected a non-empty token"));
        }
        Some(t) => Some(t.get_ref().clone()),
        None => None,
    };
    Ok(Some(AdminConfig {
        listen: addr,
        token,
    }))
}

fn build_log(raw: &RawConfig, loc: &Locator<'_>) -> Result<LogConfig, ConfigError> {
    let access = match raw.log.access.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("off") => AccessLog::Off,
        Some("stdout") => AccessLog::Stdout,
        Some("") => {
            return Err(loc.error(
                raw.log.access.as_ref().and_then(span),
                "expected \"stdout\", \"off\" or a file path",
            ))
        }
        Some(path) => AccessLog::File(PathBuf::from(path)),
    };
    let format = match raw.log.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("combined") => LogFormat::Combined,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(loc.error(
                raw.log.format.as_ref().and_then(span),
                format!("expected \"combined\" or \"json\", found \"{other}\""),
            ))
        }
    };
    Ok(LogConfig { access, format })
}

fn build_rate_limits(
    raw: &RawConfig,
    loc: &Locator<'_>,
) -> Result<Vec<RateLimitConfig>, ConfigError> {
    let mut limits = Vec::new();
    for r in &raw.rate_limit {
        let key_text = r.key.get_ref().trim();
        let key = if key_text == "client_ip" {
            RateKey::ClientIp
        } else if let Some(name) = key_text.strip_prefix("header:") {
            RateKey::Header(HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                loc.error(
                    span(&r.key),
                    format!("expected a header name after \"header:\", found \"{name}\""),
                )
            })?)
        } else {
            return Err(loc.error(
                span(&r.key),
                format!("expected \"client_ip\" or \"header:Name\", found \"{key_text}\""),
            ));
        };
        let rate_text = r.rate.get_ref().trim();
        let bad_rate = || {
            loc.error(span(&r.rate), format!("expected a rate such as \"100/s\", \"600/m\" or \"1000/h\", found \"{rate_text}\""))
        };
        let (count, unit) = rate_text.split_once('/').ok_or_else(bad_rate)?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(bad_rate)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad_rate()),
        };
        let burst = match &r.burst {
            None => count,
            Some(b) if (1..=i64::from(u32::MAX)).contains(b.get_ref()) => *b.get_ref() as u32,
            Some(b) => return Err(loc.error(span(b), "expected a burst of at least 1")),
        };
        let path_prefix = r.path_prefix.as_ref().map(|p| p.get_ref().clone());
        limits.push(RateLimitConfig {
            key,
            count,
            per,
            burst,
            path_prefix,
        });
    }
    Ok(limits)
}

fn build_cache(raw: &RawConfig, loc: &Locator<'_>) -> Result<CacheConfig, ConfigError> {
    let c = &raw.cache;
    Ok(CacheConfig {
        capacity: positive_size(&c.capacity, defaults::CACHE_CAPACITY, loc)? as u64,
        default_ttl: c.default_ttl.map_or(defaults::DEFAULT_TTL, |d| d.0),
        max_object_size: c.max_object_size.map_or(defaults::MAX_OBJECT_SIZE, |s| s.0),
        store_errors: c.store_errors.unwrap_or(defaults::STORE_ERRORS),
        default_grace: c.default_grace.map_or(defaults::DEFAULT_GRACE, |d| d.0),
        default_keep: c.default_keep.map_or(defaults::DEFAULT_KEEP, |d| d.0),
        hit_for_miss: c.hit_for_miss.map_or(defaults::HIT_FOR_MISS, |d| d.0),
        heuristic_max: c.heuristic_max.map_or(defaults::HEURISTIC_MAX, |d| d.0),
        strip_targeted: c.strip_targeted.unwrap_or(defaults::STRIP_TARGETED),
        purge_allow: cidrs(c.purge_allow.as_deref(), "cache.purge_allow", loc)?,
        tag_header: match &c.tag_header {
            None => HeaderName::from_static(defaults::TAG_HEADER),
            Some(name) => {
                HeaderName::from_bytes(name.get_ref().trim().as_bytes()).map_err(|_| {
                    loc.error(
                        span(name),
                        format!("expected a header name, found \"{}\"", name.get_ref()),
                    )
                })?
            }
        },
        l2: match &c.l2 {
            None => None,
            Some(raw) => Some(build_l2(raw, loc)?),
        },
    })
}

/// `[cache.l2]`: the URL's scheme picks standalone or cluster; TLS
/// (`rediss://`) is not built in.
fn build_l2(raw: &file::RawL2, loc: &Locator<'_>) -> Result<L2Config, ConfigError> {
    let text = raw.url.get_ref().trim();
    let expected = "expected \"redis://host:port\" or \"redis+cluster://host:port,host:port\"";
    let check = |url: &str| -> Result<(), ConfigError> {
        match redis::Client::open(url) {
            Ok(_) if url.starts_with("redis://") => Ok(()),
            _ => Err(loc.error(span(&raw.url), format!("{expected}, found \"{text}\""))),
        }
    };
    let endpoint = if let Some(seeds) = text.strip_prefix("redis+cluster://") {
        let seeds: Vec<String> = seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| format!("redis://{s}"))
            .collect();
        if seeds.is_empty() {
            return Err(loc.error(
                span(&raw.url),
                format!("{expected}: a cluster URL needs at least one seed node"),
            ));
        }
        for seed in &seeds {
            check(seed)?;
        }
        L2Endpoint::Cluster(seeds)
    } else if text.starts_with("rediss://") {
        return Err(loc.error(
            span(&raw.url),
            format!("{expected}: TLS (rediss://) is not supported; use a local TLS tunnel"),
        ));
    } else {
        check(text)?;
        L2Endpoint::Standalone(text.to_string())
    };
    let prefix = match &raw.prefix {
        None => defaults::L2_PREFIX.to_string(),
        Some(p)
            if p.get_ref().is_empty()
                || p.get_ref()
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace()) =>
        {
            return Err(loc.error(
                span(p),
                format!(
                    "expected a non-empty prefix without spaces or control characters, found {:?}",
                    p.get_ref()
                ),
            ))
        }
        Some(p) => p.get_ref().clone(),
    };
    Ok(L2Config {
        url: text.to_string(),
        endpoint,
        prefix,
        timeout: positive_duration(&raw.timeout, defaults::L2_TIMEOUT, loc)?,
        max_object_size: positive_size(&raw.max_object_size, defaults::L2_MAX_OBJECT_SIZE, loc)?
            as u64,
    })
}

fn positive_duration(
    value: &Option<Spanned<ConfigDuration>>,
    default: Duration,
    loc: &Locator<'_>,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.get_ref().0.is_zero() => Err(loc.error(
            span(v),
            "expected a duration greater than zero, found \"0s\"",
        )),
        Some(v) => Ok(v.get_ref().0),
    }
}

fn positive_size(
    value: &Option<Spanned<units::ByteSize>>,
    default: u64,
    loc: &Locator<'_>,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default as usize),
        Some(v) if v.get_ref().0 == 0 => {
            Err(loc.error(span(v), "expected a size greater than zero, found 0"))
        }
        Some(v) => usize::try_from(v.get_ref().0)
            .map_err(|_| loc.error(span(v), "the size is larger than this machine can address")),
    }
}

/// The backend's own value when set, else the `[defaults]` one.
fn either<'a, T>(own: &'a Option<T>, dflt: &'a Option<T>) -> Option<&'a T> {
    own.as_ref().or(dflt.as_ref())
}

/// An integer setting within `range`, or `default` when absent.
fn int_in(
    value: Option<&Spanned<i64>>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
    loc: &Locator<'_>,
) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(loc.error(
            span(v),
            format!(
                "expected {what} from {} to {}, found {}",
                range.start(),
                range.end(),
                v.get_ref()
            ),
        )),
    }
}

/// A probe table: `own` overrides `dflt` key by key.
fn build_probe(
    dflt: Option<&RawProbe>,
    own: Option<&RawProbe>,
    address: &str,
    loc: &Locator<'_>,
) -> Result<Option<ProbeConfig>, ConfigError> {
    let empty = RawProbe::default();
    let (d, o) = match (dflt, own) {
        (None, None) => return Ok(None),
        (d, o) => (d.unwrap_or(&empty), o.unwrap_or(&empty)),
    };
    for table in [d, o] {
        if let (Some(_), Some(request)) = (&table.url, &table.request) {
            return Err(loc.error(
                span(request),
                "expected either `url` or `request` in a probe, found both",
            ));
        }
    }
    // `url` and `request` are one choice: the backend's own wins as a whole.
    let (url, request) = if o.url.is_some() || o.request.is_some() {
        (&o.url, &o.request)
    } else {
        (&d.url, &d.request)
    };
    let request = match (url, request) {
        (_, Some(r)) => {
            let text = r.get_ref();
            let line_ok = text.split_once(' ').is_some_and(|(method, _)| {
                !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase())
            });
            if !line_ok || !text.ends_with("\r\n\r\n") {
                return Err(loc.error(
                    span(r),
                    "expected a whole HTTP/1.1 request such as \"GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\" (ending with an empty line)",
                ));
            }
            text.clone()
        }
        (Some(u), None) => {
            let text = u.get_ref();
            if !text.starts_with('/') || text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(loc.error(
                    span(u),
                    format!("expected a path starting with \"/\" without spaces or control characters, found {text:?}"),
                ));
            }
            probe_request(text, address)
        }
        (None, None) => probe_request(defaults::PROBE_URL, address),
    };
    let pick_d = |own: &Option<Spanned<ConfigDuration>>,
                  dflt: &Option<Spanned<ConfigDuration>>,
                  builtin: Duration| {
        positive_duration(if own.is_some() { own } else { dflt }, builtin, loc)
    };
    let window = int_in(
        either(&o.window, &d.window),
        i64::from(defaults::PROBE_WINDOW),
        1..=i64::from(defaults::PROBE_WINDOW_MAX),
        "a probe window",
        loc,
    )?;
    let threshold = int_in(
        either(&o.threshold, &d.threshold),
        i64::from(defaults::PROBE_THRESHOLD).min(window),
        1..=window,
        "a threshold (at most the window)",
        loc,
    )?;
    let initial = int_in(
        either(&o.initial, &d.initial),
        threshold - 1,
        0..=window,
        "a number of initial successes (at most the window)",
        loc,
    )?;
    let expected_status = int_in(
        either(&o.expected_status, &d.expected_status),
        i64::from(defaults::PROBE_EXPECTED_STATUS),
        100..=599,
        "an HTTP status",
        loc,
    )?;
    Ok(Some(ProbeConfig {
        request,
        interval: pick_d(&o.interval, &d.interval, defaults::PROBE_INTERVAL)?,
        timeout: pick_d(&o.timeout, &d.timeout, defaults::PROBE_TIMEOUT)?,
        // The ranges above make these conversions lossless.
        window: window as u32,
        threshold: threshold as u32,
        initial: initial as u32,
        expected_status: expected_status as u16,
    }))
}

/// The probe request for `url`, as Varnish builds it: HTTP/1.1, the
/// backend's address as `Host`, and `Connection: close`.
fn probe_request(url: &str, address: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: shellac-probe\r\n\r\n")
}

/// `[defaults]` overlaid with one backend's own settings.
fn backend_settings(
    defaults_raw: &RawBackendSettings,
    own: &RawBackendSettings,
    address: &str,
    loc: &Locator<'_>,
) -> Result<BackendSettings, ConfigError> {
    // A backend's own value wins over `[defaults]`, which wins over the built-in default.
    let pick_d = |own: &Option<Spanned<ConfigDuration>>,
                  dflt: &Option<Spanned<ConfigDuration>>,
                  builtin: Duration| {
        positive_duration(if own.is_some() { own } else { dflt }, builtin, loc)
    };
    let pick_s = |own: &Option<Spanned<units::ByteSize>>,
                  dflt: &Option<Spanned<units::ByteSize>>,
                  builtin: u64| {
        positive_size(if own.is_some() { own } else { dflt }, builtin, loc)
    };
    Ok(BackendSettings {
        connect_timeout: pick_d(
            &own.connect_timeout,
            &defaults_raw.connect_timeout,
            defaults::CONNECT_TIMEOUT,
        )?,
        first_byte_timeout: pick_d(
            &own.first_byte_timeout,
            &defaults_raw.first_byte_timeout,
            defaults::FIRST_BYTE_TIMEOUT,
        )?,
        between_bytes_timeout: pick_d(
            &own.between_bytes_timeout,
            &defaults_raw.between_bytes_timeout,
            defaults::BETWEEN_BYTES_TIMEOUT,
        )?,
        http_resp_hdr_len: pick_s(
            &own.http_resp_hdr_len,
            &defaults_raw.http_resp_hdr_len,
            defaults::HTTP_RESP_HDR_LEN,
        )?,
        http_resp_size: pick_s(
            &own.http_resp_size,
            &defaults_raw.http_resp_size,
            defaults::HTTP_RESP_SIZE,
        )?,
        backend_idle_timeout: own
            .backend_idle_timeout
            .or(defaults_raw.backend_idle_timeout)
            .map_or(defaults::BACKEND_IDLE_TIMEOUT, |d| d.0),
        max_connections: int_in(
            either(&own.max_connections, &defaults_raw.max_connections),
            defaults::MAX_CONNECTIONS as i64,
            0..=1_000_000,
            "a number of connections (0: unlimited)",
            loc,
        )? as usize,
        queue_length: int_in(
            either(&own.queue_length, &defaults_raw.queue_length),
            defaults::QUEUE_LENGTH as i64,
            0..=1_000_000,
            "a queue length (0: no queue)",
            loc,
        )? as usize,
        queue_timeout: pick_d(
            &own.queue_timeout,
            &defaults_raw.queue_timeout,
            defaults::QUEUE_TIMEOUT,
        )?,
        consecutive_failures: int_in(
            either(
                &own.consecutive_failures,
                &defaults_raw.consecutive_failures,
            ),
            i64::from(defaults::CONSECUTIVE_FAILURES),
            0..=1_000_000,
            "a number of failures (0: no ejection)",
            loc,
        )? as u32,
        ejection_time: pick_d(
            &own.ejection_time,
            &defaults_raw.ejection_time,
            defaults::EJECTION_TIME,
        )?,
        probe: build_probe(
            defaults_raw.probe.as_ref(),
            own.probe.as_ref(),
            address,
            loc,
        )?,
    })
}

struct BackendSettings {
    max_connections: usize,
    queue_length: usize,
    queue_timeout: Duration,
    consecutive_failures: u32,
    ejection_time: Duration,
    probe: Option<ProbeConfig>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    between_bytes_timeout: Duration,
    http_resp_hdr_len: usize,
    http_resp_size: usize,
    backend_idle_timeout: Duration,
}

fn build_backends(raw: &RawConfig, loc: &Locator<'_>) -> Result<Vec<BackendConfig>, ConfigError> {
    if raw.backend.is_empty() {
        return Err(loc.error_at_key(
            None,
            "backend",
            "expected at least one [[backend]] with an address, found none",
        ));
    }
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(raw.backend.len());
    for (i, b) in raw.backend.iter().enumerate() {
        let name = match &b.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(loc.error(span(n), "expected a non-empty backend name"))
            }
            Some(n) => n.get_ref().clone(),
            None => format!("backend{i}"),
        };
        if backends.iter().any(|other| other.name == name) {
            let at = b.name.as_ref().map(|n| n.span()).or(Some(b.address.span()));
            return Err(loc.error_at_key(
                at,
                &format!("backend[{i}].name"),
                format!("expected a unique backend name, \"{name}\" is used twice"),
            ));
        }
        let address = b.address.get_ref().clone();
        let addr = resolve(&address)
            .map_err(|m| loc.error(span(&b.address), m))?
            .remove(0);
        let s = backend_settings(&raw.defaults, &b.settings(), &address, loc)?;
        let weight = int_in(
            b.weight.as_ref(),
            i64::from(defaults::WEIGHT),
            1..=i64::from(defaults::WEIGHT_MAX),
            "a weight",
            loc,
        )? as u32;
        backends.push(BackendConfig {
            name,
            address,
            addr,
            connect_timeout: s.connect_timeout,
            first_byte_timeout: s.first_byte_timeout,
            between_bytes_timeout: s.between_bytes_timeout,
            http_resp_hdr_len: s.http_resp_hdr_len,
            http_resp_size: s.http_resp_size,
            backend_idle_timeout: s.backend_idle_timeout,
            weight,
            max_connections: s.max_connections,
            queue_length: s.queue_length,
            queue_timeout: s.queue_timeout,
            consecutive_failures: s.consecutive_failures,
            ejection_time: s.ejection_time,
            probe: s.probe,
        });
    }
    // `[defaults]` is checked even when every backend overrides it, so a typo
    // there never waits for the day a new backend relies on it.
    backend_settings(
        &raw.defaults,
        &RawBackendSettings::default(),
        "localhost",
        loc,
    )?;
    Ok(backends)
}

fn build_pools(
    raw: &RawConfig,
    backends: &[BackendConfig],
    loc: &Locator<'_>,
) -> Result<Vec<PoolConfig>, ConfigError> {
    if raw.pool.is_empty() {
        return Ok(vec![PoolConfig {
            name: defaults::POOL_NAME.to_string(),
            policy: Policy::RoundRobin,
            backends: (0..backends.len()).collect(),
        }]);
    }
    let mut pools: Vec<PoolConfig> = Vec::with_capacity(raw.pool.len());
    for p in &raw.pool {
        let name = p.name.get_ref().clone();
        if pools.iter().any(|other| other.name == name) {
            return Err(loc.error(
                span(&p.name),
                format!("expected a unique pool name, \"{name}\" is used twice"),
            ));
        }
        let policy = match p.policy.as_ref() {
            None => Policy::RoundRobin,
            Some(name) => Policy::from_name(name.get_ref()).ok_or_else(|| {
                loc.error(
                    span(name),
                    format!(
                        "expected a policy from: {}; found \"{}\"",
                        Policy::NAMES.join(", "),
                        name.get_ref()
                    ),
                )
            })?,
        };
        if p.backends.get_ref().is_empty() {
            return Err(loc.error(span(&p.backends), "expected at least one backend name"));
        }
        let mut members = Vec::new();
        for member in p.backends.get_ref() {
            let index = backends
                .iter()
                .position(|b| &b.name == member.get_ref())
                .ok_or_else(|| {
                    let known: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                    loc.error(
                        span(member),
                        format!(
                            "expected the name of a [[backend]] ({}), found \"{}\"",
                            known.join(", "),
                            member.get_ref()
                        ),
                    )
                })?;
            members.push(index);
        }
        pools.push(PoolConfig {
            name,
            policy,
            backends: members,
        });
    }
    Ok(pools)
}

fn build_routes(
    raw: &RawConfig,
    pools: &[PoolConfig],
    loc: &Locator<'_>,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let find_pool = |name: &str, at: Option<Range<usize>>, key: &str| {
        pools.iter().position(|p| p.name == name).ok_or_else(|| {
            let known: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            loc.error_at_key(
                at,
                key,
                format!(
                    "expected the name of a [[pool]] ({}), found \"{name}\"",
                    known.join(", ")
                ),
            )
        })
    };
    let mut routes = Vec::with_capacity(raw.route.len() + 1);
    for (i, r) in raw.route.iter().enumerate() {
        let pool_name = r
            .pool
            .as_ref()
            .map_or(defaults::POOL_NAME, |p| p.get_ref().as_str());
        let at = r.pool.as_ref().map(|p| p.span());
        let pool = find_pool(pool_name, at, &format!("route[{i}].pool"))?;
        let host = match &r.host {
            Some(h) if h.get_ref().trim().is_empty() => {
                return Err(loc.error(span(h), "expected a host name, found an empty string"))
            }
            Some(h) => Some(crate::host::normalize(h.get_ref())),
            None => None,
        };
        let path_prefix = match &r.path_prefix {
            Some(p) if !p.get_ref().starts_with('/') => {
                return Err(loc.error(
                    span(p),
                    format!(
                        "expected a path starting with \"/\", found \"{}\"",
                        p.get_ref()
                    ),
                ))
            }
            Some(p) => Some(p.get_ref().clone()),
            None => None,
        };
        let methods = match &r.methods {
            None => None,
            Some(list) if list.get_ref().is_empty() => {
                return Err(loc.error(
                    span(list),
                    "expected at least one method, e.g. [\"GET\", \"HEAD\"]",
                ))
            }
            Some(list) => {
                let mut methods = Vec::new();
                for m in list.get_ref() {
                    let text = m.get_ref();
                    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase());
                    let method = Method::from_bytes(text.as_bytes())
                        .ok()
                        .filter(|_| valid)
                        .ok_or_else(|| {
                            loc.error(
                                span(m),
                                format!("expected an upper-case HTTP method such as \"GET\", found {text:?}"),
                            )
                        })?;
                    methods.push(method);
                }
                Some(methods)
            }
        };
        let priority = int_in(
            r.priority.as_ref(),
            i64::from(defaults::ROUTE_PRIORITY),
            0..=i64::from(defaults::ROUTE_PRIORITY_MAX),
            "a priority",
            loc,
        )? as u8;
        let first_byte_timeout = match &r.first_byte_timeout {
            None => None,
            Some(_) => Some(positive_duration(
                &r.first_byte_timeout,
                defaults::FIRST_BYTE_TIMEOUT,
                loc,
            )?),
        };
        routes.push(RouteConfig {
            host,
            path_prefix,
            methods,
            pool,
            priority,
            first_byte_timeout,
            pass: r.pass.unwrap_or(false),
            ttl: r.ttl.map(|d| d.0),
            grace: r.grace.map(|d| d.0),
        });
    }
    // Most specific first: a host match beats none, then the longer prefix.
    // The sort is stable, so equally specific routes keep the file's order.
    routes.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.host.is_some()),
            std::cmp::Reverse(r.path_prefix.as_ref().map_or(0, |p| p.len())),
            std::cmp::Reverse(r.methods.is_some()),
        )
    });
    if !routes.iter().any(RouteConfig::is_catch_all) {
        // The catch-all: everything no route claims goes to pool "default",
        // when there is one; otherwise unmatched requests get a 503.
        if let Some(pool) = pools.iter().position(|p| p.name == defaults::POOL_NAME) {
            routes.push(RouteConfig::catch_all(pool));
        } else if raw.route.is_empty() {
            return Err(loc.error_at_key(
                raw.pool.first().map(|p| p.name.span()),
                "pool",
                "expected a [[pool]] named \"default\" (requests go there when no [[route]] is configured)",
            ));
        }
    }
    Ok(routes)
}

fn build_retry(raw: &RawConfig, loc: &Locator<'_>) -> Result<RetryConfig, ConfigError> {
    let r = &raw.retry;
    let max_retries = int_in(
        r.max_retries.as_ref(),
        i64::from(defaults::MAX_RETRIES),
        0..=100,
        "a number of retries",
        loc,
    )? as u32;
    let backoff_base = positive_duration(&r.backoff_base, defaults::BACKOFF_BASE, loc)?;
    let backoff_max = positive_duration(&r.backoff_max, defaults::BACKOFF_MAX, loc)?;
    if backoff_max < backoff_base {
        let at = r
            .backoff_max
            .as_ref()
            .or(r.backoff_base.as_ref())
            .map(|v| v.span());
        return Err(loc.error_at_key(
            at,
            "retry.backoff_max",
            format!("expected backoff_max ({backoff_max:?}) to be at least backoff_base ({backoff_base:?})"),
        ));
    }
    let budget_percent = int_in(
        r.budget_percent.as_ref(),
        i64::from(defaults::BUDGET_PERCENT),
        0..=100,
        "a percentage",
        loc,
    )? as u32;
    let mut retry_on = RetryOn::default();
    let words: Vec<String> = match &r.retry_on {
        None => defaults::RETRY_ON.iter().map(|w| w.to_string()).collect(),
        Some(list) => list.get_ref().iter().map(|w| w.get_ref().clone()).collect(),
    };
    for (i, word) in words.iter().enumerate() {
        match word.as_str() {
            "connect" => retry_on.connect = true,
            "first_byte_timeout" => retry_on.first_byte_timeout = true,
            "invalid_response" => retry_on.invalid_response = true,
            status => match status.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => retry_on.statuses.push(code),
                _ => {
                    let at = r
                        .retry_on
                        .as_ref()
                        .and_then(|list| list.get_ref().get(i))
                        .map(|w| w.span());
                    return Err(loc.error_at_key(
                        at,
                        "retry.retry_on",
                        format!(
                            "expected {} or a status from 400 to 599, found {status:?}",
                            RetryOn::WORDS.join(", ")
                        ),
                    ));
                }
            },
        }
    }
    Ok(RetryConfig {
        max_retries,
        backoff_base,
        backoff_max,
        budget_percent,
        retry_on,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn minimal_file_gets_varnish_defaults() {
        let c = parse("[[backend]]\naddress = \"127.0.0.1:8080\"\n").expect("valid");
        assert_eq!(c.server.listen, vec!["127.0.0.1:6081".parse().unwrap()]);
        assert_eq!(c.backends[0].name, "backend0");
        assert_eq!(c.backends[0].connect_timeout, Duration::from_millis(3500));
        assert_eq!(c.backends[0].first_byte_timeout, Duration::from_secs(60));
        assert_eq!(c.cache.default_ttl, Duration::from_secs(120));
        assert_eq!(c.server.http_req_hdr_len, 8192);
        assert_eq!(c.pools[0].name, "default");
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn workers_default_to_one_per_cpu_and_are_bounded() {
        let backend = "[[backend]]\naddress = \"127.0.0.1:1\"\n";
        assert_eq!(parse(backend).expect("valid").server.workers, 0);
        let two = parse(&format!("[server]\nworkers = 2\n{backend}")).expect("valid");
        assert_eq!(two.server.workers, 2);
        let err = parse(&format!("[server]\nworkers = -1\n{backend}")).unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
        assert_eq!(err.key(), Some("server.workers"), "{err}");
        assert!(err.to_string().contains("worker threads"), "{err}");
    }

    #[test]
    fn backend_overrides_defaults() {
        let c = parse(
            "[defaults]\nfirst_byte_timeout = \"5s\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n[[backend]]\naddress = \"127.0.0.1:2\"\nfirst_byte_timeout = \"250ms\"\n",
        )
        .expect("valid");
        assert_eq!(c.backends[0].first_byte_timeout, Duration::from_secs(5));
        assert_eq!(c.backends[1].first_byte_timeout, Duration::from_millis(250));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n[[backend]]\naddress = \"127.0.0.1:1\"\n")
            .unwrap_err();
        assert_eq!(err.line(), Some(3), "{err}");
        assert_eq!(err.key(), Some("server.lisen"), "{err}");
        assert!(err.to_string().contains("test.toml:3"), "{err}");
    }

    #[test]
    fn bad_duration_names_key_and_expectation() {
        let err = parse("[[backend]]\naddress = \"127.0.0.1:1\"\nconnect_timeout = \"soon\"\n")
            .unwrap_err();
        assert_eq!(err.line(), Some(3), "{err}");
        assert_eq!(err.key(), Some("backend[0].connect_timeout"), "{err}");
        assert!(err.to_string().contains("expected a duration"), "{err}");
    }

    #[test]
    fn pool_with_unknown_backend_is_refused() {
        let err = parse("[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[pool]]\nname = \"default\"\nbackends = [\"b\"]\n")
            .unwrap_err();
        assert_eq!(err.line(), Some(6), "{err}");
        assert!(err.to_string().contains("\"b\""), "{err}");
    }

    #[test]
    fn routes_sorted_most_specific_first() {
        let c = parse(
            "[[backend]]\nname=\"a\"\naddress = \"127.0.0.1:1\"\n[[pool]]\nname=\"default\"\nbackends=[\"a\"]\n[[pool]]\nname=\"slow\"\nbackends=[\"a\"]\n[[route]]\npath_prefix=\"/\"\npool=\"default\"\n[[route]]\nhost=\"API.example.com:8080\"\npath_prefix=\"/slow\"\npool=\"slow\"\n",
        )
        .expect("valid");
        assert_eq!(c.routes[0].host.as_deref(), Some("api.example.com"));
        assert_eq!(c.routes[0].pool, 1);
        assert_eq!(c.routes.last().map(|r| r.pool), Some(0));
    }

    #[test]
    fn hardening_limits_have_defaults_and_are_checked() {
        let c = parse("[[backend]]\naddress = \"127.0.0.1:1\"\n").expect("valid");
        assert_eq!(c.server.send_timeout, Duration::from_secs(600));
        assert_eq!(c.server.max_connections, 0);
        assert_eq!(c.server.max_request_body, 100 * 1024 * 1024);
        let err =
            parse("[server]\nsend_timeout = \"0s\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n")
                .unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
        assert_eq!(err.key(), Some("server.send_timeout"), "{err}");
        let err = parse("[server]\nmax_connections = -1\n[[backend]]\naddress = \"127.0.0.1:1\"\n")
            .unwrap_err();
        assert_eq!(err.key(), Some("server.max_connections"), "{err}");
        let err =
            parse("[server]\nmax_request_body = \"0B\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n")
                .unwrap_err();
        assert_eq!(err.key(), Some("server.max_request_body"), "{err}");
    }

    #[test]
    fn missing_backend_is_an_error() {
        let err = parse("[server]\n").unwrap_err();
        assert!(err.to_string().contains("[[backend]]"), "{err}");
    }

    const TWO: &str = "[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n";

    #[test]
    fn backend_resilience_defaults_are_varnish_like() {
        let c = parse(TWO).expect("valid");
        let b = &c.backends[0];
        assert_eq!(b.weight, 1);
        assert_eq!(b.max_connections, 0);
        assert_eq!(b.queue_length, 100);
        assert_eq!(b.queue_timeout, Duration::from_secs(5));
        assert_eq!(b.consecutive_failures, 5);
        assert_eq!(b.ejection_time, Duration::from_secs(10));
        assert_eq!(b.probe, None);
        assert_eq!(c.retry.max_retries, 4);
        assert_eq!(c.retry.backoff_base, Duration::from_millis(50));
        assert_eq!(c.retry.backoff_max, Duration::from_secs(2));
        assert_eq!(c.retry.budget_percent, 20);
        assert!(c.retry.retry_on.connect && c.retry.retry_on.first_byte_timeout);
        assert_eq!(c.retry.retry_on.statuses, vec![503, 502, 504]);
        assert!(!c.server.debug_headers);
        assert!(c.server.synthetic_template.is_none());
    }

    #[test]
    fn probe_defaults_merge_with_backend_probe() {
        let text = format!(
            "[defaults.probe]\nurl = \"/health\"\ninterval = \"1s\"\nwindow = 5\n{TWO}[backend.probe]\nthreshold = 4\n"
        );
        let c = parse(&text).expect("valid");
        let a = c.backends[0]
            .probe
            .as_ref()
            .expect("a has the default probe");
        assert_eq!(a.interval, Duration::from_secs(1));
        assert_eq!((a.window, a.threshold, a.initial), (5, 3, 2));
        assert_eq!(a.timeout, Duration::from_secs(2));
        assert_eq!(a.expected_status, 200);
        assert!(a
            .request
            .starts_with("GET /health HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        let b = c.backends[1].probe.as_ref().expect("b has its own probe");
        assert_eq!((b.window, b.threshold, b.initial), (5, 4, 3));
    }

    #[test]
    fn probe_errors_name_line_and_key() {
        let text = format!("{TWO}[backend.probe]\nwindow = 4\nthreshold = 5\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line(), Some(9), "{err}");
        assert_eq!(err.key(), Some("backend[1].probe.threshold"), "{err}");
        let text = format!("{TWO}[backend.probe]\nurl = \"/a b\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("backend[1].probe.url"), "{err}");
        let text = format!("{TWO}[backend.probe]\nrequest = \"GET / HTTP/1.1\"\n");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("empty line"), "{err}");
        let text = format!("[defaults.probe]\nwindow = 0\n{TWO}");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("defaults.probe.window"), "{err}");
    }

    #[test]
    fn pools_routes_and_retry_keys() {
        let text = format!(
            "{TWO}weight = 3\nmax_connections = 2\nqueue_length = 0\n[[pool]]\nname = \"default\"\npolicy = \"hash\"\nbackends = [\"a\", \"b\"]\n[[route]]\npath_prefix = \"/x\"\nmethods = [\"POST\"]\npriority = 9\nfirst_byte_timeout = \"90s\"\npass = true\nttl = \"1h\"\ngrace = \"10s\"\n[retry]\nmax_retries = 2\nretry_on = [\"connect\", \"429\"]\n"
        );
        let c = parse(&text).expect("valid");
        assert_eq!(c.backends[1].weight, 3);
        assert_eq!(c.backends[1].max_connections, 2);
        assert_eq!(c.backends[1].queue_length, 0);
        assert_eq!(c.pools[0].policy, Policy::Hash);
        let r = &c.routes[0];
        assert_eq!(r.methods.as_deref(), Some(&[Method::POST][..]));
        assert_eq!(r.priority, 9);
        assert_eq!(r.first_byte_timeout, Some(Duration::from_secs(90)));
        assert!(r.pass);
        assert_eq!(r.ttl, Some(Duration::from_secs(3600)));
        assert_eq!(r.grace, Some(Duration::from_secs(10)));
        assert_eq!(c.routes[1].priority, 5, "the implicit catch-all");
        assert_eq!(c.retry.max_retries, 2);
        assert_eq!(c.retry.retry_on.statuses, vec![429]);
        assert!(!c.retry.retry_on.first_byte_timeout);
    }

    #[test]
    fn bad_policy_priority_and_retry_on_are_refused() {
        let err = parse(&format!(
            "{TWO}[[pool]]\nname = \"default\"\npolicy = \"fastest\"\nbackends = [\"a\"]\n"
        ))
        .unwrap_err();
        assert_eq!(err.key(), Some("pool[0].policy"), "{err}");
        assert!(err.to_string().contains("least_busy"), "{err}");
        let err = parse(&format!("{TWO}[[route]]\npriority = 10\n")).unwrap_err();
        assert_eq!(err.key(), Some("route[0].priority"), "{err}");
        let err = parse(&format!(
            "{TWO}[retry]\nretry_on = [\"connect\", \"often\"]\n"
        ))
        .unwrap_err();
        assert_eq!(err.key(), Some("retry.retry_on"), "{err}");
        assert_eq!(err.line(), Some(8), "{err}");
        let err = parse(&format!(
            "{TWO}[retry]\nbackoff_base = \"1s\"\nbackoff_max = \"10ms\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.key(), Some("retry.backoff_max"), "{err}");
        let err = parse(&format!("{TWO}weight = 0\n")).unwrap_err();
        assert_eq!(err.key(), Some("backend[1].weight"), "{err}");
        let err = parse(&format!("{TWO}[[route]]\nmethods = [\"get\"]\n")).unwrap_err();
        assert_eq!(err.key(), Some("route[0].methods"), "{err}");
    }

    #[test]
    fn synthetic_template_is_read_at_load_and_must_exist() {
        let dir = std::env::temp_dir().join(format!("shellac-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("page.html"), "<p>{{status}} {{reason}}</p>").expect("write");
        let text =
            format!("[server]\nsynthetic_template = \"page.html\"\ndebug_headers = true\n{TWO}");
        let c = Config::parse(&dir.join("shellac.toml"), &text).expect("valid");
        assert_eq!(
            c.server.synthetic_template.as_deref(),
            Some("<p>{{status}} {{reason}}</p>")
        );
        assert!(c.server.debug_headers);
        let text = format!("[server]\nsynthetic_template = \"missing.html\"\n{TWO}");
        let err = Config::parse(&dir.join("shellac.toml"), &text).unwrap_err();
        assert_eq!(err.key(), Some("server.synthetic_template"), "{err}");
        assert_eq!(err.line(), Some(2), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn l2_defaults_and_cluster_seeds() {
        let c = parse(&format!(
            "[cache.l2]\nurl = \"redis://127.0.0.1:6379\"\n{TWO}"
        ))
        .expect("valid");
        let l2 = c.cache.l2.expect("l2 on");
        assert_eq!(
            l2.endpoint,
            L2Endpoint::Standalone("redis://127.0.0.1:6379".into())
        );
        assert_eq!(l2.prefix, "shellac:");
        assert_eq!(l2.timeout, Duration::from_millis(50));
        assert_eq!(l2.max_object_size, 1024 * 1024);
        let c = parse(&format!(
            "[cache.l2]\nurl = \"redis+cluster://10.0.0.1:7000, 10.0.0.2:7000\"\nprefix = \"edge:\"\ntimeout = \"20ms\"\nmax_object_size = \"256KiB\"\n{TWO}"
        ))
        .expect("valid");
        let l2 = c.cache.l2.expect("l2 on");
        assert_eq!(
            l2.endpoint,
            L2Endpoint::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ])
        );
        assert_eq!(
            (l2.prefix.as_str(), l2.timeout, l2.max_object_size),
            ("edge:", Duration::from_millis(20), 256 * 1024)
        );
        assert!(parse(TWO).expect("valid").cache.l2.is_none());
    }

    #[test]
    fn cluster_peers_and_self() {
        let c = parse(&format!(
            "[cluster]\npeers = [\"127.0.0.1:6081\", \"127.0.0.1:6082\"]\nself = \"127.0.0.1:6082\"\n{TWO}"
        ))
        .expect("valid");
        let cluster = c.cluster.expect("cluster on");
        assert_eq!(cluster.self_index, 1);
        assert_eq!(cluster.peers[0].name, "peer:127.0.0.1:6081");
        let err = parse(&format!(
            "[cluster]\npeers = [\"127.0.0.1:6081\"]\nself = \"127.0.0.1:9\"\n{TWO}"
        ))
        .unwrap_err();
        assert_eq!(
            (err.line(), err.key()),
            (Some(3), Some("cluster.self")),
            "{err}"
        );
        let err = parse(&format!("[cluster]\npeers = []\nself = \"x\"\n{TWO}")).unwrap_err();
        assert_eq!(err.key(), Some("cluster.peers"), "{err}");
    }

    #[test]
    fn l2_errors_name_line_and_key() {
        let err = parse(&format!("[cache.l2]\nurl = \"http://x:1\"\n{TWO}")).unwrap_err();
        assert_eq!(
            (err.line(), err.key()),
            (Some(2), Some("cache.l2.url")),
            "{err}"
        );
        assert!(err.to_string().contains("redis+cluster://"), "{err}");
        let err = parse(&format!("[cache.l2]\nurl = \"rediss://x:1\"\n{TWO}")).unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        let err = parse(&format!("[cache.l2]\nurl = \"redis+cluster://\"\n{TWO}")).unwrap_err();
        assert_eq!(err.key(), Some("cache.l2.url"), "{err}");
        let err = parse(&format!(
            "[cache.l2]\nurl = \"redis://x:1\"\ntimeout = \"0s\"\n{TWO}"
        ))
        .unwrap_err();
        assert_eq!(
            (err.line(), err.key()),
            (Some(3), Some("cache.l2.timeout")),
            "{err}"
        );
        let err = parse(&format!(
            "[cache.l2]\nurl = \"redis://x:1\"\nprefix = \"a b\"\n{TWO}"
        ))
        .unwrap_err();
        assert_eq!(err.key(), Some("cache.l2.prefix"), "{err}");
        let err = parse(&format!(
            "[cache.l2]\nurl = \"redis://x:1\"\nmax_object_size = 0\n{TWO}"
        ))
        .unwrap_err();
        assert_eq!(err.key(), Some("cache.l2.max_object_size"), "{err}");
        let err = parse(&format!(
            "[cache.l2]\nurl = \"redis://x:1\"\nttl = \"1s\"\n{TWO}"
        ))
        .unwrap_err();
        assert_eq!(
            (err.line(), err.key()),
            (Some(3), Some("cache.l2.ttl")),
            "{err}"
        );
        let err = parse(&format!("[cache.l2]\nprefix = \"a:\"\n{TWO}")).unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
    }
}
