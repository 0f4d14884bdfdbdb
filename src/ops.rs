//! What outlives a reload: metrics, the maintenance switch, the draining
//! flag and the request-id counter. The configuration-bound parts of the
//! proxy are rebuilt on reload; this is shared by every generation of it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::Metrics;

/// Shared operational state.
pub struct Ops {
    /// Every metric.
    pub metrics: Metrics,
    draining: AtomicBool,
    maintenance_manual: AtomicBool,
    maintenance_file: AtomicBool,
    maintenance_retry_after: AtomicU64,
    maintenance_path: arc_swap::ArcSwapOption<PathBuf>,
    next_xid: AtomicU64,
}

impl Default for Ops {
    fn default() -> Self {
        Ops {
            metrics: Metrics::new(),
            draining: AtomicBool::new(false),
            maintenance_manual: AtomicBool::new(false),
            maintenance_file: AtomicBool::new(false),
            maintenance_retry_after: AtomicU64::new(0),
            maintenance_path: arc_swap::ArcSwapOption::empty(),
            next_xid: AtomicU64::new(1),
        }
    }
}

impl Ops {
    /// A new request id (Varnish's XID), unique for the process's life.
    pub fn next_xid(&self) -> u64 {
        self.next_xid.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks the process as shutting down: `/health` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Switches maintenance mode by hand (`POST /maintenance`).
    pub fn set_maintenance(&self, on: bool, retry_after: Option<Duration>) {
        if let Some(after) = retry_after {
            self.maintenance_retry_after
                .store(after.as_secs(), Ordering::Relaxed);
        }
        self.maintenance_manual.store(on, Ordering::Release);
    }

    /// `Some(retry_after)` while maintenance is on, by hand or by file;
    /// `fallback` when no `retry_after` was given.
    pub fn maintenance(&self, fallback: Duration) -> Option<Duration> {
        let on = self.maintenance_manual.load(Ordering::Acquire)
            || self.maintenance_file.load(Ordering::Acquire);
        on.then(
            || match self.maintenance_retry_after.load(Ordering::Relaxed) {
                0 => fallback,
                secs => Duration::from_secs(secs),
            },
        )
    }

    /// Sets the file whose existence turns maintenance on (on load and reload).
    pub fn set_maintenance_file(&self, path: Option<PathBuf>) {
        if path.is_none() {
            self.maintenance_file.store(false, Ordering::Release);
        }
        self.maintenance_path.store(path.map(std::sync::Arc::new));
    }

    /// Polls the maintenance file once a second, for as long as `self` lives.
    pub fn watch_maintenance_file(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let ops = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(ops) = ops.upgrade() else { return };
                let Some(path) = ops.maintenance_path.load_full() else {
                    continue;
                };
                let exists = path.try_exists().unwrap_or(false);
                if ops.maintenance_file.swap(exists, Ordering::AcqRel) != exists {
                    tracing::warn!(file = %path.display(), on = exists, "maintenance mode changed by maintenance_file");
                }
            }
        })
    }
}
