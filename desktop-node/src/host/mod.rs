//! The permissioned host API: what a mini-app may do besides computing, one module per
//! capability, each reached through its own import of `aisapp_v1` (so a module's imports
//! show what it can reach). `docs/guest-abi.md` is the reference for guests.
//!
//! A call is a JSON request `{"op": "<op>", ...args}`; its answer is `{"ok": <value>}` or
//! `{"error": {"code", "message"}}` ([`HostError`]). Denials are answers, never traps:
//! a JavaScript guest can catch them. Every call is checked against the app's
//! [`Grants`]; I/O runs on tokio's blocking pool or async clients, never on the
//! executor's threads.
//!
//! The imports, their signatures, which permission each needs, the answer format and the
//! error codes are the guest contract's (`aisa_abi`); this module implements them.
//!
//! | import | module | permission |
//! | --- | --- | --- |
//! | `fs` | [`fs`] (and [`pdf`] for `pdf_text`) | filesystem read / write grants; `$APP_DATA` always |
//! | `http` | [`http`] | network grants (hosts) |
//! | `clipboard` | [`clipboard`] | clipboard |
//! | `tool` | [`tool`] | none |
//! | `storage` | [`storage`] | none (the app's own store) |
//! | `env` | [`env`] | none |

pub mod clipboard;
pub mod env;
pub mod fs;
pub mod http;
pub mod pdf;
pub mod storage;
pub mod tool;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use crate::permissions::{AccessError, Grants, UserDirs};

// The answer format, its error codes and the request and answer caps are the guest
// contract's (`aisa_abi::answer`).
pub use aisa_abi::answer::{Answer, ErrorCode, HostError, MAX_ANSWER_BYTES, MAX_REQUEST_BYTES};
/// The capability imports (`aisa_abi::Capability`).
pub use aisa_abi::imports::Capability;

impl From<AccessError> for HostError {
    fn from(err: AccessError) -> Self {
        let code = match &err {
            AccessError::Denied(_) => ErrorCode::PermissionDenied,
            AccessError::NotFound(_) => ErrorCode::NotFound,
            AccessError::Path(_) => ErrorCode::Invalid,
            AccessError::Io(_) => ErrorCode::Failed,
        };
        HostError::new(code, err.to_string())
    }
}

/// Per-app disk quotas, enforced when something is written: a write that would pass one
/// is `too_large` and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// The largest `storage` store (its JSON text). Default 1 MiB.
    pub storage_bytes: u64,
    /// The most bytes of files in `$APP_DATA`, all files together. Default 256 MiB.
    pub app_data_bytes: u64,
    /// The most files and folders in `$APP_DATA`. Default 10,000.
    pub app_data_entries: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            storage_bytes: storage::MAX_STORE_BYTES as u64,
            app_data_bytes: 256 << 20,
            app_data_entries: 10_000,
        }
    }
}

/// What the host shares across actions: one HTTP client (one connection pool), the
/// per-app locks and the quotas.
pub struct HostShared {
    pub(crate) http: reqwest::Client,
    storage_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) quotas: Quotas,
}

impl HostShared {
    /// Builds the shared HTTP client, with the default [`Quotas`].
    pub fn new() -> Result<Self, String> {
        Self::with_quotas(Quotas::default())
    }

    /// Builds the shared HTTP client, with `quotas`.
    pub fn with_quotas(quotas: Quotas) -> Result<Self, String> {
        Ok(HostShared {
            http: http::client().map_err(|e| e.to_string())?,
            storage_locks: Mutex::new(HashMap::new()),
            quotas,
        })
    }

    /// The lock that serializes changes to one app's store.
    pub(crate) fn storage_lock(&self, path: &std::path::Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .storage_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(path.to_owned()).or_default().clone()
    }
}

/// What a call knows about the action it serves.
#[derive(Clone)]
pub struct CallContext {
    /// The app's id.
    pub app_id: String,
    /// The app's version.
    pub app_version: String,
    /// What the person approved.
    pub grants: Arc<Grants>,
    /// How path variables resolve.
    pub dirs: Arc<UserDirs>,
    /// `<node home>/data/<app-id>`: the app's store and its `files` folder.
    pub app_dir: PathBuf,
    /// Shared clients and locks.
    pub shared: Arc<HostShared>,
}

impl CallContext {
    /// `$APP_DATA`: `<node home>/data/<app-id>/files`.
    pub fn app_data(&self) -> PathBuf {
        self.app_dir.join("files")
    }

    /// The node's home folder: `app_dir` is always `<node home>/data/<app-id>`. No file
    /// grant reaches into it (only `$APP_DATA` does).
    pub fn node_home(&self) -> PathBuf {
        self.app_dir
            .parent()
            .and_then(std::path::Path::parent)
            .map_or_else(|| self.app_dir.clone(), std::path::Path::to_path_buf)
    }

