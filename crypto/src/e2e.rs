//! End-to-end encryption of one action stream between a paired browser and a desktop.
//!
//! HPKE (RFC 9180) with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305
//! in **auth mode**: the browser encapsulates to the desktop's static identity key and
//! authenticates with its own static key (registered at pairing), so the desktop knows
//! which browser sent the request. The request is sealed with the HPKE context; the
//! streamed response is sealed in chunks under a key and base nonce derived from a
//! secret exported from that same context, as Chunked Oblivious HTTP does. The byte
//! layout is in `docs/e2e.md`; `browser-client/src/e2e/` implements the same.
//!
//! ```text
//! request  = 0x01 || enc (32) || ts (u64 BE, unix seconds) || HPKE-seal(aad = 0x01 || ts, request)
//! info     = "aisa-e2e-v1" || 0x00 || caller info
//! secret   = Export("aisa-e2e response", 32)
//! prk      = HKDF-Extract(salt = enc, secret)
//! key      = HKDF-Expand(prk, "aisa-e2e key", 32);  base = HKDF-Expand(prk, "aisa-e2e nonce", 12)
//! chunk i  = flag (0x00 more | 0x01 final) || len (u32 BE) || ChaCha20-Poly1305(key, base ^ i, aad = "" | "final", data)
//! ```
//!
//! What this module does not do: decide which browser keys are trusted (pairing does),
//! or carry the bytes (the tunnel does).

use std::collections::{HashMap, VecDeque};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305 as ChunkAead, Nonce};
use hpke::aead::{AeadCtxR, AeadCtxS, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use sha2::Sha256;
use zeroize::Zeroizing;

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = ChaCha20Poly1305;

/// The version byte that starts a sealed request.
pub const VERSION: u8 = 1;
/// Bytes of an X25519 public key, secret key, or encapsulated key.
pub const KEY_LEN: usize = 32;
/// Bytes before the ciphertext of a sealed request: version, `enc`, timestamp.
pub const REQUEST_HEADER_LEN: usize = 1 + KEY_LEN + 8;
/// Bytes a chunk adds to its data: flag, length, AEAD tag.
pub const CHUNK_OVERHEAD: usize = 1 + 4 + 16;
/// The largest chunk plaintext accepted (1 MiB).
pub const MAX_CHUNK: usize = 1 << 20;
/// How far (seconds) a request's timestamp may lie from the desktop's clock.
pub const DEFAULT_WINDOW_SECS: u64 = 120;

const INFO_LABEL: &[u8] = b"aisa-e2e-v1\0";
const EXPORT_LABEL: &[u8] = b"aisa-e2e response";
const KEY_LABEL: &[u8] = b"aisa-e2e key";
const NONCE_LABEL: &[u8] = b"aisa-e2e nonce";
const FINAL_AAD: &[u8] = b"final";
/// How many counters around the expected one are tried to tell reordering from forgery.
const REORDER_PROBE: u64 = 8;

/// Why a request or a chunk was refused. Decryption failures carry no detail beyond
/// what the receiver can honestly tell apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum E2eError {
    /// Too short, unknown version, or a length that does not match.
    #[error("malformed end-to-end message")]
    Malformed,
    /// A public or secret key that is not a valid X25519 key.
    #[error("invalid key")]
    BadKey,
    /// The request does not open: it was sealed by another browser key or for another
    /// desktop key, or altered on the way.
    #[error("the request does not authenticate (wrong key or altered)")]
    RequestRejected,
    /// The request's timestamp is outside the desktop's window.
    #[error("the request is stale (timestamp outside the window)")]
    Stale,
    /// This encapsulated key was seen before: a replay.
    #[error("the request was replayed")]
    Replayed,
    /// The replay cache is full of requests still inside the window.
    #[error("too many requests in the replay window")]
    ReplayCacheFull,
    /// A chunk that authenticates under another position of the stream.
    #[error("chunk out of order: expected {expected}, got {found}")]
    OutOfOrder {
        /// The position the receiver expected.
        expected: u64,
        /// The position the chunk was sealed for.
        found: u64,
    },
    /// A chunk that does not authenticate at any nearby position: altered, or sealed
    /// under another key.
    #[error("chunk does not authenticate (altered or wrong key)")]
    ChunkRejected,
    /// A chunk after the final one.
    #[error("data after the final chunk")]
    AfterFinal,
    /// The stream ended before its final chunk.
    #[error("the response was truncated (no final chunk)")]
    Truncated,
    /// A chunk larger than [`MAX_CHUNK`].
    #[error("chunk too large")]
    TooLarge,
}

