//! The install pipeline and the changes to what is installed.

use std::path::PathBuf;

use aisa_miniapp::{AppId, Bundle, Manifest, TrustedKeys};

use super::InstallError;
use super::approvals::{Approvals, PendingInstall};
use super::layout::{AppState, ApprovedPermissions, AppsDir, InstallRecord, now_secs};
use super::market::{Market, PlatformKey};

/// A downloaded bundle that passed every check but is not installed yet.
pub struct Fetched {
    /// The zip as downloaded.
    pub bytes: Vec<u8>,
    /// It, read.
    pub bundle: Bundle,
    /// Its (signed) manifest.
    pub manifest: Manifest,
    /// SHA-256 (hex) of `bytes`.
    pub sha256: String,
    /// The platform key that signed it.
    pub key_id: String,
    /// What it asks for.
    pub permissions: ApprovedPermissions,
}

impl Fetched {
    /// App id.
    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    /// Version.
    pub fn version(&self) -> String {
        self.manifest.version.to_string()
    }

    /// Name for people.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// The mini-app manager for one node home.
#[derive(Clone)]
pub struct Installer {
    /// Installed apps.
    pub apps: AppsDir,
    /// Waiting install requests.
    pub approvals: Approvals,
    cache: PathBuf,
    market: Option<Market>,
    trusted: Vec<PlatformKey>,
    device_token: Option<String>,
}

impl Installer {
    /// A manager over `home`'s folders; `market` is the relay to install from (none for
    /// commands that only change what is installed).
    pub fn new(
        home: &crate::config::Home,
        market: Option<Market>,
        trusted: Vec<PlatformKey>,
        device_token: Option<String>,
    ) -> Self {
        Installer {
            apps: AppsDir::new(home.apps_dir()),
            approvals: Approvals::new(home.dir().join("pending")),
            cache: home.dir().join("cache/bundles"),
            market,
            trusted,
            device_token,
        }
    }

    fn market(&self) -> Result<&Market, InstallError> {
        self.market.as_ref().ok_or_else(|| {
            InstallError::Invalid("no relay configured; run `desktop-node login`".into())
        })
    }

    fn trusted_keys(&self) -> Result<TrustedKeys, InstallError> {
        let mut keys = TrustedKeys::new();
        for key in &self.trusted {
            let public = aisa_miniapp::PublicKey::from_base64(&key.public_key)
                .map_err(|e| InstallError::Invalid(format!("trusted key {}: {e}", key.key_id)))?;
            keys.add(public);
        }
        if keys.is_empty() {
            return Err(InstallError::Invalid(
                "no trusted platform key; run `desktop-node login` again to fetch the relay's"
                    .into(),
            ));
        }
        Ok(keys)
    }

