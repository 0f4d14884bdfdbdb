//! Backends and pools: who Shellac fetches from, whether each may take
//! traffic right now, and how a pool picks one.
//!
//! A [`Backend`] owns its pooled client and its health, all in atomics so
//! the request path takes no lock: the probe verdict (`probe.rs`), passive
//! health (`outlier.rs`: ejection after a streak of backend-caused
//! failures, and the answers that decide a back-off), a "backing off until"
//! time set by the backend's own `Retry-After` when most of its traffic
//! gets one, and its in-flight count. Only a backend with `max_connections`
//! takes a short per-backend mutex, for its wait queue (`queue.rs`).
//!
//! A [`Pool`] asks its director (`director.rs`, pure logic) which usable
//! backend gets the next request, and applies the two safety valves of
//! Envoy's outlier detection, so that passive health never turns a partial
//! failure into a total outage: ejection never takes out more than
//! `max_ejection_percent` of its members nor the last usable one, and when
//! nothing is usable (health, ejection and back-off together) the pool
//! **panics**: it routes to every member that is not sick by its probe
//! (probe-sick stays authoritative, as Varnish's sick), logs it once per
//! entry and counts it (`shellac_pool_panic_total`).
//!
//! Everything here is generic over `B`, the body of the requests a backend
//! is sent (see `client.rs`): the backend's response body ([`TimedBody`])
//! lives in this module, and the crate's `Body` wraps it, so this module
//! never names `Body`; the proxy instantiates it with `B = Body`.

mod client;
pub mod director;
mod error;
mod outlier;
mod probe;
mod proxy_protocol;
mod queue;
mod resolve;
mod response;
mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use prometheus_client::metrics::counter::Counter;

pub use client::{BackendClient, RequestBody, SendFailure};
pub use error::{BodyError, FetchError};
pub use outlier::PathKey;
pub use proxy_protocol::ClientEnds;
pub use response::TimedBody;

use crate::config::{defaults, BackendConfig, Config, PoolConfig};
use crate::metrics::Metrics;
use crate::retry::Budget;
use director::Director;
use outlier::{AnswerWindow, Fault, Outlier};
use probe::Health;
use queue::{Admission, Queue};

/// One origin server and what Shellac knows about its health; `B` is the
/// body of the requests it is sent.
pub struct Backend<B> {
    /// Its pooled connections and limits.
    pub client: BackendClient<B>,
    /// Times below are milliseconds since this instant, so they fit atomics.
    epoch: Instant,
    /// The probe's verdict; `None` when the backend has no probe (always healthy).
    health: Option<Health>,
    in_flight: AtomicUsize,
    /// Passive health: the failure streak and the ejection.
    outlier: Outlier,
    /// Its recent answers, for the `Retry-After` majority rule.
    answers: AnswerWindow,
    /// Its own `Retry-After`, given to most of its recent traffic, said: no
    /// request before this (ms since `epoch`).
    backoff_until: AtomicU64,
    /// The wait queue, when `max_connections` caps it.
    queue: Option<Queue>,
    /// Health forced by hand (`POST /backends/<name>`, Varnish's
    /// `backend.set_health`): [`Forced::Auto`] lets probes decide.
    forced: AtomicU8,
}

/// A backend's health as set by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forced {
    /// Probes, ejection and back-off decide.
    Auto,
    /// Always healthy (traffic flows even when probes fail).
    Healthy,
    /// Always sick (no traffic).
    Sick,
}

impl Forced {
    fn from_u8(v: u8) -> Forced {
        match v {
            1 => Forced::Healthy,
            2 => Forced::Sick,
            _ => Forced::Auto,
        }
    }

    /// The word used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Forced::Auto => "auto",
            Forced::Healthy => "healthy",
            Forced::Sick => "sick",
        }
    }
}

/// A slot of a backend's in-flight capacity, held from the send until the
/// response body is dropped; releasing it wakes the next queued request.
pub struct InFlight<B> {
    backend: Arc<Backend<B>>,
    trial: bool,
    /// The ejection it was admitted under (its end, ms), 0 when none: only
    /// a good answer to such a request ends that ejection.
    ejection: u64,
}

