//! What older versions left behind: secrets kept as plain files in the home folder
//! (moved into the store), and a `secrets.enc` sealed with a key only the keychain
//! holds (read, and sealed again under a passphrase when one can be had).

use std::path::Path;

use keyring_core::Entry;

use super::error::{io_err, keychain_err};
use super::keychain::keyutils_store;
use super::store::SecretStore;
use super::vault::{FILE_KEY, Vault, new_passphrase_key};
use super::{PassphraseSource, SERVICE, SecretError, Zeroizing};

impl SecretStore {
    /// Moves a secret that an older version kept as a plain file (`path`) into the store
    /// under `name`: reads it, stores it, overwrites the file with zeros and deletes it.
    /// Returns whether there was such a file. A secret already in the store wins over
    /// the file (which is deleted all the same).
    pub fn migrate_file(&mut self, name: &str, path: &Path) -> Result<bool, SecretError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(path)(e)),
        };
        if self.get(name)?.is_none() {
            self.set(name, &bytes)?;
        }
        // Best effort: the file system may keep old blocks, but the plain copy goes.
        let _ = std::fs::write(path, vec![0u8; bytes.len()]);
        std::fs::remove_file(path).map_err(io_err(path))?;
        Ok(true)
    }
}

/// The key of a `secrets.enc` an older version sealed with 32 random bytes kept in the
/// keyutils keychain under `<id>/file-key`, and that keychain entry.
pub(super) fn legacy_file_key(id: &str) -> Result<(Zeroizing<[u8; 32]>, Entry), SecretError> {
    let store = keyutils_store()?;
    let entry =
        Entry::new_in_store(&store, SERVICE, &format!("{id}/{FILE_KEY}")).map_err(keychain_err)?;
    let bytes = Zeroizing::new(entry.get_secret().map_err(|err| match err {
        keyring_core::Error::NoEntry => SecretError::FileKeyLost,
        other => keychain_err(other),
    })?);
    if bytes.len() != 32 {
        return Err(SecretError::FileKeyLost);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    Ok((key, entry))
}

impl Vault {
    /// A file an older version sealed with a key only the keychain holds: sealed again
    /// under a passphrase when one can be had (and the keychain copy deleted), else
    /// left as it is with a loud warning.
    pub(super) fn reseal_under_passphrase(
        &mut self,
        passphrase: &dyn PassphraseSource,
    ) -> Result<(), SecretError> {
        if !passphrase.available() {
            tracing::warn!(
                file = %self.path.display(),
                "the key of secrets.enc is kept only in the kernel keychain, which forgets it at a reboot; \
                 open the store once in a terminal (e.g. `desktop-node keys list`) or with AISA_PASSPHRASE / \
                 AISA_PASSPHRASE_FILE set to seal it under a passphrase"
            );
            return Ok(());
        }
        let (source, key) = new_passphrase_key(passphrase)?;
        self.source = source;
        self.key = key;
        self.save()?;
        if let Some(entry) = self.keychain_entry.take() {
            let _ = entry.delete_credential();
        }
        tracing::info!(file = %self.path.display(), "secrets.enc is now sealed under a passphrase instead of a keychain key");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secrets::test_support::*;
    use std::collections::BTreeMap;

    use crate::secrets::keychain::probe;
    use crate::secrets::store::{INDEX_FILE, Index, random_hex};
    use crate::secrets::vault::{KeySource, VAULT_FILE};
    use crate::secrets::{Backend, BackendChoice, DEVICE_TOKEN, NoPassphraseSource};

    #[test]
    fn remove_and_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        let old = dir.path().join("device-token");
        std::fs::write(&old, b"legacy-token").unwrap();
        assert!(store.migrate_file(DEVICE_TOKEN, &old).unwrap());
        assert!(!old.exists());
        assert!(!store.migrate_file(DEVICE_TOKEN, &old).unwrap());
        assert_eq!(
            &**store.get(DEVICE_TOKEN).unwrap().unwrap(),
            b"legacy-token"
        );
        assert!(store.remove(DEVICE_TOKEN).unwrap());
        assert!(!store.remove(DEVICE_TOKEN).unwrap());
        assert!(store.get(DEVICE_TOKEN).unwrap().is_none());
        assert!(matches!(
            store.set("Bad Name", b"x"),
            Err(SecretError::BadName(_))
        ));
    }

    /// A file an older version sealed with a keychain-only key is sealed again under a
    /// passphrase as soon as one is at hand, and the keychain copy goes.
    #[test]
    fn a_legacy_keychain_keyed_file_is_resealed_under_a_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(keychain) = keyutils_store() else {
            eprintln!("keyutils not usable here, skipped");
            return;
        };
        let id = random_hex(8);
        if probe(&keychain, &id).is_err() {
            eprintln!("keyutils not usable here, skipped");
            return;
        }
        // What an older version wrote: a random key in the keychain, the vault under it.
        let entry = Entry::new_in_store(&keychain, SERVICE, &format!("{id}/{FILE_KEY}")).unwrap();
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).unwrap();
        entry.set_secret(key.as_ref()).unwrap();
        let mut entries = BTreeMap::new();
        entries.insert(
            "provider/openai".to_owned(),
            Zeroizing::new(b"sk-legacy".to_vec()),
        );
        Vault {
            path: dir.path().join(VAULT_FILE),
            source: KeySource::Keychain,
            key,
            keychain_entry: None,
            entries,
        }
        .save()
        .unwrap();
        let index = Index {
            id: id.clone(),
            backend: Some(Backend::File),
            names: vec!["provider/openai".into()],
        };
        std::fs::write(
            dir.path().join(INDEX_FILE),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        let source = |dir: &Path| -> serde_json::Value {
            serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(dir.join(VAULT_FILE)).unwrap(),
            )
            .unwrap()["key"]
                .clone()
        };
        // No passphrase to be had: it still opens (the key is there now), unchanged.
        let store =
            SecretStore::open(dir.path(), BackendChoice::File, &NoPassphraseSource).unwrap();
        assert_eq!(
            &**store.get("provider/openai").unwrap().unwrap(),
            b"sk-legacy"
        );
        assert_eq!(source(dir.path()), serde_json::json!("keychain"));
        drop(store);
        // With one: sealed under it, and the keychain no longer holds the only key.
        let store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        assert_eq!(
            &**store.get("provider/openai").unwrap().unwrap(),
            b"sk-legacy"
        );
        assert!(source(dir.path()).get("argon2id").is_some());
        assert!(matches!(
            entry.get_secret(),
            Err(keyring_core::Error::NoEntry)
        ));
        drop(store);
        let store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        assert_eq!(
            &**store.get("provider/openai").unwrap().unwrap(),
            b"sk-legacy"
        );
    }
}
