//! End-to-end encrypted streams on the desktop: paired browsers, pairing, and opening a
//! browser's sealed request (the construction is `aisa_crypto::e2e`, `docs/e2e.md`).
//!
//! A stream is end-to-end encrypted when the browser's `OpenHeader.e2e` (forwarded by
//! the relay untouched as `RelayHeader.e2e`) is set:
//!
//! ```text
//! action:  0x01 || browser key id (8) || 0x02 || enc (32) || ts (8)
//! pairing: 0x02 || browser public key (32) || 0x02 || enc (32) || ts (8)
//! ```
//!
//! and then the first frame of the stream is the HPKE ciphertext of the request (for an
//! action, the encoded EXECUTE_ACTION/… envelope; for pairing, the JSON
//! `{"secret": "<hex of the one-time secret>", "name": "<browser name>"}`); any later
//! frame from the browser is a sealed control message (CANCEL). The desktop answers with
//! the responder-nonce frame, then one sealed chunk per encoded envelope, the last
//! (STREAM_END, ERROR or DEVICE_STATUS) sealed as the final chunk. The key id is the
//! first 8 bytes of SHA-256 of the browser's public key, hex in `browsers.json`.
//!
//! In the home folder: `browsers.json` lists the paired browsers (public keys only);
//! `pairing.json` holds the pending pairing (`desktop-node pair` writes the SHA-256 of a
//! fresh one-time secret and its expiry, ten minutes; a pairing consumes it, a new `pair`
//! replaces it); `e2e-replay.bin` the requests seen within the replay window, so that a
//! restart does not forget them. The `run` process reads the browser list for every
//! stream, so a revocation takes effect at once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aisa_crypto::e2e::{self, ControlOpener, ReplayGuard, ResponseSealer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Mode byte of an action stream's e2e header.
pub const MODE_ACTION: u8 = 1;
/// Mode byte of a pairing stream's e2e header.
pub const MODE_PAIR: u8 = 2;
/// How long a pairing secret is valid.
pub const PAIR_TTL_SECS: u64 = 600;
/// The name under which older versions kept the pending pairing secret in the secret
/// store (now only removed: `pairing.json` holds the secret's hash).
pub const PAIR_SECRET: &str = "pair-secret";

const BROWSERS_FILE: &str = "browsers.json";
const PAIRING_FILE: &str = "pairing.json";
/// The requests seen within the replay window: records of `enc` (32) || ts (u64 BE).
pub const REPLAY_FILE: &str = "e2e-replay.bin";
const REPLAY_RECORD: usize = 32 + 8;

/// `[e2e]` in `node.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct E2eConfig {
    /// Refuse every browser request that is not end-to-end encrypted (actions, status,
    /// installs, uninstalls). Default off (each hop is still TLS).
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
    /// A pairing on a stream of another kind than `Control` (refused before the pairing
    /// secret is looked at, so it is not spent).
    #[error("pairing must be sent on a stream of kind Control")]
    WrongKind,
    /// The sealed request did not open, was stale, or replayed.
    #[error("{0}")]
    Crypto(#[from] e2e::E2eError),
    /// `browsers.json`, `pairing.json` or the replay memory could not be read or written.
    #[error("the desktop's end-to-end state: {0}")]
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

/// `pairing.json`: the pending pairing, one at a time.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingPairing {
    /// When it expires, unix seconds.
    pub expires: u64,
    /// SHA-256 of the one-time secret, hex. (Files of older versions have none: void.)
    #[serde(default)]
    pub secret_sha256: String,
}

/// Records a pending pairing for `secret` that expires at `expires`, replacing any other
/// (whose link stops working at once). Only the secret's SHA-256 is written.
pub fn save_pending(home: &Path, secret: &[u8], expires: u64) -> Result<(), E2eRefusal> {
    let pending = PendingPairing {
        expires,
        secret_sha256: hex::encode(Sha256::digest(secret)),
    };
    let text = serde_json::to_vec(&pending).map_err(|e| E2eRefusal::Store(e.to_string()))?;
    let tmp = home.join("pairing.json.tmp");
    std::fs::write(&tmp, text).map_err(|e| E2eRefusal::Store(e.to_string()))?;
    std::fs::rename(&tmp, home.join(PAIRING_FILE)).map_err(|e| E2eRefusal::Store(e.to_string()))
}

fn load_pending(home: &Path) -> Option<PendingPairing> {
    let bytes = std::fs::read(home.join(PAIRING_FILE)).ok()?;
    serde_json::from_slice::<PendingPairing>(&bytes).ok()
}

