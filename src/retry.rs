//! When a failed fetch may be tried again, how long to wait first, and the
//! budget that keeps retries from multiplying the load on a struggling pool.
//!
//! - **Whether:** the failure must be listed in `[retry] retry_on`; GET and
//!   HEAD may be retried, any other method only when the request certainly
//!   never reached the backend (a refused or timed-out connect).
//! - **Where:** a request that reached its backend (it answered with a 5xx,
//!   timed out waiting for the head, broke mid-head) goes to *another*
//!   backend or nowhere: the same one would most likely do the same again,
//!   and a slow job would run once per attempt (a 1.5 s job behind a 1 s
//!   `first_byte_timeout` reached the origin 5 times). Varnish and nginx
//!   do not resend such a request to the same server either. Only a
//!   failure before the request went out (a refused connect) may be tried
//!   on the same backend again.
//! - **Until when:** `[retry] deadline` ([`Deadline`]) bounds the whole
//!   wait, attempts and backoffs together, as Envoy's route timeout does.
//! - **How long:** full jitter: the sleep before retry `n` (0-based) is
//!   random in `[0, min(backoff_max, backoff_base × 2^n)]`, so clients that
//!   failed together do not come back together.
//! - **Budget:** retries may add at most `budget_percent` % to the first
//!   attempts of the last 10 s; 3 retries per second are always allowed, so
//!   a quiet site still retries. A retry after a connect that never reached
//!   the backend (refused, timed out) is free: it added no load anywhere,
//!   and it is what keeps a dead backend invisible until it is ejected. Counters are atomics in ten one-second
//!   buckets (approximate under races, never locked).
//!
//! Picking the backend for the retry is the director's job, not this module's.
//! This is a leaf: a failure arrives as a [`FailureKind`] and a flag (the
//! backend's error classifies itself), so the policy needs nothing from the
//! backend module and can be tested on plain values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode};
use rand::Rng;

use crate::config::defaults::{RETRY_BUDGET_WINDOW, RETRY_MIN_PER_SECOND};
use crate::config::RetryConfig;

/// Which `[retry] retry_on` entry a failure without a usable response head
/// falls under. The backend's error names its kind (`FetchError::kind`), so
/// that this policy is decided on plain values and needs nothing from the
/// backend module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection: refused, timed out, or closed before the request
    /// went out (`retry_on.connect`).
    Connect,
    /// No response head within `first_byte_timeout` (`retry_on.first_byte_timeout`).
    FirstByteTimeout,
    /// Not HTTP, or closed before a whole head arrived (`retry_on.invalid_response`).
    InvalidResponse,
    /// Shellac's own limits (an oversized head, a full or timed-out queue,
    /// no healthy backend): sending again would meet the same limit.
    NotRetryable,
}

/// What went wrong with one attempt.
#[derive(Clone, Copy, Debug)]
pub enum Failure {
    /// No usable response head.
    Error {
        /// Which `retry_on` entry it falls under.
        kind: FailureKind,
        /// The request certainly never reached the backend, so even a
        /// non-idempotent one may be sent again.
        never_sent: bool,
    },
    /// The backend answered with this status.
    Status(StatusCode),
}

/// Whether `failure` of a `method` request is listed in `retry_on` and safe
/// to send again. `attempt` is the number of retries already made.
pub fn may_retry(config: &RetryConfig, method: &Method, failure: Failure, attempt: u32) -> bool {
    if attempt >= config.max_retries {
        return false;
    }
    let on = &config.retry_on;
    let listed = match failure {
        Failure::Status(status) => on.statuses.contains(&status.as_u16()),
        Failure::Error { kind, .. } => match kind {
            FailureKind::Connect => on.connect,
            FailureKind::FirstByteTimeout => on.first_byte_timeout,
            FailureKind::InvalidResponse => on.invalid_response,
            FailureKind::NotRetryable => false,
        },
    };
    let safe = *method == Method::GET
        || *method == Method::HEAD
        || matches!(
            failure,
            Failure::Error {
                never_sent: true,
                ..
            }
        );
    listed && safe
}

/// Whether a retry after `failure` must go to a backend not tried yet: the
/// request reached the backend (see the module docs). A failure that
/// certainly never left Shellac may be tried on the same backend.
pub fn another_backend_only(failure: Failure) -> bool {
    match failure {
        Failure::Status(_) => true,
        Failure::Error { never_sent, .. } => !never_sent,
    }
}

