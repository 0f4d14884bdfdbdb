//! `[cluster]`: consistent-hash peering. Each peer becomes a backend named
//! `peer:<address as written>` with the built-in backend defaults, except a
//! shorter connect timeout and a quicker ejection (peers share a network,
//! and a dead peer's keys should move on fast).

use crate::config::check::{resolve, span};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawCluster;
use crate::config::{BackendConfig, ClusterConfig};

/// `[cluster]`: `self` must be one of `peers`, spelled the same.
pub(super) fn build(raw: &RawCluster, loc: &Locator<'_>) -> Result<ClusterConfig, ConfigError> {
    if raw.peers.get_ref().is_empty() {
        return Err(loc.error(
            span(&raw.peers),
            "expected at least one peer \"host:port\" (this node included)",
        ));
    }
    let mut peers: Vec<BackendConfig> = Vec::new();
    for peer in raw.peers.get_ref() {
        let text = peer.get_ref().trim();
        let addr = resolve(text).map_err(|m| loc.error(span(peer), m))?[0];
        let name = format!("peer:{text}");
        if peers.iter().any(|p| p.name == name) {
            return Err(loc.error(
                span(peer),
                format!("expected each peer once, \"{text}\" is listed twice"),
            ));
        }
        let mut backend = BackendConfig::with_defaults(&name, addr);
        backend.address = text.to_string();
        backend.connect_timeout = defaults::PEER_CONNECT_TIMEOUT;
        backend.consecutive_failures = defaults::PEER_CONSECUTIVE_FAILURES;
        peers.push(backend);
    }
    let me = raw.self_.get_ref().trim();
    let self_index = peers.iter().position(|p| p.address == me).ok_or_else(|| {
        loc.error(
            span(&raw.self_),
            format!("expected one of the peers, spelled the same, found \"{me}\""),
        )
    })?;
    Ok(ClusterConfig { peers, self_index })
}
