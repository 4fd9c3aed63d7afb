//! The platform's bundle-signing key, the keys it trusts, and turning an uploaded zip
//! into a signed bundle.
//!
//! The key is an Ed25519 key in a file holding base64 of its 32 secret bytes (the
//! format `aisapp sign --key` reads too). Without `[signing] key_file` the relay makes one
//! at first start as `platform-signing.key` in the data directory (mode 0600). Rotation:
//! point `key_file` at the new key and list the old public key in
//! `trusted_public_keys`; the configured key signs, every listed key still verifies what
//! it signed, and `GET /api/platform/keys` lists them all, the signing key first.
//!
//! All format work (reading the zip within its limits, the static checks, the signature
//! itself, the checksum) is `aisa_miniapp`'s; this module only wires it to the relay.

use std::path::Path;

use aisa_miniapp::bundle::SIGNATURE;
use aisa_miniapp::signature::KeyError;
use aisa_miniapp::{Bundle, PublicKey, SecretKey, TrustedKeys};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::config::RelayConfig;
use crate::store::VersionRow;

/// Why the platform keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read, written or parsed.
    #[error("platform signing key: {0}")]
    Key(#[from] KeyError),
    /// A configured `key_file` does not exist (only the default one is generated).
    #[error(
        "platform signing key: [signing] key_file {0} does not exist (remove the setting to have one generated in the data directory)"
    )]
    Missing(String),
    /// An entry of `trusted_public_keys` is not a public key.
    #[error("[signing] trusted_public_keys: {0}")]
    Trusted(KeyError),
}

/// One trusted key as `GET /api/platform/keys` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyView {
    /// 16 hex digits: the first 8 bytes of SHA-256 of the public key.
    pub key_id: String,
    /// Always `ed25519`.
    pub alg: &'static str,
    /// Base64 of the 32-byte public key.
    pub public_key: String,
}

/// The signing key and every key trusted to have signed a published bundle.
#[derive(Debug)]
pub struct PlatformKeys {
    signer: SecretKey,
    /// The signer's public key first, then the configured ones, without repeats.
    trusted: Vec<PublicKey>,
}

impl PlatformKeys {
    /// A signer and further trusted public keys.
    pub fn new(signer: SecretKey, also_trusted: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut trusted = vec![signer.public_key()];
        for key in also_trusted {
            if !trusted.contains(&key) {
                trusted.push(key);
            }
        }
        PlatformKeys { signer, trusted }
    }

    /// The keys `[signing]` describes, generating the default key file at first start.
    pub fn from_config(config: &RelayConfig) -> Result<Self, SigningError> {
        let path = config.signing_key_file();
        let signer = if config.signing.key_file.is_some() {
            if !path.exists() {
                return Err(SigningError::Missing(path.display().to_string()));
            }
            SecretKey::read_file(&path)?
        } else {
            load_or_generate(&path)?
        };
        let extra = config
            .signing
            .trusted_public_keys
            .iter()
            .map(|k| PublicKey::from_base64(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SigningError::Trusted)?;
        Ok(PlatformKeys::new(signer, extra))
    }

    /// The id of the key that signs.
    pub fn signing_key_id(&self) -> String {
        self.signer.public_key().key_id()
    }

    /// The trusted keys, the signing key first.
    pub fn listed(&self) -> Vec<KeyView> {
        self.trusted
            .iter()
            .map(|k| KeyView {
                key_id: k.key_id(),
                alg: aisa_miniapp::signature::ALG,
                public_key: k.to_base64(),
            })
            .collect()
    }

    /// The trusted keys, for verifying.
    pub fn trusted(&self) -> TrustedKeys {
        TrustedKeys::from_keys(self.trusted.iter().copied())
    }
}

/// Reads the default key file, or makes it (0600) when there is none.
fn load_or_generate(path: &Path) -> Result<SecretKey, SigningError> {
    if path.exists() {
        return Ok(SecretKey::read_file(path)?);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let key = SecretKey::generate()?;
    match key.write_file(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), key_id = %key.public_key().key_id(), "generated the platform signing key");
            Ok(key)
        }
        // Another relay process sharing the data directory made it first: use theirs.
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(SecretKey::read_file(path)?)
        }
        Err(err) => Err(err.into()),
    }
}

/// An upload that passed the checks, signed and ready to store.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// App id from the manifest.
    pub id: String,
    /// Version from the manifest.
    pub version: String,
    /// The signed zip.
    pub signed: Bytes,
    /// SHA-256 (hex) of `signed`.
    pub sha256: String,
    /// The signing key's id.
    pub key_id: String,
    /// `runtime` from the manifest.
    pub runtime: String,
    /// The four JSON documents, compact: manifest, permissions, action schema, UI schema.
    pub documents: [String; 4],
}

