//! The connection manager: reaches the relay over QUIC or, where UDP is blocked, over
//! TCP (racing them, `super::path`), runs the control stream (HELLO, WELCOME,
//! heartbeats: [`aisa_tunnel::proto::NodeControl`]), serves every stream the relay
//! opens, moves back to QUIC in the background when it works again, and reconnects with
//! jittered exponential backoff.
//!
//! A move keeps running streams: the new link gets its WELCOME first (the relay then
//! sends new streams there), the old one keeps its heartbeats and streams until the last
//! of them ends, and then the node closes it (code 0, "moved"). The relay sees the same
//! identity key on both and treats it as a move, not a second node (relay-edge
//! `desktop.rs`, `CLOSE_MOVED`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_tunnel::proto::{ControlEvent, NodeControl, Refusal};
use aisa_tunnel::{ErrorCode, Hello};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::link::{LinkClosed, NodeLink, RecvStream, SendStream};
use super::path::{Healing, PathConfig, PathMemory, Race, RacePlan, RaceStep, Transport};
use super::tls::{client_config, fetch_pin};
use super::{CLOSE_MOVED, CLOSE_REPLACED, CLOSE_REVOKED, CLOSE_SHUTDOWN, NodeContext};
use crate::backoff::Backoff;

/// Where and how to reach the relay.
#[derive(Debug, Clone)]
pub struct RelayTarget {
    /// `host:port` of the relay's QUIC port.
    pub quic_addr: String,
    /// TLS server name.
    pub server_name: String,
    /// Pinned certificate hash; `None` verifies with web PKI.
    pub cert_sha256: Option<[u8; 32]>,
    /// If set, fetch the pin from `{relay_url}/api/session` before each connection.
    pub pin_from: Option<String>,
    /// The relay's HTTP(S) URL, for the TCP path (`{tcp_url}/tunnel/desktop`); `None`:
    /// QUIC only.
    pub tcp_url: Option<String>,
    /// Racing, healing and remembering.
    pub path: PathConfig,
}

/// Why the node stopped trying to connect.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The relay refused this device for good (revoked token, incompatible version).
    #[error("the relay refused this device: {code}: {message}")]
    Refused {
        /// The relay's error code.
        code: String,
        /// The relay's explanation.
        message: String,
    },
    /// Another desktop node connected to the relay with this device's token and took
    /// its place. This one stops rather than take it back (the two would replace each
    /// other forever).
    #[error(
        "another desktop-node connected with this device's token and replaced this one; \
         each machine needs its own device: run `desktop-node login` on it"
    )]
    Replaced,
    /// The relay speaks a protocol this node does not work with (`crate::compat`); the
    /// message says who has to update.
    #[error("{0}")]
    Incompatible(String),
    /// The local QUIC endpoint could not be created.
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// How a connection attempt ended, when it did not end the node.
enum Attempt {
    /// Never connected.
    Failed(String),
    /// Was connected for a while, then lost.
    Lost {
        connected_for: Duration,
        reason: String,
    },
    /// The relay is restarting: reconnect at once.
    RelayShutdown,
    /// The node was asked to stop while connected, and drained its running actions.
    Stopped,
}

/// How long a stopping node lets its running actions finish before it cuts them off.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Resolves when `stop` turns true while the node is not connected (while it is,
/// `connect_once` drains the running actions and returns [`Attempt::Stopped`] itself).
async fn stop_unless_online(mut stop: watch::Receiver<bool>, online: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
    let connected = *online.borrow();
    if connected {
        std::future::pending::<()>().await;
    }
}

/// A dial or a HELLO that did not give a welcomed link.
enum HelloFailed {
    /// The relay refused this device for good.
    Final(NodeError),
    /// Try again later.
    Retry(String),
}

