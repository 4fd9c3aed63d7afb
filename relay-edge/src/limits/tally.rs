//! A cluster node's view of each user's counts: the actions and open streams of every
//! node, as Redis last told it, plus what this node did since. Pure: no Redis, no
//! clock of its own (every call is given `now`), so the batching is tested without
//! either.
//!
//! The hot path ([`Tally::admit`]) decides in memory: a stream is let through when this
//! node's open streams of the user plus the other nodes' (as last read) stay within
//! the plan's limit, and an action when the day's cluster total (as last read) plus
//! what this node counted since stays under the daily limit. Nothing is sent then.
//! A background task (`crate::limits::sync_counts`) takes a [`Tally::batch`] every
//! `[cluster] count_sync_ms`: one [`SyncItem`] per user this node counts for (the
//! actions counted since the last batch, this node's open streams), sent to Redis as
//! one script per user, all pipelined, whose reply (the cluster's totals) comes back
//! through [`Tally::apply`]; a failed item's actions are put back
//! ([`Tally::failed`]) for the next batch.
//!
//! A user with no fresh totals here (the first action on this node, or none for a
//! while, or Redis silent for a while) is [`Admit::Cold`]: the caller syncs that one
//! user first (one round trip) and asks again. While Redis is unreachable the caller
//! asks with `stale_ok`, and the node decides alone on what it last knew.
//!
//! What this does not do: bound the over-admission any tighter than "what the other
//! nodes let through since this node last read the totals" (see `docs/relay.md`,
//! "Cluster state", for the bound and an example), or keep anything across a restart
//! of the node (Redis and the store keep the totals).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a user stays in the batches after their last action or stream here
/// (afterwards their entry is dropped and the next action is [`Admit::Cold`]).
pub const WATCH: Duration = Duration::from_secs(60);

/// What [`Tally::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Let through (and, with a daily limit, counted): the day's total as this node
    /// sees it now, with this action.
    Yes(Option<i64>),
    /// The user's open streams (this node's and the others' as last read) are at the
    /// limit.
    TooManyStreams,
    /// The day's total (as last read, plus this node's since) is at the limit.
    DailyLimit,
    /// This node has no fresh totals for the user: sync the user ([`Tally::cold_item`])
    /// and ask again.
    Cold,
    /// Only with `stale_ok`: this node never learned the day's total; seed it from the
    /// store ([`Tally::seed`]) and ask again.
    NeedsSeed,
}

/// One user's counts to write to Redis, and what to ask back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncItem {
    /// The user.
    pub user_id: String,
    /// The UTC day the actions were counted on.
    pub day: String,
    /// Actions counted here since the last batch (negative after uncounts).
    pub delta: i64,
    /// Whether the user's daily actions are counted at all (a plan with a limit).
    pub counts_actions: bool,
    /// This node's open streams of the user (`None`: leave them as they are, for an
    /// earlier day's leftover).
    pub open: Option<i64>,
    /// This node's estimate of the day's total before `delta`, written if Redis has
    /// no count (it restarted empty); `None`: Redis should say so, and the store
    /// seeds it.
    pub seed: Option<i64>,
    seq: u64,
}

impl SyncItem {
    /// The same item with a seed for the day's count.
    pub fn with_seed(&self, seed: i64) -> SyncItem {
        SyncItem {
            seed: Some(seed),
            ..self.clone()
        }
    }
}

/// Redis's answer to a [`SyncItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The other nodes' open streams of the user, and the day's total with this item's
    /// delta (`None` when actions are not counted).
    Totals {
        /// The other nodes' open streams (their unexpired counts).
        others_streams: i64,
        /// The day's cluster total, this item included.
        actions: Option<i64>,
    },
    /// Redis has no count for the day and the item carried no seed: send it again
    /// with one from the store.
    NeedsSeed,
}

struct Entry {
    day: String,
    /// The day's cluster total as Redis last answered.
    known: Option<i64>,
    /// This node's actions not yet taken into a batch.
    unsynced: i64,
    /// Items sent whose reply has not come back: (sequence number, actions).
    in_flight: Vec<(u64, i64)>,
    counts_actions: bool,
    /// The other nodes' open streams as Redis last answered.
    others_streams: i64,
    synced_at: Option<Instant>,
    active_at: Instant,
    /// The sequence number of the next item, and of the newest reply applied.
    next_seq: u64,
    applied_seq: u64,
}

