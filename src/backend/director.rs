//! The pool policies, as pure logic: given which members are eligible
//! (healthy, not ejected, not backing off, not already tried) and their
//! in-flight counts, which one gets the request. No I/O, no clock.
//!
//! | policy | picks |
//! |---|---|
//! | `round_robin` | the next eligible member after the last pick |
//! | `random` | at random, in proportion to `weight` |
//! | `hash` | the member owning the cache key on a consistent-hash ring (virtual nodes, `weight` of them ×64); when it is not eligible, the next member clockwise, so only that member's keys move |
//! | `fallback` | the first eligible member in configuration order |
//! | `least_busy` | the fewest in-flight requests, ties at random |

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use crate::config::Policy;

/// Virtual nodes per unit of weight on the hash ring: enough for an even
/// spread (±10 % with a handful of backends), few enough to stay small.
const VNODES_PER_WEIGHT: u32 = 64;
/// Weights above this give no more ring points (the ring stays small).
const MAX_HASH_WEIGHT: u32 = 100;

/// One pool's policy and the state it needs.
pub struct Director {
    policy: Policy,
    weights: Vec<u32>,
    next: AtomicUsize,
    /// `(point, member)`, sorted by point.
    ring: Vec<(u64, usize)>,
}

impl Director {
    /// A director over members given as `(name, weight)`, in pool order.
    pub fn new(policy: Policy, members: &[(&str, u32)]) -> Director {
        let ring = if policy == Policy::Hash {
            let mut ring = Vec::new();
            for (index, (name, weight)) in members.iter().enumerate() {
                let points = (*weight).clamp(1, MAX_HASH_WEIGHT) * VNODES_PER_WEIGHT;
                for vnode in 0..points {
                    ring.push((hash_key(&format!("{name}#{vnode}")), index));
                }
            }
            ring.sort_unstable();
            ring
        } else {
            Vec::new()
        };
        Director {
            policy,
            weights: members.iter().map(|(_, w)| *w).collect(),
            next: AtomicUsize::new(0),
            ring,
        }
    }

    /// The member for a request with cache key `key`, among those for which
    /// `eligible` holds; `load` gives a member's in-flight count.
    pub fn pick(
        &self,
        key: &str,
        eligible: &dyn Fn(usize) -> bool,
        load: &dyn Fn(usize) -> usize,
    ) -> Option<usize> {
        self.pick_with(&mut rand::thread_rng(), key, eligible, load)
    }

    /// [`Director::pick`] with the random source given (for tests).
    pub fn pick_with(
        &self,
        rng: &mut impl Rng,
        key: &str,
        eligible: &dyn Fn(usize) -> bool,
        load: &dyn Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        match self.policy {
            Policy::RoundRobin => {
                // Relaxed: the counter only spreads load, it orders nothing.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|i| (start + i) % n).find(|&i| eligible(i))
            }
            Policy::Fallback => (0..n).find(|&i| eligible(i)),
            Policy::Random => {
                let total: u64 = (0..n)
                    .filter(|&i| eligible(i))
                    .map(|i| u64::from(self.weights[i]))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut ticket = rng.gen_range(0..total);
                for i in (0..n).filter(|&i| eligible(i)) {
                    let w = u64::from(self.weights[i]);
                    if ticket < w {
                        return Some(i);
                    }
                    ticket -= w;
                }
                None
            }
            Policy::LeastBusy => {
                let mut best: Option<(usize, usize)> = None;
                let mut ties = 0u32;
                for i in (0..n).filter(|&i| eligible(i)) {
                    let l = load(i);
                    match best {
                        Some((_, b)) if l > b => {}
                        Some((_, b)) if l == b => {
                            // Reservoir sampling keeps each tie equally likely.
                            ties += 1;
                            if rng.gen_range(0..ties) == 0 {
                                best = Some((i, l));
                            }
                        }
                        _ => {
                            best = Some((i, l));
                            ties = 1;
                        }
                    }
                }
                best.map(|(i, _)| i)
            }
            Policy::Hash => {
                let point = hash_key(key);
                let start = self.ring.partition_point(|&(p, _)| p < point);
                let len = self.ring.len();
                (0..len)
                    .map(|i| self.ring[(start + i) % len].1)
                    .find(|&member| eligible(member))
            }
        }
    }
}

