//! The mini-app manager: installs signed bundles from the relay's marketplace, keeps
//! versions side by side, and enables, disables, rolls back and removes them.
//!
//! An install always goes: download → checksum against the marketplace listing → read the
//! zip with the format's limits → platform signature (a key pinned at `desktop-node
//! login`) → id, runtime range and downgrade checks → the person approves the permission
//! list on the desktop → safe extraction into a temporary folder renamed into place →
//! `install.json` → `state.json`. Nothing is written into the apps folder before the
//! approval.

pub mod approvals;
pub mod layout;
mod manager;
pub mod market;
pub mod remote;

pub use manager::{Fetched, Installer, approved_from};

use std::path::{Path, PathBuf};

/// Why an install or a change failed. Messages are for the person.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The relay could not be reached or answered badly.
    #[error("marketplace: {0}")]
    Network(String),
    /// No such app, version or request.
    #[error("{0}")]
    NotFound(String),
    /// The bundle or the request is not acceptable (checksum, signature, format, version).
    #[error("{0}")]
    Invalid(String),
    /// The person refused.
    #[error("the install of {0} was denied on the desktop")]
    Denied(String),
    /// A state file is damaged.
    #[error("damaged state file {0}")]
    Corrupt(String),
    /// The app id is not one (see [`aisa_miniapp::AppId`]).
    #[error(transparent)]
    InvalidId(#[from] aisa_miniapp::AppIdError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl InstallError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        InstallError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn other(err: impl std::fmt::Display) -> Self {
        InstallError::Other(err.to_string())
    }
}
