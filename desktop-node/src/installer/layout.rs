//! Where installed apps live on disk and the small state files beside them.
//!
//! ```text
//! <home>/miniapps/<id>/state.json            {"active": "1.2.0", "enabled": true}
//! <home>/miniapps/<id>/<version>/            the extracted bundle
//! <home>/miniapps/<id>/<version>/install.json where it came from, what was approved
//! <home>/miniapps/.generation                touched after every change, so a running
//!                                            node reloads what the CLI changed
//! ```
//!
//! Paths are built only from an [`AppId`] (checked by [`AppId::parse`] wherever the id
//! came from) and a parsed [`Version`], so no id or version can name a folder outside
//! `<home>/miniapps/<id>/`.

use std::path::{Path, PathBuf};

use aisa_miniapp::AppId;
use semver::Version;
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

impl AppState {
    /// The active version, parsed ([`AppsDir::state`] refuses a `state.json` whose
    /// `active` is not a version).
    pub fn active_version(&self) -> Result<Version, InstallError> {
        Version::parse(&self.active)
            .map_err(|e| InstallError::Corrupt(format!("active version {:?}: {e}", self.active)))
    }
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

/// The one line shown for an app that asks for no permissions (see
/// [`ApprovedPermissions::shown`]).
pub const NO_PERMISSIONS: &str = "it asks for no permissions";

impl ApprovedPermissions {
    /// The lines a person reads before approving, as every place that asks shows them
    /// (`desktop-node apps pending|approve|install` and the desktop face): one per
    /// permission, or [`NO_PERMISSIONS`] alone.
    pub fn shown(&self) -> Vec<String> {
        let lines = self.describe();
        if lines.is_empty() {
            vec![NO_PERMISSIONS.to_owned()]
        } else {
            lines
        }
    }

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
    pub fn app_dir(&self, id: &AppId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// `<root>/<id>/<version>`.
    pub fn version_dir(&self, id: &AppId, version: &Version) -> PathBuf {
        self.root.join(id.as_str()).join(version.to_string())
    }

    /// Ids of installed apps, sorted (folders whose names are not app ids are skipped).
    pub fn ids(&self) -> Vec<AppId> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut ids: Vec<AppId> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| AppId::parse(&e.file_name().to_string_lossy()).ok())
            .collect();
        ids.sort();
        ids
    }

    /// Installed versions of `id`, oldest first.
    pub fn versions(&self, id: &AppId) -> Vec<semver::Version> {
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
    /// An `active` that is not a version is corrupt.
    pub fn state(&self, id: &AppId) -> Result<Option<AppState>, InstallError> {
        let path = self.app_dir(id).join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<AppState>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|state| match Version::parse(&state.active) {
                    Ok(_) => Ok(Some(state)),
                    Err(e) => Err(format!("active version {:?}: {e}", state.active)),
                })
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
    pub fn set_state(&self, id: &AppId, state: &AppState) -> Result<(), InstallError> {
        let path = self.app_dir(id).join("state.json");
        let text = serde_json::to_vec_pretty(state).map_err(InstallError::other)?;
        write_atomic(&path, &text)?;
        self.touch_generation()
    }

    /// `install.json` of one version, if there is one.
    pub fn record(
        &self,
        id: &AppId,
        version: &Version,
    ) -> Result<Option<InstallRecord>, InstallError> {
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

    /// Removes every version of `id`: the folder `<root>/<id>`, and nothing else. A
    /// folder that is a link (to somewhere else) is refused, not followed.
    pub fn remove_app(&self, id: &AppId) -> Result<(), InstallError> {
        let dir = self.app_dir(id);
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| InstallError::io(&dir, e))?;
        if !meta.is_dir() {
            return Err(InstallError::Corrupt(format!(
                "{} is not a folder; not removing it",
                dir.display()
            )));
        }
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
    fn what_a_person_is_shown_is_one_line_per_permission_or_none() {
        assert_eq!(ApprovedPermissions::default().shown(), [NO_PERMISSIONS]);
        let asks = ApprovedPermissions {
            ai: true,
            network: vec!["api.example.com".into()],
            ..Default::default()
        };
        assert_eq!(
            asks.shown(),
            [
                "use your AI provider (with your key, on this machine)",
                "connect to api.example.com"
            ]
        );
    }

    #[test]
    fn state_defaults_to_the_newest_version_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AppsDir::new(tmp.path());
        let a = AppId::parse("a").unwrap();
        for v in ["1.9.0", "1.10.0", "0.1.0", "not-a-version"] {
            std::fs::create_dir_all(tmp.path().join("a").join(v)).unwrap();
        }
        assert_eq!(dir.versions(&a).last().unwrap().to_string(), "1.10.0");
        let state = dir.state(&a).unwrap().unwrap();
        assert_eq!(state.active, "1.10.0");
        assert!(state.enabled);
        let before = dir.generation();
        let off = AppState {
            active: "1.9.0".into(),
            enabled: false,
        };
        dir.set_state(&a, &off).unwrap();
        assert_eq!(dir.state(&a).unwrap().unwrap(), off);
        assert_ne!(dir.generation(), before);
        assert_eq!(dir.ids(), vec![a.clone()]);
        assert!(
            dir.state(&AppId::parse("missing").unwrap())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_state_whose_active_version_is_a_path_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AppsDir::new(tmp.path());
        let a = AppId::parse("a").unwrap();
        std::fs::create_dir_all(tmp.path().join("a")).unwrap();
        std::fs::write(
            tmp.path().join("a/state.json"),
            r#"{"active":"../../../etc","enabled":true}"#,
        )
        .unwrap();
        let err = dir.state(&a).unwrap_err().to_string();
        assert!(err.contains("active version"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn removing_an_app_never_follows_a_link_out_of_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("1.0.0")).unwrap();
        std::fs::write(outside.join("state.json"), "{}").unwrap();
        let root = tmp.path().join("miniapps");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
        let dir = AppsDir::new(&root);
        let err = dir
            .remove_app(&AppId::parse("linked").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("not a folder"), "{err}");
        assert!(outside.join("state.json").exists() && outside.join("1.0.0").exists());
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
