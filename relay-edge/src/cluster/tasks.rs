//! The cluster's background tasks (when clustered): one writes to Redis what this node
//! holds (placements, presence, invalidations), refreshing it every
//! third of the device TTL and at once after Redis (re)connects; the other reads the
//! channels and applies what other nodes published (status events, dropped cache
//! entries, cut sessions and desktops).
//!
//! Pub/sub delivers a message only to the subscribers connected when it is published, so
//! a presence change can be lost two ways, and each side makes up for its own:
//! - the publishing node could not publish (its Redis connection was down): it keeps the
//!   latest unpublished status per device and publishes it again once Redis is back,
//!   after it has written its devices again (and removed the entries of devices that
//!   left meanwhile);
//! - the receiving node's subscriber was reconnecting (or fell behind): once it is
//!   subscribed again it resyncs, reading the device map for every device its browsers
//!   watch and sending each browser the statuses that differ from what it was last told
//!   (`crate::events::EventHub::correct`). What came online is sent at once; what went
//!   offline only after [`OFFLINE_GRACE`], because after a Redis restart the map is
//!   empty until every node has written its devices again.
//!
//! A node that dies publishes nothing more: the third task, `super::liveness`, notices
//! its liveness lapse and corrects what browsers here were told about its desktops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// How long after its subscriber is back a node waits before it believes the device map
/// when the map says a watched device is offline: longer than the longest Redis reconnect
/// delay (2 s, `Shared::connect`), so that after a Redis restart, which empties the map,
/// every node has written its devices again.
pub const OFFLINE_GRACE: Duration = Duration::from_millis(2500);

/// How many times a resync's last pass is tried again when Redis or the store did not
/// answer for some device (each [`OFFLINE_GRACE`] apart).
pub(super) const RESYNC_TRIES: u32 = 5;

use super::shared::{
    INVALIDATE_CHANNEL, InvalidationMessage, PRESENCE_CHANNEL, PresenceMessage, Shared,
};
use crate::facts::Invalidation;
use crate::registry::RegistryChange;
use crate::state::RelayState;

