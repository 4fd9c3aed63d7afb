//! The node: its shared context ([`context`]), the connection manager that keeps it
//! connected to the relay and serves every stream the relay opens ([`connection`]), the
//! link it does that over, QUIC or TCP ([`link`], `tcp`), which of the two it races,
//! remembers and heals back to ([`path`]), and the TLS it dials with ([`tls`]).

mod connection;
mod context;
pub mod link;
pub mod path;
mod tcp;
mod tls;

pub use connection::{NodeError, RelayTarget, run};
pub use context::NodeContext;
pub use link::{RecvStream, SendStream};
pub use path::{PathConfig, Transport};
pub use tls::{client_config, parse_pin};

/// ALPN for desktop connections.
pub const ALPN: &[u8] = b"aisa/1";
/// Close code meaning "shutting down": from the relay, reconnect at once (see
/// relay-edge); from the node, it is leaving (stopped after draining its actions).
const CLOSE_SHUTDOWN: u32 = 3;
/// Relay close code meaning "another connection of this device took over": another
/// node holds the same token; stop.
const CLOSE_REPLACED: u32 = 2;
/// Relay close code meaning "this device was revoked": stop for good.
const CLOSE_REVOKED: u32 = 4;
/// Relay close code meaning "this device moved to a newer link of the same node, and
/// this one outlived the grace": on a link the node still uses, another process with a
/// copy of this node's home took over; stop as if replaced.
const CLOSE_MOVED: u32 = 6;
/// Stream reset code: the node abandoned the stream (stopping, or its peer went away).
pub const STREAM_ABANDONED: u32 = 1;
