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
//!
//! # PROXY protocol, Unix sockets, `":port"`
//!
//! A `proxy_protocol = true` listener reads the PROXY header first
//! (`proxy_protocol.rs`; also inside the cap, bounded by `header_timeout`,
//! before any TLS handshake), and its source address is the connection's
//! client from then on. Unix-socket and `":port"` listeners are bound in
//! `listener.rs`; every listener kind is served, reloaded, capped and
//! drained the same way.

mod conn;
mod framing;
mod listener;
mod proxy_protocol;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{Listen, ListenAddr};
use crate::generation::Current;
use crate::peer::ClientAddr;
use listener::{Accepted, Stream};

pub use conn::Settings;
pub use listener::{bind, Bound, Listener};

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
/// listener whose address stays but whose `tls` or `proxy_protocol` flips
/// is switched in place (binding the address again while the old socket
/// is open would fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Serve { tls: bool, proxy_protocol: bool },
    Stop,
}

impl Mode {
    fn of(listen: &Listen) -> Mode {
        Mode::Serve {
            tls: listen.tls,
            proxy_protocol: listen.proxy_protocol,
        }
    }
}

fn semaphore(max_connections: usize) -> Option<Arc<Semaphore>> {
    (max_connections > 0).then(|| Arc::new(Semaphore::new(max_connections)))
}

