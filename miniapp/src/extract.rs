//! Writing a verified bundle into a fresh folder, safely.
//!
//! The files are written into a temporary folder next to the destination (same file
//! system), each with `create_new` (which never follows a symlink planted at the name),
//! then the folder is renamed into place. A destination that already exists is refused,
//! and on any failure the temporary folder is removed, so nothing half-written stays.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::bundle::{Bundle, BundleError, check_entry_name};
use crate::signature::VerifiedBundle;

/// Why a bundle could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The destination is already there (versions are never overwritten).
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// The destination has no parent folder or no final name.
    #[error("{0} is not a usable destination folder")]
    BadDestination(PathBuf),
    /// An entry name is not allowed (cannot happen for a bundle read by this crate).
    #[error(transparent)]
    Entry(#[from] BundleError),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Extracts a verified bundle into `dest`, which must not exist yet (its parent folders
/// are created). Returns `dest`.
pub fn extract(verified: &VerifiedBundle<'_>, dest: &Path) -> Result<PathBuf, ExtractError> {
    extract_unverified(verified.bundle(), dest)
}

/// Extracts a bundle without a signature check: for development tools that built the
/// bundle themselves. Installers use [`extract`].
pub fn extract_unverified(bundle: &Bundle, dest: &Path) -> Result<PathBuf, ExtractError> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(ExtractError::BadDestination(dest.to_owned()));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if dest.symlink_metadata().is_ok() {
        return Err(ExtractError::Exists(dest.to_owned()));
    }
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.extract-", name.to_string_lossy()))
        .tempdir_in(parent)
        .map_err(io(parent))?;
    for (entry, data) in bundle.files() {
        check_entry_name(entry)?;
        let path = tmp.path().join(entry);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(data).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
    }
    if dest.symlink_metadata().is_ok() {
        return Err(ExtractError::Exists(dest.to_owned()));
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, dest) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(io(dest)(e));
    }
    Ok(dest.to_owned())
}