/// The longest a single dial (QUIC handshake; TCP, TLS and the WebSocket upgrade) may
/// take before it counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the node connected until `stop` turns true or the relay refuses it for good.
pub async fn run(
    ctx: Arc<NodeContext>,
    target: RelayTarget,
    mut stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Without a UDP socket (a sandbox or an emulator that refuses one, as Wine 8 does) the
    // node can still reach the relay over TCP, when it has a TCP way there.
    let endpoint = match quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))) {
        Ok(endpoint) => Some(endpoint),
        Err(err) if target.tcp_url.is_some() => {
            tracing::warn!(%err, "cannot open a UDP socket: QUIC is off, the node uses TCP");
            None
        }
        Err(err) => return Err(err.into()),
    };
    let mut manager = Manager {
        memory: PathMemory::load(&ctx.home),
        healing: Healing::new(target.path),
        ctx,
        target,
        endpoint: endpoint.clone(),
        stop: stop.clone(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        // Stopping while connected is connect_once's to handle (it lets the running
        // actions finish first); stopping before that drops the attempt.
        let online = manager.ctx.online.subscribe();
        let attempt = tokio::select! {
            a = manager.connect_once() => Some(a?),
            _ = stop_unless_online(stop.clone(), online) => None,
        };
        manager.healing.disconnected();
        manager.ctx.transport.send_replace(None);
        let Some(attempt) = attempt.filter(|a| !matches!(a, Attempt::Stopped)) else {
            // Close code 3: this node is leaving (its links are closed with it already
            // when it drained).
            if let Some(endpoint) = &endpoint {
                endpoint.close(CLOSE_SHUTDOWN.into(), b"node shutting down");
                // Let the close reach the relay, so it marks the device offline at once
                // rather than at its idle timeout.
                let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
            }
            return Ok(());
        };
        manager.ctx.online.send_replace(false);
        let delay = match attempt {
            Attempt::RelayShutdown => {
                info!("relay is shutting down; reconnecting");
                backoff.reset();
                Duration::from_millis(rand::random_range(0..250))
            }
            Attempt::Lost {
                connected_for,
                reason,
            } => {
                warn!(%reason, "connection to the relay lost");
                if connected_for > Duration::from_secs(30) {
                    backoff.reset();
                }
                backoff.next_delay(rand::random())
            }
            Attempt::Stopped => return Ok(()),
            Attempt::Failed(reason) => {
                let delay = backoff.next_delay(rand::random());
                warn!(%reason, retry_in = ?delay, "cannot connect to the relay");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// The connection manager's state across attempts.
struct Manager {
    ctx: Arc<NodeContext>,
    target: RelayTarget,
    /// `None` when no UDP socket could be opened (TCP only).
    endpoint: Option<quinn::Endpoint>,
    memory: PathMemory,
    healing: Healing,
    /// Turns true when the node is asked to stop (SIGTERM, Ctrl-C, …).
    stop: watch::Receiver<bool>,
}

/// One link's session ended: why, and how the relay closed it (read before the node
/// closed it itself).
struct SessionEnd {
    reason: String,
    closed: Option<LinkClosed>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Manager {
    async fn connect_once(&mut self) -> Result<Attempt, NodeError> {
        let pin = match &self.target.pin_from {
            Some(url) => match fetch_pin(url).await {
                Ok(pin) => Some(pin),
                Err(e) => {
                    return Ok(Attempt::Failed(format!(
                        "fetching the relay certificate: {e}"
                    )));
                }
            },
            None => self.target.cert_sha256,
        };
        let addr = match tokio::net::lookup_host(&self.target.quic_addr)
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(addr)) => addr,
            Ok(None) | Err(_) => {
                return Ok(Attempt::Failed(format!(
                    "cannot resolve {}",
                    self.target.quic_addr
                )));
            }
        };
        let network = super::path::network_key(addr);
        let plan = self.memory.plan(
            &network,
            unix_now(),
            &self.target.path,
            self.target.tcp_url.is_some(),
        );
        let dialer = Dialer {
            endpoint: self.endpoint.clone(),
            addr,
            server_name: self.target.server_name.clone(),
            pin,
            tcp_url: self.target.tcp_url.clone(),
        };
        let started = Instant::now();
        let link = match dialer.race(plan).await {
            Ok(link) => link,
            Err(reason) => return Ok(Attempt::Failed(reason)),
        };
        let channel = match hello(&self.ctx, &link).await {
            Ok(channel) => channel,
            Err(HelloFailed::Final(err)) => return Err(err),
            Err(HelloFailed::Retry(reason)) => return Ok(Attempt::Failed(reason)),
        };
        let transport = link.transport();
        self.remember(&network, transport);
        let after_ms = started.elapsed().as_millis() as u64;
        info!(device_id = %self.ctx.device_id, relay = %addr, %transport, after_ms, "connected to the relay");
        self.ctx.online.send_replace(true);
        self.ctx.transport.send_replace(Some(transport));
        self.healing
            .connected(transport, Instant::now(), rand::random());
        let connected_at = Instant::now();

        let mut sessions: JoinSet<(u64, SessionEnd)> = JoinSet::new();
        let mut current = 0u64;
        let (mut retire, retired) = watch::channel(false);
        sessions.spawn(run_session(
            self.ctx.clone(),
            link,
            channel,
            retired,
            self.stop.clone(),
            current,
        ));
        let mut probe: Option<tokio::task::JoinHandle<Result<(NodeLink, ControlChannel), String>>> =
            None;
        loop {
            let probe_at = self.healing.deadline();
            let mut stop = self.stop.clone();
            tokio::select! {
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    // Stopping: every session stops accepting streams, lets its running
                    // ones finish and closes its link with CLOSE_SHUTDOWN; at most
                    // DRAIN_LIMIT, then what still runs is cut off.
                    if let Some(probe) = probe.take() {
                        probe.abort();
                    }
                    info!("stopping: letting running actions finish");
                    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
                        while sessions.join_next().await.is_some() {}
                    })
                    .await
                    .is_ok();
                    if !drained {
                        warn!("stopping: actions still running after {} s were cut off", DRAIN_LIMIT.as_secs());
                        sessions.abort_all();
                    }
                    return Ok(Attempt::Stopped);
                }
                Some(joined) = sessions.join_next() => {
                    let (id, end) = match joined {
                        Ok(ended) => ended,
                        Err(err) => (current, SessionEnd { reason: err.to_string(), closed: None }),
                    };
                    if id != current {
                        debug!(reason = %end.reason, "the link the node moved away from is closed");
                        continue;
                    }
                    if let Some(probe) = probe.take() {
                        probe.abort();
                    }
                    return self.lost(end, connected_at);
                }
                _ = tokio::time::sleep_until(probe_at.map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std)), if probe.is_none() && probe_at.is_some() => {
                    if self.healing.start_probe(Instant::now()) {
                        debug!("trying QUIC again");
                        probe = Some(tokio::spawn(dialer.clone().probe_quic(self.ctx.clone(), self.target.path.probe_timeout)));
                    }
                }
                result = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                    probe = None;
                    match result.unwrap_or_else(|e| Err(e.to_string())) {
                        Ok((link, channel)) => {
                            info!(device_id = %self.ctx.device_id, "moved back to QUIC; streams running on TCP finish there");
                            retire.send_replace(true);
                            let (next, retired) = watch::channel(false);
                            retire = next;
                            current += 1;
                            sessions.spawn(run_session(self.ctx.clone(), link, channel, retired, self.stop.clone(), current));
                            self.remember(&network, Transport::Quic);
                            self.healing.connected(Transport::Quic, Instant::now(), rand::random());
                            self.ctx.transport.send_replace(Some(Transport::Quic));
                        }
                        Err(reason) => {
                            debug!(%reason, "QUIC is still unreachable");
                            self.healing.probe_failed(Instant::now(), rand::random());
                        }
                    }
                }
            }
        }
    }

    fn remember(&mut self, network: &str, transport: Transport) {
        if let Err(err) = self.memory.record(network, transport, unix_now()) {
            debug!(%err, "could not write transport.json");
        }
    }

    /// The current link ended: what the relay's close code (if any) says to do.
    fn lost(&self, end: SessionEnd, connected_at: Instant) -> Result<Attempt, NodeError> {
        // Whichever side noticed first (the control stream or the stream acceptor), a
        // close by the relay says what to do next.
        if let Some(code) = end.closed.as_ref().and_then(|c| c.code) {
            if code == CLOSE_SHUTDOWN {
                return Ok(Attempt::RelayShutdown);
            }
            // A node has one current link: one replaced under it was replaced by another
            // process holding the same token (CLOSE_MOVED: one with a copy of this
            // node's whole home, identity key included).
            if code == CLOSE_REPLACED || code == CLOSE_MOVED {
                return Err(NodeError::Replaced);
            }
            if code == CLOSE_REVOKED {
                return Err(NodeError::Refused {
                    code: ErrorCode::Unauthenticated.to_string(),
                    message: "this device was revoked; run `desktop-node login` again".into(),
                });
            }
        }
        Ok(Attempt::Lost {
            connected_for: connected_at.elapsed(),
            reason: end.reason,
        })
    }
}

