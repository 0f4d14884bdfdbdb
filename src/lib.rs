//! Shellac: a caching HTTP reverse proxy.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into [`Config`] (`--check` and `run` share it).
//! - [`server`]: listeners, one task per connection, idle timeout, drain.
//! - [`proxy`]: the request pipeline, phase by phase; the only user of both cache and backends.
//! - [`limits`]: request-head checks (400, 431, 501).
//! - [`cache`]: key, RFC 9111 policy, stored objects, the moka store; the
//!   Redis second tier and invalidation fan-out (`cache::l2`).
//! - [`backend`]: pooled clients with their timeouts and limits (the response
//!   body with its between-bytes timer); health probes, passive ejection,
//!   queueing; pools and their directors.
//! - [`retry`]: which failures may be retried, full-jitter backoff, the retry budget.
//! - [`body`]: the one body type (it wraps the backend's), store-while-streaming,
//!   the request-body limit.
//! - [`synth`]: every response Shellac makes itself.
//! - [`demo`]: the `--demo` origin.
//! - [`admin`]: the admin listener (metrics, health, backends, bans, reload, maintenance, status page).
//! - [`metrics`]: every metric family, and the outcome and attempt types they count.
//! - [`ops`]: what outlives a reload (metrics, maintenance, draining, request ids).
//! - [`reload`]: hot reload on SIGHUP and `POST /reload`.
//! - [`access_log`]: the non-blocking access-log writer.
//! - [`ratelimit`]: `[[rate_limit]]` quotas (429).
//!
//! `main.rs` only parses the command line and calls [`run`].

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod body;
pub mod cache;
pub mod config;
pub mod demo;
pub mod host;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod retry;
pub mod server;
pub mod synth;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;

use cache::MemoryStore;
use proxy::Proxy;

/// Binds every `[server] listen` address of `config`.
pub async fn bind(config: &Config) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(config.server.listen.len());
    for addr in &config.server.listen {
        let listener = server::listen(*addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// The addresses `listeners` are bound to (port 0 resolved).
pub fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

/// Binds the admin listener when `[admin] listen` is set.
pub async fn bind_admin(config: &Config) -> std::io::Result<Option<TcpListener>> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    TcpListener::bind(admin.listen)
        .await
        .map(Some)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} (admin): {e}", admin.listen),
            )
        })
}

/// How `run` was started, beyond the configuration.
#[derive(Default)]
pub struct Launch {
    /// The admin listener, from [`bind_admin`].
    pub admin: Option<TcpListener>,
    /// `--demo`: the demo origin that replaces the backends on every (re)load.
    pub demo_origin: Option<SocketAddr>,
}

/// Runs Shellac on `listeners` until `shutdown` resolves, then drains.
/// Reloads on SIGHUP and `POST /reload`.
pub async fn run(config: Config, listeners: Vec<TcpListener>, shutdown: impl Future<Output = ()>) {
    run_with(config, listeners, Launch::default(), shutdown).await;
}

/// [`run`] with an admin listener and the `--demo` origin.
pub async fn run_with(
    config: Config,
    listeners: Vec<TcpListener>,
    launch: Launch,
    shutdown: impl Future<Output = ()>,
) {
    let ops = Arc::new(ops::Ops::default());
    let evictions = ops.metrics.cache_evictions.clone();
    let store = Arc::new(MemoryStore::with_eviction_listener(
        config.cache.capacity,
        Arc::new(move || {
            evictions.inc();
        }),
    ));
    let access_log =
        access_log::AccessLogger::start(&config.log, ops.metrics.access_log_dropped.clone())
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot open the access log; access logging is off");
                access_log::AccessLogger::off()
            });
    ops.set_maintenance_file(config.server.maintenance_file.clone());
    let mut cache = cache::Cache::new(store);
    // `[cache.l2]` is read once, at start: a reload does not change it.
    if let Some(l2_config) = &config.cache.l2 {
        let node_id = rand::random::<u64>();
        tracing::info!(url = %l2_config.url, node_id, "second tier (L2) and fan-out enabled");
        let l2 = cache::l2::L2::new(l2_config.clone(), node_id, ops.metrics.l2.clone());
        cache = cache.with_l2(l2);
    }
    let cache = Arc::new(cache);
    let l2_tasks = cache.l2().map(|l2| {
        [
            l2.connect_in_background(),
            l2.subscribe_in_background(Arc::downgrade(&cache)),
        ]
    });
    let proxy = Proxy::build(Arc::new(config), cache, ops.clone(), access_log, None);
    let current: server::Current = Arc::new(ArcSwap::from_pointee(proxy));
    let (reload_tx, reload_rx) = watch::channel(());
    let reloader = Arc::new(reload::Reloader::new(
        current.clone(),
        reload_tx,
        launch.demo_origin,
    ));

    let mut tasks = vec![
        ops.watch_maintenance_file(),
        tokio::spawn(housekeeping(current.clone())),
    ];
    if let Some(admin) = launch.admin {
        tasks.push(tokio::spawn(admin::serve(
            admin,
            current.clone(),
            reloader.clone(),
        )));
    }
    #[cfg(unix)]
    tasks.push(tokio::spawn(reload_on_sighup(reloader.clone())));
    tasks.extend(l2_tasks.into_iter().flatten());

    server::serve(listeners, current, reload_rx, shutdown).await;
    for task in tasks {
        task.abort();
    }
}

/// The ban lurker (every second) and the rate limiters' trim (every minute).
async fn housekeeping(current: server::Current) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
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

#[cfg(unix)]
async fn reload_on_sighup(reloader: Arc<reload::Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = reloader.reload();
    }
}
