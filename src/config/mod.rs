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
use std::time::Duration;

use toml::Spanned;

pub use defaults::CONFIG_PATH;
pub use error::ConfigError;
pub use units::{parse_duration, parse_size};

use error::Locator;
use file::{RawBackendSettings, RawConfig};
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
    /// A write to a client that makes no progress for this long fails.
    pub send_timeout: Duration,
    /// The most client connections at once; 0 means no cap.
    pub max_connections: usize,
    /// The largest request body forwarded, in bytes; larger ones get 413.
    pub max_request_body: u64,
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
}

/// How a pool chooses among its healthy backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Each backend in turn.
    RoundRobin,
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
    /// Index into [`Config::pools`].
    pub pool: usize,
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
            .unwrap_or_else(|| BackendConfig {
                name: String::new(),
                address: String::new(),
                addr,
                connect_timeout: defaults::CONNECT_TIMEOUT,
                first_byte_timeout: defaults::FIRST_BYTE_TIMEOUT,
                between_bytes_timeout: defaults::BETWEEN_BYTES_TIMEOUT,
                http_resp_hdr_len: defaults::HTTP_RESP_HDR_LEN as usize,
                http_resp_size: defaults::HTTP_RESP_SIZE as usize,
                backend_idle_timeout: defaults::BACKEND_IDLE_TIMEOUT,
            });
        backend.name = name.to_string();
        backend.address = addr.to_string();
        backend.addr = addr;
        self.backends = vec![backend];
        self.pools = vec![PoolConfig {
            name: defaults::POOL_NAME.to_string(),
            policy: Policy::RoundRobin,
            backends: vec![0],
        }];
        self.routes = vec![RouteConfig {
            host: None,
            path_prefix: None,
            pool: 0,
        }];
        self
    }
}

fn span<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    Some(value.span())
}

fn build(path: &Path, raw: RawConfig, loc: &Locator<'_>) -> Result<Config, ConfigError> {
    let server = build_server(&raw, loc)?;
    let cache = build_cache(&raw, loc)?;
    let backends = build_backends(&raw, loc)?;
    let pools = build_pools(&raw, &backends, loc)?;
    let routes = build_routes(&raw, &pools, loc)?;
    Ok(Config {
        file: path.to_path_buf(),
        server,
        cache,
        backends,
        pools,
        routes,
    })
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

fn build_server(raw: &RawConfig, loc: &Locator<'_>) -> Result<ServerConfig, ConfigError> {
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
    let http_max_hdr = match &s.http_max_hdr {
        None => defaults::HTTP_MAX_HDR,
        Some(n) if (1..=10_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return Err(loc.error(
                span(n),
                format!(
                    "expected a number of header fields from 1 to 10000, found {}",
                    n.get_ref()
                ),
            ))
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
        send_timeout: positive_duration(&s.send_timeout, defaults::SEND_TIMEOUT, loc)?,
        max_connections: match &s.max_connections {
            None => defaults::MAX_CONNECTIONS,
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
    })
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

/// `[defaults]` overlaid with one backend's own settings.
fn backend_settings(
    defaults_raw: &RawBackendSettings,
    own: &RawBackendSettings,
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
    })
}

struct BackendSettings {
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
        let s = backend_settings(&raw.defaults, &b.settings(), loc)?;
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
        });
    }
    // `[defaults]` is checked even when every backend overrides it, so a typo
    // there never waits for the day a new backend relies on it.
    backend_settings(&raw.defaults, &RawBackendSettings::default(), loc)?;
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
        let policy = match p.policy.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("round_robin") => Policy::RoundRobin,
            Some(other) => {
                return Err(loc.error(
                    p.policy.as_ref().and_then(span),
                    format!("expected a policy from: round_robin; found \"{other}\""),
                ))
            }
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
            Some(h) => Some(crate::proxy::normalize_host(h.get_ref()).to_string()),
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
        routes.push(RouteConfig {
            host,
            path_prefix,
            pool,
        });
    }
    // Most specific first: a host match beats none, then the longer prefix.
    // The sort is stable, so equally specific routes keep the file's order.
    routes.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.host.is_some()),
            std::cmp::Reverse(r.path_prefix.as_ref().map_or(0, |p| p.len())),
        )
    });
    if !routes
        .iter()
        .any(|r| r.host.is_none() && r.path_prefix.is_none())
    {
        // The catch-all: everything no route claims goes to pool "default",
        // when there is one; otherwise unmatched requests get a 503.
        if let Some(pool) = pools.iter().position(|p| p.name == defaults::POOL_NAME) {
            routes.push(RouteConfig {
                host: None,
                path_prefix: None,
                pool,
            });
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
}
