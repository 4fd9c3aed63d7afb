//! The connection manager: dials the relay, runs the control stream (HELLO, WELCOME,
//! heartbeats: [`aisa_tunnel::proto::NodeControl`]), serves every stream the relay opens,
//! and reconnects with jittered exponential backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_tunnel::proto::{ControlEvent, NodeControl, Refusal};
use aisa_tunnel::{ErrorCode, Hello};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::tls::{client_config, fetch_pin};
use super::{CLOSE_REPLACED, CLOSE_REVOKED, CLOSE_SHUTDOWN, NodeContext};
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
}

/// Keeps the node connected until `stop` turns true or the relay refuses it for good.
pub async fn run(
    ctx: Arc<NodeContext>,
    target: RelayTarget,
    mut stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let attempt = tokio::select! {
            a = connect_once(&ctx, &mut endpoint, &target) => Some(a?),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(attempt) = attempt else {
            endpoint.close(0u32.into(), b"node stopping");
            // Let the close reach the relay, so it marks the device offline at once
            // rather than at its idle timeout.
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
            return Ok(());
        };
        ctx.online.send_replace(false);
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

async fn connect_once(
    ctx: &Arc<NodeContext>,
    endpoint: &mut quinn::Endpoint,
    target: &RelayTarget,
) -> Result<Attempt, NodeError> {
    let pin = match &target.pin_from {
        Some(url) => match fetch_pin(url).await {
            Ok(pin) => Some(pin),
            Err(e) => {
                return Ok(Attempt::Failed(format!(
                    "fetching the relay certificate: {e}"
                )));
            }
        },
        None => target.cert_sha256,
    };
    let addr = match tokio::net::lookup_host(&target.quic_addr)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            return Ok(Attempt::Failed(format!(
                "cannot resolve {}",
                target.quic_addr
            )));
        }
    };
    let config = client_config(pin);
    let connecting = match endpoint.connect_with(config, addr, &target.server_name) {
        Ok(c) => c,
        Err(e) => return Ok(Attempt::Failed(e.to_string())),
    };
    let conn = match connecting.await {
        Ok(c) => c,
        Err(e) => return Ok(Attempt::Failed(e.to_string())),
    };
    let (send, recv) = match conn.open_bi().await {
        Ok(pair) => pair,
        Err(e) => return Ok(Attempt::Failed(e.to_string())),
    };
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
    let heartbeat = loop {
        match channel.step().await {
            Ok(events) => {
                if let Some((version, heartbeat)) = events.into_iter().find_map(|e| match e {
                    ControlEvent::Welcome {
                        version, heartbeat, ..
                    } => Some((version, heartbeat)),
                    _ => None,
                }) {
                    info!(device_id = %ctx.device_id, %version, relay = %addr, "connected to the relay");
                    break heartbeat;
                }
            }
            Err(refusal) if refusal.is_final() => {
                let (code, message) = match refusal {
                    Refusal::Remote { code, message } => (code, message),
                    other => (other.code().to_string(), other.to_string()),
                };
                return Err(NodeError::Refused { code, message });
            }
            Err(refusal) => return Ok(Attempt::Failed(refusal.to_string())),
        }
    };
    debug!(?heartbeat, "heartbeat interval");
    ctx.online.send_replace(true);
    let connected_at = Instant::now();
    let mut streams = JoinSet::new();
    let reason = tokio::select! {
        reason = channel.heartbeats(&ctx.heartbeat_rtt) => reason,
        err = accept_streams(ctx, &conn, &mut streams) => err.to_string(),
    };
    // Whichever side noticed first (the control stream or the stream acceptor), a close
    // by the relay says what to do next.
    if let Some(quinn::ConnectionError::ApplicationClosed(close)) = conn.close_reason() {
        if close.error_code == CLOSE_SHUTDOWN.into() {
            return Ok(Attempt::RelayShutdown);
        }
        // A node only ever has one connection: one replaced under it was replaced by
        // another process holding the same token.
        if close.error_code == CLOSE_REPLACED.into() {
            return Err(NodeError::Replaced);
        }
        if close.error_code == CLOSE_REVOKED.into() {
            return Err(NodeError::Refused {
                code: ErrorCode::Unauthenticated.to_string(),
                message: "this device was revoked; run `desktop-node login` again".into(),
            });
        }
    }
    conn.close(0u32.into(), reason.as_bytes());
    Ok(Attempt::Lost {
        connected_for: connected_at.elapsed(),
        reason,
    })
}

/// Serves relay-opened streams until the connection fails; returns why.
async fn accept_streams(
    ctx: &Arc<NodeContext>,
    conn: &quinn::Connection,
    streams: &mut JoinSet<()>,
) -> quinn::ConnectionError {
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(crate::action::serve_stream(ctx.clone(), send, recv));
                }
                Err(err) => return err,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// The node's control stream: the [`NodeControl`] machine and the QUIC stream it runs on.
struct ControlChannel {
    machine: NodeControl,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
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

    /// Runs the heartbeats, publishing each round trip in `rtt`; returns why the
    /// connection is considered dead.
    async fn heartbeats(&mut self, rtt: &watch::Sender<Option<Duration>>) -> String {
        loop {
            match self.step().await {
                Ok(events) => {
                    for event in events {
                        if let ControlEvent::RoundTrip(round_trip) = event {
                            rtt.send_replace(Some(round_trip));
                        }
                    }
                }
                Err(refusal) => return refusal.to_string(),
            }
        }
    }
}