/// `[retry] deadline` for one request: when it has waited long enough,
/// across every attempt and backoff.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    /// The instant the client has waited `total` for.
    pub at: Instant,
    /// The configured `deadline`, for the error that names it.
    pub total: Duration,
}

impl Deadline {
    /// The deadline of a request whose fetch starts now; `None` when
    /// `[retry] deadline` is off.
    pub fn start(total: Option<Duration>) -> Option<Deadline> {
        total.map(|total| Deadline {
            at: Instant::now() + total,
            total,
        })
    }

    /// The time left (zero once passed).
    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The deadline moved `by` later: the time a client took to send its
    /// request body was its own, and does not count against the wait.
    pub fn pushed_back(self, by: Duration) -> Deadline {
        Deadline {
            at: self.at + by,
            ..self
        }
    }
}

/// The full-jitter sleep before retry `n` (0 for the first retry).
pub fn backoff(config: &RetryConfig, n: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = config
        .backoff_base
        .saturating_mul(1u32 << n.min(30))
        .min(config.backoff_max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(0..=nanos))
}

/// The longest total sleep `max_retries` retries can add (for tests and docs).
pub fn backoff_ceiling(config: &RetryConfig) -> Duration {
    (0..config.max_retries)
        .map(|n| {
            config
                .backoff_base
                .saturating_mul(1u32 << n.min(30))
                .min(config.backoff_max)
        })
        .sum()
}

/// A backend's `Retry-After` (delay in seconds, or an HTTP date).
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

// === impl Window ===

/// Two counts per second over the last `N` seconds, in one-second buckets
/// of atomics (approximate under races, never locked): the retry budget
/// counts first attempts and retries in one, a backend's passive health its
/// answers and its `503` + `Retry-After` answers in another. Seconds are
/// the caller's clock, starting at 1 (0 marks an unused bucket).
pub struct Window<const N: usize> {
    buckets: [Bucket; N],
}

#[derive(Default)]
struct Bucket {
    /// The second it counts; 0 = unused.
    second: AtomicU64,
    counts: [AtomicU64; 2],
}

impl<const N: usize> Default for Window<N> {
    fn default() -> Self {
        Window {
            buckets: std::array::from_fn(|_| Bucket::default()),
        }
    }
}

impl<const N: usize> Window<N> {
    /// The bucket of `second`, emptied first if it held an older second.
    fn bucket(&self, second: u64) -> &Bucket {
        let bucket = &self.buckets[(second % N as u64) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second
            && bucket
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in &bucket.counts {
                count.store(0, Ordering::Release);
            }
        }
        bucket
    }

    /// Adds `by` to count `which` (0 or 1) at `second`.
    pub fn add(&self, second: u64, which: usize, by: u64) {
        self.bucket(second).counts[which].fetch_add(by, Ordering::AcqRel);
    }

    /// Count `which` in the bucket of `second` alone.
    pub fn in_second(&self, second: u64, which: usize) -> u64 {
        self.bucket(second).counts[which].load(Ordering::Acquire)
    }

    /// Both counts over the `N` seconds ending at `second`.
    pub fn totals(&self, second: u64) -> [u64; 2] {
        let oldest = second.saturating_sub(N as u64 - 1);
        let mut totals = [0u64; 2];
        for b in &self.buckets {
            let s = b.second.load(Ordering::Acquire);
            if s != 0 && s >= oldest && s <= second {
                for (total, count) in totals.iter_mut().zip(&b.counts) {
                    *total += count.load(Ordering::Acquire);
                }
            }
        }
        totals
    }
}

// === impl Budget ===

const BUCKETS: usize = RETRY_BUDGET_WINDOW.as_secs() as usize;
const REQUESTS: usize = 0;
const RETRIES: usize = 1;

/// The retry budget of one pool (see the module docs).
pub struct Budget {
    percent: u64,
    epoch: Instant,
    window: Window<BUCKETS>,
}

