//! Noticing a relay node that died: each node's liveness in Redis, and what the others do
//! when it lapses.
//!
//! A node killed outright (SIGKILL, a crashed machine) publishes nothing more: its
//! desktops' entries in the device map live on until their TTL (`3 × heartbeat_secs`),
//! and browsers on other nodes, told its desktops were online, would keep showing them so.
//! So every node keeps its liveness in one sorted set ([`super::shared::ALIVE_KEY`]): each
//! [`INTERVAL`] it runs one script that scores its own name with the moment, on Redis's
//! clock, its liveness lapses ([`LAPSE`] from now) and reads every node's. A node whose
//! moment has passed died (or stopped: a stopping node lapses itself at once). The others
//! then
//! - take its device map entries for gone ([`super::Cluster::locate`] answers `None` for a
//!   device placed on it, so snapshots, the devices list and new streams see it offline);
//! - re-locate every device their status streams watch and tell each stream "offline"
//!   where it was told online and the device is online nowhere now
//!   (`super::tasks::resync_pass`): the dead node's desktops, unless one reconnected to a
//!   live node meanwhile (then the map names that node, and the stream, already told
//!   online by that node's announcement, hears nothing). Only "offline" is sent: what
//!   came online is announced by the node it came to.
//!
//! So browsers learn it within [`LAPSE`] + [`INTERVAL`] of the kill (4 s) plus one pass.
//! A node that comes back (the same name restarted, or reachable again) is believed
//! alive at once, and the others send what came online (at once and
//! `super::tasks::OFFLINE_GRACE` later, once it has written its devices again).
//!
//! Absent is not dead: a node missing from the set (never seen, forgotten after
//! [`FORGET`], or Redis restarted empty) counts as alive, so a Redis restart never takes
//! live nodes for dead, and nor does a reconnect or a failover: for
//! `super::tasks::OFFLINE_GRACE` (2.5 s) after its own connection to Redis comes back (or its
//! last failed refresh) a node believes no new lapse (the others reconnect and refresh
//! within the 2 s reconnect backoff).
//!
//! What this does not do: a node cut off from Redis (but alive, its desktops connected)
//! for longer than [`LAPSE`] is taken for dead too: its desktops show offline elsewhere
//! and streams to them are refused until it reaches Redis again. Its device map entries
//! are not removed (they expire with their TTL), so when it comes back they are found
//! again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::NodeName;
use super::shared::Shared;
use super::tasks::{OFFLINE_GRACE, RESYNC_TRIES, Tell, resync_pass, stopping};
use crate::state::RelayState;

/// How long a node's liveness lasts without a refresh.
pub const LAPSE: Duration = Duration::from_secs(3);

/// How often each node refreshes its liveness and reads the others'.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How long a lapsed node stays in the set (and so is known dead) before it is forgotten:
/// far longer than any device map entry it left (`3 × heartbeat_secs`) lives.
pub const FORGET: Duration = Duration::from_secs(600);

/// One read of every node's liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Redis's clock, in ms since the Unix epoch.
    pub now_ms: u64,
    /// Whether the reading node's own liveness had not lapsed before this refresh (false
    /// at its first start, after a Redis restart, or when it was taken for dead).
    pub was_alive: bool,
    /// Every node in the set and the moment (ms, Redis's clock) its liveness lapses.
    pub nodes: Vec<(NodeName, u64)>,
}

impl Reading {
    /// Parses the liveness script's reply (`Shared::liveness`); `None` if malformed.
    /// Names that are not valid node names are left out.
    pub fn parse(reply: &[String]) -> Option<Reading> {
        let [now, was, rest @ ..] = reply else {
            return None;
        };
        if rest.len() % 2 != 0 {
            return None;
        }
        let nodes = rest
            .chunks(2)
            .filter_map(|pair| {
                let lapses = pair[1].parse::<f64>().ok()?;
                Some((NodeName::new(&pair[0]).ok()?, lapses as u64))
            })
            .collect();
        Some(Reading {
            now_ms: now.parse().ok()?,
            was_alive: was == "1",
            nodes,
        })
    }
}

