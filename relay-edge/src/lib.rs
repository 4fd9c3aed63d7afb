//! The AI SuperApp relay.
//!
//! One UDP port serves browsers (WebTransport, ALPN `h3`) and desktop nodes (raw QUIC,
//! ALPN `aisa/1`); one TCP port serves the web app and the HTTP API. For each stream a
//! browser opens, the relay reads only the stream-open header, checks the user's token
//! and that the user owns the target device and that it is online, opens a stream on the
//! desktop's connection, writes a relay-stamped header, and then splices the two streams
//! without reading what flows through them.
//!
//! Modules: [`config`] (the file schema), [`store`] (users and devices, sqlx),
//! [`facts`] (the user, device and plan records a stream's authorization needs, kept in
//! memory), [`actions`] (each user's actions today, counted in memory and written in
//! batches), [`auth`] (passwords, tokens), [`cert`] (TLS identity), [`registry`] (connected
//! devices), [`events`] (their status, pushed to browsers), [`desktop`] and [`browser`]
//! (the two connection kinds), [`ws`] (a browser's session over a WebSocket, where
//! WebTransport cannot work), [`authorize`] (the pure decision whether a browser's
//! stream may go where it asks), [`splice`], [`http`] (API and web app), [`httpd`] (the
//! HTTP server loop and its timeouts), [`proxy`] (the client's address behind trusted
//! proxies), [`limits`] (rate and resource limits), [`sessions`] (open browser
//! sessions, closed when their tokens are revoked), [`metrics`] (Prometheus, on its own
//! address), [`state`] (what a running relay holds, by area), [`quic`] (the QUIC
//! endpoint's settings), [`server`] (start and stop), and the mini-app market:
//! [`marketplace`] (developer portal and marketplace API), [`bundles`] (bundle storage:
//! a local folder or S3-compatible object storage), [`signing`] (the platform's Ed25519
//! signing key and the keys it trusts).
//!
//! [`cluster`] holds the node's name and, with `[cluster] redis_url`, the state shared
//! with other relay nodes through Redis (where each device is connected).
//!
//! Storage is SQLite (embedded default) or PostgreSQL.

pub mod acme;
pub mod actions;
pub mod auth;
pub mod authorize;
pub mod browser;
pub mod bundles;
pub mod cert;
pub mod cluster;
pub mod compat;
pub mod config;
pub mod desktop;
pub mod events;
pub mod facts;
pub mod http;
pub mod httpd;
pub mod limits;
pub mod link;
pub mod marketplace;
pub mod metrics;
pub mod proxy;
pub mod quic;
pub mod registry;
pub mod server;
pub mod sessions;
pub mod signing;
pub mod splice;
pub mod state;
pub mod store;
pub mod ws;

pub use config::RelayConfig;
pub use server::{RelayHandle, start};
pub use state::RelayState;
