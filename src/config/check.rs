//! The checks every section of the file shares: durations and sizes that
//! must not be zero, integers within a range, `host:port` addresses, CIDR
//! lists and references by name.
//!
//! They live in one file so that a rule such as "a zero timeout is refused"
//! has one wording, whichever table the key is in. Each takes the raw value
//! with its position and returns the validated value or a `ConfigError` at
//! that value's line; `None` (the key is absent) means the default.
//! Parsing the syntax of a duration or a size is not here but in `units.rs`,
//! where the TOML parser itself reports a malformed value.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::{ConfigError, Locator};
use super::units::{ByteSize, ConfigDuration};
use crate::pattern::Glob;

/// Where a raw value was written, for [`Locator::error`].
pub(super) fn span<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    Some(value.span())
}

/// A duration that must not be zero (a zero timeout or interval would fire
/// at once), or `default` when absent.
pub(super) fn positive_duration(
    value: Option<&Spanned<ConfigDuration>>,
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

/// A size that must not be zero and must fit this machine's `usize`, or
/// `default` when absent.
pub(super) fn positive_size(
    value: Option<&Spanned<ByteSize>>,
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

/// An integer setting within `range`, or `default` when absent. `what` names
/// the quantity in the message ("expected a weight from 1 to 10000, found 0").
pub(super) fn int_in(
    value: Option<&Spanned<i64>>,
    default: i64,
    range: RangeInclusive<i64>,
    what: &str,
    loc: &Locator<'_>,
) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(loc.error(
            span(v),
            format!(
                "expected {what} from {} to {}, found {}",
                range.start(),
                range.end(),
                v.get_ref()
            ),
        )),
    }
}

/// Resolves `host:port` once, at load time (so `--check` catches a name that
/// does not resolve); the message is for the caller to locate.
pub(super) fn resolve(text: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("expected host:port, found \"{text}\" ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("\"{text}\" resolved to no address"));
    }
    Ok(addrs)
}

/// Parses a list of CIDRs (`"10.0.0.0/8"`) or single addresses (`"127.0.0.1"`).
pub(super) fn cidrs(
    values: Option<&[Spanned<String>]>,
    key: &str,
    loc: &Locator<'_>,
) -> Result<Vec<IpNet>, ConfigError> {
    let mut nets = Vec::new();
    for value in values.unwrap_or(&[]) {
        let text = value.get_ref().trim();
        if text == "unix:" {
            // Every Unix-socket peer (nginx's `set_real_ip_from unix:`).
            // Such a peer stands for `0.0.0.0` wherever an IP is needed
            // (`peer::UNIX_IP`, as Varnish's `client.ip`), so it is kept
            // as `0.0.0.0/32`, which no TCP peer can be.
            nets.push(IpNet::from(IpAddr::from([0, 0, 0, 0])));
            continue;
        }
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                loc.error_at_key(
                    Some(value.span()),
                    key,
                    format!(
                        "expected a CIDR such as \"10.0.0.0/8\", an address or \"unix:\", found \"{text}\""
                    ),
                )
            })?;
        nets.push(net);
    }
    Ok(nets)
}

/// The index of `wanted` among `names`, the names of the `[[table]]`s
/// declared so far; otherwise a message listing the names there are, for
/// the caller to locate (pools naming backends, routes naming pools).
pub(super) fn lookup<'a>(
    table: &str,
    names: impl Iterator<Item = &'a str> + Clone,
    wanted: &str,
) -> Result<usize, String> {
    names
        .clone()
        .position(|name| name == wanted)
        .ok_or_else(|| {
            let known: Vec<&str> = names.collect();
            format!(
                "expected the name of a {table} ({}), found \"{wanted}\"",
                known.join(", ")
            )
        })
}

/// A TLS server name (`tls_server_name`): a DNS name or an IP address, as
/// rustls takes it for SNI and verification.
pub(super) fn server_name(
    value: &Spanned<String>,
    loc: &Locator<'_>,
) -> Result<String, ConfigError> {
    let text = value.get_ref().trim();
    match rustls_pki_types::ServerName::try_from(text) {
        Ok(_) => Ok(text.to_string()),
        Err(e) => Err(loc.error(
            span(value),
            format!(
                "expected a TLS server name such as \"api.example.com\" or an IP address, \
                 found \"{}\" ({e})",
                value.get_ref()
            ),
        )),
    }
}

/// A `Host` header value (`host_header`): not empty, no control characters.
pub(super) fn host_header(
    value: &Spanned<String>,
    loc: &Locator<'_>,
) -> Result<http::HeaderValue, ConfigError> {
    let text = value.get_ref().trim();
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
    match http::HeaderValue::from_str(text) {
        Ok(header) if valid => Ok(header),
        _ => Err(loc.error(
            span(value),
            format!(
                "expected a host such as \"api.example.com\" or \"api.example.com:8443\", \
                 found \"{}\"",
                value.get_ref()
            ),
        )),
    }
}

/// A list of media-type globs (`[compression] types`, `[esi] types`):
/// `defaults` when absent, else each entry checked by [`media_glob`] so that
/// a typo fails at load rather than silently matching nothing.
pub(super) fn media_types(
    values: Option<&[Spanned<String>]>,
    defaults: &[&str],
    loc: &Locator<'_>,
) -> Result<Vec<Glob>, ConfigError> {
    match values {
        None => Ok(defaults.iter().filter_map(|t| Glob::new(t).ok()).collect()),
        Some(values) => values
            .iter()
            .map(|t| media_glob(t.get_ref()).map_err(|message| loc.error(span(t), message)))
            .collect(),
    }
}

/// A media-type glob: `type/subtype`, each side a token or containing `*`
/// (`text/*`, `application/*+json`), lower-cased (media types compare
/// case-insensitively).
fn media_glob(text: &str) -> Result<Glob, String> {
    let expected = || {
        format!("expected a media type such as \"text/html\" or a glob such as \"text/*\", found {text:?}")
    };
    let (kind, subtype) = text.trim().split_once('/').ok_or_else(expected)?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(kind) || !token(subtype) {
        return Err(expected());
    }
    Glob::new(&text.trim().to_ascii_lowercase())
}
