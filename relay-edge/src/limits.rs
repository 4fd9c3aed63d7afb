//! Limits kept in memory on this relay node: failed sign-ins (rate limiting), each
//! user's open streams (the plan's concurrency limit), each client address's connections
//! and each user's status-event streams.
//!
//! In a cluster (`[cluster] redis_url`) three of them are shared through Redis
//! (`crate::cluster::shared`): failed sign-ins ([`LoginLimiter::wait`]), each user's
//! open streams and daily actions ([`take_stream_places`]: decided in memory against
//! the totals Redis last reported, [`tally`]; written and read back in batches by
//! [`sync_counts`], so a stream to a device costs no Redis round trip). Connections
//! per address and event streams per user stay per node. While Redis is unreachable
//! each node falls back to its own counts.

pub mod tally;

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::cluster::shared::Shared;
use crate::state::RelayState;
use crate::store::StoreError;
use tally::{Admit, SyncItem, Synced};

/// Refuses sign-in attempts for a key (an email, an IP address) after too many recent
/// failures. Time is passed in, so the rule is tested without waiting.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    shared: OnceLock<Arc<Shared>>,
}

impl LoginLimiter {
    /// At most `max_failures` failures per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> Self {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
            shared: OnceLock::new(),
        }
    }

    /// From now on, failures are also counted in the cluster's Redis, and
    /// [`LoginLimiter::wait`] asks it (the cluster calls this at start).
    pub fn share(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(shared);
    }

    /// How long `key` must wait before trying again, if at all: this node's count, and
    /// in a cluster the count all nodes share (one Redis round trip; while Redis is
    /// unreachable, this node's count alone).
    pub async fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let here = self.check(key, now);
        let Some(shared) = self.shared.get() else {
            return here;
        };
        match shared.login_wait(key, self.max_failures).await {
            Ok(everywhere) => here.max(everywhere),
            Err(err) => {
                warn!(%err, "shared sign-in limit unavailable; this node's count alone");
                here
            }
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
        drop(failures);
        if let Some(shared) = self.shared.get().cloned() {
            let (key, window) = (key.to_owned(), self.window);
            tokio::spawn(async move {
                if let Err(err) = shared.login_failed(&key, window).await {
                    warn!(%err, "failed sign-in not counted in the cluster");
                }
            });
        }
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
        if let Some(shared) = self.shared.get().cloned() {
            let key = key.to_owned();
            tokio::spawn(async move {
                let _ = shared.login_succeeded(&key).await;
            });
        }
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

/// One open stream of a user, counted until dropped; in a cluster its end is written
/// to Redis with the next batch of counts ([`sync_counts`]).
pub struct StreamSlot {
    slot: Option<Slot<String>>,
    cluster: Option<Arc<Shared>>,
}

impl StreamSlot {
    fn new(slot: Slot<String>, cluster: Option<Arc<Shared>>) -> Self {
        StreamSlot {
            slot: Some(slot),
            cluster,
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let user_id = slot.key.clone();
            drop(slot);
            if let Some(cluster) = &self.cluster {
                cluster.tally.touch(&user_id, Instant::now());
            }
        }
    }
}

/// The places a stream to a device holds: a concurrent-stream place and, under a
/// daily action limit, the day its action was counted on.
pub struct StreamPlaces {
    /// Counts against the user's concurrent-stream limit while the stream is open.
    pub slot: StreamSlot,
    /// The day an action was counted on (to give it back if the stream never reaches
    /// the device).
    pub counted_day: Option<String>,
}

/// Why [`take_stream_places`] refused.
#[derive(Debug)]
pub enum PlacesRefused {
    /// The user has `max_streams` open (on this node, or in the cluster).
    Streams,
    /// The user reached the plan's daily action limit.
    Actions,
    /// The store could not be read.
    Store(StoreError),
}

/// Takes a stream place for `user_id` (at most `max_streams` open) and, with
/// `max_actions`, one of the day's actions.
///
/// A single node decides in memory (the day's count is read from the store once per
/// user and day). In a cluster, too: against the totals of every node as Redis last
/// reported them plus what this node counted since ([`tally::Tally::admit`]), written
/// and read back by [`sync_counts`] every `[cluster] count_sync_ms`; no Redis round
/// trip, except one for a user with no fresh totals here (the first stream on this
/// node, or none for a minute). While Redis is unreachable each node decides alone, on
/// what it last knew (or the store's count).
pub async fn take_stream_places(
    state: &RelayState,
    user_id: &str,
    max_streams: i64,
    max_actions: Option<i64>,
) -> Result<StreamPlaces, PlacesRefused> {
    let user = user_id.to_owned();
    let local = state
        .limits
        .streams_per_user
        .try_open(&user, max_streams)
        .ok_or(PlacesRefused::Streams)?;
    let Some(shared) = state.cluster.shared() else {
        return Ok(StreamPlaces {
            counted_day: count_alone(state, user_id, max_actions).await?,
            slot: StreamSlot::new(local, None),
        });
    };
    let mine = state.limits.streams_per_user.open_for(&user);
    let day = state.actions.today();
    let mut stale_ok = false;
    let mut synced = false;
    // At most: cold, synced, seeded, decided; more only if the user's day keeps
    // changing under this stream (two streams on either side of midnight UTC).
    for _ in 0..6 {
        let now = Instant::now();
        match shared
            .tally
            .admit(user_id, &day, now, mine, max_streams, max_actions, stale_ok)
        {
            Admit::Yes(total) => {
                let counted_day = max_actions.map(|_| {
                    state.actions.counted_shared(user_id, &day, total);
                    day
                });
                return Ok(StreamPlaces {
                    slot: StreamSlot::new(local, Some(shared.clone())),
                    counted_day,
                });
            }
            Admit::TooManyStreams => return Err(PlacesRefused::Streams),
            Admit::DailyLimit => return Err(PlacesRefused::Actions),
            Admit::Cold if !synced => {
                synced = true;
                let Some(item) = shared.tally.cold_item(user_id, mine) else {
                    continue;
                };
                match sync_one(state, shared, "count_cold", &item).await {
                    Ok(reply) => shared.tally.apply(&item, reply, Instant::now()),
                    Err(err) => {
                        shared.tally.failed(&item);
                        warn!(%err, "shared limits unavailable; counting on this node alone");
                        stale_ok = true;
                    }
                }
            }
            // Synced, and still not fresh (Redis answered too slowly to count as
            // fresh, or lost the count twice): decide on what this node knows.
            Admit::Cold => stale_ok = true,
            Admit::NeedsSeed => {
                let stored = state
                    .store
                    .actions_on(user_id, &day)
                    .await
                    .map_err(PlacesRefused::Store)?;
                shared.tally.seed(user_id, &day, stored);
            }
        }
    }
    warn!(%user_id, "the cluster's counts did not settle; counting on this node alone");
    Ok(StreamPlaces {
        counted_day: count_alone(state, user_id, max_actions).await?,
        slot: StreamSlot::new(local, Some(shared.clone())),
    })
}

/// One of the day's actions on this node's own count (`crate::actions`: in memory,
/// seeded from the store, written to it in batches): the single node's rule.
async fn count_alone(
    state: &RelayState,
    user_id: &str,
    max_actions: Option<i64>,
) -> Result<Option<String>, PlacesRefused> {
    let Some(max) = max_actions else {
        return Ok(None);
    };
    match state
        .actions
        .try_count(&state.store, user_id, max)
        .await
        .map_err(PlacesRefused::Store)?
    {
        Some(day) => Ok(Some(day)),
        None => Err(PlacesRefused::Actions),
    }
}

/// Writes one user's counts to Redis and reads back the totals; when Redis lost the
/// day's count and this node knows none, seeds it from the store (what every node
/// wrote there, plus what this node counted but has not yet written, less this item's
/// actions, which the script adds) and writes again.
async fn sync_one(
    state: &RelayState,
    shared: &Shared,
    op: &'static str,
    item: &SyncItem,
) -> Result<Synced, String> {
    let reply = shared
        .sync_counts(op, item)
        .await
        .map_err(|e| e.to_string())?;
    if reply != Synced::NeedsSeed {
        return Ok(reply);
    }
    let stored = state
        .store
        .actions_on(&item.user_id, &item.day)
        .await
        .map_err(|e| e.to_string())?;
    let pending = state.actions.pending_for(&item.user_id, &item.day);
    let seeded = item.with_seed((stored + pending - item.delta).max(0));
    shared
        .sync_counts(op, &seeded)
        .await
        .map_err(|e| e.to_string())
}

/// The cluster's count writer: every `interval` (`[cluster] count_sync_ms`), one
/// [`tally::Tally::batch`] goes to Redis, one script per user, sent together (fred
/// pipelines commands issued at once on its connection), and the replies become this
/// node's view of the totals. Counts not written (Redis unreachable) go into the next
/// batch; when the relay stops, `RelayHandle::shutdown` writes one last batch.
pub async fn sync_counts(
    state: Arc<RelayState>,
    shared: Arc<Shared>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    // Totals older than a few intervals (the writer fell behind, or Redis is
    // unreachable) are not trusted: the next stream syncs its user first.
    shared.tally.set_stale_after(4 * interval);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping(&mut stopped) => return,
        }
        sync_batch(&state, &shared).await;
    }
}

/// Resolves once the relay is stopping (the guard `wait_for` gives is not `Send`).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Writes one batch of counts and applies the replies; returns how many users it
/// wrote.
pub async fn sync_batch(state: &RelayState, shared: &Shared) -> usize {
    let items = shared.tally.batch(Instant::now(), |user_id| {
        state.limits.streams_per_user.open_for(&user_id.to_owned())
    });
    if items.is_empty() {
        return 0;
    }
    let replies = futures_util::future::join_all(
        items
            .iter()
            .map(|item| sync_one(state, shared, "count_sync", item)),
    )
    .await;
    let now = Instant::now();
    let mut written = 0;
    for (item, reply) in items.iter().zip(replies) {
        match reply {
            Ok(reply) => {
                written += 1;
                shared.tally.apply(item, reply, now);
            }
            Err(err) => {
                debug!(%err, user_id = %item.user_id, "counts not written; in the next batch");
                shared.tally.failed(item);
            }
        }
    }
    written
}

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

    /// Every key with something open, and how many.
    pub fn snapshot(&self) -> Vec<(K, i64)> {
        self.lock().iter().map(|(k, n)| (k.clone(), *n)).collect()
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
