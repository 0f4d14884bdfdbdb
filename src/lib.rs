//! Shellac: a caching HTTP reverse proxy.
//!
//! # Layout
//!
//! By layer, top to bottom; a module imports only from layers below its
//! own (docs/architecture.md states the rule, `tests/architecture.rs`
//! checks it).
//!
//! Entry points:
//! - [`server`]: listeners (TCP, `":port"`, Unix sockets; plain, TLS, PROXY
//!   protocol), one task per connection (and the tunnel a `101` hands it),
//!   idle timeout, drain.
//! - [`admin`]: the admin listener (metrics, health, backends, bans, reload,
//!   maintenance, status page) and its guard against cross-site requests.
//! - [`generation`]: building a [`proxy::Proxy`] generation, the current one
//!   ([`generation::Current`]), and the housekeeping that follows it.
//! - [`reload`]: hot reload on SIGHUP and `POST /reload`.
//!
//! The pipeline:
//! - [`proxy`]: the request path as named phases (`proxy/mod.rs` is the
//!   sequence; one file per phase, `proxy/tunnel.rs` for Upgrade tunnels
//!   such as WebSocket); the only user of both cache and backends.
//!   `proxy::compress` is `[compression]`: the backend asked for gzip, the
//!   representation each client gets. `proxy::esi` assembles ESI pages
//!   at delivery (each include a sub-request through the pipeline).
//!   `proxy::invalidate` is `PURGE` and the apps' purge protocols
//!   (`[cache] invalidation`: Magento 2, WordPress, Drupal, xkey).
//!
//! Services of the request path:
//! - [`cache`]: key, RFC 9111 policy, stored objects, the moka store, the
//!   waiting list; the Redis second tier and invalidation fan-out (`cache::l2`);
//!   stored gzip objects and their `br` copy (`cache::encoded`).
//! - [`backend`]: pooled clients with their timeouts and limits (the response
//!   body with its between-bytes timer) over TCP, TLS or Unix sockets;
//!   host names looked up again (`backend::resolve`), PROXY headers to
//!   backends; health probes, passive ejection, queueing; pools and their
//!   directors.
//! - [`synth`]: every response Shellac makes itself.
//! - [`limits`]: request-head checks (400, 431, 501).
//! - [`ratelimit`]: `[[rate_limit]]` quotas (429).
//! - [`access_log`]: the non-blocking access-log writer.
//! - [`ops`]: what outlives a reload (metrics, maintenance, draining, request ids).
//! - [`demo`]: the `--demo` origin.
//!
//! Shared types:
//! - [`body`]: the one body type (it wraps the backend's), the shared body of
//!   a fetch in progress (`body::shared`, read by every client of it), the
//!   request-body limit, a gzip body decoded while it streams (`body::gunzip`).
//! - [`config`]: the TOML file, validated into [`Config`] (`--check` and `run`
//!   share it); raw structs, one builder per section, shared checks.
//!
//! Leaves (they import nothing from the request path):
//! - [`metrics`]: every metric family, and the outcome and attempt types they count.
//! - [`reason`]: why a fetch failed or Shellac answered itself, with the labels
//!   logs, metrics and headers use.
//! - [`retry`]: which failures may be retried, full-jitter backoff, the retry budget.
//! - [`host`]: host names as Shellac compares them (routes, keys, bans).
//! - [`pattern`]: the name globs and host patterns of `[[rule]]`.
//! - [`peer`]: the client's address as a connection gives it (IP or Unix socket).
//! - [`encoding`]: content codings: which one a client's `Accept-Encoding`
//!   prefers, and the whole-body gzip and brotli codecs.
//! - [`esi`]: the ESI parser (includes, removes, `<!--esi`), fed chunk by
//!   chunk; never fails (fuzzed: `fuzz/fuzz_targets/esi_parse.rs`).
//!
//! `main.rs` only parses the command line and calls [`run`].

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod body;
pub mod cache;
pub mod config;
pub mod demo;
pub mod encoding;
pub mod esi;
pub mod generation;
pub mod host;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod pattern;
pub mod peer;
pub mod proxy;
pub mod ratelimit;
pub mod reason;
pub mod reload;
pub mod retry;
pub mod server;
pub mod synth;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;

/// Binds every `[server] listen` entry of `config`, in order.
pub async fn bind(config: &Config) -> std::io::Result<Vec<server::Listener>> {
    let mut listeners = Vec::with_capacity(config.server.listen.len());
    for entry in &config.server.listen {
        listeners.push(server::bind(entry).await?);
    }
    Ok(listeners)
}

/// The TCP addresses `listeners` are bound to (port 0 resolved), in
/// order; Unix sockets are left out ([`server::Listener::bound`] names them).
pub fn local_addrs(listeners: &[server::Listener]) -> Vec<SocketAddr> {
    listeners.iter().filter_map(|l| l.local_addr()).collect()
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
    /// How many diagnostic log lines the non-blocking writer has dropped so
    /// far (`main` sets it; copied into `shellac_log_dropped_total`).
    pub log_dropped: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

/// Runs Shellac on `listeners` until `shutdown` resolves, then drains.
/// Reloads on SIGHUP and `POST /reload`.
pub async fn run(
    config: Config,
    listeners: Vec<server::Listener>,
    shutdown: impl Future<Output = ()>,
) {
    run_with(config, listeners, Launch::default(), shutdown).await;
}

/// [`run`] with an admin listener and the `--demo` origin.
pub async fn run_with(
    config: Config,
    listeners: Vec<server::Listener>,
    launch: Launch,
    shutdown: impl Future<Output = ()>,
) {
    let current = generation::first(config);
    let l2_tasks = {
        let proxy = current.load();
        proxy.cache().l2().map(|l2| {
            [
                l2.connect_in_background(),
                l2.subscribe_in_background(Arc::downgrade(proxy.cache())),
            ]
        })
    };
    let (reload_tx, reload_rx) = watch::channel(());
    let reloader = Arc::new(reload::Reloader::new(
        current.clone(),
        reload_tx,
        launch.demo_origin,
    ));

    let mut tasks = vec![
        current.load().ops().watch_maintenance_file(),
        tokio::spawn(generation::housekeeping(current.clone())),
    ];
    if let Some(admin) = launch.admin {
        tasks.push(tokio::spawn(admin::serve(
            admin,
            current.clone(),
            reloader.clone(),
        )));
    }
    if let Some(dropped) = launch.log_dropped {
        let counter = current.load().ops().metrics.log_dropped.clone();
        tasks.push(tokio::spawn(count_dropped_log_lines(dropped, counter)));
    }
    #[cfg(unix)]
    tasks.push(tokio::spawn(reload_on_sighup(reloader.clone())));
    tasks.extend(l2_tasks.into_iter().flatten());

    server::serve(listeners, current, reload_rx, shutdown).await;
    for task in tasks {
        task.abort();
    }
}

/// Copies the log writer's count of dropped lines into the metric, once a
/// second (the writer counts with an atomic of its own).
async fn count_dropped_log_lines(
    dropped: Arc<dyn Fn() -> u64 + Send + Sync>,
    counter: prometheus_client::metrics::counter::Counter,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut seen = 0;
    loop {
        tick.tick().await;
        let now = dropped();
        if now > seen {
            counter.inc_by(now - seen);
            seen = now;
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
