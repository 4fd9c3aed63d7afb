//! Limits kept in memory on this relay node: failed sign-ins (rate limiting) and each
//! user's open streams (the plan's concurrency limit).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Refuses sign-in attempts for a key (an email, an IP address) after too many recent
/// failures. Time is passed in, so the rule is tested without waiting.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// At most `max_failures` failures per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> Self {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `None` if `key` may try now, or how long until it may.
    pub fn check(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut failures = self.lock();
        let recent = failures.get_mut(key)?;
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            recent.pop_front();
        }
        if recent.len() < self.max_failures {
            return None;
        }
        recent
            .front()
            .map(|oldest| self.window.saturating_sub(now.duration_since(*oldest)))
    }

    /// Records a failed attempt for `key`.
    pub fn failed(&self, key: &str, now: Instant) {
        let mut failures = self.lock();
        // Bound memory under a flood of distinct keys: forget the idle ones.
        if failures.len() > 100_000 {
            failures.retain(|_, v| {
                v.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        let recent = failures.entry(key.to_owned()).or_default();
        recent.push_back(now);
        if recent.len() > self.max_failures {
            recent.pop_front();
        }
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts each user's open streams on this node.
#[derive(Default, Clone)]
pub struct StreamCounter {
    open: Arc<Mutex<HashMap<String, i64>>>,
}

/// One open stream, counted until dropped.
pub struct StreamSlot {
    counter: StreamCounter,
    user_id: String,
}

impl StreamCounter {
    /// Takes a slot for `user_id` if fewer than `max` are open; otherwise `None`.
    pub fn try_open(&self, user_id: &str, max: i64) -> Option<StreamSlot> {
        let mut open = self.lock();
        let n = open.entry(user_id.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            counter: self.clone(),
            user_id: user_id.to_owned(),
        })
    }

    /// Streams `user_id` has open now.
    pub fn open_for(&self, user_id: &str) -> i64 {
        self.lock().get(user_id).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counter.lock();
        if let Some(n) = open.get_mut(&self.user_id) {
            *n -= 1;
            if *n <= 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_limiter_blocks_after_failures_and_forgives_with_time() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.check("a@b", t0), None, "attempt {i}");
            limiter.failed("a@b", t0 + Duration::from_secs(i));
        }
        let wait = limiter
            .check("a@b", t0 + Duration::from_secs(10))
            .expect("blocked");
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(limiter.check("other", t0), None, "keys are independent");
        assert_eq!(
            limiter.check("a@b", t0 + Duration::from_secs(61)),
            None,
            "window passed"
        );
        limiter.failed("a@b", t0 + Duration::from_secs(61));
        limiter.succeeded("a@b");
        assert_eq!(limiter.check("a@b", t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn stream_slots_count_until_dropped() {
        let counter = StreamCounter::default();
        let a = counter.try_open("u", 2).expect("first");
        let b = counter.try_open("u", 2).expect("second");
        assert!(counter.try_open("u", 2).is_none(), "third refused");
        assert_eq!(counter.open_for("u"), 2);
        drop(a);
        let _c = counter.try_open("u", 2).expect("a slot came free");
        drop(b);
        assert_eq!(counter.open_for("u"), 1);
    }
}
