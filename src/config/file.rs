//! Serde structs that mirror the TOML file exactly. Unknown keys are errors
//! (`deny_unknown_fields`); values that need checking after parsing keep
//! their position (`Spanned`) so the error can name the line.
//!
//! Nothing outside `config/` sees these types: `config::Config` is the
//! validated form. The keys `[defaults]` and `[[backend]]` share are not
//! written here but expanded from the one list in `settings.rs`.

use serde::Deserialize;
use toml::Spanned;

use super::settings::backend_settings;
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
    pub(super) rule: Vec<RawRule>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) rate_limit: Vec<RawRateLimit>,
    pub(super) cluster: Option<RawCluster>,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) compression: RawCompression,
    #[serde(default)]
    pub(super) esi: RawEsi,
}

/// `[esi]`: Edge Side Includes (Varnish's `max_esi_depth`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEsi {
    pub(super) max_depth: Option<Spanned<i64>>,
    pub(super) types: Option<Vec<Spanned<String>>>,
}

/// `[compression]`: gzip and brotli the Varnish way (`http_gzip_support`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompression {
    pub(super) gzip_support: Option<bool>,
    pub(super) brotli: Option<bool>,
    pub(super) types: Option<Vec<Spanned<String>>>,
    pub(super) min_size: Option<ByteSize>,
    pub(super) gzip_level: Option<Spanned<i64>>,
}

/// `[tls]`: the certificates of the TLS listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) min_version: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) certificate: Vec<RawCertificate>,
}

/// One `[[tls.certificate]]`: PEM files, relative to the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) certificate: Spanned<String>,
    pub(super) private_key: Spanned<String>,
    pub(super) names: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) allowed_hosts: Option<Vec<Spanned<String>>>,
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
    /// A string, or an array of strings and `{ address, tls }` tables;
    /// checked in `config::build::server`.
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
    pub(super) transit_capacity: Option<Spanned<ByteSize>>,
    pub(super) store_errors: Option<bool>,
    pub(super) default_grace: Option<ConfigDuration>,
    pub(super) default_keep: Option<ConfigDuration>,
    pub(super) hit_for_miss: Option<ConfigDuration>,
    pub(super) heuristic_max: Option<ConfigDuration>,
    pub(super) strip_targeted: Option<bool>,
    pub(super) honor_request_cache_control: Option<bool>,
    pub(super) purge_allow: Option<Vec<Spanned<String>>>,
    pub(super) tag_header: Option<Spanned<String>>,
    /// Invalidation protocols besides plain `PURGE`, by name.
    pub(super) invalidation: Option<Vec<Spanned<String>>>,
    /// `[cache.l2]`: the shared second tier on Redis/Valkey.
    pub(super) l2: Option<RawL2>,
}

/// Declares a raw struct whose fields are `$before`, then the per-backend
/// settings of [`backend_settings!`], then `$after` (serde's order, which
/// its "unknown field, expected one of" message follows).
macro_rules! with_backend_settings {
    (
        $(#[$meta:meta])*
        struct $name:ident { $($before:tt)* } then { $($after:tt)* }
        $($key:ident: $raw:ty => $check:ident $(($($arg:expr),*))?;)*
    ) => {
        $(#[$meta])*
        pub(super) struct $name {
            $($before)*
            $(pub(super) $key: Option<$raw>,)*
            $($after)*
        }
    };
}

backend_settings!(with_backend_settings! {
    /// `[defaults]`: the settings every backend gets unless it sets its own.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawBackendSettings {} then {}
});

backend_settings!(with_backend_settings! {
    /// One `[[backend]]`: where it is, its weight, and its own settings,
    /// each overriding the `[defaults]` one.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawBackend {
        pub(super) name: Option<Spanned<String>>,
        pub(super) address: Spanned<String>,
    } then {
        pub(super) weight: Option<Spanned<i64>>,
    }
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: Spanned<String>,
    pub(super) policy: Option<Spanned<String>>,
    pub(super) backends: Spanned<Vec<Spanned<String>>>,
    pub(super) max_ejection_percent: Option<Spanned<i64>>,
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

/// One `[[rule]]`: match keys, then actions (`config::build::rule`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) host: Option<Spanned<String>>,
    pub(super) path_prefix: Option<Spanned<String>>,
    pub(super) path_regex: Option<Spanned<String>>,
    pub(super) methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) cookies: Option<Spanned<String>>,
    pub(super) cookies_keep: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) query_drop: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) query_sort: Option<bool>,
    pub(super) key_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) key_cookies: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) request_headers: Option<Spanned<RawHeaderEdits>>,
    pub(super) response_headers: Option<Spanned<RawHeaderEdits>>,
    pub(super) redirect: Option<Spanned<RawRedirect>>,
    pub(super) respond: Option<Spanned<RawRespond>>,
    pub(super) ttl: Option<ConfigDuration>,
    pub(super) grace: Option<ConfigDuration>,
    pub(super) keep: Option<ConfigDuration>,
    pub(super) pass: Option<bool>,
    pub(super) esi: Option<bool>,
}

/// `request_headers` / `response_headers` of a `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderEdits {
    pub(super) set: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub(super) remove: Option<Vec<Spanned<String>>>,
}

/// `redirect` of a `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    pub(super) status: Option<Spanned<i64>>,
    pub(super) location: Spanned<String>,
}

/// `respond` of a `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRespond {
    pub(super) status: Option<Spanned<i64>>,
    pub(super) content_type: Option<Spanned<String>>,
    pub(super) body: Option<String>,
}

/// `[defaults.probe]` or `[backend.probe]`: a Varnish-style health probe.
/// A backend's own probe table overrides `[defaults.probe]` key by key.
#[derive(Debug, Default, Deserialize)]
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
    pub(super) deadline: Option<Spanned<ConfigDuration>>,
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