/// What a dial needs; cloned into each dial task.
#[derive(Clone)]
struct Dialer {
    endpoint: Option<quinn::Endpoint>,
    addr: SocketAddr,
    server_name: String,
    pin: Option<[u8; 32]>,
    tcp_url: Option<String>,
}

impl Dialer {
    /// Races QUIC against TCP as `plan` says (`super::path::Race`); the first link to
    /// connect, or every failure.
    async fn race(&self, plan: RacePlan) -> Result<NodeLink, String> {
        let mut race = Race::new(Instant::now(), plan);
        let mut dials: JoinSet<(Transport, Result<NodeLink, String>)> = JoinSet::new();
        loop {
            let report = match race.poll(Instant::now()) {
                RaceStep::Dial(transport) => {
                    let dialer = self.clone();
                    dials.spawn(async move { (transport, dialer.dial(transport).await) });
                    continue;
                }
                RaceStep::Won(_) => unreachable!("returned as soon as a dial connects"),
                RaceStep::Lost(reason) => return Err(reason),
                RaceStep::Wait(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => continue,
                    Some(report) = dials.join_next() => report,
                },
                RaceStep::WaitForDials => match dials.join_next().await {
                    Some(report) => report,
                    None => return Err("no dial is running".into()),
                },
            };
            match report {
                Ok((transport, Ok(link))) => {
                    if race.connected(transport) {
                        // The other dial, if any, is dropped with `dials`.
                        return Ok(link);
                    }
                }
                Ok((transport, Err(reason))) => {
                    debug!(%transport, %reason, "dial failed");
                    race.failed(transport, reason);
                }
                Err(err) => return Err(format!("a dial task failed: {err}")),
            }
        }
    }