/// Whether `given` is the pending pairing's secret and the pairing has not expired.
fn pending_matches(pending: &PendingPairing, given: &[u8], now: u64) -> bool {
    let Ok(expected) = hex::decode(&pending.secret_sha256) else {
        return false;
    };
    let digest = Sha256::digest(given);
    expected.len() == digest.len()
        && pending.expires >= now
        && expected
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
    /// The identity key, ready to open requests: its public key and each paired
    /// browser's static Diffie-Hellman computed once (`aisa_crypto::e2e::Recipient`).
    recipient: e2e::Recipient,
    /// Whether plain requests are refused.
    pub required: bool,
    home: PathBuf,
    device_id: String,
    replay: Mutex<Replay>,
    pairing: Mutex<()>,
}

impl std::fmt::Debug for E2eState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eState")
            .field("required", &self.required)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// The replay memory and its file (`e2e-replay.bin`): every request that opened is
/// appended (and synced) before it is served, and the file is read back at start, so a
/// request replayed after a restart is still refused.
struct Replay {
    guard: ReplayGuard,
    path: PathBuf,
    file: Option<std::fs::File>,
    records: usize,
}

impl Replay {
    /// Loads the records of an earlier run; on a file it cannot read, refuses every
    /// request stamped before the end of the window that starts now (it cannot know
    /// which of those it saw).
    fn load(home: &Path, now: u64) -> Replay {
        let path = home.join(REPLAY_FILE);
        let mut guard = ReplayGuard::default();
        match std::fs::read(&path) {
            Ok(bytes) => {
                // A record cut short by a crash is ignored (it was never acknowledged).
                let (records, _cut_short) = bytes.as_chunks::<REPLAY_RECORD>();
                for record in records {
                    let mut enc = [0u8; 32];
                    enc.copy_from_slice(&record[..32]);
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&record[32..]);
                    guard.restore(enc, u64::from_be_bytes(ts), now);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(%e, path = %path.display(), "cannot read the replay memory; refusing encrypted requests stamped before the window ends");
                guard.refuse_before(now + guard.window() + 1);
            }
        }
        let mut replay = Replay {
            guard,
            path,
            file: None,
            records: 0,
        };
        if let Err(e) = replay.rewrite() {
            tracing::warn!(%e, "cannot write the replay memory; encrypted requests will be refused");
        }
        replay
    }

    /// Writes the live records afresh (dropping expired ones) and reopens for appending.
    fn rewrite(&mut self) -> std::io::Result<()> {
        self.file = None;
        let mut bytes = Vec::with_capacity(self.guard.len() * REPLAY_RECORD);
        for (enc, ts) in self.guard.entries() {
            bytes.extend_from_slice(&enc);
            bytes.extend_from_slice(&ts.to_be_bytes());
        }
        let tmp = self.path.with_extension("bin.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.records = bytes.len() / REPLAY_RECORD;
        self.file = Some(std::fs::OpenOptions::new().append(true).open(&self.path)?);
        Ok(())
    }

    /// Appends one request's record and syncs it to disk.
    fn record(&mut self, header: &e2e::RequestHeader) -> std::io::Result<()> {
        if self.records > 2 * self.guard.len() + 4096 || self.file.is_none() {
            self.rewrite()?;
        }
        let mut record = [0u8; REPLAY_RECORD];
        record[..32].copy_from_slice(&header.enc);
        record[32..].copy_from_slice(&header.ts.to_be_bytes());
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no replay file"))?;
        file.write_all(&record)?;
        file.sync_data()?;
        self.records += 1;
        Ok(())
    }
}

/// The keys of one encrypted stream on the desktop: seals every answer frame, and opens
/// the browser's later, sealed messages (CANCEL) until they are taken.
pub struct Sealing {
    sealer: ResponseSealer,
    controls: Option<ControlOpener>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing").finish_non_exhaustive()
    }
}

impl Sealing {
    /// Seals one encoded envelope as the next frame body (the first carries the responder
    /// nonce); `last` for the final one.
    pub fn seal_chunk(&mut self, plain: &[u8], last: bool) -> Result<Vec<u8>, e2e::E2eError> {
        self.sealer.seal_chunk(plain, last)
    }

    /// Seals one encoded envelope as the next chunk and appends it to `out` as a whole
    /// tunnel frame (length prefix included), to write as is.
    pub fn seal_chunk_into(
        &mut self,
        out: &mut Vec<u8>,
        plain: &[u8],
        last: bool,
    ) -> Result<(), e2e::E2eError> {
        self.sealer.seal_chunk_into(out, plain, last)
    }

    /// The opener of the browser's control messages (once).
    pub fn take_controls(&mut self) -> Option<ControlOpener> {
        self.controls.take()
    }
}

