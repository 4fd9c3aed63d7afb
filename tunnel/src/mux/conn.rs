//! The mux connection as a state machine: frames in, frames out, no I/O and no clock.
//!
//! [`Connection`] keeps the streams of one transport connection: which ids exist, what
//! each side may still send (per-stream credit), what has been received and not yet
//! read, and how each half ended. The driver ([`super::driver`]) feeds it the peer's
//! frames ([`Connection::handle`]) and sends what [`Connection::poll_transmit`] gives;
//! the application calls [`Connection::open`], [`Connection::read`],
//! [`Connection::write`], [`Connection::finish`], [`Connection::reset`] and
//! [`Connection::stop`] through its stream handles.
//!
//! Flow control: every stream starts with [`INITIAL_WINDOW`] bytes of credit in each
//! direction. A receiver grants more (CREDIT) as the application reads, once half a
//! window has been read; a sender never sends beyond its credit, and a peer that does is
//! a protocol error. So a stream whose reader is slow stops only its own sender, never
//! the others sharing the connection. [`Config::max_queued`] bounds the bytes written
//! but not yet taken by the driver, so a slow transport slows every writer instead of
//! growing a queue.
//!
//! It does not time anything out: keep-alive PINGs and the idle timeout belong to the
//! driver, which owns a clock.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::code;
use super::frame::{Frame, MAX_DATA, StreamId, truncate_reason};

/// The credit each side starts with on every stream, in each direction: 256 KiB.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// Which end of the transport this is; it decides the parity of the ids it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that dialed (browser, desktop node): opens odd ids.
    Dialer,
    /// The side that accepted (the relay): opens even ids.
    Acceptor,
}

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams the peer may have open at once; an OPEN beyond is refused with RESET and
    /// STOP carrying [`code::REFUSED_STREAM`].
    pub max_incoming_streams: usize,
    /// Bytes of DATA written by the application but not yet taken by the driver, above
    /// which [`Connection::write`] accepts nothing.
    pub max_queued: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_incoming_streams: 256,
            max_queued: 512 * 1024,
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The GOAWAY code (or [`code::CONNECTION_LOST`] when the transport ended without one).
    pub code: u32,
    /// The GOAWAY reason.
    pub reason: String,
    /// Whether the peer closed (true) or this side did (false).
    pub by_peer: bool,
}

/// The peer broke the mux rules; the connection is closed with a GOAWAY saying so.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("mux protocol error: {reason}")]
pub struct ProtocolError {
    /// The GOAWAY code sent ([`code::PROTOCOL_ERROR`] or [`code::FLOW_CONTROL_ERROR`]).
    pub code: u32,
    /// What was wrong.
    pub reason: String,
}

/// What [`Connection::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Bytes, in order.
    Data(Bytes),
    /// The peer finished the stream and every byte was read.
    End,
    /// Nothing yet: wait for the driver to handle more frames.
    Blocked,
}

/// Why a stream operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// The peer reset its sending half.
    #[error("stream reset by peer with code {0}")]
    Reset(u32),
    /// The peer asked us to stop sending.
    #[error("stream stopped by peer with code {0}")]
    Stopped(u32),
    /// This half was already finished, reset or stopped locally.
    #[error("stream half already closed")]
    ClosedLocally,
    /// No such stream (never opened, or over).
    #[error("unknown stream {0}")]
    Unknown(StreamId),
    /// The connection is closed.
    #[error("mux connection closed: code {code}: {reason}", code = .0.code, reason = .0.reason)]
    ConnectionClosed(Closed),
}

/// Why [`Connection::open`] failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The connection is closed.
    #[error("mux connection closed: code {code}: {reason}", code = .0.code, reason = .0.reason)]
    ConnectionClosed(Closed),
    /// This side used up its stream ids (2^31 streams).
    #[error("mux stream ids exhausted")]
    IdsExhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    Open,
    Finished,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvEnd {
    Finished,
    Reset(u32),
}

