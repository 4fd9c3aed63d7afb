//! `permissions.json`: what an app asks the person to allow.
//!
//! Every key is optional; an absent key asks for nothing. The desktop node turns an
//! approved [`Permissions`] into its sandbox grants (resolving the path variables).

use serde::{Deserialize, Serialize};

/// The variables a filesystem scope may start with (resolved by the desktop node).
pub const PATH_VARIABLES: &[&str] = &["$HOME", "$DOCUMENTS", "$DOWNLOADS", "$DESKTOP", "$APP_DATA"];

/// What an app asks to be allowed to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permissions {
    /// Call the AI model (with the person's key).
    pub ai: bool,
    /// Read and write files under these folders.
    pub filesystem: FilesystemPermissions,
    /// Make HTTP requests to these hosts (`host`, `host:port` or `*.example.com`).
    pub network: Vec<String>,
    /// Read and write the clipboard.
    pub clipboard: bool,
}

/// Folders an app may read or write: absolute paths or paths starting with one of
/// [`PATH_VARIABLES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesystemPermissions {
    /// Folders it may read.
    pub read: Vec<String>,
    /// Folders it may write (and read).
    pub write: Vec<String>,
}

/// Why `permissions.json` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionsError {
    /// Not JSON, or a key is unknown or of the wrong type.
    #[error("permissions.json is not valid: {0}")]
    Json(String),
    /// A filesystem scope is neither absolute nor starts with a known variable.
    #[error(
        "permissions.json: filesystem.{kind} path {path:?} must be absolute or start with one of {PATH_VARIABLES:?}, without '..'"
    )]
    Path {
        /// `read` or `write`.
        kind: &'static str,
        /// The path as written.
        path: String,
    },
    /// A network entry is not a host name.
    #[error(
        "permissions.json: network entry {0:?} must be a host name (\"api.example.com\", \"host:8443\" or \"*.example.com\"), not a URL"
    )]
    Host(String),
}

/// Whether `path` is a valid filesystem scope.
pub fn is_valid_scope(path: &str) -> bool {
    if path.is_empty() || path.contains('\0') || path.split(['/', '\\']).any(|c| c == "..") {
        return false;
    }
    if path.starts_with('/') {
        return true;
    }
    PATH_VARIABLES.iter().any(|var| {
        path.strip_prefix(var)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Whether `host` is a valid network entry: a lowercase host name or IP, an optional
/// `:port`, and an optional leading `*.`.
pub fn is_valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return false;
    }
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl Permissions {
    /// Parses and validates `permissions.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Permissions, PermissionsError> {
        let p: Permissions =
            serde_json::from_slice(bytes).map_err(|e| PermissionsError::Json(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Checks the paths and hosts.
    pub fn validate(&self) -> Result<(), PermissionsError> {
        for (kind, paths) in [
            ("read", &self.filesystem.read),
            ("write", &self.filesystem.write),
        ] {
            if let Some(path) = paths.iter().find(|p| !is_valid_scope(p)) {
                return Err(PermissionsError::Path {
                    kind,
                    path: path.clone(),
                });
            }
        }
        if let Some(host) = self.network.iter().find(|h| !is_valid_host(h)) {
            return Err(PermissionsError::Host(host.clone()));
        }
        Ok(())
    }

    /// Whether the app asks for any filesystem scope (read or write).
    pub fn uses_filesystem(&self) -> bool {
        !self.filesystem.read.is_empty() || !self.filesystem.write.is_empty()
    }

    /// Whether the app asks for nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == Permissions::default()
    }

    /// One line per permission, for the person who approves the install.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.ai {
            lines.push("use your AI model (with your API key)".to_owned());
        }
        for p in &self.filesystem.read {
            lines.push(format!("read files in {p}"));
        }
        for p in &self.filesystem.write {
            lines.push(format!("read and write files in {p}"));
        }
        for h in &self.network {
            lines.push(format!("connect to {h}"));
        }
        if self.clipboard {
            lines.push("read and write the clipboard".to_owned());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_ask_for_nothing() {
        let p = Permissions::from_json(b"{}").unwrap();
        assert!(p.is_empty() && p.describe().is_empty());
        let p = Permissions::from_json(
            br#"{"ai": true, "filesystem": {"read": ["$DOCUMENTS", "/srv/x"]},
                 "network": ["api.example.com", "*.example.org", "127.0.0.1:8080"]}"#,
        )
        .unwrap();
        assert!(p.ai && p.uses_filesystem() && !p.clipboard);
        assert_eq!(p.describe().len(), 6);
    }

    #[test]
    fn bad_entries_are_named() {
        for (json, want) in [
            (r#"{"filesystem": {"read": ["docs"]}}"#, "\"docs\""),
            (r#"{"filesystem": {"write": ["$HOME/../x"]}}"#, "write path"),
            (r#"{"filesystem": {"read": ["$HOMEX"]}}"#, "\"$HOMEX\""),
            (r#"{"network": ["https://api.example.com"]}"#, "not a URL"),
            (r#"{"network": ["a.com:0"]}"#, "\"a.com:0\""),
            (r#"{"camera": true}"#, "unknown field `camera`"),
            (r#"{"ai": "yes"}"#, "invalid type"),
        ] {
            let err = Permissions::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
