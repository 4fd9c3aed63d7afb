//! Secret storage: AI provider keys, the device token and the identity key.
//!
//! A [`SecretStore`] keeps named secrets (`provider/openai`, `device-token`,
//! `identity-key`) in one of three backends, chosen by `[secrets] backend` in `node.toml`:
//!
//! * `keyutils` — the Linux kernel key retention service, through `keyring-core` and
//!   `linux-keyutils-keyring-store`. Needs no daemon, so it works headless. Keys live in
//!   the user's persistent keyring, linked into the session keyring; a process without
//!   a session keyring of its own reaches the user's session keyring (the kernel's
//!   fallback), so no `keyctl session -` is needed. The kernel forgets these keys at a
//!   reboot (and the persistent keyring expires after some idle days): on a server that
//!   must survive a reboot unattended, choose `file`.
//! * `secret-service` — GNOME Keyring, KWallet and friends over D-Bus, where the
//!   desktop session offers one (`DBUS_SESSION_BUS_ADDRESS` set).
//! * `file` — `secrets.enc` in the home folder: every secret in one blob sealed with
//!   ChaCha20-Poly1305 under a 32-byte key derived with argon2id from a passphrase:
//!   `AISA_PASSPHRASE`, else the file `AISA_PASSPHRASE_FILE` or `[secrets]
//!   passphrase_file` names, else asked on the terminal. With none of these the store
//!   refuses to open ([`SecretError::NoPassphrase`]): the key is never kept only in the
//!   kernel keychain, which forgets it at a reboot. A file an older version sealed with
//!   a keychain key is re-sealed under a passphrase the first time one can be had.
//!
//! `auto` (the default) takes the first that works, in that order, and records the
//! choice in `secrets.json` (which holds only the store id, the backend and the names
//! of the secrets, never a secret), so a later run finds its secrets where it left them.
//!
//! No secret is written in plaintext; secret bytes are held in [`Zeroizing`] buffers.
//! What this module does not do: protect a secret from code running as the same user
//! (any keychain hands secrets to the user's processes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use keyring_core::Entry;
use keyring_core::api::CredentialStore;
use serde::{Deserialize, Serialize};
pub use zeroize::Zeroizing;

/// The keychain service name every entry is filed under.
pub const SERVICE: &str = "aisuperapp-desktop";
/// The name of the device token.
pub const DEVICE_TOKEN: &str = "device-token";
/// The name of the identity key (32 secret bytes).
pub const IDENTITY_KEY: &str = "identity-key";
/// The environment variable holding the passphrase of the encrypted file.
pub const PASSPHRASE_ENV: &str = "AISA_PASSPHRASE";
/// The environment variable naming a file that holds the passphrase (its first line),
/// e.g. a systemd credential (`$CREDENTIALS_DIRECTORY/…`).
pub const PASSPHRASE_FILE_ENV: &str = "AISA_PASSPHRASE_FILE";

const INDEX_FILE: &str = "secrets.json";
const VAULT_FILE: &str = "secrets.enc";
const VAULT_AAD: &[u8] = b"aisa-secrets-v1";
const FILE_KEY: &str = "file-key";

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
    /// The first of keyutils, Secret Service, file that works (remembered once chosen).
    #[default]
    Auto,
    /// The kernel keyutils keychain.
    Keyutils,
    /// The desktop's Secret Service over D-Bus.
    SecretService,
    /// The encrypted file.
    File,
}

/// The backend in use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The kernel keyutils keychain.
    Keyutils,
    /// The desktop's Secret Service over D-Bus.
    SecretService,
    /// The encrypted file.
    File,
}

impl Backend {
    /// Its name in `node.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Keyutils => "keyutils",
            Backend::SecretService => "secret-service",
            Backend::File => "file",
        }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The chosen backend cannot be used here.
    #[error("the {backend} secret store is not available: {reason}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// Why.
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_owned(),
        source,
    }
}

