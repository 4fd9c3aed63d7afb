//! Which devices are connected to this relay node, and over which connection.
//!
//! Each connection also gets a generation ([`Registry::generation`]): microseconds since
//! the Unix epoch at connect, strictly increasing on this node, so that a later
//! connection of a device (here or on another node) outranks an earlier one in the
//! cluster's device map. Every connect and disconnect is also reported to the cluster
//! ([`Registry::watch`]), which writes the device map in Redis when clustered.
//!
//! A node that another node (same device token, another identity key) replaced is
//! refused for that device for [`REPLACED_MEMORY`] ([`Registry::admit`]): a HELLO it had
//! in flight when it was replaced (a path probe, the slower leg of its QUIC/TCP race)
//! would otherwise replace the newer node in turn, and both would stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A connected desktop.
#[derive(Clone)]
pub struct OnlineDevice {
    /// The owner.
    pub user_id: String,
    /// The desktop's connection (QUIC, or the mux over a WebSocket).
    pub connection: crate::link::DesktopLink,
    /// Identifies this connection among the device's successive connections.
    pub connection_id: u64,
}

/// A device's connection came or went on this node (see [`Registry::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChange {
    /// `device_id` of `user_id` connected here with connection generation `generation`.
    Online {
        /// The device.
        device_id: String,
        /// Its owner.
        user_id: String,
        /// The connection's generation.
        generation: u64,
    },
    /// The connection of `device_id` with generation `generation` ended.
    Offline {
        /// The device.
        device_id: String,
        /// The generation of the connection that ended.
        generation: u64,
    },
}

/// Where a device connected here stands: its owner and connection generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The owner.
    pub user_id: String,
    /// The connection's generation.
    pub generation: u64,
}

/// How long a node replaced by another node stays refused for that device.
pub const REPLACED_MEMORY: Duration = Duration::from_secs(10);

/// A connection refused by [`Registry::admit`]: its node was replaced by another node
/// within [`REPLACED_MEMORY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("another node took this device over moments ago")]
pub struct ReplacedRecently;

/// The identity keys of nodes replaced by another node, per device, and when.
#[derive(Debug, Default)]
pub struct ReplacedNodes(HashMap<String, Vec<([u8; 32], Instant)>>);

impl ReplacedNodes {
    /// Remembers that `device_id`'s node `key` was replaced at `now`.
    pub fn record(&mut self, device_id: &str, key: [u8; 32], now: Instant) {
        self.forget_before(now);
        let keys = self.0.entry(device_id.to_owned()).or_default();
        keys.retain(|(k, _)| *k != key);
        keys.push((key, now));
    }

    /// Whether `device_id`'s node `key` was replaced within [`REPLACED_MEMORY`] of `now`.
    pub fn is_replaced(&mut self, device_id: &str, key: [u8; 32], now: Instant) -> bool {
        self.forget_before(now);
        self.0
            .get(device_id)
            .is_some_and(|keys| keys.iter().any(|(k, _)| *k == key))
    }

    fn forget_before(&mut self, now: Instant) {
        self.0.retain(|_, keys| {
            keys.retain(|(_, at)| now.saturating_duration_since(*at) < REPLACED_MEMORY);
            !keys.is_empty()
        });
    }
}

/// The devices connected to this node.
#[derive(Default)]
pub struct Registry {
    devices: Mutex<HashMap<String, OnlineDevice>>,
    /// Nodes replaced by another node lately (taken after `devices`).
    replaced: Mutex<ReplacedNodes>,
    /// Each connected device's owner and generation (taken after `devices`).
    placed: Mutex<HashMap<String, Placed>>,
    last_generation: AtomicU64,
    changes: OnceLock<mpsc::UnboundedSender<RegistryChange>>,
}

impl Registry {
    /// Records a device as connected at `now` and returns the connection it replaces, if
    /// any; refuses it if its node (its identity key) was replaced by another node within
    /// [`REPLACED_MEMORY`].
    pub fn admit(
        &self,
        device_id: &str,
        device: OnlineDevice,
        now: Instant,
    ) -> Result<Option<OnlineDevice>, ReplacedRecently> {
        let mut devices = self.lock();
        let mut replaced = self.replaced.lock().unwrap_or_else(|e| e.into_inner());
        let key = device.connection.node_key();
        if key.is_some_and(|key| replaced.is_replaced(device_id, key, now)) {
            return Err(ReplacedRecently);
        }
        self.place(device_id, &device.user_id);
        let old = devices.insert(device_id.to_owned(), device);
        if let Some(old_key) = old.as_ref().and_then(|o| o.connection.node_key())
            && key != Some(old_key)
        {
            replaced.record(device_id, old_key, now);
        }
        Ok(old)
    }

