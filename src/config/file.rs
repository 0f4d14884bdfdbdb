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
    pub(super) send_timeout: Option<Spanned<ConfigDuration>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_request_body: Option<Spanned<ByteSize>>,
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
}
