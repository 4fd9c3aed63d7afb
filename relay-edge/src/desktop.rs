//! A desktop node's connection: HELLO, authentication, registration, heartbeats.
//!
//! A driver over tunnel's `RelayControl` machine, which owns the control stream's rules
//! (the HELLO's cap, time limit and checks; PING → PONG; anything else → `unsupported`).
//! What is here: the token lookup, the registry, the device's online state in the store
//! and in the status events, the close codes, and a node moving from one link to another.
//!
//! The same code serves a desktop over raw QUIC and over the mux on a WebSocket (the TCP
//! fallback): both are a [`DesktopLink`], so the rules cannot drift apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aisa_tunnel::proto::{ControlEvent, HEADER_TIMEOUT, Refusal, RelayControl};
use aisa_tunnel::{ErrorCode, Hello};
use tokio::io::AsyncWriteExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::hash_device_token;
use crate::link::{DesktopLink, LinkRecv, LinkSend};
use crate::registry::OnlineDevice;
use crate::state::RelayState;

/// Close code (QUIC application close, or mux GOAWAY): refused at HELLO.
pub const CLOSE_REFUSED: u32 = 1;
/// Close code: another node with the same device token took over.
pub const CLOSE_REPLACED: u32 = 2;
/// Close code: the relay is shutting down; reconnect at once.
pub const CLOSE_SHUTDOWN: u32 = 3;
/// Close code: the device was revoked; do not reconnect.
pub const CLOSE_REVOKED: u32 = 4;
/// Close code: the desktop sent no heartbeat for three intervals; it is offline
/// (a node that is alive reconnects).
pub const CLOSE_SILENT: u32 = 5;
/// Close code: the node connected again with the same identity key (it moved: back to
/// QUIC from TCP, or to another network) and this older link was still open
/// [`MOVE_GRACE`] later. The node closes an old link itself once its streams are done,
/// so only a node that did not move gets this: another process with a copy of the whole
/// node home, which stops as if replaced.
pub const CLOSE_MOVED: u32 = 6;

/// How long a link a node moved away from keeps its running streams before the relay
/// closes it with [`CLOSE_MOVED`].
pub const MOVE_GRACE: Duration = Duration::from_secs(600);

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Why a desktop's HELLO was refused. Each variant has one wire code
/// ([`HelloRefused::code`]), one metric label ([`HelloRefused::reason`]) and one message
/// (`Display`), sent as an ERROR and as the close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloRefused {
    /// No control stream within [`HEADER_TIMEOUT`] of the connection.
    #[error("no control stream within 10 s")]
    NoControlStream,
    /// The HELLO broke a stream rule of the protocol (late, missing, too large, not a
    /// valid HELLO, an unsupported version): tunnel's [`RelayControl`] says which.
    #[error(transparent)]
    Protocol(Refusal),
    /// No device has this token (never enrolled, or revoked).
    #[error("unknown or revoked device token")]
    UnknownToken,
    /// The token lookup failed (the detail is logged, not sent).
    #[error("the relay could not check the token")]
    Internal,
    /// The node cannot work with this relay: another protocol major, or a node older
    /// than `[compat] min_node_version` (`crate::compat`). The message says who has to
    /// update what.
    #[error("{0}")]
    Incompatible(String),
}

impl HelloRefused {
    /// A refusal by tunnel's control machine; another protocol major is worded for
    /// people ([`crate::compat::protocol_refusal`]).
    pub fn from_protocol(refusal: Refusal) -> HelloRefused {
        match refusal {
            Refusal::UnsupportedVersion(aisa_tunnel::DecodeError::UnsupportedVersion {
                major,
                minor,
            }) => {
                HelloRefused::Incompatible(crate::compat::protocol_refusal(aisa_tunnel::Version {
                    major,
                    minor,
                }))
            }
            other => HelloRefused::Protocol(other),
        }
    }

