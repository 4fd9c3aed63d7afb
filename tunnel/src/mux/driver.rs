//! The tokio driver: runs a [`Connection`] over a transport and hands out stream halves.
//!
//! A transport is two halves: a [`FrameSource`] that yields the peer's frames and a
//! [`FrameSink`] that sends ours. [`ByteSource`] / [`ByteSink`] adapt any tokio byte
//! stream (TLS/TCP); a WebSocket adapter sends one frame per binary message and decodes
//! each with [`Frame::decode_message`] (the relay's is in `relay-edge/src/ws.rs`).
//!
//! [`start`] returns a [`MuxConnection`] (open and accept streams, close, wait for the
//! end) and the driver future, which the caller spawns and owns. The driver reads frames
//! into the state machine, writes what it queues, PINGs every `keepalive.interval` and
//! closes with [`code::IDLE_TIMEOUT`] when nothing arrived for `keepalive.timeout`.
//!
//! [`SendStream`] and [`RecvStream`] offer chunk-level calls (`write_chunk`,
//! `read_chunk`, `finish`, `reset`, `stop`, `stopped`, as quinn's streams do) and tokio's
//! `AsyncWrite` / `AsyncRead`. Dropping a [`SendStream`] finishes it, dropping a
//! [`RecvStream`] before its end stops it with code 0.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::code;
use super::conn::{Closed, Config, Connection, OpenError, Read, Side, StreamError};
use super::frame::{Frame, FrameDecoder, FrameError, StreamId, kind as frame_kind};

/// Why a transport could not give the next frame.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The bytes are not a valid frame: the connection is closed with a GOAWAY
    /// ([`code::PROTOCOL_ERROR`]) saying why.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The transport sent something that is not a frame at all (a WebSocket text
    /// message, say): closed like a bad frame.
    #[error("{0}")]
    NotAFrame(String),
    /// The transport failed.
    #[error("transport failed: {0}")]
    Io(#[from] io::Error),
}

/// Where the peer's frames come from.
pub trait FrameSource: Send + 'static {
    /// The next frame; `Ok(None)` when the transport ended cleanly.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Frame>, SourceError>> + Send;
}

/// Where this side's frames go.
pub trait FrameSink: Send + 'static {
    /// Sends (or buffers) one frame.
    fn send(&mut self, frame: Frame) -> impl Future<Output = io::Result<()>> + Send;
    /// Pushes out whatever [`FrameSink::send`] buffered.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the transport after the last frame (the GOAWAY).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Frames from a byte stream (TLS/TCP).
#[derive(Debug)]
pub struct ByteSource<R> {
    reader: R,
    decoder: FrameDecoder,
}

