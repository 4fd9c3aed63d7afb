//! A stream's halves on a desktop's link, whatever carries it (feature `quinn`): a raw
//! QUIC stream or a mux stream. The relay (`DesktopLink`'s streams) and the node
//! (`NodeLink`'s) both hand these to their stream code, so reading, writing, finishing,
//! resetting and stopping mean the same on both transports and both ends, as
//! [`LinkClosed`] does for how a link ended.
//!
//! What is not here: the connections themselves (the relay's `DesktopLink`, the node's
//! `NodeLink`, which open and accept these), and the relay's splice over them (chunk
//! reads and writes, `relay-edge/src/link.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::driver;
use super::{LinkClosed, StreamError};

/// The sending half of a stream on a desktop's link.
#[derive(Debug)]
pub enum LinkSend {
    /// A QUIC stream.
    Quic(quinn::SendStream),
    /// A mux stream.
    Mux(driver::SendStream),
}

/// The receiving half of a stream on a desktop's link.
#[derive(Debug)]
pub enum LinkRecv {
    /// A QUIC stream.
    Quic(quinn::RecvStream),
    /// A mux stream.
    Mux(driver::RecvStream),
}

impl LinkSend {
    /// Ends the stream cleanly after what was written. An error: it had already ended
    /// (finished, reset, or the link is gone).
    pub fn finish(&mut self) -> std::io::Result<()> {
        match self {
            LinkSend::Quic(s) => s.finish().map_err(std::io::Error::other),
            LinkSend::Mux(s) => s.finish().map_err(std::io::Error::other),
        }
    }

    /// Abandons the stream with `code`. An error: it had already ended.
    pub fn reset(&mut self, code: u32) -> std::io::Result<()> {
        match self {
            LinkSend::Quic(s) => s.reset(code.into()).map_err(std::io::Error::other),
            LinkSend::Mux(s) => s.reset(code).map_err(std::io::Error::other),
        }
    }

    /// Completes when every byte of a finished stream is delivered (`Ok(None)`; on QUIC
    /// acknowledged, on the mux handed to the TCP transport) or the peer stopped the
    /// stream (`Ok(Some(code))`), or the link failed.
    pub async fn stopped(&mut self) -> Result<Option<u32>, LinkClosed> {
        match self {
            LinkSend::Quic(s) => match s.stopped().await {
                Ok(code) => Ok(code.and_then(|c| u32::try_from(c.into_inner()).ok())),
                Err(quinn::StoppedError::ConnectionLost(e)) => Err(e.into()),
                Err(other) => Err(LinkClosed {
                    code: None,
                    reason: other.to_string(),
                }),
            },
            LinkSend::Mux(s) => match s.stopped().await {
                Ok(code) => Ok(code),
                Err(StreamError::ConnectionClosed(closed)) => Err(closed.into()),
                Err(other) => Err(LinkClosed {
                    code: None,
                    reason: other.to_string(),
                }),
            },
        }
    }
}

impl LinkRecv {
    /// Reads into `buf`: `Ok(Some(n))` bytes, `Ok(None)` at the clean end.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        match self {
            LinkRecv::Quic(r) => r.read(buf).await.map_err(std::io::Error::other),
            LinkRecv::Mux(r) => {
                if buf.is_empty() {
                    return Ok(Some(0));
                }
                let n = r.read(buf).await?;
                // 0 from a non-empty buffer is the clean end.
                Ok((n > 0).then_some(n))
            }
        }
    }

    /// Asks the peer to stop sending, with `code`. An error: the stream had already
    /// ended.
    pub fn stop(&mut self, code: u32) -> std::io::Result<()> {
        match self {
            LinkRecv::Quic(r) => r.stop(code.into()).map_err(std::io::Error::other),
            LinkRecv::Mux(r) => r.stop(code).map_err(std::io::Error::other),
        }
    }
}

impl AsyncWrite for LinkSend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            LinkSend::Quic(s) => AsyncWrite::poll_write(Pin::new(s), cx, buf),
            LinkSend::Mux(s) => AsyncWrite::poll_write(Pin::new(s), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            LinkSend::Quic(s) => AsyncWrite::poll_flush(Pin::new(s), cx),
            LinkSend::Mux(s) => AsyncWrite::poll_flush(Pin::new(s), cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            LinkSend::Quic(s) => AsyncWrite::poll_shutdown(Pin::new(s), cx),
            LinkSend::Mux(s) => AsyncWrite::poll_shutdown(Pin::new(s), cx),
        }
    }
}

