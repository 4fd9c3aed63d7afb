//! Each user's actions today, counted in memory and written to the store in batches.
//!
//! A stream that starts an action takes one from [`ActionCounter::try_count`]: the check
//! against the plan's daily limit and the increment happen under one lock, so a single
//! relay never lets a user past the limit, however many streams race. The first action
//! of a user on a UTC day seeds the count from the store (what other processes, or this
//! one before a restart, counted); after that no stream reads or writes the database.
//! Increments (and the "uncounts" of streams that never reached the device) collect as
//! per-(user, day) deltas that [`ActionCounter::flush`] writes, every
//! `action_flush_ms` ([`FLUSH_INTERVAL`] by default) from a background task (`server.rs`) and once more when the relay
//! stops. A relay that dies without stopping loses at most one interval of counts.
//!
//! The count resets at 00:00 UTC: the day is part of every key, and the first action
//! of the new day seeds a new count. Several relay processes outside a cluster each
//! count exactly for themselves; each flush also raises this process's count to the
//! store's total, so another process's actions are seen within an interval.
//!
//! In a cluster the limit is decided on the count all nodes share through Redis
//! (`crate::limits::take_stream_places`, in memory against the totals the cluster's
//! batches bring back: `crate::limits::tally`); this counter then only records what
//! this node counted ([`ActionCounter::counted_shared`]) so that the store still gets
//! every action, and an uncount is also given back in the cluster's count
//! ([`ActionCounter::share`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::facts::Clock;
use crate::store::{Store, StoreError};

/// How often counted actions are written to the store by default
/// (`action_flush_ms`).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// `YYYY-MM-DD` in UTC of `unix_ms`.
pub fn day_of(unix_ms: u64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// What [`ActionCounter::take`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// One action was counted on this day.
    Counted(String),
    /// The limit is reached; nothing was counted.
    Full,
    /// The user has no count for this day yet: seed it from the store
    /// ([`ActionCounter::seed`]) and try again.
    NeedsSeed(String),
}

struct Today {
    day: String,
    count: i64,
}

#[derive(Default)]
struct Inner {
    /// Each user's count on the day they last acted.
    today: HashMap<String, Today>,
    /// Changes not yet written to the store, by (user, day).
    pending: HashMap<(String, String), i64>,
}

/// Per-user daily action counts, in memory. See the module's documentation.
pub struct ActionCounter {
    clock: Clock,
    inner: Mutex<Inner>,
    shared: OnceLock<Arc<crate::cluster::shared::Shared>>,
}

impl Default for ActionCounter {
    fn default() -> Self {
        ActionCounter::new(crate::facts::system_clock())
    }
}

