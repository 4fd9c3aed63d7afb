//! Install requests waiting for the person at the desktop.
//!
//! A request from the browser is only a request: the node downloads and verifies the
//! bundle, then writes `<home>/pending/<id>@<version>+<hash>.json` (what the app asks for,
//! `<hash>` being the first [`SHORT_HASH_LEN`] hex digits of the bundle's SHA-256) and
//! waits. `desktop-node apps approve|deny ID` writes `<id>@<version>+<hash>.decision` next
//! to it; the node sees it, installs or refuses, and removes both files. Files, not a
//! socket, so the CLI works whether or not the node runs, and a request survives a
//! restart of either.
//!
//! A decision is bound to what the person was shown: the decision file names the full
//! SHA-256 of the bundle and the permission set, and a decision that does not match the
//! waiting request exactly is ignored. A request never replaces another: a second request
//! for the same id and version with a different bundle waits as a request of its own
//! (listed with its own hash); one with the very same bundle is refused while the first
//! waits. The installer checks again at install time that the cached bundle has the
//! approved hash and asks for exactly the approved permissions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InstallError;
use super::layout::ApprovedPermissions;

/// How many hex digits of the bundle's SHA-256 name a request (and are shown to people).
pub const SHORT_HASH_LEN: usize = 12;
/// The most requests that may wait at once (each keeps a bundle of up to 16 MiB in the
/// cache); more are refused until the person decides or they time out.
pub const MAX_PENDING: usize = 32;

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
    /// SHA-256 (hex) of the verified bundle: what a decision approves. Empty in a request
    /// written by an older node, which can then only be denied.
    #[serde(default)]
    pub sha256: String,
    /// The verified bundle, kept in the node's cache until the decision.
    pub bundle_path: PathBuf,
    /// Unix seconds.
    pub requested_at: u64,
}

impl PendingInstall {
    /// The first [`SHORT_HASH_LEN`] hex digits of the bundle's SHA-256, as people see it.
    pub fn short_hash(&self) -> &str {
        let end = self
            .sha256
            .char_indices()
            .nth(SHORT_HASH_LEN)
            .map_or(self.sha256.len(), |(i, _)| i);
        &self.sha256[..end]
    }

    /// The request's name in the `pending` folder and on the command line:
    /// `<id>@<version>+<short hash>`.
    pub fn key(&self) -> String {
        format!("{}@{}+{}", self.id, self.version, self.short_hash())
    }
}

/// The person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Install it.
    Approve,
    /// Do not.
    Deny,
}

/// `<key>.decision`: the answer and exactly what it answers.
#[derive(Debug, Serialize, Deserialize)]
struct DecisionFile {
    decision: Decision,
    sha256: String,
    permissions: ApprovedPermissions,
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

    fn request_path(&self, request: &PendingInstall) -> PathBuf {
        self.dir.join(format!("{}.json", request.key()))
    }

    fn decision_path(&self, request: &PendingInstall) -> PathBuf {
        self.dir.join(format!("{}.decision", request.key()))
    }

