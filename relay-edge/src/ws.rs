//! `GET /tunnel/browser`: a browser's session over a WebSocket, on the relay's HTTP(S)
//! port (the web app's own origin), for browsers without WebTransport and networks that
//! block UDP.
//!
//! The WebSocket carries tunnel's mux (`aisa_tunnel::mux`, one frame per binary
//! message); each mux stream is a stream exactly as on WebTransport, and the session is
//! served by the same code ([`crate::browser::serve_session`]): the same header rules,
//! token check, authorization, limits, refusals and splice. The upgrade itself carries
//! no credentials: like a WebTransport session, it is authenticated stream by stream by
//! the access token in each stream's header (so a page on another origin gains nothing
//! by opening one).
//!
//! What differs is only the transport: the per-IP connection limit is counted here (for
//! QUIC it is counted in `crate::server`), and a stream opened beyond the session's
//! stream limit is refused with a mux RESET/STOP (`REFUSED_STREAM`) where QUIC would
//! make the opener wait.

use std::sync::Arc;
use std::time::Duration;

use aisa_tunnel::mux;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::info;

use crate::browser::{BrowserTransport, PRE_AUTH_STREAMS, SessionConnection};
use crate::state::RelayState;

/// The mux keep-alive of a browser's WebSocket: PINGs keep proxies and NAT mappings
/// from closing an idle connection, and a browser silent for 30 s is gone.
pub const KEEPALIVE: mux::driver::KeepAlive = mux::driver::KeepAlive {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(30),
};

/// The handler of [`crate::browser::WEBSOCKET_PATH`].
pub async fn browser(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ip = state.accounts.proxies.client_ip(peer.ip(), &headers);
    let Some(slot) = state
        .limits
        .connections_per_ip
        .try_open(&ip, state.config.max_connections_per_ip as i64)
    else {
        info!(%ip, max = state.config.max_connections_per_ip, "browser WebSocket refused: too many connections from this address");
        crate::metrics::refused("connections_per_ip");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        )
            .into_response();
    };
    let remote = std::net::SocketAddr::new(ip, peer.port());
    upgrade
        // A message is one mux frame: refuse a bigger one before buffering it.
        .max_message_size(mux::MAX_FRAME)
        .max_frame_size(mux::MAX_FRAME)
        .on_upgrade(move |socket| async move {
            serve(state, socket, remote).await;
            drop(slot);
        })
}

/// Runs the mux (the accepting side) over `socket` and serves the browser session on it.
async fn serve(state: Arc<RelayState>, socket: WebSocket, remote: std::net::SocketAddr) {
    let (conn, driver) = crate::link::accept_mux(
        socket,
        mux::Config {
            // Raised to `BROWSER_STREAMS` once a stream authenticates, as on QUIC.
            max_incoming_streams: PRE_AUTH_STREAMS as usize,
            ..mux::Config::default()
        },
        KEEPALIVE,
    );
    let session = async {
        crate::browser::serve_session(
            state,
            BrowserTransport::WebSocket,
            remote,
            SessionConnection::Mux(conn.clone()),
            conn.clone(),
        )
        .await;
        if conn.close_reason().is_none() {
            conn.close(0, "session over");
        }
    };
    // The driver ends once the connection is closed (by either side, or the transport).
    tokio::join!(driver, session);
}
