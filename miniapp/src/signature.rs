//! Ed25519 bundle signatures: keys, key ids, signing, and verification against a set of
//! trusted keys.
//!
//! The signed message is, byte for byte:
//!
//! ```text
//! "aisapp-signature-v1\n" + id + "\n" + version + "\n"
//! + for each entry except signature.sig, sorted by name: sha256hex(bytes) + "  " + name + "\n"
//! ```
//!
//! with `id` and `version` exactly as written in `manifest.json`. `signature.sig` also
//! carries the digest list it signed (`files`), so a verifier can name the file that was
//! changed after signing instead of only saying "bad signature".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::bundle::{Bundle, BundleError, MANIFEST, SIGNATURE};
use crate::checksum::sha256_hex;
use crate::manifest::{Manifest, ManifestError};

/// The first line of every signed message.
pub const CONTEXT: &[u8] = b"aisapp-signature-v1\n";

/// The only algorithm.
pub const ALG: &str = "ed25519";

/// A key id: the first 8 bytes of SHA-256 of the 32-byte public key, as 16 hex digits.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// Problems with keys and key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key is not base64 of the right length, or not a valid curve point.
    #[error("{what} is not a valid Ed25519 {kind} key (32 bytes in base64)")]
    Invalid {
        /// Where it came from.
        what: String,
        /// `secret` or `public`.
        kind: &'static str,
    },
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// An Ed25519 signing key (zeroized on drop; never printed).
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public_key().key_id())
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// The key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(bytes))
    }

    /// The key from base64 of its 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<SecretKey, KeyError> {
        let bytes = Zeroizing::new(B64.decode(text.trim()).unwrap_or_default());
        let bytes: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Invalid {
            what: "the text".into(),
            kind: "secret",
        })?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// Base64 of the 32 secret bytes.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_bytes()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Reads a key file: base64 of the 32 bytes.
    pub fn read_file(path: &Path) -> Result<SecretKey, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        SecretKey::from_base64(&text).map_err(|_| KeyError::Invalid {
            what: path.display().to_string(),
            kind: "secret",
        })
    }

    /// Writes a new key file (base64 and a newline), readable only by its owner (0600 on
    /// Unix); refuses to overwrite an existing file.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let mut text = self.to_base64();
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::Invalid {
                what: "the bytes".into(),
                kind: "public",
            })
    }

    /// The key from base64 of its 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let invalid = || KeyError::Invalid {
            what: format!("{:?}", text.trim()),
            kind: "public",
        };
        let bytes = B64.decode(text.trim()).map_err(|_| invalid())?;
        let bytes: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| invalid())?;
        PublicKey::from_bytes(bytes).map_err(|_| invalid())
    }

    /// Reads a public key file (base64).
    pub fn read_file(path: &Path) -> Result<PublicKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        PublicKey::from_base64(&text).map_err(|_| KeyError::Invalid {
            what: path.display().to_string(),
            kind: "public",
        })
    }

    /// Base64 of the 32 bytes.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Its key id.
    pub fn key_id(&self) -> String {
        key_id(self.0.as_bytes())
    }

    /// Whether `signature` is this key's strict Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// The keys a verifier trusts (several, so keys can rotate: a new key signs while the
/// old one still verifies what it signed).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    /// No keys.
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// These keys.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> TrustedKeys {
        let mut trusted = TrustedKeys::new();
        keys.into_iter().for_each(|k| trusted.add(k));
        trusted
    }

    /// Keys from base64 strings (e.g. `GET /api/platform/keys`).
    pub fn from_base64<'a>(
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<TrustedKeys, KeyError> {
        let keys = keys
            .into_iter()
            .map(PublicKey::from_base64)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedKeys::from_keys(keys))
    }

    /// Adds a key (once).
    pub fn add(&mut self, key: PublicKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// The key with this id.
    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.key_id() == key_id)
    }

    /// The keys' ids.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(PublicKey::key_id).collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The contents of `signature.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always `ed25519`.
    pub alg: String,
    /// The signing key's id.
    pub key_id: String,
    /// Base64 of the 64-byte signature.
    pub signature: String,
    /// The signed digest list: entry name → SHA-256 hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
}

/// SHA-256 hex of every entry except `signature.sig`, by name.
pub fn digests(bundle: &Bundle) -> BTreeMap<String, String> {
    bundle
        .files()
        .iter()
        .filter(|(name, _)| name.as_str() != SIGNATURE)
        .map(|(name, data)| (name.clone(), sha256_hex(data)))
        .collect()
}

/// The signed message for an app id, version and digest list.
pub fn message(id: &str, version: &str, digests: &BTreeMap<String, String>) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    for part in [id, "\n", version, "\n"] {
        m.extend_from_slice(part.as_bytes());
    }
    for (name, digest) in digests {
        m.extend_from_slice(format!("{digest}  {name}\n").as_bytes());
    }
    m
}

