//! [`SecretError`], and the small helpers that build it.

use std::path::{Path, PathBuf};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The chosen backend, or the one `secrets.json` records, cannot be used here.
    #[error("the {backend} secret store is not available: {reason}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// The store `secrets.json` records holds this node's secrets and cannot be reached.
    #[error(
        "this node's secrets are in the {backend} store (secrets.json), which cannot be reached: {reason}. Make it reachable again (log in to the desktop session, unlock the keychain), or move secrets.json aside and run `desktop-node login` again"
    )]
    StoreGone {
        /// The recorded backend.
        backend: &'static str,
        /// Why it cannot be reached.
        reason: String,
    },
    /// No backend works (`auto`).
    #[error("no secret store works here ({0})")]
    NoBackend(String),
    /// The secrets were stored by another backend than the configured one.
    #[error(
        "the secrets of this node are in the {recorded} store (secrets.json) but node.toml asks for {configured}"
    )]
    BackendMismatch {
        /// What `secrets.json` says.
        recorded: &'static str,
        /// What `node.toml` says.
        configured: &'static str,
    },
    /// A secret `secrets.json` lists is not in its store any more: the store was reset,
    /// is another one than before (another keyring, another user), or was the kernel
    /// keychain of an older version, which forgets at a reboot.
    #[error(
        "the secret {name:?} was stored in the {backend} store, which no longer has it (the store was reset or replaced, or it was the kernel keychain of an older version, which forgets at a reboot); {remedy}"
    )]
    Lost {
        /// The secret's name.
        name: String,
        /// The store the node used.
        backend: &'static str,
        /// What to do about it.
        remedy: &'static str,
    },
    /// The keychain refused an operation.
    #[error("the keychain failed: {0}")]
    Keychain(String),
    /// The encrypted file does not open: wrong passphrase, wrong key, or a damaged file.
    #[error("secrets.enc does not open: wrong passphrase or key, or a damaged file")]
    Decrypt,
    /// The file needs a passphrase and none can be had.
    #[error(
        "the encrypted secrets file (backend \"file\") needs a passphrase and none was given: run this in a terminal to be asked, set AISA_PASSPHRASE, or name a file holding it with AISA_PASSPHRASE_FILE or [secrets] passphrase_file in node.toml (the key is never kept only in the kernel keychain, which forgets it at a reboot)"
    )]
    NoPassphrase,
    /// A passphrase file could not be used.
    #[error("the passphrase file {path}: {reason}")]
    PassphraseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The keychain holding the file's key no longer has it.
    #[error(
        "secrets.enc is locked with a key kept in the keychain, and the keychain no longer has it"
    )]
    FileKeyLost,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not in the expected format.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A secret name outside `[a-z0-9/._-]`, or empty.
    #[error("invalid secret name {0:?}")]
    BadName(String),
}

/// Turns an I/O error on `path` into [`SecretError::Io`].
pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A keychain failure.
pub(super) fn keychain_err(err: keyring_core::Error) -> SecretError {
    SecretError::Keychain(err.to_string())
}

/// What to do about a lost secret, by name.
pub(super) fn lost_remedy(name: &str) -> &'static str {
    match name {
        super::DEVICE_TOKEN => "run `desktop-node login` again",
        super::IDENTITY_KEY => {
            "run `desktop-node login` again (a new identity key is made; pair your browsers again)"
        }
        _ if name.starts_with("provider/") => "store the key again with `desktop-node keys set`",
        _ => "store it again",
    }
}
