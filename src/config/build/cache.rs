//! `[cache]`: the in-memory store's size and lifetimes, and who may purge.
//! Its sub-table `[cache.l2]` is built in `l2.rs`.

use http::HeaderName;
use toml::Spanned;

use super::l2;
use crate::config::check::{cidrs, positive_size, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawCache;
use crate::config::{CacheConfig, Invalidation};

/// `[cache]`, with `[cache.l2]` when present.
pub(super) fn build(c: &RawCache, loc: &Locator<'_>) -> Result<CacheConfig, ConfigError> {
    let capacity = positive_size(c.capacity.as_ref(), defaults::CACHE_CAPACITY, loc)? as u64;
    Ok(CacheConfig {
        capacity,
        default_ttl: c.default_ttl.map_or(defaults::DEFAULT_TTL, |d| d.0),
        max_object_size: c.max_object_size.map_or(defaults::MAX_OBJECT_SIZE, |s| s.0),
        transit_capacity: positive_size(
            c.transit_capacity.as_ref(),
            (capacity / defaults::TRANSIT_CAPACITY_DIVISOR).max(1),
            loc,
        )? as u64,
        store_errors: c.store_errors.unwrap_or(defaults::STORE_ERRORS),
        default_grace: c.default_grace.map_or(defaults::DEFAULT_GRACE, |d| d.0),
        default_keep: c.default_keep.map_or(defaults::DEFAULT_KEEP, |d| d.0),
        hit_for_miss: c.hit_for_miss.map_or(defaults::HIT_FOR_MISS, |d| d.0),
        heuristic_max: c.heuristic_max.map_or(defaults::HEURISTIC_MAX, |d| d.0),
        strip_targeted: c.strip_targeted.unwrap_or(defaults::STRIP_TARGETED),
        honor_request_cache_control: c
            .honor_request_cache_control
            .unwrap_or(defaults::HONOR_REQUEST_CACHE_CONTROL),
        purge_allow: cidrs(c.purge_allow.as_deref(), "cache.purge_allow", loc)?,
        tag_header: match &c.tag_header {
            None => HeaderName::from_static(defaults::TAG_HEADER),
            Some(name) => {
                HeaderName::from_bytes(name.get_ref().trim().as_bytes()).map_err(|_| {
                    loc.error(
                        span(name),
                        format!("expected a header name, found \"{}\"", name.get_ref()),
                    )
                })?
            }
        },
        invalidation: invalidation(c.invalidation.as_deref(), loc)?,
        l2: match &c.l2 {
            None => None,
            Some(raw) => Some(l2::build(raw, loc)?),
        },
    })
}

/// `invalidation = ["magento2", …]`: each name once, known.
fn invalidation(
    names: Option<&[Spanned<String>]>,
    loc: &Locator<'_>,
) -> Result<Invalidation, ConfigError> {
    let mut on = Invalidation::default();
    for name in names.unwrap_or(&[]) {
        let flag = match name.get_ref().trim() {
            "magento2" => &mut on.magento2,
            "wordpress" => &mut on.wordpress,
            "drupal" => &mut on.drupal,
            "xkey" => &mut on.xkey,
            other => {
                return Err(loc.error_at_key(
                    span(name),
                    "cache.invalidation",
                    format!(
                        "expected one of {}, found \"{other}\"",
                        Invalidation::NAMES.map(|n| format!("\"{n}\"")).join(", ")
                    ),
                ))
            }
        };
        *flag = true;
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BACKEND: &str = "[[backend]]\naddress = \"127.0.0.1:1\"\n";

    #[test]
    fn transit_capacity_defaults_to_a_quarter_of_capacity() {
        let parse =
            |cache: &str| Config::parse(Path::new("test.toml"), &format!("{cache}{BACKEND}"));
        let c = parse("").expect("valid");
        assert_eq!(c.cache.transit_capacity, c.cache.capacity / 4);
        let small = parse("[cache]\ncapacity = \"16MiB\"\n").expect("valid");
        assert_eq!(small.cache.transit_capacity, 4 * 1024 * 1024);
        let set = parse("[cache]\ntransit_capacity = \"100MiB\"\n").expect("valid");
        assert_eq!(set.cache.transit_capacity, 100 * 1024 * 1024);
        let err = parse("[cache]\ntransit_capacity = 0\n").unwrap_err();
        assert_eq!(err.key(), Some("cache.transit_capacity"), "{err}");
        assert_eq!(err.line(), Some(2), "{err}");
    }

    #[test]
    fn invalidation_names_the_protocols_and_refuses_others() {
        let parse =
            |cache: &str| Config::parse(Path::new("test.toml"), &format!("{cache}{BACKEND}"));
        let off = parse("").expect("valid");
        assert!(!off.cache.invalidation.magento2 && !off.cache.invalidation.xkey);
        let on = parse("[cache]\ninvalidation = [\"magento2\", \"xkey\"]\n").expect("valid");
        assert!(on.cache.invalidation.magento2 && on.cache.invalidation.xkey);
        assert!(!on.cache.invalidation.wordpress && !on.cache.invalidation.drupal);
        let err = parse("[cache]\ninvalidation = [\"drupal\", \"joomla\"]\n").unwrap_err();
        assert_eq!(err.key(), Some("cache.invalidation"), "{err}");
        assert_eq!(err.line(), Some(2), "{err}");
        assert!(err.to_string().contains("joomla"), "{err}");
    }
}
