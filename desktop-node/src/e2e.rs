//! End-to-end encrypted streams on the desktop: paired browsers, pairing, and opening a
//! browser's sealed request (the construction is `aisa_crypto::e2e`, `docs/e2e.md`).
//!
//! A stream is end-to-end encrypted when the browser's `OpenHeader.e2e` (forwarded by
//! the relay untouched as `RelayHeader.e2e`) is set:
//!
//! ```text
//! action:  0x01 || browser key id (8) || 0x01 || enc (32) || ts (8)
//! pairing: 0x02 || browser public key (32) || 0x01 || enc (32) || ts (8)
//! ```
//!
//! and then the first frame of the stream is the HPKE ciphertext of the request (for an
//! action, the encoded EXECUTE_ACTION/… envelope; for pairing, the JSON
//! `{"secret": "<hex of the one-time secret>", "name": "<browser name>"}`), and every
//! frame the desktop answers with is one sealed chunk holding one encoded envelope, the
//! last (STREAM_END or ERROR) sealed as the final chunk. The key id is the first 8 bytes
//! of SHA-256 of the browser's public key, hex in `browsers.json`.
//!
//! `browsers.json` in the home folder lists the paired browsers (public keys only);
//! `desktop-node pair` makes a one-time secret (kept in the secret store, valid ten
//! minutes) and `desktop-node browsers list|revoke` manage the list. The `run` process
//! reads the list for every stream, so a revocation takes effect at once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aisa_crypto::e2e::{self, ReplayGuard, ResponseSealer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Mode byte of an action stream's e2e header.
pub const MODE_ACTION: u8 = 1;
/// Mode byte of a pairing stream's e2e header.
pub const MODE_PAIR: u8 = 2;
/// How long a pairing secret is valid.
pub const PAIR_TTL_SECS: u64 = 600;
/// The name of the pending pairing secret in the secret store.
pub const PAIR_SECRET: &str = "pair-secret";

const BROWSERS_FILE: &str = "browsers.json";
const PAIRING_FILE: &str = "pairing.json";

/// `[e2e]` in `node.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct E2eConfig {
    /// Refuse actions that are not end-to-end encrypted. Default off (each hop is still TLS).
    pub required: bool,
}

/// Why an encrypted stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum E2eRefusal {
    /// The e2e header is not one this node understands.
    #[error("malformed end-to-end header")]
    Malformed,
    /// The browser's key is not (or no longer) paired with this desktop.
    #[error("this browser is not paired with this desktop (or was revoked); pair it again")]
    NotPaired,
    /// No pairing is pending, it expired, or the secret does not match.
    #[error(
        "the pairing link is not valid (expired, used, or wrong); run `desktop-node pair` again"
    )]
    BadPairing,
    /// The sealed request did not open, was stale, or replayed.
    #[error("{0}")]
    Crypto(#[from] e2e::E2eError),
    /// `browsers.json` could not be read or written.
    #[error("browsers.json: {0}")]
    Store(String),
}

/// One paired browser.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Browser {
    /// First 8 bytes of SHA-256 of the public key, hex.
    pub id: String,
    /// What the browser called itself at pairing.
    pub name: String,
    /// Its X25519 public key, hex.
    pub public_key: String,
    /// When it was paired, unix seconds.
    pub paired_at: u64,
    /// Revoked browsers stay listed, refused.
    #[serde(default)]
    pub revoked: bool,
}

