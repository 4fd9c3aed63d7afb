//! Putting a new binary in the place of the installed one, and back.
//!
//! Both files live in the same folder, so each step is one rename, which the OS does
//! atomically: at every moment the installed path holds a whole binary (the old one or
//! the new one), never a half-written file. On Windows a running `.exe` cannot be
//! overwritten or deleted but can be renamed, which is all this needs.

use std::path::{Path, PathBuf};

/// A swap done: the new binary at `installed`, the previous one at `backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    /// The installed binary's path (now the new version).
    pub installed: PathBuf,
    /// The previous version, kept until the new one is confirmed.
    pub backup: PathBuf,
}

/// The backup's path beside `installed`: `desktop-node.old` (`desktop-node.exe.old`).
pub fn backup_path(installed: &Path) -> PathBuf {
    with_suffix(installed, ".old")
}

/// A temporary name beside `installed` for a download.
pub fn download_path(installed: &Path) -> PathBuf {
    with_suffix(installed, &format!(".download-{}", std::process::id()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// Moves `installed` to its backup and `new` into its place. If the second step fails,
/// the first is undone.
pub fn install(new: &Path, installed: &Path) -> std::io::Result<Swapped> {
    let backup = backup_path(installed);
    if backup.exists() {
        std::fs::remove_file(&backup)?;
    }
    std::fs::rename(installed, &backup)?;
    if let Err(e) = std::fs::rename(new, installed) {
        std::fs::rename(&backup, installed)?;
        return Err(e);
    }
    Ok(Swapped {
        installed: installed.to_owned(),
        backup,
    })
}

/// Puts the backup back in place (the new binary is moved aside, then removed).
pub fn roll_back(swapped: &Swapped) -> std::io::Result<()> {
    let failed = with_suffix(&swapped.installed, ".failed");
    if failed.exists() {
        let _ = std::fs::remove_file(&failed);
    }
    std::fs::rename(&swapped.installed, &failed)?;
    std::fs::rename(&swapped.backup, &swapped.installed)?;
    // On Windows the failed binary may still be running; it is removed next time.
    let _ = std::fs::remove_file(&failed);
    Ok(())
}

/// Removes the backup once the new version is confirmed (on Windows the old binary may
/// still be running: then it stays until the next update).
pub fn finish(swapped: &Swapped) {
    let _ = std::fs::remove_file(&swapped.backup);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_then_roll_back_restores_the_old_binary() {
        let dir = tempfile::tempdir().unwrap();
        let installed = dir.path().join("desktop-node");
        let new = download_path(&installed);
        std::fs::write(&installed, b"old").unwrap();
        std::fs::write(&new, b"new").unwrap();
        let swapped = install(&new, &installed).unwrap();
        assert_eq!(std::fs::read(&installed).unwrap(), b"new");
        assert_eq!(std::fs::read(&swapped.backup).unwrap(), b"old");
        assert!(!new.exists());
        roll_back(&swapped).unwrap();
        assert_eq!(std::fs::read(&installed).unwrap(), b"old");
        assert!(!swapped.backup.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing left behind");
    }

    #[test]
    fn a_failed_install_leaves_the_old_binary_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let installed = dir.path().join("desktop-node");
        std::fs::write(&installed, b"old").unwrap();
        let missing = dir.path().join("no-such-download");
        assert!(install(&missing, &installed).is_err());
        assert_eq!(std::fs::read(&installed).unwrap(), b"old");
        assert!(!backup_path(&installed).exists());
    }

    #[test]
    fn finish_removes_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let installed = dir.path().join("desktop-node.exe");
        let new = download_path(&installed);
        std::fs::write(&installed, b"old").unwrap();
        std::fs::write(&new, b"new").unwrap();
        let swapped = install(&new, &installed).unwrap();
        assert!(swapped.backup.ends_with("desktop-node.exe.old"));
        finish(&swapped);
        assert!(!swapped.backup.exists());
        assert_eq!(std::fs::read(&installed).unwrap(), b"new");
    }
}
