//! Building a generation of the proxy (configuration, cache, backends,
//! pages, limits) and what the rest of the program may read from it: the
//! server, the admin listener and reloads use these accessors, never the
//! fields.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Response, Version};

use super::deliver::close_connection;
use super::fetch::Backends;
use super::{headers, Proxy};
use crate::access_log::AccessLogger;
use crate::body::Body;
use crate::cache::{Cache, ObjectStore};
use crate::config::Config;
use crate::ops::Ops;
use crate::ratelimit::RateLimits;
use crate::reason::Reason;
use crate::synth::{Pages, Synthetic};

impl Proxy {
    /// A proxy for `config` over `store`, with fresh operational state
    /// (tests and benches; `run` uses [`Proxy::build`]).
    pub fn new(config: Arc<Config>, store: Arc<dyn ObjectStore>) -> Proxy {
        let ops = Arc::new(Ops::default());
        let access_log = AccessLogger::start(&config.log, ops.metrics.access_log_dropped.clone())
            .unwrap_or_else(|_| AccessLogger::off());
        Proxy::build(config, Arc::new(Cache::new(store)), ops, access_log, None)
    }

    /// A proxy for `config` sharing `cache` and `ops` with earlier
    /// generations; backends whose settings did not change are taken over
    /// from `previous`, with their connection pools and health history.
    pub fn build(
        config: Arc<Config>,
        cache: Arc<Cache>,
        ops: Arc<Ops>,
        access_log: AccessLogger,
        previous: Option<&Proxy>,
    ) -> Proxy {
        let backends = Arc::new(Backends::build(
            &config,
            previous.map(|p| p.backends.as_ref()),
            &ops.metrics,
        ));
        cache.set_gzip_support(config.compression.gzip_support);
        Proxy {
            pages: Pages::new(&config.server),
            rate_limits: RateLimits::new(&config.rate_limits),
            config,
            cache,
            backends,
            ops,
            access_log,
        }
    }

    /// The configuration this generation runs on.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The backends and pools.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// Operational state shared across reloads.
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    /// The access-log writer.
    pub fn access_log(&self) -> &AccessLogger {
        &self.access_log
    }

    /// The rate limiters (the server trims them now and then).
    pub fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// The cache (for tests and metrics).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// `[server] max_connections` (0: no cap), for the accept loop.
    pub fn max_connections(&self) -> usize {
        self.config.server.max_connections
    }

    /// The answer on a connection accepted over `[server] max_connections`:
    /// the synthetic 503 with `Retry-After`, and the connection closed.
    pub fn over_capacity(&self, version: Version) -> Response<Body> {
        let refusal =
            Synthetic::backend_fetch_failed(Reason::MaxConnections, self.config.server.retry_after);
        let mut response = refusal.render(self.xid());
        response
            .headers_mut()
            .insert(headers::X_CACHE, HeaderValue::from_static("SYNTH"));
        close_connection(response, version)
    }

    pub(super) fn xid(&self) -> u64 {
        self.ops.next_xid()
    }
}
