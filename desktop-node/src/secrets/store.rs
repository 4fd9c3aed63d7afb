//! The [`SecretStore`]: names to secrets, over whichever backend `secrets.json` records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyring_core::Entry;
use keyring_core::api::CredentialStore;
use serde::{Deserialize, Serialize};

use super::error::{io_err, keychain_err, lost_remedy};
use super::keychain::{auto_backend, keychain_entry, keychain_store};
use super::vault::{VAULT_FILE, Vault};
use super::{Backend, BackendChoice, PassphraseSource, SecretError, Zeroizing};

/// The index file: which backend, which names; never a secret.
pub(super) const INDEX_FILE: &str = "secrets.json";

/// `secrets.json`: what is stored where. Holds no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Index {
    /// Random id that keeps the keychain entries of several homes apart.
    pub(super) id: String,
    /// The backend that holds the secrets.
    pub(super) backend: Option<Backend>,
    /// The names of the stored secrets.
    pub(super) names: Vec<String>,
}

/// The store. Operations block (keychain calls, argon2): call it from a blocking context
/// (`tokio::task::spawn_blocking`) inside async code.
pub struct SecretStore {
    dir: PathBuf,
    index: Index,
    backend: Backend,
    storage: Storage,
}

/// Where the secrets themselves are.
pub(super) enum Storage {
    /// A keychain of the OS.
    Keychain(Backend, Arc<CredentialStore>),
    /// `secrets.enc`.
    File(Vault),
}

impl Storage {
    /// Opens `backend` for the store `id` of the home folder `dir`.
    pub(super) fn open(
        backend: Backend,
        dir: &Path,
        id: &str,
        passphrase: &dyn PassphraseSource,
    ) -> Result<Storage, SecretError> {
        Ok(match backend {
            Backend::File => Storage::File(Vault::open(dir, id, passphrase)?),
            keychain => Storage::Keychain(keychain, keychain_store(keychain)?),
        })
    }

    /// The secret `name` of store `id`, if this storage has it.
    pub(super) fn get(
        &self,
        id: &str,
        name: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        match self {
            Storage::Keychain(backend, store) => {
                match entry_in(store, *backend, id, name)?.get_secret() {
                    Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
                    Err(keyring_core::Error::NoEntry) => Ok(None),
                    Err(e) => Err(keychain_err(e)),
                }
            }
            Storage::File(vault) => Ok(vault.entries.get(name).cloned()),
        }
    }

    /// Stores `secret` as `name` of store `id`.
    pub(super) fn set(&mut self, id: &str, name: &str, secret: &[u8]) -> Result<(), SecretError> {
        match self {
            Storage::Keychain(backend, store) => entry_in(store, *backend, id, name)?
                .set_secret(secret)
                .map_err(keychain_err),
            Storage::File(vault) => {
                vault
                    .entries
                    .insert(name.to_owned(), Zeroizing::new(secret.to_vec()));
                vault.save()
            }
        }
    }

    /// Deletes `name` of store `id`; whether it was there.
    pub(super) fn delete(&mut self, id: &str, name: &str) -> Result<bool, SecretError> {
        match self {
            Storage::Keychain(backend, store) => {
                match entry_in(store, *backend, id, name)?.delete_credential() {
                    Ok(()) => Ok(true),
                    Err(keyring_core::Error::NoEntry) => Ok(false),
                    Err(e) => Err(keychain_err(e)),
                }
            }
            Storage::File(vault) => {
                let existed = vault.entries.remove(name).is_some();
                vault.save()?;
                Ok(existed)
            }
        }
    }
}

