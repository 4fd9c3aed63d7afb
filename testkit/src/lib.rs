//! Test support for the whole system.
//!
//! * [`provider`]: a local HTTP server that speaks the AI providers' streaming wire
//!   format (server-sent events), used in place of the real provider, which tests cannot
//!   reach. The desktop node's adapter is the production code, pointed at its URL.
//! * [`guest`]: builds the example mini-app to wasm from source.
//! * [`fakes`]: the test doubles several crates' tests share (a provider without a model,
//!   the test database).
//! * [`system`]: a whole system on loopback for tests and benchmarks (a real relay, the
//!   local provider, a user with a desktop node online), and the helpers that talk to it.
//! * [`ws_browser`]: a browser-role client of the relay's WebSocket leg (the mux over
//!   tokio-tungstenite), for the relay's tests and the benches.
//!
//! The integration tests of the system live in `testkit/tests`.

pub mod fakes;
pub mod guest;
pub mod provider;
pub mod system;
pub mod ws_browser;