impl<R> ByteSource<R> {
    /// Reads frames from `reader`.
    pub fn new(reader: R) -> Self {
        ByteSource {
            reader,
            decoder: FrameDecoder::new(),
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameSource for ByteSource<R> {
    async fn recv(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let buf = self.decoder.buffer();
            buf.reserve(16 * 1024);
            if self.reader.read_buf(buf).await? == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
        }
    }
}

/// Frames onto a byte stream (TLS/TCP), batched until [`FrameSink::flush`].
#[derive(Debug)]
pub struct ByteSink<W> {
    writer: W,
    buf: BytesMut,
}

impl<W> ByteSink<W> {
    /// Writes frames to `writer`.
    pub fn new(writer: W) -> Self {
        ByteSink {
            writer,
            buf: BytesMut::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameSink for ByteSink<W> {
    async fn send(&mut self, frame: Frame) -> io::Result<()> {
        frame.encode(&mut self.buf);
        if self.buf.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }
    async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let out = self.buf.split().freeze();
            self.writer.write_all(&out).await?;
        }
        self.writer.flush().await
    }
    async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
    }
}

/// Liveness: how often to PING and when to give up on a silent peer.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    /// Time between PINGs.
    pub interval: Duration,
    /// Silence (no frame at all received) after which the connection is closed with
    /// [`code::IDLE_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
struct StreamWakers {
    read: Option<Waker>,
    write: Option<Waker>,
    stopped: Option<Waker>,
}

impl StreamWakers {
    fn wake(&mut self) {
        for w in [self.read.take(), self.write.take(), self.stopped.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }
}

struct State {
    conn: Connection,
    wakers: HashMap<StreamId, StreamWakers>,
    accept: Option<Waker>,
    closed: Vec<Waker>,
}

impl State {
    fn wake_stream(&mut self, id: StreamId) {
        if let Some(w) = self.wakers.get_mut(&id) {
            w.wake();
        }
    }
    /// Wakes only the handles a frame of type `kind` on stream `id` concerns: its reader
    /// for DATA, FINISH and RESET, its writer for CREDIT, its writer and `stopped` for
    /// STOP. (A stream that is over wakes everyone, [`State::wake_stream`].)
    fn wake_for(&mut self, id: StreamId, kind: u8) {
        let Some(w) = self.wakers.get_mut(&id) else {
            return;
        };
        let wake = |slot: &mut Option<Waker>| {
            if let Some(w) = slot.take() {
                w.wake();
            }
        };
        match kind {
            frame_kind::DATA | frame_kind::FINISH | frame_kind::RESET => wake(&mut w.read),
            frame_kind::CREDIT => wake(&mut w.write),
            frame_kind::STOP => {
                wake(&mut w.write);
                wake(&mut w.stopped);
            }
            _ => w.wake(),
        }
    }
    /// Wakes stream `id`'s `stopped` (its FINISH was handed to the transport).
    fn wake_stopped(&mut self, id: StreamId) {
        if let Some(slot) = self.wakers.get_mut(&id).map(|w| &mut w.stopped)
            && let Some(w) = slot.take()
        {
            w.wake();
        }
    }
    fn wake_all(&mut self) {
        for w in self.wakers.values_mut() {
            w.wake();
        }
        if let Some(w) = self.accept.take() {
            w.wake();
        }
        for w in self.closed.drain(..) {
            w.wake();
        }
    }
    fn wake_writers(&mut self) {
        for w in self.wakers.values_mut() {
            if let Some(w) = w.write.take() {
                w.wake();
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    transmit: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Runs `f` on the state and wakes the writer if it queued a frame.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.lock();
        let out = f(&mut state);
        let notify = state.conn.has_transmit();
        drop(state);
        if notify {
            self.transmit.notify_one();
        }
        out
    }
}

/// One mux connection: opens and accepts streams. Cheap to clone.
#[derive(Clone)]
pub struct MuxConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MuxConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxConnection")
            .field("id", &self.stable_id())
            .finish()
    }
}

/// Starts a mux connection over `source` and `sink`. Returns the connection and the
/// driver future: spawn it (and keep its handle); the connection ends when it does.
pub fn start<S: FrameSource, K: FrameSink>(
    side: Side,
    config: Config,
    keepalive: KeepAlive,
    source: S,
    sink: K,
) -> (MuxConnection, impl Future<Output = ()> + Send + 'static) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            conn: Connection::new(side, config),
            wakers: HashMap::new(),
            accept: None,
            closed: Vec::new(),
        }),
        transmit: Notify::new(),
    });
    let driver = drive(shared.clone(), keepalive, source, sink);
    (MuxConnection { shared }, driver)
}