impl<B> InFlight<B> {
    /// Whether this request is the one trial after an ejection.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The backend this slot belongs to.
    pub fn backend(&self) -> &Arc<Backend<B>> {
        &self.backend
    }
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        if self.trial {
            // A trial whose outcome was never recorded (the client went
            // away) must not keep the backend closed for ever: the next
            // request becomes the trial. (After an outcome the flag is
            // already down; lowering it again could only free a newer
            // trial, one whole ejection later, while this body still streams.)
            self.backend.outlier.release_trial();
        }
        match &self.backend.queue {
            Some(queue) => queue.release(&self.backend.in_flight),
            None => {
                self.backend.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

// === impl Backend ===

impl<B> Backend<B> {
    fn new(config: BackendConfig) -> Backend<B> {
        let health = config.probe.as_ref().map(Health::new);
        let queue = (config.max_connections > 0).then(|| {
            Queue::new(
                config.max_connections,
                config.queue_length,
                config.queue_timeout,
            )
        });
        Backend {
            client: BackendClient::new(config),
            epoch: Instant::now(),
            health,
            in_flight: AtomicUsize::new(0),
            outlier: Outlier::new(),
            answers: AnswerWindow::default(),
            backoff_until: AtomicU64::new(0),
            queue,
            forced: AtomicU8::new(0),
        }
    }

    /// Forces the backend's health by hand, or gives it back to the probes.
    pub fn force(&self, state: Forced) {
        self.forced.store(state as u8, Ordering::Release);
        tracing::warn!(backend = %self.name(), health = state.as_str(), "backend health set by hand");
    }

    /// The hand-set state.
    pub fn forced(&self) -> Forced {
        Forced::from_u8(self.forced.load(Ordering::Acquire))
    }

    /// The probe's window as a bit string, newest last (`varnishadm
    /// backend.list -p`); `None` without a probe.
    pub fn probe_window(&self) -> Option<String> {
        self.health.as_ref().map(Health::window_bits)
    }

    /// Requests waiting in this backend's queue.
    pub fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, Queue::len)
    }

    /// Whether the probe says healthy (true without a probe), ignoring a
    /// hand-set state.
    pub fn probe_healthy(&self) -> bool {
        self.health.as_ref().is_none_or(Health::is_healthy)
    }

    /// The backend's configured name.
    pub fn name(&self) -> &Arc<str> {
        self.client.name()
    }

    fn config(&self) -> &BackendConfig {
        self.client.config()
    }

    /// Milliseconds since `epoch`, never 0 (0 means "not set" in the atomics).
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The probe's verdict (true when the backend has no probe), unless
    /// health was forced by hand.
    pub fn is_healthy(&self) -> bool {
        match self.forced() {
            Forced::Healthy => true,
            Forced::Sick => false,
            Forced::Auto => self.probe_healthy(),
        }
    }

    /// Requests sent and not yet finished (response body still streaming).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether passive ejection currently keeps traffic away (its pool may
    /// still send some: see [`Pool::pick`]).
    pub fn is_ejected(&self) -> bool {
        self.outlier.is_ejected(self.now_ms())
    }

    /// Whether a new request may be sent now: healthy, not backing off, not
    /// ejected (or ejected and the one trial request is still free).
    pub fn is_usable(&self) -> bool {
        self.availability() == Availability::Usable
    }

    /// What the backend's own state says about a new request now.
    fn availability(&self) -> Availability {
        match self.forced() {
            Forced::Sick => return Availability::Sick,
            Forced::Healthy => return Availability::Usable,
            Forced::Auto if !self.probe_healthy() => return Availability::Sick,
            Forced::Auto => {}
        }
        let now = self.now_ms();
        if self.backoff_until.load(Ordering::Acquire) > now {
            Availability::BackingOff
        } else if self.outlier.blocks(now) {
            Availability::Ejected
        } else {
            Availability::Usable
        }
    }

    /// How long until this backend may take traffic again, when that is
    /// known: the end of a back-off or ejection, or the probe that could make
    /// it healthy. `None` when it is usable now or nobody can tell.
    pub fn available_in(&self) -> Option<Duration> {
        if self.is_usable() {
            return None;
        }
        let now = self.now_ms();
        let mut at = 0u64;
        for until in [
            self.backoff_until.load(Ordering::Acquire),
            self.outlier.ejected_until(),
        ] {
            at = at.max(until);
        }
        match self.health.as_ref() {
            Some(health) if !health.is_healthy() => {
                // Sick: no earlier than the probe that could heal it; unknown
                // before the first probe has run.
                at = at.max(health.healthy_at_ms()?);
            }
            _ => {}
        }
        // A trial under way ends within about a first-byte timeout; "soon".
        Some(Duration::from_millis(at.saturating_sub(now)))
    }

    /// Takes a slot for one request: at once, after waiting in the queue
    /// (higher `priority` first), or not at all (`queue_full`,
    /// `queue_timeout`). Claims the trial when the backend's ejection has
    /// just ended. A backend still ejected, or whose trial is under way, is
    /// only picked when its pool sends traffic to it anyway (see
    /// [`Pool::pick`]): such a request is no trial.
    pub async fn admit(self: &Arc<Self>, priority: u8) -> Result<InFlight<B>, FetchError> {
        let ejection = self.outlier.ejected_until();
        let trial = self.outlier.claim(self.now_ms());
        let release_trial = |backend: &Backend<B>| {
            if trial {
                backend.outlier.release_trial();
            }
        };
        let Some(queue) = &self.queue else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(InFlight {
                backend: self.clone(),
                trial,
                ejection,
            });
        };
        match queue.acquire(&self.in_flight, priority) {
            Admission::Now => {}
            Admission::Full => {
                release_trial(self);
                return Err(FetchError::QueueFull {
                    backend: self.name().clone(),
                    max_connections: self.config().max_connections,
                    queue_length: self.config().queue_length,
                });
            }
            Admission::Wait(ticket) => {
                if !queue.wait(ticket).await {
                    release_trial(self);
                    return Err(FetchError::QueueTimeout {
                        backend: self.name().clone(),
                        timeout: self.config().queue_timeout,
                    });
                }
            }
        }
        Ok(InFlight {
            backend: self.clone(),
            trial,
            ejection,
        })
    }