#[derive(Debug)]
struct Stream {
    incoming: bool,
    // Sending half.
    send: SendState,
    credit: u64,
    stopped: Option<u32>,
    send_released: bool,
    /// Our FINISH left [`Connection::poll_transmit`] (every byte before it did too).
    finish_sent: bool,
    // Receiving half.
    buffered: VecDeque<Bytes>,
    buffered_len: u64,
    /// Bytes the peer may still send before it breaks flow control.
    recv_window: u64,
    /// Bytes read by the application since the last CREDIT.
    unacked: u64,
    recv_end: Option<RecvEnd>,
    /// We sent STOP: drop whatever still arrives.
    recv_stopped: bool,
    recv_released: bool,
}

impl Stream {
    fn new(incoming: bool) -> Self {
        Stream {
            incoming,
            send: SendState::Open,
            credit: INITIAL_WINDOW.into(),
            stopped: None,
            send_released: false,
            finish_sent: false,
            buffered: VecDeque::new(),
            buffered_len: 0,
            recv_window: INITIAL_WINDOW.into(),
            unacked: 0,
            recv_end: None,
            recv_stopped: false,
            recv_released: false,
        }
    }

    /// Both halves over on the wire and both handles gone: the state can go.
    fn is_over(&self) -> bool {
        self.send_released
            && self.recv_released
            && self.send != SendState::Open
            && (self.recv_end.is_some() || self.recv_stopped)
    }
}

/// One mux connection's state (see the module doc).
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: Config,
    streams: HashMap<StreamId, Stream>,
    next_local: u64,
    /// Highest id the peer opened (0 before any).
    last_remote: StreamId,
    incoming_open: usize,
    accept_queue: VecDeque<StreamId>,
    transmit: VecDeque<Frame>,
    queued_data: usize,
    closed: Option<Closed>,
    pongs: VecDeque<[u8; 8]>,
}

impl Connection {
    /// A new connection on `side`.
    pub fn new(side: Side, config: Config) -> Self {
        Connection {
            side,
            config,
            streams: HashMap::new(),
            next_local: match side {
                Side::Dialer => 1,
                Side::Acceptor => 2,
            },
            last_remote: 0,
            incoming_open: 0,
            accept_queue: VecDeque::new(),
            transmit: VecDeque::new(),
            queued_data: 0,
            closed: None,
            pongs: VecDeque::new(),
        }
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    fn is_local(&self, id: StreamId) -> bool {
        (id % 2 == 1) == (self.side == Side::Dialer)
    }

    /// How the connection ended, once it has.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// Streams currently held (any half still alive).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Changes how many streams the peer may have open at once (from the next OPEN on):
    /// the relay raises it once a browser's stream has authenticated.
    pub fn set_max_incoming_streams(&mut self, max: usize) {
        self.config.max_incoming_streams = max;
    }

    /// Whether the connection still holds state for stream `id`.
    pub fn contains(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id)
    }

    /// Opens a stream and queues its OPEN.
    pub fn open(&mut self) -> Result<StreamId, OpenError> {
        if let Some(closed) = &self.closed {
            return Err(OpenError::ConnectionClosed(closed.clone()));
        }
        let id = StreamId::try_from(self.next_local).map_err(|_| OpenError::IdsExhausted)?;
        self.next_local += 2;
        self.streams.insert(id, Stream::new(false));
        self.transmit.push_back(Frame::Open { id });
        Ok(id)
    }

    /// The next stream the peer opened, if any.
    pub fn accept(&mut self) -> Option<StreamId> {
        self.accept_queue.pop_front()
    }

    /// Whether [`Connection::accept`] has something.
    pub fn has_incoming(&self) -> bool {
        !self.accept_queue.is_empty()
    }

