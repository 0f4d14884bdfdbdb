//! `[[backend]]` with `[defaults]` applied: each backend's own value wins,
//! then the `[defaults]` one, then the built-in default.
//!
//! The merge is expanded from the one list in `config/settings.rs`, so a new
//! backend setting is added there (and to [`BackendConfig`]) and nowhere
//! else. `[defaults]` is checked even when every backend overrides it, so a
//! typo there never waits for the day a new backend relies on it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::{probe, tls};
use crate::config::check::{
    host_header, int_in, positive_duration, positive_size, resolve, server_name, span,
};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::{RawBackend, RawBackendSettings};
use crate::config::settings::backend_settings;
use crate::config::{BackendAddr, BackendConfig};

/// Every `[[backend]]`, named (`backend<i>` when unnamed), resolved and with
/// `[defaults]` applied; at least one is required.
/// `path` is the configuration file (`tls_ca` is relative to its
/// directory); a `tls_verify = false` backend adds a sentence to `warnings`.
pub(super) fn build(
    path: &Path,
    dflt: &RawBackendSettings,
    raw: &[RawBackend],
    loc: &Locator<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<BackendConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(loc.error_at_key(
            None,
            "backend",
            "expected at least one [[backend]] with an address, found none",
        ));
    }
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(raw.len());
    for (i, b) in raw.iter().enumerate() {
        let backend = backend(path, i, b, dflt, &backends, loc)?;
        if backend.tls && !backend.tls_verify {
            warnings.push(format!(
                "backend {}: tls_verify = false: its certificate is not verified, \
                 anyone on the path can pose as it",
                backend.name
            ));
        }
        backends.push(backend);
    }
    let mut scratch = BackendConfig::with_defaults("defaults", (Ipv4Addr::LOCALHOST, 0).into());
    scratch.address = String::from("localhost");
    merge(path, dflt, None, &mut scratch, loc)?;
    Ok(backends)
}

/// The `i`th `[[backend]]`; `earlier` are the ones before it (names are unique).
fn backend(
    path: &Path,
    i: usize,
    b: &RawBackend,
    dflt: &RawBackendSettings,
    earlier: &[BackendConfig],
    loc: &Locator<'_>,
) -> Result<BackendConfig, ConfigError> {
    let name = match &b.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            return Err(loc.error(span(n), "expected a non-empty backend name"))
        }
        Some(n) => n.get_ref().clone(),
        None => format!("backend{i}"),
    };
    if earlier.iter().any(|other| other.name == name) {
        let at = b.name.as_ref().map(|n| n.span()).or(Some(b.address.span()));
        return Err(loc.error_at_key(
            at,
            &format!("backend[{i}].name"),
            format!("expected a unique backend name, \"{name}\" is used twice"),
        ));
    }
    let address = b.address.get_ref().clone();
    let addr = backend_addr(&address).map_err(|m| loc.error(span(&b.address), m))?;
    let mut backend = BackendConfig::with_defaults(&name, (Ipv4Addr::LOCALHOST, 0).into());
    backend.address = address;
    backend.addr = addr;
    merge(path, dflt, Some(b), &mut backend, loc)?;
    if backend.tls && matches!(backend.addr, BackendAddr::Unix(_)) {
        // A local socket is as private as the file's permissions: TLS
        // would add a handshake and no protection (nginx and Varnish offer
        // none over a Unix socket either).
        return Err(loc.error(
            span(&b.address),
            "expected a host:port address with tls = true: TLS over a unix: socket is not \
             supported (set tls = false for this backend)",
        ));
    }
    if backend.tls && backend.tls_server_name.is_none() {
        // The default name, the host part of `address`, must be one too.
        if let Err(m) = rustls_pki_types::ServerName::try_from(backend.tls_name()) {
            return Err(loc.error(
                span(&b.address),
                format!(
                    "tls = true: the host part of the address, \"{}\", is not a valid TLS \
                     server name ({m}): set tls_server_name",
                    backend.tls_name()
                ),
            ));
        }
    }
    backend.weight = int_in(
        b.weight.as_ref(),
        i64::from(defaults::WEIGHT),
        1..=i64::from(defaults::WEIGHT_MAX),
        "a weight",
        loc,
    )? as u32;
    Ok(backend)
}

