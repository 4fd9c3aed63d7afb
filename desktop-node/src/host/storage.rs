//! `storage`: a persistent key-value store per app, `<node home>/data/<app-id>/storage.json`
//! (a JSON object). Values are any JSON. The whole store is capped at the app's quota
//! ([`super::Quotas::storage_bytes`], default [`MAX_STORE_BYTES`]); a `set` that would pass
//! it is `too_large` and changes nothing (a value larger than the quota on its own is
//! refused before the store is read).
//! Changes are written to a temporary file, synced and renamed over the store, so a
//! crash leaves the old or the new store, never half of one; calls of one app are
//! serialized by a lock, so concurrent actions never lose each other's changes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CallContext, HostError, blocking};

/// The default largest store, as JSON text.
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
    let quota = usize::try_from(ctx.shared.quotas.storage_bytes).unwrap_or(usize::MAX);
    if let Request::Set { value, .. } = &request {
        let len = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
        if len > quota {
            return Err(HostError::too_large(format!(
                "a value of {len} bytes; the app's store is limited to {quota}"
            )));
        }
    }
    let path = store_path(&ctx.app_dir);
    let lock = ctx.shared.storage_lock(&path);
    let _held = lock.lock().await;
    blocking(move |_| {
        let mut store = load(&path, quota)?;
        match request {
            Request::Get { key } => Ok(store.remove(&key).unwrap_or(Value::Null)),
            Request::Keys {} => Ok(store.keys().cloned().collect::<Vec<_>>().into()),
            Request::Delete { key } => {
                if store.remove(&key).is_some() {
                    save(&path, &store, quota)?;
                }
                Ok(Value::Null)
            }
            Request::Set { key, value } => {
                store.insert(key, value);
                save(&path, &store, quota)?;
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

fn load(path: &Path, quota: usize) -> Result<Map<String, Value>, HostError> {
    // A store is never written larger than the quota; a bigger file (planted, or from a
    // larger quota) is read only up to a bound, not whatever its size.
    let bound = quota.max(MAX_STORE_BYTES).saturating_mul(4);
    if std::fs::metadata(path).is_ok_and(|m| m.len() > bound as u64) {
        return Err(HostError::failed(format!(
            "the app's store is larger than {bound} bytes"
        )));
    }
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| HostError::failed(format!("the app's store is damaged: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(HostError::failed(format!("reading the app's store: {e}"))),
    }
}

fn save(path: &Path, store: &Map<String, Value>, quota: usize) -> Result<(), HostError> {
    let bytes = serde_json::to_vec(store).map_err(|e| HostError::failed(e.to_string()))?;
    if bytes.len() > quota {
        return Err(HostError::too_large(format!(
            "the app's store would be {} bytes; it is limited to {quota}",
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::host::{ErrorCode, HostShared};
    use crate::permissions::{Grants, UserDirs};

    fn ctx(app_dir: &Path) -> CallContext {
        CallContext {
            app_id: "a".into(),
            app_version: "1.0.0".into(),
            grants: Arc::new(Grants::default()),
            dirs: Arc::new(UserDirs::default()),
            app_dir: app_dir.to_owned(),
            shared: Arc::new(HostShared::new().unwrap()),
        }
    }

    #[tokio::test]
    async fn the_store_is_capped_and_a_refused_set_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let set = |key: &str, value: Value| Request::Set {
            key: key.into(),
            value,
        };
        call(&ctx, set("small", "x".into())).await.unwrap();
        let big = "y".repeat(MAX_STORE_BYTES);
        let err = call(&ctx, set("big", big.into())).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        let almost = "z".repeat(MAX_STORE_BYTES - 100);
        call(&ctx, set("almost", almost.into())).await.unwrap();
        let keys = call(&ctx, Request::Keys {}).await.unwrap();
        assert_eq!(keys, serde_json::json!(["almost", "small"]));
        let err = call(&ctx, set("more", "w".repeat(200).into()))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
        // Deleting makes room again; no temporary files are left behind.
        call(
            &ctx,
            Request::Delete {
                key: "almost".into(),
            },
        )
        .await
        .unwrap();
        call(&ctx, set("more", "w".repeat(200).into()))
            .await
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["storage.json"]);
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let err = call(&ctx, Request::Get { key: long_key })
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Invalid);
    }

    #[tokio::test]
    async fn concurrent_sets_of_one_app_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let ctx = ctx.clone();
            tasks.spawn(async move {
                call(
                    &ctx,
                    Request::Set {
                        key: format!("k{i:02}"),
                        value: i.into(),
                    },
                )
                .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let keys = call(&ctx, Request::Keys {}).await.unwrap();
        assert_eq!(keys.as_array().unwrap().len(), 20);
    }
}
