//! Which devices are connected to this relay node, and over which connection.
//!
//! In-process only; a cluster shares this through Redis (a later step).

use std::collections::HashMap;
use std::sync::Mutex;

/// A connected desktop.
#[derive(Clone)]
pub struct OnlineDevice {
    /// The owner.
    pub user_id: String,
    /// The desktop's QUIC connection.
    pub connection: quinn::Connection,
    /// Identifies this connection among the device's successive connections.
    pub connection_id: u64,
}

/// The devices connected to this node.
#[derive(Default)]
pub struct Registry {
    devices: Mutex<HashMap<String, OnlineDevice>>,
}

impl Registry {
    /// Records a device as connected; returns the connection it replaces, if any.
    pub fn insert(&self, device_id: &str, device: OnlineDevice) -> Option<OnlineDevice> {
        self.lock().insert(device_id.to_owned(), device)
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
    pub fn connections(&self) -> Vec<quinn::Connection> {
        self.lock().values().map(|d| d.connection.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OnlineDevice>> {
        // A panic while holding this lock leaves a plain map behind; keep using it.
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }
}
