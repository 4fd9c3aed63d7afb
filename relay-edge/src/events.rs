//! Live device status for browsers: each user's open event streams, publishing a
//! DEVICE_STATUS to all of them when one of the user's devices comes or goes, and
//! serving one such stream (the snapshot, its end marker, then the changes).
//!
//! In a cluster, each status published here is also announced
//! ([`EventHub::announce_to`]) and published on Redis, and the statuses other nodes
//! publish are delivered here ([`EventHub::deliver`]): a browser watching on one node
//! sees a desktop on another come and go. The hub remembers what each subscriber was last
//! told about each device, so that after a gap in what reached this node (its Redis
//! subscriber reconnecting) the cluster can send each one only what differs from the
//! truth ([`EventHub::correct`]).
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
    subscribers: Mutex<Subscribers>,
    announce: OnceLock<mpsc::UnboundedSender<(String, Envelope)>>,
}

/// The subscribers by user, and the hub's clock: a number that grows with every
/// subscription and every status sent, to tell what happened after a given moment.
#[derive(Default)]
struct Subscribers {
    by_user: HashMap<String, Vec<Subscriber>>,
    clock: u64,
}

/// One event stream: its queue, and what it was last told about each device.
struct Subscriber {
    tx: mpsc::Sender<Envelope>,
    /// The hub's clock when it subscribed (also its id).
    since: u64,
    /// Device id → (online, the hub's clock when it was told).
    told: HashMap<String, (bool, u64)>,
}

/// A subscription to a user's events: the queue to read, and its id for
/// [`EventHub::told_in_snapshot`].
pub struct Subscription {
    /// The subscription's id.
    pub id: u64,
    /// The events, in order.
    pub events: mpsc::Receiver<Envelope>,
}

impl Subscriber {
    /// Queues `event`, noting what it says; false when the subscriber is slow or gone.
    fn send(&mut self, event: &Envelope, clock: u64) -> bool {
        if self.tx.try_send(event.clone()).is_err() {
            return false;
        }
        if let Body::DeviceStatus { online, .. } = event.body {
            self.told.insert(event.device_id.clone(), (online, clock));
        }
        true
    }
}

impl EventHub {
    /// A new subscription to `user_id`'s events.
    pub fn subscribe(&self, user_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut subscribers = self.lock();
        subscribers.clock += 1;
        let id = subscribers.clock;
        subscribers
            .by_user
            .entry(user_id.to_owned())
            .or_default()
            .push(Subscriber {
                tx,
                since: id,
                told: HashMap::new(),
            });
        Subscription { id, events: rx }
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
        subscribers.clock += 1;
        let clock = subscribers.clock;
        let Some(list) = subscribers.by_user.get_mut(user_id) else {
            return;
        };
        list.retain_mut(|s| s.send(event, clock));
        if list.is_empty() {
            subscribers.by_user.remove(user_id);
        }
    }

    /// Notes that subscription `id`'s snapshot said `online` for `device_id`, unless an
    /// event about the device was queued for it since (that event follows the snapshot
    /// on the stream, so it is what the browser shows).
    pub fn told_in_snapshot(&self, user_id: &str, id: u64, device_id: &str, online: bool) {
        let mut subscribers = self.lock();
        let Some(subscriber) = subscribers
            .by_user
            .get_mut(user_id)
            .and_then(|list| list.iter_mut().find(|s| s.since == id))
        else {
            return;
        };
        subscriber
            .told
            .entry(device_id.to_owned())
            .or_insert((online, id));
    }

    /// The hub's clock now: pass it to [`EventHub::correct`] for what was learnt after
    /// this moment.
    pub fn clock(&self) -> u64 {
        self.lock().clock
    }

    /// The users with subscribers here now.
    pub fn watched_users(&self) -> Vec<String> {
        self.lock().by_user.keys().cloned().collect()
    }

