//! Checks an installer makes before replacing or adding a version: the id is the one it
//! asked for, the version is newer than what is installed, the runtime range fits.

use semver::Version;

use crate::manifest::Manifest;

/// Why a candidate version is not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The bundle is a different app than the one requested.
    #[error("the bundle is app {found:?}, not {expected:?}")]
    IdMismatch {
        /// The id asked for.
        expected: String,
        /// The id in the manifest.
        found: String,
    },
    /// The candidate is older than the installed version.
    #[error("{id} {candidate} is older than the installed {installed}; refusing to downgrade")]
    Downgrade {
        /// The app.
        id: String,
        /// The installed version.
        installed: Version,
        /// The candidate's version.
        candidate: Version,
    },
    /// The candidate is the installed version.
    #[error("{id} {version} is already installed")]
    SameVersion {
        /// The app.
        id: String,
        /// The version.
        version: Version,
    },
    /// The candidate does not run on this node.
    #[error("{id} {version} needs desktop-node {runtime}; this is {node}")]
    Runtime {
        /// The app.
        id: String,
        /// Its version.
        version: String,
        /// Its runtime range.
        runtime: String,
        /// This node's version.
        node: String,
    },
}

/// Refuses a candidate whose id is not `expected_id`, or whose version is not newer than
/// `installed` (when something is installed). A rollback to an installed older version
/// is a different operation and does not go through this check.
pub fn check_upgrade(
    installed: Option<&Version>,
    candidate: &Manifest,
    expected_id: &str,
) -> Result<(), UpgradeError> {
    if candidate.id != expected_id {
        return Err(UpgradeError::IdMismatch {
            expected: expected_id.to_owned(),
            found: candidate.id.clone(),
        });
    }
    match installed {
        Some(v) if candidate.version < *v => Err(UpgradeError::Downgrade {
            id: candidate.id.clone(),
            installed: v.clone(),
            candidate: candidate.version.clone(),
        }),
        Some(v) if candidate.version == *v => Err(UpgradeError::SameVersion {
            id: candidate.id.clone(),
            version: v.clone(),
        }),
        _ => Ok(()),
    }
}

/// Refuses a candidate whose runtime range does not include `node_version`.
pub fn check_runtime(candidate: &Manifest, node_version: &Version) -> Result<(), UpgradeError> {
    if candidate.runs_on(node_version) {
        Ok(())
    } else {
        Err(UpgradeError::Runtime {
            id: candidate.id.clone(),
            version: candidate.version.to_string(),
            runtime: candidate.runtime.to_string(),
            node: node_version.to_string(),
        })
    }
}
