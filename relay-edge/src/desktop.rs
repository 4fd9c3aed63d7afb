//! A desktop node's connection: HELLO, authentication, registration, heartbeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, DecodeError, Envelope, ErrorCode, Hello, MAX_HEADER_LEN, Version};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::hash_device_token;
use crate::registry::OnlineDevice;
use crate::state::RelayState;

/// How long a desktop has to send its HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC close code: refused at HELLO.
pub const CLOSE_REFUSED: u32 = 1;
/// QUIC close code: another connection of the same device took over.
pub const CLOSE_REPLACED: u32 = 2;
/// QUIC close code: the relay is shutting down; reconnect at once.
pub const CLOSE_SHUTDOWN: u32 = 3;
/// QUIC close code: the device was revoked; do not reconnect.
pub const CLOSE_REVOKED: u32 = 4;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Why a desktop's HELLO was refused. Each variant has one wire code
/// ([`HelloRefused::code`]), one metric label ([`HelloRefused::reason`]) and one message
/// (`Display`), sent as an ERROR and as the QUIC close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloRefused {
    /// No HELLO within the HELLO timeout.
    #[error("no HELLO within 10 s")]
    Timeout,
    /// The control stream ended before a HELLO.
    #[error("control stream ended before HELLO")]
    Missing,
    /// The HELLO frame could not be read (too large, cut, or the stream failed).
    #[error("HELLO: {0}")]
    Unreadable(String),
    /// The HELLO's protocol version is not one this relay speaks.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// The HELLO did not decode (a field out of its bounds, bad bytes).
    #[error("{0}")]
    Invalid(String),
    /// No device has this token (never enrolled, or revoked).
    #[error("unknown or revoked device token")]
    UnknownToken,
    /// The token lookup failed (the detail is logged, not sent).
    #[error("the relay could not check the token")]
    Internal,
}

impl HelloRefused {
    /// The ERROR code the desktop gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            HelloRefused::Timeout
            | HelloRefused::Missing
            | HelloRefused::Unreadable(_)
            | HelloRefused::Invalid(_) => ErrorCode::MalformedFrame,
            HelloRefused::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            HelloRefused::UnknownToken => ErrorCode::Unauthenticated,
            HelloRefused::Internal => ErrorCode::Internal,
        }
    }

    /// The `aisa_refusals_total{reason}` label.
    pub fn reason(&self) -> &'static str {
        match self {
            HelloRefused::Timeout
            | HelloRefused::Missing
            | HelloRefused::Unreadable(_)
            | HelloRefused::Invalid(_) => "invalid_hello",
            HelloRefused::UnsupportedVersion(_) => "unsupported_version",
            HelloRefused::UnknownToken => "desktop_unauthenticated",
            HelloRefused::Internal => "internal",
        }
    }
}

