//! Every metric Shellac exports, registered once, with the names operators
//! scrape (`shellac_` prefix, Prometheus conventions). The request path only
//! bumps handles: the per-outcome counters and histograms are created up
//! front, so a cache hit never looks a label set up.
//!
//! This is a leaf: it owns the vocabulary the counters are keyed by
//! ([`Outcome`], [`Attempt`]; reasons are [`Reason`]s) and is handed plain values ([`Finished`]) at
//! the pipeline's single exit, so the cache's second tier, the operational
//! state and the admin listener can all use it without reaching up into the
//! request path.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::reason::Reason;

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

/// One request sent to a backend: its first-byte time, or why it failed.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The backend's name.
    pub backend: Arc<str>,
    /// Time to the response head, or the failure reason (a 5xx answer
    /// counts as `status_5xx`).
    pub result: Result<Duration, Reason>,
}

/// What the metrics count of one finished request, read from its context
/// at the pipeline's single exit. Borrowed plain values: building one costs
/// no allocation.
#[derive(Clone, Copy, Debug)]
pub struct Finished<'a> {
    /// How the cache took part.
    pub outcome: Outcome,
    /// The status sent to the client.
    pub status: u16,
    /// From the request head to the response head.
    pub duration: Duration,
    /// Why a fetch failed or a synthetic answer was made.
    pub reason: Option<Reason>,
    /// It waited for another request's fetch of the same key.
    pub collapsed: bool,
    /// Every backend request made for it, retries included, in order.
    pub attempts: &'a [Attempt],
}

/// `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// `backend` label. The name is shared with the backend (`Arc<str>`), so
/// counting a request allocates no label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: Arc<str>,
}

/// `backend` and `reason` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendReason {
    backend: Arc<str>,
    reason: &'static str,
}

/// `pool` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

/// `status` and `reason` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SynthLabel {
    status: u16,
    reason: &'static str,
}