fn public_key(bytes: &[u8; KEY_LEN]) -> Result<<Kem as hpke::Kem>::PublicKey, E2eError> {
    <Kem as hpke::Kem>::PublicKey::from_bytes(bytes).map_err(|_| E2eError::BadKey)
}

fn private_key(bytes: &[u8; KEY_LEN]) -> Result<<Kem as hpke::Kem>::PrivateKey, E2eError> {
    <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| E2eError::BadKey)
}

/// The public key of an X25519 secret key, as HPKE uses it.
pub fn public_of(secret: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], E2eError> {
    let sk = private_key(secret)?;
    Ok(<Kem as hpke::Kem>::sk_to_pk(&sk).to_bytes().into())
}

fn full_info(info: &[u8]) -> Vec<u8> {
    [INFO_LABEL, info].concat()
}

fn request_aad(ts: u64) -> [u8; 9] {
    let mut aad = [0u8; 9];
    aad[0] = VERSION;
    aad[1..].copy_from_slice(&ts.to_be_bytes());
    aad
}

/// The chunk key and base nonce, from the exporter secret and `enc`.
struct ChunkKeys {
    aead: ChunkAead,
    base: [u8; 12],
}

impl ChunkKeys {
    fn derive(exported: &[u8; 32], enc: &[u8; KEY_LEN]) -> ChunkKeys {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(enc), exported);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut base = [0u8; 12];
        // 32 and 12 bytes are far below HKDF-SHA256's 8160-byte limit.
        let _ = hk.expand(KEY_LABEL, key.as_mut());
        let _ = hk.expand(NONCE_LABEL, &mut base);
        ChunkKeys {
            aead: ChunkAead::new(&(*key).into()),
            base,
        }
    }

    fn nonce(&self, counter: u64) -> Nonce {
        let mut n = self.base;
        for (b, c) in n[4..].iter_mut().zip(counter.to_be_bytes()) {
            *b ^= c;
        }
        Nonce::from(n)
    }

    fn open(&self, counter: u64, last: bool, ct: &[u8]) -> Option<Vec<u8>> {
        let aad = if last { FINAL_AAD } else { b"" };
        let (body, tag) = ct.split_at_checked(ct.len().checked_sub(16)?)?;
        let tag = chacha20poly1305::Tag::try_from(tag).ok()?;
        let mut data = body.to_vec();
        self.aead
            .decrypt_inout_detached(&self.nonce(counter), aad, data.as_mut_slice().into(), &tag)
            .ok()?;
        Some(data)
    }
}

/// The browser's side of the response: opens chunks in order.
pub struct ResponseOpener {
    keys: ChunkKeys,
    next: u64,
    done: bool,
}

/// The desktop's side of the response: seals chunks in order.
pub struct ResponseSealer {
    keys: ChunkKeys,
    next: u64,
    done: bool,
}

impl std::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseOpener")
            .field("next", &self.next)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSealer")
            .field("next", &self.next)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ResponseSealer {
    /// Seals the next chunk; `last` marks the final one. After the final chunk nothing
    /// more may be sealed.
    pub fn seal_chunk(&mut self, data: &[u8], last: bool) -> Result<Vec<u8>, E2eError> {
        if self.done {
            return Err(E2eError::AfterFinal);
        }
        if data.len() > MAX_CHUNK {
            return Err(E2eError::TooLarge);
        }
        let aad = if last { FINAL_AAD } else { b"" };
        // One allocation: header, then the data encrypted in place, then the tag.
        let mut out = Vec::with_capacity(CHUNK_OVERHEAD + data.len());
        out.push(u8::from(last));
        out.extend_from_slice(&((data.len() + 16) as u32).to_be_bytes());
        out.extend_from_slice(data);
        let tag = self
            .keys
            .aead
            .encrypt_inout_detached(&self.keys.nonce(self.next), aad, (&mut out[5..]).into())
            .map_err(|_| E2eError::TooLarge)?;
        out.extend_from_slice(&tag);
        self.next += 1;
        self.done = last;
        Ok(out)
    }

    /// Whether the final chunk was sealed.
    pub fn is_finished(&self) -> bool {
        self.done
    }
}

