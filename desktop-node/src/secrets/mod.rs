//! Secret storage: AI provider keys, the device token and the identity key.
//!
//! A [`SecretStore`] keeps named secrets (`provider/openai`, `device-token`,
//! `identity-key`) in one backend, chosen by `[secrets] backend` in `node.toml`. Each
//! one keeps its secrets across reboots:
//!
//! * `windows-credential-manager` — the Windows Credential Manager (generic credentials,
//!   local-machine persistence), through `keyring-core` and `windows-native-keyring-store`.
//! * `macos-keychain` — the user's login keychain (`apple-native-keyring-store`).
//! * `secret-service` — GNOME Keyring, KWallet and friends over D-Bus, where a Linux
//!   desktop session offers one (`DBUS_SESSION_BUS_ADDRESS` set).
//! * `file` — `secrets.enc` in the home folder: every secret in one blob sealed with
//!   ChaCha20-Poly1305 under a 32-byte key derived with argon2id from a passphrase:
//!   `AISA_PASSPHRASE`, else the file `AISA_PASSPHRASE_FILE` or `[secrets]
//!   passphrase_file` names, else asked on the terminal. With none of these the store
//!   refuses to open ([`SecretError::NoPassphrase`]): the key is never kept only in the
//!   kernel keychain, which forgets it at a reboot. A file an older version sealed with
//!   a keychain key is re-sealed under a passphrase the first time one can be had.
//!
//! `auto` (the default) takes the first durable keychain of this OS whose probe works
//! (the one above for Windows and macOS, the Secret Service on Linux), else the file,
//! and records the choice in `secrets.json` (which holds only the store id, the backend
//! and the names of the secrets, never a secret), so a later run finds its secrets
//! where it left them. Each keychain is compiled only for its OS (`cfg`).
//!
//! The Linux kernel keychain (keyutils) is no longer a backend: it forgets its keys at a
//! reboot. Older versions chose it first; a store whose `secrets.json` records it is
//! moved into the store `auto` (or the configured backend) gives the first time it is
//! opened, and `backend = "keyutils"` now means `auto`. A secret listed in
//! `secrets.json` that its store no longer has is an error ([`SecretError::Lost`]),
//! never a silent `None`; so is a recorded store that is not reachable.
//!
//! No secret is written in plaintext; secret bytes are held in [`Zeroizing`] buffers.
//! What this module does not do: protect a secret from code running as the same user
//! (any keychain hands secrets to the user's processes).
//!
//! The parts, one job each (private modules; everything public is re-exported here):
//! `store.rs` (the [`SecretStore`] and its `secrets.json` index), `keychain.rs` (the
//! keychains of each OS, and the `auto` probe), `vault.rs` (the
//! `secrets.enc` format of the `file` backend), `passphrase.rs` (where its passphrase
//! comes from: environment, file, terminal), `migrate.rs` (what older versions left
//! behind: plain secret files, a vault keyed in the keychain, secrets in the kernel
//! keychain), `error.rs`
//! ([`SecretError`]).

mod error;
mod keychain;
mod migrate;
mod passphrase;
mod store;
mod vault;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
pub use zeroize::Zeroizing;

pub use error::SecretError;
pub use keychain::ensure_session_keyring;
pub use passphrase::{
    EnvOrPrompt, FixedPassphrase, NoPassphraseSource, PASSPHRASE_ENV, PASSPHRASE_FILE_ENV,
    PassphraseSource, read_passphrase_file,
};
pub use store::{SecretStore, hint};

/// The keychain service name every entry is filed under.
pub const SERVICE: &str = "aisuperapp-desktop";
/// The name of the device token.
pub const DEVICE_TOKEN: &str = "device-token";
/// The name of the identity key (32 secret bytes).
pub const IDENTITY_KEY: &str = "identity-key";

/// The name of a provider's API key in the store.
pub fn provider_key_name(provider: &str) -> String {
    format!("provider/{provider}")
}

/// `[secrets]` in `node.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Which backend keeps the secrets. Default `auto`.
    pub backend: BackendChoice,
    /// For the `file` backend: a file holding the passphrase (its first line), used when
    /// neither `AISA_PASSPHRASE` nor `AISA_PASSPHRASE_FILE` is set. It should be readable
    /// by this user only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
}

/// The configured backend.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// The first durable keychain of this OS that works, else the encrypted file
    /// (remembered once chosen).
    #[default]
    Auto,
    /// What older versions kept in the kernel keychain: read as `auto`, and the
    /// secrets found in the kernel keychain move into the store `auto` chooses.
    Keyutils,
    /// The desktop's Secret Service over D-Bus (Linux).
    SecretService,
    /// The Windows Credential Manager.
    WindowsCredentialManager,
    /// The macOS login keychain.
    MacosKeychain,
    /// The encrypted file.
    File,
}

impl BackendChoice {
    /// The backend an explicit choice names; `None` for `auto` (and `keyutils`, which
    /// now means `auto`).
    pub fn explicit(self) -> Option<Backend> {
        match self {
            BackendChoice::Auto | BackendChoice::Keyutils => None,
            BackendChoice::SecretService => Some(Backend::SecretService),
            BackendChoice::WindowsCredentialManager => Some(Backend::WindowsCredentialManager),
            BackendChoice::MacosKeychain => Some(Backend::MacosKeychain),
            BackendChoice::File => Some(Backend::File),
        }
    }
}

/// The backend in use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The Linux kernel keychain: where older versions kept secrets, which the kernel
    /// forgets at a reboot. Only read now, to move them into a durable store.
    Keyutils,
    /// The desktop's Secret Service over D-Bus (Linux).
    SecretService,
    /// The Windows Credential Manager.
    WindowsCredentialManager,
    /// The macOS login keychain.
    MacosKeychain,
    /// The encrypted file.
    File,
}

impl Backend {
    /// Its name in `node.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Keyutils => "keyutils",
            Backend::SecretService => "secret-service",
            Backend::WindowsCredentialManager => "windows-credential-manager",
            Backend::MacosKeychain => "macos-keychain",
            Backend::File => "file",
        }
    }

    /// Whether its secrets outlive a reboot (all but the kernel keychain).
    pub fn durable(self) -> bool {
        self != Backend::Keyutils
    }
}

/// What the tests of the parts share.
#[cfg(test)]
mod test_support {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use super::{FixedPassphrase, Zeroizing};

    pub(super) fn pass(p: &str) -> FixedPassphrase {
        FixedPassphrase(Zeroizing::new(p.to_owned()))
    }

    pub(super) fn walk(dir: &Path, out: &mut Vec<Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(std::fs::read(&path).unwrap());
            }
        }
    }

    pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}