/// `names` label of the TLS certificate gauge: a certificate's names,
/// comma-separated.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabel {
    names: String,
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Hit,
    Outcome::HitStale,
    Outcome::Miss,
    Outcome::Pass,
    Outcome::Synth,
];

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Hit => 0,
        Outcome::HitStale => 1,
        Outcome::Miss => 2,
        Outcome::Pass => 3,
        Outcome::Synth => 4,
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … 16 s: a cache hit and a GPU-heavy backend on one scale.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metrics of one Shellac process.
pub struct Metrics {
    registry: Registry,
    requests: [Counter; 5],
    durations: [Histogram; 5],
    synth: Family<SynthLabel, Counter>,
    backend_requests: Family<BackendLabel, Counter>,
    backend_failures: Family<BackendReason, Counter>,
    backend_retries: Family<BackendLabel, Counter>,
    backend_first_byte: Family<BackendLabel, Histogram, fn() -> Histogram>,
    backend_healthy: Family<BackendLabel, Gauge>,
    backend_in_flight: Family<BackendLabel, Gauge>,
    backend_queue: Family<BackendLabel, Gauge>,
    backend_idle_connections: Family<BackendLabel, Gauge>,
    pool_panics: Family<PoolLabel, Counter>,
    backend_resolve_errors: Family<BackendLabel, Counter>,
    cache_objects: Gauge,
    cache_bytes: Gauge,
    /// Objects evicted to stay within `capacity` (not expiries).
    pub cache_evictions: Counter,
    coalesced: Counter,
    rate_limited: Counter,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Diagnostic (stderr) log lines dropped because nobody read them fast
    /// enough: logging never blocks serving.
    pub log_dropped: Counter,
    /// Connections to a `proxy_protocol = true` listener closed because
    /// they did not start with a valid PROXY header (in time, within the
    /// size limit).
    pub proxy_protocol_errors: Counter,
    bans_active: Gauge,
    /// Purges and bans accepted from clients, by protocol (the handles of
    /// [`INVALIDATION_PROTOCOLS`], in order).
    invalidations: [Counter; 5],
    /// Synthetic 503s, for the status page (the labelled family has the detail).
    synth_503: Counter,
    /// The second tier (`[cache.l2]`) and invalidation fan-out.
    pub l2: L2Metrics,
    /// Upgrade tunnels (WebSocket).
    pub tunnels: TunnelMetrics,
    /// ESI includes made (`proxy/esi.rs`), whatever became of them.
    pub esi_includes: Counter,
    /// ESI includes that inserted nothing: a failed fragment (an error
    /// status, a failed body), a foreign host, or one past `max_depth`.
    pub esi_include_errors: Counter,
    /// Each loaded TLS certificate's `notAfter`, as Unix time.
    tls_certificate_expiry: Family<CertificateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests_family = Family::<OutcomeLabel, Counter>::default();
        let durations_family =
            Family::<OutcomeLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let requests = OUTCOMES.map(|o| {
            requests_family
                .get_or_create(&OutcomeLabel {
                    outcome: o.as_str(),
                })
                .clone()
        });
        let durations = OUTCOMES.map(|o| {
            durations_family
                .get_or_create(&OutcomeLabel {
                    outcome: o.as_str(),
                })
                .clone()
        });
        registry.register(
            "shellac_requests",
            "Client requests by how the cache took part",
            requests_family,
        );
        registry.register(
            "shellac_request_duration_seconds",
            "Time from request head to response head, by outcome",
            durations_family,
        );
        let metrics = Metrics {
            requests,
            durations,
            synth: Family::default(),
            backend_requests: Family::default(),
            backend_failures: Family::default(),
            backend_retries: Family::default(),
            backend_first_byte: Family::new_with_constructor(latency_histogram),
            backend_healthy: Family::default(),
            backend_in_flight: Family::default(),
            backend_queue: Family::default(),
            backend_idle_connections: Family::default(),
            pool_panics: Family::default(),
            backend_resolve_errors: Family::default(),
            cache_objects: Gauge::default(),
            cache_bytes: Gauge::default(),
            cache_evictions: Counter::default(),
            coalesced: Counter::default(),
            rate_limited: Counter::default(),
            access_log_dropped: Counter::default(),
            log_dropped: Counter::default(),
            proxy_protocol_errors: Counter::default(),
            bans_active: Gauge::default(),
            invalidations: Default::default(),
            synth_503: Counter::default(),
            l2: L2Metrics::default(),
            tunnels: TunnelMetrics::default(),
            esi_includes: Counter::default(),
            esi_include_errors: Counter::default(),
            tls_certificate_expiry: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "shellac_synth_responses",
            "Responses Shellac made itself, by status and reason",
            metrics.synth.clone(),
        );
        registry.register(
            "shellac_backend_requests",
            "Requests sent to each backend (retries included)",
            metrics.backend_requests.clone(),
        );
        registry.register(
            "shellac_backend_failures",
            "Failed backend fetches, by reason",
            metrics.backend_failures.clone(),
        );
        registry.register(
            "shellac_backend_retries",
            "Retries sent to each backend",
            metrics.backend_retries.clone(),
        );
        registry.register(
            "shellac_backend_first_byte_seconds",
            "Time from sending a request to a backend to its response head",
            metrics.backend_first_byte.clone(),
        );
        registry.register(
            "shellac_backend_healthy",
            "1 when the backend may take traffic (probe, ejection, forced state)",
            metrics.backend_healthy.clone(),
        );
        registry.register(
            "shellac_backend_in_flight",
            "Requests a backend is working on now",
            metrics.backend_in_flight.clone(),
        );
        registry.register(
            "shellac_backend_queue_length",
            "Requests waiting for a backend's max_connections",
            metrics.backend_queue.clone(),
        );
        registry.register(
            "shellac_backend_idle_connections",
            "Pooled keep-alive connections to each backend",
            metrics.backend_idle_connections.clone(),
        );
        registry.register(
            "shellac_backend_resolve_errors",
            "Failed or empty lookups of a backend's host name (the last good addresses were kept)",
            metrics.backend_resolve_errors.clone(),
        );
        registry.register(
            "shellac_pool_panic",
            "Entries into panic mode: the pool had no usable backend and routed to every backend not sick by its probe",
            metrics.pool_panics.clone(),
        );
        registry.register(
            "shellac_cache_objects",
            "Entries in the cache (objects, variants markers, hit-for-miss markers)",
            metrics.cache_objects.clone(),
        );
        registry.register(
            "shellac_cache_bytes",
            "Bytes the cache holds, by its weigher",
            metrics.cache_bytes.clone(),
        );
        registry.register(
            "shellac_cache_evictions",
            "Objects evicted to stay within capacity",
            metrics.cache_evictions.clone(),
        );
        registry.register(
            "shellac_coalesced_waiters",
            "Requests that waited for another request's fetch",
            metrics.coalesced.clone(),
        );
        registry.register(
            "shellac_rate_limited",
            "Requests refused with 429 by a rate limit",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "shellac_proxy_protocol_errors",
            "Connections closed for lack of a valid PROXY protocol header",
            metrics.proxy_protocol_errors.clone(),
        );
        registry.register(
            "shellac_log_dropped",
            "Diagnostic log lines dropped because stderr was not read fast enough",
            metrics.log_dropped.clone(),
        );
        registry.register(
            "shellac_access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            metrics.access_log_dropped.clone(),
        );
        registry.register(
            "shellac_bans_active",
            "Bans not yet applied to every object",
            metrics.bans_active.clone(),
        );
        let invalidations = Family::<ProtocolLabel, Counter>::default();
        let metrics = Metrics {
            invalidations: INVALIDATION_PROTOCOLS.map(|protocol| {
                invalidations
                    .get_or_create(&ProtocolLabel { protocol })
                    .clone()
            }),
            ..metrics
        };
        registry.register(
            "shellac_invalidations",
            "Purges and bans accepted from clients, by protocol (purge, magento2, wordpress, drupal, xkey)",
            invalidations,
        );
        registry.register(
            "shellac_tls_certificate_expiry_seconds",
            "When each TLS certificate expires (its notAfter), as Unix time, by its names",
            metrics.tls_certificate_expiry.clone(),
        );
        registry.register(
            "shellac_esi_includes",
            "ESI includes processed in assembled pages",
            metrics.esi_includes.clone(),
        );
        registry.register(
            "shellac_esi_include_errors",
            "ESI includes that inserted nothing (failed fragment, foreign host, past max_depth)",
            metrics.esi_include_errors.clone(),
        );
        metrics.l2.register(&mut registry);
        metrics.tunnels.register(&mut registry);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts one finished request (called once, at the pipeline's single exit).
    pub fn record(&self, request: &Finished<'_>) {
        let i = outcome_index(request.outcome);
        let status = request.status;
        self.requests[i].inc();
        self.durations[i].observe(request.duration.as_secs_f64());
        if request.outcome == Outcome::Synth && status == 503 {
            self.synth_503.inc();
        }
        if request.outcome == Outcome::Synth {
            self.synth
                .get_or_create(&SynthLabel {
                    status,
                    reason: request.reason.map_or("unknown", Reason::as_str),
                })
                .inc();
        }
        if status == 429 {
            self.rate_limited.inc();
        }
        if request.collapsed {
            self.coalesced.inc();
        }
        for (n, attempt) in request.attempts.iter().enumerate() {
            let backend = BackendLabel {
                backend: attempt.backend.clone(),
            };
            // A request shed by the queue never reached the backend.
            if !matches!(
                attempt.result,
                Err(Reason::QueueFull | Reason::QueueTimeout)
            ) {
                self.backend_requests.get_or_create(&backend).inc();
            }
            if n > 0 {
                self.backend_retries.get_or_create(&backend).inc();
            }
            match attempt.result {
                Ok(first_byte) => {
                    self.backend_first_byte
                        .get_or_create(&backend)
                        .observe(first_byte.as_secs_f64());
                }
                Err(reason) => {
                    self.backend_failures
                        .get_or_create(&BackendReason {
                            backend: backend.backend,
                            reason: reason.as_str(),
                        })
                        .inc();
                }
            }
        }
    }

    /// Counts one accepted invalidation of `protocol` (one of
    /// [`INVALIDATION_PROTOCOLS`]).
    pub fn invalidated(&self, protocol: &str) {
        if let Some(i) = INVALIDATION_PROTOCOLS.iter().position(|p| *p == protocol) {
            self.invalidations[i].inc();
        }
    }

    /// The counter of a pool's entries into panic mode, for the pool to
    /// bump (created now, so the pool shows 0 before its first panic; a
    /// reloaded pool of the same name keeps counting).
    pub fn pool_panic(&self, pool: &str) -> Counter {
        self.pool_panics
            .get_or_create(&PoolLabel {
                pool: pool.to_string(),
            })
            .clone()
    }

    /// The counter of a backend's failed name lookups, for its
    /// re-resolution task to bump (a reloaded backend of the same name
    /// keeps counting).
    pub fn backend_resolve_errors(&self, backend: &Arc<str>) -> Counter {
        self.backend_resolve_errors
            .get_or_create(&BackendLabel {
                backend: backend.clone(),
            })
            .clone()
    }

    /// Requests so far by outcome, for the status page.
    pub fn outcome_counts(&self) -> serde_json::Value {
        let mut counts = serde_json::Map::new();
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            counts.insert(outcome.as_str().to_string(), self.requests[i].get().into());
        }
        serde_json::Value::Object(counts)
    }