/// A stable 64-bit hash of a text (FNV-1a, then a splitmix64 finaliser to
/// spread similar keys): the same on every Shellac, so a fleet agrees on
/// each object's home backend.
pub fn hash_key(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn director(policy: Policy, weights: &[u32]) -> Director {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("b{i}")).collect();
        let members: Vec<(&str, u32)> = names
            .iter()
            .zip(weights)
            .map(|(n, w)| (n.as_str(), *w))
            .collect();
        Director::new(policy, &members)
    }

    fn counts(d: &Director, n: usize, eligible: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0; d.weights.len()];
        for i in 0..n {
            let key = format!("/obj/{i}");
            if let Some(m) = d.pick_with(&mut rng, &key, eligible, &|_| 0) {
                counts[m] += 1;
            }
        }
        counts
    }

    #[test]
    fn round_robin_is_exact_and_skips_the_ineligible() {
        let d = director(Policy::RoundRobin, &[1, 1, 1]);
        assert_eq!(counts(&d, 999, &|_| true), vec![333, 333, 333]);
        let c = counts(&d, 1000, &|i| i != 1);
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], 1000);
    }

    #[test]
    fn random_follows_weights() {
        let d = director(Policy::Random, &[1, 3]);
        let c = counts(&d, 100_000, &|_| true);
        let share = c[1] as f64 / 100_000.0;
        assert!((share - 0.75).abs() < 0.01, "{c:?}");
        assert_eq!(counts(&d, 100, &|i| i == 0), vec![100, 0]);
    }

    #[test]
    fn fallback_takes_the_first_eligible() {
        let d = director(Policy::Fallback, &[1, 1, 1]);
        assert_eq!(counts(&d, 10, &|_| true), vec![10, 0, 0]);
        assert_eq!(counts(&d, 10, &|i| i != 0), vec![0, 10, 0]);
        assert_eq!(counts(&d, 10, &|_| false), vec![0, 0, 0]);
    }

    #[test]
    fn least_busy_prefers_idle_and_splits_ties() {
        let d = director(Policy::LeastBusy, &[1, 1, 1]);
        let mut rng = StdRng::seed_from_u64(1);
        let load = |i: usize| [5, 1, 3][i];
        assert_eq!(d.pick_with(&mut rng, "", &|_| true, &load), Some(1));
        assert_eq!(d.pick_with(&mut rng, "", &|i| i != 1, &load), Some(2));
        let mut c = [0; 3];
        for _ in 0..3000 {
            if let Some(i) = d.pick_with(&mut rng, "", &|_| true, &|_| 0) {
                c[i] += 1;
            }
        }
        assert!(c.iter().all(|&n| n > 800), "{c:?}");
    }

    #[test]
    fn hash_is_stable_balanced_and_remaps_minimally() {
        let d = director(Policy::Hash, &[1, 1, 1, 1]);
        let mut rng = StdRng::seed_from_u64(3);
        let homes: Vec<usize> = (0..4000)
            .map(|i| {
                d.pick_with(&mut rng, &format!("/k/{i}"), &|_| true, &|_| 0)
                    .expect("a home")
            })
            .collect();
        let mut c = [0; 4];
        homes.iter().for_each(|&h| c[h] += 1);
        assert!(c.iter().all(|&n| (700..=1300).contains(&n)), "{c:?}");
        // Member 2 goes sick: only its keys move.
        for (i, &home) in homes.iter().enumerate() {
            let now = d
                .pick_with(&mut rng, &format!("/k/{i}"), &|m| m != 2, &|_| 0)
                .expect("a home");
            if home == 2 {
                assert_ne!(now, 2);
            } else {
                assert_eq!(now, home, "key {i} moved although its home is healthy");
            }
        }
    }
}