/// Hooks the registry, the status events and the facts cache to the cluster and
/// starts its tasks on `tasks`. Nothing when the relay is a single node.
pub fn spawn(state: &Arc<RelayState>, tasks: &mut JoinSet<()>, stopped: watch::Receiver<bool>) {
    let Some(shared) = state.cluster.shared().cloned() else {
        return;
    };
    let (registry_tx, registry_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (facts_tx, facts_rx) = mpsc::unbounded_channel();
    state.devices.registry.watch(registry_tx);
    state.devices.events.announce_to(events_tx);
    state.store.facts().announce_to(facts_tx);
    // Each user's counts: decided in memory, written and read back in batches.
    state.actions.share(shared.clone());
    let interval =
        std::time::Duration::from_millis(state.config.cluster.count_sync_ms.unwrap_or(250).max(10));
    tasks.spawn(crate::limits::sync_counts(
        state.clone(),
        shared.clone(),
        interval,
        stopped.clone(),
    ));
    state.accounts.logins.share(shared.clone());
    let channels = Channels {
        registry: registry_rx,
        events: events_rx,
        facts: facts_rx,
    };
    tasks.spawn(write_loop(
        state.clone(),
        shared.clone(),
        channels,
        stopped.clone(),
    ));
    tasks.spawn(read_loop(state.clone(), shared.clone(), stopped.clone()));
    tasks.spawn(super::liveness::run(state.clone(), shared, stopped));
}

struct Channels {
    registry: mpsc::UnboundedReceiver<RegistryChange>,
    events: mpsc::UnboundedReceiver<(String, aisa_tunnel::Envelope)>,
    facts: mpsc::UnboundedReceiver<Invalidation>,
}

/// Writes what this node holds, in order, so that a removal is never overtaken by a
/// refresh of the same connection.
async fn write_loop(
    state: Arc<RelayState>,
    shared: Arc<Shared>,
    mut channels: Channels,
    mut stopped: watch::Receiver<bool>,
) {
    use fred::interfaces::EventInterface;
    let mut reconnects = shared.client().reconnect_rx();
    let mut refresh =
        tokio::time::interval((shared.device_ttl / 3).max(std::time::Duration::from_millis(200)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let node = shared.node().to_string();
    // The latest status per device that could not be published (Redis was down).
    let mut unpublished: HashMap<String, PresenceMessage> = HashMap::new();
    loop {
        tokio::select! {
            // In this order: a connect is placed before the invalidation its store
            // write sent after it is published (the other nodes then find the new
            // placement when they look).
            biased;
            Some(change) = channels.registry.recv() => apply_change(&state, &shared, change).await,
            Some((user_id, event)) = channels.events.recv() => {
                let aisa_tunnel::Body::DeviceStatus { online, node_version, .. } = &event.body else {
                    continue;
                };
                let message = PresenceMessage {
                    node: node.clone(),
                    user_id,
                    device_id: event.device_id.clone(),
                    online: *online,
                    node_version: node_version.clone(),
                };
                match shared.publish(PRESENCE_CHANNEL, &message).await {
                    Ok(()) => {
                        unpublished.remove(&message.device_id);
                    }
                    Err(err) => {
                        warn!(%err, "presence not published to the cluster; published again once Redis is back");
                        unpublished.insert(message.device_id.clone(), message);
                    }
                }
            }
            Some(change) = channels.facts.recv() => {
                let message = InvalidationMessage { node: node.clone(), change };
                if let Err(err) = shared.publish(INVALIDATE_CHANNEL, &message).await {
                    warn!(%err, "invalidation not published to the cluster; others see it within their cache TTL");
                }
            }
            _ = refresh.tick() => {
                reregister(&state, &shared).await;
                publish_again(&shared, &mut unpublished).await;
            }
            Ok(server) = reconnects.recv() => {
                info!(%server, "Redis (re)connected: writing this node's devices and counts again");
                reregister(&state, &shared).await;
                forget_departed(&state, &shared).await;
                publish_again(&shared, &mut unpublished).await;
            }
            _ = stopping(&mut stopped) => return,
        }
    }
}

async fn apply_change(state: &RelayState, shared: &Shared, change: RegistryChange) {
    match change {
        RegistryChange::Online {
            device_id,
            user_id,
            generation,
        } => {
            let addr = state.cluster.forward_addr().unwrap_or(super::NO_FORWARD);
            match shared.place(&device_id, &user_id, generation, addr).await {
                Ok(true) => {
                    if let Err(err) = shared.remember(vec![device_id]).await {
                        debug!(%err, "node's device set not updated");
                    }
                }
                Ok(false) => {
                    info!(%device_id, "a later connection of this device holds it elsewhere")
                }
                Err(err) => {
                    warn!(%err, %device_id, "device not placed in Redis yet; retried at the next refresh")
                }
            }
        }
        RegistryChange::Offline {
            device_id,
            generation,
        } => {
            if let Err(err) = shared.unplace(&device_id, Some(generation)).await {
                warn!(%err, %device_id, "device not removed from Redis; its entry expires with its TTL");
            }
        }
    }
}

/// Writes every placement this node holds (their TTLs start again):
/// the periodic refresh, and the re-registration after Redis lost its data.
async fn reregister(state: &RelayState, shared: &Shared) {
    let addr = state.cluster.forward_addr().unwrap_or(super::NO_FORWARD);
    let mut placed = Vec::new();
    for (device_id, p) in state.devices.registry.placements() {
        // Gone since the snapshot: its removal is queued after this.
        if state.devices.registry.generation(&device_id) != Some(p.generation) {
            continue;
        }
        match shared
            .place(&device_id, &p.user_id, p.generation, addr)
            .await
        {
            Ok(_) => placed.push(device_id),
            Err(err) => {
                debug!(%err, "refresh stopped: Redis unavailable");
                return;
            }
        }
    }
    if let Err(err) = shared.remember(placed).await {
        debug!(%err, "node's device set not refreshed");
    }
    // Stream counts and actions: written by `crate::limits::sync_counts`, every
    // `count_sync_ms`, for every user with streams open here.
}

/// Removes the entries this node wrote for devices that are no longer connected here (they
/// left while Redis was unreachable, so their removal failed), rather than leaving them
/// to their TTL.
async fn forget_departed(state: &RelayState, shared: &Shared) {
    let mine = match shared.own_devices().await {
        Ok(mine) => mine,
        Err(err) => {
            debug!(%err, "node's device set not read");
            return;
        }
    };
    for device_id in mine {
        // A device that connects again meanwhile is placed again by its queued change.
        if state.devices.registry.generation(&device_id).is_some() {
            continue;
        }
        match shared.unplace(&device_id, None).await {
            Ok(true) => {
                info!(%device_id, "removed from the device map: it left while Redis was unreachable")
            }
            Ok(false) => {}
            Err(err) => {
                debug!(%err, "departed devices not removed");
                return;
            }
        }
    }
}

/// Publishes the statuses that could not be published when they changed.
async fn publish_again(shared: &Shared, unpublished: &mut HashMap<String, PresenceMessage>) {
    let devices: Vec<String> = unpublished.keys().cloned().collect();
    for device_id in devices {
        let Some(message) = unpublished.get(&device_id) else {
            continue;
        };
        if let Err(err) = shared.publish(PRESENCE_CHANNEL, message).await {
            debug!(%err, "presence still not published");
            return;
        }
        unpublished.remove(&device_id);
    }
}

/// Applies what the other nodes publish, and resyncs presence after every gap in it (the
/// subscriber reconnected, or this node fell behind).
async fn read_loop(
    state: Arc<RelayState>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    use fred::interfaces::EventInterface;
    let mut messages = shared.subscriber().message_rx();
    let mut reconnects = shared.subscriber().reconnect_rx();
    // At most one resync at a time: a new gap starts it again. Aborted when this ends.
    let mut resyncs = JoinSet::new();
    let start_resync = |resyncs: &mut JoinSet<()>| {
        resyncs.abort_all();
        while resyncs.try_join_next().is_some() {}
        resyncs.spawn(resync(state.clone(), shared.clone()));
    };
    let node = shared.node().to_string();
    loop {
        let message = tokio::select! {
            m = messages.recv() => m,
            Ok(server) = reconnects.recv() => {
                info!(%server, "cluster subscriber (re)connected: resyncing the presence browsers here watch");
                start_resync(&mut resyncs);
                continue;
            }
            _ = stopping(&mut stopped) => return,
        };
        let message = match message {
            Ok(m) => m,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "cluster messages missed (this node fell behind): resyncing presence"
                );
                start_resync(&mut resyncs);
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Ok(body) = message.value.convert::<String>() else {
            continue;
        };
        match &*message.channel {
            PRESENCE_CHANNEL => match serde_json::from_str::<PresenceMessage>(&body) {
                Ok(p) if p.node != node => {
                    let version = (!p.node_version.is_empty()).then_some(p.node_version.as_str());
                    state.devices.events.deliver(
                        &p.user_id,
                        &crate::events::device_status(&p.device_id, p.online, version),
                    );
                }
                Ok(_) => {}
                Err(err) => debug!(%err, "unreadable presence message"),
            },
            INVALIDATE_CHANNEL => match serde_json::from_str::<InvalidationMessage>(&body) {
                Ok(m) if m.node != node => {
                    state.store.facts().apply(&m.change);
                    tokio::spawn(enforce(state.clone(), m.change));
                }
                Ok(_) => {}
                Err(err) => debug!(%err, "unreadable invalidation message"),
            },
            _ => {}
        }
    }
}

/// Brings the device statuses this node's browsers were told back in line with the device
/// map after a gap in what reached this node: subscribes again (so that nothing published
/// from now on is missed), then one pass at once sending only what came online, and
/// after [`OFFLINE_GRACE`] one sending every difference (tried again while Redis or the
/// store fails for some device).
async fn resync(state: Arc<RelayState>, shared: Arc<Shared>) {
    if let Err(err) = shared.subscriber().resubscribe_all().await {
        // The subscriber dropped again: its next reconnect starts a new resync. This
        // one goes on meanwhile, for what the map can tell already.
        warn!(%err, "cluster channels not subscribed again");
    }
    resync_pass(&state, Tell::Online).await;
    for _ in 0..RESYNC_TRIES {
        tokio::time::sleep(OFFLINE_GRACE).await;
        if resync_pass(&state, Tell::All).await {
            return;
        }
    }
    warn!("presence resync incomplete: Redis or the store kept failing");
}

/// Which differences a resync pass sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tell {
    /// Only what came online.
    Online,
    /// Only what went offline (a node died: `super::liveness`).
    Offline,
    /// Both.
    All,
}

/// One resync pass over every device of every user watched here, sending the differences
/// `tell` says. Returns whether every device was checked.
pub(super) async fn resync_pass(state: &RelayState, tell: Tell) -> bool {
    let events = &state.devices.events;
    // The truth read from here on is at least this new.
    let since = events.clock();
    let mut complete = true;
    let mut corrected = 0;
    for user_id in events.watched_users() {
        let devices = match state.store.devices_for_user(&user_id).await {
            Ok(devices) => devices,
            Err(err) => {
                warn!(%err, "device list failed during the presence resync");
                complete = false;
                continue;
            }
        };
        for device in devices {
            let online = match state.cluster.locate(&device.id).await {
                Ok(placement) => placement.is_some(),
                Err(_) => {
                    complete = false;
                    continue;
                }
            };
            let wanted = match tell {
                Tell::Online => online,
                Tell::Offline => !online,
                Tell::All => true,
            };
            if wanted {
                corrected += events.correct(
                    &user_id,
                    &device.id,
                    online,
                    device.node_version.as_deref(),
                    since,
                );
            }
        }
    }
    metrics::counter!("aisa_relay_presence_corrections_total").increment(corrected as u64);
    if corrected > 0 {
        info!(
            corrected,
            ?tell,
            "presence resync corrected browsers' device statuses"
        );
    }
    complete
}

/// Cuts what a change made on another node revokes here: the sessions using a user's
/// revoked tokens (or all of a disabled or deleted user's), and a revoked or deleted
/// device's connection.
async fn enforce(state: Arc<RelayState>, change: Invalidation) {
    match change {
        Invalidation::User(user_id) => revoke_sessions(&state, &user_id, None).await,
        Invalidation::UserEmail(email) => {
            if let Ok(Some(user)) = state.store.user_by_email(&email).await {
                let user_id = user.id.clone();
                revoke_sessions(&state, &user_id, Some(user)).await;
            }
        }
        Invalidation::Device(device_id) => check_device(&state, &device_id).await,
        Invalidation::DevicesOf(user_id) => {
            for (device_id, placed) in state.devices.registry.placements() {
                if placed.user_id == user_id {
                    check_device(&state, &device_id).await;
                }
            }
        }
        Invalidation::Plan(_) => {}
    }
}

async fn revoke_sessions(state: &RelayState, user_id: &str, known: Option<crate::store::User>) {
    if !state.sessions.users().iter().any(|u| u == user_id) {
        return;
    }
    let user = match known {
        Some(user) => Some(user),
        None => match state.store.user(user_id).await {
            Ok(user) => user,
            Err(err) => {
                warn!(%err, %user_id, "could not read the changed user; the sweep retries");
                return;
            }
        },
    };
    let (generation, why) = match &user {
        None => (i64::MAX, "the account was deleted"),
        Some(u) if u.disabled => (i64::MAX, "the account was disabled"),
        Some(u) => (u.token_generation, "the access token was revoked"),
    };
    let closed = state.sessions.revoke(user_id, generation, why);
    if closed > 0 {
        info!(%user_id, closed, why, "sessions closed on another node's word");
        crate::metrics::refused("token_revoked");
    }
}

async fn check_device(state: &RelayState, device_id: &str) {
    let Some(online) = state.devices.registry.get(device_id) else {
        return;
    };
    match state.store.device(device_id).await {
        Ok(Some(device)) if !device.revoked => {
            // Connected to another node since (a later generation holds the device
            // map): this connection is replaced, as on a single node.
            let Some(mine) = state.devices.registry.generation(device_id) else {
                return;
            };
            let Some(shared) = state.cluster.shared() else {
                return;
            };
            if let Ok(Some(there)) = shared.placement(device_id).await
                && there.node != *state.cluster.node()
                && there.generation > mine
            {
                info!(%device_id, node = %there.node, "device connected to another node: closing this older connection");
                // Forgotten first, so that its end neither marks the device offline in
                // the store nor tells browsers it went (it is online, there).
                state
                    .devices
                    .registry
                    .remove(device_id, online.connection_id);
                online.connection.close(
                    crate::desktop::CLOSE_REPLACED,
                    b"replaced by a newer connection",
                );
            }
        }
        Ok(_) => {
            info!(%device_id, "device revoked on another node: closing its connection");
            online.connection.close(
                crate::desktop::CLOSE_REVOKED,
                b"unauthenticated: this device was revoked",
            );
        }
        Err(err) => warn!(%err, %device_id, "could not read the changed device"),
    }
}

/// Resolves once the relay is stopping (the guard `wait_for` gives is not `Send`).
pub(super) async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}