    /// The ERROR code the desktop gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            HelloRefused::NoControlStream => ErrorCode::MalformedFrame,
            HelloRefused::Protocol(refusal) => refusal.code(),
            HelloRefused::UnknownToken => ErrorCode::Unauthenticated,
            HelloRefused::Internal => ErrorCode::Internal,
            HelloRefused::Incompatible(_) => ErrorCode::UnsupportedVersion,
        }
    }

    /// The `aisa_refusals_total{reason}` label: `invalid_hello` for every broken HELLO
    /// (the protocol's own label is in the log line), `unsupported_version`,
    /// `peer_gone`, `desktop_unauthenticated` or `internal`.
    pub fn reason(&self) -> &'static str {
        match self {
            HelloRefused::Protocol(refusal) => match refusal.code() {
                ErrorCode::UnsupportedVersion => "unsupported_version",
                ErrorCode::PeerGone => "peer_gone",
                _ => "invalid_hello",
            },
            HelloRefused::NoControlStream => "invalid_hello",
            HelloRefused::UnknownToken => "desktop_unauthenticated",
            HelloRefused::Internal => "internal",
            HelloRefused::Incompatible(_) => "unsupported_version",
        }
    }
}

/// Serves one desktop connection, QUIC or mux, until it ends.
pub async fn serve(state: Arc<RelayState>, conn: DesktopLink) {
    let connection_id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let transport = conn.transport().as_str();
    let span = info_span!("desktop", connection_id, transport, remote = %conn.remote_address(), device_id = tracing::field::Empty);
    async move {
        let Ok(Ok((mut send, mut recv))) =
            tokio::time::timeout(HEADER_TIMEOUT, conn.accept_bi()).await
        else {
            let refused = HelloRefused::NoControlStream;
            info!(reason = refused.reason(), "desktop refused: {refused}");
            crate::metrics::refused(refused.reason());
            conn.close(CLOSE_REFUSED, b"no control stream");
            return;
        };
        let mut control = RelayControl::new(Instant::now());
        let hello = match read_hello(&mut control, &mut recv).await {
            Ok(h) => h,
            Err(refusal) => {
                refuse(
                    &conn,
                    &mut control,
                    &mut send,
                    &HelloRefused::from_protocol(refusal),
                )
                .await;
                return;
            }
        };
        let device = match state
            .store
            .device_by_token_hash(&hash_device_token(&hello.device_token))
            .await
        {
            Ok(Some(d)) => d,
            Ok(None) => {
                refuse(&conn, &mut control, &mut send, &HelloRefused::UnknownToken).await;
                return;
            }
            Err(err) => {
                warn!(%err, "device lookup failed");
                refuse(&conn, &mut control, &mut send, &HelloRefused::Internal).await;
                return;
            }
        };
        tracing::Span::current().record("device_id", device.id.as_str());
        // A node older than the operator allows is told to update (docs/compatibility.md).
        let minimum = state.config.compat.minimum().unwrap_or_else(|err| {
            warn!(%err, "using the built-in minimum node version");
            crate::compat::default_minimum()
        });
        if let Err(message) = crate::compat::check_node_version(&hello.node_version, &minimum) {
            let refused = HelloRefused::Incompatible(message);
            refuse(&conn, &mut control, &mut send, &refused).await;
            return;
        }
        // RelayControl checked that the key is exactly 32 bytes.
        let Ok(node_key) = <[u8; 32]>::try_from(hello.identity_key.as_slice()) else {
            refuse(&conn, &mut control, &mut send, &HelloRefused::Internal).await;
            return;
        };
        let online = OnlineDevice {
            user_id: device.user_id.clone(),
            connection: conn.clone().with_node_key(node_key),
            connection_id,
        };
        match state
            .devices
            .registry
            .admit(&device.id, online, Instant::now())
        {
            Ok(Some(old)) => take_over(old.connection, node_key),
            Ok(None) => {}
            Err(refused) => {
                // Its node was just replaced by another one: a HELLO it had in flight
                // must not take the device back (the node stops on CLOSE_REPLACED).
                info!(reason = "replaced", "desktop refused: {refused}");
                crate::metrics::refused("replaced");
                conn.close(CLOSE_REPLACED, refused.to_string().as_bytes());
                return;
            }
        }
        let key_hex = hex::encode(&hello.identity_key);
        if let Err(err) = state
            .store
            .set_online(
                &device.id,
                &hello.node_version,
                &key_hex,
                &state.config.node_name,
                connection_id,
            )
            .await
        {
            warn!(%err, "could not record device online");
        }
        // Streams to this device then find its record in memory (`crate::facts`).
        if let Err(err) = state.store.cached_device(&device.id).await {
            warn!(%err, "could not cache the device");
        }
        info!(node_version = %hello.node_version, "desktop online");
        metrics::counter!("aisa_relay_desktop_connections_total", "result" => "ok", "transport" => transport).increment(1);
        state.devices.events.publish(
            &device.user_id,
            &crate::events::device_status(&device.id, true, Some(&hello.node_version)),
        );
        match control.welcome(Instant::now(), &device.id, state.config.heartbeat_secs) {
            Ok(_) => {
                if let Some(silent) =
                    control_loop(&state, &device.id, &mut control, &mut send, &mut recv).await
                {
                    info!(%silent, "desktop stopped sending heartbeats");
                    crate::metrics::refused(silent.reason());
                    conn.close(CLOSE_SILENT, silent.to_string().as_bytes());
                }
            }
            Err(refusal) => debug!(%refusal, "control stream broke the framing"),
        }
        if state.devices.registry.remove(&device.id, connection_id) {
            if let Err(err) = state.store.set_offline(&device.id).await {
                warn!(%err, "could not record device offline");
            }
            info!("desktop offline");
            state.devices.events.publish(
                &device.user_id,
                &crate::events::device_status(&device.id, false, Some(&hello.node_version)),
            );
        }
    }
    .instrument(span)
    .await
}