impl ActionCounter {
    /// An empty counter whose days come from `clock`.
    pub fn new(clock: Clock) -> Self {
        ActionCounter {
            clock,
            inner: Mutex::new(Inner::default()),
            shared: OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The UTC day now.
    pub fn today(&self) -> String {
        day_of((self.clock)())
    }

    /// Counts one action of `user_id` today if fewer than `max` are counted, without
    /// touching the store, or says that the day's count must be seeded first.
    pub fn take(&self, user_id: &str, max: i64) -> Take {
        let day = self.today();
        if max <= 0 {
            return Take::Full;
        }
        let mut inner = self.lock();
        let Some(today) = inner.today.get_mut(user_id).filter(|t| t.day == day) else {
            return Take::NeedsSeed(day);
        };
        if today.count >= max {
            return Take::Full;
        }
        today.count += 1;
        *inner
            .pending
            .entry((user_id.to_owned(), day.clone()))
            .or_default() += 1;
        Take::Counted(day)
    }

    /// Sets the count of `user_id` on `day` from the store's `stored` count, unless a
    /// racing stream seeded it already (the higher count wins). Changes not yet flushed
    /// for that day are added.
    pub fn seed(&self, user_id: &str, day: &str, stored: i64) {
        let mut inner = self.lock();
        let pending = inner
            .pending
            .get(&(user_id.to_owned(), day.to_owned()))
            .copied()
            .unwrap_or(0);
        let count = stored + pending;
        match inner.today.get_mut(user_id) {
            Some(today) if today.day == day => today.count = today.count.max(count),
            _ => {
                inner.today.insert(
                    user_id.to_owned(),
                    Today {
                        day: day.to_owned(),
                        count,
                    },
                );
            }
        }
    }

    /// Counts one action of `user_id` today if fewer than `max` are counted; returns the
    /// day it was counted on, or `None` when the limit is reached. Reads the store only
    /// for the user's first action of the day.
    pub async fn try_count(
        &self,
        store: &Store,
        user_id: &str,
        max: i64,
    ) -> Result<Option<String>, StoreError> {
        loop {
            match self.take(user_id, max) {
                Take::Counted(day) => return Ok(Some(day)),
                Take::Full => return Ok(None),
                Take::NeedsSeed(day) => {
                    let stored = store.actions_on(user_id, &day).await?;
                    self.seed(user_id, &day, stored);
                }
            }
        }
    }

    /// From now on, every uncount is also given back in the cluster's shared count
    /// (written with the next batch; the cluster calls this at start).
    pub(crate) fn share(&self, shared: Arc<crate::cluster::shared::Shared>) {
        let _ = self.shared.set(shared);
    }

    /// Records an action the cluster's shared count let through on `day` (its total
    /// there: `total`): it is written to the store at the next flush.
    pub fn counted_shared(&self, user_id: &str, day: &str, total: Option<i64>) {
        let mut inner = self.lock();
        *inner
            .pending
            .entry((user_id.to_owned(), day.to_owned()))
            .or_default() += 1;
        let today = inner.today.entry(user_id.to_owned()).or_insert(Today {
            day: day.to_owned(),
            count: 0,
        });
        if today.day != day {
            *today = Today {
                day: day.to_owned(),
                count: 0,
            };
        }
        today.count = total.unwrap_or(today.count + 1);
    }

    /// This node's changes for (`user_id`, `day`) not yet written to the store.
    pub fn pending_for(&self, user_id: &str, day: &str) -> i64 {
        self.lock()
            .pending
            .get(&(user_id.to_owned(), day.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Takes back an action counted on `day` whose stream never reached the device.
    pub fn uncount(&self, user_id: &str, day: &str) {
        if let Some(shared) = self.shared.get() {
            shared
                .tally
                .uncount(user_id, day, std::time::Instant::now());
        }
        let mut inner = self.lock();
        if let Some(today) = inner.today.get_mut(user_id)
            && today.day == day
        {
            today.count = (today.count - 1).max(0);
        }
        *inner
            .pending
            .entry((user_id.to_owned(), day.to_owned()))
            .or_default() -= 1;
    }

    /// The actions of `user_id` counted today, if this process has counted any.
    pub fn counted_today(&self, user_id: &str) -> Option<i64> {
        let day = self.today();
        self.lock()
            .today
            .get(user_id)
            .filter(|t| t.day == day)
            .map(|t| t.count)
    }

    /// Changes not yet written to the store (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.lock().pending.values().filter(|d| **d != 0).count()
    }

    /// Writes the changes counted since the last flush to the store, one statement per
    /// (user, day), and forgets the counts of past days. A change the database refuses
    /// (its user was deleted meanwhile) is dropped; one that could not be written for
    /// another reason (the database is unreachable) is kept for the next flush, and the
    /// first such error is returned once the others were tried. Returns how many rows
    /// were written.
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let batch: Vec<((String, String), i64)> = {
            let mut inner = self.lock();
            let today = self.today();
            inner.today.retain(|_, t| t.day == today);
            std::mem::take(&mut inner.pending)
                .into_iter()
                .filter(|(_, delta)| *delta != 0)
                .collect()
        };
        let mut written = 0;
        let mut failed = None;
        for ((user_id, day), delta) in batch {
            match store.add_actions(&user_id, &day, delta).await {
                Ok(total) => {
                    written += 1;
                    // Another process's actions, seen in the total, count here too.
                    let mut inner = self.lock();
                    let pending = inner
                        .pending
                        .get(&(user_id.clone(), day.clone()))
                        .copied()
                        .unwrap_or(0);
                    if let Some(today) = inner.today.get_mut(&user_id)
                        && today.day == day
                    {
                        today.count = today.count.max(total + pending);
                    }
                }
                Err(StoreError::Db(sqlx::Error::Database(err))) => {
                    tracing::warn!(%user_id, %day, delta, %err, "counted actions refused by the database; dropped");
                }
                Err(err) => {
                    self.requeue(user_id, day, delta);
                    failed.get_or_insert(err);
                }
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(written),
        }
    }

    fn requeue(&self, user_id: String, day: String, delta: i64) {
        *self.lock().pending.entry((user_id, day)).or_default() += delta;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// 2026-11-29 23:59:59.000 UTC.
    const LATE: u64 = 1_795_996_799_000;

    fn counter_at(ms: u64) -> (Arc<AtomicU64>, ActionCounter) {
        let now = Arc::new(AtomicU64::new(ms));
        let read = now.clone();
        (
            now,
            ActionCounter::new(Arc::new(move || read.load(Ordering::SeqCst))),
        )
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(LATE), "2026-11-29");
        assert_eq!(day_of(LATE + 1_000), "2026-11-30");
    }

    #[test]
    fn the_first_action_of_a_day_seeds_then_counts_up_to_the_limit() {
        let (_, counter) = counter_at(LATE);
        assert_eq!(counter.take("u", 3), Take::NeedsSeed("2026-11-29".into()));
        counter.seed("u", "2026-11-29", 1);
        assert_eq!(counter.take("u", 3), Take::Counted("2026-11-29".into()));
        assert_eq!(counter.take("u", 3), Take::Counted("2026-11-29".into()));
        assert_eq!(counter.take("u", 3), Take::Full);
        assert_eq!(counter.counted_today("u"), Some(3));
        assert_eq!(
            counter.take("u", 0),
            Take::Full,
            "a zero limit allows nothing"
        );
    }

    #[test]
    fn an_uncount_gives_the_action_back() {
        let (_, counter) = counter_at(LATE);
        counter.seed("u", "2026-11-29", 0);
        assert_eq!(counter.take("u", 1), Take::Counted("2026-11-29".into()));
        assert_eq!(counter.take("u", 1), Take::Full);
        counter.uncount("u", "2026-11-29");
        assert_eq!(counter.pending(), 0, "+1 and -1 leave nothing to write");
        assert_eq!(counter.take("u", 1), Take::Counted("2026-11-29".into()));
    }

    #[test]
    fn the_count_resets_at_midnight_utc() {
        let (now, counter) = counter_at(LATE);
        counter.seed("u", "2026-11-29", 0);
        assert_eq!(counter.take("u", 1), Take::Counted("2026-11-29".into()));
        assert_eq!(counter.take("u", 1), Take::Full);
        now.fetch_add(1_000, Ordering::SeqCst);
        assert_eq!(counter.take("u", 1), Take::NeedsSeed("2026-11-30".into()));
        counter.seed("u", "2026-11-30", 0);
        assert_eq!(counter.take("u", 1), Take::Counted("2026-11-30".into()));
        // Yesterday's uncount does not give back today's action, but is still written.
        counter.uncount("u", "2026-11-29");
        assert_eq!(counter.take("u", 1), Take::Full);
        let pending = counter.lock().pending.clone();
        assert_eq!(pending.get(&("u".into(), "2026-11-29".into())), Some(&0));
        assert_eq!(pending.get(&("u".into(), "2026-11-30".into())), Some(&1));
    }

    #[test]
    fn a_late_seed_does_not_lower_a_count() {
        let (_, counter) = counter_at(LATE);
        counter.seed("u", "2026-11-29", 2);
        assert_eq!(counter.take("u", 5), Take::Counted("2026-11-29".into()));
        counter.seed("u", "2026-11-29", 1); // a racing stream's older read
        assert_eq!(counter.counted_today("u"), Some(3));
    }

    #[test]
    fn concurrent_takes_never_pass_the_limit() {
        let (_, counter) = counter_at(LATE);
        let counter = Arc::new(counter);
        counter.seed("u", "2026-11-29", 0);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    (0..1_000)
                        .filter(|_| matches!(counter.take("u", 777), Take::Counted(_)))
                        .count()
                })
            })
            .collect();
        let counted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(counted, 777);
        assert_eq!(counter.counted_today("u"), Some(777));
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("relay.db").display()
        );
        let store = Store::open(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn flushes_write_the_batched_changes_and_learn_other_counts() {
        let (_dir, store) = store().await;
        let user = store.create_user("a@example.com", "x").await.unwrap();
        let (_, counter) = counter_at(LATE);
        let day = "2026-11-29";
        for _ in 0..3 {
            assert!(
                counter
                    .try_count(&store, &user.id, 10)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        counter.uncount(&user.id, day);
        assert_eq!(
            store.actions_on(&user.id, day).await.unwrap(),
            0,
            "not yet written"
        );
        assert_eq!(
            counter.flush(&store).await.unwrap(),
            1,
            "one row per user and day"
        );
        assert_eq!(store.actions_on(&user.id, day).await.unwrap(), 2);
        assert_eq!(counter.flush(&store).await.unwrap(), 0, "nothing new");

        // An uncount after its increment was written is written as -1.
        counter.uncount(&user.id, day);
        counter.flush(&store).await.unwrap();
        assert_eq!(store.actions_on(&user.id, day).await.unwrap(), 1);

        // Another process counted 5 meanwhile: the next flush brings them in.
        store.add_actions(&user.id, day, 5).await.unwrap();
        assert!(
            counter
                .try_count(&store, &user.id, 10)
                .await
                .unwrap()
                .is_some()
        );
        counter.flush(&store).await.unwrap();
        assert_eq!(counter.counted_today(&user.id), Some(7));
        assert_eq!(store.actions_on(&user.id, day).await.unwrap(), 7);

        // A user deleted before the flush: that row is dropped, the others are written.
        let other = store.create_user("b@example.com", "x").await.unwrap();
        assert!(
            counter
                .try_count(&store, &user.id, 10)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            counter
                .try_count(&store, &other.id, 10)
                .await
                .unwrap()
                .is_some()
        );
        assert!(store.delete_user("a@example.com").await.unwrap());
        assert_eq!(counter.flush(&store).await.unwrap(), 1);
        assert_eq!(counter.pending(), 0, "nothing is retried forever");
        assert_eq!(store.actions_on(&other.id, day).await.unwrap(), 1);
        assert_eq!(store.actions_on(&user.id, day).await.unwrap(), 0);
        store
            .add_actions(&user.id, day, 0)
            .await
            .expect_err("the user is gone");
        let user = store.create_user("a@example.com", "x").await.unwrap();
        store.add_actions(&user.id, day, 7).await.unwrap();

        // A restarted relay seeds from what was written.
        let (_, restarted) = counter_at(LATE);
        for _ in 0..3 {
            assert!(
                restarted
                    .try_count(&store, &user.id, 10)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert!(
            restarted
                .try_count(&store, &user.id, 10)
                .await
                .unwrap()
                .is_none()
        );
    }
}
