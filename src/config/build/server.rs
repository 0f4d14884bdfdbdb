//! `[server]`: the client side. The listen addresses are resolved and the
//! synthetic-page template is read here, at load time, so that `--check`
//! refuses a file whose listener or template would only fail later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use crate::config::check::{cidrs, int_in, positive_duration, positive_size, resolve, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawServer;
use crate::config::ServerConfig;

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

/// `listen`: one address string or an array of them, each resolved.
fn listen(
    value: Option<&Spanned<toml::Value>>,
    loc: &Locator<'_>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let texts: Vec<String> = match value {
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
    for text in &texts {
        let addrs = resolve(text)
            .map_err(|m| loc.error_at_key(value.map(|v| v.span()), "server.listen", m))?;
        listen.push(addrs[0]);
    }
    Ok(listen)
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