    /// A response below 500 came back: the failure streak ends, and so does
    /// the ejection `slot` was admitted under (the trial's answer, or any
    /// answer while the pool sent traffic to the ejected backend anyway).
    fn record_success(&self, slot: &InFlight<B>) {
        if self.outlier.success(slot.ejection) {
            tracing::info!(backend = %self.name(), "backend answered again: back in service");
        }
    }

    /// Ejects the backend because of `fault`.
    fn eject(&self, fault: Fault) {
        let (length, round) = self
            .outlier
            .eject(self.now_ms(), fault, self.config().ejection_time);
        tracing::warn!(
            backend = %self.name(),
            cause = fault.as_str(),
            ejection_ms = length.as_millis() as u64,
            round,
            "backend ejected after consecutive failures"
        );
    }

    /// A passing probe ends an ejection at once: the backend answers again.
    fn probe_passed(&self) {
        if self.outlier.probe_passed() {
            tracing::info!(backend = %self.name(), "probe passed: ejection ended, backend back in service");
        }
    }

    /// Counts one answer for the `Retry-After` rule; `retry_after` is the
    /// backend's own when the answer was a 503. Backs off only when most of
    /// its recent answers were 503 + `Retry-After` (see `outlier.rs`).
    fn note_answer(&self, retry_after: Option<Duration>) {
        let second = self.now_ms() / 1000 + 1;
        if self.answers.record(second, retry_after.is_some()) {
            if let Some(after) = retry_after {
                self.back_off(after);
            }
        }
    }

