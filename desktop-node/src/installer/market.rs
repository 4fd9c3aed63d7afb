//! The relay's marketplace, as the desktop uses it: app detail, bundle download (with
//! progress and a size cap), platform keys, and the install count.

use futures_util::StreamExt;
use serde::Deserialize;

use super::InstallError;

/// The largest bundle the node downloads (the format's own limit is 16 MiB uncompressed).
pub const MAX_BUNDLE_BYTES: u64 = 16 << 20;

/// One version as the marketplace lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    /// Semantic version.
    pub version: String,
    /// Withdrawn by its author or the operator.
    #[serde(default)]
    pub yanked: bool,
    /// SHA-256 (hex) of the signed bundle.
    pub sha256: String,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
}

/// The parts of `GET /api/marketplace/apps/{id}` the node needs.
#[derive(Debug, Clone, Deserialize)]
pub struct AppDetail {
    /// App id.
    pub id: String,
    /// Name for people.
    #[serde(default)]
    pub name: String,
    /// Newest unyanked version.
    #[serde(default)]
    pub latest_version: Option<String>,
    /// Every version, newest first.
    #[serde(default)]
    pub versions: Vec<VersionInfo>,
}

impl AppDetail {
    /// The version to install: the one asked for (yanked ones only when asked for
    /// exactly), or the latest.
    pub fn pick(&self, wanted: Option<&str>) -> Result<&VersionInfo, InstallError> {
        match wanted {
            Some(v) => self
                .versions
                .iter()
                .find(|i| i.version == v)
                .ok_or_else(|| {
                    InstallError::NotFound(format!(
                        "{} has no version {v} in the marketplace",
                        self.id
                    ))
                }),
            None => {
                let latest = self.latest_version.as_deref();
                self.versions
                    .iter()
                    .find(|i| Some(i.version.as_str()) == latest && !i.yanked)
                    .or_else(|| self.versions.iter().find(|i| !i.yanked))
                    .ok_or_else(|| {
                        InstallError::NotFound(format!("{} has no installable version", self.id))
                    })
            }
        }
    }
}

/// One trusted platform key as `GET /api/platform/keys` lists it.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct PlatformKey {
    /// Short id carried in signatures.
    pub key_id: String,
    /// Ed25519 public key, base64.
    pub public_key: String,
}

/// A marketplace client.
#[derive(Clone)]
pub struct Market {
    base: String,
    http: reqwest::Client,
}

impl Market {
    /// A client for the relay at `relay_url` (its HTTP base URL).
    pub fn new(relay_url: &str) -> Self {
        Market {
            base: relay_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, InstallError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| InstallError::Network(format!("{url}: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(InstallError::NotFound(format!("{url}: not found")));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(InstallError::Network(format!("{url}: {status} {body}")));
        }
        response
            .json()
            .await
            .map_err(|e| InstallError::Network(format!("{url}: unexpected answer: {e}")))
    }

    /// The app's marketplace entry.
    pub async fn detail(&self, id: &str) -> Result<AppDetail, InstallError> {
        self.get_json(&format!("/api/marketplace/apps/{id}")).await
    }

    /// The relay's trusted platform keys.
    pub async fn platform_keys(&self) -> Result<Vec<PlatformKey>, InstallError> {
        #[derive(Deserialize)]
        struct Keys {
            keys: Vec<PlatformKey>,
        }
        Ok(self.get_json::<Keys>("/api/platform/keys").await?.keys)
    }

    /// Downloads a bundle, calling `progress(received, total)` as bytes arrive. Stops at
    /// [`MAX_BUNDLE_BYTES`].
    pub async fn download(
        &self,
        id: &str,
        version: &str,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, InstallError> {
        let url = format!(
            "{}/api/marketplace/apps/{id}/versions/{version}/bundle",
            self.base
        );
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| InstallError::Network(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(InstallError::Network(format!(
                "{url}: {}",
                response.status()
            )));
        }
        let total = response.content_length();
        if total.is_some_and(|t| t > MAX_BUNDLE_BYTES) {
            return Err(InstallError::Invalid(format!(
                "the bundle is larger than {} MiB",
                MAX_BUNDLE_BYTES >> 20
            )));
        }
        let mut bytes = Vec::with_capacity(total.unwrap_or(0) as usize);
        let mut body = response.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| InstallError::Network(format!("{url}: {e}")))?;
            if bytes.len() as u64 + piece.len() as u64 > MAX_BUNDLE_BYTES {
                return Err(InstallError::Invalid(format!(
                    "the bundle is larger than {} MiB",
                    MAX_BUNDLE_BYTES >> 20
                )));
            }
            bytes.extend_from_slice(&piece);
            progress(bytes.len() as u64, total);
        }
        Ok(bytes)
    }

    /// Tells the marketplace this device installed a version (counts installs). Failure
    /// is not an install failure: it is logged by the caller.
    pub async fn report_install(
        &self,
        device_token: &str,
        id: &str,
        version: &str,
    ) -> Result<(), InstallError> {
        let url = format!("{}/api/marketplace/apps/{id}/installs", self.base);
        let response = self
            .http
            .post(&url)
            .header("authorization", format!("Device {device_token}"))
            .json(&serde_json::json!({ "version": version }))
            .send()
            .await
            .map_err(|e| InstallError::Network(format!("{url}: {e}")))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(InstallError::Network(format!(
                "{url}: {}",
                response.status()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail() -> AppDetail {
        serde_json::from_value(serde_json::json!({
            "id": "a", "name": "A", "latest_version": "1.1.0",
            "versions": [
                {"version": "2.0.0", "yanked": true, "sha256": "c", "size": 1},
                {"version": "1.1.0", "yanked": false, "sha256": "b", "size": 1},
                {"version": "1.0.0", "yanked": false, "sha256": "a", "size": 1}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_unyanked_version_is_picked_unless_one_is_named() {
        let d = detail();
        assert_eq!(d.pick(None).unwrap().version, "1.1.0");
        assert_eq!(d.pick(Some("1.0.0")).unwrap().version, "1.0.0");
        assert!(d.pick(Some("9.9.9")).is_err());
    }
}
