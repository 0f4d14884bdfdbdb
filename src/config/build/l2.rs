//! `[cache.l2]`: the shared second tier on Redis/Valkey. The URL's scheme
//! picks a standalone server or a cluster's seed nodes; each URL is checked
//! by the `redis` crate's own parser now, so a typo fails `--check` rather
//! than the first connection. TLS (`rediss://`) is not built in.

use crate::config::check::{positive_duration, positive_size, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawL2;
use crate::config::{L2Config, L2Endpoint};

/// What `url` must look like; the start of every message about it.
const EXPECTED: &str = "expected \"redis://host:port\" or \"redis+cluster://host:port,host:port\"";

/// `[cache.l2]`.
pub(super) fn build(raw: &RawL2, loc: &Locator<'_>) -> Result<L2Config, ConfigError> {
    let text = raw.url.get_ref().trim();
    let endpoint = endpoint(raw, text, loc)?;
    let prefix = match &raw.prefix {
        None => defaults::L2_PREFIX.to_string(),
        Some(p)
            if p.get_ref().is_empty()
                || p.get_ref()
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace()) =>
        {
            return Err(loc.error(
                span(p),
                format!(
                    "expected a non-empty prefix without spaces or control characters, found {:?}",
                    p.get_ref()
                ),
            ))
        }
        Some(p) => p.get_ref().clone(),
    };
    Ok(L2Config {
        url: text.to_string(),
        endpoint,
        prefix,
        timeout: positive_duration(raw.timeout.as_ref(), defaults::L2_TIMEOUT, loc)?,
        max_object_size: positive_size(
            raw.max_object_size.as_ref(),
            defaults::L2_MAX_OBJECT_SIZE,
            loc,
        )? as u64,
    })
}

/// `url` (trimmed to `text`) as a standalone server or cluster seeds.
fn endpoint(raw: &RawL2, text: &str, loc: &Locator<'_>) -> Result<L2Endpoint, ConfigError> {
    let check = |url: &str| -> Result<(), ConfigError> {
        match redis::Client::open(url) {
            Ok(_) if url.starts_with("redis://") => Ok(()),
            _ => Err(loc.error(span(&raw.url), format!("{EXPECTED}, found \"{text}\""))),
        }
    };
    if let Some(seeds) = text.strip_prefix("redis+cluster://") {
        let seeds: Vec<String> = seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| format!("redis://{s}"))
            .collect();
        if seeds.is_empty() {
            return Err(loc.error(
                span(&raw.url),
                format!("{EXPECTED}: a cluster URL needs at least one seed node"),
            ));
        }
        for seed in &seeds {
            check(seed)?;
        }
        Ok(L2Endpoint::Cluster(seeds))
    } else if text.starts_with("rediss://") {
        Err(loc.error(
            span(&raw.url),
            format!("{EXPECTED}: TLS (rediss://) is not supported; use a local TLS tunnel"),
        ))
    } else {
        check(text)?;
        Ok(L2Endpoint::Standalone(text.to_string()))
    }
}
