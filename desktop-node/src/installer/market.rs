//! The relay's marketplace, as the desktop uses it: app detail, bundle download (with
//! progress and a size cap), platform keys, and the install count.
//!
//! The relay is not trusted with the node's memory: a JSON answer is read up to
//! [`MAX_JSON_BYTES`] and an error body up to [`MAX_ERROR_BODY_BYTES`] as they arrive, and
//! ids and versions are checked before they become part of a URL.

use futures_util::StreamExt;
use serde::Deserialize;

use super::InstallError;

/// The largest bundle the node downloads: the format's one zip cap
/// ([`aisa_abi::limits::MAX_ZIP_BYTES`]), the most the relay accepts for publishing.
pub const MAX_BUNDLE_BYTES: u64 = aisa_abi::limits::MAX_ZIP_BYTES;
/// The largest JSON answer (app detail, platform keys) the node reads.
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// How much of an error answer's body the node keeps (for the message).
pub const MAX_ERROR_BODY_BYTES: usize = 512;

/// Reads a response body as it arrives, stopping at `cap` bytes: `Ok(None)` when it is
/// longer.
async fn read_capped(
    response: reqwest::Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        if body.len() + piece.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&piece);
    }
    Ok(Some(body))
}

/// `id` checked as an app id, for a URL.
fn url_id(id: &str) -> Result<aisa_miniapp::AppId, InstallError> {
    aisa_miniapp::AppId::parse(id).map_err(|e| InstallError::Invalid(e.to_string()))
}

/// `version` checked as a semantic version, for a URL.
fn url_version(version: &str) -> Result<semver::Version, InstallError> {
    semver::Version::parse(version)
        .map_err(|e| InstallError::Invalid(format!("version {version:?}: {e}")))
}

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
            // Only the start of the body, and only printable text of it.
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(Ok(piece)) = stream.next().await {
                body.extend_from_slice(&piece);
                if body.len() >= MAX_ERROR_BODY_BYTES {
                    body.truncate(MAX_ERROR_BODY_BYTES);
                    break;
                }
            }
            let body: String = String::from_utf8_lossy(&body)
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            return Err(InstallError::Network(format!("{url}: {status} {body}")));
        }
        let body = read_capped(response, MAX_JSON_BYTES)
            .await
            .map_err(|e| InstallError::Network(format!("{url}: {e}")))?
            .ok_or_else(|| {
                InstallError::Network(format!(
                    "{url}: the answer is larger than {MAX_JSON_BYTES} bytes"
                ))
            })?;
        serde_json::from_slice(&body)
            .map_err(|e| InstallError::Network(format!("{url}: unexpected answer: {e}")))
    }

    /// The app's marketplace entry.
    pub async fn detail(&self, id: &str) -> Result<AppDetail, InstallError> {
        let id = url_id(id)?;
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
        let (id, version) = (url_id(id)?, url_version(version)?);
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
        let id = url_id(id)?;
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A marketplace that answers every request with `status` and `body`.
    async fn relay(status: u16, body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move || {
            let body = body.clone();
            async move {
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn answers_from_the_relay_are_read_within_bounds() {
        // A detail of 4 MiB (valid JSON, a long name): refused, not parsed.
        let mut huge = br#"{"id":"a","name":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', 4 << 20));
        huge.extend_from_slice(br#"","latest_version":"1.0.0","versions":[]}"#);
        let market = Market::new(&relay(200, huge).await);
        let err = market.detail("a").await.unwrap_err().to_string();
        assert!(err.contains("larger than 1048576 bytes"), "{err}");
        // An error body is cut short and loses its control characters.
        let mut noisy = b"[31mfail".to_vec();
        noisy.extend(std::iter::repeat_n(b'y', 1 << 20));
        let market = Market::new(&relay(500, noisy).await);
        let err = market.detail("a").await.unwrap_err().to_string();
        assert!(err.len() < MAX_ERROR_BODY_BYTES + 200, "{}", err.len());
        assert!(!err.contains('\x1b'), "{err}");
        // Ids and versions are checked before they become a URL.
        let err = market.detail("../admin").await.unwrap_err();
        assert!(matches!(err, InstallError::Invalid(_)), "{err}");
        let err = market
            .download("a", "1.0.0/../../x", |_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::Invalid(_)), "{err}");
    }

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