/// The mux keep-alive on the TCP path: PINGs keep proxies and NAT mappings from closing
/// an idle WebSocket; the control stream's heartbeats decide when a desktop is gone.
const TCP_KEEPALIVE: aisa_tunnel::mux::driver::KeepAlive = aisa_tunnel::mux::driver::KeepAlive {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(30),
};

/// `GET /tunnel/desktop`: a desktop's TCP path (where its UDP is blocked). The WebSocket
/// carries tunnel's mux, one frame per binary message; on it the desktop opens its
/// control stream and the relay opens browser streams, exactly as on QUIC ([`serve`]).
/// Counted against `max_connections_per_ip` like a QUIC connection.
pub async fn websocket(
    axum::extract::State(state): axum::extract::State<Arc<RelayState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ip = state.accounts.proxies.client_ip(peer.ip(), &headers);
    if state.is_draining() {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the relay is shutting down",
        )
            .into_response();
    }
    let Some(slot) = state
        .limits
        .connections_per_ip
        .try_open(&ip, state.config.max_connections_per_ip as i64)
    else {
        info!(%ip, max = state.config.max_connections_per_ip, "desktop WebSocket refused: too many connections from this address");
        crate::metrics::refused("connections_per_ip");
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        )
            .into_response();
    };
    let remote = std::net::SocketAddr::new(ip, peer.port());
    upgrade.on_upgrade(move |socket| async move {
        serve_websocket(state, socket, remote).await;
        drop(slot);
    })
}

/// Runs the mux (the accepting side) over `socket` and serves the desktop on it.
async fn serve_websocket(
    state: Arc<RelayState>,
    socket: axum::extract::ws::WebSocket,
    remote: std::net::SocketAddr,
) {
    let (conn, driver) =
        crate::link::accept_mux(socket, aisa_tunnel::mux::Config::default(), TCP_KEEPALIVE);
    let link = DesktopLink::mux(conn, remote);
    let desktop = async {
        serve(state, link.clone()).await;
        if link.close_reason().is_none() {
            link.close(0, b"done");
        }
    };
    // The driver ends once the connection is closed (by either side, or the transport).
    tokio::join!(driver, desktop);
}