    /// Synthetic 503s so far.
    pub fn synth_503(&self) -> u64 {
        self.synth_503.get()
    }

    /// The TLS certificates now loaded, as `(names, notAfter in Unix
    /// seconds)`: replaces those of the previous load, so a certificate
    /// removed by a reload leaves the gauge.
    pub fn set_certificates(&self, certificates: impl IntoIterator<Item = (String, i64)>) {
        self.tls_certificate_expiry.clear();
        for (names, not_after) in certificates {
            self.tls_certificate_expiry
                .get_or_create(&CertificateLabel { names })
                .set(not_after);
        }
    }

    /// Sets the gauges that describe current state, then renders the
    /// Prometheus text format.
    pub fn render(&self, state: &Snapshot) -> String {
        self.cache_objects.set(state.cache_objects as i64);
        self.cache_bytes.set(state.cache_bytes as i64);
        self.bans_active.set(state.bans_active as i64);
        for b in &state.backends {
            let label = BackendLabel {
                backend: b.name.clone(),
            };
            self.backend_healthy
                .get_or_create(&label)
                .set(i64::from(b.healthy));
            self.backend_in_flight
                .get_or_create(&label)
                .set(b.in_flight as i64);
            self.backend_queue
                .get_or_create(&label)
                .set(b.queued as i64);
            self.backend_idle_connections
                .get_or_create(&label)
                .set(b.idle_connections as i64);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The state gauges show, read at scrape time.
pub struct Snapshot {
    /// Entries in the cache.
    pub cache_objects: u64,
    /// Bytes in the cache.
    pub cache_bytes: u64,
    /// Bans not yet applied everywhere.
    pub bans_active: usize,
    /// Per backend.
    pub backends: Vec<BackendSnapshot>,
}

/// One backend's state at scrape time.
pub struct BackendSnapshot {
    /// Its name.
    pub name: Arc<str>,
    /// May take traffic.
    pub healthy: bool,
    /// Requests in flight.
    pub in_flight: usize,
    /// Requests queued.
    pub queued: usize,
    /// Pooled idle connections.
    pub idle_connections: usize,
}

/// The invalidation protocols counted: plain `PURGE`, then the names of
/// `[cache] invalidation`.
pub const INVALIDATION_PROTOCOLS: [&str; 5] = ["purge", "magento2", "wordpress", "drupal", "xkey"];

/// `protocol` label of invalidations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// One of [`INVALIDATION_PROTOCOLS`].
    pub protocol: &'static str,
}

/// `kind` label of L2 errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L2ErrorLabel {
    /// `timeout`, `connection`, `decode` or `server`.
    pub kind: &'static str,
}

/// The second tier's metric handles, cloned into `cache::l2`.
#[derive(Clone, Default)]
pub struct L2Metrics {
    /// L1 misses answered by L2 with a usable object.
    pub hits: Counter,
    /// L1 misses L2 had nothing usable for.
    pub misses: Counter,
    /// L1 misses that did not ask L2 because its circuit breaker was open.
    pub skipped: Counter,
    /// Failed L2 operations, by kind.
    pub errors: Family<L2ErrorLabel, Counter>,
    /// Objects written to L2.
    pub writes: Counter,
    /// 1 while the circuit breaker skips L2.
    pub breaker_open: Gauge,
    /// 1 while the invalidation fan-out subscription is up.
    pub subscribed: Gauge,
    /// Invalidations (PURGE, bans, writes) this node published.
    pub invalidations_sent: Counter,
    /// Invalidations from other nodes applied here.
    pub invalidations_received: Counter,
}

impl L2Metrics {
    /// The error kinds, created up front so they export as 0.
    pub const ERROR_KINDS: [&'static str; 4] = ["timeout", "connection", "decode", "server"];

    /// Counts one error of `kind` (one of [`L2Metrics::ERROR_KINDS`]).
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&L2ErrorLabel { kind }).inc();
    }