    /// Records a new request. It never replaces one: a request for the same bundle that
    /// is already waiting is refused ([`InstallError::Invalid`]); a different bundle for
    /// the same id and version waits beside it under its own hash.
    pub fn add(&self, request: &PendingInstall) -> Result<(), InstallError> {
        if request.sha256.len() < SHORT_HASH_LEN
            || !request.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(InstallError::Invalid(
                "an install request needs the bundle's SHA-256".into(),
            ));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| InstallError::io(&self.dir, e))?;
        let path = self.request_path(request);
        if path.exists() {
            return Err(already_waiting(request));
        }
        self.check_room()?;
        // A decision left from an earlier request under the same name answers nothing now.
        let _ = std::fs::remove_file(self.decision_path(request));
        let text = serde_json::to_vec_pretty(request).map_err(InstallError::other)?;
        let tmp = self.write_tmp(&text)?;
        // A hard link never replaces an existing file: of two requests racing for the
        // same name, one wins and the other is refused.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(already_waiting(request))
            }
            Err(e) => Err(InstallError::io(&path, e)),
        }
    }

    /// `Err` when [`MAX_PENDING`] requests already wait.
    pub fn check_room(&self) -> Result<(), InstallError> {
        let waiting = std::fs::read_dir(&self.dir).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        });
        if waiting >= MAX_PENDING {
            return Err(InstallError::Invalid(format!(
                "{waiting} install requests are already waiting for a decision on the desktop; approve or deny some first"
            )));
        }
        Ok(())
    }

    /// Writes `bytes` to a fresh temporary file in the folder and returns its path.
    fn write_tmp(&self, bytes: &[u8]) -> Result<PathBuf, InstallError> {
        for _ in 0..8 {
            let tmp = self
                .dir
                .join(format!(".{:016x}.tmp", rand::random::<u64>()));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp);
            match file {
                Ok(mut file) => {
                    file.write_all(bytes)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| InstallError::io(&tmp, e))?;
                    return Ok(tmp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(InstallError::io(&tmp, e)),
            }
        }
        Err(InstallError::Other(
            "could not create a temporary file in the pending folder".into(),
        ))
    }

    /// Writes `bytes` to `path`, replacing it atomically.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| InstallError::io(&self.dir, e))?;
        let tmp = self.write_tmp(bytes)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            InstallError::io(path, e)
        })
    }

    /// Every waiting request, oldest first (each request file is one request; one that
    /// cannot be read is logged and skipped).
    pub fn list(&self) -> Vec<PendingInstall> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut list: Vec<PendingInstall> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|path| {
                let parsed = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        serde_json::from_slice::<PendingInstall>(&b).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(request) => Some(request),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), %err, "unreadable install request skipped");
                        None
                    }
                }
            })
            .collect();
        list.sort_by_key(|p| (p.requested_at, p.key()));
        list
    }

    /// The waiting request for `id` (at `version`, or the only one for that id).
    pub fn find(&self, id: &str, version: Option<&str>) -> Result<PendingInstall, InstallError> {
        self.select(id, version, None)
    }

    /// The one waiting request for `id`, narrowed by `version` and by `hash` (a prefix of
    /// the bundle's SHA-256, as `apps pending` shows it). Several matches are an error that
    /// lists them: the person names the one they mean.
    pub fn select(
        &self,
        id: &str,
        version: Option<&str>,
        hash: Option<&str>,
    ) -> Result<PendingInstall, InstallError> {
        let hash = hash.map(str::to_ascii_lowercase);
        let matches: Vec<PendingInstall> = self
            .list()
            .into_iter()
            .filter(|p| p.id == id && version.is_none_or(|v| v == p.version))
            .filter(|p| {
                hash.as_deref()
                    .is_none_or(|h| !h.is_empty() && p.sha256.starts_with(h))
            })
            .collect();
        match matches.len() {
            0 => Err(InstallError::NotFound(format!(
                "no install request for {id}{}{} is waiting",
                version.map(|v| format!("@{v}")).unwrap_or_default(),
                hash.map(|h| format!(" with bundle hash {h}"))
                    .unwrap_or_default()
            ))),
            1 => Ok(matches.into_iter().next().expect("one")),
            _ => {
                let names: Vec<String> = matches
                    .iter()
                    .map(|p| format!("{}@{} --hash {}", p.id, p.version, p.short_hash()))
                    .collect();
                Err(InstallError::Invalid(format!(
                    "several install requests for {id} are waiting; name one with --version and --hash: {}",
                    names.join("; ")
                )))
            }
        }
    }

    /// Records the person's decision for this exact request (its bundle hash and
    /// permissions).
    pub fn decide(&self, request: &PendingInstall, decision: Decision) -> Result<(), InstallError> {
        let file = DecisionFile {
            decision,
            sha256: request.sha256.clone(),
            permissions: request.permissions.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(InstallError::other)?;
        self.replace(&self.decision_path(request), &text)
    }

    /// The decision on `request`, if one was made for exactly this bundle and these
    /// permissions; a decision about anything else is ignored (and logged).
    pub fn decision(&self, request: &PendingInstall) -> Option<Decision> {
        let bytes = std::fs::read(self.decision_path(request)).ok()?;
        let file: DecisionFile = match serde_json::from_slice(&bytes) {
            Ok(file) => file,
            Err(err) => {
                tracing::warn!(request = %request.key(), %err, "unreadable install decision ignored");
                return None;
            }
        };
        if request.sha256.is_empty()
            || file.sha256 != request.sha256
            || file.permissions != request.permissions
        {
            tracing::warn!(request = %request.key(), "an install decision about another bundle or other permissions was ignored");
            return None;
        }
        Some(file.decision)
    }

    /// Whether a request is still waiting.
    pub fn is_pending(&self, request: &PendingInstall) -> bool {
        self.request_path(request).exists()
    }

    /// Forgets a request and its decision (the cached bundle too).
    pub fn remove(&self, request: &PendingInstall) {
        let _ = std::fs::remove_file(self.request_path(request));
        let _ = std::fs::remove_file(self.decision_path(request));
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
            if let Some(decision) = self.decision(request) {
                return Some(decision);
            }
            if !self.is_pending(request) {
                // Withdrawn (e.g. denied by a CLI that found no node).
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

fn already_waiting(request: &PendingInstall) -> InstallError {
    InstallError::Invalid(format!(
        "an install request for {}@{} (bundle {}) is already waiting for approval on the desktop",
        request.id,
        request.version,
        request.short_hash()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: &str, sha256: &str) -> PendingInstall {
        PendingInstall {
            id: "seo-writer".into(),
            version: version.into(),
            name: "SEO Writer".into(),
            permissions: ApprovedPermissions {
                ai: true,
                ..Default::default()
            },
            sha256: sha256.into(),
            bundle_path: PathBuf::from("/nonexistent"),
            requested_at: 1,
        }
    }

    const A: &str = "aaaaaaaaaaaa0000000000000000000000000000000000000000000000000000";
    const B: &str = "bbbbbbbbbbbb0000000000000000000000000000000000000000000000000000";

    #[tokio::test]
    async fn a_decision_written_by_the_cli_reaches_the_waiting_node() {
        let tmp = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(tmp.path());
        let req = request("1.0.0", A);
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
        approvals.add(&request("1.0.0", A)).unwrap();
        approvals.add(&request("1.1.0", A)).unwrap();
        let err = approvals.find("seo-writer", None).unwrap_err();
        assert!(err.to_string().contains("--version"), "{err}");
        let one = approvals.find("seo-writer", Some("1.1.0")).unwrap();
        let waited = approvals
            .wait(&one, Duration::from_millis(5), Duration::from_millis(30))
            .await;
        assert_eq!(waited, None);
    }

    #[test]
    fn a_second_request_for_the_same_version_never_replaces_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(tmp.path());
        let first = request("1.0.0", A);
        approvals.add(&first).unwrap();
        // The same bundle again: refused while the first waits, which stays as it was.
        let err = approvals.add(&request("1.0.0", A)).unwrap_err().to_string();
        assert!(err.contains("already waiting"), "{err}");
        // Another bundle (and more permissions) for the same id@version: a request of
        // its own, listed beside the first.
        let mut second = request("1.0.0", B);
        second.permissions.network = vec!["evil.example".into()];
        second.requested_at = 2;
        approvals.add(&second).unwrap();
        assert_eq!(approvals.list(), vec![first.clone(), second.clone()]);
        let err = approvals
            .find("seo-writer", Some("1.0.0"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--hash aaaaaaaaaaaa") && err.contains("--hash bbbbbbbbbbbb"),
            "{err}"
        );
        assert_eq!(
            approvals.select("seo-writer", None, Some("AAAA")).unwrap(),
            first
        );
        assert_eq!(
            approvals
                .select("seo-writer", Some("1.0.0"), Some("bbb"))
                .unwrap(),
            second
        );
        assert!(approvals.select("seo-writer", None, Some("cc")).is_err());

        // Approving the first says nothing about the second.
        approvals.decide(&first, Decision::Approve).unwrap();
        assert_eq!(approvals.decision(&first), Some(Decision::Approve));
        assert_eq!(approvals.decision(&second), None);
    }

    #[test]
    fn at_most_max_pending_requests_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(tmp.path());
        for i in 0..MAX_PENDING {
            approvals
                .add(&request(&format!("1.0.{i}"), &format!("{i:064x}")))
                .unwrap();
        }
        let err = approvals.add(&request("2.0.0", B)).unwrap_err().to_string();
        assert!(err.contains("already waiting for a decision"), "{err}");
        assert_eq!(approvals.list().len(), MAX_PENDING);
        let first = approvals.find("seo-writer", Some("1.0.0")).unwrap();
        approvals.remove(&first);
        approvals.add(&request("2.0.0", B)).unwrap();
    }

    #[test]
    fn a_decision_applies_only_to_the_bundle_and_permissions_it_names() {
        let tmp = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(tmp.path());
        let shown = request("1.0.0", A);
        approvals.add(&shown).unwrap();
        approvals.decide(&shown, Decision::Approve).unwrap();
        // Same name (same short hash), other full hash: not what was approved.
        let mut other_bundle = shown.clone();
        other_bundle.sha256 = format!("{}1", &A[..63]);
        assert_eq!(other_bundle.key(), shown.key());
        assert_eq!(approvals.decision(&other_bundle), None);
        // Same bundle, other permissions: not what was approved either.
        let mut other_permissions = shown.clone();
        other_permissions.permissions.clipboard = true;
        assert_eq!(approvals.decision(&other_permissions), None);
        assert_eq!(approvals.decision(&shown), Some(Decision::Approve));
        // A request without a hash (an older node's) cannot be added or approved.
        let err = approvals
            .add(&request("2.0.0", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256"), "{err}");
    }
}
