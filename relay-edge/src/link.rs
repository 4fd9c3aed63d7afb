//! A desktop's connection to the relay, whatever carries it: [`DesktopLink`] is a raw
//! QUIC connection (ALPN `aisa/1` on the UDP port) or a mux connection (tunnel's `mux`
//! over a WebSocket at `/tunnel/desktop` on the HTTP port, when UDP is blocked). Both
//! give the same things: bidirectional streams the relay opens (one per browser stream)
//! or accepts (the control stream), a close with a code and a reason, and how the
//! connection ended. `crate::desktop` serves either through this one type, so the
//! HELLO, heartbeats and close codes are the same code path on both.
//!
//! What is not here: the control stream's rules (tunnel's `RelayControl`), which device a
//! link belongs to (`crate::registry`), and the WebSocket upgrade (`crate::http`).

use std::future::Future;

use aisa_tunnel::mux;
use aisa_tunnel::mux::driver::MuxConnection;
use bytes::Bytes;

/// Which transport carries a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTransport {
    /// Raw QUIC on the UDP port.
    Quic,
    /// The mux over a WebSocket on the HTTP port.
    Tcp,
}

impl LinkTransport {
    /// `quic` or `tcp` (logs, metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkTransport::Quic => "quic",
            LinkTransport::Tcp => "tcp",
        }
    }
}

/// How a link ended: the desktop's close code when it closed on purpose (one definition
/// for the relay and the node, in tunnel's mux).
pub use aisa_tunnel::mux::LinkClosed;
/// The relay's halves of a stream on a [`DesktopLink`], QUIC or mux (one definition for
/// the relay and the node, in tunnel's mux).
pub use aisa_tunnel::mux::{LinkRecv, LinkSend};

/// A desktop's connection: QUIC or mux. Cheap to clone (both are handles).
#[derive(Clone)]
pub struct DesktopLink {
    conn: Conn,
    /// The identity key the node announced in its HELLO, once it has.
    node_key: Option<[u8; 32]>,
}

#[derive(Clone)]
enum Conn {
    Quic(quinn::Connection),
    Mux {
        conn: MuxConnection,
        remote: std::net::SocketAddr,
    },
}

impl DesktopLink {
    /// A link over a QUIC connection.
    pub fn quic(conn: quinn::Connection) -> Self {
        DesktopLink {
            conn: Conn::Quic(conn),
            node_key: None,
        }
    }

    /// A link over a mux connection (the TCP path) from `remote`. Its driver runs
    /// beside it (`crate::desktop::serve_websocket`).
    pub fn mux(conn: MuxConnection, remote: std::net::SocketAddr) -> Self {
        DesktopLink {
            conn: Conn::Mux { conn, remote },
            node_key: None,
        }
    }

    /// The same link, noting the identity key its node announced in HELLO.
    pub fn with_node_key(mut self, key: [u8; 32]) -> Self {
        self.node_key = Some(key);
        self
    }

    /// The identity key its node announced, once HELLO was read. Two links of a device
    /// with the same key come from the same node (its identity secret is its own), so
    /// a new link with the same key is the node moving (back to QUIC, or to a new
    /// network), not another node holding the same token.
    pub fn node_key(&self) -> Option<[u8; 32]> {
        self.node_key
    }

    /// Which transport carries it.
    pub fn transport(&self) -> LinkTransport {
        match &self.conn {
            Conn::Quic(_) => LinkTransport::Quic,
            Conn::Mux { .. } => LinkTransport::Tcp,
        }
    }

    /// The desktop's address as this relay sees it.
    pub fn remote_address(&self) -> std::net::SocketAddr {
        match &self.conn {
            Conn::Quic(c) => c.remote_address(),
            Conn::Mux { remote, .. } => *remote,
        }
    }

    /// Opens a stream to the desktop (counted in
    /// `aisa_relay_desktop_streams_total{transport}`).
    pub async fn open_bi(&self) -> Result<(LinkSend, LinkRecv), LinkClosed> {
        metrics::counter!("aisa_relay_desktop_streams_total", "transport" => self.transport().as_str())
            .increment(1);
        match &self.conn {
            Conn::Quic(c) => {
                let (send, recv) = c.open_bi().await?;
                Ok((LinkSend::Quic(send), LinkRecv::Quic(recv)))
            }
            Conn::Mux { conn, .. } => {
                let (send, recv) = conn.open_bi().map_err(|_| LinkClosed::of_mux(conn))?;
                Ok((LinkSend::Mux(send), LinkRecv::Mux(recv)))
            }
        }
    }

