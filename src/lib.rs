//! Shellac: a caching HTTP reverse proxy.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into [`Config`] (`--check` and `run` share it).
//! - [`server`]: listeners, one task per connection, idle timeout, drain.
//! - [`proxy`]: the request pipeline, phase by phase; the only user of both cache and backends.
//! - [`limits`]: request-head checks (400, 431, 501).
//! - [`cache`]: key, RFC 9111 policy, stored objects, the moka store.
//! - [`backend`]: pooled clients with their timeouts and limits; health
//!   probes, passive ejection, queueing; pools and their directors.
//! - [`retry`]: which failures may be retried, full-jitter backoff, the retry budget.
//! - [`body`]: the body type, the between-bytes timer, store-while-streaming.
//! - [`synth`]: every response Shellac makes itself.
//! - [`demo`]: the `--demo` origin.
//!
//! `main.rs` only parses the command line and calls [`run`].

pub mod backend;
pub mod body;
pub mod cache;
pub mod config;
pub mod demo;
pub mod limits;
pub mod proxy;
pub mod retry;
pub mod server;
pub mod synth;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;

use cache::MemoryStore;
use proxy::Proxy;

/// Binds every `[server] listen` address of `config`.
pub async fn bind(config: &Config) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(config.server.listen.len());
    for addr in &config.server.listen {
        let listener = TcpListener::bind(addr)
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

/// Runs Shellac on `listeners` until `shutdown` resolves, then drains.
pub async fn run(config: Config, listeners: Vec<TcpListener>, shutdown: impl Future<Output = ()>) {
    let config = Arc::new(config);
    let store = Arc::new(MemoryStore::new(config.cache.capacity));
    let proxy = Arc::new(Proxy::new(config.clone(), store));
    let settings = server::Settings::new(&config.server);
    server::serve(
        listeners,
        proxy,
        settings,
        config.server.drain_timeout,
        shutdown,
    )
    .await;
}
