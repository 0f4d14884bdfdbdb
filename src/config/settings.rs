//! The per-backend settings, listed once.
//!
//! `[defaults]` sets them for every backend and each `[[backend]]` may
//! override them; both tables accept exactly these keys. The list used to be
//! written out for the `[defaults]` struct, again for the `[[backend]]`
//! struct, for the copy between them and for the merge. Now
//! [`backend_settings!`] holds it, and every one of those is expanded from it:
//!
//! - `file.rs` expands it into the fields of `RawBackendSettings` and
//!   `RawBackend` (in this order, which is also the order serde lists the
//!   keys in when it refuses an unknown one);
//! - `build/backend.rs` expands it into the merge: the backend's own value,
//!   else the `[defaults]` one, else the built-in default of
//!   [`BackendConfig::with_defaults`](super::BackendConfig::with_defaults),
//!   checked as the list says and checked in this order.
//!
//! Why a macro and not one struct `#[serde(flatten)]`-ed into both: serde
//! does not support `flatten` together with `deny_unknown_fields`, and a
//! flattened struct is deserialized from a buffered copy of the table, where
//! `toml::Spanned` loses its position. A typo would then no longer be refused
//! with its line, nor a bad value reported at its line.
//!
//! Each entry is `key: raw type => check;`, where the check is one of
//! `positive_duration`, `duration` (zero allowed), `positive_size`,
//! `int_in(range, what)`, `flag` (a boolean), `server_name` (a TLS server
//! name), `ca_file` (a PEM file of roots, read at load), `host_header` (a
//! header value) and `probe` (merged key by key, see `build/probe.rs`; it
//! comes after `host_header`, which its `Host` uses).
//! A `[[route]]` overrides only `first_byte_timeout`, per request, so it has
//! its own key rather than this list.

/// Calls `$then! { $($args)* <the list> }`, so each user of the list gets it
/// as macro input after its own arguments.
macro_rules! backend_settings {
    ($then:ident! { $($args:tt)* }) => {
        $then! {
            $($args)*
            connect_timeout: Spanned<ConfigDuration> => positive_duration;
            first_byte_timeout: Spanned<ConfigDuration> => positive_duration;
            between_bytes_timeout: Spanned<ConfigDuration> => positive_duration;
            pipe_timeout: Spanned<ConfigDuration> => positive_duration;
            http_resp_hdr_len: Spanned<ByteSize> => positive_size;
            http_resp_size: Spanned<ByteSize> => positive_size;
            backend_idle_timeout: ConfigDuration => duration;
            max_connections: Spanned<i64> =>
                int_in(0..=1_000_000, "a number of connections (0: unlimited)");
            consecutive_failures: Spanned<i64> =>
                int_in(0..=1_000_000, "a number of failures (0: no ejection)");
            ejection_time: Spanned<ConfigDuration> => positive_duration;
            queue_length: Spanned<i64> => int_in(0..=1_000_000, "a queue length (0: no queue)");
            queue_timeout: Spanned<ConfigDuration> => positive_duration;
            tls: Spanned<bool> => flag;
            tls_server_name: Spanned<String> => server_name;
            tls_ca: Spanned<String> => ca_file;
            tls_verify: Spanned<bool> => flag;
            host_header: Spanned<String> => host_header;
            resolve_interval: ConfigDuration => duration;
            proxy_protocol: Spanned<i64> => int_in(1..=2, "a PROXY protocol version");
            probe: RawProbe => probe;
        }
    };
}

pub(super) use backend_settings;