impl Prepared {
    /// The database row for this version, stored under `storage_key`.
    pub fn row(&self, storage_key: &str, size: u64) -> VersionRow {
        let [manifest, permissions, action_schema, ui_schema] = self.documents.clone();
        VersionRow {
            app_id: self.id.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            size: size as i64,
            runtime: self.runtime.clone(),
            manifest,
            permissions,
            action_schema,
            ui_schema,
            storage_key: storage_key.to_owned(),
            key_id: self.key_id.clone(),
            yanked: false,
            published_at: crate::auth::now_secs() as i64,
        }
    }
}

/// Reads an uploaded zip (limits enforced while reading), runs the static checks, signs
/// it with the platform key and checks the result verifies. The error is a message for
/// the author naming the problem. An author's own `signature.sig` is replaced.
pub fn prepare(zip: &[u8], keys: &PlatformKeys) -> Result<Prepared, String> {
    let mut bundle = Bundle::from_zip_bytes(zip).map_err(|e| e.to_string())?;
    bundle.remove(SIGNATURE);
    let checked = aisa_miniapp::check(&bundle)
        .map_err(|e| format!("the bundle failed the portal's checks: {e}"))?;
    let signature = aisa_miniapp::sign(&mut bundle, &keys.signer).map_err(|e| e.to_string())?;
    let signed = bundle.to_zip_bytes();
    // What is stored must verify for a desktop node exactly as it will be served.
    let reread = Bundle::from_zip_bytes(&signed).map_err(|e| format!("signing failed: {e}"))?;
    aisa_miniapp::verify(&reread, &keys.trusted()).map_err(|e| format!("signing failed: {e}"))?;
    let compact = |name: &str| -> String {
        bundle
            .file(name)
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
            .map(|v| v.to_string())
            .unwrap_or_else(|| "null".into())
    };
    use aisa_miniapp::bundle::{ACTION_SCHEMA, MANIFEST, PERMISSIONS, UI_SCHEMA};
    Ok(Prepared {
        id: checked.manifest.id.clone(),
        version: checked.manifest.version.to_string(),
        sha256: aisa_miniapp::checksum::sha256_hex(&signed),
        signed: Bytes::from(signed),
        key_id: signature.key_id,
        runtime: checked.manifest.runtime.to_string(),
        documents: [
            compact(MANIFEST),
            compact(PERMISSIONS),
            compact(ACTION_SCHEMA),
            compact(UI_SCHEMA),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_is_generated_once_with_owner_only_access() {
        let dir = tempfile::tempdir().unwrap();
        let config = RelayConfig {
            data_dir: dir.path().to_owned(),
            ..RelayConfig::default()
        };
        let first = PlatformKeys::from_config(&config).unwrap();
        let path = dir.path().join("platform-signing.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = PlatformKeys::from_config(&config).unwrap();
        assert_eq!(first.signing_key_id(), again.signing_key_id());
        assert_eq!(first.listed().len(), 1);
        assert_eq!(first.listed()[0].key_id.len(), 16);
    }

    #[test]
    fn rotation_lists_the_signer_first_and_the_old_keys_after() {
        let dir = tempfile::tempdir().unwrap();
        let old = SecretKey::generate().unwrap();
        let new = SecretKey::generate().unwrap();
        let key_file = dir.path().join("new.key");
        new.write_file(&key_file).unwrap();
        let mut config = RelayConfig {
            data_dir: dir.path().to_owned(),
            ..RelayConfig::default()
        };
        config.signing.key_file = Some(key_file);
        config.signing.trusted_public_keys = vec![
            old.public_key().to_base64(),
            new.public_key().to_base64(), // the signer again: listed once
        ];
        let keys = PlatformKeys::from_config(&config).unwrap();
        let ids: Vec<String> = keys.listed().into_iter().map(|k| k.key_id).collect();
        assert_eq!(
            ids,
            vec![new.public_key().key_id(), old.public_key().key_id()]
        );
        assert_eq!(keys.signing_key_id(), new.public_key().key_id());
        assert!(!dir.path().join("platform-signing.key").exists());
    }

    #[test]
    fn a_configured_key_file_must_exist_and_trusted_keys_must_parse() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RelayConfig {
            data_dir: dir.path().to_owned(),
            ..RelayConfig::default()
        };
        config.signing.key_file = Some(dir.path().join("absent.key"));
        let err = PlatformKeys::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("absent.key"), "{err}");
        config.signing.key_file = None;
        config.signing.trusted_public_keys = vec!["not a key".into()];
        let err = PlatformKeys::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("trusted_public_keys"), "{err}");
    }
}