impl Entry {
    fn new(day: &str, now: Instant) -> Self {
        Entry {
            day: day.to_owned(),
            known: None,
            unsynced: 0,
            in_flight: Vec::new(),
            counts_actions: false,
            others_streams: 0,
            synced_at: None,
            active_at: now,
            next_seq: 1,
            applied_seq: 0,
        }
    }

    /// Actions sent after the newest applied reply: not in `known`, but they count.
    fn unanswered(&self) -> i64 {
        self.in_flight
            .iter()
            .filter(|(seq, _)| *seq > self.applied_seq)
            .map(|(_, delta)| delta)
            .sum()
    }

    /// The day's total as this node sees it, if it learned one.
    fn seen(&self) -> Option<i64> {
        self.known.map(|k| k + self.unanswered() + self.unsynced)
    }

    fn item(&mut self, user_id: &str, delta: i64, open: i64) -> SyncItem {
        let seed = self.known.map(|k| k + self.unanswered());
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push((seq, delta));
        SyncItem {
            user_id: user_id.to_owned(),
            day: self.day.clone(),
            delta,
            counts_actions: self.counts_actions,
            open: Some(open),
            seed,
            seq,
        }
    }
}

#[derive(Default)]
struct Counts {
    users: HashMap<String, Entry>,
    /// Actions of an earlier day not yet written (the day turned while they waited).
    leftovers: HashMap<(String, String), i64>,
}

/// Each user's cluster counts as this node sees them. See the module's documentation.
pub struct Tally {
    counts: Mutex<Counts>,
    stale_after_ms: AtomicU64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new(Duration::from_secs(1))
    }
}

impl Tally {
    /// Totals older than `stale_after` are not trusted ([`Admit::Cold`]).
    pub fn new(stale_after: Duration) -> Self {
        Tally {
            counts: Mutex::new(Counts::default()),
            stale_after_ms: AtomicU64::new(stale_after.as_millis() as u64),
        }
    }

    /// Changes how old totals may be before they are not trusted.
    pub fn set_stale_after(&self, stale_after: Duration) {
        self.stale_after_ms
            .store(stale_after.as_millis() as u64, Ordering::Relaxed);
    }

    fn stale_after(&self) -> Duration {
        Duration::from_millis(self.stale_after_ms.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides a stream of `user_id` on `day`: `mine` is this node's open streams of
    /// the user with the new one (already within `max_streams` here), and with
    /// `max_actions` one action is counted if the day's total allows. With `stale_ok`
    /// (Redis unreachable) the node decides on what it last knew, and the other nodes'
    /// streams count as none.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &self,
        user_id: &str,
        day: &str,
        now: Instant,
        mine: i64,
        max_streams: i64,
        max_actions: Option<i64>,
        stale_ok: bool,
    ) -> Admit {
        let stale_after = self.stale_after();
        let mut counts = self.lock();
        let counts = &mut *counts;
        let entry = counts
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| Entry::new(day, now));
        if entry.day != day {
            // The day turned: what the old day still owes Redis is written apart.
            let owed = entry.unsynced;
            if owed != 0 {
                *counts
                    .leftovers
                    .entry((user_id.to_owned(), entry.day.clone()))
                    .or_default() += owed;
            }
            entry.day = day.to_owned();
            entry.known = None;
            entry.unsynced = 0;
            entry.in_flight.clear();
            entry.synced_at = None;
        }
        entry.active_at = now;
        entry.counts_actions |= max_actions.is_some();
        let fresh = entry
            .synced_at
            .is_some_and(|t| now.saturating_duration_since(t) <= stale_after)
            && (max_actions.is_none() || entry.known.is_some());
        if !fresh && !stale_ok {
            return Admit::Cold;
        }
        let others = if fresh { entry.others_streams } else { 0 };
        if mine + others > max_streams {
            return Admit::TooManyStreams;
        }
        let Some(max) = max_actions else {
            return Admit::Yes(None);
        };
        let Some(total) = entry.seen() else {
            return Admit::NeedsSeed;
        };
        if total >= max || max <= 0 {
            return Admit::DailyLimit;
        }
        entry.unsynced += 1;
        Admit::Yes(Some(total + 1))
    }

