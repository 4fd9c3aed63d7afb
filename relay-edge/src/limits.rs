//! Limits kept in memory on this relay node: failed sign-ins (rate limiting), each
//! user's open streams (the plan's concurrency limit), each client address's connections
//! and each user's status-event streams.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
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

/// Runs password hashing (argon2id: ~19 MiB and tens of milliseconds each) on a small
/// pool: at most `size` at once, each on a blocking thread. A request that cannot get a
/// place within the queue timeout is answered "busy, retry later" instead of waiting
/// without bound, so a flood of sign-ins cannot take all memory or threads.
pub struct HashPool {
    slots: Arc<tokio::sync::Semaphore>,
    size: usize,
    queue_timeout: Duration,
}

/// No place on the [`HashPool`] came free within its queue timeout.
#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins are being checked; try again shortly")]
pub struct HashPoolBusy;

impl HashPool {
    /// A pool of `size` places (at least 1) and a queue timeout.
    pub fn new(size: usize, queue_timeout: Duration) -> Self {
        let size = size.max(1);
        HashPool {
            slots: Arc::new(tokio::sync::Semaphore::new(size)),
            size,
            queue_timeout,
        }
    }

    /// The default size: twice the machine's cores.
    pub fn default_size() -> usize {
        2 * std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Runs `work` on a blocking thread once a place is free, or gives up after the
    /// queue timeout. The place is held until `work` ends.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashPoolBusy> {
        let permit = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| HashPoolBusy)?
            .map_err(|_| HashPoolBusy)?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|_| HashPoolBusy)
    }

    /// Hashes running now.
    pub fn in_use(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// Seconds a refused client is told to wait (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        self.queue_timeout.as_secs().max(1)
    }
}

/// Counts open things per key (a user's streams, an address's connections, a user's
/// event streams) on this node, each up to a maximum.
pub struct KeyedSlots<K> {
    open: Arc<Mutex<HashMap<K, i64>>>,
}

impl<K> Default for KeyedSlots<K> {
    fn default() -> Self {
        KeyedSlots {
            open: Arc::default(),
        }
    }
}

impl<K> Clone for KeyedSlots<K> {
    fn clone(&self) -> Self {
        KeyedSlots {
            open: self.open.clone(),
        }
    }
}

/// One open thing, counted until dropped.
pub struct Slot<K: Eq + Hash> {
    counter: KeyedSlots<K>,
    key: K,
}

/// Each user's open streams (the plan's concurrency limit).
pub type StreamCounter = KeyedSlots<String>;
/// One open stream of a user.
pub type StreamSlot = Slot<String>;

impl<K: Eq + Hash + Clone> KeyedSlots<K> {
    /// Takes a slot for `key` if fewer than `max` are open; otherwise `None`.
    pub fn try_open(&self, key: &K, max: i64) -> Option<Slot<K>> {
        let mut open = self.lock();
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            counter: self.clone(),
            key: key.clone(),
        })
    }

    /// How many `key` has open now.
    pub fn open_for(&self, key: &K) -> i64 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, i64>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n <= 0 {
                open.remove(&self.key);
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

    #[tokio::test]
    async fn hash_pool_bounds_concurrency_and_refuses_after_the_queue_timeout() {
        let pool = Arc::new(HashPool::new(1, Duration::from_millis(50)));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    7
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(pool.in_use(), 1);
        assert!(pool.run(|| 1).await.is_err(), "no place within 50 ms");
        release_tx.send(()).unwrap();
        assert_eq!(busy.await.unwrap().unwrap(), 7);
        assert_eq!(pool.run(|| 2).await.unwrap(), 2, "the place came free");
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.retry_after_secs(), 1);
    }

    #[test]
    fn stream_slots_count_until_dropped() {
        let counter = StreamCounter::default();
        let u = "u".to_owned();
        let a = counter.try_open(&u, 2).expect("first");
        let b = counter.try_open(&u, 2).expect("second");
        assert!(counter.try_open(&u, 2).is_none(), "third refused");
        assert_eq!(counter.open_for(&u), 2);
        drop(a);
        let _c = counter.try_open(&u, 2).expect("a slot came free");
        drop(b);
        assert_eq!(counter.open_for(&u), 1);
        assert!(counter.try_open(&"v".to_owned(), 0).is_none());
        assert!(
            counter.lock().get("v").is_none(),
            "a refused key leaves no entry"
        );
    }
}