/// The peers a node takes for dead, from one reading to the next.
#[derive(Debug, Default)]
pub struct Peers {
    dead: HashSet<NodeName>,
}

/// What changed since the last reading.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Taken for dead now, alive before.
    pub died: Vec<NodeName>,
    /// Alive now (or no longer in the set), dead before.
    pub revived: Vec<NodeName>,
}

impl Peers {
    /// Updates the dead peers from `reading` (as seen by node `me`, which is never
    /// dead to itself). With `believe_lapses` false (just reconnected to Redis) a peer
    /// that lapsed is taken for dead only if it already was.
    pub fn assess(&mut self, me: &NodeName, reading: &Reading, believe_lapses: bool) -> Change {
        let dead: HashSet<NodeName> = reading
            .nodes
            .iter()
            .filter(|(node, lapses)| {
                node != me
                    && *lapses <= reading.now_ms
                    && (believe_lapses || self.dead.contains(node))
            })
            .map(|(node, _)| node.clone())
            .collect();
        let mut change = Change {
            died: dead.difference(&self.dead).cloned().collect(),
            revived: self.dead.difference(&dead).cloned().collect(),
        };
        change.died.sort();
        change.revived.sort();
        self.dead = dead;
        change
    }

    /// The peers taken for dead.
    pub fn dead(&self) -> &HashSet<NodeName> {
        &self.dead
    }
}