/// The key id of a browser public key.
pub fn key_id(public_key: &[u8; 32]) -> [u8; 8] {
    let digest = Sha256::digest(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads `browsers.json` (empty when there is none).
pub fn load_browsers(home: &Path) -> Result<Vec<Browser>, E2eRefusal> {
    match std::fs::read(home.join(BROWSERS_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| E2eRefusal::Store(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(E2eRefusal::Store(e.to_string())),
    }
}

/// Writes `browsers.json`.
pub fn save_browsers(home: &Path, browsers: &[Browser]) -> Result<(), E2eRefusal> {
    let text = serde_json::to_vec_pretty(browsers).map_err(|e| E2eRefusal::Store(e.to_string()))?;
    let tmp = home.join("browsers.json.tmp");
    std::fs::write(&tmp, text).map_err(|e| E2eRefusal::Store(e.to_string()))?;
    std::fs::rename(&tmp, home.join(BROWSERS_FILE)).map_err(|e| E2eRefusal::Store(e.to_string()))
}

/// Marks the browser `id` (or a unique prefix of it) revoked; returns its name.
pub fn revoke(home: &Path, id: &str) -> Result<String, E2eRefusal> {
    let mut browsers = load_browsers(home)?;
    let matching: Vec<usize> = browsers
        .iter()
        .enumerate()
        .filter(|(_, b)| !id.is_empty() && b.id.starts_with(id))
        .map(|(i, _)| i)
        .collect();
    let [i] = matching[..] else {
        return Err(E2eRefusal::Store(format!(
            "{} browsers match {id:?}",
            matching.len()
        )));
    };
    browsers[i].revoked = true;
    let name = browsers[i].name.clone();
    save_browsers(home, &browsers)?;
    Ok(name)
}

/// `pairing.json`: when the pending secret expires (the secret is in the secret store).
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingPairing {
    /// Unix seconds.
    pub expires: u64,
}

/// Records a pending pairing that expires at `expires`.
pub fn save_pending(home: &Path, expires: u64) -> Result<(), E2eRefusal> {
    let text = serde_json::to_vec(&PendingPairing { expires })
        .map_err(|e| E2eRefusal::Store(e.to_string()))?;
    std::fs::write(home.join(PAIRING_FILE), text).map_err(|e| E2eRefusal::Store(e.to_string()))
}

fn pending_expiry(home: &Path) -> Option<u64> {
    let bytes = std::fs::read(home.join(PAIRING_FILE)).ok()?;
    serde_json::from_slice::<PendingPairing>(&bytes)
        .ok()
        .map(|p| p.expires)
}

/// The pairing link: the web app's URL with a fragment (never sent to any server) that
/// carries the device id, the desktop's public key and the one-time secret.
pub fn pairing_link(
    web_url: &str,
    device_id: &str,
    desktop_pk: &[u8; 32],
    secret: &[u8],
) -> String {
    format!(
        "{}/#pair={device_id}.{}.{}",
        web_url.trim_end_matches('/'),
        hex::encode(desktop_pk),
        hex::encode(secret)
    )
}

/// What a `run` process needs to serve encrypted streams.
pub struct E2eState {
    identity_secret: Zeroizing<[u8; 32]>,
    /// Whether plain actions are refused.
    pub required: bool,
    home: PathBuf,
    device_id: String,
    guard: Mutex<ReplayGuard>,
    pair_secret: PairSecretSource,
    pairing: Mutex<()>,
}

/// Reads the pending pairing secret (from the secret store) when a pairing arrives.
pub type PairSecretSource = Box<dyn Fn() -> Option<Zeroizing<Vec<u8>>> + Send + Sync>;

impl std::fmt::Debug for E2eState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eState")
            .field("required", &self.required)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// An opened encrypted request.
pub struct Opened {
    /// The plaintext (an encoded envelope for actions).
    pub request: Vec<u8>,
    /// Seals the answer.
    pub sealer: ResponseSealer,
    /// Which browser sent it.
    pub browser: Browser,
    /// Whether this was a pairing request (already handled: the browser is registered).
    pub paired: bool,
}

impl E2eState {
    /// State for the node with this identity secret, home and device id. `pair_secret`
    /// reads the secret `desktop-node pair` left in the store (it runs in another
    /// process), when a pairing request arrives.
    pub fn new(
        identity_secret: Zeroizing<[u8; 32]>,
        required: bool,
        home: PathBuf,
        device_id: String,
        pair_secret: PairSecretSource,
    ) -> E2eState {
        E2eState {
            identity_secret,
            required,
            home,
            device_id,
            guard: Mutex::new(ReplayGuard::default()),
            pair_secret,
            pairing: Mutex::new(()),
        }
    }

    /// Opens the request of an encrypted stream: `header` is `RelayHeader.e2e`, `ct` the
    /// stream's first frame. A pairing request registers the browser here.
    pub fn open(&self, header: &[u8], ct: &[u8]) -> Result<Opened, E2eRefusal> {
        let (mode, rest) = header.split_first().ok_or(E2eRefusal::Malformed)?;
        let (browser, hpke_header) = match *mode {
            MODE_ACTION => {
                let (id, hpke_header) = rest.split_at_checked(8).ok_or(E2eRefusal::Malformed)?;
                let id = hex::encode(id);
                let browser = load_browsers(&self.home)?
                    .into_iter()
                    .find(|b| b.id == id && !b.revoked)
                    .ok_or(E2eRefusal::NotPaired)?;
                (browser, hpke_header)
            }
            MODE_PAIR => {
                let (pk, hpke_header) = rest.split_at_checked(32).ok_or(E2eRefusal::Malformed)?;
                let pk: [u8; 32] = pk.try_into().map_err(|_| E2eRefusal::Malformed)?;
                let browser = Browser {
                    id: hex::encode(key_id(&pk)),
                    name: String::new(),
                    public_key: hex::encode(pk),
                    paired_at: now_unix(),
                    revoked: false,
                };
                (browser, hpke_header)
            }
            _ => return Err(E2eRefusal::Malformed),
        };
        if hpke_header.len() != e2e::REQUEST_HEADER_LEN {
            return Err(E2eRefusal::Malformed);
        }
        let browser_pk: [u8; 32] = hex::decode(&browser.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(E2eRefusal::Malformed)?;
        let sealed = [hpke_header, ct].concat();
        let (request, sealer) = {
            let mut guard = self
                .guard
                .lock()
                .map_err(|_| E2eRefusal::Store("replay memory poisoned".into()))?;
            e2e::open_request(
                &self.identity_secret,
                &browser_pk,
                self.device_id.as_bytes(),
                &sealed,
                now_unix(),
                &mut guard,
            )?
        };
        if *mode == MODE_PAIR {
            let browser = self.register(browser, &request)?;
            return Ok(Opened {
                request,
                sealer,
                browser,
                paired: true,
            });
        }
        Ok(Opened {
            request,
            sealer,
            browser,
            paired: false,
        })
    }

    fn register(&self, mut browser: Browser, request: &[u8]) -> Result<Browser, E2eRefusal> {
        #[derive(Deserialize)]
        struct PairRequest {
            secret: String,
            #[serde(default)]
            name: String,
        }
        let req: PairRequest =
            serde_json::from_slice(request).map_err(|_| E2eRefusal::BadPairing)?;
        let given = Zeroizing::new(hex::decode(&req.secret).map_err(|_| E2eRefusal::BadPairing)?);
        let _one_at_a_time = self
            .pairing
            .lock()
            .map_err(|_| E2eRefusal::Store("pairing state poisoned".into()))?;
        let expires = pending_expiry(&self.home).unwrap_or(0);
        let secret = if expires >= now_unix() {
            (self.pair_secret)()
        } else {
            None
        };
        let ok = match secret.as_ref() {
            Some(secret) => {
                expires >= now_unix()
                    && secret.len() == given.len()
                    && secret
                        .iter()
                        .zip(given.iter())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            None => false,
        };
        if !ok {
            return Err(E2eRefusal::BadPairing);
        }
        // One time only: without pairing.json the secret is void.
        std::fs::remove_file(self.home.join(PAIRING_FILE))
            .map_err(|e| E2eRefusal::Store(e.to_string()))?;
        browser.name = req.name.chars().take(64).collect();
        let mut browsers = load_browsers(&self.home)?;
        browsers.retain(|b| b.id != browser.id);
        browsers.push(browser.clone());
        save_browsers(&self.home, &browsers)?;
        tracing::info!(browser = %browser.id, name = %browser.name, "browser paired");
        Ok(browser)
    }
}
