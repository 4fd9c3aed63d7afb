//! What a running relay holds, by area: [`RelayState`] owns one struct per job
//! (accounts and tokens, connected devices and their status events, per-node limits,
//! traffic counters, the TLS identity and QUIC address, the marketplace) next to the
//! configuration and the store every area uses.
//!
//! This module only holds state; the rules that read it live with their handlers
//! ([`crate::authorize`], [`crate::browser`], [`crate::desktop`], [`crate::http`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::TokenKeys;
use crate::config::RelayConfig;
use crate::events::EventHub;
use crate::limits::{HashPool, KeyedSlots, LoginLimiter, StreamCounter};
use crate::proxy::TrustedProxies;
use crate::registry::Registry;
use crate::sessions::Sessions;
use crate::splice::SpliceObserver;
use crate::store::Store;

/// Everything the relay's connection and request handlers share.
pub struct RelayState {
    /// The configuration the relay started with.
    pub config: RelayConfig,
    /// Users, devices, plans, usage and the marketplace's rows.
    pub store: Store,
    /// Access tokens, sign-in limits and password hashing.
    pub accounts: Accounts,
    /// Devices connected here and browsers watching their status.
    pub devices: Devices,
    /// This node's name and, when clustered, the state shared with other nodes
    /// (where each device is connected).
    pub cluster: crate::cluster::Cluster,
    /// Browser sessions open here, and the users whose tokens they use.
    pub sessions: Sessions,
    /// Per-node limits on open things (streams, connections, event streams).
    pub limits: Limits,
    /// Each user's actions today, counted in memory and flushed to the store in batches.
    pub actions: crate::actions::ActionCounter,
    /// What flows through the relay: sessions, streams and bytes, for metrics and
    /// shutdown.
    pub traffic: Traffic,
    /// The QUIC address and the TLS certificate browsers and desktops pin.
    pub endpoint: EndpointInfo,
    /// Bundle storage, the platform signing key and upload concurrency.
    pub market: Market,
    /// Relay-to-relay forwarding (`[cluster] forward_listen`): the endpoint peers
    /// forward streams to, and the pool of connections to peers. `None` when this node
    /// does not forward.
    pub forwarding: Option<crate::cluster::forward::Forwarding>,
    /// Set when shutting down: new streams are refused.
    pub draining: AtomicBool,
}

impl RelayState {
    /// Whether the relay is shutting down (new streams are refused).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Accounts: who may sign in, and the tokens they get.
pub struct Accounts {
    /// Access-token keys.
    pub tokens: TokenKeys,
    /// Failed sign-ins, for rate limiting.
    pub logins: LoginLimiter,
    /// Where password hashing runs, bounded.
    pub hashing: HashPool,
    /// Proxies whose forwarding headers are believed for the client's address.
    pub proxies: TrustedProxies,
}

/// Devices connected to this node and the browsers watching their status.
#[derive(Default)]
pub struct Devices {
    /// Devices connected here, by id (shared with [`crate::cluster::Cluster`]).
    pub registry: Arc<Registry>,
    /// Browsers' status-event subscriptions.
    pub events: EventHub,
}

/// Limits kept in memory on this node.
#[derive(Default)]
pub struct Limits {
    /// Each user's open streams, for the plan's concurrency limit.
    pub streams_per_user: StreamCounter,
    /// Each client address's open QUIC connections (`max_connections_per_ip`).
    pub connections_per_ip: KeyedSlots<IpAddr>,
    /// Each user's open status-event streams (`max_event_streams_per_user`).
    pub event_streams: KeyedSlots<String>,
}

/// Counts of what flows through the relay, and who may watch the spliced bytes.
#[derive(Default)]
pub struct Traffic {
    /// Bytes copied between browsers and desktops.
    pub bytes_spliced: AtomicU64,
    /// Streams being spliced now.
    pub open_streams: AtomicU64,
    /// WebTransport sessions open now.
    pub browser_sessions: AtomicU64,
    observer: RwLock<Option<Arc<dyn SpliceObserver>>>,
}

impl Traffic {
    /// From now on, every chunk a newly opened splice moves is also shown to `observer`
    /// (tests use this to prove what the relay does, and does not, see). Streams already
    /// spliced keep the observer they started with.
    pub fn observe_splices(&self, observer: Arc<dyn SpliceObserver>) {
        *self.observer.write().unwrap_or_else(|e| e.into_inner()) = Some(observer);
    }

    /// Stops showing spliced chunks to an observer.
    pub fn stop_observing(&self) {
        *self.observer.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The observer new splices report to, if any.
    pub fn splice_observer(&self) -> Option<Arc<dyn SpliceObserver>> {
        self.observer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The relay's QUIC address and TLS certificate, as handed to browsers and desktops.
pub struct EndpointInfo {
    /// The bound UDP address.
    pub quic_addr: SocketAddr,
    /// Whether the certificate is a generated development one (browsers then pin its
    /// hash).
    pub self_signed: bool,
    cert_sha256: RwLock<[u8; 32]>,
}

impl EndpointInfo {
    /// The endpoint's address and its first certificate's hash.
    pub fn new(quic_addr: SocketAddr, self_signed: bool, cert_sha256: [u8; 32]) -> Self {
        EndpointInfo {
            quic_addr,
            self_signed,
            cert_sha256: RwLock::new(cert_sha256),
        }
    }

    /// SHA-256 of the current certificate.
    pub fn cert_sha256(&self) -> [u8; 32] {
        *self.cert_sha256.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a renewed certificate's hash.
    pub fn set_cert_sha256(&self, sha256: [u8; 32]) {
        *self.cert_sha256.write().unwrap_or_else(|e| e.into_inner()) = sha256;
    }
}

/// The mini-app market's state.
pub struct Market {
    /// Where published bundles are stored.
    pub bundles: crate::bundles::Bundles,
    /// The platform key that signs published bundles, and the keys trusted with it.
    pub signing: Arc<crate::signing::PlatformKeys>,
    /// Uploads being checked and signed (see [`crate::marketplace::PUBLISH_CONCURRENCY`]).
    pub publish_slots: tokio::sync::Semaphore,
}

/// Counts one open thing (a session, a spliced stream) for as long as it lives.
pub struct OpenGuard<'a>(&'a AtomicU64);

impl<'a> OpenGuard<'a> {
    /// Adds one to `counter` until the returned guard is dropped.
    pub fn open(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counter)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_guard_counts_until_dropped() {
        let counter = AtomicU64::new(0);
        let a = OpenGuard::open(&counter);
        let b = OpenGuard::open(&counter);
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