/// Refreshes this node's liveness and reads the others' every [`INTERVAL`] until the
/// relay stops (then lapses its own at once); corrects what browsers here were told
/// when a peer dies or comes back.
pub(super) async fn run(
    state: Arc<RelayState>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    use fred::interfaces::EventInterface;
    let mut reconnects = shared.client().reconnect_rx();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers = Peers::default();
    let mut believe_from = Instant::now();
    let mut first = true;
    // Correction passes run beside the refresh (which must not wait for them), and end
    // with this task.
    let mut passes = JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Ok(_) = reconnects.recv() => believe_from = Instant::now() + OFFLINE_GRACE,
            _ = stopping(&mut stopped) => {
                // Stopping: the others take this node's desktops for gone at their next
                // read (its own task that would publish their leaving has stopped).
                if let Err(err) = shared.liveness(Duration::ZERO, FORGET).await {
                    debug!(%err, "liveness not lapsed at stop; it lapses by itself");
                }
                return;
            }
        }
        while passes.try_join_next().is_some() {}
        let reading = match shared.liveness(LAPSE, FORGET).await {
            Ok(reading) => reading,
            Err(err) => {
                debug!(%err, "liveness not refreshed");
                // Redis unreachable from here: the others may be too; give them the
                // same time to refresh once it is back as after a reconnect.
                believe_from = Instant::now() + OFFLINE_GRACE;
                continue;
            }
        };
        let change = peers.assess(shared.node(), &reading, Instant::now() >= believe_from);
        if first {
            // Nodes that died before this one started: no browser here was told of them.
            first = false;
            shared.set_dead(peers.dead().clone());
            continue;
        }
        if !reading.was_alive {
            warn!(
                "this node's liveness had lapsed in Redis (it could not refresh it for {LAPSE:?}, or Redis restarted): other nodes may have shown its desktops offline"
            );
        }
        if change == Change::default() {
            continue;
        }
        shared.set_dead(peers.dead().clone());
        if !change.died.is_empty() {
            let died: Vec<&str> = change.died.iter().map(NodeName::as_str).collect();
            warn!(
                nodes = ?died,
                "relay node(s) died (liveness lapsed): telling browsers here their desktops are offline"
            );
            metrics::counter!("aisa_relay_cluster_nodes_died_total")
                .increment(change.died.len() as u64);
            let state = state.clone();
            passes.spawn(async move {
                for _ in 0..RESYNC_TRIES {
                    if resync_pass(&state, Tell::Offline).await {
                        return;
                    }
                    tokio::time::sleep(OFFLINE_GRACE).await;
                }
            });
        }
        if !change.revived.is_empty() {
            let revived: Vec<&str> = change.revived.iter().map(NodeName::as_str).collect();
            info!(nodes = ?revived, "relay node(s) alive again");
            let state = state.clone();
            passes.spawn(async move {
                resync_pass(&state, Tell::Online).await;
                tokio::time::sleep(OFFLINE_GRACE).await;
                resync_pass(&state, Tell::Online).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn reading(now_ms: u64, nodes: &[(&str, u64)]) -> Reading {
        Reading {
            now_ms,
            was_alive: true,
            nodes: nodes.iter().map(|(n, t)| (name(n), *t)).collect(),
        }
    }

    #[test]
    fn the_script_reply_parses() {
        let reply: Vec<String> = ["1764460800123", "1", "a", "1764460803123", "b", "1.7e12"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            Reading::parse(&reply),
            Some(Reading {
                now_ms: 1_764_460_800_123,
                was_alive: true,
                nodes: vec![
                    (name("a"), 1_764_460_803_123),
                    (name("b"), 1_700_000_000_000)
                ],
            })
        );
        assert_eq!(
            Reading::parse(&reply[..3]),
            None,
            "a name without its moment"
        );
        assert_eq!(Reading::parse(&reply[..1]), None);
        let bad: Vec<String> = ["x", "0"].iter().map(|s| s.to_string()).collect();
        assert_eq!(Reading::parse(&bad), None);
    }

    #[test]
    fn a_lapsed_peer_dies_once_and_revives_when_refreshed_or_forgotten() {
        let me = name("me");
        let mut peers = Peers::default();
        // Everyone alive; my own entry never counts.
        let change = peers.assess(&me, &reading(1000, &[("me", 900), ("a", 3000)]), true);
        assert_eq!(change, Change::default());
        // a lapsed: dead, once.
        let change = peers.assess(&me, &reading(3000, &[("me", 4000), ("a", 3000)]), true);
        assert_eq!(change.died, [name("a")]);
        assert!(change.revived.is_empty());
        let change = peers.assess(&me, &reading(4000, &[("me", 7000), ("a", 3000)]), true);
        assert_eq!(change, Change::default(), "told once");
        assert!(peers.dead().contains(&name("a")));
        // Refreshed again (restarted under its name): alive.
        let change = peers.assess(&me, &reading(5000, &[("a", 8000)]), true);
        assert_eq!(change.revived, [name("a")]);
        assert!(peers.dead().is_empty());
        // Dead again, then gone from the set (forgotten, or Redis restarted): alive.
        peers.assess(&me, &reading(9000, &[("a", 8000)]), true);
        let change = peers.assess(&me, &reading(9000, &[]), true);
        assert_eq!(change.revived, [name("a")]);
    }

    #[test]
    fn just_after_a_reconnect_no_new_lapse_is_believed() {
        let me = name("me");
        let mut peers = Peers::default();
        peers.assess(&me, &reading(5000, &[("a", 4000)]), true);
        // b lapsed while this node was reconnecting: not believed yet; a stays dead.
        let change = peers.assess(&me, &reading(6000, &[("a", 4000), ("b", 5000)]), false);
        assert_eq!(change, Change::default());
        assert_eq!(peers.dead().len(), 1);
        // b refreshed meanwhile: never taken for dead.
        let change = peers.assess(&me, &reading(7000, &[("a", 4000), ("b", 9000)]), true);
        assert_eq!(change, Change::default());
        // Once believed, a lapse counts.
        let change = peers.assess(&me, &reading(9500, &[("a", 4000), ("b", 9000)]), true);
        assert_eq!(change.died, [name("b")]);
    }
}