/// A new link of the device took the registry's place of `old`. From the same node (same
/// identity key) it is a move: `old` keeps its running streams (new ones go to the new
/// link) until the node closes it, or [`MOVE_GRACE`] passes and it is closed with
/// [`CLOSE_MOVED`]. From another node it is a replacement: `old` is closed at once with
/// [`CLOSE_REPLACED`].
fn take_over(old: DesktopLink, node_key: [u8; 32]) {
    if old.node_key() != Some(node_key) {
        old.close(CLOSE_REPLACED, b"replaced by a newer connection");
        return;
    }
    info!(
        old_transport = old.transport().as_str(),
        "the node moved to a new connection; the old one keeps its running streams"
    );
    // Ends when the old link does, and within MOVE_GRACE: bounded, so not tracked.
    tokio::spawn(async move {
        tokio::select! {
            _ = old.closed() => {}
            _ = tokio::time::sleep(MOVE_GRACE) => {
                old.close(CLOSE_MOVED, b"moved to a newer connection of this node");
            }
        }
    });
}

/// Feeds the control stream to `control` until it gives the HELLO (decoded and checked
/// field by field: the identity key is exactly 32 bytes, the version short and
/// printable, so nothing unchecked reaches the store) or refuses.
async fn read_hello(control: &mut RelayControl, recv: &mut LinkRecv) -> Result<Hello, Refusal> {
    let mut buf = vec![0u8; control.want()];
    loop {
        let want = control.want();
        buf.resize(want, 0);
        let deadline = control.deadline().unwrap_or_else(Instant::now);
        let read = tokio::time::timeout_at(deadline.into(), recv.read(&mut buf[..want])).await;
        match read {
            Err(_) => control.handle_timeout(Instant::now())?,
            Ok(Ok(Some(n))) => {
                for event in control.receive(&buf[..n], Instant::now())? {
                    if let ControlEvent::Hello(hello) = event {
                        return Ok(hello);
                    }
                }
            }
            Ok(Ok(None)) => return Err(control.finish()),
            Ok(Err(err)) => return Err(Refusal::Transport(err.to_string())),
        }
    }
}

/// How often a heartbeat updates `last_seen` in the database: at most once a minute per
/// device, so 10,000 desktops pinging every 15 s cost ~170 writes/s, not ~670.
const LAST_SEEN_EVERY: Duration = Duration::from_secs(60);

/// Pumps the control stream through `control` (which answers each PING with a PONG and
/// anything else with `unsupported`) until the stream or the connection ends, or the
/// desktop stops sending heartbeats (returned: close the connection); notes that the
/// device is alive in the store at most every [`LAST_SEEN_EVERY`].
async fn control_loop(
    state: &RelayState,
    device_id: &str,
    control: &mut RelayControl,
    send: &mut LinkSend,
    recv: &mut LinkRecv,
) -> Option<Refusal> {
    let mut last_seen_written = Instant::now();
    let mut buf = vec![0u8; control.want()];
    loop {
        if let Some(bytes) = control.poll_transmit()
            && send.write_all(&bytes).await.is_err()
        {
            return None;
        }
        let deadline = control
            .deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let read = tokio::time::timeout_at(deadline.into(), recv.read(&mut buf)).await;
        let n = match read {
            Err(_) => match control.handle_timeout(Instant::now()) {
                Ok(()) => continue,
                Err(silent) => return Some(silent),
            },
            Ok(Ok(Some(n))) => n,
            Ok(Ok(None)) => return None,
            Ok(Err(err)) => {
                debug!(%err, "control stream ended");
                return None;
            }
        };
        match control.receive(&buf[..n], Instant::now()) {
            Ok(events) => {
                if events.contains(&ControlEvent::Ping)
                    && last_seen_written.elapsed() >= LAST_SEEN_EVERY
                {
                    let _ = state.store.touch(device_id).await;
                    last_seen_written = Instant::now();
                }
            }
            Err(refusal) => {
                debug!(%refusal, "control stream broke the framing");
                return None;
            }
        }
    }
}