    /// Resolves a path a guest gave (variables, absolute).
    pub fn resolve(&self, path: &str) -> Result<PathBuf, HostError> {
        self.dirs
            .resolve(path, &self.app_data())
            .map_err(|e| HostError::invalid(e.to_string()))
    }
}

/// Runs one call of `capability` with the guest's parsed request.
pub async fn call(capability: Capability, ctx: &CallContext, request: serde_json::Value) -> Answer {
    match capability {
        Capability::Fs => fs::call(ctx, parse(request)?).await,
        Capability::Http => http::call(ctx, parse(request)?).await,
        Capability::Clipboard => clipboard::call(ctx, parse(request)?),
        Capability::Tool => tool::call(parse(request)?).await,
        Capability::Storage => storage::call(ctx, parse(request)?).await,
        Capability::Env => Ok(env::call(ctx, parse(request)?)),
    }
}

/// The bytes of an answer: `{"ok": value}` or `{"error": {...}}`, replaced by a
/// `too_large` error when over [`MAX_ANSWER_BYTES`] ([`aisa_abi::answer::encode`]).
pub fn answer_bytes(answer: Answer) -> Vec<u8> {
    aisa_abi::answer::encode(answer)
}

/// A request as one module's op enum; a shape mismatch is `invalid`.
fn parse<T: DeserializeOwned>(request: serde_json::Value) -> Result<T, HostError> {
    if !request.get("op").is_some_and(serde_json::Value::is_string) {
        return Err(HostError::invalid(
            "a request is a JSON object with a string \"op\"",
        ));
    }
    serde_json::from_value(request).map_err(|e| HostError::invalid(e.to_string()))
}

/// Tells blocking host work that nobody waits for it any more (its action ended: done,
/// timed out or cancelled). Long loops call [`Cancel::check`] and stop.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Whether the work should stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err` (`failed`) once the work should stop.
    pub fn check(&self) -> Result<(), HostError> {
        if self.is_cancelled() {
            Err(HostError::failed(
                "the action ended; the host call was abandoned",
            ))
        } else {
            Ok(())
        }
    }

    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Cancels the work, and aborts it if it has not started, when the waiting future goes
/// away (a dropped host call: its action ended).
struct CancelOnDrop {
    cancel: Cancel,
    task: tokio::task::AbortHandle,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

/// Runs blocking work (file I/O, parsing) on tokio's blocking pool; a panic there is a
/// `failed` answer, not a crash. When the returned future is dropped before the work is
/// done (the action ended), the work is aborted if it has not started, and otherwise
/// told through its [`Cancel`], which it checks in its loops.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce(&Cancel) -> Result<T, HostError> + Send + 'static,
) -> Result<T, HostError> {
    let cancel = Cancel::default();
    let task = tokio::task::spawn_blocking({
        let cancel = cancel.clone();
        move || {
            cancel.check()?;
            work(&cancel)
        }
    });
    let _guard = CancelOnDrop {
        cancel,
        task: task.abort_handle(),
    };
    task.await
        .unwrap_or_else(|e| Err(HostError::failed(format!("the host task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    #[test]
    fn quotas_come_from_the_limits_of_node_toml() {
        let limits: crate::config::LimitsConfig =
            toml::from_str("app_data_mib = 2\nstorage_kib = 3\n").unwrap();
        let quotas = limits.host_quotas();
        assert_eq!(quotas.app_data_bytes, 2 << 20);
        assert_eq!(quotas.storage_bytes, 3 << 10);
        let defaults = crate::config::LimitsConfig::default().host_quotas();
        assert_eq!(defaults, Quotas::default());
    }

    #[tokio::test]
    async fn blocking_work_is_told_to_stop_when_its_call_is_dropped() {
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let call = blocking(move |cancel| {
            let _ = started_tx.send(());
            let begun = std::time::Instant::now();
            // A long loop that checks, as the host's parsers do.
            while begun.elapsed() < Duration::from_secs(30) {
                if let Err(err) = cancel.check() {
                    let _ = seen_tx.send(begun.elapsed());
                    return Err::<(), _>(err);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        // The action ends (its time is up) while the work runs.
        let timed_out = tokio::time::timeout(Duration::from_millis(300), async {
            tokio::select! {
                _ = call => unreachable!("the work never finishes on its own this soon"),
                _ = async { started_rx.await.unwrap(); std::future::pending::<()>().await } => {}
            }
        })
        .await;
        assert!(timed_out.is_err());
        let stopped_after =
            tokio::task::spawn_blocking(move || seen_rx.recv_timeout(Duration::from_secs(5)))
                .await
                .unwrap()
                .expect("the work saw the cancellation");
        assert!(stopped_after < Duration::from_secs(5), "{stopped_after:?}");
    }
}