/// The length of the chunk at the start of `buf`, when the whole chunk is there
/// (`Ok(None)` when more bytes are needed).
pub fn chunk_len(buf: &[u8]) -> Result<Option<usize>, E2eError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_CHUNK + 16 {
        return Err(E2eError::TooLarge);
    }
    if buf[0] > 1 || len < 16 {
        return Err(E2eError::Malformed);
    }
    Ok((buf.len() >= 5 + len).then_some(5 + len))
}

impl ResponseOpener {
    /// Opens one whole chunk (as [`ResponseSealer::seal_chunk`] made it) and returns its
    /// data and whether it was the final one.
    pub fn open_chunk(&mut self, chunk: &[u8]) -> Result<(Vec<u8>, bool), E2eError> {
        if self.done {
            return Err(E2eError::AfterFinal);
        }
        match chunk_len(chunk)? {
            Some(n) if n == chunk.len() => {}
            _ => return Err(E2eError::Malformed),
        }
        let last = chunk[0] == 1;
        let ct = &chunk[5..];
        if let Some(data) = self.keys.open(self.next, last, ct) {
            self.next += 1;
            self.done = last;
            return Ok((data, last));
        }
        // Not at this position: if it opens at a nearby one, say it was reordered.
        let lo = self.next.saturating_sub(REORDER_PROBE);
        for found in lo..self.next + REORDER_PROBE {
            if found != self.next && self.keys.open(found, last, ct).is_some() {
                return Err(E2eError::OutOfOrder {
                    expected: self.next,
                    found,
                });
            }
        }
        Err(E2eError::ChunkRejected)
    }

    /// Call at the end of the stream: refuses a response that never sent its final chunk.
    pub fn finish(&self) -> Result<(), E2eError> {
        if self.done {
            Ok(())
        } else {
            Err(E2eError::Truncated)
        }
    }

    /// Whether the final chunk arrived.
    pub fn is_finished(&self) -> bool {
        self.done
    }
}

fn response_keys<C: Exporter>(ctx: &C, enc: &[u8; KEY_LEN]) -> ChunkKeys {
    let mut exported = Zeroizing::new([0u8; 32]);
    ctx.export_into(exported.as_mut());
    ChunkKeys::derive(&exported, enc)
}

trait Exporter {
    fn export_into(&self, out: &mut [u8]);
}

impl Exporter for AeadCtxS<Aead, Kdf, Kem> {
    fn export_into(&self, out: &mut [u8]) {
        // 32 bytes is within the exporter's limit, so this cannot fail.
        let _ = self.export(EXPORT_LABEL, out);
    }
}

impl Exporter for AeadCtxR<Aead, Kdf, Kem> {
    fn export_into(&self, out: &mut [u8]) {
        let _ = self.export(EXPORT_LABEL, out);
    }
}

/// A deterministic byte source for the ephemeral key of a test vector.
struct FixedIkm([u8; 32]);

impl hpke::rand_core::TryRng for FixedIkm {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(0)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for (d, s) in dst.iter_mut().zip(self.0.iter().cycle()) {
            *d = *s;
        }
        Ok(())
    }
}

impl hpke::rand_core::TryCryptoRng for FixedIkm {}

/// The browser's side: seals `request` for the desktop key `desktop_pk`, authenticated
/// by the browser key `browser_sk`, stamped with `now_unix` (seconds). Returns the
/// sealed request and the opener for the response.
pub fn seal_request(
    desktop_pk: &[u8; KEY_LEN],
    browser_sk: &[u8; KEY_LEN],
    info: &[u8],
    request: &[u8],
    now_unix: u64,
) -> Result<(Vec<u8>, ResponseOpener), E2eError> {
    let mut ikm = Zeroizing::new([0u8; 32]);
    getrandom::fill(ikm.as_mut()).map_err(|_| E2eError::BadKey)?;
    seal_request_with_ephemeral(desktop_pk, browser_sk, info, request, now_unix, &ikm)
}

