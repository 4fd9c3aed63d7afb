//! Install requests waiting for the person at the desktop.
//!
//! A request from the browser is only a request: the node downloads and verifies the
//! bundle, then writes `<home>/pending/<id>@<version>.json` (what the app asks for) and
//! waits. `desktop-node apps approve|deny ID` writes `<id>@<version>.decision` next to it;
//! the node sees it, installs or refuses, and removes both files. Files, not a socket, so
//! the CLI works whether or not the node runs, and a request survives a restart of
//! either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InstallError;
use super::layout::{ApprovedPermissions, write_atomic};

/// One waiting request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingInstall {
    /// App id.
    pub id: String,
    /// Version.
    pub version: String,
    /// The app's name for people.
    pub name: String,
    /// What it asks for.
    pub permissions: ApprovedPermissions,
    /// The verified bundle, kept in the node's cache until the decision.
    pub bundle_path: PathBuf,
    /// Unix seconds.
    pub requested_at: u64,
}

/// The person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Install it.
    Approve,
    /// Do not.
    Deny,
}

/// The `pending` folder.
#[derive(Debug, Clone)]
pub struct Approvals {
    dir: PathBuf,
}

impl Approvals {
    /// The folder at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Approvals { dir: dir.into() }
    }

    fn request_path(&self, id: &str, version: &str) -> PathBuf {
        self.dir.join(format!("{id}@{version}.json"))
    }

    fn decision_path(&self, id: &str, version: &str) -> PathBuf {
        self.dir.join(format!("{id}@{version}.decision"))
    }

    /// Records a request (replacing an older one for the same version).
    pub fn add(&self, request: &PendingInstall) -> Result<(), InstallError> {
        let _ = std::fs::remove_file(self.decision_path(&request.id, &request.version));
        let text = serde_json::to_vec_pretty(request).map_err(InstallError::other)?;
        write_atomic(&self.request_path(&request.id, &request.version), &text)
    }

    /// Every waiting request, oldest first.
    pub fn list(&self) -> Vec<PendingInstall> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut list: Vec<PendingInstall> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        list.sort_by_key(|p| p.requested_at);
        list
    }

    /// The waiting request for `id` (at `version`, or the only one for that id).
    pub fn find(&self, id: &str, version: Option<&str>) -> Result<PendingInstall, InstallError> {
        let matches: Vec<PendingInstall> = self
            .list()
            .into_iter()
            .filter(|p| p.id == id && version.is_none_or(|v| v == p.version))
            .collect();
        match matches.len() {
            0 => Err(InstallError::NotFound(format!(
                "no install request for {id} is waiting"
            ))),
            1 => Ok(matches.into_iter().next().expect("one")),
            _ => Err(InstallError::Invalid(format!(
                "several versions of {id} are waiting; name one with --version"
            ))),
        }
    }

    /// Records the person's decision for a waiting request.
    pub fn decide(&self, request: &PendingInstall, decision: Decision) -> Result<(), InstallError> {
        let text = match decision {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        };
        write_atomic(
            &self.decision_path(&request.id, &request.version),
            text.as_bytes(),
        )
    }

    /// The decision, if one was made.
    pub fn decision(&self, id: &str, version: &str) -> Option<Decision> {
        match std::fs::read_to_string(self.decision_path(id, version))
            .ok()?
            .trim()
        {
            "approve" => Some(Decision::Approve),
            "deny" => Some(Decision::Deny),
            _ => None,
        }
    }

    /// Whether a request is still waiting.
    pub fn is_pending(&self, id: &str, version: &str) -> bool {
        self.request_path(id, version).exists()
    }

    /// Forgets a request and its decision (the cached bundle too).
    pub fn remove(&self, request: &PendingInstall) {
        let _ = std::fs::remove_file(self.request_path(&request.id, &request.version));
        let _ = std::fs::remove_file(self.decision_path(&request.id, &request.version));
        let _ = std::fs::remove_file(&request.bundle_path);
    }

    /// Waits until the person decides, polling every `every`, for at most `timeout`.
    pub async fn wait(
        &self,
        request: &PendingInstall,
        every: Duration,
        timeout: Duration,
    ) -> Option<Decision> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(decision) = self.decision(&request.id, &request.version) {
                return Some(decision);
            }
            if !self.is_pending(&request.id, &request.version) {
                // Withdrawn (e.g. a newer request replaced it and was handled).
                return Some(Decision::Deny);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: &str) -> PendingInstall {
        PendingInstall {
            id: "seo-writer".into(),
            version: version.into(),
            name: "SEO Writer".into(),
            permissions: ApprovedPermissions {
                ai: true,
                ..Default::default()
            },
            bundle_path: PathBuf::from("/nonexistent"),
            requested_at: 1,
        }
    }

    #[tokio::test]
    async fn a_decision_written_by_the_cli_reaches_the_waiting_node() {
        let tmp = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(tmp.path());
        let req = request("1.0.0");
        approvals.add(&req).unwrap();
        assert_eq!(approvals.find("seo-writer", None).unwrap(), req);
        let waiter = {
            let approvals = approvals.clone();
            let req = req.clone();
            tokio::spawn(async move {
                approvals
                    .wait(&req, Duration::from_millis(5), Duration::from_secs(5))
                    .await
            })
        };
        approvals.decide(&req, Decision::Approve).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(Decision::Approve));
        approvals.remove(&req);
        assert!(approvals.list().is_empty());
        assert!(approvals.find("seo-writer", None).is_err());
    }

    #[tokio::test]
    async fn waiting_times_out_without_a_decision_and_ambiguity_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(tmp.path());
        approvals.add(&request("1.0.0")).unwrap();
        approvals.add(&request("1.1.0")).unwrap();
        let err = approvals.find("seo-writer", None).unwrap_err();
        assert!(err.to_string().contains("--version"), "{err}");
        let one = approvals.find("seo-writer", Some("1.1.0")).unwrap();
        let waited = approvals
            .wait(&one, Duration::from_millis(5), Duration::from_millis(30))
            .await;
        assert_eq!(waited, None);
    }
}