    /// From now on, reports every connect and disconnect to `changes` (once; the cluster
    /// does this at start).
    pub fn watch(&self, changes: mpsc::UnboundedSender<RegistryChange>) {
        let _ = self.changes.set(changes);
    }

    /// Gives `device_id` a new connection generation and reports it online.
    pub(crate) fn place(&self, device_id: &str, user_id: &str) -> u64 {
        let generation = self.next_generation();
        self.placed_lock().insert(
            device_id.to_owned(),
            Placed {
                user_id: user_id.to_owned(),
                generation,
            },
        );
        self.report(RegistryChange::Online {
            device_id: device_id.to_owned(),
            user_id: user_id.to_owned(),
            generation,
        });
        generation
    }

    /// Forgets `device_id`'s placement and reports it offline.
    pub(crate) fn unplace(&self, device_id: &str) {
        if let Some(placed) = self.placed_lock().remove(device_id) {
            self.report(RegistryChange::Offline {
                device_id: device_id.to_owned(),
                generation: placed.generation,
            });
        }
    }

    /// The generation of `device_id`'s connection here, if it is connected here.
    pub fn generation(&self, device_id: &str) -> Option<u64> {
        self.placed_lock().get(device_id).map(|p| p.generation)
    }

    /// Every device connected here, with its owner and generation (the cluster
    /// re-registers these after Redis restarts, and refreshes their TTL).
    pub fn placements(&self) -> Vec<(String, Placed)> {
        self.placed_lock()
            .iter()
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect()
    }

    /// Microseconds since the Unix epoch, strictly above the last one given here.
    fn next_generation(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = self.last_generation.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_generation.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    fn report(&self, change: RegistryChange) {
        if let Some(tx) = self.changes.get() {
            let _ = tx.send(change);
        }
    }

    fn placed_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Placed>> {
        self.placed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets a device, but only if `connection_id` is still its current connection
    /// (a reconnect may already have replaced it). Returns whether it was removed.
    pub fn remove(&self, device_id: &str, connection_id: u64) -> bool {
        let mut devices = self.lock();
        if devices
            .get(device_id)
            .is_some_and(|d| d.connection_id == connection_id)
        {
            devices.remove(device_id);
            self.unplace(device_id);
            return true;
        }
        false
    }

    /// The device's connection, if it is connected here.
    pub fn get(&self, device_id: &str) -> Option<OnlineDevice> {
        self.lock().get(device_id).cloned()
    }

    /// How many devices are connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no device is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every connection, for shutdown.
    pub fn connections(&self) -> Vec<crate::link::DesktopLink> {
        self.lock().values().map(|d| d.connection.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OnlineDevice>> {
        // A panic while holding this lock leaves a plain map behind; keep using it.
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];

    #[test]
    fn a_replaced_node_is_refused_for_a_while_then_admitted() {
        let start = Instant::now();
        let mut replaced = ReplacedNodes::default();
        replaced.record("dev", A, start);
        assert!(replaced.is_replaced("dev", A, start + Duration::from_secs(1)));
        assert!(
            !replaced.is_replaced("dev", B, start),
            "the newer node is not"
        );
        assert!(
            !replaced.is_replaced("other", A, start),
            "nor the key on another device"
        );
        assert!(!replaced.is_replaced("dev", A, start + REPLACED_MEMORY));
        assert!(replaced.0.is_empty(), "what expired is forgotten");
    }

    #[test]
    fn replacing_back_and_forth_remembers_each_key_once_with_its_last_time() {
        let start = Instant::now();
        let mut replaced = ReplacedNodes::default();
        replaced.record("dev", A, start);
        replaced.record("dev", B, start + Duration::from_secs(5));
        replaced.record("dev", A, start + Duration::from_secs(8));
        let later = start + REPLACED_MEMORY + Duration::from_secs(1);
        assert!(
            replaced.is_replaced("dev", A, later),
            "A's later replacement counts"
        );
        assert!(!replaced.is_replaced("dev", B, start + Duration::from_secs(16)));
        assert_eq!(replaced.0["dev"].len(), 1);
    }
}
