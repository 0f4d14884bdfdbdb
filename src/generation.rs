//! Generations: one [`Proxy`] per loaded configuration, and [`Current`],
//! the one new requests go to.
//!
//! Building a generation is one job whether it is the first (at start) or
//! the next (a reload): both are written here, next to each other, so that
//! what carries over between generations (the cache, the metrics and other
//! operational state, an unchanged access log; `Proxy::build` takes over
//! unchanged backends) is stated in one place. The loop that keeps the
//! current generation tidy (the ban lurker, the rate limiters' trim) lives
//! here too, because it must follow every swap.
//!
//! The server, the admin listener and the reloader all hold a [`Current`];
//! they import it from here rather than from each other.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::access_log::AccessLogger;
use crate::cache::{self, Cache, MemoryStore};
use crate::config::Config;
use crate::ops::Ops;
use crate::proxy::Proxy;

/// The proxy generation new requests go to; a reload swaps it. In-flight
/// requests keep the generation they started on.
pub type Current = Arc<ArcSwap<Proxy>>;

/// The first generation: fresh operational state, the memory store (its
/// evictions counted), the second tier when `[cache.l2]` is set (read once:
/// a reload does not change it), and the access log. The L2 background
/// tasks are the caller's to start, from `cache().l2()`.
pub fn first(config: Config) -> Current {
    let ops = Arc::new(Ops::default());
    let evictions = ops.metrics.cache_evictions.clone();
    let store = Arc::new(MemoryStore::with_eviction_listener(
        config.cache.capacity,
        Arc::new(move || {
            evictions.inc();
        }),
    ));
    let access_log = AccessLogger::start(&config.log, ops.metrics.access_log_dropped.clone())
        .unwrap_or_else(|error| {
            tracing::error!(%error, "cannot open the access log; access logging is off");
            AccessLogger::off()
        });
    ops.set_maintenance_file(config.server.maintenance_file.clone());
    loaded(&config, &ops);
    let mut cache = Cache::new(store);
    if let Some(l2_config) = &config.cache.l2 {
        let node_id = rand::random::<u64>();
        tracing::info!(url = %l2_config.url, node_id, "second tier (L2) and fan-out enabled");
        let l2 = cache::l2::L2::new(l2_config.clone(), node_id, ops.metrics.l2.clone());
        cache = cache.with_l2(l2);
    }
    let proxy = Proxy::build(Arc::new(config), Arc::new(cache), ops, access_log, None);
    Arc::new(ArcSwap::from_pointee(proxy))
}

/// The generation after `old`, for `config`: the cache and operational
/// state carry over, the access log too unless `[log]` changed, and
/// backends whose settings did not change keep their connections and
/// health history.
pub fn next(config: Config, old: &Proxy) -> Proxy {
    let ops = old.ops().clone();
    let access_log = if config.log == old.config().log {
        old.access_log().clone()
    } else {
        AccessLogger::start(&config.log, ops.metrics.access_log_dropped.clone()).unwrap_or_else(
            |error| {
                tracing::error!(%error, "cannot open the new access log; access logging is off");
                AccessLogger::off()
            },
        )
    };
    ops.set_maintenance_file(config.server.maintenance_file.clone());
    loaded(&config, &ops);
    Proxy::build(
        Arc::new(config),
        old.cache().clone(),
        ops,
        access_log,
        Some(old),
    )
}

/// What every load of a configuration tells: its warnings (a certificate
/// about to expire) in the log, its certificates' expiry in `/metrics`.
fn loaded(config: &Config, ops: &Ops) {
    for warning in &config.warnings {
        tracing::warn!(file = %config.file.display(), "{warning}");
    }
    ops.metrics.set_certificates(
        config
            .tls
            .certificates
            .iter()
            .map(|c| (c.names_label(), c.not_after)),
    );
}

/// The ban lurker (every second) and the rate limiters' trim (every
/// minute), each time on whatever generation is current.
pub async fn housekeeping(current: Current) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let proxy = current.load_full();
        let removed = proxy.cache().lurk();
        if removed > 0 {
            tracing::info!(removed, "ban lurker removed banned objects");
        }
        if n % 60 == 0 {
            proxy.rate_limits().shrink();
        }
    }
}
