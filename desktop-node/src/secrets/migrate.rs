//! What older versions left behind: secrets kept as plain files in the home folder
//! (moved into the store), a `secrets.enc` sealed with a key only the keychain holds
//! (read, and sealed again under a passphrase when one can be had), and stores kept in
//! the kernel keychain, which forgets at a reboot (moved into a durable store).

use std::path::Path;

use keyring_core::Entry;

use super::error::{io_err, keychain_err};
use super::keychain::{auto_backend, keyutils_store};
use super::store::{Index, SecretStore, Storage, save_index};
use super::vault::{FILE_KEY, Vault, new_passphrase_key};
use super::{Backend, BackendChoice, PassphraseSource, SERVICE, SecretError, Zeroizing};

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

/// A store whose `secrets.json` records the kernel keychain (what older versions chose
/// first, and what the kernel forgets at a reboot): every listed secret the keychain
/// still has is copied into the durable store `choice` (or `auto`) gives, the index is
/// rewritten to point there, and only then are the kernel's copies deleted, so a crash
/// leaves two copies, never none. Secrets the kernel already forgot stay listed, so
/// reading them says they are lost ([`SecretError::Lost`]). When the durable store
/// cannot be opened now (the file backend with no passphrase at hand, in a service)
/// the secrets stay where they are for this run, with a loud warning.
pub(super) fn from_keyutils(
    dir: &Path,
    index: &mut Index,
    choice: BackendChoice,
    passphrase: &dyn PassphraseSource,
) -> Result<(Backend, Storage), SecretError> {
    let mut old =
        Storage::open(Backend::Keyutils, dir, &index.id, passphrase).map_err(|err| match err {
            SecretError::Unavailable { backend, reason } => {
                SecretError::StoreGone { backend, reason }
            }
            other => other,
        })?;
    let target = match choice.explicit() {
        Some(backend) => backend,
        None => auto_backend(&index.id)?,
    };
    let mut new = match Storage::open(target, dir, &index.id, passphrase) {
        Ok(storage) => storage,
        Err(err) => {
            tracing::warn!(
                %err,
                target = target.name(),
                "this node's secrets are still in the kernel keychain, which forgets them at a reboot, and the durable store does not open now; \
                 run `desktop-node keys list` once in a terminal (or with AISA_PASSPHRASE / AISA_PASSPHRASE_FILE set) to move them"
            );
            return Ok((Backend::Keyutils, old));
        }
    };
    let mut moved = Vec::new();
    let mut lost = Vec::new();
    for name in index.names.clone() {
        match old.get(&index.id, &name)? {
            Some(secret) => {
                new.set(&index.id, &name, &secret)?;
                moved.push(name);
            }
            None => lost.push(name),
        }
    }
    index.backend = Some(target);
    save_index(dir, index)?;
    for name in &moved {
        if let Err(err) = old.delete(&index.id, name) {
            tracing::warn!(%err, name, "could not delete the kernel keychain's copy");
        }
    }
    tracing::info!(
        to = target.name(),
        moved = moved.len(),
        "moved the node's secrets out of the kernel keychain into a durable store"
    );
    if !lost.is_empty() {
        tracing::warn!(
            lost = %lost.join(", "),
            "the kernel keychain had already forgotten these secrets (a reboot?)"
        );
    }
    Ok((target, new))
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
    use crate::secrets::store::{INDEX_FILE, random_hex};
    use crate::secrets::vault::{KeySource, VAULT_FILE};
    use crate::secrets::{DEVICE_TOKEN, IDENTITY_KEY, NoPassphraseSource};

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
        if probe(&keychain, Backend::Keyutils, &id).is_err() {
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
    /// What an older version left: a store recorded as keyutils, two of its three
    /// secrets still in the kernel keychain (the third forgotten, as after a reboot).
    /// With no passphrase at hand it keeps working from the kernel keychain; with one,
    /// everything the kernel still has moves into the durable store, the kernel's copies
    /// go, and the forgotten secret is an error that says what to do, not a `None`.
    #[test]
    fn a_keyutils_store_moves_into_a_durable_store_and_a_forgotten_secret_is_an_error() {
        let Ok(keychain) = keyutils_store() else {
            eprintln!("keyutils not usable here, skipped");
            return;
        };
        let id = random_hex(8);
        if probe(&keychain, Backend::Keyutils, &id).is_err() {
            eprintln!("keyutils not usable here, skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let entry =
            |name: &str| Entry::new_in_store(&keychain, SERVICE, &format!("{id}/{name}")).unwrap();
        entry(DEVICE_TOKEN)
            .set_secret(b"token-from-keyutils")
            .unwrap();
        entry("provider/openai")
            .set_secret(b"sk-from-keyutils")
            .unwrap();
        let index = Index {
            id: id.clone(),
            backend: Some(Backend::Keyutils),
            names: vec![
                DEVICE_TOKEN.into(),
                "provider/openai".into(),
                IDENTITY_KEY.into(),
            ],
        };
        std::fs::write(
            dir.path().join(INDEX_FILE),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();

        // No durable store opens (file backend, no passphrase): still readable, unmoved.
        let store =
            SecretStore::open(dir.path(), BackendChoice::File, &NoPassphraseSource).unwrap();
        assert_eq!(store.backend(), Backend::Keyutils);
        assert_eq!(
            &**store.get(DEVICE_TOKEN).unwrap().unwrap(),
            b"token-from-keyutils"
        );
        drop(store);

        // With a passphrase: moved into the file.
        let store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        assert_eq!(store.backend(), Backend::File);
        assert_eq!(
            &**store.get(DEVICE_TOKEN).unwrap().unwrap(),
            b"token-from-keyutils"
        );
        assert_eq!(
            &**store.get("provider/openai").unwrap().unwrap(),
            b"sk-from-keyutils"
        );
        let err = store.get(IDENTITY_KEY).unwrap_err();
        assert!(matches!(err, SecretError::Lost { .. }), "{err}");
        assert!(err.to_string().contains("desktop-node login"), "{err}");
        drop(store);
        // The kernel's copies are gone: the file holds the only (durable) copy.
        assert!(matches!(
            entry(DEVICE_TOKEN).get_secret(),
            Err(keyring_core::Error::NoEntry)
        ));
        assert!(matches!(
            entry("provider/openai").get_secret(),
            Err(keyring_core::Error::NoEntry)
        ));
        let recorded: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(INDEX_FILE)).unwrap()).unwrap();
        assert_eq!(recorded["backend"], "file");
        // `auto` (and the old `keyutils` setting, which now means `auto`) keep it there.
        for choice in [BackendChoice::Auto, BackendChoice::Keyutils] {
            let store = SecretStore::open(dir.path(), choice, &pass("pw")).unwrap();
            assert_eq!(store.backend(), Backend::File);
            assert_eq!(
                &**store.get("provider/openai").unwrap().unwrap(),
                b"sk-from-keyutils"
            );
        }
    }

    /// A new store never goes to the kernel keychain, whatever node.toml says.
    #[test]
    fn a_new_store_is_never_kept_in_the_kernel_keychain() {
        for choice in [BackendChoice::Auto, BackendChoice::Keyutils] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = SecretStore::open(dir.path(), choice, &pass("pw")).unwrap();
            assert!(store.backend().durable(), "{:?}", store.backend());
            store.set(DEVICE_TOKEN, b"t").unwrap();
            let again = SecretStore::open(dir.path(), BackendChoice::Auto, &pass("pw")).unwrap();
            assert!(again.backend().durable());
            again.destroy().unwrap();
        }
    }

    /// A listed secret the store lost (here: taken out of `secrets.enc` behind the
    /// store's back) is an error, not an absent secret; an unlisted one is `None`.
    #[test]
    fn a_listed_secret_missing_from_its_store_is_lost_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        store.set(DEVICE_TOKEN, b"t").unwrap();
        drop(store);
        let saved = std::fs::read(dir.path().join(VAULT_FILE)).unwrap();
        let mut store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        store.set("provider/openai", b"k").unwrap();
        drop(store);
        // An older secrets.enc, without the provider key, as after a restore.
        std::fs::write(dir.path().join(VAULT_FILE), saved).unwrap();
        let store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        let err = store.get("provider/openai").unwrap_err();
        assert!(err.to_string().contains("keys set"), "{err}");
        assert!(store.get("provider/anthropic").unwrap().is_none());
    }
}