/// The manifest's `id` and `version` exactly as written.
fn id_and_version(bundle: &Bundle) -> Result<(String, String), ManifestError> {
    let bytes = bundle
        .file(MANIFEST)
        .ok_or_else(|| ManifestError::Json("the bundle has no manifest.json".into()))?;
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let field = |k: &str| {
        value[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ManifestError::Json(format!("no string field {k:?}")))
    };
    Ok((field("id")?, field("version")?))
}

/// Signs a bundle: validates its manifest, then writes (or replaces) `signature.sig`.
pub fn sign(bundle: &mut Bundle, key: &SecretKey) -> Result<SignatureFile, BundleError> {
    bundle.remove(SIGNATURE);
    bundle.manifest()?;
    let (id, version) = id_and_version(bundle)?;
    let files = digests(bundle);
    let signature = key.sign(&message(&id, &version, &files));
    let sig = SignatureFile {
        alg: ALG.to_owned(),
        key_id: key.public_key().key_id(),
        signature: B64.encode(signature),
        files: Some(files),
    };
    let mut text = serde_json::to_vec_pretty(&sig).unwrap_or_default();
    text.push(b'\n');
    bundle.insert(SIGNATURE, text)?;
    Ok(sig)
}

/// Why a bundle's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `signature.sig`.
    #[error("the bundle is not signed (it has no signature.sig)")]
    Unsigned,
    /// `signature.sig` is not what the format says.
    #[error("signature.sig is not valid: {0}")]
    Malformed(String),
    /// An algorithm other than Ed25519.
    #[error("signature.sig uses algorithm {0:?}; only \"ed25519\" is accepted")]
    UnsupportedAlg(String),
    /// Signed by a key that is not trusted.
    #[error(
        "the bundle is signed by key {key_id}, which is not a trusted key (trusted: {trusted})"
    )]
    UnknownKey {
        /// The signing key's id.
        key_id: String,
        /// The trusted ids, comma-separated.
        trusted: String,
    },
    /// The signature does not match.
    #[error(
        "the signature by key {key_id} does not match the bundle: signature.sig or the manifest's id or version was altered"
    )]
    BadSignature {
        /// The signing key's id.
        key_id: String,
    },
    /// A file's contents differ from what was signed.
    #[error("{0} was changed after the bundle was signed")]
    FileChanged(String),
    /// A file was added after signing.
    #[error("{0} was added after the bundle was signed")]
    FileAdded(String),
    /// A file was removed after signing.
    #[error("{0} was removed after the bundle was signed")]
    FileRemoved(String),
    /// The (signed) manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// A bundle whose signature checked out with a trusted key.
#[derive(Debug, Clone)]
pub struct VerifiedBundle<'a> {
    bundle: &'a Bundle,
    key_id: String,
}

impl<'a> VerifiedBundle<'a> {
    /// The bundle.
    pub fn bundle(&self) -> &'a Bundle {
        self.bundle
    }

    /// The id of the key that signed it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Its manifest.
    pub fn manifest(&self) -> Result<Manifest, ManifestError> {
        Manifest::from_json(self.bundle.file(MANIFEST).unwrap_or_default())
    }
}

/// Verifies a bundle's signature with the trusted keys, naming what is wrong.
pub fn verify<'a>(
    bundle: &'a Bundle,
    trusted: &TrustedKeys,
) -> Result<VerifiedBundle<'a>, VerifyError> {
    let sig_bytes = bundle.file(SIGNATURE).ok_or(VerifyError::Unsigned)?;
    let sig: SignatureFile =
        serde_json::from_slice(sig_bytes).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if sig.alg != ALG {
        return Err(VerifyError::UnsupportedAlg(sig.alg));
    }
    let signature: [u8; 64] = B64
        .decode(sig.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| VerifyError::Malformed("\"signature\" is not 64 bytes in base64".into()))?;
    let Some(key) = trusted.keys.iter().find(|k| k.key_id() == sig.key_id) else {
        return Err(VerifyError::UnknownKey {
            key_id: sig.key_id,
            trusted: trusted.key_ids().join(", "),
        });
    };
    let (id, version) = id_and_version(bundle)?;
    let actual = digests(bundle);
    let signed = sig.files.as_ref().unwrap_or(&actual);
    if !key.verify(&message(&id, &version, signed), &signature) {
        return Err(VerifyError::BadSignature { key_id: sig.key_id });
    }
    for (name, digest) in signed {
        match actual.get(name) {
            None => return Err(VerifyError::FileRemoved(name.clone())),
            Some(d) if d != digest => return Err(VerifyError::FileChanged(name.clone())),
            Some(_) => {}
        }
    }
    if let Some(name) = actual.keys().find(|n| !signed.contains_key(*n)) {
        return Err(VerifyError::FileAdded(name.clone()));
    }
    Manifest::from_json(bundle.file(MANIFEST).unwrap_or_default())?;
    Ok(VerifiedBundle {
        bundle,
        key_id: sig.key_id,
    })
}
