//! The `file` backend: `secrets.enc`, every secret in one blob sealed with
//! ChaCha20-Poly1305 under a key derived with argon2id from a passphrase.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use keyring_core::Entry;
use serde::{Deserialize, Serialize};

use super::error::io_err;
use super::migrate::legacy_file_key;
use super::store::{random_hex, write_private};
use super::{PassphraseSource, SecretError, Zeroizing};

/// The encrypted file.
pub(super) const VAULT_FILE: &str = "secrets.enc";
const VAULT_AAD: &[u8] = b"aisa-secrets-v1";
/// The keychain entry name of an older version's file key.
pub(super) const FILE_KEY: &str = "file-key";

/// How the file's key is had.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) enum KeySource {
    /// argon2id over the passphrase.
    Argon2id {
        /// 16 random bytes, hex.
        salt: String,
        /// Memory, KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// 32 random bytes kept in the keyutils keychain under `<id>/file-key`: what older
    /// versions wrote; still read, and sealed again under a passphrase when one can be
    /// had. Never written for a new file.
    Keychain,
}

/// `secrets.enc`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultFile {
    version: u32,
    key: KeySource,
    /// 12 bytes, hex, fresh for every write.
    nonce: String,
    /// ChaCha20-Poly1305 of the entries, hex; AAD `aisa-secrets-v1` + the JSON of `key`.
    ciphertext: String,
}

