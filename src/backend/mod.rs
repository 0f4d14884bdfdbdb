//! Backends and pools: who Shellac fetches from, whether each may take
//! traffic right now, and how a pool picks one.
//!
//! A [`Backend`] owns its pooled client and its health, all in atomics so
//! the request path takes no lock: the probe verdict (`probe.rs`), passive
//! ejection after consecutive failures, a "backing off until" time set by a
//! backend's own `Retry-After`, and its in-flight count. Only a backend with
//! `max_connections` takes a short per-backend mutex, for its wait queue
//! (`queue.rs`). A [`Pool`] asks its director (`director.rs`, pure logic)
//! which usable backend gets the next request.
//!
//! Everything here is generic over `B`, the body of the requests a backend
//! is sent (see `client.rs`): the backend's response body ([`TimedBody`])
//! lives in this module, and the crate's `Body` wraps it, so this module
//! never names `Body`; the proxy instantiates it with `B = Body`.

mod client;
pub mod director;
mod error;
mod probe;
mod queue;
mod response;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use client::{BackendClient, RequestBody, SendFailure};
pub use error::{BodyError, FetchError};
pub use response::TimedBody;

use crate::config::{defaults, BackendConfig, Config};
use crate::retry::Budget;
use director::Director;
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
    /// Failed fetches in a row (reset by a success).
    failures: AtomicU32,
    /// How many times in a row it was ejected (the ejection time doubles).
    ejections: AtomicU32,
    /// Ejected until this time (ms since `epoch`); 0 when not ejected.
    ejected_until: AtomicU64,
    /// A trial request is under way after an ejection ended.
    trial: AtomicBool,
    /// Its own `Retry-After` said: no request before this (ms since `epoch`).
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
            // request becomes the trial.
            self.backend.trial.store(false, Ordering::Release);
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
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
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

    /// Whether passive ejection currently keeps traffic away.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    /// Whether a new request may be sent now: healthy, not backing off, not
    /// ejected (or ejected and the one trial request is still free).
    pub fn is_usable(&self) -> bool {
        match self.forced() {
            Forced::Sick => return false,
            Forced::Healthy => return true,
            Forced::Auto if !self.probe_healthy() => return false,
            Forced::Auto => {}
        }
        let now = self.now_ms();
        if self.backoff_until.load(Ordering::Acquire) > now {
            return false;
        }
        match self.ejected_until.load(Ordering::Acquire) {
            0 => true,
            until if now < until => false,
            _ => !self.trial.load(Ordering::Acquire),
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
            self.ejected_until.load(Ordering::Acquire),
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
    /// just ended; `Ok(None)` means another request took the trial first.
    pub async fn admit(self: &Arc<Self>, priority: u8) -> Result<Option<InFlight<B>>, FetchError> {
        let trial = match self.ejected_until.load(Ordering::Acquire) {
            0 => false,
            _ => {
                if self
                    .trial
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return Ok(None);
                }
                true
            }
        };
        let release_trial = |backend: &Backend<B>| {
            if trial {
                backend.trial.store(false, Ordering::Release);
            }
        };
        let Some(queue) = &self.queue else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(Some(InFlight {
                backend: self.clone(),
                trial,
            }));
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
        Ok(Some(InFlight {
            backend: self.clone(),
            trial,
        }))
    }

    /// A response below 500 came back: the failure streak ends, and a
    /// successful trial ends the ejection.
    pub fn record_success(&self, slot: &InFlight<B>) {
        self.failures.store(0, Ordering::Release);
        if slot.trial {
            self.ejections.store(0, Ordering::Release);
            self.ejected_until.store(0, Ordering::Release);
            self.trial.store(false, Ordering::Release);
            tracing::info!(backend = %self.name(), "trial request succeeded: backend back in service");
        }
    }

    /// A transport error, timeout or 5xx: counts towards ejection; a failed
    /// trial ejects again at once, for twice as long.
    pub fn record_failure(&self, slot: &InFlight<B>) {
        let limit = self.config().consecutive_failures;
        if slot.trial {
            self.eject();
            return;
        }
        if limit == 0 || self.ejected_until.load(Ordering::Acquire) != 0 {
            return;
        }
        let streak = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if streak >= limit {
            self.eject();
        }
    }

    fn eject(&self) {
        let round = self.ejections.fetch_add(1, Ordering::AcqRel);
        let base = self.config().ejection_time;
        let cap = defaults::EJECTION_TIME_MAX.max(base);
        let length = base.saturating_mul(1u32 << round.min(16)).min(cap);
        let until = self.now_ms() + length.as_millis() as u64;
        self.ejected_until.store(until, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.trial.store(false, Ordering::Release);
        tracing::warn!(
            backend = %self.name(),
            ejection_ms = length.as_millis() as u64,
            round = round + 1,
            "backend ejected after consecutive failures"
        );
    }

    /// The backend said `Retry-After: d` (503 or 429): nothing goes to it
    /// before then (a short "saint mode").
    pub fn back_off(&self, d: Duration) {
        let d = d.min(defaults::BACKEND_RETRY_AFTER_MAX);
        let until = self.now_ms() + d.as_millis() as u64;
        self.backoff_until.fetch_max(until, Ordering::AcqRel);
        tracing::info!(backend = %self.name(), backoff_ms = d.as_millis() as u64, "backend asked to back off (Retry-After)");
    }
}

// === impl Pool ===

/// A group of backends that share traffic.
pub struct Pool<B> {
    name: Arc<str>,
    members: Vec<Arc<Backend<B>>>,
    director: Director,
    budget: Budget,
}

impl<B> Pool<B> {
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

    /// The backend for the next attempt: a usable one not in `tried` when
    /// there is one, else any usable one (a pool of one retries the same
    /// backend). `key` is the cache key text (for the `hash` policy).
    pub fn pick(&self, key: &str, tried: &[usize]) -> Option<(usize, &Arc<Backend<B>>)> {
        // One snapshot of health for both passes; a bit mask for the first
        // 64 members (every pool in practice), so picking allocates nothing.
        let mut mask = 0u64;
        let mut beyond = Vec::new();
        for (i, backend) in self.members.iter().enumerate() {
            match (i < 64, backend.is_usable()) {
                (true, usable) => mask |= u64::from(usable) << i,
                (false, usable) => beyond.push(usable),
            }
        }
        let usable = |i: usize| match i.checked_sub(64) {
            None => mask >> i & 1 == 1,
            Some(j) => beyond.get(j).copied().unwrap_or(false),
        };
        let load = |i: usize| self.members[i].in_flight();
        let index = self
            .director
            .pick(key, &|i| usable(i) && !tried.contains(&i), &load)
            .or_else(|| self.director.pick(key, &usable, &load))?;
        Some((index, &self.members[index]))
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
/// tasks (they hold only weak references).
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
        Backends::build(config, None)
    }

    /// Like [`Backends::new`], but a backend whose name and settings are
    /// unchanged from `previous` is taken over as it is: its connection pool,
    /// probe history, ejection state and hand-set health survive a reload
    /// (Varnish loses probe state on reload). A changed backend starts afresh
    /// but keeps its hand-set health.
    pub fn build(config: &Config, previous: Option<&Backends<B>>) -> Backends<B> {
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
        }
        let pools = config
            .pools
            .iter()
            .map(|p| {
                let members: Vec<Arc<Backend<B>>> =
                    p.backends.iter().map(|&i| backends[i].clone()).collect();
                let weighted: Vec<(&str, u32)> = members
                    .iter()
                    .map(|b| (b.name().as_ref(), b.config().weight))
                    .collect();
                Pool {
                    name: Arc::from(p.name.as_str()),
                    director: Director::new(p.policy, &weighted),
                    members,
                    budget: Budget::new(config.retry.budget_percent),
                }
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
                let weighted: Vec<(&str, u32)> = members
                    .iter()
                    .map(|b| (b.name().as_ref(), b.config().weight))
                    .collect();
                Pool {
                    name: Arc::from(name),
                    director: Director::new(crate::config::Policy::Hash, &weighted),
                    members,
                    budget: Budget::new(config.retry.budget_percent),
                }
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
}