    /// Accepts the next stream the desktop opens (its control stream).
    pub async fn accept_bi(&self) -> Result<(LinkSend, LinkRecv), LinkClosed> {
        match &self.conn {
            Conn::Quic(c) => {
                let (send, recv) = c.accept_bi().await?;
                Ok((LinkSend::Quic(send), LinkRecv::Quic(recv)))
            }
            Conn::Mux { conn, .. } => match conn.accept_bi().await {
                Some((send, recv)) => Ok((LinkSend::Mux(send), LinkRecv::Mux(recv))),
                None => Err(LinkClosed::of_mux(conn)),
            },
        }
    }

    /// Closes the link with an application `code` (`crate::desktop::CLOSE_*`) and a
    /// reason; every stream on it ends.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match &self.conn {
            Conn::Quic(c) => c.close(code.into(), reason),
            Conn::Mux { conn, .. } => conn.close(code, &String::from_utf8_lossy(reason)),
        }
    }

    /// How it ended, once it has.
    pub fn close_reason(&self) -> Option<LinkClosed> {
        match &self.conn {
            Conn::Quic(c) => c.close_reason().map(LinkClosed::from),
            Conn::Mux { conn, .. } => conn.close_reason().map(LinkClosed::from),
        }
    }

    /// Completes when the link has ended, with how.
    pub async fn closed(&self) -> LinkClosed {
        match &self.conn {
            Conn::Quic(c) => c.closed().await.into(),
            Conn::Mux { conn, .. } => conn.closed().await.into(),
        }
    }

    /// Identifies the underlying connection while it lives (two clones of one link
    /// have the same id; two links never share one at the same time).
    pub fn stable_id(&self) -> usize {
        match &self.conn {
            Conn::Quic(c) => c.stable_id(),
            Conn::Mux { conn, .. } => conn.stable_id(),
        }
    }
}

impl crate::splice::SpliceSend for LinkSend {
    async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), ()> {
        match self {
            LinkSend::Quic(s) => crate::splice::SpliceSend::write_chunk(s, chunk).await,
            LinkSend::Mux(s) => s.write_chunk(chunk).await.map_err(drop),
        }
    }
    async fn finish_stream(&mut self) {
        let _ = self.finish();
    }
    fn reset_stream(&mut self, code: u32) {
        let _ = self.reset(code);
    }
    async fn stopped_by_peer(&mut self) {
        match self {
            LinkSend::Quic(s) => crate::splice::SpliceSend::stopped_by_peer(s).await,
            LinkSend::Mux(s) => match s.stopped().await {
                Ok(Some(_)) | Err(mux::StreamError::ConnectionClosed(_)) => {}
                // Delivered to the end, or over: not a stop. Never resolve; the read side
                // ends the pump.
                Ok(None) | Err(_) => std::future::pending::<()>().await,
            },
        }
    }
}

impl crate::splice::SpliceRecv for LinkRecv {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ()> {
        match self {
            LinkRecv::Quic(r) => crate::splice::SpliceRecv::read_chunk(r, max).await,
            LinkRecv::Mux(r) => r.read_chunk(max).await.map_err(drop),
        }
    }
    fn stop_stream(&mut self, code: u32) {
        let _ = self.stop(code);
    }
}

/// axum's WebSocket messages, for tunnel's mux over a WebSocket (`aisa_tunnel::mux::ws`,
/// one frame per binary message): the desktops' TCP path and the browsers' WebSocket leg.
pub(crate) struct AxumWs;

impl mux::ws::WsCodec for AxumWs {
    type Message = axum::extract::ws::Message;

    fn binary(bytes: Bytes) -> Self::Message {
        axum::extract::ws::Message::Binary(bytes)
    }

    fn incoming(message: Self::Message) -> mux::ws::Incoming {
        use axum::extract::ws::Message;
        match message {
            Message::Binary(bytes) => mux::ws::Incoming::Binary(bytes),
            Message::Text(_) => mux::ws::Incoming::Text,
            Message::Close(_) => mux::ws::Incoming::Close,
            // Answered by the WebSocket layer itself.
            Message::Ping(_) | Message::Pong(_) => mux::ws::Incoming::Control,
        }
    }
}

/// Starts the accepting side of a mux connection on an upgraded WebSocket: the
/// connection and the driver future, which the caller runs.
pub(crate) fn accept_mux(
    socket: axum::extract::ws::WebSocket,
    config: mux::Config,
    keepalive: mux::driver::KeepAlive,
) -> (MuxConnection, impl Future<Output = ()> + Send + 'static) {
    mux::ws::start::<AxumWs, _, _>(mux::Side::Acceptor, config, keepalive, socket)
}