fn entry_in(
    store: &Arc<CredentialStore>,
    backend: Backend,
    id: &str,
    name: &str,
) -> Result<Entry, SecretError> {
    keychain_entry(store, backend, &format!("{id}/{name}")).map_err(keychain_err)
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("dir", &self.dir)
            .field("backend", &self.backend)
            .field("names", &self.index.names)
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// Opens the store of the home folder `dir` with the configured backend. A store an
    /// older version kept in the kernel keychain is moved into a durable one first (see
    /// `migrate.rs`).
    pub fn open(
        dir: &Path,
        choice: BackendChoice,
        passphrase: &dyn PassphraseSource,
    ) -> Result<SecretStore, SecretError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let index_path = dir.join(INDEX_FILE);
        let mut index = match std::fs::read(&index_path) {
            Ok(bytes) => {
                serde_json::from_slice::<Index>(&bytes).map_err(|e| SecretError::Format {
                    path: index_path.clone(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index {
                id: random_hex(8),
                backend: None,
                names: Vec::new(),
            },
            Err(e) => return Err(io_err(&index_path)(e)),
        };
        if choice == BackendChoice::Keyutils {
            tracing::warn!(
                "[secrets] backend = \"keyutils\" is read as \"auto\": the kernel keychain forgets its keys at a reboot, so secrets go to a durable store"
            );
        }
        let (backend, storage) = if index.backend == Some(Backend::Keyutils) {
            super::migrate::from_keyutils(dir, &mut index, choice, passphrase)?
        } else {
            let backend = match (choice.explicit(), index.backend) {
                (None, Some(recorded)) => recorded,
                (None, None) => auto_backend(&index.id)?,
                (Some(wanted), recorded) => {
                    if let Some(recorded) = recorded
                        && recorded != wanted
                        && !index.names.is_empty()
                    {
                        return Err(SecretError::BackendMismatch {
                            recorded: recorded.name(),
                            configured: wanted.name(),
                        });
                    }
                    wanted
                }
            };
            let storage = Storage::open(backend, dir, &index.id, passphrase).map_err(|err| {
                match err {
                    // The store this node's secrets are in is not reachable: say so.
                    SecretError::Unavailable { backend, reason }
                        if index.backend.is_some() && !index.names.is_empty() =>
                    {
                        SecretError::StoreGone { backend, reason }
                    }
                    other => other,
                }
            })?;
            (backend, storage)
        };
        index.backend = Some(backend);
        let store = SecretStore {
            dir: dir.to_owned(),
            index,
            backend,
            storage,
        };
        store.save_index()?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The names of the stored secrets, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names = self.index.names.clone();
        names.sort();
        names
    }

    /// The secret `name`, or `None` when none was stored. A secret `secrets.json` lists
    /// but the store no longer has is [`SecretError::Lost`].
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        check_name(name)?;
        match self.storage.get(&self.index.id, name)? {
            Some(secret) => Ok(Some(secret)),
            None if self.index.names.iter().any(|n| n == name) => Err(SecretError::Lost {
                name: name.to_owned(),
                backend: self.backend.name(),
                remedy: lost_remedy(name),
            }),
            None => Ok(None),
        }
    }

    /// Stores `secret` under `name`, replacing any earlier one.
    pub fn set(&mut self, name: &str, secret: &[u8]) -> Result<(), SecretError> {
        check_name(name)?;
        self.storage.set(&self.index.id, name, secret)?;
        if !self.index.names.iter().any(|n| n == name) {
            self.index.names.push(name.to_owned());
        }
        self.save_index()
    }

    /// Removes the secret `name`; `false` when there was none.
    pub fn remove(&mut self, name: &str) -> Result<bool, SecretError> {
        check_name(name)?;
        // Unlisted first: a crash in between leaves an unlisted secret, not a listed
        // one that looks lost.
        let listed = self.index.names.len();
        self.index.names.retain(|n| n != name);
        self.save_index()?;
        let existed = self.storage.delete(&self.index.id, name)?;
        Ok(existed || listed != self.index.names.len())
    }

    /// Removes every secret and the bookkeeping files (`secrets.json`, `secrets.enc`,
    /// the file key in the keychain).
    pub fn destroy(mut self) -> Result<(), SecretError> {
        for name in self.names() {
            self.remove(&name)?;
        }
        if let Storage::File(vault) = &self.storage
            && let Some(entry) = &vault.keychain_entry
        {
            let _ = entry.delete_credential();
        }
        for file in [INDEX_FILE, VAULT_FILE] {
            let path = self.dir.join(file);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    pub(super) fn save_index(&self) -> Result<(), SecretError> {
        save_index(&self.dir, &self.index)
    }
}

/// Writes `secrets.json`.
pub(super) fn save_index(dir: &Path, index: &Index) -> Result<(), SecretError> {
    let path = dir.join(INDEX_FILE);
    let text = serde_json::to_vec_pretty(index).map_err(|e| SecretError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_private(&path, &text)
}

/// A masked hint of a secret for people: its first three and last four characters
/// (`sk-…abcd`), or `…` alone for short or non-text secrets.
pub fn hint(secret: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(secret) else {
        return "…".into();
    };
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 16 {
        return "…".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

fn check_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SecretError::BadName(name.to_owned()))
    }
}

/// `bytes` random bytes, hex.
pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    hex::encode(buf)
}

/// Writes `bytes` to `path`, readable by this user only, all or nothing.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    // Write a sibling and rename it over, so a crash never leaves half a file. The
    // sibling's name is the file's own plus this process and a random part, so two
    // writers (the node and a CLI command, or two files of the store) never share one.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secrets::test_support::*;

    #[test]
    fn file_backend_round_trips_and_never_writes_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let secret = b"sk-file-backend-secret-0123456789";
        {
            let mut store =
                SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
            assert_eq!(store.backend(), Backend::File);
            store.set("provider/openai", secret).unwrap();
            store.set("device-token", b"token-abc").unwrap();
        }
        let store = SecretStore::open(dir.path(), BackendChoice::Auto, &pass("pw")).unwrap();
        assert_eq!(
            store.backend(),
            Backend::File,
            "auto keeps the recorded backend"
        );
        assert_eq!(&**store.get("provider/openai").unwrap().unwrap(), secret);
        assert_eq!(store.names(), ["device-token", "provider/openai"]);
        let mut files = Vec::new();
        walk(dir.path(), &mut files);
        assert!(files.len() >= 2);
        for file in files {
            assert!(!contains(&file, secret));
            assert!(!contains(&file, hex::encode(secret).as_bytes()));
        }
    }

    #[test]
    fn explicit_backend_other_than_recorded_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        store.set("device-token", b"t").unwrap();
        drop(store);
        let err =
            SecretStore::open(dir.path(), BackendChoice::SecretService, &pass("pw")).unwrap_err();
        assert!(matches!(err, SecretError::BackendMismatch { .. }), "{err}");
    }

    #[test]
    fn hints_mask_the_key() {
        assert_eq!(hint(b"sk-proj-0123456789abcd"), "sk-…abcd");
        assert_eq!(hint(b"short"), "…");
        assert_eq!(hint(&[0xff; 20]), "…");
    }
}
