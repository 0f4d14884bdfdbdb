//! The client side: accept loops, one task per connection, and the drain on
//! shutdown. It knows nothing of HTTP semantics; every request goes to
//! [`Proxy::handle`].

mod conn;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::proxy::Proxy;

/// Serves `listeners` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish for up to `drain_timeout` and returns.
pub async fn serve(
    listeners: Vec<TcpListener>,
    proxy: Arc<Proxy>,
    settings: conn::Settings,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let settings = Arc::new(settings);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone of `drain_tx`; when the last one
    // is gone, `drain_rx.recv()` returns `None` (the mini-redis pattern).
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    for listener in listeners {
        let proxy = proxy.clone();
        let settings = settings.clone();
        let stop_rx = stop_rx.clone();
        let drain_tx = drain_tx.clone();
        tokio::spawn(accept_loop(listener, proxy, settings, stop_rx, drain_tx));
    }
    drop(drain_tx);

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(drain_timeout, drain_rx.recv()).await {
        Ok(_) => tracing::info!("drain finished"),
        Err(_) => tracing::warn!(
            ?drain_timeout,
            "drain_timeout expired with requests still in flight"
        ),
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: Arc<conn::Settings>,
    mut stop_rx: watch::Receiver<bool>,
    drain_tx: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_rx.changed() => return,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: wait a moment rather
                // than spin on an error that will repeat at once.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        let settings = settings.clone();
        let stop_rx = stop_rx.clone();
        let drain_tx = drain_tx.clone();
        tokio::spawn(async move {
            conn::serve_connection(stream, client, proxy, &settings, stop_rx).await;
            drop(drain_tx);
        });
    }
}

pub use conn::Settings;
