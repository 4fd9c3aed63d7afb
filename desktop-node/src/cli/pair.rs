//! `desktop-node pair` and `desktop-node browsers list|revoke`: which browsers may send
//! this desktop end-to-end encrypted actions (see `aisa_node::e2e`).

use aisa_node::config::Home;
use aisa_node::e2e::{self, PAIR_SECRET, PAIR_TTL_SECS};
use aisa_node::secrets::{IDENTITY_KEY, Zeroizing};
use anyhow::Context;
use clap::Subcommand;

use crate::cli::keys;

/// `desktop-node browsers …`
#[derive(Subcommand)]
pub enum BrowsersCommand {
    /// List the paired browsers.
    List,
    /// Revoke a paired browser: its encrypted actions are refused from now on.
    Revoke {
        /// The browser's id (or a unique prefix of it), as `browsers list` shows it.
        id: String,
    },
}

/// A new one-time pairing link (it voids the previous one).
pub struct Pairing {
    /// The link: the web app's URL with the device id, the desktop's public key and the
    /// one-time secret in its fragment.
    pub link: String,
    /// The desktop key's fingerprint, for the person to compare in the browser.
    pub fingerprint: String,
    /// How many minutes the link stays valid.
    pub minutes: u64,
}

/// `desktop-node pair`: a one-time link (and QR code) for a browser to pair with.
pub fn pair(home: &Home) -> anyhow::Result<()> {
    let pairing = new_pairing(home)?;
    let qr =
        qrcode::QrCode::new(pairing.link.as_bytes()).context("the link does not fit a QR code")?;
    let image = qr
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build();
    println!("{image}");
    println!(
        "Open this link in the browser to pair (valid {} minutes, once):",
        pairing.minutes
    );
    println!("{}", pairing.link);
    println!("desktop key fingerprint: {}", pairing.fingerprint);
    Ok(())
}

/// Makes a new one-time pairing secret (only its hash is kept, in `pairing.json`) and
/// the link that carries it. (`desktop-node pair` and the desktop face.)
pub fn new_pairing(home: &Home) -> anyhow::Result<Pairing> {
    let config = home.load_config().map_err(anyhow::Error::msg)?;
    let mut secret = Zeroizing::new(vec![0u8; 16]);
    getrandom::fill(&mut secret).context("no randomness")?;
    let desktop_pk = keys::with_store(home, |store| {
        let identity = store
            .get(IDENTITY_KEY)?
            .context("no identity key; run `desktop-node login`")?;
        let identity = aisa_crypto::IdentityKey::from_secret_bytes(&identity)?;
        // Older versions kept the pending secret here; pairing.json replaces it. (Only
        // written to when there is one: the store is shared with a running node.)
        if store.names().iter().any(|n| n == PAIR_SECRET) {
            let _ = store.remove(PAIR_SECRET);
        }
        Ok(identity.public_bytes())
    })?;
    let expires = e2e::now_unix() + PAIR_TTL_SECS;
    // Only the secret's hash is kept (pairing.json); a new link voids the previous one.
    e2e::save_pending(home.dir(), &secret, expires)?;
    let link = e2e::pairing_link(&config.relay_url, &config.device_id, &desktop_pk, &secret);
    Ok(Pairing {
        link,
        fingerprint: aisa_crypto::fingerprint(&desktop_pk),
        minutes: PAIR_TTL_SECS / 60,
    })
}

/// Runs a `browsers` subcommand.
pub fn browsers(home: &Home, cmd: BrowsersCommand) -> anyhow::Result<()> {
    match cmd {
        BrowsersCommand::List => {
            let browsers = e2e::load_browsers(home.dir())?;
            if browsers.is_empty() {
                println!("no paired browsers; pair one with `desktop-node pair`");
            }
            for b in browsers {
                let pk: [u8; 32] = hex::decode(&b.public_key)
                    .ok()
                    .and_then(|k| k.try_into().ok())
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\t{}",
                    b.id,
                    if b.revoked { "revoked" } else { "active" },
                    if b.name.is_empty() {
                        "(no name)"
                    } else {
                        &b.name
                    },
                    aisa_crypto::fingerprint(&pk)
                );
            }
        }
        BrowsersCommand::Revoke { id } => {
            let name = e2e::revoke(home.dir(), &id)?;
            println!("revoked {id} ({name}); its actions are refused from now on");
        }
    }
    Ok(())
}
