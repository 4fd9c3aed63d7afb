//! The mux frames and their bytes.
//!
//! Every frame is a fixed 9-byte header (type, stream id, payload length; big-endian)
//! followed by the payload. Over a WebSocket each binary message holds exactly one frame;
//! over a byte stream (TLS/TCP) frames follow each other and [`FrameDecoder`] splits them,
//! refusing an oversize length before allocating. The table is in `docs/protocol.md`,
//! "Stream multiplexing over WebSocket and TCP".
//!
//! This module only turns bytes into [`Frame`]s and back; which frame may come when is
//! [`super::Connection`]'s job.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header: type (1), stream id (4), payload length (4).
pub const HEADER_LEN: usize = 9;

/// The most payload one DATA frame carries: 64 KiB.
pub const MAX_DATA: usize = 64 * 1024;

/// The longest GOAWAY reason, in bytes of UTF-8.
pub const MAX_REASON: usize = 256;

/// The largest whole frame (header and payload).
pub const MAX_FRAME: usize = HEADER_LEN + MAX_DATA;

/// A stream id. Odd ids are opened by the side that dialed the connection, even ids by
/// the side that accepted it; id 0 names the connection itself.
pub type StreamId = u32;

/// Frame type bytes.
pub mod kind {
    /// OPEN: the sender opens a bidirectional stream.
    pub const OPEN: u8 = 0x01;
    /// DATA: stream bytes.
    pub const DATA: u8 = 0x02;
    /// FINISH: the sender's half ends cleanly.
    pub const FINISH: u8 = 0x03;
    /// RESET: the sender abandons its half, with a code.
    pub const RESET: u8 = 0x04;
    /// STOP: the receiver asks the sender to stop sending, with a code.
    pub const STOP: u8 = 0x05;
    /// CREDIT: the receiver lets the sender send more bytes on a stream.
    pub const CREDIT: u8 = 0x06;
    /// PING: asks for a PONG with the same 8 bytes.
    pub const PING: u8 = 0x07;
    /// PONG: answers a PING.
    pub const PONG: u8 = 0x08;
    /// GOAWAY: the sender closes the connection, with a code and a reason.
    pub const GOAWAY: u8 = 0x09;
}

/// One mux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The sender opens stream `id`.
    Open {
        /// The new stream.
        id: StreamId,
    },
    /// Bytes on stream `id`, at most [`MAX_DATA`].
    Data {
        /// The stream.
        id: StreamId,
        /// The bytes.
        data: Bytes,
    },
    /// The sender will send nothing more on `id`.
    Finish {
        /// The stream.
        id: StreamId,
    },
    /// The sender abandons its sending half of `id`.
    Reset {
        /// The stream.
        id: StreamId,
        /// Application error code.
        code: u32,
    },
    /// The sender will read nothing more on `id` and asks the peer to stop sending.
    Stop {
        /// The stream.
        id: StreamId,
        /// Application error code.
        code: u32,
    },
    /// The sender may send `increment` more bytes on `id`.
    Credit {
        /// The stream.
        id: StreamId,
        /// Bytes added to the window (at least 1).
        increment: u32,
    },
    /// Asks for a PONG carrying the same bytes.
    Ping {
        /// Opaque bytes.
        payload: [u8; 8],
    },
    /// Answers a PING.
    Pong {
        /// The PING's bytes.
        payload: [u8; 8],
    },
    /// The sender closes the connection.
    GoAway {
        /// Close code (application codes; the mux's own are in [`super::code`]).
        code: u32,
        /// Why, for people (at most [`MAX_REASON`] bytes).
        reason: String,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header, or than the header's length says (a WebSocket message
    /// cut short, or a byte stream that ended mid-frame).
    #[error("truncated mux frame: {have} of {need} bytes")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A WebSocket message holds more than one frame.
    #[error("mux message has {extra} bytes after its frame")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// The type byte is not one of [`kind`].
    #[error("unknown mux frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The payload length is wrong for the type (or above [`MAX_DATA`]).
    #[error("mux frame type 0x{kind:02x} with a payload of {len} bytes")]
    BadLength {
        /// The type byte.
        kind: u8,
        /// The announced payload length.
        len: u32,
    },
    /// A stream frame names stream 0, or a connection frame names another.
    #[error("mux frame type 0x{kind:02x} on stream {id}")]
    BadStream {
        /// The type byte.
        kind: u8,
        /// The stream id.
        id: StreamId,
    },
    /// A CREDIT of 0.
    #[error("mux CREDIT of 0 on stream {0}")]
    ZeroCredit(StreamId),
    /// A GOAWAY reason that is not UTF-8.
    #[error("mux GOAWAY reason is not UTF-8")]
    BadReason,
}

