//! The wait queue of a backend with `max_connections`: a bounded FIFO per
//! route priority (9 served first), so a busy backend sheds load with a
//! quick 503 instead of piling up requests.
//!
//! A short mutex per backend guards the queue and the decision "free slot
//! or wait"; nothing else on the request path locks. A released slot is
//! handed straight to the next waiter, so the in-flight count never dips
//! and a newcomer cannot overtake the queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::defaults::ROUTE_PRIORITY_MAX;

const LANES: usize = ROUTE_PRIORITY_MAX as usize + 1;

/// Waiters by priority; `len` counts entries, including ones whose request
/// already gave up (they are skipped when a slot is handed out).
struct Waiters {
    lanes: [VecDeque<oneshot::Sender<()>>; LANES],
    len: usize,
}

pub(super) struct Queue {
    max_connections: usize,
    length: usize,
    timeout: Duration,
    waiters: Mutex<Waiters>,
}

/// What [`Queue::acquire`] decided.
pub(super) enum Admission {
    /// A slot was free and is now taken.
    Now,
    /// Wait for a slot on this ticket.
    Wait(oneshot::Receiver<()>),
    /// The queue is full: refuse at once.
    Full,
}

impl Queue {
    pub(super) fn new(max_connections: usize, length: usize, timeout: Duration) -> Queue {
        Queue {
            max_connections,
            length,
            timeout,
            waiters: Mutex::new(Waiters {
                lanes: Default::default(),
                len: 0,
            }),
        }
    }

    /// Requests waiting now.
    pub(super) fn len(&self) -> usize {
        self.lock().len
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // The lock guards plain data that is never left half-updated.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot if one is free and nobody waits; else queues the caller
    /// (when there is room) at `priority`.
    pub(super) fn acquire(&self, in_flight: &AtomicUsize, priority: u8) -> Admission {
        let mut waiters = self.lock();
        if waiters.len == 0 && in_flight.load(Ordering::Acquire) < self.max_connections {
            in_flight.fetch_add(1, Ordering::AcqRel);
            return Admission::Now;
        }
        if waiters.len >= self.length {
            return Admission::Full;
        }
        let (tx, rx) = oneshot::channel();
        let lane = usize::from(priority).min(LANES - 1);
        waiters.lanes[lane].push_back(tx);
        waiters.len += 1;
        Admission::Wait(rx)
    }

    /// Waits up to `queue_timeout` for a slot; true when one was handed over.
    pub(super) async fn wait(&self, mut ticket: oneshot::Receiver<()>) -> bool {
        match tokio::time::timeout(self.timeout, &mut ticket).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                // Under the lock no slot can be handed over meanwhile: either
                // one already was (take it), or the ticket is cancelled.
                let mut waiters = self.lock();
                ticket.close();
                if ticket.try_recv().is_ok() {
                    return true;
                }
                for lane in waiters.lanes.iter_mut() {
                    lane.retain(|tx| !tx.is_closed());
                }
                waiters.len = waiters.lanes.iter().map(VecDeque::len).sum();
                false
            }
        }
    }

    /// Gives a finished request's slot to the first waiter of the highest
    /// priority, or frees it.
    pub(super) fn release(&self, in_flight: &AtomicUsize) {
        let mut waiters = self.lock();
        for lane in (0..LANES).rev() {
            while let Some(tx) = waiters.lanes[lane].pop_front() {
                waiters.len -= 1;
                if tx.send(()).is_ok() {
                    return;
                }
            }
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_go_to_higher_priority_first_then_fifo() {
        let queue = Queue::new(1, 3, Duration::from_secs(5));
        let in_flight = AtomicUsize::new(0);
        assert!(matches!(queue.acquire(&in_flight, 5), Admission::Now));
        let Admission::Wait(mut low) = queue.acquire(&in_flight, 1) else {
            panic!("queued")
        };
        let Admission::Wait(mut high_a) = queue.acquire(&in_flight, 9) else {
            panic!("queued")
        };
        let Admission::Wait(mut high_b) = queue.acquire(&in_flight, 9) else {
            panic!("queued")
        };
        assert!(matches!(queue.acquire(&in_flight, 9), Admission::Full));
        queue.release(&in_flight);
        assert!(high_a.try_recv().is_ok());
        assert!(high_b.try_recv().is_err() && low.try_recv().is_err());
        queue.release(&in_flight);
        assert!(high_b.try_recv().is_ok());
        queue.release(&in_flight);
        assert!(low.try_recv().is_ok());
        assert_eq!(
            in_flight.load(Ordering::Acquire),
            1,
            "slots were handed over"
        );
        queue.release(&in_flight);
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_timed_out_waiter_leaves_the_queue() {
        let queue = Queue::new(1, 1, Duration::from_millis(20));
        let in_flight = AtomicUsize::new(0);
        assert!(matches!(queue.acquire(&in_flight, 5), Admission::Now));
        let Admission::Wait(ticket) = queue.acquire(&in_flight, 5) else {
            panic!("queued")
        };
        assert!(!queue.wait(ticket).await);
        assert!(matches!(queue.acquire(&in_flight, 5), Admission::Wait(_)));
    }
}