    fn register(&self, registry: &mut Registry) {
        for kind in Self::ERROR_KINDS {
            let _ = self.errors.get_or_create(&L2ErrorLabel { kind });
        }
        registry.register(
            "shellac_l2_hits",
            "L1 misses answered from the shared second tier",
            self.hits.clone(),
        );
        registry.register(
            "shellac_l2_misses",
            "L1 misses the second tier had nothing usable for",
            self.misses.clone(),
        );
        registry.register(
            "shellac_l2_skipped",
            "L1 misses that skipped the second tier (circuit breaker open or not connected)",
            self.skipped.clone(),
        );
        registry.register(
            "shellac_l2_errors",
            "Failed second-tier operations, by kind (timeout, connection, decode, server)",
            self.errors.clone(),
        );
        registry.register(
            "shellac_l2_writes",
            "Objects written to the second tier",
            self.writes.clone(),
        );
        registry.register(
            "shellac_l2_breaker_open",
            "1 while the second tier is skipped after an error",
            self.breaker_open.clone(),
        );
        registry.register(
            "shellac_l2_subscribed",
            "1 while the invalidation fan-out subscription is up",
            self.subscribed.clone(),
        );
        registry.register(
            "shellac_invalidations_sent",
            "Invalidations this node published to the others",
            self.invalidations_sent.clone(),
        );
        registry.register(
            "shellac_invalidations_received",
            "Invalidations from other nodes applied here",
            self.invalidations_received.clone(),
        );
    }
}