    /// The backend said `Retry-After: d` to most of its traffic: nothing
    /// goes to it before then (unless its pool has nothing else).
    fn back_off(&self, d: Duration) {
        let d = d.min(defaults::BACKEND_RETRY_AFTER_MAX);
        let until = self.now_ms() + d.as_millis() as u64;
        let before = self.backoff_until.fetch_max(until, Ordering::AcqRel);
        if before < self.now_ms() {
            tracing::info!(backend = %self.name(), backoff_ms = d.as_millis() as u64, "backend asked to back off (Retry-After on most of its recent answers)");
        }
    }
}

/// What a backend's own state says about a new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Availability {
    /// Sick by its probe, or forced sick: never sent anything.
    Sick,
    /// Its own `Retry-After` asks for a pause.
    BackingOff,
    /// Passive ejection keeps traffic away.
    Ejected,
    /// May take the request.
    Usable,
}

// === impl Pool ===

/// A group of backends that share traffic.
pub struct Pool<B> {
    name: Arc<str>,
    members: Vec<Arc<Backend<B>>>,
    director: Director,
    budget: Budget,
    /// The safety valves, `None` for the `[cluster]` peer pools: a peer
    /// pool may be ejected empty, since the origin is its fall-back.
    valves: Option<Valves>,
}

/// The two safety valves of a pool's passive health.
struct Valves {
    /// At most this many members ejected at once (`max_ejection_percent`
    /// of them, rounded down).
    max_ejected: usize,
    /// In panic mode now (nothing usable: routing to every member that is
    /// not probe-sick); logged once per entry.
    panicking: AtomicBool,
    /// Entries into panic mode (`shellac_pool_panic_total`).
    panics: Counter,
}

/// Members as bits: the first 64 in one word (every pool in practice), so
/// a pick allocates nothing; more in a vector.
#[derive(Default)]
struct Members {
    low: u64,
    high: Vec<bool>,
}

impl Members {
    fn set(&mut self, i: usize, on: bool) {
        match i.checked_sub(64) {
            None => {
                self.low = (self.low & !(1 << i)) | (u64::from(on) << i);
            }
            Some(j) => {
                if self.high.len() <= j {
                    self.high.resize(j + 1, false);
                }
                self.high[j] = on;
            }
        }
    }

    fn get(&self, i: usize) -> bool {
        match i.checked_sub(64) {
            None => self.low >> i & 1 == 1,
            Some(j) => self.high.get(j).copied().unwrap_or(false),
        }
    }

    fn any(&self) -> bool {
        self.low != 0 || self.high.contains(&true)
    }
}

