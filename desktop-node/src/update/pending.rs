//! The record of an update waiting for the new binary to prove itself.
//!
//! `desktop-node update` writes `update-pending.json` in the node's home after the swap:
//! which version was replaced by which, and the new binary's SHA-256. A node that starts
//! and is welcomed by the relay checks whether it *is* that binary (its own file hashes
//! to it) and, if so, records `confirmed_at`. The updater waits for that mark; without
//! it in time, it rolls back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file's name in the node's home.
pub const FILE: &str = "update-pending.json";

/// An update in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The version replaced.
    pub from_version: String,
    /// The version installed.
    pub to_version: String,
    /// The installed binary's SHA-256 (hex).
    pub installed_sha256: String,
    /// When the swap happened, Unix seconds.
    pub swapped_at: u64,
    /// When the new binary was welcomed by the relay, Unix seconds.
    pub confirmed_at: Option<u64>,
}

fn path(home: &Path) -> PathBuf {
    home.join(FILE)
}

/// Writes the record (atomically: a temporary file renamed over it).
pub fn write(home: &Path, pending: &Pending) -> std::io::Result<()> {
    let tmp = home.join(format!("{FILE}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(pending)?)?;
    std::fs::rename(&tmp, path(home))
}

/// The record, if an update is in progress.
pub fn read(home: &Path) -> Option<Pending> {
    let bytes = std::fs::read(path(home)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the record.
pub fn clear(home: &Path) {
    let _ = std::fs::remove_file(path(home));
}

/// SHA-256 (hex) of a file.
pub fn file_sha256(file: &Path) -> std::io::Result<String> {
    let mut hash = Sha256::new();
    let mut reader = std::fs::File::open(file)?;
    std::io::copy(&mut reader, &mut hash)?;
    Ok(hex::encode(hash.finalize()))
}

/// Marks the update confirmed if one is pending and `running_binary` is the binary it
/// installed. Returns whether it did.
pub fn confirm_if_pending(home: &Path, running_binary: &Path, now: u64) -> bool {
    let Some(mut pending) = read(home) else {
        return false;
    };
    if pending.confirmed_at.is_some() {
        return false;
    }
    match file_sha256(running_binary) {
        Ok(sha) if sha == pending.installed_sha256 => {
            pending.confirmed_at = Some(now);
            write(home, &pending).is_ok()
        }
        _ => false,
    }
}

/// For `run`: once the relay has welcomed this node, confirms a pending update of this
/// binary. Returns at once when no update is pending.
pub async fn confirm_when_online(home: PathBuf, mut online: tokio::sync::watch::Receiver<bool>) {
    if read(&home).is_none() {
        return;
    }
    if online.wait_for(|up| *up).await.is_err() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let now = super::unix_now();
    let confirmed = tokio::task::spawn_blocking(move || confirm_if_pending(&home, &exe, now)).await;
    if matches!(confirmed, Ok(true)) {
        tracing::info!(
            version = super::VERSION,
            "update confirmed: this version is connected"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_installed_binary_confirms_and_only_once() {
        let home = tempfile::tempdir().unwrap();
        let new = home.path().join("new");
        let other = home.path().join("other");
        std::fs::write(&new, b"the new binary").unwrap();
        std::fs::write(&other, b"another binary").unwrap();
        assert!(!confirm_if_pending(home.path(), &new, 5), "nothing pending");
        write(
            home.path(),
            &Pending {
                from_version: "0.1.0".into(),
                to_version: "0.2.0".into(),
                installed_sha256: file_sha256(&new).unwrap(),
                swapped_at: 1,
                confirmed_at: None,
            },
        )
        .unwrap();
        assert!(!confirm_if_pending(home.path(), &other, 5));
        assert_eq!(read(home.path()).unwrap().confirmed_at, None);
        assert!(confirm_if_pending(home.path(), &new, 7));
        assert_eq!(read(home.path()).unwrap().confirmed_at, Some(7));
        assert!(
            !confirm_if_pending(home.path(), &new, 9),
            "already confirmed"
        );
        clear(home.path());
        assert!(read(home.path()).is_none());
    }
}