/// Sends one ERROR, then closes the connection with the message as the reason.
async fn refuse(
    conn: &DesktopLink,
    control: &mut RelayControl,
    send: &mut LinkSend,
    refused: &HelloRefused,
) {
    let code = refused.code();
    let message = refused.to_string();
    let protocol_reason = match refused {
        HelloRefused::Protocol(refusal) => refusal.reason(),
        _ => refused.reason(),
    };
    warn!(%code, reason = refused.reason(), protocol_reason, message, "desktop refused");
    metrics::counter!("aisa_relay_desktop_connections_total", "result" => "refused").increment(1);
    crate::metrics::refused(refused.reason());
    control.refuse(code, &message);
    if let Some(bytes) = control.poll_transmit()
        && send.write_all(&bytes).await.is_ok()
    {
        let _ = send.finish();
        // Give the ERROR a moment to arrive before the close discards unsent data.
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    }
    conn.close(CLOSE_REFUSED, format!("{code}: {message}").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_refusal(bytes: &[u8]) -> HelloRefused {
        let mut control = RelayControl::new(Instant::now());
        HelloRefused::from_protocol(control.receive(bytes, Instant::now()).expect_err("refused"))
    }

    #[test]
    fn every_hello_refusal_has_its_code_reason_and_message() {
        let mut bad_key = Vec::new();
        aisa_tunnel::frame::encode_frame(
            &Hello {
                device_token: "dt".into(),
                node_version: "0.1.0".into(),
                identity_key: vec![7; 31],
            }
            .encode(),
            u32::MAX,
            &mut bad_key,
        )
        .unwrap();
        let mut newer = Vec::new();
        let mut body = Hello {
            device_token: "dt".into(),
            node_version: "0.1.0".into(),
            identity_key: vec![7; 32],
        }
        .encode();
        // Protocol 9.1: the version prefix is [major, minor].
        body[0] = 9;
        body[1] = 1;
        aisa_tunnel::frame::encode_frame(&body, u32::MAX, &mut newer).unwrap();
        let late = RelayControl::new(Instant::now())
            .handle_timeout(Instant::now() + HEADER_TIMEOUT)
            .expect_err("late");
        let cases = [
            (
                HelloRefused::NoControlStream,
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "no control stream within 10 s",
            ),
            (
                HelloRefused::Protocol(late),
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "no HELLO within 10 s",
            ),
            (
                hello_refusal(&5000u32.to_be_bytes()),
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "HELLO: frame of 5000 bytes exceeds the maximum of 4096",
            ),
            (
                hello_refusal(&bad_key),
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "identity_key is 31 bytes long, not 32",
            ),
            (
                hello_refusal(&newer),
                ErrorCode::UnsupportedVersion,
                "unsupported_version",
                "desktop-node speaks protocol 9.1, newer than this relay",
            ),
            (
                HelloRefused::Incompatible(
                    crate::compat::check_node_version("0.1.0", &semver::Version::new(0, 2, 0))
                        .unwrap_err(),
                ),
                ErrorCode::UnsupportedVersion,
                "unsupported_version",
                "update it with `desktop-node update`",
            ),
            (
                HelloRefused::Protocol(Refusal::HeaderMissing { what: "HELLO" }),
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "stream ended before its HELLO",
            ),
            (
                HelloRefused::Protocol(Refusal::Transport("reset".into())),
                ErrorCode::PeerGone,
                "peer_gone",
                "reset",
            ),
            (
                HelloRefused::UnknownToken,
                ErrorCode::Unauthenticated,
                "desktop_unauthenticated",
                "unknown or revoked device token",
            ),
            (
                HelloRefused::Internal,
                ErrorCode::Internal,
                "internal",
                "the relay could not check the token",
            ),
        ];
        for (refused, code, reason, message) in cases {
            assert_eq!(refused.code(), code, "{refused:?}");
            assert_eq!(refused.reason(), reason, "{refused:?}");
            assert!(refused.to_string().contains(message), "{refused}");
        }
    }
}