/// [`seal_request`] with the ephemeral key derived from `ikm_e` (DeriveKeyPair) instead of
/// fresh randomness. **For test vectors only**: reusing `ikm_e` breaks confidentiality.
pub fn seal_request_with_ephemeral(
    desktop_pk: &[u8; KEY_LEN],
    browser_sk: &[u8; KEY_LEN],
    info: &[u8],
    request: &[u8],
    now_unix: u64,
    ikm_e: &[u8; 32],
) -> Result<(Vec<u8>, ResponseOpener), E2eError> {
    let pk_r = public_key(desktop_pk)?;
    let sk_s = private_key(browser_sk)?;
    let pk_s = <Kem as hpke::Kem>::sk_to_pk(&sk_s);
    let mode = OpModeS::Auth((sk_s, pk_s));
    let (enc, mut ctx) = hpke::setup_sender_with_rng::<Aead, Kdf, Kem>(
        &mode,
        &pk_r,
        &full_info(info),
        &mut hpke::rand_core::UnwrapErr(FixedIkm(*ikm_e)),
    )
    .map_err(|_| E2eError::BadKey)?;
    let enc: [u8; KEY_LEN] = enc.to_bytes().into();
    let ct = ctx
        .seal(request, &request_aad(now_unix))
        .map_err(|_| E2eError::TooLarge)?;
    let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&enc);
    out.extend_from_slice(&now_unix.to_be_bytes());
    out.extend_from_slice(&ct);
    let opener = ResponseOpener {
        keys: response_keys(&ctx, &enc),
        next: 0,
        done: false,
    };
    Ok((out, opener))
}

/// The parts of a sealed request readable without keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// The encapsulated (ephemeral public) key.
    pub enc: [u8; KEY_LEN],
    /// The browser's timestamp, unix seconds.
    pub ts: u64,
}

/// Reads the clear header of a sealed request.
pub fn request_header(sealed: &[u8]) -> Result<RequestHeader, E2eError> {
    if sealed.len() < REQUEST_HEADER_LEN + 16 || sealed[0] != VERSION {
        return Err(E2eError::Malformed);
    }
    let mut enc = [0u8; KEY_LEN];
    enc.copy_from_slice(&sealed[1..1 + KEY_LEN]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&sealed[1 + KEY_LEN..REQUEST_HEADER_LEN]);
    Ok(RequestHeader {
        enc,
        ts: u64::from_be_bytes(ts),
    })
}

/// The desktop's memory of requests seen, to refuse replays: every encapsulated key
/// opened within the time window, at most `capacity` of them.
#[derive(Debug)]
pub struct ReplayGuard {
    window: u64,
    capacity: usize,
    seen: HashMap<[u8; KEY_LEN], u64>,
    order: VecDeque<([u8; KEY_LEN], u64)>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_WINDOW_SECS, 100_000)
    }
}