/// The open `secrets.enc`: its key and its entries.
pub(super) struct Vault {
    pub(super) path: PathBuf,
    pub(super) source: KeySource,
    pub(super) key: Zeroizing<[u8; 32]>,
    /// The keychain entry of an older version's file key (see `migrate.rs`).
    pub(super) keychain_entry: Option<Entry>,
    pub(super) entries: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl Vault {
    /// Opens `secrets.enc` in `dir`, or creates it under a new passphrase.
    pub(super) fn open(
        dir: &Path,
        id: &str,
        passphrase: &dyn PassphraseSource,
    ) -> Result<Vault, SecretError> {
        let path = dir.join(VAULT_FILE);
        let existing = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice::<VaultFile>(&bytes).map_err(|e| {
                SecretError::Format {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let Some(file) = existing else {
            // A new file: always under a passphrase (given or asked), never under a key
            // only the kernel keychain holds (it forgets it at a reboot).
            let (source, key) = new_passphrase_key(passphrase)?;
            let vault = Vault {
                path,
                source,
                key,
                keychain_entry: None,
                entries: BTreeMap::new(),
            };
            vault.save()?;
            return Ok(vault);
        };
        if file.version != 1 {
            return Err(SecretError::Format {
                path,
                message: format!("unknown version {}", file.version),
            });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        let mut entry = None;
        match &file.key {
            KeySource::Keychain => {
                let (legacy, e) = legacy_file_key(id)?;
                key = legacy;
                entry = Some(e);
            }
            source @ KeySource::Argon2id { .. } => {
                derive(source, &passphrase.passphrase(false)?, &mut key)?;
            }
        }
        let bad = |message: &str| SecretError::Format {
            path: path.clone(),
            message: message.to_owned(),
        };
        let nonce: [u8; 12] = hex::decode(&file.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("bad nonce"))?;
        let ciphertext = hex::decode(&file.ciphertext).map_err(|_| bad("bad ciphertext"))?;
        let aad = vault_aad(&file.key);
        let plain = Zeroizing::new(
            ChaCha20Poly1305::new(&(*key).into())
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| SecretError::Decrypt)?,
        );
        let entries = decode_entries(&plain).ok_or_else(|| bad("bad entries"))?;
        let mut vault = Vault {
            path,
            source: file.key,
            key,
            keychain_entry: entry,
            entries,
        };
        if vault.source == KeySource::Keychain {
            vault.reseal_under_passphrase(passphrase)?;
        }
        Ok(vault)
    }

    /// Seals the entries under a fresh nonce and writes the file.
    pub(super) fn save(&self) -> Result<(), SecretError> {
        let plain = encode_entries(&self.entries);
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let aad = vault_aad(&self.source);
        let ciphertext = ChaCha20Poly1305::new(&(*self.key).into())
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Decrypt)?;
        let file = VaultFile {
            version: 1,
            key: self.source.clone(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| SecretError::Format {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        write_private(&self.path, &text)
    }
}

/// A fresh argon2id key source and the key the passphrase gives (asked twice when asked
/// on the terminal); an empty passphrase is refused.
pub(super) fn new_passphrase_key(
    passphrase: &dyn PassphraseSource,
) -> Result<(KeySource, Zeroizing<[u8; 32]>), SecretError> {
    let phrase = passphrase.passphrase(true)?;
    if phrase.is_empty() {
        return Err(SecretError::Format {
            path: PathBuf::from(VAULT_FILE),
            message: "the passphrase is empty; choose one".into(),
        });
    }
    let source = KeySource::Argon2id {
        salt: random_hex(16),
        m_kib: argon2::Params::DEFAULT_M_COST,
        t: argon2::Params::DEFAULT_T_COST,
        p: argon2::Params::DEFAULT_P_COST,
    };
    let mut key = Zeroizing::new([0u8; 32]);
    derive(&source, &phrase, &mut key)?;
    Ok((source, key))
}

fn vault_aad(source: &KeySource) -> Vec<u8> {
    let mut aad = VAULT_AAD.to_vec();
    aad.extend(serde_json::to_vec(source).unwrap_or_default());
    aad
}

fn derive(source: &KeySource, passphrase: &str, out: &mut [u8; 32]) -> Result<(), SecretError> {
    let KeySource::Argon2id { salt, m_kib, t, p } = source else {
        return Err(SecretError::Decrypt);
    };
    let bad = |message: String| SecretError::Format {
        path: PathBuf::from(VAULT_FILE),
        message,
    };
    let salt = hex::decode(salt).map_err(|_| bad("bad salt".into()))?;
    let params = argon2::Params::new(*m_kib, *t, *p, Some(32)).map_err(|e| bad(e.to_string()))?;
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), &salt, out)
        .map_err(|e| bad(e.to_string()))
}

/// `u16 name length, name, u32 secret length, secret` per entry, big-endian.
fn encode_entries(entries: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for (name, secret) in entries {
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(secret.len() as u32).to_be_bytes());
        out.extend_from_slice(secret);
    }
    out
}

fn decode_entries(mut bytes: &[u8]) -> Option<BTreeMap<String, Zeroizing<Vec<u8>>>> {
    let mut entries = BTreeMap::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let (name, rest) = rest.split_at_checked(u16::from_be_bytes(*len) as usize)?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let (secret, rest) = rest.split_at_checked(u32::from_be_bytes(*len) as usize)?;
        entries.insert(
            String::from_utf8(name.to_vec()).ok()?,
            Zeroizing::new(secret.to_vec()),
        );
        bytes = rest;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secrets::test_support::*;
    use crate::secrets::{BackendChoice, NoPassphraseSource, SecretStore, read_passphrase_file};

    #[test]
    fn wrong_passphrase_and_tampering_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SecretStore::open(dir.path(), BackendChoice::File, &pass("right")).unwrap();
        store.set("provider/openai", b"secret").unwrap();
        drop(store);
        let err = SecretStore::open(dir.path(), BackendChoice::File, &pass("wrong")).unwrap_err();
        assert!(matches!(err, SecretError::Decrypt), "{err}");
        // Flip one hex digit of the ciphertext.
        let path = dir.path().join(VAULT_FILE);
        let mut file: VaultFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut ct = file.ciphertext.into_bytes();
        ct[0] = if ct[0] == b'0' { b'1' } else { b'0' };
        file.ciphertext = String::from_utf8(ct).unwrap();
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        let err = SecretStore::open(dir.path(), BackendChoice::File, &pass("right")).unwrap_err();
        assert!(matches!(err, SecretError::Decrypt), "{err}");
    }

    #[test]
    fn a_new_file_store_without_a_passphrase_is_refused_never_keyed_in_the_keychain() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            SecretStore::open(dir.path(), BackendChoice::File, &NoPassphraseSource).unwrap_err();
        assert!(matches!(err, SecretError::NoPassphrase), "{err}");
        assert!(err.to_string().contains("AISA_PASSPHRASE_FILE"), "{err}");
        assert!(!dir.path().join(VAULT_FILE).exists());
        let err = SecretStore::open(dir.path(), BackendChoice::File, &pass("")).unwrap_err();
        assert!(err.to_string().contains("passphrase is empty"), "{err}");
        assert!(!dir.path().join(VAULT_FILE).exists());
        let file = dir.path().join("pw");
        std::fs::write(&file, "first line\nsecond\n").unwrap();
        assert_eq!(&*read_passphrase_file(&file).unwrap(), "first line");
    }
}