impl<B> Pool<B> {
    fn new(
        name: &str,
        members: Vec<Arc<Backend<B>>>,
        policy: crate::config::Policy,
        budget_percent: u32,
        valves: Option<(u32, Counter)>,
    ) -> Pool<B> {
        let weighted: Vec<(&str, u32)> = members
            .iter()
            .map(|b| (b.name().as_ref(), b.config().weight))
            .collect();
        let director = Director::new(policy, &weighted);
        let valves = valves.map(|(percent, panics)| Valves {
            max_ejected: members.len() * percent as usize / 100,
            panicking: AtomicBool::new(false),
            panics,
        });
        Pool {
            name: Arc::from(name),
            director,
            members,
            budget: Budget::new(budget_percent),
            valves,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its backends, in configuration order.
    pub fn members(&self) -> &[Arc<Backend<B>>] {
        &self.members
    }

    /// The retry budget shared by this pool's requests.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Whether the pool is in panic mode now.
    pub fn is_panicking(&self) -> bool {
        self.valves
            .as_ref()
            .is_some_and(|v| v.panicking.load(Ordering::Acquire))
    }

    /// The backend for the next attempt: a usable one not in `tried` when
    /// there is one, else any usable one (a pool of one retries the same
    /// backend). `key` is the cache key text (for the `hash` policy).
    ///
    /// "Usable" is the members' own state, then the safety valves: when
    /// more than `max_ejection_percent` of the members are ejected (several
    /// failed at once, or the backend is in several pools), those whose
    /// ejection ends first are used anyway; when nothing is usable, every
    /// member not sick by its probe is (panic mode).
    pub fn pick(&self, key: &str, tried: &[usize]) -> Option<(usize, &Arc<Backend<B>>)> {
        // One snapshot of the members' state for both passes.
        let mut usable = Members::default();
        let mut not_sick = Members::default();
        let mut ejected = 0usize;
        for (i, backend) in self.members.iter().enumerate() {
            let state = backend.availability();
            usable.set(i, state == Availability::Usable);
            not_sick.set(i, state != Availability::Sick);
            ejected += usize::from(state == Availability::Ejected);
        }
        if let Some(valves) = &self.valves {
            if ejected > valves.max_ejected {
                self.readmit(&mut usable, ejected - valves.max_ejected);
            }
            if usable.any() {
                if valves.panicking.load(Ordering::Acquire)
                    && valves.panicking.swap(false, Ordering::AcqRel)
                {
                    tracing::info!(pool = %self.name, "pool has usable backends again: panic mode over");
                }
            } else if not_sick.any() {
                usable = not_sick;
                if !valves.panicking.swap(true, Ordering::AcqRel) {
                    valves.panics.inc();
                    tracing::warn!(
                        pool = %self.name,
                        "pool has no usable backend (ejected or backing off): panic mode, routing to every backend not sick by its probe"
                    );
                }
            }
        }
        let load = |i: usize| self.members[i].in_flight();
        let index = self
            .director
            .pick(key, &|i| usable.get(i) && !tried.contains(&i), &load)
            .or_else(|| self.director.pick(key, &|i| usable.get(i), &load))?;
        Some((index, &self.members[index]))
    }

    /// Marks `count` ejected members usable, those whose ejection ends
    /// first (rare: only when more than the share are ejected at once).
    fn readmit(&self, usable: &mut Members, count: usize) {
        let mut ejected: Vec<(u64, usize)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, b)| b.availability() == Availability::Ejected)
            .map(|(i, b)| (b.outlier.ejected_until(), i))
            .collect();
        ejected.sort_unstable();
        for &(_, i) in ejected.iter().take(count) {
            usable.set(i, true);
        }
    }

    /// What an answer with `status` says about the slot's backend, for a
    /// request of `path`: below 500, a good answer (the failure streak and
    /// any ejection end); 500 and above, a failed answer. `retry_after` is
    /// the answer's `Retry-After`: on a 503 it counts towards the majority
    /// rule of backing off; on a 429 it is that client's and changes
    /// nothing. `first` says this is the request's first answer from this
    /// backend (its retries on the same backend are one piece of traffic).
    ///
    /// The caller records nothing for a request whose client body failed:
    /// that is the client's fault, never the backend's.
    pub fn record_answer(
        &self,
        slot: &InFlight<B>,
        path: PathKey,
        status: StatusCode,
        retry_after: Option<Duration>,
        first: bool,
    ) {
        let backend = slot.backend();
        if first {
            backend.note_answer(retry_after.filter(|_| status == StatusCode::SERVICE_UNAVAILABLE));
        }
        if status.is_server_error() {
            self.record_fault(slot, Fault::Answer(path));
        } else {
            backend.record_success(slot);
        }
    }

    /// What a failed attempt says about the slot's backend. A refused,
    /// failed or timed-out connect counts as unreachable; a first-byte
    /// timeout or an invalid response as a failed answer for `path`;
    /// Shellac's own limits (an oversized head) not at all.
    pub fn record_error(&self, slot: &InFlight<B>, path: PathKey, error: &FetchError) {
        if !error.counts_against_backend() {
            return;
        }
        let fault = if error.never_sent() {
            Fault::Unreachable
        } else {
            Fault::Answer(path)
        };
        self.record_fault(slot, fault);
    }