/// Completes when the browser sends CANCEL or its side of the stream fails (with the
/// reason, for the log); a clean finish of the browser's side is not a cancel (it has
/// nothing more to say), so then this never completes. On a plain stream a plain CANCEL
/// counts; on an encrypted one (`controls`) only a sealed CANCEL does, and a frame that
/// does not open (such as a plain CANCEL the relay could have injected) is ignored.
pub async fn watch_for_cancel<R>(recv: &mut R, controls: &mut Option<ControlOpener>) -> &'static str
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
{
    loop {
        match aisa_tunnel::io::read_frame(recv, aisa_tunnel::MAX_FRAME_LEN).await {
            Ok(Some(body)) => {
                let envelope = match controls.as_mut() {
                    Some(controls) => E2eState::open_control(controls, &body),
                    None => aisa_tunnel::Envelope::decode(&body).ok(),
                };
                if let Some(aisa_tunnel::Envelope {
                    body: aisa_tunnel::Body::Cancel,
                    ..
                }) = envelope
                {
                    return "cancel requested";
                }
            }
            Ok(None) => std::future::pending::<()>().await,
            Err(_) => return "the browser went away",
        }
    }
}

/// An opened encrypted request.
pub struct Opened {
    /// The plaintext (an encoded envelope for actions).
    pub request: Vec<u8>,
    /// Seals the answer and opens the browser's control messages.
    pub sealer: Sealing,
    /// Which browser sent it.
    pub browser: Browser,
    /// Whether this was a pairing request (already handled: the browser is registered).
    pub paired: bool,
}

impl E2eState {
    /// State for the node with this identity secret, home and device id. Reads back the
    /// replay memory of earlier runs (`e2e-replay.bin`). Pairings are checked against
    /// `pairing.json`, the same on every secret backend.
    pub fn new(
        identity_secret: Zeroizing<[u8; 32]>,
        required: bool,
        home: PathBuf,
        device_id: String,
    ) -> E2eState {
        let replay = Replay::load(&home, now_unix());
        E2eState {
            recipient: e2e::Recipient::new(&identity_secret),
            required,
            home,
            device_id,
            replay: Mutex::new(replay),
            pairing: Mutex::new(()),
        }
    }

    /// Opens the request of an encrypted stream of `kind`: `header` is `RelayHeader.e2e`,
    /// `ct` the stream's first frame. A pairing request (only on a `Control` stream)
    /// registers the browser here.
    pub fn open(
        &self,
        kind: aisa_tunnel::StreamKind,
        header: &[u8],
        ct: &[u8],
    ) -> Result<Opened, E2eRefusal> {
        let (mode, rest) = header.split_first().ok_or(E2eRefusal::Malformed)?;
        if *mode == MODE_PAIR && kind != aisa_tunnel::StreamKind::Control {
            return Err(E2eRefusal::WrongKind);
        }
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
        let opened = {
            let mut replay = self
                .replay
                .lock()
                .map_err(|_| E2eRefusal::Store("replay memory poisoned".into()))?;
            let opened = self.recipient.open_request(
                &browser_pk,
                self.device_id.as_bytes(),
                &sealed,
                now_unix(),
                &mut replay.guard,
            )?;
            // On disk before it is served, so that a restart still refuses its replay.
            replay.record(&opened.header).map_err(|e| {
                tracing::warn!(%e, "cannot record an encrypted request in the replay memory");
                E2eRefusal::Store(format!("cannot record the request: {e}"))
            })?;
            opened
        };
        let paired = *mode == MODE_PAIR;
        let browser = if paired {
            self.register(browser, &opened.request)?
        } else {
            browser
        };
        Ok(Opened {
            request: opened.request,
            sealer: Sealing {
                sealer: opened.sealer,
                controls: Some(opened.controls),
            },
            browser,
            paired,
        })
    }

    /// Opens the browser's sealed control message on an encrypted stream; `None` when it
    /// does not open or is not an envelope (a plain CANCEL the relay could have injected).
    pub fn open_control(
        controls: &mut ControlOpener,
        frame: &[u8],
    ) -> Option<aisa_tunnel::Envelope> {
        match controls.open(frame) {
            Ok(plain) => aisa_tunnel::Envelope::decode(&plain).ok(),
            Err(e) => {
                tracing::warn!(%e, "ignored a control frame that is not sealed for this stream");
                None
            }
        }
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
        let pending = load_pending(&self.home).ok_or(E2eRefusal::BadPairing)?;
        if !pending_matches(&pending, &given, now_unix()) {
            return Err(E2eRefusal::BadPairing);
        }
        // One time only: removing pairing.json voids the secret, whatever the backend of
        // the secret store. Whoever removes it first is the one pairing.
        std::fs::remove_file(self.home.join(PAIRING_FILE)).map_err(|_| E2eRefusal::BadPairing)?;
        browser.name = req.name.chars().take(64).collect();
        let mut browsers = load_browsers(&self.home)?;
        browsers.retain(|b| b.id != browser.id);
        browsers.push(browser.clone());
        save_browsers(&self.home, &browsers)?;
        tracing::info!(browser = %browser.id, name = %browser.name, "browser paired");
        Ok(browser)
    }
}
