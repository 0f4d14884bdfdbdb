//! Passive health (Envoy calls it outlier detection): what a backend's own
//! answers and failures say about it, as state over atomics and the
//! backend's clock in milliseconds, so the rules can be tested on plain
//! values without sleeping.
//!
//! What counts, and how (measured on issue 15: counting every failure in a
//! row ejected a healthy single backend because of one broken URL, and the
//! site served 1 % of its healthy requests):
//!
//! | failure | counts as |
//! |---|---|
//! | connect refused, failed or timed out; closed before the request went out | [`Fault::Unreachable`]: every one counts, the URL does not matter |
//! | a 5xx answer, no head within `first_byte_timeout`, an invalid response | [`Fault::Answer`]: once per URL path in a streak |
//! | the client's own body failing, Shellac's own limits | nothing (the caller does not record them) |
//!
//! A streak is the failures since the backend's last good answer; it ejects
//! at `consecutive_failures`. One URL that keeps failing while the others
//! succeed never makes a streak (its path counts once, and every good
//! answer ends the streak); a backend failing on five different paths in a
//! row, or refusing five connects in a row, does.
//!
//! An ejection for [`Fault::Unreachable`] lasts
//! [`UNREACHABLE_EJECTION`](crate::config::defaults::UNREACHABLE_EJECTION),
//! fixed: a backend that restarts is tried again that soon, and the try
//! costs one refused connect. An ejection for bad answers lasts
//! `ejection_time`, doubling on each repeat. Then one trial request goes
//! through; a good answer to a request sent during the ejection (the
//! trial, or one its pool sent anyway) or a passing probe ends the
//! ejection at once.
//!
//! Separately, the back-off window: a backend's `503` + `Retry-After` puts
//! it in "backing off" only when most of its recent answers said so (see
//! [`AnswerWindow`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::defaults::{
    EJECTION_TIME_MAX, RETRY_AFTER_MIN_ANSWERS, RETRY_AFTER_WINDOW, UNREACHABLE_EJECTION,
};
use crate::retry::Window;

/// One failure of a backend, as passive health counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The backend could not be reached; says nothing about any URL.
    Unreachable,
    /// The backend took the request and failed it: counted once per path
    /// (the [`PathKey`] of the request) in a streak.
    Answer(PathKey),
}

impl Fault {
    /// The label logs use.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Fault::Unreachable => "unreachable",
            Fault::Answer(_) => "failed_answers",
        }
    }
}

/// A request's URL path, hashed: what makes two failed answers "the same
/// URL" for the streak. The query is not part of it (`/search?q=a` and
/// `/search?q=b` are one endpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey(u64);

impl PathKey {
    /// The key of a request path (without the query).
    pub fn of(path: &str) -> PathKey {
        PathKey(super::director::hash_key(path))
    }
}

/// The passive health of one backend.
pub(super) struct Outlier {
    /// Failures in the current streak (paths counted once).
    failures: AtomicU32,
    /// The paths of the failed answers of the current streak; only touched
    /// on a failure (a good answer just zeroes `failures`).
    paths: Mutex<Vec<PathKey>>,
    /// Ejections for bad answers in a row (each doubles the next).
    rounds: AtomicU32,
    /// Ejected until this time (ms); 0 when not ejected. Once past, the
    /// backend waits for its trial request with this still set.
    ejected_until: AtomicU64,
    /// A trial request is under way.
    trial: AtomicBool,
}

impl Outlier {
    pub(super) fn new() -> Outlier {
        Outlier {
            failures: AtomicU32::new(0),
            paths: Mutex::new(Vec::new()),
            rounds: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
        }
    }

