//! Several relays as one service: where each desktop is connected (the device map),
//! and the node's own name.
//!
//! [`Cluster`] (held by [`crate::state::RelayState`]) answers [`Cluster::locate`]: on
//! which node a device is connected, with the address that node takes forwarded streams
//! on and the connection's generation. Without `[cluster] redis_url` the relay is a
//! single node and `locate` answers from the local registry alone; with it, devices
//! connected elsewhere are looked up in Redis (see `docs/relay.md`, "Cluster"), and a
//! node whose liveness lapsed in Redis ([`liveness`]: it died) is taken to hold none.

pub mod forward;
pub mod liveness;
pub mod peer;
pub mod shared;
mod tasks;

pub use tasks::spawn;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::RelayConfig;
use crate::registry::Registry;

/// The longest node name accepted, in bytes.
pub const MAX_NODE_NAME_LEN: usize = 64;

/// A relay node's name, unique in the cluster: ASCII letters, digits, `.`, `_` and
/// `-`, at most [`MAX_NODE_NAME_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

/// A node name that is empty, too long, or has characters other than ASCII letters,
/// digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node name {0:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'")]
pub struct BadNodeName(pub String);

impl NodeName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, BadNodeName> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NODE_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(NodeName(name.to_owned()))
        } else {
            Err(BadNodeName(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name this relay runs under: `[cluster] node_name`, else the deprecated
    /// top-level `node_name` (`AISA_RELAY_NODE_NAME`), else the name kept in
    /// `data_dir/node-name`, made at the first start as `<hostname>-<8 hex digits>`.
    ///
    /// So two nodes never share a name by default (the host name alone is not unique:
    /// `$HOSTNAME` is unset under systemd and containers may share one), and a node
    /// restarted on the same data directory keeps its name and so clears its own
    /// entries from before the restart, and only those.
    pub fn resolve(config: &RelayConfig) -> Result<NodeName, NodeNameError> {
        if let Some(name) = &config.cluster.node_name {
            return Ok(NodeName::new(name)?);
        }
        if !config.node_name.is_empty() {
            return Ok(NodeName::new(&config.node_name)?);
        }
        NodeName::kept_in(&config.data_dir)
    }

    /// The name kept in `dir/node-name`, made (and written) if there is none yet.
    pub fn kept_in(dir: &Path) -> Result<NodeName, NodeNameError> {
        let path = dir.join("node-name");
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(NodeName::new(text.trim())?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
        let name = NodeName::new(&format!("{}-{}", host_name(), hex::encode(suffix)))?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(&path, format!("{}\n", name.as_str()))?;
        Ok(name)
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the node's name could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum NodeNameError {
    /// The configured or kept name is not valid.
    #[error(transparent)]
    Bad(#[from] BadNodeName),
    /// `data_dir/node-name` could not be read or written.
    #[error("node-name file: {0}")]
    Io(#[from] std::io::Error),
}

/// The machine's host name, reduced to the characters a [`NodeName`] allows (at most
/// 40 of them), or `relay` when there is none.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if name.is_empty() {
        "relay".into()
    } else {
        name
    }
}

/// Where a device is connected: the node, the address that node takes forwarded
/// streams on, and which of the device's connections it is (a later connection has a
/// higher generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node holding the device's connection.
    pub node: NodeName,
    /// Where that node accepts relay-to-relay forwarding (`[cluster]
    /// forward_advertise`); `0.0.0.0:0` for a node that does not forward.
    pub forward_addr: SocketAddr,
    /// The connection's generation: microseconds since the Unix epoch when the device
    /// connected, made strictly increasing on each node.
    pub generation: u64,
}

/// The cluster's shared state is unreachable (Redis is down or not answering in time):
/// a device not connected to this node cannot be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the relay cluster's shared state is unavailable")]
pub struct ClusterUnavailable;

/// This node's view of the cluster. See the module's documentation.
pub struct Cluster {
    node: NodeName,
    registry: Arc<Registry>,
    forward_addr: RwLock<Option<SocketAddr>>,
    /// Redis, when clustered.
    shared: Option<Arc<shared::Shared>>,
}

/// The cluster could not be joined at start.
#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterStartError(#[from] pub shared::RedisError);

/// The forward address of a node that does not accept forwarded streams.
const NO_FORWARD: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl Cluster {
    /// A single node named `node`, answering from `registry` alone.
    pub fn single(node: NodeName, registry: Arc<Registry>) -> Self {
        Cluster {
            node,
            registry,
            forward_addr: RwLock::new(None),
            shared: None,
        }
    }

    /// Joins the cluster in `config`'s `[cluster] redis_url` (a single node without
    /// one): connects to Redis, subscribes to the channels, and clears what this node
    /// (by name) left there before a restart. A device map entry lives
    /// `3 × heartbeat_secs` without a refresh.
    pub async fn join(
        config: &RelayConfig,
        node: NodeName,
        registry: Arc<Registry>,
    ) -> Result<Self, ClusterStartError> {
        let mut cluster = Cluster::single(node.clone(), registry);
        let Some(url) = &config.cluster.redis_url else {
            return Ok(cluster);
        };
        let ttl = Duration::from_secs(3 * u64::from(config.heartbeat_secs.max(1)));
        let shared = shared::Shared::connect(url, node, ttl).await?;
        let cleared = shared.clear_own().await?;
        tracing::info!(node = %cluster.node, cleared, "joined the relay cluster");
        cluster.shared = Some(Arc::new(shared));
        Ok(cluster)
    }

    /// Redis, when clustered.
    pub fn shared(&self) -> Option<&Arc<shared::Shared>> {
        self.shared.as_ref()
    }

    /// This node's name.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// Whether the relay shares state with other nodes (a `redis_url` is configured).
    pub fn is_clustered(&self) -> bool {
        self.shared.is_some()
    }

    /// Records where this node accepts forwarded streams (the forwarding listener calls
    /// this once bound, before desktops are placed), as written in the device map.
    pub fn set_forward_addr(&self, addr: SocketAddr) {
        *self.forward_addr.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Where this node accepts forwarded streams, if it does.
    pub fn forward_addr(&self) -> Option<SocketAddr> {
        *self.forward_addr.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `placement` is on this node.
    pub fn is_local(&self, placement: &Placement) -> bool {
        placement.node == self.node
    }

    /// Where `device_id` is connected: `Ok(None)` when it is online nowhere (or only on
    /// a node taken for dead, [`liveness`]), `Err(ClusterUnavailable)` when it is not
    /// connected here and the shared state cannot be read. A device connected to this
    /// node is found without asking Redis.
    pub async fn locate(&self, device_id: &str) -> Result<Option<Placement>, ClusterUnavailable> {
        if let Some(generation) = self.registry.generation(device_id) {
            return Ok(Some(Placement {
                node: self.node.clone(),
                forward_addr: self.forward_addr().unwrap_or(NO_FORWARD),
                generation,
            }));
        }
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        match shared.placement(device_id).await {
            // An entry naming this node for a device not connected here is stale (its
            // removal is under way, or this node restarted): not online.
            Ok(Some(placement)) if placement.node == self.node => Ok(None),
            // On a node whose liveness lapsed (it died): gone with it, though its entry
            // lives until its TTL (`liveness`).
            Ok(Some(placement)) if shared.is_dead(&placement.node) => Ok(None),
            Ok(found) => Ok(found),
            Err(err) => {
                tracing::debug!(%err, device_id, "device map unavailable");
                Err(ClusterUnavailable)
            }
        }
    }

    /// Whether `device_id` is online anywhere in the cluster (for status snapshots); a
    /// device not connected here counts as offline while Redis is down.
    pub async fn is_online(&self, device_id: &str) -> bool {
        matches!(self.locate(device_id).await, Ok(Some(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked() {
        assert!(NodeName::new("relay-eu-1.example_2").is_ok());
        for bad in ["", "a b", "relay/1", "ü", &"x".repeat(65)] {
            assert_eq!(
                NodeName::new(bad),
                Err(BadNodeName(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_default_name_is_unique_per_data_dir_and_kept_across_restarts() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = NodeName::kept_in(a.path()).unwrap();
        assert_eq!(NodeName::kept_in(a.path()).unwrap(), first, "kept");
        assert_ne!(
            NodeName::kept_in(b.path()).unwrap(),
            first,
            "another node differs"
        );
        assert!(first.as_str().starts_with(&host_name()), "{first}");
        let mut config = RelayConfig {
            data_dir: a.path().to_owned(),
            ..RelayConfig::default()
        };
        assert_eq!(NodeName::resolve(&config).unwrap(), first);
        config.node_name = "old-style".into();
        assert_eq!(NodeName::resolve(&config).unwrap().as_str(), "old-style");
        config.cluster.node_name = Some("relay-2".into());
        assert_eq!(NodeName::resolve(&config).unwrap().as_str(), "relay-2");
        config.cluster.node_name = Some("no good".into());
        assert!(matches!(
            NodeName::resolve(&config),
            Err(NodeNameError::Bad(_))
        ));
    }

    #[tokio::test]
    async fn a_single_node_locates_its_own_devices_only() {
        let registry = Arc::new(Registry::default());
        let cluster = Cluster::single(NodeName::new("n1").unwrap(), registry.clone());
        assert_eq!(cluster.locate("d1").await, Ok(None));
        let g1 = registry.place("d1", "u1");
        let here = cluster.locate("d1").await.unwrap().expect("online here");
        assert!(cluster.is_local(&here));
        assert_eq!(here.generation, g1);
        assert_eq!(here.forward_addr, NO_FORWARD);
        cluster.set_forward_addr("127.0.0.1:7000".parse().unwrap());
        let g2 = registry.place("d1", "u1");
        assert!(g2 > g1, "a later connection has a higher generation");
        let here = cluster.locate("d1").await.unwrap().unwrap();
        assert_eq!((here.generation, here.forward_addr.port()), (g2, 7000));
    }
}
