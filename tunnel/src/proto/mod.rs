//! The stream protocol as sans-IO state machines, one per role.
//!
//! The codec ([`crate::frame`], [`crate::header`], [`crate::message`]) says what bytes
//! mean; these machines say what may come when, and what happens when it does not. Each
//! takes bytes and the current time in and gives values, events, deadlines and bytes
//! out. None of them reads a clock, sleeps, spawns or touches a socket: the relay, the
//! desktop node, the test harness and (mirrored in TypeScript) the browser are byte pumps
//! around them, and the machines' tests drive time by hand.
//!
//! | role | machine |
//! | --- | --- |
//! | anyone reading a stream's first frame (relay: browser streams, HELLO; node: relay header) | [`HeaderReader`] |
//! | the desktop node serving one stream the relay opened | [`ServeStream`] |
//! | the desktop node's control stream: HELLO, WELCOME, heartbeats | [`NodeControl`] |
//! | the relay's end of a desktop's control stream | [`RelayControl`] |
//! | the browser's end of one request stream | [`ClientRequest`] |
//!
//! A refusal is a [`Refusal`]: one typed value with [`Refusal::code`] (the wire's ERROR
//! code), [`Refusal::reason`] (a short label for logs and metrics) and its `Display`
//! (the message the peer reads).
//!
//! Every time limit of the protocol is a constant here.

use std::time::Duration;

mod client;
mod control;
mod exact;
mod header;
mod refusal;
mod serve;

pub use client::{ClientEvent, ClientRequest, Outcome};
pub use control::{ControlEvent, NodeControl, RelayControl};
pub use exact::ExactFrames;
pub use header::{HeaderReader, StreamHeader};
pub use refusal::Refusal;
pub use serve::{ServeEvent, ServeStream};

/// How long a peer has to send a stream's first frame (the browser's stream-open header;
/// the desktop's HELLO) once the stream is open.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay has to deliver the relay header and the request on a stream it
/// opened to a desktop, counted from the stream's arrival.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a desktop waits for WELCOME after sending HELLO.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat intervals without any PONG after which a desktop declares its relay
/// connection dead.
pub const MISSED_HEARTBEATS: u32 = 3;
/// How long a browser waits, after sending CANCEL, for the request's last message
/// before it gives up on the stream and resets it.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
