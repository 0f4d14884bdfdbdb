//! `[server]`: the client side. The listen addresses are resolved and the
//! synthetic-page template is read here, at load time, so that `--check`
//! refuses a file whose listener or template would only fail later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use crate::config::check::{cidrs, int_in, positive_duration, positive_size, resolve, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawServer;
use crate::config::{Listen, ServerConfig};

/// `[server]`, read from the configuration file at `path`.
pub(super) fn build(
    path: &Path,
    s: &RawServer,
    loc: &Locator<'_>,
) -> Result<ServerConfig, ConfigError> {
    let listen = listen(s.listen.as_ref(), loc)?;
    let http_req_hdr_len =
        positive_size(s.http_req_hdr_len.as_ref(), defaults::HTTP_REQ_HDR_LEN, loc)?;
    let http_req_size = positive_size(s.http_req_size.as_ref(), defaults::HTTP_REQ_SIZE, loc)?;
    let http_max_hdr = int_in(
        s.http_max_hdr.as_ref(),
        defaults::HTTP_MAX_HDR as i64,
        1..=10_000,
        "a number of header fields",
        loc,
    )? as usize;
    let synthetic_template = synthetic_template(path, s.synthetic_template.as_ref(), loc)?;
    Ok(ServerConfig {
        listen,
        timeout_idle: s.timeout_idle.map_or(defaults::TIMEOUT_IDLE, |d| d.0),
        header_timeout: positive_duration(
            s.header_timeout.as_ref(),
            defaults::HEADER_TIMEOUT,
            loc,
        )?,
        http_req_hdr_len,
        http_req_size,
        http_max_hdr,
        retry_after: positive_duration(s.retry_after.as_ref(), defaults::RETRY_AFTER, loc)?,
        drain_timeout: s.drain_timeout.map_or(defaults::DRAIN_TIMEOUT, |d| d.0),
        synthetic_template,
        debug_headers: s.debug_headers.unwrap_or(defaults::DEBUG_HEADERS),
        trusted_proxies: cidrs(s.trusted_proxies.as_deref(), "server.trusted_proxies", loc)?,
        maintenance_file: s.maintenance_file.as_ref().map(PathBuf::from),
        send_timeout: positive_duration(s.send_timeout.as_ref(), defaults::SEND_TIMEOUT, loc)?,
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
        max_request_body: positive_size(
            s.max_request_body.as_ref(),
            defaults::MAX_REQUEST_BODY,
            loc,
        )? as u64,
        workers: int_in(
            s.workers.as_ref(),
            defaults::WORKERS as i64,
            0..=1024,
            "a number of worker threads (0: one per CPU)",
            loc,
        )? as usize,
    })
}

/// `listen`: one address string, or an array whose entries are address
/// strings (plain HTTP) or `{ address = "…", tls = true }` tables; each
/// address resolved.
fn listen(
    value: Option<&Spanned<toml::Value>>,
    loc: &Locator<'_>,
) -> Result<Vec<Listen>, ConfigError> {
    let entries: Vec<(String, bool)> = match value {
        None => vec![(defaults::LISTEN.to_string(), false)],
        Some(value) => {
            let expected = "expected an address string such as \"127.0.0.1:6081\", or an array \
                 of them and of tables such as { address = \"127.0.0.1:6443\", tls = true }";
            let fail = |why: &str| {
                loc.error_at_key(
                    Some(value.span()),
                    "server.listen",
                    format!("{expected}{why}"),
                )
            };
            match value.get_ref() {
                toml::Value::String(one) => vec![(one.clone(), false)],
                toml::Value::Array(many) if !many.is_empty() => {
                    let mut entries = Vec::with_capacity(many.len());
                    for entry in many {
                        entries.push(listen_entry(entry).map_err(|why| fail(&why))?);
                    }
                    entries
                }
                _ => return Err(fail("")),
            }
        }
    };
    let mut listen = Vec::new();
    for (text, tls) in &entries {
        let addrs = resolve(text)
            .map_err(|m| loc.error_at_key(value.map(|v| v.span()), "server.listen", m))?;
        listen.push(Listen {
            addr: addrs[0],
            tls: *tls,
        });
    }
    Ok(listen)
}

/// One entry of a `listen` array: the address and whether it is TLS, or
/// what is wrong with it (appended to the key's message).
fn listen_entry(entry: &toml::Value) -> Result<(String, bool), String> {
    match entry {
        toml::Value::String(address) => Ok((address.clone(), false)),
        toml::Value::Table(table) => {
            if let Some(unknown) = table.keys().find(|k| *k != "address" && *k != "tls") {
                return Err(format!(
                    "; unknown key `{unknown}` in a listener table (expected `address`, `tls`)"
                ));
            }
            let address = match table.get("address") {
                Some(toml::Value::String(address)) => address.clone(),
                Some(_) => return Err(String::from("; `address` must be a string")),
                None => return Err(String::from("; a listener table needs `address`")),
            };
            let tls = match table.get("tls") {
                None => false,
                Some(toml::Value::Boolean(tls)) => *tls,
                Some(_) => return Err(String::from("; `tls` must be true or false")),
            };
            Ok((address, tls))
        }
        other => Err(format!(", found a {}", other.type_str())),
    }
}

/// `synthetic_template`: the file's text, read now; a relative path is
/// relative to the configuration file.
fn synthetic_template(
    path: &Path,
    file: Option<&Spanned<String>>,
    loc: &Locator<'_>,
) -> Result<Option<Arc<str>>, ConfigError> {
    let Some(file) = file else {
        return Ok(defaults::SYNTHETIC_TEMPLATE.map(Arc::from));
    };
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
    Ok(Some(Arc::from(text)))
}
