//! Backends and pools: who Shellac fetches from, and how it picks one.
//!
//! A [`Backend`] owns its pooled client; a [`Pool`] picks among its backends
//! by policy. Health probes, ejection and the other policies plug in here.

mod client;
mod error;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use client::BackendClient;
pub use error::FetchError;

use crate::config::{Config, Policy};

/// One origin server.
pub struct Backend {
    /// Its pooled connections and limits.
    pub client: BackendClient,
}

impl Backend {
    /// The backend's configured name.
    pub fn name(&self) -> &Arc<str> {
        self.client.name()
    }
}

/// A group of backends that share traffic.
pub struct Pool {
    name: Arc<str>,
    policy: Policy,
    members: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

impl Pool {
    /// The pool's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The backend the next request goes to.
    pub fn pick(&self) -> Result<&Arc<Backend>, FetchError> {
        if self.members.is_empty() {
            return Err(FetchError::NoBackend {
                pool: self.name.clone(),
            });
        }
        let index = match self.policy {
            // Relaxed is enough: the counter only spreads load, it orders nothing.
            // Until director.rs lands, every policy is round robin.
            Policy::RoundRobin
            | Policy::Random
            | Policy::Hash
            | Policy::Fallback
            | Policy::LeastBusy => self.next.fetch_add(1, Ordering::Relaxed) % self.members.len(),
        };
        Ok(&self.members[index])
    }
}

/// Every backend and pool of one configuration.
pub struct Backends {
    /// In configuration order.
    pub backends: Vec<Arc<Backend>>,
    /// In configuration order; routes refer to them by index.
    pub pools: Vec<Pool>,
}

impl Backends {
    /// Builds clients for every backend of `config` (no connection is opened yet).
    pub fn new(config: &Config) -> Backends {
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| {
                Arc::new(Backend {
                    client: BackendClient::new(b.clone()),
                })
            })
            .collect();
        let pools = config
            .pools
            .iter()
            .map(|p| Pool {
                name: Arc::from(p.name.as_str()),
                policy: p.policy,
                members: p.backends.iter().map(|&i| backends[i].clone()).collect(),
                next: AtomicUsize::new(0),
            })
            .collect();
        Backends { backends, pools }
    }
}
