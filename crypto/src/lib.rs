//! Identity keys and end-to-end encryption for AI SuperApp peers.
//!
//! A desktop node has a static X25519 identity key. Its public half travels in the
//! `Hello` to the relay (for the device registry) and, through pairing, to browsers,
//! which encrypt end to end to it with [`e2e`] (HPKE, RFC 9180, auth mode, and chunked
//! response sealing; `docs/e2e.md` has the bytes). A person compares keys by their
//! [`fingerprint`].
//!
//! What this crate does not do: pairing and bundle signatures, and carrying bytes (the
//! tunnel does that).

#![forbid(unsafe_code)]

pub mod e2e;

use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// Why key material could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// A stored secret key does not have 32 bytes.
    #[error("an X25519 secret key has 32 bytes, got {0}")]
    BadLength(usize),
}

/// A static X25519 identity key pair. The secret is zeroized on drop and never printed.
pub struct IdentityKey {
    secret: StaticSecret,
}

impl IdentityKey {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        IdentityKey {
            secret: StaticSecret::random(),
        }
    }

    /// Restores a key pair from its 32 secret bytes.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::BadLength(bytes.len()))?;
        Ok(IdentityKey {
            secret: StaticSecret::from(array),
        })
    }

    /// The 32 secret bytes, for the node's secure storage only.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKey")
            .field("public", &fingerprint(&self.public_bytes()))
            .finish_non_exhaustive()
    }
}

/// A short, human-comparable fingerprint of a public key: the first 16 bytes of its
/// SHA-256, as eight groups of four hex digits.
pub fn fingerprint(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    digest[..16]
        .chunks(2)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trips_and_public_is_stable() {
        let key = IdentityKey::generate();
        let again = IdentityKey::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(key.public_bytes(), again.public_bytes());
        assert_ne!(key.public_bytes(), IdentityKey::generate().public_bytes());
    }

    #[test]
    fn wrong_length_is_refused() {
        assert_eq!(
            IdentityKey::from_secret_bytes(&[1; 31]).unwrap_err(),
            KeyError::BadLength(31)
        );
    }

    #[test]
    fn fingerprint_is_known_value_and_debug_hides_secret() {
        // SHA-256 of 32 zero bytes starts with 66687aadf862bd776c8fc18b8e9f8e20.
        assert_eq!(
            fingerprint(&[0; 32]),
            "6668:7aad:f862:bd77:6c8f:c18b:8e9f:8e20"
        );
        let key = IdentityKey::from_secret_bytes(&[7; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(key.secret_bytes())));
        assert!(shown.contains(&fingerprint(&key.public_bytes())));
    }
}
