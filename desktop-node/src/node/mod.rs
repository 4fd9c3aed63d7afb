//! The node: its shared context ([`context`]), the connection manager that keeps it
//! connected to the relay and serves every stream the relay opens ([`connection`]), and
//! the TLS it dials with ([`tls`]).

mod connection;
mod context;
mod tls;

pub use connection::{NodeError, RelayTarget, run};
pub use context::NodeContext;
pub use tls::{client_config, parse_pin};

/// ALPN for desktop connections.
pub const ALPN: &[u8] = b"aisa/1";
/// Relay close code meaning "shutting down, reconnect at once" (see relay-edge).
const CLOSE_SHUTDOWN: u32 = 3;
/// Relay close code meaning "another connection of this device took over": another
/// node holds the same token; stop.
const CLOSE_REPLACED: u32 = 2;
/// Relay close code meaning "this device was revoked": stop for good.
const CLOSE_REVOKED: u32 = 4;
/// Stream reset code: the node abandoned the stream (stopping, or its peer went away).
pub const STREAM_ABANDONED: u32 = 1;