/// Serves one desktop connection until it ends.
pub async fn serve(state: Arc<RelayState>, conn: quinn::Connection) {
    let connection_id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("desktop", connection_id, remote = %conn.remote_address(), device_id = tracing::field::Empty);
    async move {
        let Ok(Ok((mut send, mut recv))) =
            tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await
        else {
            conn.close(CLOSE_REFUSED.into(), b"no control stream");
            return;
        };
        let hello = match read_hello(&mut recv).await {
            Ok(h) => h,
            Err(refused) => {
                refuse(&conn, &mut send, &refused).await;
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
                refuse(&conn, &mut send, &HelloRefused::UnknownToken).await;
                return;
            }
            Err(err) => {
                warn!(%err, "device lookup failed");
                refuse(&conn, &mut send, &HelloRefused::Internal).await;
                return;
            }
        };
        tracing::Span::current().record("device_id", device.id.as_str());
        let online = OnlineDevice {
            user_id: device.user_id.clone(),
            connection: conn.clone(),
            connection_id,
        };
        if let Some(old) = state.devices.registry.insert(&device.id, online) {
            old.connection
                .close(CLOSE_REPLACED.into(), b"replaced by a newer connection");
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
        info!(node_version = %hello.node_version, "desktop online");
        metrics::counter!("aisa_relay_desktop_connections_total", "result" => "ok").increment(1);
        state.devices.events.publish(
            &device.user_id,
            &crate::events::device_status(&device.id, true, Some(&hello.node_version)),
        );
        let welcome = Envelope::new(
            0,
            Body::Welcome {
                device_id: device.id.clone(),
                version: Version::CURRENT,
                heartbeat_secs: state.config.heartbeat_secs,
            },
        );
        if write_frame(&mut send, &welcome.encode(), state.config.max_frame_len)
            .await
            .is_ok()
        {
            control_loop(&state, &device.id, &mut send, &mut recv).await;
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

async fn read_hello(recv: &mut quinn::RecvStream) -> Result<Hello, HelloRefused> {
    // The header cap, not the frame cap: the desktop is not authenticated yet.
    let body = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(recv, MAX_HEADER_LEN)).await {
        Err(_) => return Err(HelloRefused::Timeout),
        Ok(Err(err)) => return Err(HelloRefused::Unreadable(err.to_string())),
        Ok(Ok(None)) => return Err(HelloRefused::Missing),
        Ok(Ok(Some(body))) => body,
    };
    // Decoding checks every field (the identity key is exactly 32 bytes, the version
    // short and printable), so nothing unchecked reaches the store.
    match Hello::decode(&body) {
        Ok((hello, _version)) => Ok(hello),
        Err(err @ DecodeError::UnsupportedVersion { .. }) => {
            Err(HelloRefused::UnsupportedVersion(err.to_string()))
        }
        Err(err) => Err(HelloRefused::Invalid(err.to_string())),
    }
}

/// How often a heartbeat updates `last_seen` in the database: at most once a minute per
/// device, so 10,000 desktops pinging every 15 s cost ~170 writes/s, not ~670.
const LAST_SEEN_EVERY: Duration = Duration::from_secs(60);

/// Answers PINGs until the control stream or the connection ends.
async fn control_loop(
    state: &RelayState,
    device_id: &str,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) {
    let mut last_seen_written = tokio::time::Instant::now();
    loop {
        let body = match read_frame(recv, state.config.max_frame_len).await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(err) => {
                debug!(%err, "control stream ended");
                return;
            }
        };
        let reply = match Envelope::decode(&body) {
            Ok(Envelope {
                body: Body::Ping { nonce },
                request_id,
                ..
            }) => {
                if last_seen_written.elapsed() >= LAST_SEEN_EVERY {
                    let _ = state.store.touch(device_id).await;
                    last_seen_written = tokio::time::Instant::now();
                }
                Envelope::new(request_id, Body::Pong { nonce })
            }
            Ok(other) => Envelope::error(
                other.request_id,
                ErrorCode::Unsupported,
                "only PING is accepted on the control stream",
            ),
            Err(err) => Envelope::error(0, ErrorCode::MalformedFrame, err.to_string()),
        };
        if write_frame(send, &reply.encode(), state.config.max_frame_len)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends one ERROR, then closes the connection with the message as the reason.
async fn refuse(conn: &quinn::Connection, send: &mut quinn::SendStream, refused: &HelloRefused) {
    let code = refused.code();
    let message = refused.to_string();
    warn!(%code, reason = refused.reason(), message, "desktop refused");
    metrics::counter!("aisa_relay_desktop_connections_total", "result" => "refused").increment(1);
    crate::metrics::refused(refused.reason());
    let err = Envelope::error(0, code, &message);
    if write_frame(send, &err.encode(), aisa_tunnel::MAX_FRAME_LEN)
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Give the ERROR a moment to arrive before the close discards unsent data.
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    }
    conn.close(
        CLOSE_REFUSED.into(),
        format!("{code}: {message}").as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hello_refusal_has_its_code_reason_and_message() {
        let cases = [
            (
                HelloRefused::Timeout,
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "no HELLO within 10 s",
            ),
            (
                HelloRefused::Missing,
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "control stream ended before HELLO",
            ),
            (
                HelloRefused::Unreadable("frame of 5000 bytes is over the limit".into()),
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "HELLO: frame of 5000 bytes",
            ),
            (
                HelloRefused::UnsupportedVersion("unsupported protocol version 9.0".into()),
                ErrorCode::UnsupportedVersion,
                "unsupported_version",
                "unsupported protocol version 9.0",
            ),
            (
                HelloRefused::Invalid("identity key: 31 bytes".into()),
                ErrorCode::MalformedFrame,
                "invalid_hello",
                "identity key: 31 bytes",
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
