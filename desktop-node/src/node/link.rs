//! The node's connection to the relay, whatever carries it: [`NodeLink`] is a raw QUIC
//! connection or a mux connection over the TCP path (`super::tcp`), and [`SendStream`] /
//! [`RecvStream`] are a stream's halves on either. The stream handlers
//! (`crate::action`) and the control stream see only these, so every rule is the same
//! on both transports.

use aisa_tunnel::mux::driver::MuxConnection;

use super::path::Transport;

/// How a link ended: the relay's close code when it closed on purpose (one definition
/// for the relay and the node, in tunnel's mux).
pub use aisa_tunnel::mux::LinkClosed;
/// The receiving half of a stream on a [`NodeLink`], QUIC or mux (one definition for
/// the relay and the node: tunnel's `mux::LinkRecv`).
pub use aisa_tunnel::mux::LinkRecv as RecvStream;
/// The sending half of a stream on a [`NodeLink`], QUIC or mux (one definition for the
/// relay and the node: tunnel's `mux::LinkSend`).
pub use aisa_tunnel::mux::LinkSend as SendStream;

/// The node's connection to the relay. Cheap to clone.
#[derive(Clone)]
pub enum NodeLink {
    /// Raw QUIC (ALPN `aisa/1`).
    Quic(quinn::Connection),
    /// The mux over the TCP path (`super::tcp`).
    Mux(MuxLink),
}

/// A mux connection and its driver task, which ends (aborted) when the last clone of
/// the link is dropped.
#[derive(Clone)]
pub struct MuxLink {
    conn: MuxConnection,
    _driver: std::sync::Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl NodeLink {
    /// A link over a mux connection whose driver runs in `driver`.
    pub fn mux(conn: MuxConnection, driver: tokio::task::JoinHandle<()>) -> Self {
        NodeLink::Mux(MuxLink {
            conn,
            _driver: std::sync::Arc::new(AbortOnDrop(driver)),
        })
    }

    /// Which transport carries it.
    pub fn transport(&self) -> Transport {
        match self {
            NodeLink::Quic(_) => Transport::Quic,
            NodeLink::Mux(_) => Transport::Tcp,
        }
    }

    /// Opens a stream (the control stream).
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), LinkClosed> {
        match self {
            NodeLink::Quic(c) => {
                let (send, recv) = c.open_bi().await?;
                Ok((SendStream::Quic(send), RecvStream::Quic(recv)))
            }
            NodeLink::Mux(m) => {
                let (send, recv) = m.conn.open_bi().map_err(|_| LinkClosed::of_mux(&m.conn))?;
                Ok((SendStream::Mux(send), RecvStream::Mux(recv)))
            }
        }
    }

    /// Accepts the next stream the relay opens (one per browser stream).
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), LinkClosed> {
        match self {
            NodeLink::Quic(c) => {
                let (send, recv) = c.accept_bi().await?;
                Ok((SendStream::Quic(send), RecvStream::Quic(recv)))
            }
            NodeLink::Mux(m) => match m.conn.accept_bi().await {
                Some((send, recv)) => Ok((SendStream::Mux(send), RecvStream::Mux(recv))),
                None => Err(LinkClosed::of_mux(&m.conn)),
            },
        }
    }

    /// Closes it with `code` and `reason`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            NodeLink::Quic(c) => c.close(code.into(), reason),
            NodeLink::Mux(m) => m.conn.close(code, &String::from_utf8_lossy(reason)),
        }
    }

    /// How it ended, once it has.
    pub fn close_reason(&self) -> Option<LinkClosed> {
        match self {
            NodeLink::Quic(c) => c.close_reason().map(LinkClosed::from),
            NodeLink::Mux(m) => m.conn.close_reason().map(LinkClosed::from),
        }
    }
}