    /// Sets the day's total of `user_id` from the store when this node never learned
    /// it from Redis (the [`Admit::NeedsSeed`] answer).
    pub fn seed(&self, user_id: &str, day: &str, stored: i64) {
        if let Some(entry) = self.lock().users.get_mut(user_id)
            && entry.day == day
        {
            entry.known = Some(entry.known.unwrap_or(stored).max(stored));
        }
    }

    /// Gives back an action counted on `day` whose stream never reached the device.
    pub fn uncount(&self, user_id: &str, day: &str, now: Instant) {
        let mut counts = self.lock();
        match counts.users.get_mut(user_id) {
            Some(entry) if entry.day == day => {
                entry.unsynced -= 1;
                entry.active_at = now;
            }
            _ => {
                *counts
                    .leftovers
                    .entry((user_id.to_owned(), day.to_owned()))
                    .or_default() -= 1;
            }
        }
    }

    /// Notes activity of `user_id` (a stream ended), so that the next batches write
    /// this node's new count.
    pub fn touch(&self, user_id: &str, now: Instant) {
        if let Some(entry) = self.lock().users.get_mut(user_id) {
            entry.active_at = now;
        }
    }

    /// The item that syncs one cold user now (nothing of what this node counted is
    /// taken: the next batch writes it); `None` if the user has no entry.
    pub fn cold_item(&self, user_id: &str, open: i64) -> Option<SyncItem> {
        self.lock()
            .users
            .get_mut(user_id)
            .map(|entry| entry.item(user_id, 0, open))
    }

    /// Takes what is to be written now: one item per user seen within [`WATCH`], with
    /// actions not yet written, or with streams open here (`open` says how many), with
    /// the actions counted since the last batch moved into it; and one per earlier
    /// day's leftover. Users none of that applies to are forgotten.
    pub fn batch(&self, now: Instant, open: impl Fn(&str) -> i64) -> Vec<SyncItem> {
        let mut counts = self.lock();
        let mut items = Vec::new();
        counts.users.retain(|user_id, entry| {
            let open = open(user_id);
            let watched = now.saturating_duration_since(entry.active_at) <= WATCH
                || entry.unsynced != 0
                || !entry.in_flight.is_empty()
                || open > 0;
            if watched {
                let delta = std::mem::take(&mut entry.unsynced);
                items.push(entry.item(user_id, delta, open));
            }
            watched
        });
        for ((user_id, day), delta) in counts.leftovers.drain() {
            if delta != 0 {
                items.push(SyncItem {
                    user_id,
                    day,
                    delta,
                    counts_actions: true,
                    open: None,
                    seed: None,
                    seq: 0,
                });
            }
        }
        items
    }

    /// Applies Redis's answer to `item`: the totals become this node's view (unless a
    /// newer item's answer came first; Redis runs one user's items in the order they
    /// were sent, so a newer total includes every older item's actions).
    pub fn apply(&self, item: &SyncItem, reply: Synced, now: Instant) {
        let Synced::Totals {
            others_streams,
            actions,
        } = reply
        else {
            return self.failed(item);
        };
        let mut counts = self.lock();
        let Some(entry) = counts.users.get_mut(&item.user_id) else {
            return;
        };
        if entry.day != item.day || item.open.is_none() {
            return;
        }
        entry.in_flight.retain(|(seq, _)| *seq != item.seq);
        if item.seq > entry.applied_seq {
            entry.applied_seq = item.seq;
            entry.others_streams = others_streams;
            if actions.is_some() {
                entry.known = actions;
            }
            entry.synced_at = Some(now);
        }
    }

    /// `item` was not written (Redis unreachable): its actions go back to the next
    /// batch (if it reached Redis after all, they are counted twice: the error is on
    /// the side of refusing).
    pub fn failed(&self, item: &SyncItem) {
        let mut counts = self.lock();
        match counts.users.get_mut(&item.user_id) {
            Some(entry) if entry.day == item.day && item.open.is_some() => {
                entry.in_flight.retain(|(seq, _)| *seq != item.seq);
                entry.unsynced += item.delta;
            }
            _ if item.delta == 0 => {}
            _ => {
                *counts
                    .leftovers
                    .entry((item.user_id.clone(), item.day.clone()))
                    .or_default() += item.delta;
            }
        }
    }

