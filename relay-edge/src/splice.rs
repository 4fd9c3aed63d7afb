//! Copies bytes between a browser's stream and a desktop's stream without parsing them.
//!
//! Data moves as the transport's own chunks (`read_chunk` / `write_chunk`): no copy in
//! the relay, and at most one chunk per direction in flight. The halves are generic
//! ([`SpliceSend`], [`SpliceRecv`]): quinn and wtransport streams, tunnel's mux streams
//! (a browser on a WebSocket), and a desktop's streams on either of its links
//! ([`crate::link::LinkSend`], QUIC or the mux). A write waits for the
//! receiver's flow-control credit, so a slow reader slows the writer: nothing is
//! buffered without bound. A clean finish on one side finishes the other; a reset is
//! passed on as a reset; a peer that stops reading stops the sender, once the other
//! direction has ended ([`STOP_GRACE`]).

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
        if !matches!(self.stopped().await, Ok(Some(_))) {
            // Delivered to the end (not a stop), or the connection ended (the read side
            // fails and ends the pump).
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

/// How long a stop from one side waits, once the other direction has ended, for the
/// stopped direction to end by itself before the relay stops it.
///
/// Some browsers (Firefox 153) fail a stream's readable side when STOP_SENDING for their
/// own direction arrives before they have read the answer and its FIN. A desktop stops
/// reading once it has answered, so passing its stop on at once would overtake the
/// answer's last bytes. Holding the stop until the answer has ended, and a little
/// longer, lets the browser read the answer (and usually finish its side first).
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Copies `from` into `to` until one of them ends, passing the end on, as one direction
/// of a splice. Adds every byte copied to `counter`, and shows every chunk to `observer`
/// when there is one. `flowing_done` is set once this direction carries no more data; when `to`'s peer stops reading, `from` is stopped only after
/// `other_done` (the other direction's flag) is set and [`STOP_GRACE`] has passed
/// without `from` ending by itself (its bytes are read and dropped meanwhile).
async fn pump<R: SpliceRecv, W: SpliceSend>(
    mut from: R,
    mut to: W,
    counter: &AtomicU64,
    observer: Option<&dyn SpliceObserver>,
    flowing_done: &tokio::sync::watch::Sender<bool>,
    mut other_done: tokio::sync::watch::Receiver<bool>,
) -> PumpEnd {
    let end = loop {
        let read = tokio::select! {
            read = from.read_chunk(MAX_CHUNK) => read,
            () = to.stopped_by_peer() => break None,
        };
        match read {
            Ok(None) => {
                to.finish_stream().await;
                break Some(PumpEnd::Finished);
            }
            Ok(Some(chunk)) => {
                let n = chunk.len() as u64;
                if let Some(observer) = observer {
                    observer.chunk(&chunk);
                }
                if to.write_chunk(chunk).await.is_err() {
                    break None;
                }
                counter.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                to.reset_stream(PEER_GONE);
                break Some(PumpEnd::SourceFailed);
            }
        }
    };
    let _ = flowing_done.send(true);
    if let Some(end) = end {
        return end;
    }
    // The sink's peer stopped reading: hold the stop until the other direction is done
    // (both directions set their flag before waiting, so two stops never wait on each
    // other), then give the source a moment to end by itself.
    let _ = other_done.wait_for(|done| *done).await;
    let drained = tokio::time::timeout(STOP_GRACE, async {
        loop {
            match from.read_chunk(MAX_CHUNK).await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    if drained.is_err() {
        from.stop_stream(PEER_GONE);
    }
    PumpEnd::SinkFailed
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
    let (a_to_b_done, a_to_b) = tokio::sync::watch::channel(false);
    let (b_to_a_done, b_to_a) = tokio::sync::watch::channel(false);
    tokio::join!(
        pump(a_recv, b_send, counter, observer, &a_to_b_done, b_to_a),
        pump(b_recv, a_send, counter, observer, &b_to_a_done, a_to_b)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    /// A receive half that yields `chunks` (each after `delay`), then its end: `Ok(None)`
    /// when `ends`, else nothing ever again.
    struct Source {
        name: &'static str,
        chunks: VecDeque<Bytes>,
        delay: Duration,
        ends: bool,
        log: Log,
    }

    impl SpliceRecv for Source {
        async fn read_chunk(&mut self, _max: usize) -> Result<Option<Bytes>, ()> {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    tokio::time::sleep(self.delay).await;
                    Ok(Some(chunk))
                }
                None if self.ends => Ok(None),
                None => std::future::pending().await,
            }
        }
        fn stop_stream(&mut self, code: u32) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} stopped {code}", self.name));
        }
    }

    /// A send half whose peer stops reading at once when `stopped`.
    struct Sink {
        name: &'static str,
        stopped: bool,
        log: Log,
    }

    impl SpliceSend for Sink {
        async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), ()> {
            if self.stopped {
                return Err(());
            }
            let text = String::from_utf8_lossy(&chunk).into_owned();
            self.log
                .lock()
                .unwrap()
                .push(format!("{} got {text}", self.name));
            Ok(())
        }
        async fn finish_stream(&mut self) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} finished", self.name));
        }
        fn reset_stream(&mut self, code: u32) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} reset {code}", self.name));
        }
        async fn stopped_by_peer(&mut self) {
            if !self.stopped {
                std::future::pending::<()>().await;
            }
        }
    }

    fn source(name: &'static str, chunks: &[&'static str], ends: bool, log: &Log) -> Source {
        Source {
            name,
            chunks: chunks
                .iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
            delay: Duration::from_millis(10),
            ends,
            log: log.clone(),
        }
    }

    fn sink(name: &'static str, stopped: bool, log: &Log) -> Sink {
        Sink {
            name,
            stopped,
            log: log.clone(),
        }
    }

    fn position(log: &Log, entry: &str) -> Option<usize> {
        log.lock().unwrap().iter().position(|e| e == entry)
    }

    #[tokio::test]
    async fn a_desktop_that_stops_reading_does_not_overtake_its_answer() {
        // The desktop answers three chunks and FIN but stopped reading the browser's
        // side at once; the browser keeps its side open (as it may, to send a CANCEL).
        let log = Log::default();
        let browser = (
            source("from browser", &[], false, &log),
            sink("to browser", false, &log),
        );
        let desktop = (
            source("from desktop", &["a", "b", "c"], true, &log),
            sink("to desktop", true, &log),
        );
        let ends = splice(browser, desktop, &AtomicU64::new(0), None).await;
        assert_eq!(ends, (PumpEnd::SinkFailed, PumpEnd::Finished));
        let finished = position(&log, "to browser finished").expect("the answer finished");
        let stopped = position(&log, &format!("from browser stopped {PEER_GONE}"))
            .expect("the browser's side is stopped in the end");
        assert!(finished < stopped, "{:?}", log.lock().unwrap());
        assert_eq!(position(&log, "to browser got c"), Some(finished - 1));
    }

    #[tokio::test]
    async fn a_browser_that_finishes_within_the_grace_is_not_stopped() {
        let log = Log::default();
        let browser = (
            source("from browser", &["request"], true, &log),
            sink("to browser", false, &log),
        );
        let desktop = (
            source("from desktop", &["answer"], true, &log),
            sink("to desktop", true, &log),
        );
        splice(browser, desktop, &AtomicU64::new(0), None).await;
        assert!(
            !log.lock().unwrap().iter().any(|e| e.ends_with("stopped 1")),
            "{:?}",
            log.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn two_sides_that_stop_reading_stop_each_other_without_waiting_forever() {
        let log = Log::default();
        let a = (source("from a", &[], false, &log), sink("to a", true, &log));
        let b = (source("from b", &[], false, &log), sink("to b", true, &log));
        let ends = tokio::time::timeout(
            Duration::from_secs(10),
            splice(a, b, &AtomicU64::new(0), None),
        )
        .await
        .expect("no deadlock");
        assert_eq!(ends, (PumpEnd::SinkFailed, PumpEnd::SinkFailed));
        assert!(position(&log, "from a stopped 1").is_some());
        assert!(position(&log, "from b stopped 1").is_some());
    }

    #[tokio::test]
    async fn a_reset_source_resets_the_sink_at_once() {
        struct Broken;
        impl SpliceRecv for Broken {
            async fn read_chunk(&mut self, _max: usize) -> Result<Option<Bytes>, ()> {
                Err(())
            }
            fn stop_stream(&mut self, _code: u32) {}
        }
        let log = Log::default();
        let pumped = tokio::time::timeout(
            Duration::from_millis(1),
            pump(
                Broken,
                sink("to b", false, &log),
                &AtomicU64::new(0),
                None,
                &tokio::sync::watch::channel(false).0,
                tokio::sync::watch::channel(false).1,
            ),
        )
        .await;
        assert_eq!(pumped, Ok(PumpEnd::SourceFailed));
        assert!(position(&log, &format!("to b reset {PEER_GONE}")).is_some());
    }
}
