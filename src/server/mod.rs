//! The client side: accept loops, one task per connection, listener changes
//! on reload, and the drain on shutdown. It knows nothing of HTTP semantics;
//! every request goes to the current [`Proxy`](crate::proxy::Proxy) generation
//! ([`Current`], which `generation` owns).
//!
//! # `max_connections`
//!
//! A semaphore with `[server] max_connections` permits caps the client
//! connections being served (0: no cap). A connection accepted while none is
//! free is *accepted and answered*, not left in the listen backlog: its first
//! request gets the synthetic 503 with `Retry-After` and `Connection: close`,
//! within `header_timeout` (plus a few seconds to send), so a client learns
//! at once to come back later instead of timing out in a queue it cannot
//! see. Those refusals run outside the cap, one short task each. A reload
//! that changes the cap starts a new count for new connections.
//!
//! # TLS
//!
//! A `listen` entry with `tls = true` accepts TLS (`tls.rs`): the
//! handshake runs in the connection's task, inside the cap, bounded by
//! `header_timeout`; then the connection is served like a plain one.

mod conn;
mod framing;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::Listen;
use crate::generation::Current;

pub use conn::Settings;

/// Binds a client listener. `TCP_NODELAY` is set on the listening socket:
/// Linux copies it to every accepted connection, which saves a
/// `setsockopt` per connection (small heads must never wait for Nagle).
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind`: a restart may bind while old connections
    // are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The accept queue's length (what `TcpListener::bind` uses too); the
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

/// What every accept loop shares.
struct Shared {
    current: Current,
    settings: ArcSwap<Settings>,
    /// Dropped by each connection task when it ends; the drain waits for
    /// the last one (the mini-redis pattern).
    drain_tx: mpsc::Sender<()>,
    /// Flips to `true` on shutdown: stop accepting, close idle connections.
    stop_rx: watch::Receiver<bool>,
    /// The `max_connections` permits; none when there is no cap.
    cap: ArcSwapOption<Semaphore>,
    /// The TLS listeners' acceptor for the current `[tls]` certificates,
    /// replaced on reload (a handshake takes the one current when it
    /// starts); none without certificates.
    tls: ArcSwapOption<TlsAcceptor>,
}

/// What one accept loop does, set by the reload that follows `listen`: a
/// listener whose address stays but whose `tls` flips is switched in place
/// (binding the address again while the old socket is open would fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Tls,
    Stop,
}

impl Mode {
    fn of(tls: bool) -> Mode {
        if tls {
            Mode::Tls
        } else {
            Mode::Plain
        }
    }
}

fn semaphore(max_connections: usize) -> Option<Arc<Semaphore>> {
    (max_connections > 0).then(|| Arc::new(Semaphore::new(max_connections)))
}

/// Serves `listeners` (bound in the order of `[server] listen`, whose
/// entries say which are TLS) until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish for up to `[server] drain_timeout` and returns.
/// Each time `reloaded` changes, the listeners follow the current
/// configuration's `[server] listen` (new addresses bound, old ones closed;
/// their open connections finish) and new connections get its settings.
pub async fn serve(
    listeners: Vec<TcpListener>,
    current: Current,
    mut reloaded: watch::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let server_config = current.load().config().server.clone();
    let settings = Settings::new(&server_config);
    let mut max_connections = server_config.max_connections;
    let shared = Arc::new(Shared {
        current: current.clone(),
        settings: ArcSwap::from_pointee(settings),
        drain_tx,
        stop_rx,
        cap: ArcSwapOption::new(semaphore(max_connections)),
        tls: ArcSwapOption::new(tls::acceptor(&current.load().config().tls).map(Arc::new)),
    });
    // Addresses as configured (port 0 in tests) map to what they were bound to.
    let mut configured: Vec<Listen> = server_config.listen.clone();
    let mut loops: HashMap<SocketAddr, watch::Sender<Mode>> = HashMap::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let tls = configured.get(i).is_some_and(|l| l.tls);
        if let Ok(addr) = listener.local_addr() {
            loops.insert(addr, start_accepting(listener, tls, shared.clone()));
        }
    }

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = reloaded.changed() => {
                if changed.is_err() {
                    // No reloader left: just wait for shutdown.
                    (&mut shutdown).await;
                    break;
                }
                let config = current.load().config().clone();
                shared.settings.store(Arc::new(Settings::new(&config.server)));
                // The certificates the reload read: new handshakes use them.
                shared.tls.store(tls::acceptor(&config.tls).map(Arc::new));
                if config.server.max_connections != max_connections {
                    max_connections = config.server.max_connections;
                    shared.cap.store(semaphore(max_connections));
                }
                if config.server.listen != configured {
                    follow_listen(&config.server.listen, &configured, &mut loops, &shared).await;
                    configured = config.server.listen.clone();
                }
            }
        }
    }

    current.load().ops().start_draining();
    let drain_timeout = current.load().config().server.drain_timeout;
    tracing::info!(
        ?drain_timeout,
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop_tx.send(true);
    for (_, mode) in loops.drain() {
        let _ = mode.send(Mode::Stop);
    }
    drop(shared);
    match tokio::time::timeout(drain_timeout, drain_rx.recv()).await {
        Ok(_) => tracing::info!("drain finished"),
        Err(_) => tracing::warn!(
            ?drain_timeout,
            "drain_timeout expired with requests still in flight"
        ),
    }
}

/// Binds the addresses that are new in `wanted`, stops the loops of those
/// that are gone, and switches those whose `tls` changed. A bind failure is
/// logged and the rest goes on.
async fn follow_listen(
    wanted: &[Listen],
    before: &[Listen],
    loops: &mut HashMap<SocketAddr, watch::Sender<Mode>>,
    shared: &Arc<Shared>,
) {
    // The same (non-zero) port on both sides, only `tls` differs.
    let stays = |addr: &SocketAddr, other: &[Listen]| {
        addr.port() != 0 && other.iter().any(|l| l.addr == *addr)
    };
    for switched in wanted
        .iter()
        .filter(|a| !before.contains(a) && stays(&a.addr, before))
    {
        if let Some(mode) = loops.get(&switched.addr) {
            let _ = mode.send(Mode::of(switched.tls));
            tracing::info!(addr = %switched.addr, tls = switched.tls, "listener switched (reload)");
        }
    }
    for gone in before
        .iter()
        .filter(|a| !wanted.contains(a) && !stays(&a.addr, wanted))
    {
        let addr = &gone.addr;
        // Port-0 addresses were bound to another port: match by IP then.
        let bound: Vec<SocketAddr> = loops
            .keys()
            .filter(|b| *b == addr || (addr.port() == 0 && b.ip() == addr.ip()))
            .copied()
            .collect();
        for b in bound {
            if let Some(mode) = loops.remove(&b) {
                let _ = mode.send(Mode::Stop);
                tracing::info!(addr = %b, "stopped listening (reload)");
            }
        }
    }
    for new in wanted
        .iter()
        .filter(|a| !before.contains(a) && !stays(&a.addr, before))
    {
        let addr = &new.addr;
        match listen(*addr).await {
            Ok(listener) => {
                let bound = listener.local_addr().unwrap_or(*addr);
                tracing::info!(addr = %bound, tls = new.tls, "shellac listening (reload)");
                loops.insert(bound, start_accepting(listener, new.tls, shared.clone()));
            }
            Err(error) => {
                tracing::error!(%addr, %error, "cannot listen on the new address; keeping the others")
            }
        }
    }
}

fn start_accepting(listener: TcpListener, tls: bool, shared: Arc<Shared>) -> watch::Sender<Mode> {
    let (mode_tx, mode_rx) = watch::channel(Mode::of(tls));
    tokio::spawn(accept_loop(listener, shared, mode_rx));
    mode_tx
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut mode: watch::Receiver<Mode>) {
    let mut stop_rx = shared.stop_rx.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_rx.changed() => return,
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Stop {
                    return;
                }
                continue;
            }
        };
        let tls = *mode.borrow() == Mode::Tls;
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
        let current = shared.current.clone();
        let settings = shared.settings.load_full();
        let acceptor = if tls {
            match shared.tls.load_full() {
                Some(acceptor) => Some(acceptor),
                None => {
                    tracing::warn!(client = %client, "TLS listener without certificates: connection closed");
                    continue;
                }
            }
        } else {
            None
        };
        let permit = match shared.cap.load_full() {
            None => None,
            Some(cap) => match cap.try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::warn!(client = %client, "max_connections reached: answering 503");
                    let proxy = current.load_full();
                    tokio::spawn(async move {
                        match acceptor {
                            None => conn::refuse_connection(stream, proxy, &settings).await,
                            Some(acceptor) => {
                                if let Some(stream) =
                                    tls::handshake(&acceptor, stream, client, &settings).await
                                {
                                    conn::refuse_connection(stream, proxy, &settings).await
                                }
                            }
                        }
                    });
                    continue;
                }
            },
        };
        let stop_rx = shared.stop_rx.clone();
        let drain_tx = shared.drain_tx.clone();
        // Boxed before it is spawned: the connection's future is several
        // KiB, and tokio moves a task's future by value a few times as it
        // starts and finishes it; boxed, those moves copy a pointer. On
        // connection churn that was about a tenth of the instructions per
        // connection (callgrind).
        tokio::spawn(Box::pin(async move {
            match acceptor {
                None => {
                    conn::serve_connection(stream, client, current, &settings, stop_rx, false).await
                }
                Some(acceptor) => {
                    serve_tls(stream, client, &acceptor, current, &settings, stop_rx).await
                }
            }
            drop(permit);
            drop(drain_tx);
        }));
    }
}

/// A TLS connection: the handshake (bounded by `header_timeout`, given up
/// on shutdown), then the same connection code as plain HTTP.
async fn serve_tls(
    stream: TcpStream,
    client: SocketAddr,
    acceptor: &TlsAcceptor,
    current: Current,
    settings: &Settings,
    mut stop_rx: watch::Receiver<bool>,
) {
    let handshake = tokio::select! {
        handshake = tls::handshake(acceptor, stream, client, settings) => handshake,
        _ = stop_rx.changed() => return,
    };
    if let Some(stream) = handshake {
        conn::serve_connection(stream, client, current, settings, stop_rx, true).await;
    }
}