    /// The day's total of `user_id` as this node sees it now (Redis's last answer plus
    /// this node's actions since), if it knows one.
    pub fn actions_seen(&self, user_id: &str) -> Option<i64> {
        self.lock().users.get(user_id)?.seen()
    }

    /// Users this node keeps counts for.
    pub fn users(&self) -> usize {
        self.lock().users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: &str = "2026-11-29";
    const NEXT: &str = "2026-11-30";

    fn totals(others_streams: i64, actions: i64) -> Synced {
        Synced::Totals {
            others_streams,
            actions: Some(actions),
        }
    }

    /// A user warmed up by one sync that found `total` actions and `others` streams.
    fn warm(tally: &Tally, t0: Instant, total: i64, others: i64) {
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 10, Some(10), false),
            Admit::Cold
        );
        let item = tally.cold_item("u", 0).unwrap();
        assert_eq!((item.delta, item.seed), (0, None), "nothing known yet");
        tally.apply(&item, totals(others, total), t0);
    }

    #[test]
    fn a_warm_user_is_decided_in_memory_against_the_last_total_plus_this_nodes_count() {
        let tally = Tally::default();
        let t0 = Instant::now();
        warm(&tally, t0, 7, 0);
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 10, Some(10), false),
            Admit::Yes(Some(8))
        );
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 10, Some(10), false),
            Admit::Yes(Some(9))
        );
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 10, Some(10), false),
            Admit::Yes(Some(10))
        );
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 10, Some(10), false),
            Admit::DailyLimit
        );
        assert_eq!(tally.actions_seen("u"), Some(10));
    }

    #[test]
    fn a_batch_carries_each_users_delta_once_and_the_reply_brings_the_others_counts() {
        let tally = Tally::default();
        let t0 = Instant::now();
        warm(&tally, t0, 2, 0);
        for _ in 0..3 {
            assert!(matches!(
                tally.admit("u", DAY, t0, 1, 10, Some(10), false),
                Admit::Yes(_)
            ));
        }
        let batch = tally.batch(t0, |_| 1);
        assert_eq!(batch.len(), 1, "one item per user, however many actions");
        let item = &batch[0];
        assert_eq!(
            (item.delta, item.open, item.seed, item.counts_actions),
            (3, Some(1), Some(2), true)
        );
        // While the batch is out, its actions still count here.
        assert_eq!(tally.actions_seen("u"), Some(5));
        assert_eq!(tally.batch(t0, |_| 1)[0].delta, 0, "taken once");
        // Another node counted 4 meanwhile: the reply says 2 + 3 + 4, and 2 streams.
        tally.apply(item, totals(2, 9), t0);
        assert_eq!(tally.actions_seen("u"), Some(9));
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 10, Some(10), false),
            Admit::Yes(Some(10))
        );
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 10, Some(11), false),
            Admit::Yes(Some(11))
        );
        // The others' streams count: 2 there + 2 here > 3.
        assert_eq!(
            tally.admit("u", DAY, t0, 2, 3, None, false),
            Admit::TooManyStreams
        );
        assert_eq!(
            tally.admit("u", DAY, t0, 1, 3, None, false),
            Admit::Yes(None)
        );
    }

    #[test]
    fn a_failed_item_puts_its_actions_back_and_an_older_reply_does_not_win() {
        let tally = Tally::default();
        let t0 = Instant::now();
        warm(&tally, t0, 0, 0);
        tally.admit("u", DAY, t0, 1, 10, Some(10), false);
        tally.admit("u", DAY, t0, 1, 10, Some(10), false);
        let first = tally.batch(t0, |_| 0).remove(0);
        tally.failed(&first);
        assert_eq!(tally.actions_seen("u"), Some(2), "still counted here");
        let second = tally.batch(t0, |_| 0).remove(0);
        assert_eq!(second.delta, 2, "written with the next batch");
        tally.admit("u", DAY, t0, 1, 10, Some(10), false);
        let third = tally.batch(t0, |_| 0).remove(0);
        tally.apply(&third, totals(0, 3), t0);
        // The second's reply arrives last with an older total: the count stays.
        tally.apply(&second, totals(0, 2), t0);
        assert_eq!(tally.actions_seen("u"), Some(3));
        assert_eq!(tally.batch(t0, |_| 0)[0].delta, 0);
    }

    #[test]
    fn uncounts_are_written_as_negative_deltas() {
        let tally = Tally::default();
        let t0 = Instant::now();
        warm(&tally, t0, 5, 0);
        tally.uncount("u", DAY, t0);
        assert_eq!(tally.actions_seen("u"), Some(4));
        assert_eq!(tally.batch(t0, |_| 0)[0].delta, -1);
        // An uncount for a day this node no longer counts on is written apart.
        tally.uncount("u", "2026-11-28", t0);
        let batch = tally.batch(t0, |_| 0);
        let leftover = batch.iter().find(|i| i.day == "2026-11-28").unwrap();
        assert_eq!((leftover.delta, leftover.open), (-1, None));
    }

    #[test]
    fn totals_go_stale_and_a_new_day_starts_cold_with_the_old_days_actions_kept() {
        let tally = Tally::new(Duration::from_secs(1));
        let t0 = Instant::now();
        warm(&tally, t0, 1, 0);
        assert!(matches!(
            tally.admit("u", DAY, t0, 1, 10, Some(10), false),
            Admit::Yes(_)
        ));
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            tally.admit("u", DAY, later, 1, 10, Some(10), false),
            Admit::Cold
        );
        // Redis unreachable: the node decides on what it last knew.
        assert_eq!(
            tally.admit("u", DAY, later, 1, 10, Some(10), true),
            Admit::Yes(Some(3))
        );
        assert_eq!(
            tally.admit("u", NEXT, later, 1, 10, Some(10), false),
            Admit::Cold
        );
        assert_eq!(
            tally.admit("u", NEXT, later, 1, 10, Some(10), true),
            Admit::NeedsSeed
        );
        tally.seed("u", NEXT, 4);
        assert_eq!(
            tally.admit("u", NEXT, later, 1, 10, Some(10), true),
            Admit::Yes(Some(5))
        );
        let batch = tally.batch(later, |_| 0);
        let old = batch.iter().find(|i| i.day == DAY).unwrap();
        assert_eq!(old.delta, 2, "yesterday's two actions are still written");
        let new = batch.iter().find(|i| i.day == NEXT).unwrap();
        assert_eq!((new.delta, new.seed), (1, Some(4)));
    }

    #[test]
    fn quiet_users_are_forgotten_unless_streams_are_open_or_counts_unwritten() {
        let tally = Tally::default();
        let t0 = Instant::now();
        warm(&tally, t0, 0, 0);
        let later = t0 + WATCH + Duration::from_secs(1);
        assert_eq!(tally.batch(later, |_| 1).len(), 1, "a stream is open here");
        assert_eq!(tally.users(), 1);
        tally.admit("u", DAY, t0, 1, 10, Some(10), false);
        let much_later = later + WATCH;
        assert_eq!(
            tally.batch(much_later, |_| 0)[0].delta,
            1,
            "an unwritten action is written first"
        );
        assert_eq!(tally.users(), 1, "its reply is still awaited");
        assert!(tally.batch(much_later, |_| 0).len() == 1);
        let tally = Tally::default();
        warm(&tally, t0, 0, 0);
        assert!(tally.batch(later, |_| 0).is_empty());
        assert_eq!(tally.users(), 0, "forgotten");
    }

    #[test]
    fn a_reply_asking_for_a_seed_keeps_the_actions() {
        let tally = Tally::default();
        let t0 = Instant::now();
        warm(&tally, t0, 0, 0);
        tally.admit("u", DAY, t0, 1, 10, Some(10), false);
        let item = tally.batch(t0, |_| 0).remove(0);
        tally.apply(&item, Synced::NeedsSeed, t0);
        assert_eq!(tally.batch(t0, |_| 0)[0].delta, 1);
    }
}
