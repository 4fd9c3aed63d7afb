//! `storage`: a persistent key-value store per app, `<node home>/data/<app-id>/storage.json`
//! (a JSON object). Values are any JSON. The whole store is capped at
//! [`MAX_STORE_BYTES`]; a `set` that would pass it is `too_large` and changes nothing.
//! Changes are written to a temporary file, synced and renamed over the store, so a
//! crash leaves the old or the new store, never half of one; calls of one app are
//! serialized by a lock, so concurrent actions never lose each other's changes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CallContext, HostError, blocking};

/// The largest store, as JSON text.
pub const MAX_STORE_BYTES: usize = 1 << 20;
/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The ops of `storage`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The value of `key`, or `null`.
    Get {
        /// The key.
        key: String,
    },
    /// Sets `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// Any JSON value.
        value: Value,
    },
    /// Removes `key` (no error if absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Every key, sorted.
    Keys {},
}

/// Runs one `storage` call.
pub async fn call(ctx: &CallContext, request: Request) -> super::Answer {
    let key_ok = |key: &str| {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            Err(HostError::invalid(format!(
                "keys are 1 to {MAX_KEY_BYTES} bytes long"
            )))
        } else {
            Ok(())
        }
    };
    match &request {
        Request::Get { key } | Request::Set { key, .. } | Request::Delete { key } => key_ok(key)?,
        Request::Keys {} => {}
    }
    let path = store_path(&ctx.app_dir);
    let lock = ctx.shared.storage_lock(&path);
    let _held = lock.lock().await;
    blocking(move || {
        let mut store = load(&path)?;
        match request {
            Request::Get { key } => Ok(store.remove(&key).unwrap_or(Value::Null)),
            Request::Keys {} => Ok(store.keys().cloned().collect::<Vec<_>>().into()),
            Request::Delete { key } => {
                if store.remove(&key).is_some() {
                    save(&path, &store)?;
                }
                Ok(Value::Null)
            }
            Request::Set { key, value } => {
                store.insert(key, value);
                save(&path, &store)?;
                Ok(Value::Null)
            }
        }
    })
    .await
}

/// Where an app's store lives, given its `<node home>/data/<app-id>` folder.
pub fn store_path(app_dir: &Path) -> PathBuf {
    app_dir.join("storage.json")
}

fn load(path: &Path) -> Result<Map<String, Value>, HostError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| HostError::failed(format!("the app's store is damaged: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(HostError::failed(format!("reading the app's store: {e}"))),
    }
}

fn save(path: &Path, store: &Map<String, Value>) -> Result<(), HostError> {
    let bytes = serde_json::to_vec(store).map_err(|e| HostError::failed(e.to_string()))?;
    if bytes.len() > MAX_STORE_BYTES {
        return Err(HostError::too_large(format!(
            "the app's store would be {} bytes; it is limited to {MAX_STORE_BYTES}",
            bytes.len()
        )));
    }
    let failed = |e: std::io::Error| HostError::failed(format!("writing the app's store: {e}"));
    let dir = path
        .parent()
        .ok_or_else(|| HostError::failed("no store folder"))?;
    crate::permissions::create_private_dir_all(dir).map_err(failed)?;
    let temp = dir.join(format!("storage.json.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temp).map_err(failed)?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    std::fs::rename(&temp, path).map_err(failed)
}
