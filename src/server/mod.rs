//! The client side: accept loops, one task per connection, and the drain on
//! shutdown. It knows nothing of HTTP semantics; every request goes to
//! [`Proxy::handle`].
//!
//! # `max_connections`
//!
//! A semaphore with `[server] max_connections` permits caps the client
//! connections being served (0: no cap). A connection accepted while none is
//! free is *accepted and answered*, not left in the listen backlog: its first
//! request gets the synthetic 503 with `Retry-After` and `Connection: close`,
//! within `header_timeout` (plus a few seconds to send), so a client learns
//! at once to come back later instead of timing out in a queue it cannot
//! see. Those refusals run outside the cap, one short task each.

mod conn;
mod framing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

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
    let cap = match proxy.max_connections() {
        0 => None,
        n => Some(Arc::new(Semaphore::new(n))),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone of `drain_tx`; when the last one
    // is gone, `drain_rx.recv()` returns `None` (the mini-redis pattern).
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    for listener in listeners {
        let proxy = proxy.clone();
        let settings = settings.clone();
        let stop_rx = stop_rx.clone();
        let drain_tx = drain_tx.clone();
        let cap = cap.clone();
        tokio::spawn(accept_loop(
            listener, proxy, settings, stop_rx, drain_tx, cap,
        ));
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
    cap: Option<Arc<Semaphore>>,
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
        let permit = match &cap {
            None => None,
            Some(cap) => match cap.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::warn!(client = %client, "max_connections reached: answering 503");
                    tokio::spawn(async move {
                        conn::refuse_connection(stream, proxy, &settings).await;
                    });
                    continue;
                }
            },
        };
        let stop_rx = stop_rx.clone();
        let drain_tx = drain_tx.clone();
        tokio::spawn(async move {
            conn::serve_connection(stream, client, proxy, &settings, stop_rx).await;
            drop(permit);
            drop(drain_tx);
        });
    }
}

pub use conn::Settings;
