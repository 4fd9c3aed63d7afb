//! Signed release manifests: how the desktop node learns, safely, that a new version of
//! itself exists (`desktop-node update`, `docs/desktop.md`, "Updates").
//!
//! A release host (the relay's static files, or any web server) publishes one signed
//! manifest per channel and platform, e.g. `…/stable/x86_64-linux.json`:
//!
//! ```json
//! { "manifest": "<base64 of the manifest's JSON bytes>",
//!   "key_id": "<16 hex digits>", "signature": "<base64 of 64 bytes>" }
//! ```
//!
//! The signature is Ed25519 over `"aisa-release-manifest-v1\n"` followed by the manifest
//! bytes exactly as they are inside the base64 (the verifier never re-serializes). The
//! release key is separate from the bundle-signing key; keys rotate as bundle keys do
//! (the node trusts a set; a new key signs while the old one is still trusted). The
//! manifest ([`Release`]) names the version, the platform, the download URL, its size and
//! SHA-256, and the oldest relay protocol the release speaks.
//!
//! [`verify`] checks the signature against trusted keys and decodes the manifest;
//! [`Release::applies_to`] then says whether it is an update for this node (same channel
//! and platform, a newer version, a protocol this node's relay speaks). Downloading,
//! checking the file and swapping the binary are the node's (`aisa_node::update`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::signature::{SecretKey, TrustedKeys};

/// The first line of every signed release message.
pub const CONTEXT: &[u8] = b"aisa-release-manifest-v1\n";

/// The largest signed manifest a node reads (it is a few hundred bytes).
pub const MAX_MANIFEST_LEN: usize = 16 * 1024;

/// What a release is: one build of the desktop node for one platform on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The channel (`stable`, `beta`, …).
    pub channel: String,
    /// The platform the binary runs on, as [`platform`] names it (`x86_64-linux`).
    pub platform: String,
    /// The release's version (semver).
    pub version: String,
    /// Where the binary is downloaded from (https, or http on loopback for tests).
    pub url: String,
    /// The binary's size in bytes.
    pub size: u64,
    /// The binary's SHA-256, lowercase hex.
    pub sha256: String,
    /// The tunnel protocol the release speaks, `MAJOR.MINOR`; a node updates only to a
    /// release with its own protocol major (a new major needs the relays updated first).
    pub protocol: String,
    /// When it was published, Unix seconds.
    pub published_at: u64,
}

/// A signed manifest as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRelease {
    /// The manifest's JSON bytes, base64.
    pub manifest: String,
    /// The id of the key that signed it ([`crate::signature::key_id`]).
    pub key_id: String,
    /// The Ed25519 signature, base64.
    pub signature: String,
}

/// Why a signed manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// Not the published JSON shape, or its fields are not what they must be.
    #[error("the release manifest is malformed: {0}")]
    Malformed(String),
    /// Signed by a key this node does not trust.
    #[error("the release manifest is signed by key {0}, which this node does not trust")]
    UnknownKey(String),
    /// The signature does not verify with the named key.
    #[error("the release manifest's signature does not verify (changed after signing?)")]
    BadSignature,
}

/// Why a verified release is not an update for this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotApplicable {
    /// For another platform.
    #[error("the release is for {found}, this node runs on {expected}")]
    OtherPlatform {
        /// This node's platform.
        expected: String,
        /// The manifest's.
        found: String,
    },
    /// For another channel.
    #[error("the release is on channel {found}, this node follows {expected}")]
    OtherChannel {
        /// This node's channel.
        expected: String,
        /// The manifest's.
        found: String,
    },
    /// Not newer than what runs (the same version, or a downgrade).
    #[error("release {found} is not newer than the running {running}")]
    NotNewer {
        /// The running version.
        running: String,
        /// The manifest's.
        found: String,
    },
    /// Speaks another protocol major than this node.
    #[error(
        "release {version} speaks protocol {found}; this node speaks {running}: update the relays first"
    )]
    OtherProtocol {
        /// The release's version.
        version: String,
        /// This node's protocol.
        running: String,
        /// The manifest's.
        found: String,
    },
}

/// This machine's platform name: `ARCH-OS` as Rust names them (`x86_64-linux`,
/// `aarch64-macos`, `x86_64-windows`).
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// The message a release key signs for `manifest` (the exact manifest bytes).
pub fn message(manifest: &[u8]) -> Vec<u8> {
    [CONTEXT, manifest].concat()
}

