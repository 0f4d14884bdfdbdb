//! The circuit breaker in front of L2: after an error or a timeout, L2 is
//! skipped for a while (`open_for`), then exactly one trial request decides
//! whether it is used again. So a slow or dead Redis costs at most one
//! `timeout` per `open_for`, not one per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One request is trying L2; the others skip it. A trial that never
    /// reports back (its client left) is replaced after `open_for`.
    Trial {
        since: Instant,
    },
}

/// Closed → (failure) → Open → (`open_for` passes) → one Trial → Closed or Open.
pub struct Breaker {
    state: Mutex<State>,
    open_for: Duration,
    gauge: Gauge,
}

impl Breaker {
    /// A closed breaker that stays open `open_for` after a failure; `gauge`
    /// is 1 while it is not closed.
    pub fn new(open_for: Duration, gauge: Gauge) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed),
            open_for,
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request may use L2 now (taking the trial slot when due).
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed => true,
            State::Open { until } | State::Trial { since: until } if now < until => false,
            State::Open { .. } | State::Trial { .. } => {
                *state = State::Trial {
                    since: now + self.open_for,
                };
                true
            }
        }
    }

    /// L2 answered: close.
    pub fn success(&self) {
        let mut state = self.lock();
        if *state != State::Closed {
            tracing::info!("L2 answers again: circuit breaker closed");
            *state = State::Closed;
            self.gauge.set(0);
        }
    }

    /// L2 failed: open for `open_for`. Returns true when it was closed
    /// before (the caller logs once per outage, not per request).
    pub fn failure(&self) -> bool {
        let mut state = self.lock();
        let was_closed = *state == State::Closed;
        *state = State::Open {
            until: Instant::now() + self.open_for,
        };
        self.gauge.set(1);
        was_closed
    }

    /// Whether L2 is being skipped now.
    pub fn is_open(&self) -> bool {
        *self.lock() != State::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_then_allows_one_trial() {
        let gauge = Gauge::default();
        let breaker = Breaker::new(Duration::from_millis(50), gauge.clone());
        assert!(breaker.allow());
        assert!(breaker.failure());
        assert_eq!(gauge.get(), 1);
        assert!(!breaker.allow(), "open: skipped");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow(), "the trial");
        assert!(!breaker.allow(), "only one trial at a time");
        assert!(!breaker.failure(), "a failed trial reopens");
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow());
        breaker.success();
        assert_eq!(gauge.get(), 0);
        assert!(breaker.allow() && breaker.allow());
    }

    #[test]
    fn a_lost_trial_is_replaced() {
        let breaker = Breaker::new(Duration::from_millis(30), Gauge::default());
        breaker.failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow());
        // That trial never reports back.
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "a new trial after open_for");
    }
}
