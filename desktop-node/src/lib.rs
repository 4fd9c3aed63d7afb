//! The AI SuperApp desktop node: the execution authority.
//!
//! It dials the relay over QUIC (so it needs no open port), keeps the connection alive,
//! and serves every stream the relay opens on a browser's behalf: EXECUTE_ACTION runs the
//! action of an installed mini-app in a fresh wasmtime instance ([`sandbox`]), whose
//! host API streams model output from an AI provider ([`ai`]) back as STREAM_CHUNKs.
//!
//! Modules: [`config`] (home folder, `node.toml`), [`node`] (its context, the connection
//! manager, TLS pinning), [`action`] (one stream), [`scheduler`] (how many actions run
//! and wait, and `busy`), [`sandbox`] (wasmtime: engine, module cache, linker, one run)
//! on the threads of [`guest_pool`], [`host`] (the permissioned host API) checked against
//! [`permissions`] (the approved grants), [`apps`] (installed apps), [`js_apps`]
//! (JavaScript apps on the QuickJS runtime guest), [`installer`] (the mini-app manager),
//! [`ai`] (the providers, re-exported from the `aisa-ai` crate), [`backoff`], [`logs`].
//!
//! [`compat`] decides which relays the node works with; [`crash`] writes crash reports
//! without secrets and uploads them when the person agreed.
//! [`history`] keeps the runs (input, output, status) for the web app's History screen.
//! [`logs`] keeps daily log files in the home folder. [`secrets`] keeps the provider
//! keys, the device token and the identity key in a keychain or an encrypted file;
//! [`e2e`] serves end-to-end encrypted streams and keeps the paired browsers.

pub mod action;
/// The AI provider adapters, the `aisa-ai` crate (its own crate so the provider stream
/// parsers build without the rest of the node, as the fuzz target does).
pub use aisa_ai as ai;
pub mod apps;
pub mod backoff;
pub mod compat;
pub mod config;
pub mod crash;
pub mod e2e;
pub mod files;
pub mod guest_pool;
pub mod history;
pub mod host;
pub mod installer;
pub mod js_apps;
pub mod logs;
pub mod node;
pub mod permissions;
pub mod sandbox;
pub mod scheduler;
pub mod secrets;
pub mod update;
