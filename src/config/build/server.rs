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
use crate::config::{Listen, ListenAddr, ServerConfig};

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
/// strings (plain HTTP) or tables such as `{ address = "…", tls = true }`;
/// each address resolved.
fn listen(
    value: Option<&Spanned<toml::Value>>,
    loc: &Locator<'_>,
) -> Result<Vec<Listen>, ConfigError> {
    let Some(value) = value else {
        let addr =
            resolve(defaults::LISTEN).map_err(|m| loc.error_at_key(None, "server.listen", m))?[0];
        return Ok(vec![Listen::plain(addr)]);
    };
    let fail = |why: String| loc.error_at_key(Some(value.span()), "server.listen", why);
    let entries: Vec<&toml::Value> = match value.get_ref() {
        one @ toml::Value::String(_) => vec![one],
        toml::Value::Array(many) if !many.is_empty() => many.iter().collect(),
        _ => return Err(fail(LISTEN_EXPECTED.to_string())),
    };
    let mut listen = Vec::with_capacity(entries.len());
    for entry in entries {
        listen.push(listen_entry(entry).map_err(fail)?);
    }
    Ok(listen)
}

/// What `listen` may be, for errors about its shape.
const LISTEN_EXPECTED: &str = "expected an address string such as \"127.0.0.1:6081\", \
     \":6081\" or \"unix:/run/shellac/http.sock\", or an array of them and of tables such as \
     { address = \"127.0.0.1:6443\", tls = true, proxy_protocol = true }";

/// The keys a listener table may have.
const LISTEN_KEYS: [&str; 4] = ["address", "tls", "proxy_protocol", "mode"];

/// One entry of a `listen` array, or what is wrong with it.
fn listen_entry(entry: &toml::Value) -> Result<Listen, String> {
    let table = match entry {
        toml::Value::String(address) => {
            return Ok(Listen {
                addr: listen_addr(address)?,
                tls: false,
                proxy_protocol: false,
                mode: None,
            })
        }
        toml::Value::Table(table) => table,
        other => return Err(format!("{LISTEN_EXPECTED}, found a {}", other.type_str())),
    };
    if let Some(unknown) = table.keys().find(|k| !LISTEN_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{unknown}` in a listener table (expected `address`, `tls`, \
             `proxy_protocol`, `mode`)"
        ));
    }
    let addr = match table.get("address") {
        Some(toml::Value::String(address)) => listen_addr(address)?,
        Some(_) => {
            return Err(String::from(
                "a listener table's `address` must be a string",
            ))
        }
        None => return Err(String::from("a listener table needs `address`")),
    };
    let flag = |key: &str| match table.get(key) {
        None => Ok(false),
        Some(toml::Value::Boolean(on)) => Ok(*on),
        Some(other) => Err(format!(
            "a listener's `{key}` must be true or false, found a {}",
            other.type_str()
        )),
    };
    let mode = match table.get("mode") {
        None => None,
        Some(toml::Value::String(text)) => Some(socket_mode(text)?),
        Some(other) => {
            return Err(format!(
                "a listener's `mode` must be an octal string such as \"0660\", found a {}",
                other.type_str()
            ))
        }
    };
    if mode.is_some() && !matches!(addr, ListenAddr::Unix(_)) {
        return Err(String::from(
            "a listener's `mode` applies only to a Unix socket (an address \"unix:PATH\")",
        ));
    }
    Ok(Listen {
        addr,
        tls: flag("tls")?,
        proxy_protocol: flag("proxy_protocol")?,
        mode,
    })
}

/// A listen address: `unix:PATH`, `:PORT` (every interface) or `host:port`.
fn listen_addr(text: &str) -> Result<ListenAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(String::from("\"unix:\" needs a socket path after it"));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if let Some(port) = text.strip_prefix(':') {
        return match port.parse::<u16>() {
            Ok(port) => Ok(ListenAddr::AllInterfaces(port)),
            Err(_) => Err(format!(
                "expected a port from 0 to 65535 after `:`, found \"{text}\""
            )),
        };
    }
    resolve(text).map(|addrs| ListenAddr::Tcp(addrs[0]))
}

/// `mode`: octal permission bits, at most `0777` (no setuid and the like
/// on a socket).
fn socket_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 && !text.is_empty() => Ok(mode),
        _ => Err(format!(
            "a listener's `mode` must be octal permission bits from \"0000\" to \"0777\", \
             found \"{text}\""
        )),
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