impl AsyncRead for LinkRecv {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            LinkRecv::Quic(r) => AsyncRead::poll_read(Pin::new(r), cx, buf),
            LinkRecv::Mux(r) => AsyncRead::poll_read(Pin::new(r), cx, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The mux branch over a real driver pair on an in-memory byte stream (the QUIC
    //! branch is quinn's own behaviour, passed through; the relay's and the node's
    //! loopback tests run both).

    use super::*;
    use crate::mux::driver::tests::pair as driver_pair;
    use crate::mux::driver::{KeepAlive, MuxConnection};
    use tokio::io::AsyncWriteExt;

    fn pair() -> (MuxConnection, MuxConnection) {
        driver_pair(KeepAlive::default())
    }

    async fn stopped(send: &mut LinkSend) -> Result<Option<u32>, LinkClosed> {
        tokio::time::timeout(std::time::Duration::from_secs(5), send.stopped())
            .await
            .expect("stopped in time")
    }

    async fn stream(a: &MuxConnection, b: &MuxConnection) -> (LinkSend, LinkRecv) {
        let (send, _) = a.open_bi().expect("open");
        let mut send = LinkSend::Mux(send);
        // The peer learns of the stream with its first bytes.
        send.write_all(b"x").await.expect("write");
        let (_, recv) = b.accept_bi().await.expect("accept");
        let mut recv = LinkRecv::Mux(recv);
        let mut one = [0u8; 1];
        assert_eq!(recv.read(&mut one).await.expect("read"), Some(1));
        (send, recv)
    }

    #[tokio::test]
    async fn read_gives_the_bytes_then_none_at_a_clean_end_which_is_no_stop() {
        let (a, b) = pair();
        let (mut send, mut recv) = stream(&a, &b).await;
        assert_eq!(recv.read(&mut []).await.expect("empty read"), Some(0));
        send.write_all(b"hello").await.expect("write");
        send.finish().expect("finish");
        let mut buf = [0u8; 16];
        assert_eq!(recv.read(&mut buf).await.expect("read"), Some(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(recv.read(&mut buf).await.expect("end"), None);
        assert!(send.finish().is_err(), "finished twice");
        // Delivered to the end: no stop, and `stopped` says so at once, as on QUIC.
        assert_eq!(stopped(&mut send).await, Ok(None));
    }

    #[tokio::test]
    async fn a_finished_stream_is_delivered_while_the_peer_still_sends() {
        // A refusal on the relay's side: the answer and FINISH are written while the
        // peer's half stays open. `stopped` must not wait for the peer's half.
        let (a, b) = pair();
        let (send, _recv) = a.open_bi().expect("open");
        let mut send = LinkSend::Mux(send);
        send.write_all(b"x").await.expect("write");
        let (_far_send, _far_recv) = b.accept_bi().await.expect("accept");
        send.write_all(b"refused").await.expect("write");
        send.finish().expect("finish");
        assert_eq!(stopped(&mut send).await, Ok(None));
    }

    #[tokio::test]
    async fn a_stop_reaches_stopped_with_its_code_and_a_reset_fails_the_read() {
        let (a, b) = pair();
        let (mut send, mut recv) = stream(&a, &b).await;
        recv.stop(7).expect("stop");
        assert_eq!(stopped(&mut send).await, Ok(Some(7)));

        let (mut send, mut recv) = stream(&a, &b).await;
        send.reset(9).expect("reset");
        let mut buf = [0u8; 16];
        assert!(recv.read(&mut buf).await.is_err(), "a reset stream");
    }

    #[tokio::test]
    async fn stopped_on_a_closed_link_says_how_it_ended() {
        let (a, b) = pair();
        let (mut send, _recv) = stream(&a, &b).await;
        b.close(3, "going away");
        let closed = stopped(&mut send).await.expect_err("the link ended");
        assert_eq!(closed.code, Some(3));
        assert_eq!(closed.reason, "going away");
    }
}
