//! The records a stream's authorization needs (user, device, plan), kept in memory so
//! that the hot path does not read the database.
//!
//! [`FactsCache`] belongs to the [`crate::store::Store`]: the store fills it on a miss
//! ([`crate::store::Store::cached_user`] and its siblings), the relay fills it at sign-in
//! and at desktop connect, and every store method that changes one of these records
//! drops the cached copy after its write. So a change made through this process (the
//! HTTP API, the operator's CLI in-process, a test) is seen by the very next stream.
//!
//! In a cluster every invalidation is also announced ([`FactsCache::announce_to`]) and
//! published on Redis (`crate::cluster`); the other nodes apply it
//! ([`FactsCache::apply`]) within milliseconds, and cut what it revokes.
//!
//! Changes made by a process outside the cluster (the operator's CLI) are not seen by
//! this invalidation. Two backstops bound how long a stale record can live: every entry
//! expires after a TTL ([`FACTS_TTL`], 60 s), and the revoked-token sweep (`server.rs`,
//! every `revocation_check_secs`) drops the users whose tokens were revoked or who were
//! disabled or deleted.
//!
//! A load racing an invalidation cannot put a stale record back: loads remember the
//! cache's epoch before reading the store, every invalidation moves the epoch on, and a
//! load whose epoch has moved is not cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{Device, Plan, User};

/// How long a cached record is trusted without a change seen here: the bound on how
/// stale a change made by another process can be.
pub const FACTS_TTL: Duration = Duration::from_secs(60);

/// At most this many records of each kind are cached; a full map drops its expired
/// entries, and if none had expired, everything (the next streams reload).
pub const MAX_ENTRIES: usize = 100_000;

/// The time in milliseconds since the Unix epoch (tests inject their own).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

struct Entry<T> {
    value: T,
    expires_ms: u64,
}

