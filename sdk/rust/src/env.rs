//! Where the app runs: safe facts only (no environment variables, no paths).

use super::HostError;
use serde_json::json;

/// What `env::get` tells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Env {
    /// This app's id.
    pub app_id: String,
    /// This app's version.
    pub app_version: String,
    /// The desktop node's version.
    pub node_version: String,
    /// `linux`, `macos`, `windows`, …
    pub os: String,
    /// `x86_64`, `aarch64`, …
    pub arch: String,
}

/// The facts.
pub fn get() -> Result<Env, HostError> {
    let value = host_call!(env, json!({"op": "get"}))?;
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
    Ok(Env {
        app_id: field("app_id"),
        app_version: field("app_version"),
        node_version: field("node_version"),
        os: field("os"),
        arch: field("arch"),
    })
}