impl Budget {
    /// A budget allowing `percent` % retries on top of first attempts.
    pub fn new(percent: u32) -> Budget {
        Budget {
            percent: u64::from(percent),
            epoch: Instant::now(),
            window: Window::default(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs() + 1
    }

    /// Counts a first attempt.
    pub fn record_request(&self) {
        self.window.add(self.now(), REQUESTS, 1);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self) -> bool {
        let now = self.now();
        let this_second = self.window.in_second(now, RETRIES);
        let [requests, retries] = self.window.totals(now);
        let within_percent = (retries + 1) * 100 <= requests * self.percent;
        let within_floor = this_second < u64::from(RETRY_MIN_PER_SECOND);
        if within_percent || within_floor {
            self.window.add(now, RETRIES, 1);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryOn;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn config() -> RetryConfig {
        RetryConfig {
            max_retries: 4,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            budget_percent: 20,
            deadline: None,
            retry_on: RetryOn {
                connect: true,
                first_byte_timeout: true,
                invalid_response: false,
                statuses: vec![502, 503, 504],
            },
        }
    }

    /// A refused connect, as `FetchError::Connect` classifies it.
    fn refused() -> Failure {
        Failure::Error {
            kind: FailureKind::Connect,
            never_sent: true,
        }
    }

    #[test]
    fn get_is_retried_post_only_when_never_sent() {
        let c = config();
        // As `FetchError::FirstByteTimeout` classifies it: the request was sent.
        let timeout = Failure::Error {
            kind: FailureKind::FirstByteTimeout,
            never_sent: false,
        };
        let s503 = Failure::Status(StatusCode::SERVICE_UNAVAILABLE);
        assert!(may_retry(&c, &Method::GET, timeout, 0));
        assert!(may_retry(&c, &Method::HEAD, s503, 3));
        assert!(!may_retry(&c, &Method::GET, s503, 4), "max_retries");
        assert!(!may_retry(&c, &Method::POST, timeout, 0));
        assert!(!may_retry(&c, &Method::POST, s503, 0));
        assert!(may_retry(&c, &Method::POST, refused(), 0));
        assert!(!may_retry(
            &c,
            &Method::GET,
            Failure::Status(StatusCode::INTERNAL_SERVER_ERROR),
            0
        ));
    }

    /// What reached the backend is retried elsewhere or not at all.
    #[test]
    fn a_failure_that_reached_the_backend_needs_another_one() {
        let timeout = Failure::Error {
            kind: FailureKind::FirstByteTimeout,
            never_sent: false,
        };
        assert!(another_backend_only(timeout));
        assert!(another_backend_only(Failure::Status(
            StatusCode::SERVICE_UNAVAILABLE
        )));
        assert!(!another_backend_only(refused()));
    }

    #[test]
    fn deadline_counts_down() {
        assert!(Deadline::start(None).is_none());
        let d = Deadline::start(Some(Duration::from_secs(60))).expect("on");
        assert!(!d.passed());
        assert!(d.left() > Duration::from_secs(59));
        let gone = Deadline::start(Some(Duration::ZERO)).expect("on");
        assert!(gone.passed());
        assert_eq!(gone.left(), Duration::ZERO);
        let later = gone.pushed_back(Duration::from_secs(60));
        assert!(!later.passed());
        assert_eq!(later.total, Duration::ZERO);
    }

    #[test]
    fn backoff_is_full_jitter_under_the_capped_exponential() {
        let c = config();
        let mut rng = StdRng::seed_from_u64(9);
        for n in 0..8 {
            let ceiling = Duration::from_millis(50 << n).min(Duration::from_secs(2));
            let sleeps: Vec<Duration> = (0..200).map(|_| backoff(&c, n, &mut rng)).collect();
            assert!(sleeps.iter().all(|s| *s <= ceiling));
            assert!(
                sleeps.iter().any(|s| *s < ceiling / 4),
                "jitter reaches low values"
            );
            assert!(sleeps.iter().any(|s| *s > ceiling * 3 / 4), "and high ones");
        }
        assert_eq!(
            backoff_ceiling(&c),
            Duration::from_millis(50 + 100 + 200 + 400)
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3"), now),
            Some(Duration::from_secs(3))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let parsed =
            parse_retry_after(&HeaderValue::from_str(&later).expect("value"), now).expect("a date");
        assert!(parsed <= Duration::from_secs(30) && parsed >= Duration::from_secs(28));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
    }

    #[test]
    fn budget_allows_percent_plus_a_floor() {
        let budget = Budget::new(20);
        for _ in 0..100 {
            budget.record_request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        // 20 % of 100, or the 3-per-second floor if that is larger.
        assert!((20..=23).contains(&granted), "{granted}");
        let quiet = Budget::new(20);
        assert_eq!((0..10).filter(|_| quiet.try_retry()).count(), 3);
    }
}
