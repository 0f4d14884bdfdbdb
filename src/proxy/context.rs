//! `RequestCtx`: what happened to one request, filled in by each phase of
//! `proxy::handle` and read once at its single exit for the log line (and,
//! later, metrics).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};

/// How the cache took part in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served from a fresh cached object.
    Hit,
    /// Served from a stale object (grace, `max-stale`, stale-if-error).
    HitStale,
    /// Looked up, not found usable, fetched.
    Miss,
    /// Not looked up (unsafe method, credentials), fetched.
    Pass,
    /// Answered by Shellac itself (errors).
    Synth,
}

impl Outcome {
    /// The lower-case label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::HitStale => "hit_stale",
            Outcome::Miss => "miss",
            Outcome::Pass => "pass",
            Outcome::Synth => "synth",
        }
    }
}

/// The facts about one request that logs and metrics need.
pub struct RequestCtx {
    /// Request id, shown as `XID` on synthetic pages.
    pub xid: u64,
    /// When Shellac started handling it.
    pub start: Instant,
    /// The client's address.
    pub client: SocketAddr,
    /// The method.
    pub method: Method,
    /// How the cache took part.
    pub outcome: Outcome,
    /// The backend fetched from, if any.
    pub backend: Option<Arc<str>>,
    /// Why a fetch failed or a synthetic answer was made.
    pub error: Option<&'static str>,
    /// Why a fetched response was not stored.
    pub not_stored: Option<&'static str>,
    /// It waited for another request's fetch of the same key.
    pub collapsed: bool,
    /// Retries made by the fetch phase (sent as `X-Shellac-Retries`).
    pub retries: u32,
    /// Every backend tried, in order.
    pub tried: Vec<Arc<str>>,
    /// The client prefers a JSON error body to HTML.
    pub wants_json: bool,
}

impl RequestCtx {
    /// A context for a request that just arrived.
    pub fn new(xid: u64, client: SocketAddr, method: Method) -> RequestCtx {
        RequestCtx {
            xid,
            start: Instant::now(),
            client,
            method,
            outcome: Outcome::Pass,
            backend: None,
            error: None,
            not_stored: None,
            collapsed: false,
            retries: 0,
            tried: Vec::new(),
            wants_json: false,
        }
    }

    /// The single exit: one access-log line per request.
    pub fn finish(&self, uri: &http::Uri, status: StatusCode) {
        tracing::info!(
            target: "shellac::access",
            xid = self.xid,
            client = %self.client.ip(),
            method = %self.method,
            url = %uri,
            status = status.as_u16(),
            cache = self.outcome.as_str(),
            backend = self.backend.as_deref().unwrap_or("-"),
            error = self.error.unwrap_or("-"),
            retries = self.retries,
            tried = %Tried(&self.tried),
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

/// The backends tried, comma-separated, for the log line.
struct Tried<'a>(&'a [Arc<str>]);

impl std::fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}