fn keychain_err(err: keyring_core::Error) -> SecretError {
    SecretError::Keychain(err.to_string())
}

/// Where a passphrase comes from when the file backend needs one.
pub trait PassphraseSource {
    /// The passphrase; `confirm` when a new file is being created (ask twice).
    fn passphrase(&self, confirm: bool) -> Result<Zeroizing<String>, SecretError>;
    /// Whether a passphrase is at hand without asking anybody.
    fn given(&self) -> bool;
    /// Whether [`PassphraseSource::passphrase`] can have one at all (given, or someone to
    /// ask).
    fn available(&self) -> bool {
        self.given()
    }
}

/// `AISA_PASSPHRASE`, else the file `AISA_PASSPHRASE_FILE` names, else `passphrase_file`
/// (`[secrets] passphrase_file`), else a prompt on the terminal (no echo), else
/// [`SecretError::NoPassphrase`].
#[derive(Debug, Default, Clone)]
pub struct EnvOrPrompt {
    /// `[secrets] passphrase_file` from `node.toml`.
    pub passphrase_file: Option<PathBuf>,
}

impl EnvOrPrompt {
    /// The passphrase file to read, if one is named.
    fn file(&self) -> Option<PathBuf> {
        std::env::var_os(PASSPHRASE_FILE_ENV)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.passphrase_file.clone())
    }
}

/// The first line of a passphrase file.
pub fn read_passphrase_file(path: &Path) -> Result<Zeroizing<String>, SecretError> {
    let bad = |reason: String| SecretError::PassphraseFile {
        path: path.to_owned(),
        reason,
    };
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(bad("its first line is empty".into()));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

impl PassphraseSource for EnvOrPrompt {
    fn passphrase(&self, confirm: bool) -> Result<Zeroizing<String>, SecretError> {
        if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
            return Ok(Zeroizing::new(p));
        }
        if let Some(file) = self.file() {
            return read_passphrase_file(&file);
        }
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(SecretError::NoPassphrase);
        }
        let first = Zeroizing::new(
            rpassword::prompt_password("Passphrase for the node's secrets: ")
                .map_err(|_| SecretError::NoPassphrase)?,
        );
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Same passphrase again: ")
                    .map_err(|_| SecretError::NoPassphrase)?,
            );
            if *again != *first {
                return Err(SecretError::Format {
                    path: PathBuf::from(VAULT_FILE),
                    message: "the two passphrases differ".into(),
                });
            }
        }
        Ok(first)
    }

    fn given(&self) -> bool {
        std::env::var_os(PASSPHRASE_ENV).is_some() || self.file().is_some()
    }

    fn available(&self) -> bool {
        use std::io::IsTerminal;
        self.given() || std::io::stdin().is_terminal()
    }
}

/// No passphrase at all: a store that needs one refuses to open (services without a
/// configured passphrase, and tests).
pub struct NoPassphraseSource;

impl PassphraseSource for NoPassphraseSource {
    fn passphrase(&self, _confirm: bool) -> Result<Zeroizing<String>, SecretError> {
        Err(SecretError::NoPassphrase)
    }

    fn given(&self) -> bool {
        false
    }
}

/// A fixed passphrase (tests, and callers that got one some other way).
pub struct FixedPassphrase(pub Zeroizing<String>);

impl PassphraseSource for FixedPassphrase {
    fn passphrase(&self, _confirm: bool) -> Result<Zeroizing<String>, SecretError> {
        Ok(self.0.clone())
    }

    fn given(&self) -> bool {
        true
    }
}

/// `secrets.json`: what is stored where. Holds no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    /// Random id that keeps the keychain entries of several homes apart.
    id: String,
    /// The backend that holds the secrets.
    backend: Option<Backend>,
    /// The names of the stored secrets.
    names: Vec<String>,
}