/// `direction` label of the tunnel byte counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// The Upgrade tunnels' metric handles (WebSocket and other `Upgrade`
/// protocols, `proxy/tunnel.rs`). Bytes are counted as they move, so a
/// tunnel open for hours shows its traffic before it closes.
#[derive(Clone)]
pub struct TunnelMetrics {
    /// Tunnels open now.
    open: Gauge,
    /// Tunnels opened (101 relayed) so far.
    opened: Counter,
    /// Bytes from the client to the backend.
    pub client_to_backend: Counter,
    /// Bytes from the backend to the client.
    pub backend_to_client: Counter,
    bytes: Family<DirectionLabel, Counter>,
}

impl Default for TunnelMetrics {
    fn default() -> Self {
        let bytes = Family::<DirectionLabel, Counter>::default();
        let direction = |direction| bytes.get_or_create(&DirectionLabel { direction }).clone();
        TunnelMetrics {
            open: Gauge::default(),
            opened: Counter::default(),
            client_to_backend: direction("client_to_backend"),
            backend_to_client: direction("backend_to_client"),
            bytes,
        }
    }
}

impl TunnelMetrics {
    /// A tunnel opened (its 101 went to the client).
    pub fn opened(&self) {
        self.open.inc();
        self.opened.inc();
    }

    /// A tunnel closed, for whatever reason.
    pub fn closed(&self) {
        self.open.dec();
    }

    /// Tunnels open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "shellac_tunnels_open",
            "Upgrade tunnels (WebSocket) open now",
            self.open.clone(),
        );
        registry.register(
            "shellac_tunnels",
            "Upgrade tunnels (WebSocket) opened: 101 Switching Protocols relayed",
            self.opened.clone(),
        );
        registry.register(
            "shellac_tunnel_bytes",
            "Bytes moved through Upgrade tunnels, by direction",
            self.bytes.clone(),
        );
    }
}
