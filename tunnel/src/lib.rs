//! The AI SuperApp wire protocol.
//!
//! Every byte that travels between a browser, a relay and a desktop node is defined here:
//!
//! * [`frame`]: length-prefixed frames (`u32` big-endian length, then the body) with a hard
//!   maximum size, and [`frame::FrameBuffer`], a push-based decoder that tells a clean end
//!   of stream from one cut mid-frame.
//! * [`header`]: the versioned first frame of every stream: [`header::OpenHeader`] (browser
//!   to relay), [`header::RelayHeader`] (relay to desktop) and [`header::Hello`] (desktop to
//!   relay on its control stream), and version negotiation.
//! * [`message`]: the [`message::Envelope`] that carries every later message
//!   (EXECUTE_ACTION, STREAM_CHUNK, ERROR, …) and the stable [`message::ErrorCode`]s.
//! * [`proto`]: the rules of the exchange as sans-IO state machines, one per role
//!   (header deadlines, the request after the relay header, heartbeats, CANCEL and its
//!   grace period, stream kinds), each refusal a typed [`proto::Refusal`].
//!
//! Bodies are [postcard](https://docs.rs/postcard). The TypeScript codec in
//! `browser-client/src/tunnel` speaks the same bytes; `tests/vectors.rs` writes the test
//! vectors it is checked against.
//!
//! The core does no I/O and has no clock: it turns bytes and the current time into
//! values, events and bytes. The optional `io` feature adds thin helpers that read and write frames over
//! tokio's `AsyncRead` / `AsyncWrite`. Splicing streams lives with the relay, which knows
//! the concrete stream types and how to reset them.
//!
//! The layout on the wire is documented in `docs/protocol.md`.

pub mod frame;
pub mod header;
#[cfg(feature = "io")]
pub mod io;
pub mod message;
pub mod mux;
pub mod proto;

pub use frame::{FrameBuffer, FrameError, MAX_FRAME_LEN};
pub use header::{
    FieldProblem, Hello, MAX_HEADER_LEN, OpenHeader, PROTOCOL_MAJOR, PROTOCOL_MINOR, RelayHeader,
    StreamKind, Version,
};
pub use message::{Body, Envelope, ErrorCode};

/// Why a frame body could not be turned into a value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame body is empty where a version prefix was expected.
    #[error("frame too short to hold a protocol version")]
    MissingVersion,
    /// The peer speaks a major version this side does not.
    #[error(
        "unsupported protocol version {major}.{minor}; this side speaks {}.x",
        PROTOCOL_MAJOR
    )]
    UnsupportedVersion {
        /// The peer's major version.
        major: u8,
        /// The peer's minor version.
        minor: u8,
    },
    /// A header frame is longer than [`MAX_HEADER_LEN`].
    #[error("{what} of {len} bytes exceeds the header limit of {max}")]
    HeaderTooLarge {
        /// Which header was being decoded.
        what: &'static str,
        /// The body's length.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// A header decoded, but one of its fields breaks its rule (too long, empty, not
    /// printable, wrong length; see `docs/protocol.md`, "Header limits").
    #[error("invalid {what}: {field} {problem}")]
    InvalidField {
        /// Which header was being decoded.
        what: &'static str,
        /// The field's name on the wire (as in `docs/protocol.md`).
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// The body is not a valid encoding of the expected value (unknown message type,
    /// truncated field, invalid UTF-8, …).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which value was being decoded.
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
}

impl DecodeError {
    fn malformed(what: &'static str, err: postcard::Error) -> Self {
        DecodeError::Malformed {
            what,
            reason: err.to_string(),
        }
    }
}