/// The store. Operations block (keychain calls, argon2): call it from a blocking context
/// (`tokio::task::spawn_blocking`) inside async code.
pub struct SecretStore {
    dir: PathBuf,
    index: Index,
    backend: Backend,
    inner: Inner,
}

enum Inner {
    Keychain(Arc<CredentialStore>),
    File(Vault),
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
    /// Opens the store of the home folder `dir` with the configured backend.
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
        let backend = match (choice, index.backend) {
            (BackendChoice::Auto, Some(recorded)) => recorded,
            (BackendChoice::Auto, None) => auto_backend(&index.id)?,
            (explicit, recorded) => {
                let wanted = match explicit {
                    BackendChoice::Keyutils => Backend::Keyutils,
                    BackendChoice::SecretService => Backend::SecretService,
                    _ => Backend::File,
                };
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
        let inner = match backend {
            Backend::Keyutils => Inner::Keychain(keyutils_store()?),
            Backend::SecretService => Inner::Keychain(secret_service_store()?),
            Backend::File => Inner::File(Vault::open(dir, &index.id, passphrase)?),
        };
        index.backend = Some(backend);
        let store = SecretStore {
            dir: dir.to_owned(),
            index,
            backend,
            inner,
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

    /// The secret `name`, or `None` when there is none.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        check_name(name)?;
        match &self.inner {
            Inner::Keychain(store) => match self.entry(store, name)?.get_secret() {
                Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
                Err(keyring_core::Error::NoEntry) => Ok(None),
                Err(e) => Err(keychain_err(e)),
            },
            Inner::File(vault) => Ok(vault.entries.get(name).cloned()),
        }
    }

    /// Stores `secret` under `name`, replacing any earlier one.
    pub fn set(&mut self, name: &str, secret: &[u8]) -> Result<(), SecretError> {
        check_name(name)?;
        match &mut self.inner {
            Inner::Keychain(store) => {
                let entry = Self::entry_in(store, &self.index.id, name)?;
                entry.set_secret(secret).map_err(keychain_err)?;
            }
            Inner::File(vault) => {
                vault
                    .entries
                    .insert(name.to_owned(), Zeroizing::new(secret.to_vec()));
                vault.save()?;
            }
        }
        if !self.index.names.iter().any(|n| n == name) {
            self.index.names.push(name.to_owned());
        }
        self.save_index()
    }

    /// Removes the secret `name`; `false` when there was none.
    pub fn remove(&mut self, name: &str) -> Result<bool, SecretError> {
        check_name(name)?;
        let existed = match &mut self.inner {
            Inner::Keychain(store) => {
                match Self::entry_in(store, &self.index.id, name)?.delete_credential() {
                    Ok(()) => true,
                    Err(keyring_core::Error::NoEntry) => false,
                    Err(e) => return Err(keychain_err(e)),
                }
            }
            Inner::File(vault) => {
                let existed = vault.entries.remove(name).is_some();
                vault.save()?;
                existed
            }
        };
        let listed = self.index.names.len();
        self.index.names.retain(|n| n != name);
        self.save_index()?;
        Ok(existed || listed != self.index.names.len())
    }

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

    /// Removes every secret and the bookkeeping files (`secrets.json`, `secrets.enc`,
    /// the file key in the keychain).
    pub fn destroy(mut self) -> Result<(), SecretError> {
        for name in self.names() {
            self.remove(&name)?;
        }
        if let Inner::File(vault) = &self.inner
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

    fn entry(&self, store: &Arc<CredentialStore>, name: &str) -> Result<Entry, SecretError> {
        Self::entry_in(store, &self.index.id, name)
    }

    fn entry_in(store: &Arc<CredentialStore>, id: &str, name: &str) -> Result<Entry, SecretError> {
        Entry::new_in_store(store, SERVICE, &format!("{id}/{name}")).map_err(keychain_err)
    }

    fn save_index(&self) -> Result<(), SecretError> {
        let path = self.dir.join(INDEX_FILE);
        let text = serde_json::to_vec_pretty(&self.index).map_err(|e| SecretError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_private(&path, &text)
    }
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

/// Gives the calling thread (and the threads and processes it starts later) a session
/// keyring of its own when it has none, and returns whether it joined a new one.
///
/// Without one, the kernel lends the process the user's shared session keyring, on
/// which keyutils refused writes here (`EACCES`). A new anonymous session keyring still
/// reaches the secrets stored earlier: every key is also linked into the user's
/// persistent keyring, which the store links into the session keyring. Credentials
/// are per thread in Linux, so call this at the start of `main`, before any other
/// thread exists (`desktop-node` does); [`SecretStore::open`] calls it too, for the
/// thread it runs on. (The shell equivalent is `keyctl session -`.)
#[cfg(target_os = "linux")]
pub fn ensure_session_keyring() -> std::io::Result<bool> {
    const GET_KEYRING_ID: libc::c_long = 0;
    const JOIN_SESSION_KEYRING: libc::c_long = 1;
    const SESSION: libc::c_long = -3;
    const USER_SESSION: libc::c_long = -5;
    // SAFETY: keyctl(GET_KEYRING_ID) takes integers only and touches no memory of ours.
    #[allow(unsafe_code)]
    let session = unsafe { libc::syscall(libc::SYS_keyctl, GET_KEYRING_ID, SESSION, 0) };
    if session < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let user_session = unsafe { libc::syscall(libc::SYS_keyctl, GET_KEYRING_ID, USER_SESSION, 0) };
    if session != user_session {
        return Ok(false);
    }
    // SAFETY: a null name asks for a new anonymous session keyring; the kernel reads no
    // memory of ours.
    #[allow(unsafe_code)]
    let joined = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if joined < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// Not Linux: there is no keyutils and nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn ensure_session_keyring() -> std::io::Result<bool> {
    Ok(false)
}

fn keyutils_store() -> Result<Arc<CredentialStore>, SecretError> {
    ensure_session_keyring().map_err(|e| SecretError::Unavailable {
        backend: "keyutils",
        reason: format!("no session keyring: {e}"),
    })?;
    let store =
        linux_keyutils_keyring_store::Store::new().map_err(|e| SecretError::Unavailable {
            backend: "keyutils",
            reason: e.to_string(),
        })?;
    Ok(store)
}

fn secret_service_store() -> Result<Arc<CredentialStore>, SecretError> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        return Err(SecretError::Unavailable {
            backend: "secret-service",
            reason: "no D-Bus session (DBUS_SESSION_BUS_ADDRESS is not set)".into(),
        });
    }
    let store =
        zbus_secret_service_keyring_store::Store::new().map_err(|e| SecretError::Unavailable {
            backend: "secret-service",
            reason: e.to_string(),
        })?;
    Ok(store)
}

/// Writes, reads back and deletes a probe entry: does this keychain really work here?
fn probe(store: &Arc<CredentialStore>, id: &str) -> Result<(), String> {
    let entry =
        Entry::new_in_store(store, SERVICE, &format!("{id}/probe")).map_err(|e| e.to_string())?;
    entry.set_secret(b"probe").map_err(|e| e.to_string())?;
    let back = entry.get_secret().map_err(|e| e.to_string())?;
    let _ = entry.delete_credential();
    if back == b"probe" {
        Ok(())
    } else {
        Err("the probe read back differently".into())
    }
}

fn auto_backend(id: &str) -> Result<Backend, SecretError> {
    let mut reasons = Vec::new();
    match keyutils_store()
        .map_err(|e| e.to_string())
        .and_then(|s| probe(&s, id))
    {
        Ok(()) => return Ok(Backend::Keyutils),
        Err(e) => reasons.push(format!("keyutils: {e}")),
    }
    match secret_service_store()
        .map_err(|e| e.to_string())
        .and_then(|s| probe(&s, id))
    {
        Ok(()) => return Ok(Backend::SecretService),
        Err(e) => reasons.push(format!("secret-service: {e}")),
    }
    tracing::info!(reasons = %reasons.join("; "), "no keychain; secrets go to the encrypted file");
    Ok(Backend::File)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    hex::encode(buf)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
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

/// How the file's key is had.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
enum KeySource {
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

struct Vault {
    path: PathBuf,
    source: KeySource,
    key: Zeroizing<[u8; 32]>,
    keychain_entry: Option<Entry>,
    entries: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl Vault {
    fn open(dir: &Path, id: &str, passphrase: &dyn PassphraseSource) -> Result<Vault, SecretError> {
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
        let keychain_entry = || -> Result<Entry, SecretError> {
            let store = keyutils_store()?;
            Entry::new_in_store(&store, SERVICE, &format!("{id}/{FILE_KEY}")).map_err(keychain_err)
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
                let e = keychain_entry()?;
                let bytes = Zeroizing::new(e.get_secret().map_err(|err| match err {
                    keyring_core::Error::NoEntry => SecretError::FileKeyLost,
                    other => keychain_err(other),
                })?);
                if bytes.len() != 32 {
                    return Err(SecretError::FileKeyLost);
                }
                key.copy_from_slice(&bytes);
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

    /// A file an older version sealed with a key only the keychain holds: sealed again
    /// under a passphrase when one can be had (and the keychain copy deleted), else
    /// left as it is with a loud warning.
    fn reseal_under_passphrase(
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

    fn save(&self) -> Result<(), SecretError> {
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
fn new_passphrase_key(
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

    fn pass(p: &str) -> FixedPassphrase {
        FixedPassphrase(Zeroizing::new(p.to_owned()))
    }

    fn walk(dir: &Path, out: &mut Vec<Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(std::fs::read(&path).unwrap());
            }
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

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

    #[test]
    fn explicit_backend_other_than_recorded_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SecretStore::open(dir.path(), BackendChoice::File, &pass("pw")).unwrap();
        store.set("device-token", b"t").unwrap();
        drop(store);
        let err = SecretStore::open(dir.path(), BackendChoice::Keyutils, &pass("pw")).unwrap_err();
        assert!(matches!(err, SecretError::BackendMismatch { .. }), "{err}");
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

    #[test]
    fn hints_mask_the_key() {
        assert_eq!(hint(b"sk-proj-0123456789abcd"), "sk-…abcd");
        assert_eq!(hint(b"short"), "…");
        assert_eq!(hint(&[0xff; 20]), "…");
    }

    /// The kernel keychain, where this machine lets the process use it (CI runs as root
    /// on Debian, where it does; a container whose seccomp profile forbids `keyctl`
    /// skips with a note).
    #[test]
    fn keyutils_backend_round_trips_when_available() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = match SecretStore::open(dir.path(), BackendChoice::Keyutils, &pass("x")) {
            Ok(store) => store,
            Err(e) => {
                eprintln!("keyutils not usable here, skipped: {e}");
                return;
            }
        };
        if let Err(e) = store.set("provider/openai", b"sk-keyutils-secret-value") {
            eprintln!("keyutils not usable here, skipped: {e}");
            return;
        }
        let again = SecretStore::open(dir.path(), BackendChoice::Auto, &pass("x")).unwrap();
        assert_eq!(again.backend(), Backend::Keyutils);
        assert_eq!(
            &**again.get("provider/openai").unwrap().unwrap(),
            b"sk-keyutils-secret-value"
        );
        let mut files = Vec::new();
        walk(dir.path(), &mut files);
        for file in files {
            assert!(!contains(&file, b"sk-keyutils-secret-value"));
        }
        again.destroy().unwrap();
        let fresh = SecretStore::open(dir.path(), BackendChoice::Keyutils, &pass("x")).unwrap();
        assert!(fresh.names().is_empty());
    }
}
