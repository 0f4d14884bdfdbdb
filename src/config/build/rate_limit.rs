//! `[[rate_limit]]`: token buckets per client address or per header value.
//! A rate is written as `"100/s"`, `"600/m"` or `"1000/h"`; the burst
//! defaults to the count.

use std::time::Duration;

use http::HeaderName;

use crate::config::check::span;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawRateLimit;
use crate::config::{RateKey, RateLimitConfig};

/// Every `[[rate_limit]]`, in the file's order.
pub(super) fn build(
    raw: &[RawRateLimit],
    loc: &Locator<'_>,
) -> Result<Vec<RateLimitConfig>, ConfigError> {
    let mut limits = Vec::new();
    for r in raw {
        let key = key(r, loc)?;
        let (count, per) = rate(r, loc)?;
        let burst = match &r.burst {
            None => count,
            Some(b) if (1..=i64::from(u32::MAX)).contains(b.get_ref()) => *b.get_ref() as u32,
            Some(b) => return Err(loc.error(span(b), "expected a burst of at least 1")),
        };
        let path_prefix = r.path_prefix.as_ref().map(|p| p.get_ref().clone());
        limits.push(RateLimitConfig {
            key,
            count,
            per,
            burst,
            path_prefix,
        });
    }
    Ok(limits)
}

/// `key`: `"client_ip"` or `"header:Name"`.
fn key(r: &RawRateLimit, loc: &Locator<'_>) -> Result<RateKey, ConfigError> {
    let key_text = r.key.get_ref().trim();
    if key_text == "client_ip" {
        Ok(RateKey::ClientIp)
    } else if let Some(name) = key_text.strip_prefix("header:") {
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            loc.error(
                span(&r.key),
                format!("expected a header name after \"header:\", found \"{name}\""),
            )
        })?;
        Ok(RateKey::Header(name))
    } else {
        Err(loc.error(
            span(&r.key),
            format!("expected \"client_ip\" or \"header:Name\", found \"{key_text}\""),
        ))
    }
}

/// `rate`: a positive count per second, minute or hour.
fn rate(r: &RawRateLimit, loc: &Locator<'_>) -> Result<(u32, Duration), ConfigError> {
    let rate_text = r.rate.get_ref().trim();
    let bad_rate = || {
        loc.error(
            span(&r.rate),
            format!(
                "expected a rate such as \"100/s\", \"600/m\" or \"1000/h\", found \"{rate_text}\""
            ),
        )
    };
    let (count, unit) = rate_text.split_once('/').ok_or_else(bad_rate)?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|&c| c > 0)
        .ok_or_else(bad_rate)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad_rate()),
    };
    Ok((count, per))
}