    /// One dial, within [`DIAL_TIMEOUT`].
    async fn dial(self, transport: Transport) -> Result<NodeLink, String> {
        let dial = async {
            match transport {
                Transport::Quic => self.dial_quic().await,
                Transport::Tcp => self.dial_tcp().await,
            }
        };
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", DIAL_TIMEOUT.as_secs())),
        }
    }

    async fn dial_quic(&self) -> Result<NodeLink, String> {
        let Some(endpoint) = &self.endpoint else {
            return Err("no UDP socket on this machine".into());
        };
        let connecting = endpoint
            .connect_with(client_config(self.pin), self.addr, &self.server_name)
            .map_err(|e| e.to_string())?;
        let conn = connecting.await.map_err(|e| e.to_string())?;
        Ok(NodeLink::Quic(conn))
    }

    async fn dial_tcp(&self) -> Result<NodeLink, String> {
        let Some(url) = &self.tcp_url else {
            return Err("no TCP way to the relay is configured".into());
        };
        super::tcp::dial(url).await
    }

    /// Dials QUIC and gets a WELCOME on it, within `timeout`: the background probe while
    /// the node is on TCP.
    async fn probe_quic(
        self,
        ctx: Arc<NodeContext>,
        timeout: Duration,
    ) -> Result<(NodeLink, ControlChannel), String> {
        let probe = async {
            let link = self.dial_quic().await?;
            match hello(&ctx, &link).await {
                Ok(channel) => Ok((link, channel)),
                Err(HelloFailed::Retry(reason)) => Err(reason),
                Err(HelloFailed::Final(err)) => Err(err.to_string()),
            }
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(result) => result,
            Err(_) => Err(format!("no QUIC answer within {} ms", timeout.as_millis())),
        }
    }
}

/// Opens the control stream on `link`, sends HELLO and waits for WELCOME.
async fn hello(ctx: &NodeContext, link: &NodeLink) -> Result<ControlChannel, HelloFailed> {
    let (send, recv) = link
        .open_bi()
        .await
        .map_err(|e| HelloFailed::Retry(e.to_string()))?;
    let hello = Hello {
        device_token: ctx.device_token.clone(),
        node_version: ctx.node_version.clone(),
        identity_key: ctx.identity_public.to_vec(),
    };
    let mut channel = ControlChannel {
        machine: NodeControl::new(Instant::now(), &hello),
        send,
        recv,
        buf: vec![0; 16 << 10],
    };
    loop {
        match channel.step().await {
            Ok(events) => {
                if let Some((version, heartbeat)) = events.into_iter().find_map(|e| match e {
                    ControlEvent::Welcome {
                        version, heartbeat, ..
                    } => Some((version, heartbeat)),
                    _ => None,
                }) {
                    debug!(%version, ?heartbeat, transport = %link.transport(), "welcomed");
                    // A relay outside this node's protocol range: stop, saying who updates.
                    if let Err(message) = crate::compat::check_relay(version) {
                        link.close(0, b"incompatible relay");
                        return Err(HelloFailed::Final(NodeError::Incompatible(message)));
                    }
                    return Ok(channel);
                }
            }
            Err(refusal) if refusal.is_final() => {
                let (code, message) = match refusal {
                    Refusal::Remote { code, message } => {
                        let message = crate::compat::explain_refusal(&code, &message);
                        (code, message)
                    }
                    other => (other.code().to_string(), other.to_string()),
                };
                return Err(HelloFailed::Final(NodeError::Refused { code, message }));
            }
            Err(refusal) => {
                // The relay refuses a node that another node replaced moments ago (a
                // HELLO it had in flight): this node has been replaced.
                if link.close_reason().and_then(|c| c.code) == Some(CLOSE_REPLACED) {
                    return Err(HelloFailed::Final(NodeError::Replaced));
                }
                return Err(HelloFailed::Retry(refusal.to_string()));
            }
        }
    }
}

