//! `env`: facts about where the app runs that are safe to tell it. Never environment
//! variables, user names, host names or paths of the person's machine.

use serde::Deserialize;

use super::CallContext;

/// The ops of `env`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `{app_id, app_version, node_version, os, arch}`.
    Get {},
}

/// Runs one `env` call.
pub fn call(ctx: &CallContext, request: Request) -> serde_json::Value {
    let Request::Get {} = request;
    serde_json::json!({
        "app_id": ctx.app_id,
        "app_version": ctx.app_version,
        "node_version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}
