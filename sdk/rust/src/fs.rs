//! Files: in folders the person granted (`filesystem` in `permissions.json`) and in the
//! app's own folder `$APP_DATA`. Paths are absolute or start with `$HOME`, `$DOCUMENTS`,
//! `$DOWNLOADS`, `$DESKTOP` or `$APP_DATA`.

use super::HostError;
use serde_json::json;

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File or folder name.
    pub name: String,
    /// Whether it is a folder.
    pub dir: bool,
    /// Size in bytes.
    pub size: u64,
}

/// A UTF-8 text file's content.
pub fn read_to_string(path: &str) -> Result<String, HostError> {
    super::string_of(host_call!(fs, json!({"op": "read", "path": path}))?)
}

/// Creates or replaces a file (missing folders are created).
pub fn write(path: &str, content: &str) -> Result<(), HostError> {
    host_call!(fs, json!({"op": "write", "path": path, "content": content}),).map(drop)
}

/// A folder's entries, sorted by name.
pub fn list(path: &str) -> Result<Vec<Entry>, HostError> {
    let value = host_call!(fs, json!({"op": "list", "path": path}))?;
    let entries = value
        .as_array()
        .ok_or_else(|| HostError::bad_answer("expected a list"))?;
    entries
        .iter()
        .map(|e| {
            Ok(Entry {
                name: e["name"]
                    .as_str()
                    .ok_or_else(|| HostError::bad_answer("entry without a name"))?
                    .to_owned(),
                dir: e["dir"].as_bool().unwrap_or(false),
                size: e["size"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}
