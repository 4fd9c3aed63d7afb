//! Copies bytes between a browser's stream and a desktop's stream without parsing them.
//!
//! Data moves as the transport's own chunks (`read_chunk` / `write_chunk`): no copy in
//! the relay, and at most one chunk per direction in flight. The halves are generic
//! ([`SpliceSend`], [`SpliceRecv`]): quinn and wtransport streams, tunnel's mux streams
//! (a browser on a WebSocket), and a desktop's streams on either of its links
//! ([`crate::link::LinkSend`], QUIC or the mux). A write waits for the
//! receiver's flow-control credit, so a slow reader slows the writer: nothing is
//! buffered without bound. A clean finish on one side finishes the other; a reset is
//! passed on as a reset; a peer that stops reading stops the sender.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sees every chunk a splice moves (both directions), as the relay moved it. Not used in
/// production; tests install one with [`crate::state::Traffic::observe_splices`] to prove
/// what the relay does (not) see. An unbounded channel's sender is one.
pub trait SpliceObserver: Send + Sync {
    /// Called once per chunk, before it is written on.
    fn chunk(&self, bytes: &bytes::Bytes);
}

impl SpliceObserver for tokio::sync::mpsc::UnboundedSender<bytes::Bytes> {
    fn chunk(&self, bytes: &bytes::Bytes) {
        let _ = self.send(bytes.clone());
    }
}

/// Application error code for "the other side of the splice went away".
pub const PEER_GONE: u32 = 1;

/// The largest chunk taken from a stream at once.
const MAX_CHUNK: usize = 64 * 1024;

/// The sending half of a stream as the splice needs it.
pub trait SpliceSend: Send {
    /// Writes one chunk, waiting for the receiver's credit; `Err` when the stream or its
    /// connection is gone.
    fn write_chunk(&mut self, chunk: bytes::Bytes) -> impl Future<Output = Result<(), ()>> + Send;
    /// Ends the stream cleanly.
    fn finish_stream(&mut self) -> impl Future<Output = ()> + Send;
    /// Abandons the stream with an error code.
    fn reset_stream(&mut self, code: u32);
    /// Completes when the peer asks us to stop sending.
    fn stopped_by_peer(&mut self) -> impl Future<Output = ()> + Send;
}

/// The receiving half of a stream as the splice needs it.
pub trait SpliceRecv: Send {
    /// Reads the next chunk of at most `max` bytes: `Ok(None)` at the clean end, `Err`
    /// when the stream was reset or its connection is gone.
    fn read_chunk(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<bytes::Bytes>, ()>> + Send;
    /// Asks the peer to stop sending.
    fn stop_stream(&mut self, code: u32);
}

impl SpliceSend for quinn::SendStream {
    async fn write_chunk(&mut self, chunk: bytes::Bytes) -> Result<(), ()> {
        quinn::SendStream::write_chunk(self, chunk)
            .await
            .map_err(drop)
    }
    async fn finish_stream(&mut self) {
        let _ = self.finish();
    }
    fn reset_stream(&mut self, code: u32) {
        let _ = self.reset(code.into());
    }
    async fn stopped_by_peer(&mut self) {
        if let Ok(None) = self.stopped().await {
            // Read to completion: not a stop. Never resolve, the read side ends the pump.
            std::future::pending::<()>().await;
        }
    }
}

impl SpliceRecv for quinn::RecvStream {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<bytes::Bytes>, ()> {
        match quinn::RecvStream::read_chunk(self, max, true).await {
            Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
            Err(_) => Err(()),
        }
    }
    fn stop_stream(&mut self, code: u32) {
        let _ = self.stop(code.into());
    }
}

impl SpliceSend for wtransport::SendStream {
    async fn write_chunk(&mut self, chunk: bytes::Bytes) -> Result<(), ()> {
        SpliceSend::write_chunk(self.quic_stream_mut(), chunk).await
    }
    async fn finish_stream(&mut self) {
        let _ = self.finish().await;
    }
    fn reset_stream(&mut self, code: u32) {
        let _ = self.reset(code.into());
    }
    async fn stopped_by_peer(&mut self) {
        self.quic_stream_mut().stopped_by_peer().await
    }
}

impl SpliceRecv for wtransport::RecvStream {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<bytes::Bytes>, ()> {
        SpliceRecv::read_chunk(self.quic_stream_mut(), max).await
    }
    fn stop_stream(&mut self, code: u32) {
        let _ = self.quic_stream_mut().stop(code.into());
    }
}

impl SpliceSend for aisa_tunnel::mux::driver::SendStream {
    async fn write_chunk(&mut self, chunk: bytes::Bytes) -> Result<(), ()> {
        aisa_tunnel::mux::driver::SendStream::write_chunk(self, chunk)
            .await
            .map_err(drop)
    }
    async fn finish_stream(&mut self) {
        let _ = self.finish();
    }
    fn reset_stream(&mut self, code: u32) {
        let _ = self.reset(code);
    }
    async fn stopped_by_peer(&mut self) {
        if self.stopped().await.is_err() {
            // The connection ended: the read side fails and ends the pump.
            std::future::pending::<()>().await;
        }
    }
}

impl SpliceRecv for aisa_tunnel::mux::driver::RecvStream {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<bytes::Bytes>, ()> {
        aisa_tunnel::mux::driver::RecvStream::read_chunk(self, max)
            .await
            .map_err(drop)
    }
    fn stop_stream(&mut self, code: u32) {
        let _ = self.stop(code);
    }
}

/// How one direction of a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// The source finished; the sink was finished.
    Finished,
    /// The source failed or was reset; the sink was reset.
    SourceFailed,
    /// The sink's peer stopped reading or went away; the source was stopped.
    SinkFailed,
}

/// Copies `from` into `to` until one of them ends, passing the end on. Adds every byte
/// copied to `counter`, and shows every chunk to `observer` when there is one.
pub async fn pump<R: SpliceRecv, W: SpliceSend>(
    mut from: R,
    mut to: W,
    counter: &AtomicU64,
    observer: Option<&dyn SpliceObserver>,
) -> PumpEnd {
    loop {
        let read = tokio::select! {
            read = from.read_chunk(MAX_CHUNK) => read,
            () = to.stopped_by_peer() => {
                from.stop_stream(PEER_GONE);
                return PumpEnd::SinkFailed;
            }
        };
        match read {
            Ok(None) => {
                to.finish_stream().await;
                return PumpEnd::Finished;
            }
            Ok(Some(chunk)) => {
                let n = chunk.len() as u64;
                if let Some(observer) = observer {
                    observer.chunk(&chunk);
                }
                if to.write_chunk(chunk).await.is_err() {
                    from.stop_stream(PEER_GONE);
                    return PumpEnd::SinkFailed;
                }
                counter.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                to.reset_stream(PEER_GONE);
                return PumpEnd::SourceFailed;
            }
        }
    }
}

/// Splices two bidirectional streams until both directions have ended.
pub async fn splice<AR, AW, BR, BW>(
    a: (AR, AW),
    b: (BR, BW),
    counter: &AtomicU64,
    observer: Option<&dyn SpliceObserver>,
) -> (PumpEnd, PumpEnd)
where
    AR: SpliceRecv,
    AW: SpliceSend,
    BR: SpliceRecv,
    BW: SpliceSend,
{
    let (a_recv, a_send) = a;
    let (b_recv, b_send) = b;
    tokio::join!(
        pump(a_recv, b_send, counter, observer),
        pump(b_recv, a_send, counter, observer)
    )
}