/// Serves one welcomed link: heartbeats on its control stream and every stream the relay
/// opens, until the link fails, or until it is `retired` (the node moved to a newer
/// link) and its last stream has ended; then closes it.
async fn run_session(
    ctx: Arc<NodeContext>,
    link: NodeLink,
    mut channel: ControlChannel,
    mut retired: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    id: u64,
) -> (u64, SessionEnd) {
    let mut streams = JoinSet::new();
    let quiet = retired.clone();
    let reason = tokio::select! {
        reason = channel.heartbeats(&ctx.heartbeat_rtt, &quiet) => reason,
        reason = accept_streams(&ctx, &link, &mut streams, &mut retired, &mut stop) => reason,
    };
    let closed = link.close_reason();
    let moved = *retired.borrow();
    let stopping = *stop.borrow();
    if stopping {
        // The last frames of the last actions (their STREAM_END, FIN) may still be in
        // flight, and closing discards what the relay has not acknowledged: linger for
        // a few round trips first. Then the relay marks the device offline at once,
        // instead of at its heartbeat watch or QUIC's idle timeout.
        let rtt = (*ctx.heartbeat_rtt.borrow()).unwrap_or(Duration::from_millis(100));
        tokio::time::sleep((rtt * 3).clamp(Duration::from_millis(50), Duration::from_secs(1)))
            .await;
        link.close(CLOSE_SHUTDOWN, b"node shutting down");
    } else {
        link.close(0, if moved { b"moved" } else { reason.as_bytes() });
    }
    (id, SessionEnd { reason, closed })
}

/// Serves relay-opened streams until the link fails (returns why), or until it is
/// retired and no stream is left, or the node is stopping (it then accepts no new
/// stream) and no stream is left.
async fn accept_streams(
    ctx: &Arc<NodeContext>,
    link: &NodeLink,
    streams: &mut JoinSet<()>,
    retired: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> String {
    loop {
        let stopping = *stop.borrow();
        if stopping && streams.is_empty() {
            return "node shutting down".into();
        }
        tokio::select! {
            accepted = link.accept_bi(), if !stopping => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(crate::action::serve_stream(ctx.clone(), send, recv));
                }
                Err(err) => return err.to_string(),
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                if *retired.borrow() && streams.is_empty() {
                    return "moved to a newer link; its last stream ended".into();
                }
            }
            Ok(()) = retired.changed(), if !*retired.borrow() => {
                if streams.is_empty() {
                    return "moved to a newer link".into();
                }
            }
            Ok(()) = stop.changed(), if !stopping => {}
        }
    }
}

/// The node's control stream: the [`NodeControl`] machine and the stream it runs on.
struct ControlChannel {
    machine: NodeControl,
    send: SendStream,
    recv: RecvStream,
    buf: Vec<u8>,
}

impl ControlChannel {
    /// Sends what the machine queued, then waits for bytes or the machine's deadline,
    /// whichever comes first, and returns what the machine made of it.
    async fn step(&mut self) -> Result<Vec<ControlEvent>, Refusal> {
        if let Some(bytes) = self.machine.poll_transmit() {
            self.send
                .write_all(&bytes)
                .await
                .map_err(|e| Refusal::Transport(e.to_string()))?;
        }
        let deadline = tokio::time::Instant::from_std(self.machine.deadline());
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                self.machine.handle_timeout(Instant::now())?;
                Ok(Vec::new())
            }
            read = self.recv.read(&mut self.buf) => match read {
                Ok(Some(n)) => self.machine.receive(&self.buf[..n], Instant::now()),
                Ok(None) => Err(self.machine.finish()),
                Err(e) => Err(Refusal::Transport(e.to_string())),
            },
        }
    }

    /// Runs the heartbeats, publishing each round trip in `rtt` (while the link is the
    /// current one: not `retired`); returns why the connection is considered dead.
    async fn heartbeats(
        &mut self,
        rtt: &watch::Sender<Option<Duration>>,
        retired: &watch::Receiver<bool>,
    ) -> String {
        loop {
            match self.step().await {
                Ok(events) => {
                    for event in events {
                        if let ControlEvent::RoundTrip(round_trip) = event
                            && !*retired.borrow()
                        {
                            rtt.send_replace(Some(round_trip));
                        }
                    }
                }
                Err(refusal) => return refusal.to_string(),
            }
        }
    }
}
