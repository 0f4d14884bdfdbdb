//! Host names as Shellac compares them: one home for the normalisation
//! that routes, the cache key, bans and the configuration all need.
//!
//! A leaf: it imports nothing from the crate. Each variant is a documented
//! function because each comparison has its own reason:
//!
//! - [`without_port`]: route matching compares names, never ports.
//!
//! Every variant drops one trailing dot: `example.com.` is the same
//! fully-qualified name as `example.com` (RFC 1034 §3.1), and nginx matches
//! it to the same server. Without this, `Host: private.example.com.` skipped
//! a `pass = true` route for `private.example.com` and was cached.
//! - [`for_key`]: the cache key keeps a non-default port (`:8080` is another
//!   site) but drops `:80`, and lower-cases; it borrows when it can, since it
//!   runs on every request.
//! - [`normalize`]: hosts written in the configuration or an admin request,
//!   compared with [`without_port`]'s result case-insensitively.
//! - [`for_ban`]: a ban's host, compared with the host part of a cache key.

use std::borrow::Cow;

/// The host without its port or trailing dot, for matching
/// (`Example.com.:8080` → `Example.com`; `[::1]:80` → `::1`).
pub fn without_port(host: &str) -> &str {
    split_port(host).0
}

/// The name (no trailing dot) and the port text (with its colon), if any.
fn split_port(host: &str) -> (&str, &str) {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        let (name, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (name, after);
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, &host[name.len()..])
        }
        _ => (host, ""),
    };
    (name.strip_suffix('.').unwrap_or(name), port)
}

/// A host from the configuration (`[[route]] host`): trimmed, port
/// dropped, lower-cased.
pub fn normalize(host: &str) -> String {
    without_port(host.trim()).to_ascii_lowercase()
}

/// The host as it goes into the cache key: lower-cased, `:80` and a
/// trailing dot dropped; borrowed when it already is (the usual case: no
/// allocation per request).
pub fn for_key(host: Option<&str>) -> Cow<'_, str> {
    let host = host.unwrap_or("");
    let host = host.strip_suffix(":80").unwrap_or(host);
    let dotted = host.ends_with('.') || host.contains(".:");
    if !dotted && !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(host);
    }
    let mut owned = host.to_ascii_lowercase();
    if dotted && !host.starts_with('[') {
        let (name, port) = split_port(host);
        owned = format!("{}{port}", name.to_ascii_lowercase());
    }
    Cow::Owned(owned)
}

/// A ban's host (`POST /ban {"host": …}`): trimmed and lower-cased, to be
/// compared with the host part of a cache key as [`for_key`] wrote it.
pub fn for_ban(host: &str) -> String {
    for_key(Some(host.trim())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_case() {
        assert_eq!(without_port("a.com:8080"), "a.com");
        assert_eq!(without_port("a.com"), "a.com");
        assert_eq!(without_port("[::1]:80"), "::1");
        assert_eq!(normalize(" Example.COM:8080 "), "example.com");
        assert_eq!(for_key(Some("Example.com:80")), "example.com");
        assert_eq!(for_key(Some("example.com:8080")), "example.com:8080");
        assert!(matches!(for_key(Some("example.com")), Cow::Borrowed(_)));
        assert_eq!(for_key(None), "");
        assert_eq!(for_ban(" Example.com "), "example.com");
    }

    #[test]
    fn a_trailing_dot_is_the_same_name() {
        assert_eq!(without_port("private.example.com."), "private.example.com");
        assert_eq!(
            without_port("private.example.com.:8080"),
            "private.example.com"
        );
        assert_eq!(normalize("Private.Example.com."), "private.example.com");
        assert_eq!(for_key(Some("a.com.")), "a.com");
        assert_eq!(for_key(Some("A.com.:8080")), "a.com:8080");
        assert_eq!(for_key(Some("a.com.:80")), "a.com");
        assert_eq!(for_ban("a.com."), "a.com");
        assert_eq!(without_port("[::1]:8080"), "::1");
    }
}