impl ReplayGuard {
    /// A guard accepting timestamps within `window_secs` of the clock, remembering at
    /// most `capacity` requests.
    pub fn new(window_secs: u64, capacity: usize) -> ReplayGuard {
        ReplayGuard {
            window: window_secs,
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some((enc, ts)) = self.order.front().copied() {
            // Anything older than the window can no longer pass the timestamp check.
            if ts.saturating_add(self.window) < now {
                self.order.pop_front();
                if self.seen.get(&enc) == Some(&ts) {
                    self.seen.remove(&enc);
                }
            } else {
                break;
            }
        }
    }

    fn check(&mut self, header: &RequestHeader, now: u64) -> Result<(), E2eError> {
        if header.ts.abs_diff(now) > self.window {
            return Err(E2eError::Stale);
        }
        self.expire(now);
        if self.seen.contains_key(&header.enc) {
            return Err(E2eError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(E2eError::ReplayCacheFull);
        }
        Ok(())
    }

    fn remember(&mut self, header: &RequestHeader) {
        self.seen.insert(header.enc, header.ts);
        // Kept in arrival order; timestamps within the window, so expiry stays bounded.
        self.order.push_back((header.enc, header.ts));
    }

    /// How many requests are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The desktop's side: opens a request sealed by the browser whose static public key is
/// `browser_pk`, for the desktop key `desktop_sk`; refuses stale and replayed requests
/// (`now_unix` is the desktop's clock). Returns the request and the response sealer.
pub fn open_request(
    desktop_sk: &[u8; KEY_LEN],
    browser_pk: &[u8; KEY_LEN],
    info: &[u8],
    sealed: &[u8],
    now_unix: u64,
    guard: &mut ReplayGuard,
) -> Result<(Vec<u8>, ResponseSealer), E2eError> {
    let header = request_header(sealed)?;
    guard.check(&header, now_unix)?;
    let sk_r = private_key(desktop_sk)?;
    let pk_s = public_key(browser_pk)?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&header.enc)
        .map_err(|_| E2eError::Malformed)?;
    let mut ctx =
        hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Auth(pk_s), &sk_r, &enc, &full_info(info))
            .map_err(|_| E2eError::RequestRejected)?;
    let request = ctx
        .open(&sealed[REQUEST_HEADER_LEN..], &request_aad(header.ts))
        .map_err(|_| E2eError::RequestRejected)?;
    // Only a request that authenticated is remembered, so forgeries cannot fill the cache.
    guard.remember(&header);
    let sealer = ResponseSealer {
        keys: response_keys(&ctx, &header.enc),
        next: 0,
        done: false,
    };
    Ok((request, sealer))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> ([u8; 32], [u8; 32], [u8; 32], [u8; 32]) {
        let desktop_sk = [0x11; 32];
        let browser_sk = [0x22; 32];
        (
            desktop_sk,
            public_of(&desktop_sk).unwrap(),
            browser_sk,
            public_of(&browser_sk).unwrap(),
        )
    }

    fn exchange() -> (ResponseOpener, ResponseSealer) {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, opener) = seal_request(&dpk, &bsk, b"device-1", b"run it", NOW).unwrap();
        let (request, sealer) = open_request(
            &dsk,
            &bpk,
            b"device-1",
            &sealed,
            NOW + 1,
            &mut ReplayGuard::default(),
        )
        .unwrap();
        assert_eq!(request, b"run it");
        (opener, sealer)
    }

    #[test]
    fn round_trip_request_and_chunks() {
        let (mut opener, mut sealer) = exchange();
        let a = sealer.seal_chunk(b"Echo: ", false).unwrap();
        let b = sealer.seal_chunk(b"hello", false).unwrap();
        let c = sealer.seal_chunk(b"", true).unwrap();
        assert_eq!(a.len(), 6 + CHUNK_OVERHEAD);
        assert_eq!(opener.open_chunk(&a).unwrap(), (b"Echo: ".to_vec(), false));
        assert_eq!(opener.open_chunk(&b).unwrap(), (b"hello".to_vec(), false));
        assert_eq!(opener.open_chunk(&c).unwrap(), (Vec::new(), true));
        opener.finish().unwrap();
        assert_eq!(opener.open_chunk(&a), Err(E2eError::AfterFinal));
        assert_eq!(sealer.seal_chunk(b"x", false), Err(E2eError::AfterFinal));
    }

    #[test]
    fn truncation_reordering_tampering_are_refused_distinctly() {
        let (mut opener, mut sealer) = exchange();
        let a = sealer.seal_chunk(b"one", false).unwrap();
        let b = sealer.seal_chunk(b"two", false).unwrap();
        let c = sealer.seal_chunk(b"three", true).unwrap();
        // Reordered: b first.
        assert_eq!(
            opener.open_chunk(&b),
            Err(E2eError::OutOfOrder {
                expected: 0,
                found: 1
            })
        );
        opener.open_chunk(&a).unwrap();
        // Tampered.
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(opener.open_chunk(&bad), Err(E2eError::ChunkRejected));
        // The final flag flipped: the AAD no longer matches.
        let mut flipped = b.clone();
        flipped[0] = 1;
        assert_eq!(opener.open_chunk(&flipped), Err(E2eError::ChunkRejected));
        opener.open_chunk(&b).unwrap();
        // Truncated: the stream ends before c.
        assert_eq!(opener.finish(), Err(E2eError::Truncated));
        opener.open_chunk(&c).unwrap();
        opener.finish().unwrap();
    }

