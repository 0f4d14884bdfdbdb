//! Raw into validated: [`build`] turns the `file.rs` structs into a
//! [`Config`], one section at a time, in the order the sections depend on
//! each other (backends before the pools that name them, pools before the
//! routes that name pools).
//!
//! Each section has its own file and its own `build` function taking the raw
//! section and the [`Locator`], so each check sits next to the value it
//! checks and every error is located the same way. The checks several
//! sections share are in `config/check.rs`.

mod admin;
mod backend;
mod cache;
mod cluster;
mod compression;
mod esi;
mod l2;
mod log;
mod pool;
mod probe;
mod rate_limit;
mod retry;
mod route;
mod rule;
mod server;
mod tls;

use std::path::Path;

use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawConfig;
use crate::config::Config;

/// Validates every section of `raw`, read from `path`; the first error wins.
pub(super) fn build(path: &Path, raw: RawConfig, loc: &Locator<'_>) -> Result<Config, ConfigError> {
    let server = server::build(path, &raw.server, loc)?;
    let mut warnings = Vec::new();
    let listen_span = raw.server.listen.as_ref().map(|l| l.span());
    let tls = tls::build(
        path,
        &raw.tls,
        &server.listen,
        listen_span,
        loc,
        &mut warnings,
    )?;
    let cache = cache::build(&raw.cache, loc)?;
    let backends = backend::build(path, &raw.defaults, &raw.backend, loc, &mut warnings)?;
    let pools = pool::build(&raw.pool, &backends, loc)?;
    let routes = route::build(&raw.route, &raw.pool, &pools, loc)?;
    let rules = rule::build(&raw.rule, loc)?;
    let retry = retry::build(&raw.retry, loc)?;
    let admin = admin::build(&raw.admin, loc)?;
    let log = log::build(&raw.log, loc)?;
    let rate_limits = rate_limit::build(&raw.rate_limit, loc)?;
    let compression = compression::build(&raw.compression, loc)?;
    let esi = esi::build(&raw.esi, loc)?;
    let cluster = match &raw.cluster {
        None => None,
        Some(c) => Some(cluster::build(c, loc)?),
    };
    Ok(Config {
        file: path.to_path_buf(),
        server,
        cache,
        backends,
        pools,
        routes,
        rules,
        retry,
        admin,
        log,
        rate_limits,
        cluster,
        tls,
        compression,
        esi,
        warnings,
    })
}
