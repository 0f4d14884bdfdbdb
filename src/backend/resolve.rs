//! The addresses a backend named by host name has now, and the task that
//! looks the name up again every `resolve_interval`.
//!
//! The name is resolved once at load (`config/build/backend.rs`: a name
//! that does not resolve is an error there, with its file and line); after
//! that one tokio task per such backend asks the resolver again. New
//! connections take the latest answer's addresses in turn (round robin;
//! one that refuses is passed over for the next within the same connect);
//! connections already open, pooled ones included, stay where they are
//! until they close: a moved backend is followed as its old connections
//! age out (`backend_idle_timeout`, the backend's own `Keep-Alive`).
//!
//! A failed lookup, or an empty answer, keeps the last good answer: a DNS
//! outage must not take a backend that still answers out of service. It
//! is counted (`shellac_backend_resolve_errors_total{backend}`) and kept
//! for `/backends`; the log says so once when lookups start failing (warn)
//! and once when they work again (info), never once per interval.
//!
//! The task holds only a `Weak` reference to its backend, as the probes
//! do, so it ends when the generation's backends are dropped (a reload
//! that changed the backend, or shutdown); a backend a reload takes over
//! unchanged keeps its task and its answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use super::{Backend, RequestBody};
use crate::config::BackendAddr;
use crate::metrics::Metrics;

/// A backend's current addresses (empty for a Unix socket) and the state
/// of its lookups. Read on every new connection: one atomic load and one
/// atomic add, no lock.
pub(super) struct Addresses {
    current: ArcSwap<Vec<SocketAddr>>,
    /// The next address to connect to, modulo the answer's length.
    next: AtomicUsize,
    /// The last lookup failed (for logging once per change).
    failing: AtomicBool,
    /// The last failure, for `/backends`; cleared by a good answer.
    last_error: Mutex<Option<String>>,
}

impl Addresses {
    /// The answer at load.
    pub(super) fn new(addr: &BackendAddr) -> Addresses {
        let initial = match addr {
            BackendAddr::Tcp { resolved, .. } => resolved.clone(),
            BackendAddr::Unix(_) => Vec::new(),
        };
        Addresses {
            current: ArcSwap::from_pointee(initial),
            next: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    /// The addresses for the next new connection, in the order to try
    /// them: the answer rotated by one more each time, so new connections
    /// take its addresses in turn, and one that refuses is passed over for
    /// the next (as a connect to a name tries each address: `localhost`
    /// answers `::1` too, where an app may not listen). Empty only for a
    /// Unix socket.
    pub(super) fn candidates(&self) -> impl Iterator<Item = SocketAddr> {
        let current = self.current.load_full();
        let start = match current.len() {
            0 => 0,
            n => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        let n = current.len();
        (0..n).map(move |k| current[(start + k) % n])
    }

    /// The first of [`Addresses::candidates`].
    #[cfg(test)]
    fn pick(&self) -> Option<SocketAddr> {
        self.candidates().next()
    }

    /// The addresses in use (for the admin view).
    pub(super) fn current(&self) -> Arc<Vec<SocketAddr>> {
        self.current.load_full()
    }

    /// Why the last lookup failed, when it did.
    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A lookup's answer: a good one replaces the addresses; a failure or
    /// an empty answer keeps them. Returns the change of state to log:
    /// `Some(true)` when lookups started failing, `Some(false)` when they
    /// work again, `None` when nothing changed.
    fn record(&self, answer: Result<Vec<SocketAddr>, String>) -> Option<bool> {
        let answer = answer.and_then(|addrs| {
            if addrs.is_empty() {
                Err(String::from("the name resolved to no address"))
            } else {
                Ok(addrs)
            }
        });
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match answer {
            Ok(addrs) => {
                if **self.current.load() != addrs {
                    self.current.store(Arc::new(addrs));
                }
                *last_error = None;
                self.failing.swap(false, Ordering::AcqRel).then_some(false)
            }
            Err(error) => {
                *last_error = Some(error);
                (!self.failing.swap(true, Ordering::AcqRel)).then_some(true)
            }
        }
    }
}

/// Starts the re-resolution task of `backend` when its address is a host
/// name and `resolve_interval` is not zero (inside a tokio runtime).
pub(super) fn spawn<B: RequestBody>(backend: &Arc<Backend<B>>, metrics: &Metrics) {
    let config = backend.config();
    if !config.addr.is_name() || config.resolve_interval.is_zero() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime: backend names are not resolved again");
        return;
    };
    let errors = metrics.backend_resolve_errors(backend.name());
    runtime.spawn(run(Arc::downgrade(backend), errors));
}

async fn run<B: RequestBody>(weak: Weak<Backend<B>>, errors: Counter) {
    loop {
        let Some(backend) = weak.upgrade() else {
            return;
        };
        let config = backend.config();
        let interval = config.resolve_interval;
        let BackendAddr::Tcp { host, port, .. } = &config.addr else {
            return;
        };
        let (host, port, resolver) = (host.clone(), *port, config.resolver.clone());
        // Hold no strong reference while sleeping or waiting for the
        // resolver, so dropping the backends ends this task.
        drop(backend);
        tokio::time::sleep(interval).await;
        let answer = resolver
            .lookup(&host, port)
            .await
            .map_err(|error| error.to_string());
        let Some(backend) = weak.upgrade() else {
            return;
        };
        let addresses = backend.client.addresses();
        if answer.as_ref().map_or(true, Vec::is_empty) {
            errors.inc();
        }
        match addresses.record(answer) {
            Some(true) => tracing::warn!(
                backend = %backend.name(),
                host = %host,
                error = addresses.last_error().as_deref().unwrap_or("-"),
                kept = ?addresses.current(),
                "backend name lookup failed; keeping the last good addresses"
            ),
            Some(false) => tracing::info!(
                backend = %backend.name(),
                host = %host,
                addresses = ?addresses.current(),
                "backend name lookup works again"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn answers_are_used_in_turn_and_a_failure_keeps_the_last_good_one() {
        let addresses = Addresses::new(&BackendAddr::literal(addr(1)));
        assert_eq!(addresses.pick(), Some(addr(1)));
        assert_eq!(addresses.record(Ok(vec![addr(2), addr(3)])), None);
        let picked: Vec<_> = (0..4).filter_map(|_| addresses.pick()).collect();
        assert!(picked.contains(&addr(2)) && picked.contains(&addr(3)));
        assert_eq!(addresses.record(Err("timeout".into())), Some(true));
        assert_eq!(addresses.record(Ok(Vec::new())), None, "logged once");
        assert_eq!(addresses.current().as_slice(), &[addr(2), addr(3)]);
        assert!(addresses.last_error().is_some());
        assert_eq!(addresses.record(Ok(vec![addr(4)])), Some(false));
        assert_eq!(addresses.pick(), Some(addr(4)));
        assert_eq!(addresses.last_error(), None);
    }
}
