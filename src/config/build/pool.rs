//! `[[pool]]`: named groups of backends, how each picks among its healthy
//! ones, and how much of it passive ejection may take out
//! (`max_ejection_percent`). Without any `[[pool]]`, every backend joins the
//! implicit pool `default` (with the defaults), so a file with backends
//! alone still serves.

use crate::config::check::{int_in, lookup, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawPool;
use crate::config::{BackendConfig, Policy, PoolConfig};

/// Every `[[pool]]`, its members resolved to indices into `backends`.
pub(super) fn build(
    raw: &[RawPool],
    backends: &[BackendConfig],
    loc: &Locator<'_>,
) -> Result<Vec<PoolConfig>, ConfigError> {
    if raw.is_empty() {
        return Ok(vec![PoolConfig {
            name: defaults::POOL_NAME.to_string(),
            policy: Policy::RoundRobin,
            backends: (0..backends.len()).collect(),
            max_ejection_percent: defaults::MAX_EJECTION_PERCENT,
        }]);
    }
    let mut pools: Vec<PoolConfig> = Vec::with_capacity(raw.len());
    for p in raw {
        let name = p.name.get_ref().clone();
        if pools.iter().any(|other| other.name == name) {
            return Err(loc.error(
                span(&p.name),
                format!("expected a unique pool name, \"{name}\" is used twice"),
            ));
        }
        let policy = match p.policy.as_ref() {
            None => Policy::RoundRobin,
            Some(name) => Policy::from_name(name.get_ref()).ok_or_else(|| {
                loc.error(
                    span(name),
                    format!(
                        "expected a policy from: {}; found \"{}\"",
                        Policy::NAMES.join(", "),
                        name.get_ref()
                    ),
                )
            })?,
        };
        if p.backends.get_ref().is_empty() {
            return Err(loc.error(span(&p.backends), "expected at least one backend name"));
        }
        let mut members = Vec::new();
        for member in p.backends.get_ref() {
            let names = backends.iter().map(|b| b.name.as_str());
            let index = lookup("[[backend]]", names, member.get_ref())
                .map_err(|m| loc.error(span(member), m))?;
            members.push(index);
        }
        let max_ejection_percent = int_in(
            p.max_ejection_percent.as_ref(),
            i64::from(defaults::MAX_EJECTION_PERCENT),
            0..=100,
            "a percentage of the pool's members",
            loc,
        )? as u32;
        pools.push(PoolConfig {
            name,
            policy,
            backends: members,
            max_ejection_percent,
        });
    }
    Ok(pools)
}