    fn record_fault(&self, slot: &InFlight<B>, fault: Fault) {
        let backend = slot.backend();
        let limit = backend.config().consecutive_failures;
        if !backend.outlier.failure(fault, slot.trial, limit) {
            return;
        }
        if !slot.trial && !self.may_eject(backend) {
            // Counted again from zero: the next streak asks again.
            backend.outlier.forgive();
            tracing::debug!(
                backend = %backend.name(),
                pool = %self.name,
                "backend not ejected: max_ejection_percent reached or it is the last usable backend"
            );
            return;
        }
        backend.eject(fault);
    }

    /// Whether ejecting `backend` keeps within the pool's share and leaves
    /// another usable member.
    fn may_eject(&self, backend: &Arc<Backend<B>>) -> bool {
        let Some(valves) = &self.valves else {
            return true;
        };
        let mut ejected = 0usize;
        let mut others_usable = false;
        for member in self.members.iter().filter(|m| !Arc::ptr_eq(m, backend)) {
            match member.availability() {
                Availability::Ejected => ejected += 1,
                Availability::Usable => others_usable = true,
                Availability::Sick | Availability::BackingOff => {}
            }
        }
        others_usable && ejected < valves.max_ejected
    }

    /// When the pool may take traffic again, if every backend is known to be
    /// unavailable until some time: the soonest of those times.
    pub fn retry_after(&self) -> Option<Duration> {
        let mut soonest: Option<Duration> = None;
        for backend in &self.members {
            let at = backend.available_in()?;
            soonest = Some(soonest.map_or(at, |s| s.min(at)));
        }
        soonest
    }
}

/// Every backend and pool of one configuration. Dropping it ends the probe
/// and re-resolution tasks (they hold only weak references).
pub struct Backends<B> {
    /// In configuration order.
    pub backends: Vec<Arc<Backend<B>>>,
    /// In configuration order; routes refer to them by index.
    pub pools: Vec<Pool<B>>,
    /// `[cluster]` peering, when configured.
    pub peers: Option<Peers<B>>,
}

/// The `[cluster]` peers as two `hash` pools over the same backends. The
/// ring decides who owns a key; `others` (the ring without this node)
/// fetches it: removing one member from a consistent-hash ring moves only
/// that member's keys, so both agree on every key this node does not own,
/// and a retry can never loop back to this node (which would wait on its
/// own waiting list).
pub struct Peers<B> {
    /// Every peer, this node included.
    pub ring: Pool<B>,
    /// Every peer but this node.
    pub others: Pool<B>,
    /// This node's index in `ring`.
    pub me: usize,
}

impl<B: RequestBody> Backends<B> {
    /// Builds clients for every backend of `config` (no connection is opened
    /// yet) and, inside a tokio runtime, starts one probe task per probed backend.
    pub fn new(config: &Config) -> Backends<B> {
        Backends::build(config, None, &Metrics::default())
    }

