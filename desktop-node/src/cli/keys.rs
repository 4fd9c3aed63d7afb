//! `desktop-node keys …`, and the node's secrets at `login` and `run`: the provider keys,
//! the device token and the identity key, all in the [`SecretStore`].
//!
//! Keychain calls block (and the Secret Service client runs its own executor), so every
//! store operation here runs on a plain thread of its own, outside the tokio runtime.

use std::io::Read;

use aisa_node::config::Home;
use aisa_node::secrets::{
    self, DEVICE_TOKEN, EnvOrPrompt, IDENTITY_KEY, SecretStore, Zeroizing, provider_key_name,
};
use anyhow::{Context, bail};
use clap::Subcommand;

/// `desktop-node keys …`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Store the API key of an AI provider (openai, anthropic, google, local, …). The key
    /// is asked on the terminal without echo, or read from standard input with --stdin.
    Set {
        /// The provider's name.
        provider: String,
        /// Read the key from standard input instead of asking.
        #[arg(long)]
        stdin: bool,
    },
    /// List the stored provider keys, each with a masked hint (never the key).
    List,
    /// Remove the stored key of a provider.
    Remove {
        /// The provider's name.
        provider: String,
    },
}

/// Runs `f` with the home's store on a thread of its own.
pub fn with_store<T: Send>(
    home: &Home,
    f: impl FnOnce(&mut SecretStore) -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    // `AISA_SECRETS_BACKEND` (auto, secret-service, windows-credential-manager,
    // macos-keychain, file; keyutils means auto) overrides node.toml,
    // which `keys set` may run before `login` has written.
    let configured = home.load_config().map(|c| c.secrets).unwrap_or_default();
    let choice = match std::env::var("AISA_SECRETS_BACKEND") {
        Ok(name) => {
            serde_json::from_value(serde_json::Value::String(name.clone())).with_context(|| {
                format!(
                    "AISA_SECRETS_BACKEND={name:?}: auto, secret-service, windows-credential-manager, macos-keychain or file"
                )
            })?
        }
        Err(_) => configured.backend,
    };
    // The file backend's passphrase: AISA_PASSPHRASE, AISA_PASSPHRASE_FILE, [secrets]
    // passphrase_file, else asked on the terminal; with none of them it refuses.
    let passphrase = EnvOrPrompt {
        passphrase_file: configured.passphrase_file,
    };
    let dir = home.dir().to_owned();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let mut store = SecretStore::open(&dir, choice, &passphrase)
                    .context("cannot open the node's secret store")?;
                // Older versions kept these two as plain files: move them in once.
                store.migrate_file(DEVICE_TOKEN, &dir.join("device-token"))?;
                store.migrate_file(IDENTITY_KEY, &dir.join("identity.key"))?;
                f(&mut store)
            })
            .join()
            .unwrap_or_else(|_| bail!("the secret store thread panicked"))
    })
}

/// Runs a `keys` subcommand.
pub fn run(home: &Home, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Set { provider, stdin } => {
            let key = if stdin {
                let mut text = Zeroizing::new(String::new());
                std::io::stdin().read_to_string(&mut text)?;
                Zeroizing::new(text.trim().to_owned())
            } else {
                Zeroizing::new(
                    rpassword::prompt_password(format!("API key for {provider}: "))
                        .context("cannot read the key from the terminal (use --stdin)")?
                        .trim()
                        .to_owned(),
                )
            };
            let backend = set_provider_key(home, &provider, &key)?;
            println!(
                "stored the {provider} key ({}) in the {} store",
                secrets::hint(key.as_bytes()),
                backend.name()
            );
        }
        KeysCommand::List => {
            let (backend, rows) = provider_keys(home)?;
            if rows.is_empty() {
                println!("no provider keys stored ({} store)", backend.name());
            }
            for (provider, hint) in rows {
                println!("{provider}\t{hint}");
            }
        }
        KeysCommand::Remove { provider } => {
            if remove_provider_key(home, &provider)? {
                println!("removed the {provider} key");
            } else {
                bail!("no key stored for {provider}");
            }
        }
    }
    Ok(())
}