/// Serves `listeners` (bound in the order of `[server] listen`, whose
/// entries say which are TLS or PROXY) until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish for up to `[server] drain_timeout` and returns.
/// Each time `reloaded` changes, the listeners follow the current
/// configuration's `[server] listen` (new addresses bound, old ones closed;
/// their open connections finish) and new connections get its settings.
pub async fn serve(
    listeners: Vec<Listener>,
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
    let mut loops: HashMap<Bound, watch::Sender<Mode>> = HashMap::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mode = configured.get(i).map_or(
            Mode::Serve {
                tls: false,
                proxy_protocol: false,
            },
            Mode::of,
        );
        if let Some(bound) = listener.bound() {
            loops.insert(bound, start_accepting(listener, mode, shared.clone()));
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

/// Whether an address is bound to itself again (not port 0, which binds
/// to another port each time).
fn fixed(addr: &ListenAddr) -> bool {
    match addr {
        ListenAddr::Tcp(addr) => addr.port() != 0,
        ListenAddr::AllInterfaces(port) => *port != 0,
        ListenAddr::Unix(_) => true,
    }
}

/// Binds the addresses that are new in `wanted`, stops the loops of those
/// that are gone, and switches those whose `tls` or `proxy_protocol`
/// changed (a Unix socket whose `mode` changed gets it). A bind failure is
/// logged and the rest goes on.
async fn follow_listen(
    wanted: &[Listen],
    before: &[Listen],
    loops: &mut HashMap<Bound, watch::Sender<Mode>>,
    shared: &Arc<Shared>,
) {
    // The same fixed address on both sides, only its settings differ.
    let stays =
        |l: &Listen, other: &[Listen]| fixed(&l.addr) && other.iter().any(|o| o.addr == l.addr);
    for switched in wanted
        .iter()
        .filter(|l| !before.contains(l) && stays(l, before))
    {
        for (bound, mode) in loops.iter().filter(|(b, _)| b.is_from(&switched.addr)) {
            let _ = mode.send(Mode::of(switched));
            if let (Bound::Unix(path), Some(bits)) = (bound, switched.mode) {
                use std::os::unix::fs::PermissionsExt;
                if let Err(error) =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits))
                {
                    tracing::error!(addr = %bound, %error, "cannot change the socket's mode");
                }
            }
            tracing::info!(
                addr = %bound,
                tls = switched.tls,
                proxy_protocol = switched.proxy_protocol,
                "listener switched (reload)"
            );
        }
    }
    for gone in before
        .iter()
        .filter(|l| !wanted.contains(l) && !stays(l, wanted))
    {
        // Port-0 addresses were bound to another port: matched by IP.
        let bound: Vec<Bound> = loops
            .keys()
            .filter(|b| b.is_from(&gone.addr))
            .cloned()
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
        .filter(|l| !before.contains(l) && !stays(l, before))
    {
        match bind(new).await {
            Ok(listener) => {
                let Some(bound) = listener.bound() else {
                    continue;
                };
                tracing::info!(addr = %bound, tls = new.tls, proxy_protocol = new.proxy_protocol, "shellac listening (reload)");
                loops.insert(
                    bound,
                    start_accepting(listener, Mode::of(new), shared.clone()),
                );
            }
            Err(error) => {
                tracing::error!(addr = %new.addr, %error, "cannot listen on the new address; keeping the others")
            }
        }
    }
}

fn start_accepting(listener: Listener, mode: Mode, shared: Arc<Shared>) -> watch::Sender<Mode> {
    let (mode_tx, mode_rx) = watch::channel(mode);
    tokio::spawn(accept_loop(listener, shared, mode_rx));
    mode_tx
}

/// Accepts until stopped; the listener (and a Unix socket's file) goes
/// when it returns.
async fn accept_loop(listener: Listener, shared: Arc<Shared>, mut mode: watch::Receiver<Mode>) {
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
        let Mode::Serve {
            tls,
            proxy_protocol,
        } = *mode.borrow()
        else {
            return;
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                start_connection(stream, ClientAddr::Ip(peer), tls, proxy_protocol, &shared)
            }
            Ok(Accepted::Unix(stream)) => {
                start_connection(stream, ClientAddr::Unix, tls, proxy_protocol, &shared)
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a moment rather
                // than spin on an error that will repeat at once.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Takes a `max_connections` permit for a connection just accepted from
/// `peer` and spawns its task (or the 503 refusal when none is free).
fn start_connection<S: Stream>(
    stream: S,
    peer: ClientAddr,
    tls: bool,
    proxy_protocol: bool,
    shared: &Shared,
) {
    let current = shared.current.clone();
    let settings = shared.settings.load_full();
    let acceptor = if tls {
        match shared.tls.load_full() {
            Some(acceptor) => Some(acceptor),
            None => {
                tracing::warn!(client = %peer, "TLS listener without certificates: connection closed");
                return;
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
                tracing::warn!(client = %peer, "max_connections reached: answering 503");
                tokio::spawn(async move {
                    refuse(stream, peer, proxy_protocol, acceptor, current, &settings).await
                });
                return;
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
        serve_accepted(
            stream,
            peer,
            proxy_protocol,
            acceptor,
            current,
            &settings,
            stop_rx,
        )
        .await;
        drop(permit);
        drop(drain_tx);
    }));
}

/// One accepted connection: its PROXY header on a `proxy_protocol`
/// listener, its TLS handshake on a TLS one, then HTTP.
async fn serve_accepted<S: Stream>(
    mut stream: S,
    peer: ClientAddr,
    proxy_protocol: bool,
    acceptor: Option<Arc<TlsAcceptor>>,
    current: Current,
    settings: &Settings,
    mut stop_rx: watch::Receiver<bool>,
) {
    let client = if proxy_protocol {
        let read = tokio::select! {
            read = proxy_protocol::read_header(&mut stream, peer, settings.proxy_header_timeout()) => read,
            _ = stop_rx.changed() => return,
        };
        match read {
            Ok(client) => client,
            Err(error) => return refused_header(&current, peer, &error),
        }
    } else {
        peer
    };
    match acceptor {
        None => conn::serve_connection(stream, client, current, settings, stop_rx, false).await,
        Some(acceptor) => serve_tls(stream, client, &acceptor, current, settings, stop_rx).await,
    }
}

/// A connection over `max_connections`: its PROXY header and handshake
/// still, so that it can be answered the 503 in what it speaks.
async fn refuse<S: Stream>(
    mut stream: S,
    peer: ClientAddr,
    proxy_protocol: bool,
    acceptor: Option<Arc<TlsAcceptor>>,
    current: Current,
    settings: &Settings,
) {
    if proxy_protocol {
        let read =
            proxy_protocol::read_header(&mut stream, peer, settings.proxy_header_timeout()).await;
        if let Err(error) = read {
            return refused_header(&current, peer, &error);
        }
    }
    let proxy = current.load_full();
    match acceptor {
        None => conn::refuse_connection(stream, proxy, settings).await,
        Some(acceptor) => {
            if let Some(stream) = tls::handshake(&acceptor, stream, peer, settings).await {
                conn::refuse_connection(stream, proxy, settings).await
            }
        }
    }
}

/// Counts and logs a connection closed for its PROXY header.
fn refused_header(current: &Current, peer: ClientAddr, error: &proxy_protocol::HeaderError) {
    current.load().ops().metrics.proxy_protocol_errors.inc();
    proxy_protocol::log_refused(peer, error);
}

/// A TLS connection: the handshake (bounded by `header_timeout`, given up
/// on shutdown), then the same connection code as plain HTTP.
async fn serve_tls<S: Stream>(
    stream: S,
    client: ClientAddr,
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
