//! Hot reload (SIGHUP, `POST /reload`): read and validate the file again;
//! on error keep running on the old configuration and say why; on success
//! switch atomically. In-flight requests finish on the generation they
//! started on, new requests use the new one; the cache, the metrics and the
//! backends whose settings did not change (with their connection pools and
//! health history) carry over. This module reads the file and swaps;
//! building the new generation is `generation::next`'s job.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::generation::{self, Current};

/// Swaps in a new proxy generation from the configuration file.
pub struct Reloader {
    current: Current,
    notify: watch::Sender<()>,
    /// `--demo` replaces the configured backends on every load.
    demo_origin: Option<SocketAddr>,
}

impl Reloader {
    /// A reloader for `current`; `notify` tells the server to follow
    /// listener and connection-setting changes.
    pub fn new(
        current: Current,
        notify: watch::Sender<()>,
        demo_origin: Option<SocketAddr>,
    ) -> Reloader {
        Reloader {
            current,
            notify,
            demo_origin,
        }
    }

    /// Reloads from the file the current configuration came from.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let old = self.current.load_full();
        let path = old.config().file.clone();
        let mut config = match Config::load(&path) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "reload failed: still running on the previous configuration");
                return Err(error);
            }
        };
        if let Some(origin) = self.demo_origin {
            config = config.with_single_backend("demo", origin);
        }
        self.current.store(Arc::new(generation::next(config, &old)));
        let _ = self.notify.send(());
        tracing::info!(file = %path.display(), "configuration reloaded");
        Ok(())
    }
}