impl Frame {
    /// The frame's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Open { .. } => kind::OPEN,
            Frame::Data { .. } => kind::DATA,
            Frame::Finish { .. } => kind::FINISH,
            Frame::Reset { .. } => kind::RESET,
            Frame::Stop { .. } => kind::STOP,
            Frame::Credit { .. } => kind::CREDIT,
            Frame::Ping { .. } => kind::PING,
            Frame::Pong { .. } => kind::PONG,
            Frame::GoAway { .. } => kind::GOAWAY,
        }
    }

    /// The stream the frame is about (0 for connection frames).
    pub fn stream(&self) -> StreamId {
        match self {
            Frame::Open { id }
            | Frame::Data { id, .. }
            | Frame::Finish { id }
            | Frame::Reset { id, .. }
            | Frame::Stop { id, .. }
            | Frame::Credit { id, .. } => *id,
            Frame::Ping { .. } | Frame::Pong { .. } | Frame::GoAway { .. } => 0,
        }
    }

    /// Bytes the frame occupies on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::Open { .. } | Frame::Finish { .. } => 0,
                Frame::Data { data, .. } => data.len(),
                Frame::Reset { .. } | Frame::Stop { .. } | Frame::Credit { .. } => 4,
                Frame::Ping { .. } | Frame::Pong { .. } => 8,
                Frame::GoAway { reason, .. } => 4 + reason.len().min(MAX_REASON),
            }
    }

    /// Appends the frame's bytes to `out`. A DATA payload above [`MAX_DATA`] or a reason
    /// above [`MAX_REASON`] is a caller bug: DATA panics in debug builds, a reason is cut
    /// at a character boundary.
    pub fn encode(&self, out: &mut BytesMut) {
        debug_assert!(
            !matches!(self, Frame::Data { data, .. } if data.len() > MAX_DATA),
            "DATA above MAX_DATA"
        );
        let len = (self.encoded_len() - HEADER_LEN) as u32;
        out.reserve(HEADER_LEN + len as usize);
        out.put_u8(self.kind());
        out.put_u32(self.stream());
        out.put_u32(len);
        match self {
            Frame::Open { .. } | Frame::Finish { .. } => {}
            Frame::Data { data, .. } => out.put_slice(data),
            Frame::Reset { code, .. } | Frame::Stop { code, .. } => out.put_u32(*code),
            Frame::Credit { increment, .. } => out.put_u32(*increment),
            Frame::Ping { payload } | Frame::Pong { payload } => out.put_slice(payload),
            Frame::GoAway { code, reason } => {
                out.put_u32(*code);
                out.put_slice(truncate_reason(reason).as_bytes());
            }
        }
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes one WebSocket message, which must hold exactly one frame.
    pub fn decode_message(message: Bytes) -> Result<Frame, FrameError> {
        let need = check_header(&message)?.ok_or(FrameError::Truncated {
            have: message.len(),
            need: HEADER_LEN,
        })?;
        if message.len() < need {
            return Err(FrameError::Truncated {
                have: message.len(),
                need,
            });
        }
        if message.len() > need {
            return Err(FrameError::TrailingBytes {
                extra: message.len() - need,
            });
        }
        parse(message)
    }
}

/// Cuts `reason` to [`MAX_REASON`] bytes at a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Checks the header at the start of `buf`: `Ok(None)` if fewer than [`HEADER_LEN`]
/// bytes are there, else the whole frame's length once type, stream and payload length
/// agree. Nothing is allocated before this passes.
fn check_header(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    let id = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let (len_ok, connection_frame) = match kind {
        kind::OPEN | kind::FINISH => (len == 0, false),
        kind::DATA => (len as usize <= MAX_DATA, false),
        kind::RESET | kind::STOP | kind::CREDIT => (len == 4, false),
        kind::PING | kind::PONG => (len == 8, true),
        kind::GOAWAY => ((4..=4 + MAX_REASON as u32).contains(&len), true),
        other => return Err(FrameError::UnknownType(other)),
    };
    if !len_ok {
        return Err(FrameError::BadLength { kind, len });
    }
    if connection_frame != (id == 0) {
        return Err(FrameError::BadStream { kind, id });
    }
    Ok(Some(HEADER_LEN + len as usize))
}

