//! A browser-role client of the relay's WebSocket leg (`/tunnel/browser`), for the
//! relay's integration tests and the benches: the mux's dialing side over
//! tokio-tungstenite (tunnel's `mux::ws` adapter, as the desktop node's TCP leg uses
//! it), and one request run on a stream of it through the browser's request machine
//! ([`crate::system::run_on_stream`], which `system::run_action` pumps on WebTransport).
//!
//! What it does not do: race the WebSocket against WebTransport or move between them
//! (that is the web app's `browser-client/src/tunnel/transport/`), or anything the
//! browser does on top of a reply (end-to-end sealing, rendering).
//!
//! It adds no dependency to the crates that use the testkit: tokio-tungstenite and
//! tunnel's `websocket` feature are already in the relay's and the node's builds.

#![allow(clippy::expect_used)] // test support: a failed setup is reported by its panic

use std::net::SocketAddr;

use aisa_tunnel::mux::driver::{KeepAlive, MuxConnection};
use aisa_tunnel::mux::ws::{self, Tungstenite};
use aisa_tunnel::mux::{self, Side};
use aisa_tunnel::{Envelope, OpenHeader};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use crate::system::run_on_stream;

/// A raw WebSocket to the relay's browser leg at `http_addr` (upgrade checked; Nagle off,
/// as a browser's is).
pub async fn websocket(http_addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(http_addr)
        .await
        .expect("TCP to the relay");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (ws, response) =
        tokio_tungstenite::client_async(format!("ws://{http_addr}/tunnel/browser"), tcp)
            .await
            .expect("WebSocket upgrade");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

/// A browser session over the WebSocket leg at `http_addr`: the mux's dialing side, its
/// driver spawned.
pub async fn ws_session(http_addr: SocketAddr) -> MuxConnection {
    let (conn, driver) = ws::start::<Tungstenite, _, _>(
        Side::Dialer,
        mux::Config::default(),
        KeepAlive::default(),
        websocket(http_addr).await,
    );
    tokio::spawn(driver);
    conn
}

/// Runs `request` on a new stream of `session` (the browser's request machine, as
/// [`crate::system::run_action`] does on WebTransport); the reply, ending with
/// STREAM_END or an ERROR, or cut where the stream ended early or was reset.
pub async fn run_ws(
    session: &MuxConnection,
    header: &OpenHeader,
    request: Envelope,
) -> Vec<Envelope> {
    let (send, recv) = session.open_bi().expect("open a stream");
    run_on_stream(header, &request, send, recv).await
}