/// Stores `key` as `provider`'s API key; returns the store that keeps it. An empty key
/// is refused. (`keys set` and the desktop face.)
pub fn set_provider_key(
    home: &Home,
    provider: &str,
    key: &str,
) -> anyhow::Result<secrets::Backend> {
    if key.is_empty() {
        bail!("an empty key was given; nothing stored");
    }
    let name = provider_key_name(provider);
    with_store(home, |store| {
        store.set(&name, key.as_bytes())?;
        Ok(store.backend())
    })
}

/// Removes `provider`'s API key; `false` when none was stored. (`keys remove` and the
/// desktop face.)
pub fn remove_provider_key(home: &Home, provider: &str) -> anyhow::Result<bool> {
    let name = provider_key_name(provider);
    with_store(home, |store| Ok(store.remove(&name)?))
}

/// The store in use and each provider with a stored key, with a masked hint of it
/// ([`secrets::hint`]; "(lost: …)" when the store no longer has it). (`keys list`; the
/// desktop face shows the providers without the hints.)
pub fn provider_keys(home: &Home) -> anyhow::Result<(secrets::Backend, Vec<(String, String)>)> {
    with_store(home, |store| {
        let mut rows = Vec::new();
        for name in store.names() {
            if let Some(provider) = name.strip_prefix("provider/") {
                let hint = match store.get(&name) {
                    Ok(Some(k)) => secrets::hint(&k),
                    Ok(None) => "(missing from the store)".into(),
                    // Listed but gone from its store: say so, keep listing.
                    Err(secrets::SecretError::Lost { .. }) => {
                        "(lost: the store no longer has it; `keys set` it again)".into()
                    }
                    Err(err) => return Err(err.into()),
                };
                rows.push((provider.to_owned(), hint));
            }
        }
        Ok((store.backend(), rows))
    })
}

/// At `login`: stores the device token, and makes an identity key unless there is one.
pub fn save_login(home: &Home, token: &str) -> anyhow::Result<()> {
    with_store(home, |store| {
        store.set(DEVICE_TOKEN, token.as_bytes())?;
        // A lost identity key (its store forgot it) is replaced like a missing one:
        // logging in again is what the error told the person to do.
        let identity = match store.get(IDENTITY_KEY) {
            Err(secrets::SecretError::Lost { .. }) => None,
            other => other?,
        };
        if identity.is_none() {
            let key = aisa_crypto::IdentityKey::generate();
            store.set(IDENTITY_KEY, &Zeroizing::new(key.secret_bytes())[..])?;
        }
        Ok(())
    })
}

/// What `run` needs from the store.
pub struct RunSecrets {
    /// The device token.
    pub token: String,
    /// The identity key.
    pub identity: aisa_crypto::IdentityKey,
    /// The provider's API key, if one is stored.
    pub provider_key: Option<Zeroizing<String>>,
}

/// At `run`: the device token, the identity key and the key of `provider`.
pub fn load_for_run(home: &Home, provider: &str) -> anyhow::Result<RunSecrets> {
    with_store(home, |store| {
        let token = store
            .get(DEVICE_TOKEN)?
            .context("no device token; run `desktop-node login`")?;
        let token = String::from_utf8(token.to_vec())
            .context("the stored device token is not text")?
            .trim()
            .to_owned();
        let identity = aisa_crypto::IdentityKey::from_secret_bytes(
            &store
                .get(IDENTITY_KEY)?
                .context("no identity key; run `desktop-node login`")?,
        )?;
        let provider_key = store
            .get(&provider_key_name(provider))?
            .map(|k| String::from_utf8(k.to_vec()).map(Zeroizing::new))
            .transpose()
            .context("the stored provider key is not text")?;
        Ok(RunSecrets {
            token,
            identity,
            provider_key,
        })
    })
}