    #[test]
    fn wrong_keys_are_refused() {
        let (dsk, dpk, bsk, bpk) = keys();
        let other = [0x33; 32];
        let (sealed, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let mut guard = ReplayGuard::default();
        // Another browser key than the one registered.
        assert_eq!(
            open_request(
                &dsk,
                &public_of(&other).unwrap(),
                b"i",
                &sealed,
                NOW,
                &mut guard
            )
            .unwrap_err(),
            E2eError::RequestRejected
        );
        // Another desktop key.
        assert_eq!(
            open_request(&other, &bpk, b"i", &sealed, NOW, &mut guard).unwrap_err(),
            E2eError::RequestRejected
        );
        // Other info (another device).
        assert_eq!(
            open_request(&dsk, &bpk, b"j", &sealed, NOW, &mut guard).unwrap_err(),
            E2eError::RequestRejected
        );
        // A response sealed under another stream's keys.
        let (mut opener, _) = exchange();
        let (_, mut other_sealer) = exchange();
        let chunk = other_sealer.seal_chunk(b"x", true).unwrap();
        assert_eq!(opener.open_chunk(&chunk), Err(E2eError::ChunkRejected));
        // The failed attempts were not remembered: the real one still opens.
        open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut guard).unwrap();
    }

    #[test]
    fn replay_and_stale_requests_are_refused() {
        let (dsk, dpk, bsk, bpk) = keys();
        let mut guard = ReplayGuard::new(60, 2);
        let (sealed, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut guard).unwrap();
        assert_eq!(
            open_request(&dsk, &bpk, b"i", &sealed, NOW + 5, &mut guard).unwrap_err(),
            E2eError::Replayed
        );
        // Outside the window it is stale (and so can never be replayed after expiry).
        assert_eq!(
            open_request(&dsk, &bpk, b"i", &sealed, NOW + 61, &mut guard).unwrap_err(),
            E2eError::Stale
        );
        // A changed timestamp breaks the AAD (a fresh guard, else it is a replay).
        let mut moved = sealed.clone();
        moved[1 + KEY_LEN + 7] ^= 1;
        assert_eq!(
            open_request(&dsk, &bpk, b"i", &moved, NOW, &mut ReplayGuard::default()).unwrap_err(),
            E2eError::RequestRejected
        );
        // Bounded: the cache holds two; a third inside the window is refused, and after
        // the window they expire.
        let (s2, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        open_request(&dsk, &bpk, b"i", &s2, NOW, &mut guard).unwrap();
        let (s3, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        assert_eq!(
            open_request(&dsk, &bpk, b"i", &s3, NOW, &mut guard).unwrap_err(),
            E2eError::ReplayCacheFull
        );
        let (s4, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW + 100).unwrap();
        open_request(&dsk, &bpk, b"i", &s4, NOW + 100, &mut guard).unwrap();
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn malformed_input_is_refused() {
        let (dsk, _, _, bpk) = keys();
        let mut guard = ReplayGuard::default();
        for bad in [&b""[..], &[2u8; 80][..], &[1u8; 40][..]] {
            assert_eq!(
                open_request(&dsk, &bpk, b"i", bad, NOW, &mut guard).unwrap_err(),
                E2eError::Malformed
            );
        }
        let (mut opener, _) = exchange();
        assert_eq!(opener.open_chunk(&[0, 0, 0, 0]), Err(E2eError::Malformed));
        assert_eq!(
            opener.open_chunk(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(E2eError::TooLarge)
        );
        assert_eq!(chunk_len(&[0, 0, 0, 0, 20, 1]), Ok(None));
    }
}