    /// Like [`Backends::new`], but a backend whose name and settings are
    /// unchanged from `previous` is taken over as it is: its connection pool,
    /// probe history, ejection state and hand-set health survive a reload
    /// (Varnish loses probe state on reload). A changed backend starts afresh
    /// but keeps its hand-set health. Each pool counts its entries into
    /// panic mode in `metrics`.
    pub fn build(
        config: &Config,
        previous: Option<&Backends<B>>,
        metrics: &Metrics,
    ) -> Backends<B> {
        let old = |name: &str| {
            previous.and_then(|p| p.backends.iter().find(|b| b.name().as_ref() == name))
        };
        let backends: Vec<Arc<Backend<B>>> = config
            .backends
            .iter()
            .map(|b| match old(&b.name) {
                Some(same) if same.config() == b => same.clone(),
                Some(changed) => {
                    let fresh = Arc::new(Backend::new(b.clone()));
                    fresh
                        .forced
                        .store(changed.forced.load(Ordering::Acquire), Ordering::Release);
                    fresh
                }
                None => Arc::new(Backend::new(b.clone())),
            })
            .collect();
        for backend in &backends {
            let taken_over =
                previous.is_some_and(|p| p.backends.iter().any(|b| Arc::ptr_eq(b, backend)));
            if backend.health.is_some() && !taken_over {
                probe::spawn(Arc::downgrade(backend));
            }
            if !taken_over {
                resolve::spawn(backend, metrics);
            }
        }
        let pools = config
            .pools
            .iter()
            .map(|p: &PoolConfig| {
                let members: Vec<Arc<Backend<B>>> =
                    p.backends.iter().map(|&i| backends[i].clone()).collect();
                let valves = (p.max_ejection_percent, metrics.pool_panic(&p.name));
                Pool::new(
                    &p.name,
                    members,
                    p.policy,
                    config.retry.budget_percent,
                    Some(valves),
                )
            })
            .collect();
        // Peers get fresh state on reload: their health is only passive.
        let peers = config.cluster.as_ref().map(|cluster| {
            let members: Vec<Arc<Backend<B>>> = cluster
                .peers
                .iter()
                .map(|p| Arc::new(Backend::new(p.clone())))
                .collect();
            let pool = |name: &str, members: Vec<Arc<Backend<B>>>| {
                let policy = crate::config::Policy::Hash;
                Pool::new(name, members, policy, config.retry.budget_percent, None)
            };
            let me = cluster.self_index;
            let others = members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != me)
                .map(|(_, b)| b.clone())
                .collect();
            Peers {
                ring: pool("peers", members),
                others: pool("peers", others),
                me,
            }
        });
        Backends {
            backends,
            pools,
            peers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members past the 64 the pick's bit mask covers are still picked.
    #[tokio::test]
    async fn pick_reaches_members_beyond_sixty_four() {
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        let mut names = Vec::new();
        for i in 0..70 {
            text.push_str(&format!(
                "[[backend]]\nname = \"b{i}\"\naddress = \"127.0.0.1:{}\"\n",
                10_000 + i
            ));
            names.push(format!("\"b{i}\""));
        }
        text.push_str(&format!(
            "[[pool]]\nname = \"default\"\nbackends = [{}]\n",
            names.join(", ")
        ));
        let config = Config::parse(std::path::Path::new("t.toml"), &text).expect("valid config");
        // Any body type does for picking; the crate's is at hand.
        let backends = Backends::<crate::body::Body>::new(&config);
        let pool = &backends.pools[0];
        for wanted in [0, 63, 64, 69] {
            let tried: Vec<usize> = (0..70).filter(|&i| i != wanted).collect();
            let picked = pool.pick("/k", &tried).map(|(i, _)| i);
            assert_eq!(picked, Some(wanted));
        }
    }

    type TestBackends = Backends<crate::body::Body>;
    type TestPool = Pool<crate::body::Body>;

    /// `n` backends (the first `probed` of them with a probe that can never
    /// pass) in one pool `default` with `pool_extra`.
    fn pool_of(n: usize, probed: usize, pool_extra: &str) -> TestBackends {
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        for i in 0..n {
            // Port 9 (discard) on loopback: nothing listens, probes fail.
            text.push_str(&format!(
                "[[backend]]\nname = \"b{i}\"\naddress = \"127.0.0.1:9\"\n"
            ));
            if i < probed {
                text.push_str("[backend.probe]\nurl = \"/health\"\ninterval = \"1h\"\n");
            }
        }
        let names: Vec<String> = (0..n).map(|i| format!("\"b{i}\"")).collect();
        text.push_str(&format!(
            "[[pool]]\nname = \"default\"\nbackends = [{}]\n{pool_extra}\n",
            names.join(", ")
        ));
        let config = Config::parse(std::path::Path::new("t.toml"), &text).expect("valid config");
        Backends::new(&config)
    }

    /// Five failed answers on five different paths: a full streak.
    async fn fail_five_paths(pool: &TestPool, backend: &Arc<Backend<crate::body::Body>>) {
        for p in 0..5 {
            let slot = backend.admit(5).await.expect("a slot");
            let path = PathKey::of(&format!("/p/{p}"));
            pool.record_answer(&slot, path, StatusCode::INTERNAL_SERVER_ERROR, None, true);
        }
    }

    fn ejected(pool: &TestPool) -> usize {
        pool.members().iter().filter(|b| b.is_ejected()).count()
    }

    #[tokio::test]
    async fn ejection_takes_out_at_most_the_share_and_never_the_last_usable() {
        let backends = pool_of(4, 0, "");
        let pool = &backends.pools[0];
        for b in pool.members() {
            fail_five_paths(pool, b).await;
        }
        assert_eq!(ejected(pool), 2, "50 % of four");

        let backends = pool_of(1, 0, "max_ejection_percent = 100");
        let pool = &backends.pools[0];
        fail_five_paths(pool, &pool.members()[0]).await;
        assert_eq!(ejected(pool), 0, "never the last usable member");

        let backends = pool_of(2, 0, "max_ejection_percent = 0");
        let pool = &backends.pools[0];
        fail_five_paths(pool, &pool.members()[0]).await;
        assert_eq!(ejected(pool), 0, "0 % turns ejection off");
    }

    #[tokio::test]
    async fn more_ejected_than_the_share_are_used_soonest_ending_first() {
        let backends = pool_of(2, 0, "");
        let pool = &backends.pools[0];
        // Both ejected at once (as through another pool): one is too many.
        pool.members()[0].eject(Fault::Answer(PathKey::of("/")));
        pool.members()[1].eject(Fault::Unreachable);
        for _ in 0..4 {
            assert_eq!(pool.pick("/k", &[]).map(|(i, _)| i), Some(1));
        }
        assert!(!pool.is_panicking());
        // Sent anyway, it is no trial; its good answer ends its ejection.
        let slot = pool.members()[1].admit(5).await.expect("a slot");
        assert!(!slot.is_trial());
        pool.record_answer(&slot, PathKey::of("/k"), StatusCode::OK, None, true);
        assert!(!pool.members()[1].is_ejected());
    }

    #[tokio::test]
    async fn panic_routes_to_every_member_not_sick_and_counts_each_entry_once() {
        let backends = pool_of(2, 1, "");
        let pool = &backends.pools[0];
        let (sick, busy) = (&pool.members()[0], &pool.members()[1]);
        assert!(!sick.probe_healthy());
        busy.back_off(Duration::from_secs(60));
        let panics = || pool.valves.as_ref().map(|v| v.panics.get());
        for _ in 0..4 {
            let picked = pool.pick("/k", &[]).map(|(i, _)| i);
            assert_eq!(picked, Some(1), "never the sick one");
        }
        assert!(pool.is_panicking());
        assert_eq!(panics(), Some(1), "once per entry");
        busy.backoff_until.store(0, Ordering::Release);
        assert_eq!(pool.pick("/k", &[]).map(|(i, _)| i), Some(1));
        assert!(!pool.is_panicking());
        busy.back_off(Duration::from_secs(60));
        pool.pick("/k", &[]);
        assert_eq!(panics(), Some(2), "a new entry");
        // Sick alone: nothing to route to.
        busy.force(Forced::Sick);
        assert!(pool.pick("/k", &[]).is_none());
    }

    #[tokio::test]
    async fn a_429_never_backs_off_and_one_503_retry_after_does_not_either() {
        let backends = pool_of(2, 0, "");
        let pool = &backends.pools[0];
        let backend = &pool.members()[0];
        let after = Some(Duration::from_secs(30));
        for i in 0..10 {
            let slot = backend.admit(5).await.expect("a slot");
            let path = PathKey::of(&format!("/{i}"));
            pool.record_answer(&slot, path, StatusCode::TOO_MANY_REQUESTS, after, true);
        }
        assert!(backend.is_usable(), "429s are for their clients");
        let slot = backend.admit(5).await.expect("a slot");
        let busy = StatusCode::SERVICE_UNAVAILABLE;
        pool.record_answer(&slot, PathKey::of("/busy"), busy, after, true);
        assert!(backend.is_usable(), "one 503 among eleven answers");
        // Retries of one request on the same backend are one answer.
        for _ in 0..20 {
            pool.record_answer(&slot, PathKey::of("/busy"), busy, after, false);
        }
        assert!(backend.is_usable());
    }
}