    /// The next frame to send. DATA counts against [`Config::max_queued`] until taken here.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        let frame = self.transmit.pop_front()?;
        match &frame {
            Frame::Data { data, .. } => self.queued_data -= data.len(),
            Frame::Finish { id } => {
                if let Some(s) = self.streams.get_mut(id) {
                    s.finish_sent = true;
                }
            }
            _ => {}
        }
        Some(frame)
    }

    /// Whether frames wait in [`Connection::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// Queues a PING; its PONG shows in [`Connection::take_pong`].
    pub fn ping(&mut self, payload: [u8; 8]) {
        if self.closed.is_none() {
            self.transmit.push_back(Frame::Ping { payload });
        }
    }

    /// A PONG the peer sent, oldest first.
    pub fn take_pong(&mut self) -> Option<[u8; 8]> {
        self.pongs.pop_front()
    }

    /// Closes the connection: queues a GOAWAY (the last frame sent) and fails every stream.
    pub fn close(&mut self, code: u32, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        let reason = truncate_reason(reason).to_owned();
        self.discard_data();
        self.transmit.push_back(Frame::GoAway {
            code,
            reason: reason.clone(),
        });
        self.closed = Some(Closed {
            code,
            reason,
            by_peer: false,
        });
    }

    /// The transport ended (or failed) without a GOAWAY.
    pub fn transport_lost(&mut self, reason: &str) {
        if self.closed.is_none() {
            self.discard_data();
            self.closed = Some(Closed {
                code: code::CONNECTION_LOST,
                reason: reason.to_owned(),
                by_peer: true,
            });
        }
    }

    fn discard_data(&mut self) {
        self.transmit.retain(|f| !matches!(f, Frame::Data { .. }));
        self.queued_data = 0;
    }

    fn fail(&mut self, code: u32, reason: String) -> ProtocolError {
        self.close(code, &reason);
        ProtocolError { code, reason }
    }

    /// Handles one frame from the peer. Returns the stream it touched (0 for connection
    /// frames), so the driver knows whom to wake. A rule broken closes the connection
    /// with a GOAWAY and returns the error; frames after that are ignored.
    pub fn handle(&mut self, frame: Frame) -> Result<StreamId, ProtocolError> {
        if self.closed.is_some() {
            return Ok(0);
        }
        let id = frame.stream();
        match frame {
            Frame::Ping { payload } => {
                self.transmit.push_back(Frame::Pong { payload });
                return Ok(0);
            }
            Frame::Pong { payload } => {
                self.pongs.push_back(payload);
                return Ok(0);
            }
            Frame::GoAway { code, reason } => {
                self.discard_data();
                self.closed = Some(Closed {
                    code,
                    reason,
                    by_peer: true,
                });
                return Ok(0);
            }
            Frame::Open { id } => return self.handle_open(id).map(|()| id),
            _ => {}
        }
        if !self.streams.contains_key(&id) {
            // A frame for a stream that is over is a late one (crossed our STOP or RESET):
            // drop it. A frame for a stream never opened breaks the rules.
            let known = if self.is_local(id) {
                u64::from(id) < self.next_local
            } else {
                id <= self.last_remote
            };
            if known {
                return Ok(id);
            }
            return Err(self.fail(
                code::PROTOCOL_ERROR,
                format!(
                    "frame type 0x{:02x} for stream {id}, which was never opened",
                    frame.kind()
                ),
            ));
        }
        let result = match frame {
            Frame::Data { data, .. } => self.handle_data(id, data),
            Frame::Finish { .. } => self.handle_end(id, RecvEnd::Finished),
            Frame::Reset { code, .. } => self.handle_end(id, RecvEnd::Reset(code)),
            Frame::Stop { code, .. } => {
                self.handle_stop(id, code);
                Ok(())
            }
            Frame::Credit { increment, .. } => self.handle_credit(id, increment),
            _ => Ok(()),
        };
        result.map(|()| id)
    }

    fn handle_open(&mut self, id: StreamId) -> Result<(), ProtocolError> {
        if self.is_local(id) {
            return Err(self.fail(
                code::PROTOCOL_ERROR,
                format!("peer opened stream {id}, an id of this side's parity"),
            ));
        }
        if id <= self.last_remote {
            return Err(self.fail(
                code::PROTOCOL_ERROR,
                format!("peer opened stream {id} after stream {}", self.last_remote),
            ));
        }
        self.last_remote = id;
        if self.incoming_open >= self.config.max_incoming_streams {
            self.transmit.push_back(Frame::Reset {
                id,
                code: code::REFUSED_STREAM,
            });
            self.transmit.push_back(Frame::Stop {
                id,
                code: code::REFUSED_STREAM,
            });
            return Ok(());
        }
        self.incoming_open += 1;
        self.streams.insert(id, Stream::new(true));
        self.accept_queue.push_back(id);
        Ok(())
    }

    fn handle_data(&mut self, id: StreamId, data: Bytes) -> Result<(), ProtocolError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.recv_end.is_some() {
            return Err(self.fail(
                code::PROTOCOL_ERROR,
                format!("DATA on stream {id} after its FINISH or RESET"),
            ));
        }
        let n = data.len() as u64;
        if n > s.recv_window {
            let window = s.recv_window;
            return Err(self.fail(
                code::FLOW_CONTROL_ERROR,
                format!("{n} bytes of DATA on stream {id} with a window of {window}"),
            ));
        }
        s.recv_window -= n;
        if s.recv_stopped {
            // We stopped reading: drop it, but keep the peer's window honest.
            return Ok(());
        }
        if n > 0 {
            s.buffered_len += n;
            s.buffered.push_back(data);
        }
        Ok(())
    }

    fn handle_end(&mut self, id: StreamId, end: RecvEnd) -> Result<(), ProtocolError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        match (s.recv_end, end) {
            (None, _) => {}
            // A RESET after FINISH: the peer gave up on delivering; drop what is unread.
            (Some(RecvEnd::Finished), RecvEnd::Reset(_)) => {}
            _ => {
                return Err(self.fail(
                    code::PROTOCOL_ERROR,
                    format!("second FINISH or RESET on stream {id}"),
                ));
            }
        }
        if let RecvEnd::Reset(_) = end {
            s.buffered.clear();
            s.buffered_len = 0;
        }
        s.recv_end = Some(end);
        self.collect(id);
        Ok(())
    }

    fn handle_stop(&mut self, id: StreamId, code: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.stopped.is_none() {
            s.stopped = Some(code);
        }
        if s.send == SendState::Open {
            // Answer a STOP with a RESET, as QUIC does: the peer learns where our half ended.
            s.send = SendState::Reset;
            let dropped = self.drop_queued_data(id);
            self.queued_data -= dropped;
            self.transmit.push_back(Frame::Reset { id, code });
        }
        self.collect(id);
    }

    fn handle_credit(&mut self, id: StreamId, increment: u32) -> Result<(), ProtocolError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        s.credit += u64::from(increment);
        if s.credit > u64::from(u32::MAX) {
            return Err(self.fail(
                code::FLOW_CONTROL_ERROR,
                format!("credit on stream {id} above 2^32 bytes"),
            ));
        }
        Ok(())
    }

    fn drop_queued_data(&mut self, id: StreamId) -> usize {
        let mut dropped = 0;
        self.transmit.retain(|f| match f {
            Frame::Data { id: i, data } if *i == id => {
                dropped += data.len();
                false
            }
            _ => true,
        });
        dropped
    }

    fn stream(&mut self, id: StreamId) -> Result<&mut Stream, StreamError> {
        if let Some(closed) = &self.closed {
            return Err(StreamError::ConnectionClosed(closed.clone()));
        }
        self.streams.get_mut(&id).ok_or(StreamError::Unknown(id))
    }

    /// Takes up to `max` received bytes of stream `id`. Reading lets the peer send more:
    /// a CREDIT is queued once half a window has been read.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<Read, StreamError> {
        let s = self.stream(id)?;
        if s.recv_stopped {
            return Err(StreamError::ClosedLocally);
        }
        if let Some(RecvEnd::Reset(code)) = s.recv_end {
            return Err(StreamError::Reset(code));
        }
        let Some(front) = s.buffered.front_mut() else {
            return Ok(if s.recv_end.is_some() {
                Read::End
            } else {
                Read::Blocked
            });
        };
        let chunk = if front.len() <= max {
            s.buffered.pop_front().unwrap_or_default()
        } else {
            front.split_to(max.max(1))
        };
        let n = chunk.len() as u64;
        s.buffered_len -= n;
        s.unacked += n;
        if s.recv_end.is_none() && s.unacked >= u64::from(INITIAL_WINDOW / 2) {
            let increment = s.unacked as u32;
            s.recv_window += s.unacked;
            s.unacked = 0;
            self.transmit.push_back(Frame::Credit { id, increment });
        }
        Ok(Read::Data(chunk))
    }

    /// Queues up to the stream's credit (and [`MAX_DATA`], and the queue's room) of
    /// `data` as DATA, returning how many bytes were taken; 0 means blocked: wait for a
    /// CREDIT or for the driver to drain the queue.
    pub fn write(&mut self, id: StreamId, data: &Bytes) -> Result<usize, StreamError> {
        let room = self.config.max_queued.saturating_sub(self.queued_data);
        let s = self.stream(id)?;
        if let Some(code) = s.stopped {
            return Err(StreamError::Stopped(code));
        }
        if s.send != SendState::Open {
            return Err(StreamError::ClosedLocally);
        }
        let n = data
            .len()
            .min(MAX_DATA)
            .min(room)
            .min(usize::try_from(s.credit).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        s.credit -= n as u64;
        self.queued_data += n;
        self.transmit.push_back(Frame::Data {
            id,
            data: data.slice(..n),
        });
        Ok(n)
    }

    /// Bytes stream `id` may send now (its credit).
    pub fn credit(&self, id: StreamId) -> u64 {
        self.streams.get(&id).map_or(0, |s| s.credit)
    }

    /// The peer's STOP code, once it asked us to stop sending on `id`.
    pub fn stopped(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).and_then(|s| s.stopped)
    }

    /// Whether the FINISH of a stream we finished has been handed to the transport (by
    /// [`Connection::poll_transmit`]): every byte of it is on its way, so a STOP from the
    /// peer no longer matters. The mux's counterpart of QUIC's "all data acknowledged";
    /// over TCP, what was handed over arrives unless the connection fails. Call it only
    /// for a stream finished with [`Connection::finish`].
    pub fn finish_sent(&self, id: StreamId) -> bool {
        match self.streams.get(&id) {
            Some(s) => s.finish_sent,
            // Over and collected: sent unless its FINISH still waits in the queue.
            None => !self
                .transmit
                .iter()
                .any(|f| matches!(f, Frame::Finish { id: queued } if *queued == id)),
        }
    }

    /// Ends the sending half cleanly (FINISH after every queued byte).
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self.stream(id)?;
        if let Some(code) = s.stopped {
            return Err(StreamError::Stopped(code));
        }
        if s.send != SendState::Open {
            return Err(StreamError::ClosedLocally);
        }
        s.send = SendState::Finished;
        self.transmit.push_back(Frame::Finish { id });
        self.collect(id);
        Ok(())
    }

    /// Abandons the sending half: queued bytes are dropped and a RESET sent.
    pub fn reset(&mut self, id: StreamId, code: u32) -> Result<(), StreamError> {
        let s = self.stream(id)?;
        if s.send == SendState::Reset || (s.send == SendState::Finished && s.stopped.is_some()) {
            return Err(StreamError::ClosedLocally);
        }
        s.send = SendState::Reset;
        let dropped = self.drop_queued_data(id);
        self.queued_data -= dropped;
        self.transmit.push_back(Frame::Reset { id, code });
        self.collect(id);
        Ok(())
    }

    /// Stops reading: unread bytes are dropped and the peer asked to stop sending.
    pub fn stop(&mut self, id: StreamId, code: u32) -> Result<(), StreamError> {
        let s = self.stream(id)?;
        if s.recv_stopped {
            return Err(StreamError::ClosedLocally);
        }
        s.recv_stopped = true;
        s.buffered.clear();
        s.buffered_len = 0;
        if s.recv_end.is_none() {
            self.transmit.push_back(Frame::Stop { id, code });
        }
        self.collect(id);
        Ok(())
    }

    /// The application dropped its sending handle: an open half is finished (as quinn
    /// does when a `SendStream` is dropped).
    pub fn release_send(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.send_released = true;
            if s.send == SendState::Open && self.closed.is_none() {
                let _ = self.finish(id);
            }
            self.collect(id);
        }
    }

    /// The application dropped its receiving handle: a half not read to its end is
    /// stopped with code 0.
    pub fn release_recv(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.recv_released = true;
            let ended = s.recv_end.is_some() && s.buffered.is_empty();
            if !s.recv_stopped && !ended && self.closed.is_none() {
                let _ = self.stop(id, 0);
            }
            self.collect(id);
        }
    }

    fn collect(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(Stream::is_over)
            && let Some(s) = self.streams.remove(&id)
            && s.incoming
        {
            self.incoming_open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn drain(c: &mut Connection) -> Vec<Frame> {
        std::iter::from_fn(|| c.poll_transmit()).collect()
    }

    /// Delivers every queued frame each way until both are quiet.
    fn exchange(a: &mut Connection, b: &mut Connection) {
        loop {
            let ab = drain(a);
            let ba = drain(b);
            if ab.is_empty() && ba.is_empty() {
                return;
            }
            for f in ab {
                b.handle(f).unwrap();
            }
            for f in ba {
                a.handle(f).unwrap();
            }
        }
    }

    fn pair() -> (Connection, Connection) {
        (
            Connection::new(Side::Dialer, Config::default()),
            Connection::new(Side::Acceptor, Config::default()),
        )
    }

    #[test]
    fn open_write_finish_read() {
        let (mut a, mut b) = pair();
        let id = a.open().unwrap();
        assert_eq!(id, 1);
        assert_eq!(a.write(id, &Bytes::from_static(b"hi")).unwrap(), 2);
        a.finish(id).unwrap();
        exchange(&mut a, &mut b);
        assert_eq!(b.accept(), Some(1));
        assert_eq!(
            b.read(1, 100).unwrap(),
            Read::Data(Bytes::from_static(b"hi"))
        );
        assert_eq!(b.read(1, 100).unwrap(), Read::End);
    }

    #[test]
    fn acceptor_opens_even_ids() {
        let (_, mut b) = pair();
        assert_eq!(b.open().unwrap(), 2);
        assert_eq!(b.open().unwrap(), 4);
    }

    #[test]
    fn writer_stops_at_the_window_until_the_reader_reads() {
        let (mut a, mut b) = pair();
        let id = a.open().unwrap();
        let big = Bytes::from(vec![7u8; MAX_DATA]);
        let mut sent = 0;
        loop {
            let n = a.write(id, &big).unwrap();
            if n == 0 {
                break;
            }
            sent += n;
            exchange(&mut a, &mut b); // keeps the queue empty: only credit limits
        }
        assert_eq!(sent, INITIAL_WINDOW as usize);
        // Reading half a window lets the writer go on.
        let mut read = 0;
        while read < (INITIAL_WINDOW / 2) as usize {
            let Read::Data(d) = b.read(id, usize::MAX).unwrap() else {
                panic!()
            };
            read += d.len();
        }
        exchange(&mut a, &mut b);
        assert_eq!(a.credit(id), u64::from(INITIAL_WINDOW / 2));
    }

    #[test]
    fn a_blocked_stream_does_not_block_another() {
        let (mut a, mut b) = pair();
        let slow = a.open().unwrap();
        let fast = a.open().unwrap();
        let big = Bytes::from(vec![1u8; MAX_DATA]);
        while a.write(slow, &big).unwrap() > 0 {
            exchange(&mut a, &mut b);
        }
        // `slow` is out of credit; `fast` still writes and its bytes arrive.
        assert_eq!(a.write(fast, &Bytes::from_static(b"x")).unwrap(), 1);
        exchange(&mut a, &mut b);
        assert_eq!(
            b.read(fast, 10).unwrap(),
            Read::Data(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn queue_bound_applies_backpressure() {
        let mut a = Connection::new(
            Side::Dialer,
            Config {
                max_queued: 100,
                ..Config::default()
            },
        );
        let id = a.open().unwrap();
        assert_eq!(a.write(id, &Bytes::from(vec![0; 150])).unwrap(), 100);
        assert_eq!(a.write(id, &Bytes::from(vec![0; 150])).unwrap(), 0);
        drain(&mut a);
        assert_eq!(a.write(id, &Bytes::from(vec![0; 50])).unwrap(), 50);
    }

    #[test]
    fn data_beyond_the_window_is_a_flow_control_error() {
        let (_, mut b) = pair();
        b.handle(Frame::Open { id: 1 }).unwrap();
        let chunk = Bytes::from(vec![0; MAX_DATA]);
        for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA) {
            b.handle(Frame::Data {
                id: 1,
                data: chunk.clone(),
            })
            .unwrap();
        }
        let err = b
            .handle(Frame::Data {
                id: 1,
                data: Bytes::from_static(b"!"),
            })
            .unwrap_err();
        assert_eq!(err.code, code::FLOW_CONTROL_ERROR);
        let frames = drain(&mut b);
        assert!(
            matches!(frames.last(), Some(Frame::GoAway { code, .. }) if *code == code::FLOW_CONTROL_ERROR)
        );
        assert!(b.closed().is_some());
    }

    #[test]
    fn frames_for_streams_never_opened_are_protocol_errors() {
        let (_, mut b) = pair();
        let err = b
            .handle(Frame::Data {
                id: 5,
                data: Bytes::new(),
            })
            .unwrap_err();
        assert_eq!(err.code, code::PROTOCOL_ERROR);
        let (_, mut b) = pair();
        assert!(b.handle(Frame::Open { id: 2 }).is_err(), "own parity");
        let (_, mut b) = pair();
        b.handle(Frame::Open { id: 3 }).unwrap();
        assert!(b.handle(Frame::Open { id: 1 }).is_err(), "ids go up");
    }

    #[test]
    fn late_frames_for_a_finished_stream_are_dropped() {
        let (mut a, mut b) = pair();
        let id = a.open().unwrap();
        a.finish(id).unwrap();
        exchange(&mut a, &mut b);
        let id_b = b.accept().unwrap();
        assert_eq!(b.read(id_b, 1).unwrap(), Read::End);
        b.finish(id_b).unwrap();
        b.release_send(id_b);
        b.release_recv(id_b);
        assert_eq!(b.stream_count(), 0);
        assert_eq!(
            b.handle(Frame::Credit {
                id: 1,
                increment: 5
            }),
            Ok(1)
        );
    }

    #[test]
    fn stop_is_answered_with_reset_and_seen_by_the_writer() {
        let (mut a, mut b) = pair();
        let id = a.open().unwrap();
        a.write(id, &Bytes::from_static(b"abc")).unwrap();
        exchange(&mut a, &mut b);
        b.accept().unwrap();
        b.stop(id, 9).unwrap();
        exchange(&mut a, &mut b);
        assert_eq!(a.stopped(id), Some(9));
        assert_eq!(
            a.write(id, &Bytes::from_static(b"d")),
            Err(StreamError::Stopped(9))
        );
    }

    #[test]
    fn reset_reaches_the_reader_and_drops_unread_bytes() {
        let (mut a, mut b) = pair();
        let id = a.open().unwrap();
        a.write(id, &Bytes::from_static(b"abc")).unwrap();
        exchange(&mut a, &mut b);
        a.reset(id, 4).unwrap();
        exchange(&mut a, &mut b);
        assert_eq!(b.read(id, 10), Err(StreamError::Reset(4)));
    }

    #[test]
    fn excess_streams_are_refused_not_fatal() {
        let mut b = Connection::new(
            Side::Acceptor,
            Config {
                max_incoming_streams: 1,
                ..Config::default()
            },
        );
        b.handle(Frame::Open { id: 1 }).unwrap();
        b.handle(Frame::Open { id: 3 }).unwrap();
        assert_eq!(b.accept(), Some(1));
        assert_eq!(b.accept(), None);
        assert_eq!(
            drain(&mut b),
            vec![
                Frame::Reset {
                    id: 3,
                    code: code::REFUSED_STREAM
                },
                Frame::Stop {
                    id: 3,
                    code: code::REFUSED_STREAM
                }
            ]
        );
        // Its late DATA is dropped quietly.
        assert_eq!(
            b.handle(Frame::Data {
                id: 3,
                data: Bytes::from_static(b"x")
            }),
            Ok(3)
        );
        assert!(b.closed().is_none());
    }

    #[test]
    fn ping_is_answered_and_goaway_closes() {
        let (mut a, mut b) = pair();
        a.ping(*b"12345678");
        exchange(&mut a, &mut b);
        assert_eq!(a.take_pong(), Some(*b"12345678"));
        let id = a.open().unwrap();
        exchange(&mut a, &mut b);
        b.close(2, "replaced");
        exchange(&mut a, &mut b);
        let closed = a.closed().unwrap().clone();
        assert_eq!(
            (closed.code, closed.reason.as_str(), closed.by_peer),
            (2, "replaced", true)
        );
        assert!(matches!(
            a.read(id, 1),
            Err(StreamError::ConnectionClosed(_))
        ));
        assert!(matches!(a.open(), Err(OpenError::ConnectionClosed(_))));
    }

    #[test]
    fn dropping_handles_finishes_and_stops() {
        let (mut a, mut b) = pair();
        let id = a.open().unwrap();
        a.release_send(id);
        a.release_recv(id);
        assert_eq!(
            drain(&mut a),
            vec![
                Frame::Open { id },
                Frame::Finish { id },
                Frame::Stop { id, code: 0 }
            ]
        );
        let _ = &mut b;
    }
}