    /// Tells `user_id`'s subscribers that `device_id` is `online` (or not) where they
    /// were last told otherwise, leaving out those told anything about it after `since`
    /// (a newer event than the truth read at `since`) and those that subscribed after
    /// `since` (their snapshot is newer). Returns how many were told.
    pub fn correct(
        &self,
        user_id: &str,
        device_id: &str,
        online: bool,
        node_version: Option<&str>,
        since: u64,
    ) -> usize {
        let mut subscribers = self.lock();
        subscribers.clock += 1;
        let clock = subscribers.clock;
        let Some(list) = subscribers.by_user.get_mut(user_id) else {
            return 0;
        };
        let event = device_status(device_id, online, node_version);
        let mut told = 0;
        list.retain_mut(|s| {
            if s.since > since {
                return true;
            }
            match s.told.get(device_id) {
                Some(&(_, when)) if when > since => true,
                Some(&(was, _)) if was == online => true,
                _ => {
                    let sent = s.send(&event, clock);
                    told += usize::from(sent);
                    sent
                }
            }
        });
        if list.is_empty() {
            subscribers.by_user.remove(user_id);
        }
        told
    }

    /// Subscribers of `user_id` now (for tests and metrics).
    pub fn subscribers(&self, user_id: &str) -> usize {
        self.lock()
            .by_user
            .get(user_id)
            .map_or(0, |l| l.iter().filter(|s| !s.tx.is_closed()).count())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
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
    let Subscription { id, mut events } = state.devices.events.subscribe(user_id);
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
        state
            .devices
            .events
            .told_in_snapshot(user_id, id, &device.id, online);
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
        let mut a = hub.subscribe("u1").events;
        let mut other = hub.subscribe("u2").events;
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

    fn statuses(rx: &mut mpsc::Receiver<Envelope>) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let Body::DeviceStatus { online, .. } = e.body {
                out.push((e.device_id, online));
            }
        }
        out
    }

    #[test]
    fn corrections_go_only_where_a_subscriber_was_told_otherwise_and_nothing_newer() {
        let hub = EventHub::default();
        // `early` saw d1 come online and its snapshot said d2 offline; `late` subscribed
        // after the moment the truth is read.
        let early = hub.subscribe("u1");
        let mut early_rx = early.events;
        hub.told_in_snapshot("u1", early.id, "d2", false);
        hub.deliver("u1", &device_status("d1", true, None));
        assert_eq!(statuses(&mut early_rx), [("d1".to_owned(), true)]);
        let since = hub.clock();
        let late = hub.subscribe("u1");
        // Its snapshot (read after `since`) already says d1 is offline.
        hub.told_in_snapshot("u1", late.id, "d1", false);
        let mut late = late.events;

        // The truth at `since`: d1 went offline, d2 came online, d3 (never told) online.
        assert_eq!(hub.correct("u1", "d1", false, None, since), 1);
        assert_eq!(hub.correct("u1", "d2", true, None, since), 1);
        assert_eq!(hub.correct("u1", "d3", true, None, since), 1);
        assert_eq!(
            statuses(&mut early_rx),
            [
                ("d1".to_owned(), false),
                ("d2".to_owned(), true),
                ("d3".to_owned(), true)
            ]
        );
        assert!(statuses(&mut late).is_empty(), "its snapshot is newer");

        // Told the same again: nothing to send (to either, `late` counting now).
        let since = hub.clock();
        assert_eq!(hub.correct("u1", "d1", false, None, since), 0);
        assert!(statuses(&mut early_rx).is_empty());
        // A subscriber never told about a device gets the truth.
        assert_eq!(hub.correct("u1", "d2", true, None, since), 1);
        assert_eq!(statuses(&mut late), [("d2".to_owned(), true)]);

        // An event newer than the truth read wins over a correction made with it.
        let since = hub.clock();
        hub.deliver("u1", &device_status("d1", true, None));
        assert_eq!(hub.correct("u1", "d1", false, None, since), 0);
        assert_eq!(statuses(&mut early_rx), [("d1".to_owned(), true)]);

        // Another user's subscribers are not touched.
        assert_eq!(hub.correct("u2", "d1", false, None, hub.clock()), 0);
    }

    #[test]
    fn a_snapshot_does_not_overwrite_an_event_queued_after_it() {
        let hub = EventHub::default();
        let sub = hub.subscribe("u1");
        let mut rx = sub.events;
        // The event is queued while the snapshot is being written: on the stream it
        // comes after the snapshot, so it is what the browser shows.
        hub.deliver("u1", &device_status("d1", true, None));
        hub.told_in_snapshot("u1", sub.id, "d1", false);
        statuses(&mut rx);
        assert_eq!(hub.correct("u1", "d1", true, None, hub.clock()), 0);
        assert_eq!(hub.correct("u1", "d1", false, None, hub.clock()), 1);
    }
}
