//! Where the `file` backend's passphrase comes from: `AISA_PASSPHRASE`, a passphrase
//! file, the terminal, or nowhere.

use std::path::{Path, PathBuf};

use super::vault::VAULT_FILE;
use super::{SecretError, Zeroizing};

/// The environment variable holding the passphrase of the encrypted file.
pub const PASSPHRASE_ENV: &str = "AISA_PASSPHRASE";
/// The environment variable naming a file that holds the passphrase (its first line),
/// e.g. a systemd credential (`$CREDENTIALS_DIRECTORY/…`).
pub const PASSPHRASE_FILE_ENV: &str = "AISA_PASSPHRASE_FILE";

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
