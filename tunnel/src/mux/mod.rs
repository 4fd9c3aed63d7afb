//! Many bidirectional streams over one ordered transport: a WebSocket (the browser's
//! fallback when WebTransport is missing or UDP is blocked) or a TLS/TCP byte stream (the
//! desktop's fallback when QUIC is blocked).
//!
//! The streams behave like QUIC's: each has two halves that end on their own (FINISH,
//! RESET), a reader can ask the writer to stop (STOP), and per-stream credit (CREDIT)
//! bounds the bytes in flight, so a stream whose reader is slow holds back only its own
//! writer. Connection frames: PING/PONG for liveness, GOAWAY to close with a code and a
//! reason (the same codes a QUIC connection closes with).
//!
//! * [`frame`]: the frames and their bytes (a fixed 9-byte header), [`frame::FrameDecoder`]
//!   for byte streams.
//! * [`conn`]: [`Connection`], the sans-IO state machine: ids, credit, stream ends, the
//!   rules a peer must keep (a broken rule closes the connection with a GOAWAY that
//!   says which).
//! * `driver` (feature `io`): the thin tokio driver that runs a [`Connection`] over a
//!   transport and hands out [`driver::SendStream`] / [`driver::RecvStream`] halves.
//! * `ws` (feature `websocket`): the driver over a WebSocket, one frame per binary
//!   message, for any WebSocket library through a small codec trait.
//! * [`link`]: [`LinkClosed`], how a desktop's link (QUIC with feature `quinn`, or mux)
//!   ended, the same for the relay and the node.
//! * `halves` (feature `quinn`): `LinkSend` / `LinkRecv`, a stream's halves on a
//!   desktop's link, QUIC or mux, the same for the relay and the node.
//!
//! The byte layout is in `docs/protocol.md`, "Stream multiplexing over WebSocket and
//! TCP"; `tunnel/vectors/mux-vectors.json` holds byte vectors the TypeScript mux
//! (`browser-client/src/tunnel/transport/mux.ts`) is checked against. What travels on a
//! stream is unchanged: the same frames and headers as on a QUIC stream.
//!
//! What it does not do: retransmit, reorder or encrypt (the transport is reliable,
//! ordered and, outside tests, TLS), prioritise streams (frames leave in the order they
//! were written), or time anything (the driver owns the clock).

pub mod conn;
#[cfg(feature = "io")]
pub mod driver;
pub mod frame;
#[cfg(feature = "quinn")]
pub mod halves;
pub mod link;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod vectors;
#[cfg(feature = "websocket")]
pub mod ws;

pub use conn::{
    Closed, Config, Connection, INITIAL_WINDOW, OpenError, ProtocolError, Read, Side, StreamError,
};
pub use frame::{Frame, FrameDecoder, FrameError, HEADER_LEN, MAX_DATA, MAX_FRAME, StreamId};
#[cfg(feature = "quinn")]
pub use halves::{LinkRecv, LinkSend};
pub use link::LinkClosed;

/// Codes the mux itself uses, at the top of the `u32` space so that they never collide
/// with application close and reset codes.
pub mod code {
    /// GOAWAY: the peer broke a framing or stream rule.
    pub const PROTOCOL_ERROR: u32 = 0xffff_ff01;
    /// GOAWAY: the peer sent beyond a stream's credit.
    pub const FLOW_CONTROL_ERROR: u32 = 0xffff_ff02;
    /// GOAWAY: nothing arrived within the idle timeout.
    pub const IDLE_TIMEOUT: u32 = 0xffff_ff03;
    /// Not on the wire: the transport ended or failed without a GOAWAY.
    pub const CONNECTION_LOST: u32 = 0xffff_ff04;
    /// RESET and STOP: the stream was refused (too many streams open).
    pub const REFUSED_STREAM: u32 = 0xffff_ff10;
}