/// Parses a whole frame whose header [`check_header`] accepted.
fn parse(mut buf: Bytes) -> Result<Frame, FrameError> {
    let kind = buf.get_u8();
    let id = buf.get_u32();
    let _len = buf.get_u32();
    Ok(match kind {
        kind::OPEN => Frame::Open { id },
        kind::DATA => Frame::Data { id, data: buf },
        kind::FINISH => Frame::Finish { id },
        kind::RESET => Frame::Reset {
            id,
            code: buf.get_u32(),
        },
        kind::STOP => Frame::Stop {
            id,
            code: buf.get_u32(),
        },
        kind::CREDIT => {
            let increment = buf.get_u32();
            if increment == 0 {
                return Err(FrameError::ZeroCredit(id));
            }
            Frame::Credit { id, increment }
        }
        kind::PING | kind::PONG => {
            let mut payload = [0u8; 8];
            buf.copy_to_slice(&mut payload);
            if kind == kind::PING {
                Frame::Ping { payload }
            } else {
                Frame::Pong { payload }
            }
        }
        kind::GOAWAY => {
            let code = buf.get_u32();
            let reason = String::from_utf8(buf.to_vec()).map_err(|_| FrameError::BadReason)?;
            Frame::GoAway { code, reason }
        }
        other => return Err(FrameError::UnknownType(other)),
    })
}

/// Splits a byte stream (TLS/TCP) into frames: push bytes as they arrive, take whole
/// frames out. A bad header is refused as soon as its 9 bytes are in.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into directly (avoids a copy); bytes appended to it count as
    /// pushed.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Takes the next whole frame, if one is there.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(need) = check_header(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < need {
            self.buf.reserve(need - self.buf.len());
            return Ok(None);
        }
        parse(self.buf.split_to(need).freeze()).map(Some)
    }

    /// Called when the byte stream ended: `Ok` if it ended between frames, else the cut.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = check_header(&self.buf)?.unwrap_or(HEADER_LEN);
        Err(FrameError::Truncated {
            have: self.buf.len(),
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn open_is_nine_bytes() {
        assert_eq!(
            Frame::Open { id: 1 }.to_bytes().as_ref(),
            [1, 0, 0, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn credit_layout() {
        let f = Frame::Credit {
            id: 0x0102_0304,
            increment: 0x10000,
        };
        assert_eq!(
            f.to_bytes().as_ref(),
            [6, 1, 2, 3, 4, 0, 0, 0, 4, 0, 1, 0, 0]
        );
    }

    #[test]
    fn oversize_data_refused_from_the_header() {
        let mut d = FrameDecoder::new();
        d.push(&[2, 0, 0, 0, 1, 0, 1, 0, 1]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::BadLength {
                kind: 2,
                len: 65537
            })
        );
    }

    #[test]
    fn byte_stream_split_anywhere() {
        let frames = [
            Frame::Open { id: 3 },
            Frame::Data {
                id: 3,
                data: Bytes::from_static(b"hello"),
            },
            Frame::GoAway {
                code: 7,
                reason: "bye".into(),
            },
        ];
        let mut all = BytesMut::new();
        for f in &frames {
            f.encode(&mut all);
        }
        for cut in 0..all.len() {
            let mut d = FrameDecoder::new();
            let mut out = vec![];
            d.push(&all[..cut]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
            d.push(&all[cut..]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
            assert_eq!(out, frames);
            assert_eq!(d.finish(), Ok(()));
        }
    }

    #[test]
    fn cut_stream_is_truncated() {
        let mut d = FrameDecoder::new();
        d.push(&Frame::Finish { id: 1 }.to_bytes()[..5]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: 5, need: 9 }));
    }

    #[test]
    fn message_with_two_frames_refused() {
        let mut b = BytesMut::new();
        Frame::Finish { id: 1 }.encode(&mut b);
        Frame::Finish { id: 1 }.encode(&mut b);
        assert_eq!(
            Frame::decode_message(b.freeze()),
            Err(FrameError::TrailingBytes { extra: 9 })
        );
    }

    #[test]
    fn connection_frames_on_stream_zero_only() {
        assert_eq!(
            Frame::decode_message(Bytes::from_static(&[
                7, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0
            ])),
            Err(FrameError::BadStream { kind: 7, id: 1 })
        );
        assert_eq!(
            Frame::decode_message(Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(FrameError::BadStream { kind: 1, id: 0 })
        );
    }

    #[test]
    fn long_reason_cut_on_a_char_boundary() {
        let reason = "é".repeat(200); // 400 bytes
        let f = Frame::GoAway { code: 1, reason };
        let bytes = f.to_bytes();
        let Frame::GoAway { reason, .. } = Frame::decode_message(bytes).unwrap() else {
            panic!()
        };
        assert_eq!(reason.len(), 256);
    }
}
