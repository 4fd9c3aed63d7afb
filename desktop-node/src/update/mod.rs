//! Self-update of the desktop node from a signed release manifest
//! (`aisa_miniapp::release`; `docs/desktop.md`, "Updates").
//!
//! `desktop-node update` runs the steps in order, and any failure leaves the installed
//! binary as it was:
//!
//! 1. [`check`]: fetch `{manifest_url}/{channel}/{platform}.json`, verify its signature
//!    against the release keys in `node.toml` (`[update] trusted_keys`), and accept only
//!    a newer version for this platform, channel and protocol major;
//! 2. [`download`]: stream the binary next to the installed one, refusing more bytes
//!    than announced, fewer (truncated), or another SHA-256;
//! 3. [`swap`]: rename the running binary aside and the new one into its place (two
//!    renames in one folder; on Windows a running `.exe` can be renamed, not replaced);
//! 4. restart the service (`[update] restart_command`), and wait up to `grace_secs`
//!    for the new binary to connect to the relay: it records that in the [`pending`]
//!    file when the relay welcomes it. If it does not, the old binary is put back and
//!    restarted (the updater is the old binary, still in memory, so this works even
//!    when the new one crashes at once).
//!
//! Background checks (`check_in_background`, on by default) only log that a new version
//! exists; installing is always `desktop-node update`.

pub mod download;
pub mod pending;
pub mod swap;

use std::time::Duration;

use aisa_miniapp::TrustedKeys;
use aisa_miniapp::release::{self, NotApplicable, Release, ReleaseError};
use serde::{Deserialize, Serialize};

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The tunnel protocol this build speaks, `MAJOR.MINOR`.
pub fn protocol() -> String {
    format!(
        "{}.{}",
        aisa_tunnel::PROTOCOL_MAJOR,
        aisa_tunnel::PROTOCOL_MINOR
    )
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `[update]` in `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Where manifests are published; default `{relay_url}/releases`.
    pub manifest_url: Option<String>,
    /// The channel followed.
    pub channel: String,
    /// The release keys trusted (base64 Ed25519 public keys; several for rotation).
    /// With none, updates are refused.
    pub trusted_keys: Vec<String>,
    /// Look for a new version at start and once a day, and log it (never installs).
    pub check_in_background: bool,
    /// How long a new version has to connect to the relay before it is rolled back.
    pub grace_secs: u64,
    /// The command that restarts the node as a service after a swap (e.g.
    /// `["systemctl", "--user", "restart", "desktop-node"]`). Without one, the update
    /// waits for the person to start the node.
    pub restart_command: Vec<String>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            manifest_url: None,
            channel: "stable".into(),
            trusted_keys: Vec::new(),
            check_in_background: true,
            grace_secs: 120,
            restart_command: Vec::new(),
        }
    }
}

impl UpdateConfig {
    /// The manifest's URL for this platform, given the node's relay.
    pub fn manifest_url(&self, relay_url: &str) -> String {
        let base = self
            .manifest_url
            .clone()
            .unwrap_or_else(|| format!("{}/releases", relay_url.trim_end_matches('/')));
        format!(
            "{}/{}/{}.json",
            base.trim_end_matches('/'),
            self.channel,
            release::platform()
        )
    }

    /// How long to wait for the new version.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
}

/// Why an update stopped. Nothing was changed unless the message says so.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// No release keys configured.
    #[error("no release keys are trusted: add them to [update] trusted_keys in node.toml")]
    NoTrustedKeys,
    /// A trusted key is not a valid public key.
    #[error("[update] trusted_keys: {0}")]
    BadKey(String),
    /// The manifest or the binary could not be fetched.
    #[error("{url}: {reason}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ReleaseError),
    /// The release is not for this node.
    #[error(transparent)]
    NotApplicable(#[from] NotApplicable),
    /// The download is not what the manifest announced.
    #[error("the download is not the release: {0}")]
    Download(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
}

/// Fetches and verifies the manifest: `Ok(None)` when this node is up to date,
/// `Ok(Some(release))` for a newer release it may install.
pub async fn check(
    config: &UpdateConfig,
    relay_url: &str,
    client: &reqwest::Client,
) -> Result<Option<Release>, UpdateError> {
    if config.trusted_keys.is_empty() {
        return Err(UpdateError::NoTrustedKeys);
    }
    let trusted = TrustedKeys::from_base64(config.trusted_keys.iter().map(String::as_str))
        .map_err(|e| UpdateError::BadKey(e.to_string()))?;
    let url = config.manifest_url(relay_url);
    let fetch_error = |reason: String| UpdateError::Fetch {
        url: url.clone(),
        reason,
    };
    let response = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fetch_error(e.to_string()))?;
    let bytes = download::capped_body(response, release::MAX_MANIFEST_LEN as u64)
        .await
        .map_err(fetch_error)?;
    let found = release::verify(&bytes, &trusted)?;
    match found.applies_to(&config.channel, &release::platform(), VERSION, &protocol()) {
        Ok(()) => Ok(Some(found)),
        Err(NotApplicable::NotNewer { .. })
            if semver::Version::parse(&found.version)
                .ok()
                .zip(semver::Version::parse(VERSION).ok())
                .is_some_and(|(found, running)| found == running) =>
        {
            Ok(None)
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_url_defaults_to_the_relay_and_names_channel_and_platform() {
        let config = UpdateConfig::default();
        assert_eq!(
            config.manifest_url("https://relay.example/"),
            format!(
                "https://relay.example/releases/stable/{}.json",
                release::platform()
            )
        );
        let config = UpdateConfig {
            manifest_url: Some("https://dl.example/aisa/".into()),
            channel: "beta".into(),
            ..UpdateConfig::default()
        };
        assert!(
            config
                .manifest_url("x")
                .starts_with("https://dl.example/aisa/beta/")
        );
    }

    #[test]
    fn background_checks_are_on_unless_turned_off() {
        let on: UpdateConfig = toml::from_str("").unwrap();
        assert!(on.check_in_background);
        let off: UpdateConfig = toml::from_str("check_in_background = false").unwrap();
        assert!(!off.check_in_background);
        assert!(toml::from_str::<UpdateConfig>("auto_install = true").is_err());
    }

    #[test]
    fn the_protocol_is_major_dot_minor() {
        let p = protocol();
        let (major, minor) = p.split_once('.').unwrap();
        assert!(major.parse::<u8>().is_ok() && minor.parse::<u8>().is_ok());
    }
}
