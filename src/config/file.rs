//! Serde structs that mirror the TOML file exactly. Unknown keys are errors
//! (`deny_unknown_fields`); values that need checking after parsing keep
//! their position (`Spanned`) so the error can name the line.
//!
//! Nothing outside `config/` sees these types: `config::Config` is the
//! validated form.

use serde::Deserialize;
use toml::Spanned;

use super::units::{ByteSize, ConfigDuration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) defaults: RawBackendSettings,
    #[serde(default)]
    pub(super) backend: Vec<RawBackend>,
    #[serde(default)]
    pub(super) pool: Vec<RawPool>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) rate_limit: Vec<RawRateLimit>,
    pub(super) cluster: Option<RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) access: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) key: Spanned<String>,
    pub(super) rate: Spanned<String>,
    pub(super) burst: Option<Spanned<i64>>,
    pub(super) path_prefix: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    /// A string or an array of strings; checked in `config::build`.
    pub(super) listen: Option<Spanned<toml::Value>>,
    pub(super) timeout_idle: Option<ConfigDuration>,
    pub(super) header_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) http_req_hdr_len: Option<Spanned<ByteSize>>,
    pub(super) http_req_size: Option<Spanned<ByteSize>>,
    pub(super) http_max_hdr: Option<Spanned<i64>>,
    pub(super) retry_after: Option<Spanned<ConfigDuration>>,
    pub(super) drain_timeout: Option<ConfigDuration>,
    /// Path of an HTML template for synthetic pages; read at load time.
    pub(super) synthetic_template: Option<Spanned<String>>,
    pub(super) debug_headers: Option<bool>,
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) maintenance_file: Option<String>,
    pub(super) send_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_request_body: Option<Spanned<ByteSize>>,
    pub(super) workers: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) capacity: Option<Spanned<ByteSize>>,
    pub(super) default_ttl: Option<ConfigDuration>,
    pub(super) max_object_size: Option<ByteSize>,
    pub(super) store_errors: Option<bool>,
    pub(super) default_grace: Option<ConfigDuration>,
    pub(super) default_keep: Option<ConfigDuration>,
    pub(super) hit_for_miss: Option<ConfigDuration>,
    pub(super) heuristic_max: Option<ConfigDuration>,
    pub(super) strip_targeted: Option<bool>,
    pub(super) purge_allow: Option<Vec<Spanned<String>>>,
    pub(super) tag_header: Option<Spanned<String>>,
    /// `[cache.l2]`: the shared second tier on Redis/Valkey.
    pub(super) l2: Option<RawL2>,
}

/// The settings `[defaults]` sets for every backend and each `[[backend]]`
/// may override. Listed twice (here and in `RawBackend`) because serde's
/// `flatten` cannot be combined with `deny_unknown_fields`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendSettings {
    pub(super) connect_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) first_byte_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) between_bytes_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) http_resp_hdr_len: Option<Spanned<ByteSize>>,
    pub(super) http_resp_size: Option<Spanned<ByteSize>>,
    pub(super) backend_idle_timeout: Option<ConfigDuration>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) consecutive_failures: Option<Spanned<i64>>,
    pub(super) ejection_time: Option<Spanned<ConfigDuration>>,
    pub(super) queue_length: Option<Spanned<i64>>,
    pub(super) queue_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) probe: Option<RawProbe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) name: Option<Spanned<String>>,
    pub(super) address: Spanned<String>,
    pub(super) connect_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) first_byte_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) between_bytes_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) http_resp_hdr_len: Option<Spanned<ByteSize>>,
    pub(super) http_resp_size: Option<Spanned<ByteSize>>,
    pub(super) backend_idle_timeout: Option<ConfigDuration>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) consecutive_failures: Option<Spanned<i64>>,
    pub(super) ejection_time: Option<Spanned<ConfigDuration>>,
    pub(super) queue_length: Option<Spanned<i64>>,
    pub(super) queue_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) probe: Option<RawProbe>,
    pub(super) weight: Option<Spanned<i64>>,
}

impl RawBackend {
    /// This backend's own settings, in the shape of `[defaults]`.
    pub(super) fn settings(&self) -> RawBackendSettings {
        RawBackendSettings {
            connect_timeout: self.connect_timeout.clone(),
            first_byte_timeout: self.first_byte_timeout.clone(),
            between_bytes_timeout: self.between_bytes_timeout.clone(),
            http_resp_hdr_len: self.http_resp_hdr_len.clone(),
            http_resp_size: self.http_resp_size.clone(),
            backend_idle_timeout: self.backend_idle_timeout,
            max_connections: self.max_connections.clone(),
            consecutive_failures: self.consecutive_failures.clone(),
            ejection_time: self.ejection_time.clone(),
            queue_length: self.queue_length.clone(),
            queue_timeout: self.queue_timeout.clone(),
            probe: self.probe.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: Spanned<String>,
    pub(super) policy: Option<Spanned<String>>,
    pub(super) backends: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) host: Option<Spanned<String>>,
    pub(super) path_prefix: Option<Spanned<String>>,
    pub(super) pool: Option<Spanned<String>>,
    pub(super) methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) priority: Option<Spanned<i64>>,
    pub(super) first_byte_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) pass: Option<bool>,
    pub(super) ttl: Option<ConfigDuration>,
    pub(super) grace: Option<ConfigDuration>,
}

/// `[defaults.probe]` or `[backend.probe]`: a Varnish-style health probe.
/// A backend's own probe table overrides `[defaults.probe]` key by key.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub(super) url: Option<Spanned<String>>,
    pub(super) request: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<ConfigDuration>>,
    pub(super) timeout: Option<Spanned<ConfigDuration>>,
    pub(super) window: Option<Spanned<i64>>,
    pub(super) threshold: Option<Spanned<i64>>,
    pub(super) initial: Option<Spanned<i64>>,
    pub(super) expected_status: Option<Spanned<i64>>,
}

/// `[retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_retries: Option<Spanned<i64>>,
    pub(super) backoff_base: Option<Spanned<ConfigDuration>>,
    pub(super) backoff_max: Option<Spanned<ConfigDuration>>,
    pub(super) budget_percent: Option<Spanned<i64>>,
    pub(super) retry_on: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[cache.l2]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawL2 {
    pub(super) url: Spanned<String>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<ConfigDuration>>,
    pub(super) max_object_size: Option<Spanned<ByteSize>>,
}

/// `[cluster]`: consistent-hash peering.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) peers: Spanned<Vec<Spanned<String>>>,
    #[serde(rename = "self")]
    pub(super) self_: Spanned<String>,
}