/// Signs `release` with `key`.
pub fn sign(release: &Release, key: &SecretKey) -> SignedRelease {
    // Serializing a plain struct of strings and integers cannot fail.
    let bytes = serde_json::to_vec(release).unwrap_or_default();
    SignedRelease {
        manifest: B64.encode(&bytes),
        key_id: key.public_key().key_id(),
        signature: B64.encode(key.sign(&message(&bytes))),
    }
}

/// Reads a published manifest (`bytes` as downloaded), checks its signature against
/// `trusted` and returns the release it describes.
pub fn verify(bytes: &[u8], trusted: &TrustedKeys) -> Result<Release, ReleaseError> {
    if bytes.len() > MAX_MANIFEST_LEN {
        return Err(ReleaseError::Malformed(format!(
            "{} bytes, more than {MAX_MANIFEST_LEN}",
            bytes.len()
        )));
    }
    let signed: SignedRelease =
        serde_json::from_slice(bytes).map_err(|e| ReleaseError::Malformed(e.to_string()))?;
    let key = trusted
        .get(&signed.key_id)
        .ok_or_else(|| ReleaseError::UnknownKey(signed.key_id.clone()))?;
    let manifest = B64
        .decode(&signed.manifest)
        .map_err(|e| ReleaseError::Malformed(format!("manifest: {e}")))?;
    let signature: [u8; 64] = B64
        .decode(&signed.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| ReleaseError::Malformed("signature: not 64 bytes of base64".into()))?;
    if !key.verify(&message(&manifest), &signature) {
        return Err(ReleaseError::BadSignature);
    }
    let release: Release =
        serde_json::from_slice(&manifest).map_err(|e| ReleaseError::Malformed(e.to_string()))?;
    release.validate()?;
    Ok(release)
}

impl Release {
    /// Checks the fields a signer could still get wrong.
    fn validate(&self) -> Result<(), ReleaseError> {
        let bad = |what: &str| Err(ReleaseError::Malformed(what.to_owned()));
        if semver::Version::parse(&self.version).is_err() {
            return bad("version: not semver");
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad("sha256: not 64 lowercase hex digits");
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return bad("url: not http(s)");
        }
        if protocol_major(&self.protocol).is_none() {
            return bad("protocol: not MAJOR.MINOR");
        }
        if self.size == 0 {
            return bad("size: zero");
        }
        Ok(())
    }

    /// Whether this release is an update for a node running `version` of `protocol` on
    /// `platform`, following `channel`.
    pub fn applies_to(
        &self,
        channel: &str,
        platform: &str,
        version: &str,
        protocol: &str,
    ) -> Result<(), NotApplicable> {
        if self.platform != platform {
            return Err(NotApplicable::OtherPlatform {
                expected: platform.into(),
                found: self.platform.clone(),
            });
        }
        if self.channel != channel {
            return Err(NotApplicable::OtherChannel {
                expected: channel.into(),
                found: self.channel.clone(),
            });
        }
        let newer = match (
            semver::Version::parse(&self.version),
            semver::Version::parse(version),
        ) {
            (Ok(found), Ok(running)) => found > running,
            _ => false,
        };
        if !newer {
            return Err(NotApplicable::NotNewer {
                running: version.into(),
                found: self.version.clone(),
            });
        }
        if protocol_major(&self.protocol) != protocol_major(protocol) {
            return Err(NotApplicable::OtherProtocol {
                version: self.version.clone(),
                running: protocol.into(),
                found: self.protocol.clone(),
            });
        }
        Ok(())
    }
}

