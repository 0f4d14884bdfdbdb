//! `[[route]]`: which pool a request goes to, and the per-route overrides
//! (`first_byte_timeout`, `pass`, `ttl`, `grace`, queue priority).
//!
//! Routes are sorted most specific first here, once, so that matching a
//! request is a walk down the list that stops at the first match. Unless a
//! route already matches everything, a catch-all to pool `default` ends the
//! list.

use http::Method;
use toml::Spanned;

use crate::config::check::{int_in, lookup, positive_duration, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::{RawPool, RawRoute};
use crate::config::{PoolConfig, RouteConfig};

/// Every `[[route]]`, most specific first, ending in the catch-all.
/// `raw_pools` locates the error when there is no pool `default` to end in.
pub(super) fn build(
    raw: &[RawRoute],
    raw_pools: &[RawPool],
    pools: &[PoolConfig],
    loc: &Locator<'_>,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes = Vec::with_capacity(raw.len() + 1);
    for (i, r) in raw.iter().enumerate() {
        routes.push(route(i, r, pools, loc)?);
    }
    // Most specific first: a host match beats none, then the longer prefix.
    // The sort is stable, so equally specific routes keep the file's order.
    routes.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.host.is_some()),
            std::cmp::Reverse(r.path_prefix.as_ref().map_or(0, |p| p.len())),
            std::cmp::Reverse(r.methods.is_some()),
        )
    });
    if !routes.iter().any(RouteConfig::is_catch_all) {
        // The catch-all: everything no route claims goes to pool "default",
        // when there is one; otherwise unmatched requests get a 503.
        if let Some(pool) = pools.iter().position(|p| p.name == defaults::POOL_NAME) {
            routes.push(RouteConfig::catch_all(pool));
        } else if raw.is_empty() {
            return Err(loc.error_at_key(
                raw_pools.first().map(|p| p.name.span()),
                "pool",
                "expected a [[pool]] named \"default\" (requests go there when no [[route]] is configured)",
            ));
        }
    }
    Ok(routes)
}

/// The `i`th `[[route]]`.
fn route(
    i: usize,
    r: &RawRoute,
    pools: &[PoolConfig],
    loc: &Locator<'_>,
) -> Result<RouteConfig, ConfigError> {
    let pool_name = r
        .pool
        .as_ref()
        .map_or(defaults::POOL_NAME, |p| p.get_ref().as_str());
    let pool =
        lookup("[[pool]]", pools.iter().map(|p| p.name.as_str()), pool_name).map_err(|m| {
            loc.error_at_key(
                r.pool.as_ref().map(|p| p.span()),
                &format!("route[{i}].pool"),
                m,
            )
        })?;
    let host = match &r.host {
        Some(h) if h.get_ref().trim().is_empty() => {
            return Err(loc.error(span(h), "expected a host name, found an empty string"))
        }
        Some(h) => Some(crate::host::normalize(h.get_ref())),
        None => None,
    };
    let path_prefix = match &r.path_prefix {
        Some(p) if !p.get_ref().starts_with('/') => {
            return Err(loc.error(
                span(p),
                format!(
                    "expected a path starting with \"/\", found \"{}\"",
                    p.get_ref()
                ),
            ))
        }
        Some(p) => Some(p.get_ref().clone()),
        None => None,
    };
    let methods = match &r.methods {
        None => None,
        Some(list) => Some(methods(list, loc)?),
    };
    let priority = int_in(
        r.priority.as_ref(),
        i64::from(defaults::ROUTE_PRIORITY),
        0..=i64::from(defaults::ROUTE_PRIORITY_MAX),
        "a priority",
        loc,
    )? as u8;
    let first_byte_timeout = match &r.first_byte_timeout {
        None => None,
        Some(t) => Some(positive_duration(
            Some(t),
            defaults::FIRST_BYTE_TIMEOUT,
            loc,
        )?),
    };
    Ok(RouteConfig {
        host,
        path_prefix,
        methods,
        pool,
        priority,
        first_byte_timeout,
        pass: r.pass.unwrap_or(false),
        ttl: r.ttl.map(|d| d.0),
        grace: r.grace.map(|d| d.0),
    })
}

/// `methods`: a non-empty list of upper-case HTTP methods.
pub(super) fn methods(
    list: &Spanned<Vec<Spanned<String>>>,
    loc: &Locator<'_>,
) -> Result<Vec<Method>, ConfigError> {
    if list.get_ref().is_empty() {
        return Err(loc.error(
            span(list),
            "expected at least one method, e.g. [\"GET\", \"HEAD\"]",
        ));
    }
    let mut methods = Vec::new();
    for m in list.get_ref() {
        let text = m.get_ref();
        let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase());
        let method = Method::from_bytes(text.as_bytes())
            .ok()
            .filter(|_| valid)
            .ok_or_else(|| {
                loc.error(
                    span(m),
                    format!("expected an upper-case HTTP method such as \"GET\", found {text:?}"),
                )
            })?;
        methods.push(method);
    }
    Ok(methods)
}