async fn drive<S: FrameSource, K: FrameSink>(
    shared: Arc<Shared>,
    keepalive: KeepAlive,
    mut source: S,
    mut sink: K,
) {
    let last_rx = Mutex::new(Instant::now());
    let reader = async {
        loop {
            let next = source.recv().await;
            *last_rx.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            let done = shared.with(|state| {
                match next {
                    // A broken rule closes with a GOAWAY: everyone is woken below.
                    Ok(Some(frame)) => {
                        let kind = frame.kind();
                        if let Ok(id) = state.conn.handle(frame) {
                            if id != 0 {
                                if state.conn.contains(id) {
                                    state.wake_for(id, kind);
                                } else {
                                    state.wake_stream(id);
                                    state.wakers.remove(&id);
                                }
                            }
                            if state.conn.has_incoming()
                                && let Some(w) = state.accept.take()
                            {
                                w.wake();
                            }
                        }
                    }
                    Ok(None) => state.conn.transport_lost("the transport ended"),
                    Err(SourceError::Io(err)) => state.conn.transport_lost(&err.to_string()),
                    Err(err) => state.conn.close(code::PROTOCOL_ERROR, &err.to_string()),
                }
                let closed = state.conn.closed().is_some();
                if closed {
                    state.wake_all();
                }
                closed
            });
            if done {
                return;
            }
        }
    };
    let pinger = async {
        let mut tick = tokio::time::interval(keepalive.interval);
        tick.tick().await;
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            let silent = last_rx.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
            if silent >= keepalive.timeout {
                shared.with(|state| {
                    state.conn.close(
                        code::IDLE_TIMEOUT,
                        &format!("no frame from the peer for {} ms", silent.as_millis()),
                    );
                    state.wake_all();
                });
                return;
            }
            n += 1;
            shared.with(|state| state.conn.ping(n.to_be_bytes()));
        }
    };
    let writer = async {
        loop {
            let (frames, closed) = {
                let mut state = shared.lock();
                let frames: Vec<Frame> =
                    std::iter::from_fn(|| state.conn.poll_transmit()).collect();
                if !frames.is_empty() {
                    state.wake_writers();
                }
                for frame in &frames {
                    if let Frame::Finish { id } = frame {
                        state.wake_stopped(*id);
                    }
                }
                (frames, state.conn.closed().cloned())
            };
            if frames.is_empty() {
                if let Some(closed) = closed {
                    if !closed.by_peer {
                        sink.close().await;
                    }
                    return;
                }
                shared.transmit.notified().await;
                continue;
            }
            let mut failed = None;
            for frame in frames {
                if let Err(err) = sink.send(frame).await {
                    failed = Some(err);
                    break;
                }
            }
            if failed.is_none()
                && let Err(err) = sink.flush().await
            {
                failed = Some(err);
            }
            if let Some(err) = failed {
                shared.with(|state| {
                    state.conn.transport_lost(&err.to_string());
                    state.wake_all();
                });
                return;
            }
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        () = reader => {}
        () = pinger => {}
        () = &mut writer => return,
    }
    // Closed: let the writer send what is left (the GOAWAY), within a bound.
    shared.transmit.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

impl MuxConnection {
    /// Opens a bidirectional stream. As on QUIC, the peer learns of it with the stream's
    /// first frame: the OPEN is queued but the writer is not woken for it alone, so it
    /// leaves in the same write as the first DATA (or FINISH, RESET, STOP) instead of
    /// costing a write and a wake-up of its own on both ends.
    pub fn open_bi(&self) -> Result<(SendStream, RecvStream), OpenError> {
        let id = {
            let mut state = self.shared.lock();
            let id = state.conn.open()?;
            state.wakers.insert(id, StreamWakers::default());
            id
        };
        Ok(self.halves(id))
    }

    fn halves(&self, id: StreamId) -> (SendStream, RecvStream) {
        (
            SendStream {
                shared: self.shared.clone(),
                id,
                finished: false,
            },
            RecvStream {
                shared: self.shared.clone(),
                id,
                ended: false,
            },
        )
    }

    /// The next stream the peer opens; `None` once the connection is closed.
    pub async fn accept_bi(&self) -> Option<(SendStream, RecvStream)> {
        let id = poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(id) = state.conn.accept() {
                state.wakers.insert(id, StreamWakers::default());
                return Poll::Ready(Some(id));
            }
            if state.conn.closed().is_some() {
                return Poll::Ready(None);
            }
            state.accept = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Some(self.halves(id))
    }

    /// Closes the connection with an application `code` and `reason` (a GOAWAY).
    pub fn close(&self, code: u32, reason: &str) {
        self.shared.with(|state| {
            state.conn.close(code, reason);
            state.wake_all();
        });
    }

    /// How the connection ended, if it has.
    pub fn close_reason(&self) -> Option<Closed> {
        self.shared.lock().conn.closed().cloned()
    }

    /// Completes when the connection ends, with how.
    pub async fn closed(&self) -> Closed {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(closed) = state.conn.closed() {
                return Poll::Ready(closed.clone());
            }
            state.closed.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// An id that stays the same for this connection (its address).
    pub fn stable_id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Changes how many streams the peer may have open at once (see
    /// [`Connection::set_max_incoming_streams`]).
    pub fn set_max_incoming_streams(&self, max: usize) {
        self.shared.lock().conn.set_max_incoming_streams(max);
    }

    /// Streams the connection still holds state for.
    pub fn stream_count(&self) -> usize {
        self.shared.lock().conn.stream_count()
    }
}

/// The sending half of a mux stream.
pub struct SendStream {
    shared: Arc<Shared>,
    id: StreamId,
    /// This handle finished the stream.
    finished: bool,
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream").field("id", &self.id).finish()
    }
}

impl SendStream {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    fn poll_write_bytes(
        &self,
        cx: &mut Context<'_>,
        data: &Bytes,
    ) -> Poll<Result<usize, StreamError>> {
        self.shared
            .with(|state| match state.conn.write(self.id, data) {
                Ok(0) => {
                    if let Some(w) = state.wakers.get_mut(&self.id) {
                        w.write = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
                other => Poll::Ready(other),
            })
    }

    /// Writes all of `data`, waiting for credit as needed.
    pub async fn write_chunk(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_write_bytes(cx, &data)).await?;
            let _ = data.split_to(n);
        }
        Ok(())
    }

    /// Ends the stream cleanly after the bytes written.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.shared.with(|state| state.conn.finish(self.id))?;
        self.finished = true;
        Ok(())
    }

    /// Abandons the stream with `code`.
    pub fn reset(&mut self, code: u32) -> Result<(), StreamError> {
        self.shared.with(|state| state.conn.reset(self.id, code))
    }

    /// Completes as quinn's `stopped` does: `Ok(Some(code))` when the peer asks us to
    /// stop sending; `Ok(None)` once the stream is finished and its FINISH handed to the
    /// transport (every byte is on its way, [`Connection::finish_sent`]); an error when
    /// the connection ends first.
    ///
    /// [`Connection::finish_sent`]: super::conn::Connection::finish_sent
    pub async fn stopped(&mut self) -> Result<Option<u32>, StreamError> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(code) = state.conn.stopped(self.id) {
                return Poll::Ready(Ok(Some(code)));
            }
            if self.finished && state.conn.finish_sent(self.id) {
                return Poll::Ready(Ok(None));
            }
            if let Some(closed) = state.conn.closed() {
                return Poll::Ready(Err(StreamError::ConnectionClosed(closed.clone())));
            }
            if let Some(w) = state.wakers.get_mut(&self.id) {
                w.stopped = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

fn to_io(err: StreamError) -> io::Error {
    let kind = match err {
        StreamError::Reset(_) | StreamError::Stopped(_) => io::ErrorKind::ConnectionReset,
        StreamError::ConnectionClosed(_) => io::ErrorKind::ConnectionAborted,
        StreamError::ClosedLocally | StreamError::Unknown(_) => io::ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, err)
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let take = buf.len().min(super::frame::MAX_DATA);
        let data = Bytes::copy_from_slice(&buf[..take]);
        self.poll_write_bytes(cx, &data).map_err(to_io)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.finish() {
            Ok(()) | Err(StreamError::ClosedLocally) => Poll::Ready(Ok(())),
            Err(err) => Poll::Ready(Err(to_io(err))),
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        self.shared.with(|state| {
            state.conn.release_send(self.id);
            if let Some(w) = state.wakers.get_mut(&self.id) {
                w.write = None;
                w.stopped = None;
            }
            if !state.conn.contains(self.id) {
                state.wakers.remove(&self.id);
            }
        });
    }
}

/// The receiving half of a mux stream.
pub struct RecvStream {
    shared: Arc<Shared>,
    id: StreamId,
    ended: bool,
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream").field("id", &self.id).finish()
    }
}

impl RecvStream {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        if self.ended {
            return Poll::Ready(Ok(None));
        }
        let id = self.id;
        let polled = self.shared.with(|state| match state.conn.read(id, max) {
            Ok(Read::Data(data)) => Poll::Ready(Ok(Some(data))),
            Ok(Read::End) => Poll::Ready(Ok(None)),
            Ok(Read::Blocked) => {
                if let Some(w) = state.wakers.get_mut(&id) {
                    w.read = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(err) => Poll::Ready(Err(err)),
        });
        if let Poll::Ready(Ok(None)) = polled {
            self.ended = true;
        }
        polled
    }

    /// The next chunk of at most `max` bytes; `Ok(None)` at the peer's FINISH.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Stops reading and asks the peer to stop sending, with `code`.
    pub fn stop(&mut self, code: u32) -> Result<(), StreamError> {
        self.shared.with(|state| state.conn.stop(self.id, code))
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let max = buf.remaining();
        if max == 0 {
            return Poll::Ready(Ok(()));
        }
        match self.poll_read_chunk(cx, max) {
            Poll::Ready(Ok(Some(data))) => {
                buf.put_slice(&data);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(err)) => Poll::Ready(Err(to_io(err))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        self.shared.with(|state| {
            state.conn.release_recv(self.id);
            if let Some(w) = state.wakers.get_mut(&self.id) {
                w.read = None;
            }
            if !state.conn.contains(self.id) {
                state.wakers.remove(&self.id);
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::mux::INITIAL_WINDOW;
    use crate::mux::frame::MAX_DATA;

    type Pair = (MuxConnection, MuxConnection);

    /// Two connections over an in-memory byte pipe, their drivers spawned (also for
    /// `mux::halves`' tests).
    pub(crate) fn pair(keepalive: KeepAlive) -> Pair {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (ca, da) = start(
            Side::Dialer,
            Config::default(),
            keepalive,
            ByteSource::new(ar),
            ByteSink::new(aw),
        );
        let (cb, db) = start(
            Side::Acceptor,
            Config::default(),
            keepalive,
            ByteSource::new(br),
            ByteSink::new(bw),
        );
        tokio::spawn(da);
        tokio::spawn(db);
        (ca, cb)
    }

    #[tokio::test]
    async fn echo_over_a_byte_stream() {
        let (a, b) = pair(KeepAlive::default());
        tokio::spawn(async move {
            while let Some((mut send, mut recv)) = b.accept_bi().await {
                tokio::spawn(async move {
                    while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
                        send.write_chunk(chunk).await.unwrap();
                    }
                    send.finish().unwrap();
                });
            }
        });
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let (mut send, mut recv) = a.open_bi().unwrap();
        let data = payload.clone();
        let writer = tokio::spawn(async move {
            send.write_all(&data).await.unwrap();
            send.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        recv.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), payload.len());
        assert!(back == payload);
    }

    #[tokio::test]
    async fn a_stalled_reader_does_not_block_another_stream() {
        let (a, b) = pair(KeepAlive::default());
        let (mut slow_send, _slow_recv) = a.open_bi().unwrap();
        // Nobody reads the slow stream on the far side: its writer must stop at the window.
        let (_slow_far_send, _slow_far_recv) = b.accept_bi().await.unwrap();
        let filled = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                slow_send
                    .write_chunk(Bytes::from(vec![0u8; MAX_DATA]))
                    .await
                    .unwrap();
            }
        })
        .await;
        assert!(filled.is_err(), "writer blocked on credit");
        let (mut fast_send, _fast_recv) = a.open_bi().unwrap();
        fast_send
            .write_chunk(Bytes::from_static(b"still moving"))
            .await
            .unwrap();
        fast_send.finish().unwrap();
        let (_s, mut fast_far) = tokio::time::timeout(Duration::from_secs(2), b.accept_bi())
            .await
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), fast_far.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"still moving");
    }

    #[tokio::test]
    async fn stop_reaches_the_writer_and_reset_the_reader() {
        let (a, b) = pair(KeepAlive::default());
        let (mut send, mut recv) = a.open_bi().unwrap();
        send.write_chunk(Bytes::from_static(b"x")).await.unwrap();
        let (mut far_send, mut far_recv) = b.accept_bi().await.unwrap();
        far_recv.stop(7).unwrap();
        assert_eq!(send.stopped().await.unwrap(), Some(7));
        far_send.reset(9).unwrap();
        assert_eq!(recv.read_chunk(10).await, Err(StreamError::Reset(9)));
    }

    #[tokio::test]
    async fn close_is_seen_by_the_peer_with_code_and_reason() {
        let (a, b) = pair(KeepAlive::default());
        let (_s, mut recv) = a.open_bi().unwrap();
        b.close(5, "silent");
        let closed = a.closed().await;
        assert_eq!(
            (closed.code, closed.reason.as_str(), closed.by_peer),
            (5, "silent", true)
        );
        assert!(matches!(
            recv.read_chunk(1).await,
            Err(StreamError::ConnectionClosed(_))
        ));
        assert!(b.accept_bi().await.is_none());
    }

    #[tokio::test]
    async fn a_malformed_frame_closes_with_a_protocol_error() {
        let (raw, b) = tokio::io::duplex(1024);
        let (br, bw) = tokio::io::split(b);
        let (conn, driver) = start(
            Side::Acceptor,
            Config::default(),
            KeepAlive::default(),
            ByteSource::new(br),
            ByteSink::new(bw),
        );
        tokio::spawn(driver);
        let (raw_r, mut raw_w) = tokio::io::split(raw);
        raw_w
            .write_all(&[0x0a, 0, 0, 0, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        let closed = conn.closed().await;
        assert_eq!(closed.code, code::PROTOCOL_ERROR);
        assert!(
            closed.reason.contains("unknown mux frame type 0x0a"),
            "{}",
            closed.reason
        );
        // The peer gets a GOAWAY saying so.
        let mut source = ByteSource::new(raw_r);
        let Some(Frame::GoAway { code: c, reason }) = source.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(c, code::PROTOCOL_ERROR);
        assert!(reason.contains("0x0a"));
    }

    // Real time, short keep-alives: the paused clock (tokio's `test-util`) would give the
    // test build a second tokio and rebuild everything above it (CI's disk and minutes).
    #[tokio::test]
    async fn a_silent_peer_is_closed_after_the_timeout() {
        let (raw, b) = tokio::io::duplex(1024);
        let (br, bw) = tokio::io::split(b);
        let keep = KeepAlive {
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(60),
        };
        let (conn, driver) = start(
            Side::Acceptor,
            Config::default(),
            keep,
            ByteSource::new(br),
            ByteSink::new(bw),
        );
        tokio::spawn(driver);
        let closed = conn.closed().await;
        assert_eq!(closed.code, code::IDLE_TIMEOUT);
        drop(raw);
    }

    #[tokio::test]
    async fn pings_keep_a_live_peer_open() {
        // Twenty pings' worth of time, with a timeout loose enough for a loaded CI machine.
        let keep = KeepAlive {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(600),
        };
        let (a, _b) = pair(keep);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(a.close_reason().is_none());
    }

    /// Frames the test pushes in, as if from the peer.
    struct Injected(tokio::sync::mpsc::UnboundedReceiver<Frame>);

    impl FrameSource for Injected {
        async fn recv(&mut self) -> Result<Option<Frame>, SourceError> {
            Ok(self.0.recv().await)
        }
    }

    /// Records what each flush pushed out: one entry per transport write.
    #[derive(Clone, Default)]
    struct Writes {
        pending: Arc<Mutex<Vec<Frame>>>,
        flushed: Arc<Mutex<Vec<Vec<Frame>>>>,
    }

    impl FrameSink for Writes {
        async fn send(&mut self, frame: Frame) -> io::Result<()> {
            self.pending.lock().unwrap().push(frame);
            Ok(())
        }
        async fn flush(&mut self) -> io::Result<()> {
            let batch = std::mem::take(&mut *self.pending.lock().unwrap());
            if !batch.is_empty() {
                self.flushed.lock().unwrap().push(batch);
            }
            Ok(())
        }
        async fn close(&mut self) {}
    }

    fn scripted() -> (
        MuxConnection,
        tokio::sync::mpsc::UnboundedSender<Frame>,
        Writes,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let writes = Writes::default();
        let (conn, driver) = start(
            Side::Acceptor,
            Config::default(),
            KeepAlive::default(),
            Injected(rx),
            writes.clone(),
        );
        tokio::spawn(driver);
        (conn, tx, writes)
    }

    #[tokio::test]
    async fn open_leaves_in_one_write_with_the_first_data() {
        let (conn, _peer, writes) = scripted();
        // The driver runs and waits for something to send.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (mut send, _recv) = conn.open_bi().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            writes.flushed.lock().unwrap().is_empty(),
            "an OPEN alone was written"
        );
        send.write_chunk(Bytes::from_static(b"header"))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), async {
            while writes.flushed.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(
            writes.flushed.lock().unwrap()[0],
            [
                Frame::Open { id: 2 },
                Frame::Data {
                    id: 2,
                    data: Bytes::from_static(b"header")
                }
            ]
        );
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Counter {
        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn data_wakes_the_reader_not_the_writer_waiting_for_credit() {
        let (conn, peer, writes) = scripted();
        peer.send(Frame::Open { id: 1 }).unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        // Use up the window, so the next write waits for CREDIT.
        let mut left = INITIAL_WINDOW as usize;
        while left > 0 {
            let n = left.min(MAX_DATA);
            send.write_chunk(Bytes::from(vec![0; n])).await.unwrap();
            left -= n;
        }
        // Wait until the driver has written it all (draining the queue wakes writers
        // that wait for room in it).
        let sent = || -> usize {
            let flushed = writes.flushed.lock().unwrap();
            flushed
                .iter()
                .flatten()
                .map(|f| match f {
                    Frame::Data { data, .. } => data.len(),
                    _ => 0,
                })
                .sum()
        };
        tokio::time::timeout(Duration::from_secs(2), async {
            while sent() < INITIAL_WINDOW as usize {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        let writer = Arc::new(Counter::default());
        let reader = Arc::new(Counter::default());
        let more = Bytes::from_static(b"more");
        let waker = Waker::from(writer.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(send.poll_write_bytes(&mut cx, &more).is_pending());
        let waker_r = Waker::from(reader.clone());
        let mut cx_r = Context::from_waker(&waker_r);
        assert!(recv.poll_read_chunk(&mut cx_r, 100).is_pending());

        peer.send(Frame::Data {
            id: 1,
            data: Bytes::from_static(b"x"),
        })
        .unwrap();
        tokio::time::timeout(Duration::from_secs(2), async {
            while reader.count() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(writer.count(), 0, "DATA woke the writer waiting for credit");

        peer.send(Frame::Credit {
            id: 1,
            increment: 10,
        })
        .unwrap();
        tokio::time::timeout(Duration::from_secs(2), async {
            while writer.count() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        assert!(matches!(
            send.poll_write_bytes(&mut cx, &more),
            Poll::Ready(Ok(4))
        ));
    }
}