    /// Downloads `id` (the named version or the latest) and checks it completely.
    pub async fn fetch(
        &self,
        id: &str,
        version: Option<&str>,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Fetched, InstallError> {
        // Both end up in URLs and folder names: check them before they are used.
        let id = AppId::parse(id)?;
        let id = id.as_str();
        if let Some(version) = version {
            semver::Version::parse(version).map_err(|e| {
                InstallError::Invalid(format!("version {version:?} is not MAJOR.MINOR.PATCH: {e}"))
            })?;
        }
        let market = self.market()?;
        let detail = market.detail(id).await?;
        let listed = detail.pick(version)?.clone();
        semver::Version::parse(&listed.version).map_err(|e| {
            InstallError::Invalid(format!(
                "the marketplace lists version {:?}: {e}",
                listed.version
            ))
        })?;
        let bytes = market.download(id, &listed.version, progress).await?;
        // Reading and verifying up to 16 MiB is CPU work: off the async threads.
        let (this, expected) = (self.clone(), id.to_owned());
        let fetched = tokio::task::spawn_blocking(move || this.check(bytes, &expected))
            .await
            .map_err(InstallError::other)??;
        if fetched.sha256 != listed.sha256 {
            return Err(InstallError::Invalid(format!(
                "checksum mismatch for {id}@{}: the marketplace lists {}, the download is {}",
                listed.version, listed.sha256, fetched.sha256
            )));
        }
        if fetched.version() != listed.version {
            return Err(InstallError::Invalid(format!(
                "the bundle says version {}, the marketplace {}",
                fetched.version(),
                listed.version
            )));
        }
        Ok(fetched)
    }

    /// Checks bundle bytes: format and limits, platform signature, the expected id, the
    /// node's runtime range, and that it is newer than what is installed.
    pub fn check(&self, bytes: Vec<u8>, expected_id: &str) -> Result<Fetched, InstallError> {
        let expected = AppId::parse(expected_id)?;
        let invalid = |e: &dyn std::fmt::Display| InstallError::Invalid(e.to_string());
        let sha256 = aisa_miniapp::checksum::sha256_hex(&bytes);
        let bundle = Bundle::from_zip_bytes(&bytes).map_err(|e| invalid(&e))?;
        let trusted = self.trusted_keys()?;
        let verified = aisa_miniapp::verify(&bundle, &trusted).map_err(|e| invalid(&e))?;
        let key_id = verified.key_id().to_owned();
        let manifest = verified.manifest().map_err(|e| invalid(&e))?;
        let installed = self.apps.versions(&expected).last().cloned();
        aisa_miniapp::upgrade::check_upgrade(installed.as_ref(), &manifest, expected_id)
            .map_err(|e| invalid(&e))?;
        let node_version =
            semver::Version::parse(env!("CARGO_PKG_VERSION")).map_err(InstallError::other)?;
        aisa_miniapp::upgrade::check_runtime(&manifest, &node_version).map_err(|e| invalid(&e))?;
        let permissions = approved_from(&bundle.permissions().map_err(|e| invalid(&e))?);
        Ok(Fetched {
            bytes,
            bundle,
            manifest,
            sha256,
            key_id,
            permissions,
        })
    }

    /// Installs a checked bundle with the permissions the person approved, and makes it
    /// the active version.
    pub fn install(
        &self,
        fetched: &Fetched,
        approved: ApprovedPermissions,
    ) -> Result<PathBuf, InstallError> {
        // The manifest's id passed the same rule when the bundle was read; parse it into
        // the type paths are built from.
        let id = AppId::parse(fetched.id())?;
        let version = fetched.version();
        let dir = self.apps.version_dir(&id, &fetched.manifest.version);
        std::fs::create_dir_all(self.apps.app_dir(&id))
            .map_err(|e| InstallError::io(&self.apps.app_dir(&id), e))?;
        // `fetched` only exists after `check` verified the signature; verify again to
        // hold the proof the extractor asks for (cheap next to the download).
        let verified = aisa_miniapp::verify(&fetched.bundle, &self.trusted_keys()?)
            .map_err(|e| InstallError::Invalid(e.to_string()))?;
        aisa_miniapp::extract::extract(&verified, &dir)
            .map_err(|e| InstallError::Invalid(e.to_string()))?;
        let record = InstallRecord {
            id: id.to_string(),
            version: version.clone(),
            sha256: fetched.sha256.clone(),
            key_id: fetched.key_id.clone(),
            source: self
                .market
                .as_ref()
                .map(|m| m.base().to_owned())
                .unwrap_or_else(|| "local".into()),
            installed_at: now_secs(),
            approved,
        };
        self.apps.write_record(&dir, &record)?;
        let enabled = self.apps.state(&id)?.is_none_or(|s| s.enabled);
        self.apps.set_state(
            &id,
            &AppState {
                active: version,
                enabled,
            },
        )?;
        Ok(dir)
    }

    /// Counts the install at the marketplace; a failure is only logged.
    pub async fn report_install(&self, fetched: &Fetched) {
        let (Some(market), Some(token)) = (&self.market, &self.device_token) else {
            return;
        };
        if let Err(err) = market
            .report_install(token, fetched.id(), &fetched.version())
            .await
        {
            tracing::warn!(%err, "install not counted by the marketplace");
        }
    }

    /// Keeps a checked bundle in the cache and records a request for the person.
    pub fn request_approval(&self, fetched: &Fetched) -> Result<PendingInstall, InstallError> {
        std::fs::create_dir_all(&self.cache).map_err(|e| InstallError::io(&self.cache, e))?;
        let bundle_path = self.cache.join(format!("{}.aisapp", fetched.sha256));
        std::fs::write(&bundle_path, &fetched.bytes)
            .map_err(|e| InstallError::io(&bundle_path, e))?;
        let request = PendingInstall {
            id: fetched.id().to_owned(),
            version: fetched.version(),
            name: fetched.name().to_owned(),
            permissions: fetched.permissions.clone(),
            sha256: fetched.sha256.clone(),
            bundle_path,
            requested_at: now_secs(),
        };
        self.approvals.add(&request)?;
        Ok(request)
    }

    /// Installs an approved request from its cached bundle (checked again: the cache is
    /// a file anyone with access to the home folder could change). Only the bundle the
    /// person approved (its SHA-256) with exactly the permissions shown is installed.
    pub fn install_pending(&self, request: &PendingInstall) -> Result<Fetched, InstallError> {
        let bytes = std::fs::read(&request.bundle_path)
            .map_err(|e| InstallError::io(&request.bundle_path, e))?;
        let fetched = self.check(bytes, &request.id)?;
        if request.sha256.is_empty() || fetched.sha256 != request.sha256 {
            return Err(InstallError::Invalid(format!(
                "the cached bundle (sha256 {}) is not the one approved ({}); request it again",
                fetched.sha256,
                if request.sha256.is_empty() {
                    "none recorded"
                } else {
                    &request.sha256
                }
            )));
        }
        if fetched.permissions != request.permissions || fetched.version() != request.version {
            return Err(InstallError::Invalid(
                "the cached bundle asks for other permissions than were shown; request it again"
                    .into(),
            ));
        }
        self.install(&fetched, request.permissions.clone())?;
        Ok(fetched)
    }

    /// Allows or stops an app's actions.
    pub fn set_enabled(&self, id: &AppId, enabled: bool) -> Result<(), InstallError> {
        let mut state = self.installed_state(id)?;
        state.enabled = enabled;
        self.apps.set_state(id, &state)
    }

    /// Makes the newest installed version older than the active one active; returns it.
    pub fn rollback(&self, id: &AppId) -> Result<String, InstallError> {
        let mut state = self.installed_state(id)?;
        let active = semver::Version::parse(&state.active).map_err(InstallError::other)?;
        let previous = self
            .apps
            .versions(id)
            .into_iter()
            .rfind(|v| *v < active)
            .ok_or_else(|| {
                InstallError::NotFound(format!(
                    "{id} has no version older than {active} installed to roll back to"
                ))
            })?;
        state.active = previous.to_string();
        self.apps.set_state(id, &state)?;
        Ok(state.active)
    }

    /// Removes every version of an app: `<home>/miniapps/<id>/` and nothing else. Its
    /// data (`<home>/data/<id>/`: storage and `$APP_DATA`) stays, so that a reinstall
    /// finds it; docs/desktop.md says how to remove it too.
    pub fn uninstall(&self, id: &AppId) -> Result<(), InstallError> {
        self.installed_state(id)?;
        self.apps.remove_app(id)
    }

    fn installed_state(&self, id: &AppId) -> Result<AppState, InstallError> {
        self.apps
            .state(id)?
            .ok_or_else(|| InstallError::NotFound(format!("{id} is not installed")))
    }
}

/// The manifest's permission request in the form the person approves.
pub fn approved_from(p: &aisa_miniapp::Permissions) -> ApprovedPermissions {
    ApprovedPermissions {
        ai: p.ai,
        read: p.filesystem.read.clone(),
        write: p.filesystem.write.clone(),
        network: p.network.clone(),
        clipboard: p.clipboard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppId {
        AppId::parse("app").unwrap()
    }

    fn installer_with(versions: &[&str]) -> (tempfile::TempDir, Installer) {
        let tmp = tempfile::tempdir().unwrap();
        let home = crate::config::Home::new(Some(tmp.path().to_owned()));
        let installer = Installer::new(&home, None, Vec::new(), None);
        for v in versions {
            let v = semver::Version::parse(v).unwrap();
            std::fs::create_dir_all(installer.apps.version_dir(&app(), &v)).unwrap();
        }
        (tmp, installer)
    }

    #[test]
    fn rollback_steps_back_one_installed_version_at_a_time() {
        let (_tmp, installer) = installer_with(&["1.0.0", "1.2.0", "1.10.0"]);
        assert_eq!(installer.rollback(&app()).unwrap(), "1.2.0");
        assert_eq!(installer.rollback(&app()).unwrap(), "1.0.0");
        let err = installer.rollback(&app()).unwrap_err().to_string();
        assert!(err.contains("no version older than 1.0.0"), "{err}");
        assert_eq!(
            installer.apps.state(&app()).unwrap().unwrap().active,
            "1.0.0"
        );
    }

    #[test]
    fn disable_enable_and_uninstall_change_what_is_installed() {
        let (_tmp, installer) = installer_with(&["0.1.0"]);
        installer.set_enabled(&app(), false).unwrap();
        assert!(!installer.apps.state(&app()).unwrap().unwrap().enabled);
        installer.set_enabled(&app(), true).unwrap();
        assert!(installer.apps.state(&app()).unwrap().unwrap().enabled);
        installer.uninstall(&app()).unwrap();
        assert!(installer.apps.state(&app()).unwrap().is_none());
        let err = installer.uninstall(&app()).unwrap_err().to_string();
        assert_eq!(err, "app is not installed");
        assert!(
            installer
                .set_enabled(&AppId::parse("other").unwrap(), true)
                .is_err()
        );
    }

    #[test]
    fn installing_needs_a_relay_and_trusted_keys() {
        let (_tmp, installer) = installer_with(&[]);
        let Err(err) = installer.check(b"not a zip".to_vec(), "app") else {
            panic!("junk passed the checks");
        };
        assert!(err.to_string().contains("zip"), "{err}");
        let err = installer.trusted_keys().unwrap_err().to_string();
        assert!(err.contains("no trusted platform key"), "{err}");
    }
}