/// `unix:/path` or `host:port`, the latter resolved now (so `--check`
/// catches a name that does not resolve); the message is for the caller
/// to locate.
fn backend_addr(text: &str) -> Result<BackendAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(String::from(
                "expected a socket path after \"unix:\", such as \"unix:/run/app/http.sock\", \
                 found \"unix:\"",
            ));
        }
        if !path.starts_with('/') {
            return Err(format!(
                "expected an absolute socket path after \"unix:\", found \"{text}\""
            ));
        }
        return Ok(BackendAddr::Unix(PathBuf::from(path)));
    }
    let resolved = resolve(text)?;
    let (host, port) = text
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("expected host:port, found \"{text}\""))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let literal = host.parse::<IpAddr>().is_ok();
    Ok(BackendAddr::Tcp {
        host,
        port,
        resolved,
        literal,
    })
}

/// The `Host` of a probe without `host_header`: the address as written,
/// or `localhost` for a Unix socket (a path is no host name).
fn probe_host(backend: &BackendConfig) -> &str {
    match &backend.addr {
        BackendAddr::Unix(_) => "localhost",
        BackendAddr::Tcp { .. } => &backend.address,
    }
}

/// One setting: `$own` (the backend's value) over `$dflt` (the `[defaults]`
/// one) over what `$into.$key` holds already (the built-in default), checked
/// as `settings.rs` says.
macro_rules! merge_one {
    (positive_duration, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        $into.$key = positive_duration($own.or($dflt), $into.$key, $loc)?
    };
    (duration, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        $into.$key = $own.or($dflt).map_or($into.$key, |d| d.0)
    };
    (positive_size, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        $into.$key = positive_size($own.or($dflt), $into.$key as u64, $loc)?
    };
    (int_in($range:expr, $what:expr), $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        $into.$key = int_in($own.or($dflt), $into.$key as i64, $range, $what, $loc)? as _
    };
    (flag, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        $into.$key = $own.or($dflt).map_or($into.$key, |v| *v.get_ref())
    };
    (server_name, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        if let Some(v) = $own.or($dflt) {
            $into.$key = Some(server_name(v, $loc)?);
        }
    };
    (ca_file, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        if let Some(v) = $own.or($dflt) {
            $into.$key = Some(tls::ca_file($path, v, $loc)?);
        }
    };
    (host_header, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        if let Some(v) = $own.or($dflt) {
            $into.$key = Some(host_header(v, $loc)?);
        }
    };
    // Key by key, and `url` or `request` as one choice: see `probe.rs`. Its
    // `Host` is `host_header` when set (merged before it), else the address.
    (probe, $into:ident.$key:ident, $dflt:expr, $own:expr, $path:expr, $loc:expr) => {
        $into.$key = probe::build(
            $dflt,
            $own,
            $into
                .host_header
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or(probe_host($into)),
            $loc,
        )?
    };
}

/// Expands the list of `settings.rs` into [`merge`].
macro_rules! merge_settings {
    ($($key:ident: $raw:ty => $check:ident $(($($arg:expr),*))?;)*) => {
        /// Writes `[defaults]` (`dflt`) under one backend's own settings
        /// (`own`; `None` checks `[defaults]` alone) into `into`, which holds
        /// the built-in defaults. The settings are checked in the list's order.
        fn merge(
            path: &Path,
            dflt: &RawBackendSettings,
            own: Option<&RawBackend>,
            into: &mut BackendConfig,
            loc: &Locator<'_>,
        ) -> Result<(), ConfigError> {
            $(merge_one!(
                $check $(($($arg),*))?,
                into.$key,
                dflt.$key.as_ref(),
                own.and_then(|o| o.$key.as_ref()),
                path,
                loc
            );)*
            Ok(())
        }
    };
}

backend_settings!(merge_settings! {});
