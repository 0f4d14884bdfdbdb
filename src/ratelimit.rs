//! `[[rate_limit]]`: per-client quotas answered with `429 Too Many
//! Requests` and a `Retry-After`. A 429 is about one client's quota; a 503
//! is about the service — the two are never mixed up.
//!
//! Each limit is a keyed GCRA limiter from the `governor` crate (sharded,
//! lock-free on the request path). Limits are rebuilt on reload, which
//! forgets the counts: a reload gives every client a fresh burst.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;

use crate::config::{RateKey, RateLimitConfig};

struct Limit {
    config: RateLimitConfig,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// Every configured limit.
#[derive(Default)]
pub struct RateLimits {
    limits: Vec<Limit>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Limiters for `configs`.
    pub fn new(configs: &[RateLimitConfig]) -> RateLimits {
        let limits = configs
            .iter()
            .filter_map(|config| {
                let period = config.per / config.count;
                let burst = NonZeroU32::new(config.burst)?;
                let quota =
                    Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
                Some(Limit {
                    config: config.clone(),
                    limiter: RateLimiter::keyed(quota),
                })
            })
            .collect();
        RateLimits {
            limits,
            clock: DefaultClock::default(),
        }
    }

    /// Whether there are any limits at all.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// `Some(wait)` when the request is over a limit: the client may try
    /// again after `wait`.
    pub fn check(&self, path: &str, client: IpAddr, headers: &HeaderMap) -> Option<Duration> {
        for limit in &self.limits {
            if limit
                .config
                .path_prefix
                .as_deref()
                .is_some_and(|p| !path.starts_with(p))
            {
                continue;
            }
            let key = match &limit.config.key {
                RateKey::ClientIp => client.to_string(),
                RateKey::Header(name) => headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default(),
            };
            if let Err(not_until) = limit.limiter.check_key(&key) {
                return Some(not_until.wait_time_from(self.clock.now()));
            }
        }
        None
    }

    /// Forgets clients that are back within their quota (memory stays bounded).
    pub fn shrink(&self) {
        for limit in &self.limits {
            limit.limiter.retain_recent();
        }
    }
}
