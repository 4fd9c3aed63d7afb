//! Live device status for browsers: each user's open event streams, publishing a
//! DEVICE_STATUS to all of them when one of the user's devices comes or goes, and
//! serving one such stream (the snapshot, its end marker, then the changes).
//!
//! In a cluster, each status published here is also announced
//! ([`EventHub::announce_to`]) and published on Redis, and the statuses other nodes
//! publish are delivered here ([`EventHub::deliver`]): a browser watching on one node
//! sees a desktop on another come and go.
//!
//! Each subscriber has a small bounded queue. A subscriber that falls behind is dropped
//! (its stream is finished) rather than buffered without bound; the browser reopens the
//! stream and gets a fresh snapshot.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use aisa_tunnel::io::write_frame;
use aisa_tunnel::{Body, Envelope, ErrorCode};
use tokio::sync::mpsc;
use tracing::warn;

use crate::state::RelayState;

/// Events a subscriber may have queued before it counts as too slow.
const QUEUE: usize = 64;

/// Every user's event subscribers on this node.
#[derive(Default)]
pub struct EventHub {
    subscribers: Mutex<HashMap<String, Vec<mpsc::Sender<Envelope>>>>,
    announce: OnceLock<mpsc::UnboundedSender<(String, Envelope)>>,
}

impl EventHub {
    /// A new subscription to `user_id`'s events.
    pub fn subscribe(&self, user_id: &str) -> mpsc::Receiver<Envelope> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().entry(user_id.to_owned()).or_default().push(tx);
        rx
    }

    /// From now on, every event published here is also sent to `announce` (the
    /// cluster publishes it to the other nodes). Once; later calls are ignored.
    pub fn announce_to(&self, announce: mpsc::UnboundedSender<(String, Envelope)>) {
        let _ = self.announce.set(announce);
    }

    /// Sends an event to every live subscriber of `user_id` here, dropping the slow and
    /// gone, and announces it to the cluster.
    pub fn publish(&self, user_id: &str, event: &Envelope) {
        self.deliver(user_id, event);
        if let Some(announce) = self.announce.get() {
            let _ = announce.send((user_id.to_owned(), event.clone()));
        }
    }

    /// Sends an event to every live subscriber of `user_id` here only (an event another
    /// node published).
    pub fn deliver(&self, user_id: &str, event: &Envelope) {
        let mut subscribers = self.lock();
        let Some(list) = subscribers.get_mut(user_id) else {
            return;
        };
        list.retain(|tx| tx.try_send(event.clone()).is_ok());
        if list.is_empty() {
            subscribers.remove(user_id);
        }
    }

    /// Subscribers of `user_id` now (for tests and metrics).
    pub fn subscribers(&self, user_id: &str) -> usize {
        self.lock()
            .get(user_id)
            .map_or(0, |l| l.iter().filter(|t| !t.is_closed()).count())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<mpsc::Sender<Envelope>>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A DEVICE_STATUS as the relay knows it (no app list, providers or unloadable apps:
/// only the desktop knows those, and answers GET_STATUS with them).
pub fn device_status(device_id: &str, online: bool, node_version: Option<&str>) -> Envelope {
    Envelope {
        request_id: 0,
        device_id: device_id.to_owned(),
        body: Body::DeviceStatus {
            online,
            node_version: node_version.unwrap_or_default().to_owned(),
            apps: Vec::new(),
            providers: Vec::new(),
            unloadable: Vec::new(),
        },
    }
}

/// Sends a DEVICE_STATUS per device of the user, then STATUS_SNAPSHOT_END with their
/// number (also when there are none, so a browser can tell "no devices" from "not yet"),
/// then one DEVICE_STATUS per change, until either side ends the stream or the browser
/// falls too far behind. A browser that announced a version before
/// [`Body::STATUS_SNAPSHOT_END_SINCE`] does not get the end marker.
pub(crate) async fn serve<S, R>(
    state: &RelayState,
    user_id: &str,
    version: aisa_tunnel::Version,
    mut send: S,
    mut recv: R,
) where
    S: crate::splice::SpliceSend + tokio::io::AsyncWrite + Unpin,
    R: crate::splice::SpliceRecv,
{
    let max = state.config.max_frame_len;
    // Subscribe before the snapshot, so that no change falls between the two.
    let mut events = state.devices.events.subscribe(user_id);
    let devices = match state.store.devices_for_user(user_id).await {
        Ok(devices) => devices,
        Err(err) => {
            warn!(%err, "device list failed");
            let err = Envelope::error(0, ErrorCode::Internal, "the relay could not list devices");
            let _ = write_frame(&mut send, &err.encode(), max).await;
            send.finish_stream().await;
            return;
        }
    };
    let count = u32::try_from(devices.len()).unwrap_or(u32::MAX);
    for device in devices {
        // Here, or (clustered) on another node.
        let online = state.cluster.is_online(&device.id).await;
        let status =
            crate::events::device_status(&device.id, online, device.node_version.as_deref());
        if write_frame(&mut send, &status.encode(), max).await.is_err() {
            return;
        }
    }
    let knows_end = version.major == Body::STATUS_SNAPSHOT_END_SINCE.major
        && version.minor >= Body::STATUS_SNAPSHOT_END_SINCE.minor;
    let end = Envelope::new(0, Body::StatusSnapshotEnd { devices: count });
    if knows_end && write_frame(&mut send, &end.encode(), max).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if write_frame(&mut send, &event.encode(), max).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            read = recv.read_chunk(256) => match read {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            },
        }
    }
    send.finish_stream().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_to_the_users_subscribers_and_drops_slow_ones() {
        let hub = EventHub::default();
        let mut a = hub.subscribe("u1");
        let mut other = hub.subscribe("u2");
        hub.publish("u1", &device_status("d1", true, Some("0.1.0")));
        assert_eq!(a.try_recv().expect("event").device_id, "d1");
        assert!(other.try_recv().is_err(), "other users see nothing");

        // Fill a's queue without reading: the next event drops the subscriber.
        for _ in 0..QUEUE {
            hub.publish("u1", &device_status("d1", false, None));
        }
        assert_eq!(hub.subscribers("u1"), 1);
        hub.publish("u1", &device_status("d1", true, None));
        assert_eq!(hub.subscribers("u1"), 0, "the slow subscriber was dropped");
        let mut drained = 0;
        while a.try_recv().is_ok() {
            drained += 1;
        }
        assert_eq!(drained, QUEUE);
    }
}