/// The major of `MAJOR.MINOR`.
fn protocol_major(protocol: &str) -> Option<u32> {
    let (major, minor) = protocol.split_once('.')?;
    minor.parse::<u32>().ok()?;
    major.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        Release {
            channel: "stable".into(),
            platform: "x86_64-linux".into(),
            version: "0.2.0".into(),
            url: "https://releases.example/desktop-node-0.2.0".into(),
            size: 1234,
            sha256: "ab".repeat(32),
            protocol: "1.1".into(),
            published_at: 1_790_000_000,
        }
    }

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_release_verifies_with_a_trusted_key_only() {
        let signed = serde_json::to_vec(&sign(&release(), &key(1))).unwrap();
        let trusted = TrustedKeys::from_keys([key(1).public_key()]);
        assert_eq!(verify(&signed, &trusted), Ok(release()));
        // Rotation: the old key still trusted beside a new one.
        let both = TrustedKeys::from_keys([key(2).public_key(), key(1).public_key()]);
        assert_eq!(verify(&signed, &both), Ok(release()));
        let other = TrustedKeys::from_keys([key(2).public_key()]);
        assert_eq!(
            verify(&signed, &other),
            Err(ReleaseError::UnknownKey(key(1).public_key().key_id()))
        );
    }

    #[test]
    fn a_changed_manifest_or_signature_is_refused() {
        let trusted = TrustedKeys::from_keys([key(1).public_key()]);
        let mut signed = sign(&release(), &key(1));
        let mut other = release();
        other.url = "https://evil.example/desktop-node".into();
        signed.manifest = B64.encode(serde_json::to_vec(&other).unwrap());
        let bytes = serde_json::to_vec(&signed).unwrap();
        assert_eq!(verify(&bytes, &trusted), Err(ReleaseError::BadSignature));

        let mut signed = sign(&release(), &key(1));
        signed.signature = B64.encode([0u8; 64]);
        let bytes = serde_json::to_vec(&signed).unwrap();
        assert_eq!(verify(&bytes, &trusted), Err(ReleaseError::BadSignature));

        // A key id that names a trusted key, with another key's signature.
        let mut signed = sign(&release(), &key(2));
        signed.key_id = key(1).public_key().key_id();
        let bytes = serde_json::to_vec(&signed).unwrap();
        assert_eq!(verify(&bytes, &trusted), Err(ReleaseError::BadSignature));
    }

    #[test]
    fn malformed_manifests_say_what_is_wrong() {
        let trusted = TrustedKeys::from_keys([key(1).public_key()]);
        assert!(matches!(
            verify(b"not json", &trusted),
            Err(ReleaseError::Malformed(_))
        ));
        assert!(matches!(
            verify(&vec![b' '; MAX_MANIFEST_LEN + 1], &trusted),
            Err(ReleaseError::Malformed(_))
        ));
        for change in [
            |r: &mut Release| r.version = "two".into(),
            |r: &mut Release| r.sha256 = "AB".repeat(32),
            |r: &mut Release| r.url = "file:///etc/passwd".into(),
            |r: &mut Release| r.protocol = "1".into(),
            |r: &mut Release| r.size = 0,
        ] {
            let mut bad = release();
            change(&mut bad);
            let bytes = serde_json::to_vec(&sign(&bad, &key(1))).unwrap();
            assert!(
                matches!(verify(&bytes, &trusted), Err(ReleaseError::Malformed(_))),
                "{bad:?}"
            );
        }
        // Unknown fields are refused, not ignored.
        let mut value = serde_json::to_value(release()).unwrap();
        value["extra"] = "x".into();
        let bytes = serde_json::to_vec(&value).unwrap();
        let signed = SignedRelease {
            manifest: B64.encode(&bytes),
            key_id: key(1).public_key().key_id(),
            signature: B64.encode(key(1).sign(&message(&bytes))),
        };
        assert!(matches!(
            verify(&serde_json::to_vec(&signed).unwrap(), &trusted),
            Err(ReleaseError::Malformed(_))
        ));
    }

    #[test]
    fn only_a_newer_release_for_this_platform_channel_and_protocol_applies() {
        let r = release();
        assert_eq!(
            r.applies_to("stable", "x86_64-linux", "0.1.0", "1.0"),
            Ok(())
        );
        assert!(matches!(
            r.applies_to("stable", "aarch64-macos", "0.1.0", "1.1"),
            Err(NotApplicable::OtherPlatform { .. })
        ));
        assert!(matches!(
            r.applies_to("beta", "x86_64-linux", "0.1.0", "1.1"),
            Err(NotApplicable::OtherChannel { .. })
        ));
        for running in ["0.2.0", "0.3.0", "1.0.0", "not semver"] {
            assert!(matches!(
                r.applies_to("stable", "x86_64-linux", running, "1.1"),
                Err(NotApplicable::NotNewer { .. })
            ));
        }
        assert!(matches!(
            r.applies_to("stable", "x86_64-linux", "0.1.0", "2.0"),
            Err(NotApplicable::OtherProtocol { .. })
        ));
    }

    #[test]
    fn the_platform_name_is_arch_and_os() {
        let p = platform();
        assert!(p.starts_with(std::env::consts::ARCH));
        assert!(p.ends_with(std::env::consts::OS));
    }
}