/// One kind of record, by id.
struct Map<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T: Clone> Map<T> {
    fn new() -> Self {
        Map {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str, now_ms: u64) -> Option<T> {
        let mut map = self.lock();
        match map.get(key) {
            Some(entry) if entry.expires_ms > now_ms => Some(entry.value.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Inserts unless the cache's epoch moved since `seen` (checked under the map's
    /// lock, which every invalidation takes after moving the epoch).
    fn put(
        &self,
        key: String,
        value: T,
        expires_ms: u64,
        now_ms: u64,
        epoch: &AtomicU64,
        seen: u64,
    ) {
        let mut map = self.lock();
        if epoch.load(Ordering::SeqCst) != seen {
            return;
        }
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            map.retain(|_, e| e.expires_ms > now_ms);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, Entry { value, expires_ms });
    }

    fn retain(&self, keep: impl Fn(&str, &T) -> bool) {
        self.lock().retain(|k, e| keep(k, &e.value));
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A record that changed, so that cached copies of it must go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Invalidation {
    /// User `id` (disabled, tokens revoked, plan changed, deleted).
    User(String),
    /// The user with this sign-in email.
    UserEmail(String),
    /// Device `id` (renamed, revoked, connected).
    Device(String),
    /// Every device of user `id` (the account was deleted).
    DevicesOf(String),
    /// Plan `id` (its limits changed).
    Plan(String),
}

/// Users, devices and plans by id, each for at most a TTL. See the module's
/// documentation for when entries are dropped.
pub struct FactsCache {
    ttl_ms: u64,
    clock: Clock,
    epoch: AtomicU64,
    users: Map<User>,
    devices: Map<Device>,
    plans: Map<Plan>,
    announce: OnceLock<mpsc::UnboundedSender<Invalidation>>,
}

impl Default for FactsCache {
    fn default() -> Self {
        FactsCache::new(FACTS_TTL, system_clock())
    }
}

impl FactsCache {
    /// An empty cache whose entries live `ttl` by `clock`.
    pub fn new(ttl: Duration, clock: Clock) -> Self {
        FactsCache {
            ttl_ms: ttl.as_millis() as u64,
            clock,
            epoch: AtomicU64::new(0),
            users: Map::new(),
            devices: Map::new(),
            plans: Map::new(),
            announce: OnceLock::new(),
        }
    }

    /// The invalidation epoch: read it before loading a record from the store and pass
    /// it to the `put_*` call, which then caches nothing if anything was invalidated
    /// meanwhile.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn invalidated(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The cached user `id`, if cached and fresh.
    pub fn user(&self, id: &str) -> Option<User> {
        self.users.get(id, self.now())
    }

    /// Caches `user`, loaded at `epoch`.
    pub fn put_user(&self, user: User, epoch: u64) {
        let now = self.now();
        self.users.put(
            user.id.clone(),
            user,
            now + self.ttl_ms,
            now,
            &self.epoch,
            epoch,
        );
    }

    /// The cached device `id`, if cached and fresh.
    pub fn device(&self, id: &str) -> Option<Device> {
        self.devices.get(id, self.now())
    }

    /// Caches `device`, loaded at `epoch`.
    pub fn put_device(&self, device: Device, epoch: u64) {
        let now = self.now();
        self.devices.put(
            device.id.clone(),
            device,
            now + self.ttl_ms,
            now,
            &self.epoch,
            epoch,
        );
    }

    /// The cached plan `id`, if cached and fresh.
    pub fn plan(&self, id: &str) -> Option<Plan> {
        self.plans.get(id, self.now())
    }

    /// Caches `plan`, loaded at `epoch`.
    pub fn put_plan(&self, plan: Plan, epoch: u64) {
        let now = self.now();
        self.plans.put(
            plan.id.clone(),
            plan,
            now + self.ttl_ms,
            now,
            &self.epoch,
            epoch,
        );
    }

    /// From now on, every invalidation made here is also sent to `announce` (the
    /// cluster publishes it to the other nodes). Once; later calls are ignored.
    pub fn announce_to(&self, announce: mpsc::UnboundedSender<Invalidation>) {
        let _ = self.announce.set(announce);
    }

    /// Drops the cached copies `change` names, without announcing it (a change another
    /// node announced).
    pub fn apply(&self, change: &Invalidation) {
        self.invalidated();
        match change {
            Invalidation::User(id) => self.users.retain(|k, _| k != id),
            Invalidation::UserEmail(email) => self.users.retain(|_, u| &u.email != email),
            Invalidation::Device(id) => self.devices.retain(|k, _| k != id),
            Invalidation::DevicesOf(user_id) => self.devices.retain(|_, d| &d.user_id != user_id),
            Invalidation::Plan(id) => self.plans.retain(|k, _| k != id),
        }
    }

    /// Drops the cached copies `change` names and announces it.
    pub fn invalidate(&self, change: Invalidation) {
        self.apply(&change);
        if let Some(announce) = self.announce.get() {
            let _ = announce.send(change);
        }
    }

    /// Drops user `id` (disabled, tokens revoked, plan changed, deleted).
    pub fn invalidate_user(&self, id: &str) {
        self.invalidate(Invalidation::User(id.to_owned()));
    }

    /// Drops the user with sign-in `email` (the operator's commands name users by
    /// email).
    pub fn invalidate_user_email(&self, email: &str) {
        self.invalidate(Invalidation::UserEmail(email.to_owned()));
    }

    /// Drops device `id` (renamed, revoked, connected).
    pub fn invalidate_device(&self, id: &str) {
        self.invalidate(Invalidation::Device(id.to_owned()));
    }

    /// Drops every device of user `user_id` (the account was deleted).
    pub fn invalidate_devices_of(&self, user_id: &str) {
        self.invalidate(Invalidation::DevicesOf(user_id.to_owned()));
    }

    /// Drops plan `id` (its limits changed).
    pub fn invalidate_plan(&self, id: &str) {
        self.invalidate(Invalidation::Plan(id.to_owned()));
    }

    /// How many records are cached (users, devices, plans), expired ones included.
    pub fn len(&self) -> usize {
        self.users.len() + self.devices.len() + self.plans.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn user(id: &str) -> User {
        User {
            id: id.into(),
            email: format!("{id}@example.com"),
            password_hash: String::new(),
            disabled: false,
            created_at: 0,
            plan_id: "free".into(),
            token_generation: 0,
        }
    }

    fn device(id: &str, user_id: &str) -> Device {
        Device {
            id: id.into(),
            user_id: user_id.into(),
            name: "laptop".into(),
            status: "online".into(),
            node_version: None,
            identity_key: None,
            relay_node: None,
            connection_id: None,
            last_seen: None,
            revoked: false,
        }
    }

    fn plan(id: &str) -> Plan {
        Plan {
            id: id.into(),
            name: id.into(),
            max_devices: 1,
            max_concurrent_streams: 1,
            max_actions_per_day: 1,
        }
    }

    fn manual_clock() -> (Arc<AtomicU64>, Clock) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let read = now.clone();
        (now, Arc::new(move || read.load(Ordering::SeqCst)))
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let (now, clock) = manual_clock();
        let cache = FactsCache::new(Duration::from_secs(60), clock);
        cache.put_user(user("u"), cache.epoch());
        cache.put_device(device("d", "u"), cache.epoch());
        cache.put_plan(plan("free"), cache.epoch());
        now.fetch_add(59_999, Ordering::SeqCst);
        assert!(cache.user("u").is_some());
        assert!(cache.device("d").is_some());
        assert!(cache.plan("free").is_some());
        now.fetch_add(1, Ordering::SeqCst);
        assert!(cache.user("u").is_none(), "a user past the TTL is reloaded");
        assert!(cache.device("d").is_none());
        assert!(cache.plan("free").is_none());
        assert!(
            cache.is_empty(),
            "expired entries are dropped when looked up"
        );
    }

    #[test]
    fn each_invalidation_drops_only_its_records() {
        let cache = FactsCache::default();
        for id in ["u", "v"] {
            cache.put_user(user(id), cache.epoch());
            cache.put_device(device(&format!("{id}-1"), id), cache.epoch());
            cache.put_device(device(&format!("{id}-2"), id), cache.epoch());
        }
        cache.put_plan(plan("free"), cache.epoch());
        cache.put_plan(plan("pro"), cache.epoch());

        cache.invalidate_user("u");
        assert!(cache.user("u").is_none());
        assert!(cache.user("v").is_some());

        cache.put_user(user("u"), cache.epoch());
        cache.invalidate_user_email("u@example.com");
        assert!(cache.user("u").is_none());
        assert!(cache.user("v").is_some());

        cache.invalidate_device("u-1");
        assert!(cache.device("u-1").is_none());
        assert!(cache.device("u-2").is_some());

        cache.invalidate_devices_of("v");
        assert!(cache.device("v-1").is_none() && cache.device("v-2").is_none());
        assert!(cache.device("u-2").is_some());

        cache.invalidate_plan("free");
        assert!(cache.plan("free").is_none());
        assert!(cache.plan("pro").is_some());
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let cache = FactsCache::default();
        let seen = cache.epoch();
        // The store was read (old record) …
        cache.invalidate_user("u"); // … then the record changed and was invalidated …
        cache.put_user(user("u"), seen); // … then the old record arrives.
        assert!(cache.user("u").is_none());
        cache.put_user(user("u"), cache.epoch());
        assert!(cache.user("u").is_some());
    }

    #[test]
    fn a_full_map_drops_expired_entries_first() {
        let (now, clock) = manual_clock();
        let cache = FactsCache::new(Duration::from_secs(1), clock);
        for i in 0..MAX_ENTRIES - 1 {
            cache.put_plan(plan(&format!("old{i}")), cache.epoch());
        }
        now.fetch_add(2_000, Ordering::SeqCst);
        cache.put_plan(plan("fresh"), cache.epoch());
        cache.put_plan(plan("fresher"), cache.epoch());
        assert_eq!(cache.plans.len(), 2);
        assert!(cache.plan("fresh").is_some());
    }
}
