//! Copies bytes between a browser's stream and a desktop's stream without parsing them.
//!
//! Data moves as the QUIC layer's own chunks (`read_chunk` / `write_chunk`): no copy in
//! the relay, and at most one chunk per direction in flight. A write waits for the
//! receiver's flow-control credit, so a slow reader slows the writer: nothing is
//! buffered without bound. A clean finish on one side finishes the other; a reset is
//! passed on as a reset; a peer that stops reading stops the sender.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Test hook: when tapped, every chunk the splice moves is also copied here. Off by
/// default (one relaxed load per chunk); tests turn it on with [`tap`] to prove what
/// the relay does (not) see.
static TAP_ON: AtomicBool = AtomicBool::new(false);
static TAP: Mutex<Option<tokio::sync::mpsc::UnboundedSender<bytes::Bytes>>> = Mutex::new(None);

/// For tests: from now on, every chunk spliced in this process (both directions, every
/// relay) is sent to the returned receiver too, until [`untap`].
pub fn tap() -> tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if let Ok(mut slot) = TAP.lock() {
        *slot = Some(tx);
    }
    TAP_ON.store(true, Ordering::Release);
    rx
}

/// For tests: stops copying spliced chunks.
pub fn untap() {
    TAP_ON.store(false, Ordering::Release);
    if let Ok(mut slot) = TAP.lock() {
        *slot = None;
    }
}

fn tapped(chunk: &bytes::Bytes) {
    if TAP_ON.load(Ordering::Relaxed)
        && let Ok(slot) = TAP.lock()
        && let Some(tx) = slot.as_ref()
    {
        let _ = tx.send(chunk.clone());
    }
}

/// Application error code for "the other side of the splice went away".
pub const PEER_GONE: u32 = 1;

/// The largest chunk taken from a stream at once.
const MAX_CHUNK: usize = 64 * 1024;

/// The sending half of a stream as the splice needs it.
pub trait SpliceSend: Send {
    /// The underlying QUIC stream, for writing chunks.
    fn quic(&mut self) -> &mut quinn::SendStream;
    /// Ends the stream cleanly.
    fn finish_stream(&mut self) -> impl Future<Output = ()> + Send;
    /// Abandons the stream with an error code.
    fn reset_stream(&mut self, code: u32);
    /// Completes when the peer asks us to stop sending.
    fn stopped_by_peer(&mut self) -> impl Future<Output = ()> + Send;
}

/// The receiving half of a stream as the splice needs it.
pub trait SpliceRecv: Send {
    /// The underlying QUIC stream, for reading chunks.
    fn quic(&mut self) -> &mut quinn::RecvStream;
    /// Asks the peer to stop sending.
    fn stop_stream(&mut self, code: u32);
}

impl SpliceSend for quinn::SendStream {
    fn quic(&mut self) -> &mut quinn::SendStream {
        self
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
    fn quic(&mut self) -> &mut quinn::RecvStream {
        self
    }
    fn stop_stream(&mut self, code: u32) {
        let _ = self.stop(code.into());
    }
}

impl SpliceSend for wtransport::SendStream {
    fn quic(&mut self) -> &mut quinn::SendStream {
        self.quic_stream_mut()
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
    fn quic(&mut self) -> &mut quinn::RecvStream {
        self.quic_stream_mut()
    }
    fn stop_stream(&mut self, code: u32) {
        let _ = self.quic_stream_mut().stop(code.into());
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
/// copied to `counter`.
pub async fn pump<R: SpliceRecv, W: SpliceSend>(
    mut from: R,
    mut to: W,
    counter: &AtomicU64,
) -> PumpEnd {
    loop {
        let read = tokio::select! {
            read = from.quic().read_chunk(MAX_CHUNK, true) => read,
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
                let n = chunk.bytes.len() as u64;
                tapped(&chunk.bytes);
                if to.quic().write_chunk(chunk.bytes).await.is_err() {
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
) -> (PumpEnd, PumpEnd)
where
    AR: SpliceRecv,
    AW: SpliceSend,
    BR: SpliceRecv,
    BW: SpliceSend,
{
    let (a_recv, a_send) = a;
    let (b_recv, b_send) = b;
    tokio::join!(pump(a_recv, b_send, counter), pump(b_recv, a_send, counter))
}
