//! The node's connection to the relay, whatever carries it: [`NodeLink`] is a raw QUIC
//! connection or a mux connection over the TCP path (`super::tcp`), and [`SendStream`] /
//! [`RecvStream`] are a stream's halves on either. The stream handlers
//! (`crate::action`) and the control stream see only these, so every rule is the same
//! on both transports.

use std::pin::Pin;
use std::task::{Context, Poll};

use aisa_tunnel::mux;
use aisa_tunnel::mux::driver::MuxConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::path::Transport;

/// How a link ended: the relay's close code when it closed on purpose (one definition
/// for the relay and the node, in tunnel's mux).
pub use aisa_tunnel::mux::LinkClosed;

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

/// The sending half of a stream on a [`NodeLink`].
pub enum SendStream {
    /// On QUIC.
    Quic(quinn::SendStream),
    /// On the mux.
    Mux(mux::driver::SendStream),
}

/// The receiving half of a stream on a [`NodeLink`].
pub enum RecvStream {
    /// On QUIC.
    Quic(quinn::RecvStream),
    /// On the mux.
    Mux(mux::driver::RecvStream),
}

impl SendStream {
    /// Ends the stream cleanly after what was written.
    pub fn finish(&mut self) -> Result<(), std::io::Error> {
        match self {
            SendStream::Quic(s) => s.finish().map_err(std::io::Error::other),
            SendStream::Mux(s) => s.finish().map_err(std::io::Error::other),
        }
    }

    /// Abandons the stream with `code`.
    pub fn reset(&mut self, code: u32) -> Result<(), std::io::Error> {
        match self {
            SendStream::Quic(s) => s.reset(code.into()).map_err(std::io::Error::other),
            SendStream::Mux(s) => s.reset(code).map_err(std::io::Error::other),
        }
    }
}

impl RecvStream {
    /// Reads into `buf`: `Ok(Some(n))` bytes, `Ok(None)` at the clean end.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, std::io::Error> {
        match self {
            RecvStream::Quic(r) => r.read(buf).await.map_err(std::io::Error::other),
            RecvStream::Mux(r) => {
                if buf.is_empty() {
                    return Ok(Some(0));
                }
                // 0 from a non-empty buffer is the clean end.
                Ok(Some(r.read(buf).await?).filter(|n| *n > 0))
            }
        }
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            SendStream::Quic(s) => AsyncWrite::poll_write(Pin::new(s), cx, buf),
            SendStream::Mux(s) => AsyncWrite::poll_write(Pin::new(s), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            SendStream::Quic(s) => AsyncWrite::poll_flush(Pin::new(s), cx),
            SendStream::Mux(s) => AsyncWrite::poll_flush(Pin::new(s), cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            SendStream::Quic(s) => AsyncWrite::poll_shutdown(Pin::new(s), cx),
            SendStream::Mux(s) => AsyncWrite::poll_shutdown(Pin::new(s), cx),
        }
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            RecvStream::Quic(r) => AsyncRead::poll_read(Pin::new(r), cx, buf),
            RecvStream::Mux(r) => AsyncRead::poll_read(Pin::new(r), cx, buf),
        }
    }
}
