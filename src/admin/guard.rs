//! What keeps a browser from being turned against the admin listener.
//!
//! The admin port is usually on loopback and often without a token, so any
//! web page a operator has open could reach it: a `text/plain` form POST
//! needs no CORS preflight (measured before this guard: a foreign page's
//! POST turned maintenance on), and DNS rebinding lets a foreign name
//! resolve to 127.0.0.1 and read `/metrics` or the status page. Two rules,
//! applied before the token check:
//!
//! 1. **Host**: the request's `Host` must be an IP literal (what one types to
//!    reach `127.0.0.1:6082`; rebinding needs a name), `localhost`, or a
//!    name in `[admin] allowed_hosts` (case-insensitive, port ignored).
//!    Otherwise `421 Misdirected Request`. `GET /health` is exempt: load
//!    balancers probe it under names of their own, and it reveals nothing.
//! 2. **Cross-site writes**: a request that changes state (any method but
//!    GET and HEAD) is refused with 403 when `Sec-Fetch-Site` says
//!    `cross-site` or `same-site`, or when `Origin` is present and is not
//!    this listener's own origin (`http://` + the request's `Host`).
//!    curl and scripts send neither header and are unaffected.

use http::header::{HeaderMap, HOST, ORIGIN};
use http::{Method, StatusCode};

/// Why a request was refused, as its status and message.
pub(super) type Refusal = (StatusCode, &'static str);

/// Checks `Host`, `Origin` and `Sec-Fetch-Site` (see the module docs).
pub(super) fn check(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    allowed_hosts: &[String],
) -> Result<(), Refusal> {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    let health = path == "/health" && (*method == Method::GET || *method == Method::HEAD);
    if !health && !host.is_none_or(|h| host_allowed(h, allowed_hosts)) {
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not the admin listener's; add it to [admin] allowed_hosts",
        ));
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Ok(());
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if site.is_some_and(|s| {
        s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site")
    }) {
        return Err((
            StatusCode::FORBIDDEN,
            "cross-site requests may not change state",
        ));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let own = host.is_some_and(|h| {
            origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(h))
        });
        if !own {
            return Err((
                StatusCode::FORBIDDEN,
                "cross-site requests may not change state",
            ));
        }
    }
    Ok(())
}

/// Whether `host` (a `Host` header value) names this listener.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = crate::host::without_port(host.trim());
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hosts() {
        let allowed = vec!["admin.example".to_string()];
        let ok =
            |h: &'static str| check(&Method::GET, "/metrics", &headers(&[("host", h)]), &allowed);
        assert!(ok("127.0.0.1:6082").is_ok());
        assert!(ok("[::1]:6082").is_ok());
        assert!(ok("localhost:6082").is_ok());
        assert!(ok("Admin.Example:6082").is_ok());
        assert_eq!(
            ok("evil.example:6082").unwrap_err().0,
            StatusCode::MISDIRECTED_REQUEST
        );
        let health = check(
            &Method::GET,
            "/health",
            &headers(&[("host", "lb.internal")]),
            &[],
        );
        assert!(health.is_ok(), "health checks under any name");
    }

    #[test]
    fn cross_site_writes() {
        let post = |pairs: &[(&'static str, &'static str)]| {
            check(&Method::POST, "/maintenance", &headers(pairs), &[])
        };
        assert!(post(&[("host", "127.0.0.1:6082")]).is_ok(), "curl");
        assert!(post(&[
            ("host", "127.0.0.1:6082"),
            ("origin", "http://127.0.0.1:6082")
        ])
        .is_ok());
        assert!(post(&[
            ("host", "127.0.0.1:6082"),
            ("sec-fetch-site", "same-origin")
        ])
        .is_ok());
        assert!(post(&[
            ("host", "127.0.0.1:6082"),
            ("origin", "http://evil.example")
        ])
        .is_err());
        assert!(post(&[("host", "127.0.0.1:6082"), ("origin", "null")]).is_err());
        assert!(post(&[("host", "127.0.0.1:6082"), ("sec-fetch-site", "cross-site")]).is_err());
        assert!(
            check(
                &Method::GET,
                "/metrics",
                &headers(&[
                    ("host", "127.0.0.1:6082"),
                    ("origin", "http://evil.example")
                ]),
                &[]
            )
            .is_ok(),
            "reads are guarded by Host, not Origin"
        );
    }
}