    /// The end of the current ejection (ms), 0 when none; past ends mean
    /// the backend waits for its trial.
    pub(super) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Acquire)
    }

    /// Whether an ejection is still running at `now`.
    pub(super) fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until();
        until != 0 && now < until
    }

    /// Whether ejection keeps a new request away at `now`: still ejected,
    /// or over with its trial under way.
    pub(super) fn blocks(&self, now: u64) -> bool {
        match self.ejected_until() {
            0 => false,
            until if now < until => true,
            _ => self.trial.load(Ordering::Acquire),
        }
    }

    /// Whether a request admitted at `now` is the trial of an ejection that
    /// is over (and takes it). Any other request is a plain one: the backend
    /// is not ejected, or its pool sends it traffic anyway (its share of
    /// ejected members is full, or it panics), or the request raced the
    /// trial by the instant between picking and admitting.
    pub(super) fn claim(&self, now: u64) -> bool {
        match self.ejected_until() {
            0 => false,
            until if now < until => false,
            _ => self
                .trial
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    /// Gives the trial back (its request never got an outcome).
    pub(super) fn release_trial(&self) {
        self.trial.store(false, Ordering::Release);
    }

    /// A good answer: the streak ends, and so does the ejection the request
    /// was admitted under (`seen`, the [`Outlier::ejected_until`] of its
    /// admission: the trial's, or a request the pool sent anyway). A
    /// request admitted before the ejection began ends nothing: it
    /// answered from before. True when an ejection ended.
    pub(super) fn success(&self, seen: u64) -> bool {
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if seen == 0 || self.ejected_until() != seen {
            return false;
        }
        self.rounds.store(0, Ordering::Release);
        self.end_ejection()
    }

    /// A passing probe: the backend answers again, so an ejection ends (the
    /// doubling is kept: only a good answer resets it). True when one ended.
    pub(super) fn probe_passed(&self) -> bool {
        self.ejected_until() != 0 && self.end_ejection()
    }

    fn end_ejection(&self) -> bool {
        let was = self.ejected_until.swap(0, Ordering::AcqRel);
        self.trial.store(false, Ordering::Release);
        was != 0
    }

    /// Counts `fault`; true when an ejection is due: the trial failed, or
    /// the streak reached `limit` (0: never). Failures of requests sent
    /// while the backend is ejected anyway (readmitted by its pool) do not
    /// count.
    pub(super) fn failure(&self, fault: Fault, trial: bool, limit: u32) -> bool {
        if trial {
            return true;
        }
        if limit == 0 || self.ejected_until() != 0 {
            return false;
        }
        if let Fault::Answer(path) = fault {
            // The lock guards plain data that is never left half-updated.
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            if self.failures.load(Ordering::Acquire) == 0 {
                paths.clear();
            }
            if paths.contains(&path) {
                return false;
            }
            paths.push(path);
        }
        self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= limit
    }

    /// The pool refused an ejection (its share is full, or this is its
    /// last usable member): a new streak starts.
    pub(super) fn forgive(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// Ejects at `now` because of `fault`: for a short fixed time when the
    /// backend could not be reached (a restart is noticed at once), else
    /// for `base` doubled per repeat, capped. Returns the length and the
    /// round of bad-answer ejections (0 for an unreachable one).
    pub(super) fn eject(&self, now: u64, fault: Fault, base: Duration) -> (Duration, u32) {
        let (length, round) = match fault {
            Fault::Unreachable => (base.min(UNREACHABLE_EJECTION), 0),
            Fault::Answer(_) => {
                let round = self.rounds.fetch_add(1, Ordering::AcqRel);
                let cap = EJECTION_TIME_MAX.max(base);
                let length = base.saturating_mul(1u32 << round.min(16)).min(cap);
                (length, round + 1)
            }
        };
        self.ejected_until
            .store(now + length.as_millis() as u64, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.trial.store(false, Ordering::Release);
        (length, round)
    }
}

// === impl AnswerWindow ===

const BUCKETS: usize = RETRY_AFTER_WINDOW.as_secs() as usize;
const ANSWERS: usize = 0;
const SAID_RETRY_AFTER: usize = 1;

/// A backend's answers over the last [`RETRY_AFTER_WINDOW`], and how many of
/// them were `503` + `Retry-After` (a [`Window`] of one-second buckets).
///
/// The rule: a `503` + `Retry-After` makes the backend back off only when
/// the window holds at least [`RETRY_AFTER_MIN_ANSWERS`] answers and more
/// than half of them said so. One such answer, on one URL, never does
/// (Varnish's saint mode blocks the object, not the backend); a `429` never
/// does (its `Retry-After` is for that client, and goes to it as it is).
#[derive(Default)]
pub(super) struct AnswerWindow {
    window: Window<BUCKETS>,
}

impl AnswerWindow {
    /// Counts one answer at `second` (`retry_after`: it was a `503` with
    /// `Retry-After`); true when the backend now says so for most of its
    /// recent traffic.
    pub(super) fn record(&self, second: u64, retry_after: bool) -> bool {
        self.window.add(second, ANSWERS, 1);
        if !retry_after {
            return false;
        }
        self.window.add(second, SAID_RETRY_AFTER, 1);
        let [answers, said] = self.window.totals(second);
        answers >= u64::from(RETRY_AFTER_MIN_ANSWERS) && said * 2 > answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn path(p: &str) -> Fault {
        Fault::Answer(PathKey::of(p))
    }

    #[test]
    fn one_failing_path_never_makes_a_streak() {
        let o = Outlier::new();
        for _ in 0..100 {
            assert!(!o.failure(path("/broken"), false, 5));
        }
        for p in ["/a", "/b", "/c"] {
            assert!(!o.failure(path(p), false, 5));
        }
        assert!(o.failure(path("/d"), false, 5), "five different paths");
    }

    #[test]
    fn a_good_answer_ends_the_streak_and_the_query_is_not_a_new_path() {
        let o = Outlier::new();
        for p in ["/a", "/b", "/c", "/d"] {
            assert!(!o.failure(path(p), false, 5));
        }
        assert!(!o.success(0));
        for p in ["/a", "/b", "/c", "/d"] {
            assert!(!o.failure(path(p), false, 5), "a new streak");
        }
        assert_eq!(PathKey::of("/search"), PathKey::of("/search"));
    }

    #[test]
    fn unreachable_failures_count_each_and_eject_briefly_without_doubling() {
        let o = Outlier::new();
        for _ in 0..4 {
            assert!(!o.failure(Fault::Unreachable, false, 5));
        }
        assert!(o.failure(Fault::Unreachable, false, 5));
        let ten = 10 * SECOND;
        assert_eq!(
            o.eject(1, Fault::Unreachable, ten),
            (UNREACHABLE_EJECTION, 0)
        );
        assert!(o.is_ejected(100) && o.blocks(100));
        let after = 1 + UNREACHABLE_EJECTION.as_millis() as u64;
        assert!(!o.blocks(after), "the trial is free");
        assert!(o.claim(after), "the trial");
        assert!(o.blocks(after), "others wait for its outcome");
        assert!(!o.claim(after), "only one trial");
        assert!(o.failure(Fault::Unreachable, true, 5), "a failed trial");
        assert_eq!(
            o.eject(after, Fault::Unreachable, ten).0,
            UNREACHABLE_EJECTION,
            "no doubling for a refused connect"
        );
    }

    #[test]
    fn bad_answers_eject_for_doubling_times_and_any_good_answer_ends_it() {
        let o = Outlier::new();
        let base = 10 * SECOND;
        assert_eq!(o.eject(1, path("/x"), base), (base, 1));
        let first = o.ejected_until();
        assert!(!o.claim(2), "sent anyway by the pool: no trial");
        assert!(!o.failure(path("/y"), false, 1), "already ejected");
        assert_eq!(o.eject(1, path("/x"), base), (2 * base, 2));
        assert!(!o.success(0), "admitted before the ejection: ends nothing");
        assert!(!o.success(first), "admitted under an older ejection");
        assert!(
            o.success(o.ejected_until()),
            "a good answer ends the ejection"
        );
        assert!(!o.blocks(3));
        assert_eq!(
            o.eject(1, path("/x"), base),
            (base, 1),
            "the doubling restarts"
        );
        assert!(o.probe_passed());
        assert!(!o.is_ejected(2));
        assert_eq!(
            o.eject(1, path("/x"), base).1,
            2,
            "a probe keeps the doubling"
        );
    }

    #[test]
    fn retry_after_backs_off_only_for_most_of_the_traffic() {
        let w = AnswerWindow::default();
        assert!(!w.record(1, true), "one answer never does");
        for _ in 0..3 {
            assert!(!w.record(1, true));
        }
        assert!(w.record(2, true), "five of five");

        let w = AnswerWindow::default();
        for _ in 0..10 {
            w.record(1, false);
        }
        for _ in 0..10 {
            assert!(!w.record(2, true), "at most half");
        }
        assert!(w.record(3, true), "eleven of twenty-one");

        let w = AnswerWindow::default();
        for _ in 0..10 {
            w.record(1, false);
        }
        for _ in 0..5 {
            w.record(11, true);
        }
        assert!(
            w.record(11, true),
            "answers older than the window are forgotten"
        );
    }
}
