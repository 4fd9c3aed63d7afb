//! Where installed apps live on disk and the small state files beside them.
//!
//! ```text
//! <home>/miniapps/<id>/state.json            {"active": "1.2.0", "enabled": true}
//! <home>/miniapps/<id>/<version>/            the extracted bundle
//! <home>/miniapps/<id>/<version>/install.json where it came from, what was approved
//! <home>/miniapps/.generation                touched after every change, so a running
//!                                            node reloads what the CLI changed
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::InstallError;

/// `state.json`: which installed version runs, and whether actions may run at all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppState {
    /// The version that runs.
    pub active: String,
    /// Whether actions may run.
    pub enabled: bool,
}

/// What the person approved when installing; stored as written in `permissions.json`
/// (variables such as `$DOCUMENTS` are resolved when the app is loaded).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ApprovedPermissions {
    /// May ask the model.
    pub ai: bool,
    /// Folders it may read.
    pub read: Vec<String>,
    /// Folders it may write.
    pub write: Vec<String>,
    /// Hosts it may reach.
    pub network: Vec<String>,
    /// May use the clipboard.
    pub clipboard: bool,
}

impl ApprovedPermissions {
    /// The lines a person reads before approving; empty when the app asks for nothing.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.ai {
            lines.push("use your AI provider (with your key, on this machine)".to_owned());
        }
        for path in &self.read {
            lines.push(format!("read files in {path}"));
        }
        for path in &self.write {
            lines.push(format!("write files in {path}"));
        }
        for host in &self.network {
            lines.push(format!("connect to {host}"));
        }
        if self.clipboard {
            lines.push("read and write the clipboard".to_owned());
        }
        lines
    }

    /// Whether `self` asks for something `approved` did not grant.
    pub fn exceeds(&self, approved: &ApprovedPermissions) -> bool {
        (self.ai && !approved.ai)
            || (self.clipboard && !approved.clipboard)
            || self.read.iter().any(|p| !approved.read.contains(p))
            || self.write.iter().any(|p| !approved.write.contains(p))
            || self.network.iter().any(|h| !approved.network.contains(h))
    }
}

/// `install.json`, written last when a version is installed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstallRecord {
    /// App id.
    pub id: String,
    /// Version.
    pub version: String,
    /// SHA-256 (hex) of the bundle as downloaded; empty for a local development install.
    #[serde(default)]
    pub sha256: String,
    /// Id of the platform key that signed it; empty for a local development install.
    #[serde(default)]
    pub key_id: String,
    /// Where it came from: a relay URL, or `local`.
    pub source: String,
    /// Unix seconds.
    pub installed_at: u64,
    /// What the person approved.
    pub approved: ApprovedPermissions,
}

/// The `miniapps` folder.
#[derive(Debug, Clone)]
pub struct AppsDir {
    root: PathBuf,
}

impl AppsDir {
    /// The folder at `root` (created when something is installed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AppsDir { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>`.
    pub fn app_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// `<root>/<id>/<version>`.
    pub fn version_dir(&self, id: &str, version: &str) -> PathBuf {
        self.root.join(id).join(version)
    }

    /// Ids of installed apps, sorted.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        ids.sort();
        ids
    }

    /// Installed versions of `id`, oldest first.
    pub fn versions(&self, id: &str) -> Vec<semver::Version> {
        let Ok(entries) = std::fs::read_dir(self.app_dir(id)) else {
            return Vec::new();
        };
        let mut versions: Vec<semver::Version> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| semver::Version::parse(&e.file_name().to_string_lossy()).ok())
            .collect();
        versions.sort();
        versions
    }

    /// `state.json` of `id`; without one (an older install), the newest version, enabled.
    pub fn state(&self, id: &str) -> Result<Option<AppState>, InstallError> {
        let path = self.app_dir(id).join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| InstallError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(self.versions(id).last().map(|v| AppState {
                    active: v.to_string(),
                    enabled: true,
                }))
            }
            Err(e) => Err(InstallError::io(&path, e)),
        }
    }

    /// Writes `state.json` of `id` atomically and tells a running node.
    pub fn set_state(&self, id: &str, state: &AppState) -> Result<(), InstallError> {
        let path = self.app_dir(id).join("state.json");
        let text = serde_json::to_vec_pretty(state).map_err(InstallError::other)?;
        write_atomic(&path, &text)?;
        self.touch_generation()
    }

    /// `install.json` of one version, if there is one.
    pub fn record(&self, id: &str, version: &str) -> Result<Option<InstallRecord>, InstallError> {
        let path = self.version_dir(id, version).join("install.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| InstallError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InstallError::io(&path, e)),
        }
    }

    /// Writes `install.json` into a version folder.
    pub fn write_record(&self, dir: &Path, record: &InstallRecord) -> Result<(), InstallError> {
        let text = serde_json::to_vec_pretty(record).map_err(InstallError::other)?;
        write_atomic(&dir.join("install.json"), &text)
    }

    /// Removes every version of `id`.
    pub fn remove_app(&self, id: &str) -> Result<(), InstallError> {
        let dir = self.app_dir(id);
        std::fs::remove_dir_all(&dir).map_err(|e| InstallError::io(&dir, e))?;
        self.touch_generation()
    }

    /// `<root>/.generation`: its modification time changes after every change.
    pub fn generation_path(&self) -> PathBuf {
        self.root.join(".generation")
    }

    /// Marks the apps folder changed.
    pub fn touch_generation(&self) -> Result<(), InstallError> {
        std::fs::create_dir_all(&self.root).map_err(|e| InstallError::io(&self.root, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = self.generation_path();
        std::fs::write(&path, nanos.to_string()).map_err(|e| InstallError::io(&path, e))
    }

    /// The current generation marker (changes whenever the folder changes).
    pub fn generation(&self) -> String {
        std::fs::read_to_string(self.generation_path()).unwrap_or_default()
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| InstallError::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| InstallError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| InstallError::io(path, e))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_defaults_to_the_newest_version_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AppsDir::new(tmp.path());
        for v in ["1.9.0", "1.10.0", "0.1.0", "not-a-version"] {
            std::fs::create_dir_all(dir.version_dir("a", v)).unwrap();
        }
        assert_eq!(dir.versions("a").last().unwrap().to_string(), "1.10.0");
        let state = dir.state("a").unwrap().unwrap();
        assert_eq!(state.active, "1.10.0");
        assert!(state.enabled);
        let before = dir.generation();
        let off = AppState {
            active: "1.9.0".into(),
            enabled: false,
        };
        dir.set_state("a", &off).unwrap();
        assert_eq!(dir.state("a").unwrap().unwrap(), off);
        assert_ne!(dir.generation(), before);
        assert_eq!(dir.ids(), vec!["a".to_owned()]);
        assert!(dir.state("missing").unwrap().is_none());
    }

    #[test]
    fn permissions_growth_is_detected() {
        let approved = ApprovedPermissions {
            ai: true,
            read: vec!["$DOCUMENTS".into()],
            ..Default::default()
        };
        let same = approved.clone();
        assert!(!same.exceeds(&approved));
        let more = ApprovedPermissions {
            network: vec!["example.com".into()],
            ..approved.clone()
        };
        assert!(more.exceeds(&approved));
        assert_eq!(
            more.describe(),
            vec![
                "use your AI provider (with your key, on this machine)",
                "read files in $DOCUMENTS",
                "connect to example.com"
            ]
        );
    }
}
