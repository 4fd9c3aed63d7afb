//! End-to-end encryption of one action stream between a paired browser and a desktop.
//!
//! HPKE (RFC 9180) with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305
//! in **auth mode**: the browser encapsulates to the desktop's static identity key and
//! authenticates with its own static key (registered at pairing), so the desktop knows
//! which browser sent the request. The request, and any later control message from the
//! browser (CANCEL), are sealed with the HPKE context; the streamed response is sealed in
//! chunks under a key and base nonce derived from a secret exported from that same
//! context and a random responder nonce, as Chunked Oblivious HTTP does (RFC 9458 §4.4,
//! draft-ietf-ohai-chunked-ohttp). The byte layout is in `docs/e2e.md`;
//! `browser-client/src/e2e/` implements the same.
//!
//! ```text
//! request  = 0x02 || enc (32) || ts (u64 BE, unix seconds) || HPKE-seal(aad = 0x02 || ts, request)
//! info     = "aisa-e2e-v2" || 0x00 || caller info
//! control  = HPKE-seal(aad = "control", message)            (HPKE sequence 1, 2, …)
//! secret   = Export("aisa-e2e response", 32);  response_nonce = random(32)
//! prk      = HKDF-Extract(salt = enc || response_nonce, secret)
//! key      = HKDF-Expand(prk, "aisa-e2e key", 32);  base = HKDF-Expand(prk, "aisa-e2e nonce", 12)
//! chunk i  = type (0x02 more | 0x03 final) || len (u32 BE) || ChaCha20-Poly1305(key, base ^ i, aad = "" | "final", data)
//! frames   = 0x01 || response_nonce || chunk 0, then chunk 1, 2, … (one per frame)
//! plain    = 0x00 … (an envelope with request id 0): a refusal, only as the first frame
//! ```
//!
//! What this module does not do: decide which browser keys are trusted (pairing does),
//! or carry the bytes (the tunnel does).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hpke::aead::{AeadCtxS, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeS, Serializable};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use sha2::Sha256;
use zeroize::Zeroizing;

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = ChaCha20Poly1305;

/// The version byte that starts a sealed request.
pub const VERSION: u8 = 2;
/// Bytes of an X25519 public key, secret key, or encapsulated key.
pub const KEY_LEN: usize = 32;
/// Bytes before the ciphertext of a sealed request: version, `enc`, timestamp.
pub const REQUEST_HEADER_LEN: usize = 1 + KEY_LEN + 8;
/// Bytes of the responder's random nonce: max(Nn, Nk) of ChaCha20-Poly1305, as RFC 9458.
pub const RESPONSE_NONCE_LEN: usize = 32;
/// Bytes a chunk adds to its data: type, length, AEAD tag.
pub const CHUNK_OVERHEAD: usize = 1 + 4 + 16;
/// Bytes the first sealed frame carries before its chunk: type, responder nonce.
pub const START_OVERHEAD: usize = 1 + RESPONSE_NONCE_LEN;
/// The largest frame body a tunnel peer accepts (`aisa_tunnel::MAX_FRAME_LEN`, 1 MiB).
pub const MAX_FRAME: usize = 1 << 20;
/// The largest chunk plaintext: any sealed frame, the first included, fits [`MAX_FRAME`].
pub const MAX_CHUNK: usize = MAX_FRAME - START_OVERHEAD - CHUNK_OVERHEAD;
/// How far (seconds) a request's timestamp may lie from the desktop's clock.
pub const DEFAULT_WINDOW_SECS: u64 = 120;

/// First byte of a frame the desktop sends on an encrypted stream: a plain envelope (a
/// refusal; envelopes on these streams have request id 0, whose encoding is this byte).
pub const FRAME_PLAIN: u8 = 0x00;
/// First byte of the first sealed frame: the responder's nonce, then chunk 0.
pub const FRAME_START: u8 = 0x01;
/// First byte of a sealed chunk after which more follow.
pub const FRAME_CHUNK: u8 = 0x02;
/// First byte of the final sealed chunk.
pub const FRAME_FINAL: u8 = 0x03;

const INFO_LABEL: &[u8] = b"aisa-e2e-v2\0";
const EXPORT_LABEL: &[u8] = b"aisa-e2e response";
const KEY_LABEL: &[u8] = b"aisa-e2e key";
const NONCE_LABEL: &[u8] = b"aisa-e2e nonce";
const FINAL_AAD: &[u8] = b"final";
const CONTROL_AAD: &[u8] = b"control";
/// How many counters around the expected one are tried to tell reordering from forgery.
const REORDER_PROBE: u64 = 8;

/// Why a request or a chunk was refused. Decryption failures carry no detail beyond
/// what the receiver can honestly tell apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum E2eError {
    /// Too short, unknown version or frame type, or a length that does not match.
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
    /// A plain frame after the sealed response began: injected on the way.
    #[error("a plain frame inside the sealed response (injected on the way)")]
    Unsealed,
    /// A control message from the browser that does not open.
    #[error("the control message does not authenticate")]
    ControlRejected,
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

/// The chunk key and base nonce, from the exporter secret, `enc` and the response nonce.
///
/// The chunks' ChaCha20-Poly1305 is `ring`'s (assembly): several times faster per
/// message than the portable `chacha20poly1305` crate, and the same bytes on the wire.
struct ChunkKeys {
    aead: LessSafeKey,
    base: [u8; 12],
}

impl ChunkKeys {
    fn derive(
        exported: &[u8; 32],
        enc: &[u8; KEY_LEN],
        response_nonce: &[u8; RESPONSE_NONCE_LEN],
    ) -> ChunkKeys {
        // Plain RFC 5869 HKDF-SHA256 (not HPKE's labelled LabeledExtract/LabeledExpand).
        let salt = [&enc[..], &response_nonce[..]].concat();
        let hk = hkdf::Hkdf::<Sha256>::new(Some(&salt), exported);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut base = [0u8; 12];
        // 32 and 12 bytes are far below HKDF-SHA256's 8160-byte limit.
        let _ = hk.expand(KEY_LABEL, key.as_mut());
        let _ = hk.expand(NONCE_LABEL, &mut base);
        // A 32-byte key is exactly what ChaCha20-Poly1305 takes.
        let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, key.as_ref()) else {
            unreachable!("ChaCha20-Poly1305 keys are 32 bytes")
        };
        ChunkKeys {
            aead: LessSafeKey::new(unbound),
            base,
        }
    }

    fn nonce(&self, counter: u64) -> Nonce {
        let mut n = self.base;
        for (b, c) in n[4..].iter_mut().zip(counter.to_be_bytes()) {
            *b ^= c;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Opens `ct` (data then tag) in place; the data on success. On failure `ct` is left
    /// unspecified (ring clears it).
    fn open_in_place<'b>(
        &self,
        counter: u64,
        last: bool,
        ct: &'b mut [u8],
    ) -> Option<&'b mut [u8]> {
        let aad = if last { FINAL_AAD } else { b"" };
        let at = ct.len().checked_sub(16)?;
        let (body, tag) = ct.split_at_mut(at);
        let tag = Tag::try_from(&tag[..]).ok()?;
        self.aead
            .open_in_place_separate_tag(self.nonce(counter), Aad::from(aad), tag, body, 0..)
            .ok()?;
        Some(body)
    }

    /// Whether `ct` opens at `counter`, leaving `ct` as it was (on a copy).
    fn opens_at(&self, counter: u64, last: bool, ct: &[u8]) -> bool {
        self.open_in_place(counter, last, &mut ct.to_vec())
            .is_some()
    }
}

/// The browser's side of one stream: seals control messages (CANCEL) to the desktop and
/// opens the desktop's response frames in order.
pub struct ResponseOpener {
    ctx: AeadCtxS<Aead, Kdf, Kem>,
    secret: Zeroizing<[u8; 32]>,
    enc: [u8; KEY_LEN],
    keys: Option<ChunkKeys>,
    next: u64,
    done: bool,
}

/// The desktop's side of the response: seals chunks in order, the first one preceded by
/// the responder's nonce.
pub struct ResponseSealer {
    keys: ChunkKeys,
    response_nonce: [u8; RESPONSE_NONCE_LEN],
    next: u64,
    done: bool,
}

/// The desktop's side of the browser's later messages on a stream: opens sealed control
/// messages (CANCEL) in order.
pub struct ControlOpener {
    ctx: ReceiverContext,
}

impl std::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseOpener")
            .field("started", &self.keys.is_some())
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

impl std::fmt::Debug for ControlOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlOpener").finish_non_exhaustive()
    }
}

impl ResponseSealer {
    /// The responder's nonce, which the first sealed frame carries.
    pub fn response_nonce(&self) -> [u8; RESPONSE_NONCE_LEN] {
        self.response_nonce
    }

    /// Seals the next chunk as one frame body; `last` marks the final one. The first
    /// frame starts with [`FRAME_START`] and the responder's nonce. After the final chunk
    /// nothing more may be sealed. [`ResponseSealer::seal_chunk_into`] writes the whole
    /// tunnel frame into a reused buffer instead.
    pub fn seal_chunk(&mut self, data: &[u8], last: bool) -> Result<Vec<u8>, E2eError> {
        let mut out = Vec::with_capacity(START_OVERHEAD + CHUNK_OVERHEAD + data.len());
        self.seal_body_into(&mut out, data, last)?;
        Ok(out)
    }

    /// Appends the next chunk to `out` as one whole tunnel frame, ready to write to the
    /// stream as is: the frame's length prefix (u32 big-endian, `aisa_tunnel` framing),
    /// then the frame body [`ResponseSealer::seal_chunk`] returns, the data encrypted in
    /// place in `out` (one copy of the data, no allocation once `out` has grown). The
    /// bytes are those of `write_frame(seal_chunk(data, last))`. On an error `out` is
    /// left as it was.
    pub fn seal_chunk_into(
        &mut self,
        out: &mut Vec<u8>,
        data: &[u8],
        last: bool,
    ) -> Result<(), E2eError> {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        if let Err(e) = self.seal_body_into(out, data, last) {
            out.truncate(start);
            return Err(e);
        }
        // At most MAX_FRAME (checked in seal_body_into), so it fits a u32.
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Appends the next chunk's frame body to `out`: header, the data encrypted in
    /// place, then the tag.
    fn seal_body_into(
        &mut self,
        out: &mut Vec<u8>,
        data: &[u8],
        last: bool,
    ) -> Result<(), E2eError> {
        if self.done {
            return Err(E2eError::AfterFinal);
        }
        if data.len() > MAX_CHUNK {
            return Err(E2eError::TooLarge);
        }
        let aad = if last { FINAL_AAD } else { b"" };
        let start = out.len();
        out.reserve(START_OVERHEAD + CHUNK_OVERHEAD + data.len());
        if self.next == 0 {
            out.push(FRAME_START);
            out.extend_from_slice(&self.response_nonce);
        }
        out.push(if last { FRAME_FINAL } else { FRAME_CHUNK });
        out.extend_from_slice(&((data.len() + 16) as u32).to_be_bytes());
        let at = out.len();
        out.extend_from_slice(data);
        let Ok(tag) = self.keys.aead.seal_in_place_separate_tag(
            self.keys.nonce(self.next),
            Aad::from(aad),
            &mut out[at..],
        ) else {
            out.truncate(start);
            return Err(E2eError::TooLarge);
        };
        out.extend_from_slice(tag.as_ref());
        self.next += 1;
        self.done = last;
        Ok(())
    }

    /// Whether the final chunk was sealed.
    pub fn is_finished(&self) -> bool {
        self.done
    }
}

impl ControlOpener {
    /// Opens the browser's next sealed control message (an encoded envelope). A frame that
    /// does not open (injected or altered) is refused and does not advance the sequence,
    /// so the browser's real messages still open after it.
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, E2eError> {
        self.ctx
            .open(frame, CONTROL_AAD)
            .ok_or(E2eError::ControlRejected)
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
    if !matches!(buf[0], FRAME_CHUNK | FRAME_FINAL) || len < 16 {
        return Err(E2eError::Malformed);
    }
    Ok((buf.len() >= 5 + len).then_some(5 + len))
}

/// One frame of an encrypted stream's answer, as [`ResponseOpener::open_frame`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFrame {
    /// A plain envelope (the whole frame): a refusal sent instead of a sealed response.
    /// Nothing may follow it.
    Plain(Vec<u8>),
    /// A sealed chunk's data, and whether it was the final chunk.
    Data(Vec<u8>, bool),
}

impl ResponseOpener {
    /// Seals the next control message (an encoded envelope, e.g. CANCEL) for the desktop:
    /// `HPKE-seal(aad = "control", message)` with the request's context, whose sequence
    /// number the request used first.
    pub fn seal_control(&mut self, message: &[u8]) -> Result<Vec<u8>, E2eError> {
        self.ctx
            .seal(message, CONTROL_AAD)
            .map_err(|_| E2eError::TooLarge)
    }

    /// Reads one frame the desktop (or the relay) sent on the stream: a plain refusal
    /// ([`FRAME_PLAIN`]) as the first frame only, else sealed chunks. A plain frame after
    /// the first sealed one is [`E2eError::Unsealed`].
    pub fn open_frame(&mut self, frame: &[u8]) -> Result<ResponseFrame, E2eError> {
        if self.done {
            return Err(E2eError::AfterFinal);
        }
        if frame.first() == Some(&FRAME_PLAIN) {
            if self.keys.is_some() {
                return Err(E2eError::Unsealed);
            }
            self.done = true;
            return Ok(ResponseFrame::Plain(frame.to_vec()));
        }
        let (data, last) = self.open_chunk(frame)?;
        Ok(ResponseFrame::Data(data, last))
    }

    /// Opens one sealed frame (as [`ResponseSealer::seal_chunk`] made it) and returns its
    /// data and whether it was the final chunk. The first frame must start with
    /// [`FRAME_START`] and the responder's nonce; no later one may. A chunk that opens at
    /// a nearby position instead is [`E2eError::OutOfOrder`].
    pub fn open_chunk(&mut self, frame: &[u8]) -> Result<(Vec<u8>, bool), E2eError> {
        let (fresh, at, last) = self.parse_chunk(frame)?;
        let keys = fresh
            .as_ref()
            .or(self.keys.as_ref())
            .ok_or(E2eError::Malformed)?;
        let mut data = frame[at + 5..].to_vec();
        let Some(n) = keys
            .open_in_place(self.next, last, &mut data)
            .map(|d| d.len())
        else {
            return Err(self.probe(keys, last, &frame[at + 5..]));
        };
        data.truncate(n);
        self.accept(fresh, last);
        Ok((data, last))
    }

    /// [`ResponseOpener::open_chunk`] without a copy: decrypts the frame body in place and
    /// returns the data, a part of `frame`. After a failure `frame`'s bytes are
    /// unspecified, so a chunk that does not open is [`E2eError::ChunkRejected`] whether
    /// it was altered or reordered (`open_chunk` tells the two apart).
    pub fn open_chunk_in_place<'f>(
        &mut self,
        frame: &'f mut [u8],
    ) -> Result<(&'f mut [u8], bool), E2eError> {
        let (fresh, at, last) = self.parse_chunk(frame)?;
        let keys = fresh
            .as_ref()
            .or(self.keys.as_ref())
            .ok_or(E2eError::Malformed)?;
        let data = keys
            .open_in_place(self.next, last, &mut frame[at + 5..])
            .ok_or(E2eError::ChunkRejected)?;
        self.accept(fresh, last);
        Ok((data, last))
    }

    /// Checks a sealed frame's layout: the keys it brings (the first frame's), where its
    /// chunk starts, and whether it is the final one.
    fn parse_chunk(&self, frame: &[u8]) -> Result<(Option<ChunkKeys>, usize, bool), E2eError> {
        if self.done {
            return Err(E2eError::AfterFinal);
        }
        // The first frame's keys are kept only once that frame authenticates, so a forged
        // first frame leaves no state behind and the genuine one still opens.
        let (fresh, at) = match (frame.first().copied(), self.keys.is_some()) {
            (Some(FRAME_START), false) => {
                let nonce: [u8; RESPONSE_NONCE_LEN] = frame
                    .get(1..START_OVERHEAD)
                    .and_then(|n| n.try_into().ok())
                    .ok_or(E2eError::Malformed)?;
                (
                    Some(ChunkKeys::derive(&self.secret, &self.enc, &nonce)),
                    START_OVERHEAD,
                )
            }
            (Some(FRAME_CHUNK | FRAME_FINAL), true) => (None, 0),
            (Some(FRAME_PLAIN), true) => return Err(E2eError::Unsealed),
            _ => return Err(E2eError::Malformed),
        };
        let chunk = &frame[at..];
        match chunk_len(chunk)? {
            Some(n) if n == chunk.len() => {}
            _ => return Err(E2eError::Malformed),
        }
        Ok((fresh, at, chunk[0] == FRAME_FINAL))
    }

    /// A chunk opened: keep the first frame's keys, move on.
    fn accept(&mut self, fresh: Option<ChunkKeys>, last: bool) {
        if fresh.is_some() {
            self.keys = fresh;
        }
        self.next += 1;
        self.done = last;
    }

    /// Why `ct` did not open at the expected position: if it opens at a nearby one, it
    /// was reordered.
    fn probe(&self, keys: &ChunkKeys, last: bool, ct: &[u8]) -> E2eError {
        let lo = self.next.saturating_sub(REORDER_PROBE);
        for found in lo..self.next + REORDER_PROBE {
            if found != self.next && keys.opens_at(found, last, ct) {
                return E2eError::OutOfOrder {
                    expected: self.next,
                    found,
                };
            }
        }
        E2eError::ChunkRejected
    }

    /// Call at the end of the stream: refuses a response that never sent its final chunk
    /// (a plain refusal is a complete answer too).
    pub fn finish(&self) -> Result<(), E2eError> {
        if self.done {
            Ok(())
        } else {
            Err(E2eError::Truncated)
        }
    }

    /// Whether the final chunk arrived.
    pub fn is_finished(&self) -> bool {
        self.done && self.keys.is_some()
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
/// sealed request and the opener for the response (which also seals control messages).
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
    let mut secret = Zeroizing::new([0u8; 32]);
    // 32 bytes is within the exporter's limit, so this cannot fail.
    let _ = ctx.export(EXPORT_LABEL, secret.as_mut());
    let opener = ResponseOpener {
        ctx,
        secret,
        enc,
        keys: None,
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
/// opened within the time window, at most `capacity` of them. It lives in memory; a
/// desktop that restarts restores it ([`ReplayGuard::restore`]) from what it persisted
/// of [`ReplayGuard::entries`], or refuses requests stamped before a moment
/// ([`ReplayGuard::refuse_before`]) when it cannot.
#[derive(Debug)]
pub struct ReplayGuard {
    window: u64,
    capacity: usize,
    not_before: u64,
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
            not_before: 0,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The time window, seconds.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Refuses (as [`E2eError::Stale`]) every request stamped before `ts`: for a desktop
    /// that lost its record of the requests it saw.
    pub fn refuse_before(&mut self, ts: u64) {
        self.not_before = self.not_before.max(ts);
    }

    /// Remembers a request seen before (by an earlier run of the desktop), unless it has
    /// expired by `now`. Refuses nothing: restoring more than the capacity keeps them all.
    pub fn restore(&mut self, enc: [u8; KEY_LEN], ts: u64, now: u64) {
        if ts.saturating_add(self.window) >= now && !self.seen.contains_key(&enc) {
            self.remember(&RequestHeader { enc, ts });
        }
    }

    /// The remembered requests (`enc`, timestamp), oldest first, as of the last check.
    pub fn entries(&self) -> impl Iterator<Item = ([u8; KEY_LEN], u64)> + '_ {
        self.order
            .iter()
            .filter(|(enc, ts)| self.seen.get(enc) == Some(ts))
            .copied()
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
        if header.ts.abs_diff(now) > self.window || header.ts < self.not_before {
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

/// What the desktop gets from a request that opened.
#[derive(Debug)]
pub struct OpenedRequest {
    /// The request's plaintext.
    pub request: Vec<u8>,
    /// Its clear header (the `enc` and timestamp the replay memory keeps).
    pub header: RequestHeader,
    /// Seals the response.
    pub sealer: ResponseSealer,
    /// Opens the browser's later, sealed control messages.
    pub controls: ControlOpener,
}

/// The desktop's side: opens a request sealed by the browser whose static public key is
/// `browser_pk`, for the desktop key `desktop_sk`; refuses stale and replayed requests
/// (`now_unix` is the desktop's clock). Returns the request and the response sealer,
/// whose keys include a fresh random responder nonce.
pub fn open_request(
    desktop_sk: &[u8; KEY_LEN],
    browser_pk: &[u8; KEY_LEN],
    info: &[u8],
    sealed: &[u8],
    now_unix: u64,
    guard: &mut ReplayGuard,
) -> Result<(Vec<u8>, ResponseSealer), E2eError> {
    open_request_full(desktop_sk, browser_pk, info, sealed, now_unix, guard)
        .map(|o| (o.request, o.sealer))
}

/// [`open_request`], returning also the request's header and the opener of the browser's
/// control messages.
pub fn open_request_full(
    desktop_sk: &[u8; KEY_LEN],
    browser_pk: &[u8; KEY_LEN],
    info: &[u8],
    sealed: &[u8],
    now_unix: u64,
    guard: &mut ReplayGuard,
) -> Result<OpenedRequest, E2eError> {
    let mut response_nonce = [0u8; RESPONSE_NONCE_LEN];
    getrandom::fill(&mut response_nonce).map_err(|_| E2eError::BadKey)?;
    open_request_with_response_nonce(
        desktop_sk,
        browser_pk,
        info,
        sealed,
        now_unix,
        guard,
        &response_nonce,
    )
}

/// [`open_request_full`] with a given responder nonce instead of a random one. **For test
/// vectors only**: the nonce must never repeat for one request.
pub fn open_request_with_response_nonce(
    desktop_sk: &[u8; KEY_LEN],
    browser_pk: &[u8; KEY_LEN],
    info: &[u8],
    sealed: &[u8],
    now_unix: u64,
    guard: &mut ReplayGuard,
    response_nonce: &[u8; RESPONSE_NONCE_LEN],
) -> Result<OpenedRequest, E2eError> {
    Recipient::new(desktop_sk).open_with_response_nonce(
        browser_pk,
        info,
        sealed,
        now_unix,
        guard,
        response_nonce,
    )
}

/// RFC 9180's suite ids: the KEM's (DHKEM(X25519, HKDF-SHA256) = 0x0020) and the whole
/// suite's (KEM 0x0020, KDF HKDF-SHA256 = 0x0001, AEAD ChaCha20-Poly1305 = 0x0003).
const KEM_SUITE: &[u8] = b"KEM\x00\x20";
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
/// RFC 9180's mode_auth.
const MODE_AUTH: u8 = 0x02;
/// How many browsers' static Diffie-Hellman results a [`Recipient`] keeps.
const STATIC_CACHE: usize = 1024;

/// RFC 9180 LabeledExtract with HKDF-SHA256.
fn labeled_extract(salt: &[u8], suite: &[u8], label: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut ex = hkdf::HkdfExtract::<Sha256>::new(Some(salt));
    ex.input_ikm(b"HPKE-v1");
    ex.input_ikm(suite);
    ex.input_ikm(label);
    for part in ikm {
        ex.input_ikm(part);
    }
    let (prk, _) = ex.finalize();
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&prk);
    out
}

/// RFC 9180 LabeledExpand with HKDF-SHA256, `out.len()` bytes (at most 255·32).
fn labeled_expand(prk: &[u8; 32], suite: &[u8], label: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let Ok(hk) = hkdf::Hkdf::<Sha256>::from_prk(prk) else {
        unreachable!("a 32-byte PRK is long enough for HKDF-SHA256")
    };
    let len = (out.len() as u16).to_be_bytes();
    let mut parts: Vec<&[u8]> = vec![&len, b"HPKE-v1", suite, label];
    parts.extend_from_slice(info);
    // Every output here is far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand_multi_info(&parts, out);
}

/// X25519, refusing the all-zero result as RFC 9180 §7.1.4 requires.
fn dh(sk: &x25519_dalek::StaticSecret, pk: &[u8; KEY_LEN]) -> Option<Zeroizing<[u8; 32]>> {
    let shared = sk.diffie_hellman(&x25519_dalek::PublicKey::from(*pk));
    shared
        .was_contributory()
        .then(|| Zeroizing::new(*shared.as_bytes()))
}

/// The receiver's HPKE context (RFC 9180 §5.2), ChaCha20-Poly1305 by `ring`: opens the
/// request (sequence 0), then the control messages in order.
struct ReceiverContext {
    aead: LessSafeKey,
    base: [u8; 12],
    seq: u64,
}

impl ReceiverContext {
    /// Opens the message at the current sequence number; only a message that opens
    /// advances it.
    fn open(&mut self, ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let at = ct.len().checked_sub(16)?;
        let tag = Tag::try_from(&ct[at..]).ok()?;
        let mut n = self.base;
        for (b, c) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= c;
        }
        let mut data = ct[..at].to_vec();
        self.aead
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(aad),
                tag,
                &mut data,
                0..,
            )
            .ok()?;
        self.seq = self.seq.checked_add(1)?;
        Some(data)
    }
}

/// The desktop's static key, ready to open requests faster than [`open_request_full`]:
/// its public key is computed once, and the static-static Diffie-Hellman of HPKE's auth
/// mode (`DH(skR, pkS)`, the same for every request of one browser) once per browser
/// key, kept in memory (at most 1,024 browsers; secret, zeroized when dropped). Each
/// request then costs one X25519 (with its encapsulated key) instead of three. The
/// construction and the bytes are those of [`open_request_full`] (RFC 9180 auth mode,
/// computed here rather than by the `hpke` crate, the AEAD by `ring`).
pub struct Recipient {
    sk: x25519_dalek::StaticSecret,
    pk: [u8; KEY_LEN],
    statics: Mutex<HashMap<[u8; KEY_LEN], Zeroizing<[u8; 32]>>>,
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipient")
            .field("public_key", &hex::encode(self.pk))
            .finish_non_exhaustive()
    }
}

impl Recipient {
    /// The recipient with this X25519 secret key.
    pub fn new(secret: &[u8; KEY_LEN]) -> Recipient {
        let sk = x25519_dalek::StaticSecret::from(*secret);
        let pk = x25519_dalek::PublicKey::from(&sk).to_bytes();
        Recipient {
            sk,
            pk,
            statics: Mutex::new(HashMap::new()),
        }
    }

    /// The public key (what [`public_of`] gives for the secret).
    pub fn public_key(&self) -> [u8; KEY_LEN] {
        self.pk
    }

    /// `DH(skR, pkS)` for the browser key `pk_s`, from the cache or computed (and kept).
    fn static_dh(&self, pk_s: &[u8; KEY_LEN]) -> Option<Zeroizing<[u8; 32]>> {
        let mut statics = self.statics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = statics.get(pk_s) {
            return Some(found.clone());
        }
        let computed = dh(&self.sk, pk_s)?;
        if statics.len() >= STATIC_CACHE {
            statics.clear();
        }
        statics.insert(*pk_s, computed.clone());
        Some(computed)
    }

    /// [`open_request_full`] with this key.
    pub fn open_request(
        &self,
        browser_pk: &[u8; KEY_LEN],
        info: &[u8],
        sealed: &[u8],
        now_unix: u64,
        guard: &mut ReplayGuard,
    ) -> Result<OpenedRequest, E2eError> {
        let mut response_nonce = [0u8; RESPONSE_NONCE_LEN];
        getrandom::fill(&mut response_nonce).map_err(|_| E2eError::BadKey)?;
        self.open_with_response_nonce(browser_pk, info, sealed, now_unix, guard, &response_nonce)
    }

    /// [`Recipient::open_request`] with a given responder nonce instead of a random one.
    /// **For test vectors only**: the nonce must never repeat for one request.
    pub fn open_with_response_nonce(
        &self,
        browser_pk: &[u8; KEY_LEN],
        info: &[u8],
        sealed: &[u8],
        now_unix: u64,
        guard: &mut ReplayGuard,
        response_nonce: &[u8; RESPONSE_NONCE_LEN],
    ) -> Result<OpenedRequest, E2eError> {
        let header = request_header(sealed)?;
        guard.check(&header, now_unix)?;
        let mut ctx = self
            .setup(browser_pk, &header.enc, &full_info(info))
            .ok_or(E2eError::RequestRejected)?;
        let request = ctx
            .0
            .open(&sealed[REQUEST_HEADER_LEN..], &request_aad(header.ts))
            .ok_or(E2eError::RequestRejected)?;
        // Only a request that authenticated is remembered, so forgeries cannot fill the cache.
        guard.remember(&header);
        let mut secret = Zeroizing::new([0u8; 32]);
        export(&ctx.1, EXPORT_LABEL, secret.as_mut());
        let sealer = ResponseSealer {
            keys: ChunkKeys::derive(&secret, &header.enc, response_nonce),
            response_nonce: *response_nonce,
            next: 0,
            done: false,
        };
        Ok(OpenedRequest {
            request,
            header,
            sealer,
            controls: ControlOpener { ctx: ctx.0 },
        })
    }

    /// RFC 9180 SetupAuthR: AuthDecap (DHKEM(X25519, HKDF-SHA256)), then the key schedule
    /// in mode_auth with no PSK; the receiver context and its exporter secret.
    fn setup(
        &self,
        pk_s: &[u8; KEY_LEN],
        enc: &[u8; KEY_LEN],
        info: &[u8],
    ) -> Option<(ReceiverContext, Zeroizing<[u8; 32]>)> {
        let eph = dh(&self.sk, enc)?;
        let stat = self.static_dh(pk_s)?;
        // AuthDecap: ExtractAndExpand(dh = DH(skR, pkE) || DH(skR, pkS),
        // kem_context = enc || pkR || pkS).
        let eae_prk = labeled_extract(b"", KEM_SUITE, b"eae_prk", &[&eph[..], &stat[..]]);
        let mut shared = Zeroizing::new([0u8; 32]);
        labeled_expand(
            &eae_prk,
            KEM_SUITE,
            b"shared_secret",
            &[enc, &self.pk, pk_s],
            shared.as_mut(),
        );
        // KeySchedule(mode_auth, shared_secret, info, psk = "", psk_id = "").
        let psk_id_hash = labeled_extract(b"", HPKE_SUITE, b"psk_id_hash", &[]);
        let info_hash = labeled_extract(b"", HPKE_SUITE, b"info_hash", &[info]);
        let ks_context: [&[u8]; 3] = [&[MODE_AUTH], &psk_id_hash[..], &info_hash[..]];
        let secret = labeled_extract(&shared[..], HPKE_SUITE, b"secret", &[]);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut base = [0u8; 12];
        let mut exporter = Zeroizing::new([0u8; 32]);
        labeled_expand(&secret, HPKE_SUITE, b"key", &ks_context, key.as_mut());
        labeled_expand(&secret, HPKE_SUITE, b"base_nonce", &ks_context, &mut base);
        labeled_expand(&secret, HPKE_SUITE, b"exp", &ks_context, exporter.as_mut());
        let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, key.as_ref()) else {
            unreachable!("ChaCha20-Poly1305 keys are 32 bytes")
        };
        let ctx = ReceiverContext {
            aead: LessSafeKey::new(unbound),
            base,
            seq: 0,
        };
        Some((ctx, exporter))
    }
}

/// RFC 9180 Export: `LabeledExpand(exporter_secret, "sec", context, out.len())`.
fn export(exporter: &[u8; 32], context: &[u8], out: &mut [u8]) {
    labeled_expand(exporter, HPKE_SUITE, b"sec", &[context], out);
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
        let (request, mut sealer) = open_request(
            &dsk,
            &bpk,
            b"device-1",
            &sealed,
            NOW + 1,
            &mut ReplayGuard::default(),
        )
        .unwrap();
        assert_eq!(request, b"run it");
        // The first frame carries the responder nonce before chunk 0.
        let first = sealer.seal_chunk(b"start", false).unwrap();
        assert_eq!(first[0], FRAME_START);
        assert_eq!(first[1..START_OVERHEAD], sealer.response_nonce());
        assert_eq!(first.len(), START_OVERHEAD + 5 + CHUNK_OVERHEAD);
        let mut opener = opener;
        assert_eq!(
            opener.open_frame(&first).unwrap(),
            ResponseFrame::Data(b"start".to_vec(), false)
        );
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
                expected: 1,
                found: 2
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
        flipped[0] = FRAME_FINAL;
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
        // Empty, version 3, version 1 (before the responder nonce), too short.
        for bad in [&b""[..], &[3u8; 80][..], &[1u8; 80][..], &[2u8; 40][..]] {
            assert_eq!(
                open_request(&dsk, &bpk, b"i", bad, NOW, &mut guard).unwrap_err(),
                E2eError::Malformed
            );
        }
        let (mut opener, _) = exchange();
        assert_eq!(opener.open_chunk(&[2, 0, 0, 0]), Err(E2eError::Malformed));
        assert_eq!(
            opener.open_chunk(&[2, 0xff, 0xff, 0xff, 0xff]),
            Err(E2eError::TooLarge)
        );
        // After the first sealed frame, 0x00 (a plain frame, or the old "more" flag) is
        // refused as unsealed, 0x01 (the start, or the old "final" flag) as malformed.
        assert_eq!(opener.open_chunk(&[0; 30]), Err(E2eError::Unsealed));
        assert_eq!(opener.open_chunk(&[1; 30]), Err(E2eError::Malformed));
        assert_eq!(chunk_len(&[2, 0, 0, 0, 20, 1]), Ok(None));
        assert_eq!(opener.open_frame(&[0x04, 1]), Err(E2eError::Malformed));
        assert_eq!(opener.open_frame(&[]), Err(E2eError::Malformed));
        // A second start frame.
        assert_eq!(opener.open_frame(&[1; 60]), Err(E2eError::Malformed));
    }

    #[test]
    fn a_whole_chunk_fits_one_frame() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let (_, mut sealer) =
            open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut ReplayGuard::default()).unwrap();
        let first = sealer.seal_chunk(&vec![0; MAX_CHUNK], false).unwrap();
        assert_eq!(first.len(), MAX_FRAME);
        let chunk = sealer.seal_chunk(&vec![0; MAX_CHUNK], false).unwrap();
        assert!(chunk.len() < MAX_FRAME);
        assert_eq!(
            sealer.seal_chunk(&vec![0; MAX_CHUNK + 1], false),
            Err(E2eError::TooLarge)
        );
    }

    /// The response key does not depend on the request alone.
    #[test]
    fn two_responses_to_one_request_never_share_key_or_nonce() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, opener) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        // The same request opened twice (as by a desktop that forgot it had seen it).
        let (_, mut first) =
            open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut ReplayGuard::default()).unwrap();
        let (_, mut second) =
            open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut ReplayGuard::default()).unwrap();
        assert_ne!(first.response_nonce(), second.response_nonce());
        let a = first.seal_chunk(b"same plaintext", false).unwrap();
        let b = second.seal_chunk(b"same plaintext", false).unwrap();
        // Equal plaintexts under one key and nonce give equal ciphertexts (a keystream
        // reuse); under fresh keys nothing lines up.
        let (ca, cb) = (&a[START_OVERHEAD + 5..], &b[START_OVERHEAD + 5..]);
        assert_ne!(ca, cb);
        let xor: Vec<u8> = ca.iter().zip(cb).map(|(x, y)| x ^ y).collect();
        assert!(xor.iter().filter(|&&x| x == 0).count() < 8, "{xor:?}");
        // The browser opens either response (each brings its nonce), and under the keys
        // of one it opens none of the other's chunks.
        let mut opener = opener;
        assert_eq!(
            opener.open_chunk(&b).unwrap(),
            (b"same plaintext".to_vec(), false)
        );
        let a1 = first.seal_chunk(b"more", false).unwrap();
        assert_eq!(opener.open_chunk(&a1), Err(E2eError::ChunkRejected));
        let b1 = second.seal_chunk(b"more", false).unwrap();
        assert_eq!(opener.open_chunk(&b1).unwrap(), (b"more".to_vec(), false));
    }

    /// Plain frames are refusals before the sealed response only.
    #[test]
    fn plain_frames_only_before_the_sealed_response() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, mut o2) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let (_, mut opener) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let refusal = [0u8, 0, 6, 6, b'd', b'e', b'n', b'i', b'e', b'd'];
        assert_eq!(
            opener.open_frame(&refusal).unwrap(),
            ResponseFrame::Plain(refusal.to_vec())
        );
        // A refusal ends the answer.
        assert_eq!(opener.open_frame(&refusal), Err(E2eError::AfterFinal));
        opener.finish().unwrap();
        assert!(!opener.is_finished());

        let (_, mut sealer) =
            open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut ReplayGuard::default()).unwrap();
        let c0 = sealer.seal_chunk(b"one", false).unwrap();
        // The first sealed frame without its nonce is malformed.
        assert_eq!(
            o2.open_frame(&c0[START_OVERHEAD..]),
            Err(E2eError::Malformed)
        );
        assert_eq!(
            o2.open_frame(&c0).unwrap(),
            ResponseFrame::Data(b"one".to_vec(), false)
        );
        // The relay cuts the sealed answer and injects its own plain ERROR: refused.
        assert_eq!(o2.open_frame(&refusal), Err(E2eError::Unsealed));
        assert_eq!(o2.finish(), Err(E2eError::Truncated));
        let end = sealer.seal_chunk(b"end", true).unwrap();
        assert_eq!(
            o2.open_frame(&end).unwrap(),
            ResponseFrame::Data(b"end".to_vec(), true)
        );
        assert!(o2.is_finished());
    }

    /// A forged first frame (another responder nonce, or altered) is refused and leaves no
    /// state behind: the genuine first frame still opens (found by the e2e_stream fuzzer).
    #[test]
    fn a_forged_first_frame_changes_nothing() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, mut opener) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let (_, mut sealer) =
            open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut ReplayGuard::default()).unwrap();
        let first = sealer.seal_chunk(b"genuine", false).unwrap();
        let mut other_nonce = first.clone();
        other_nonce[1] ^= 1;
        assert_eq!(
            opener.open_frame(&other_nonce),
            Err(E2eError::ChunkRejected)
        );
        let mut altered = first.clone();
        let end = altered.len() - 1;
        altered[end] ^= 1;
        assert_eq!(opener.open_frame(&altered), Err(E2eError::ChunkRejected));
        assert_eq!(
            opener.open_frame(&first).unwrap(),
            ResponseFrame::Data(b"genuine".to_vec(), false)
        );
        // A plain refusal is still refused after it (the sealed answer began).
        assert_eq!(opener.open_frame(&[0, 0, 6]), Err(E2eError::Unsealed));
    }

    /// Control messages (CANCEL) are sealed; injected ones do not
    /// open and do not disturb the real ones.
    #[test]
    fn control_messages_are_sealed() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, mut opener) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let mut opened =
            open_request_full(&dsk, &bpk, b"i", &sealed, NOW, &mut ReplayGuard::default()).unwrap();
        assert_eq!(
            opened.controls.open(b"\0\0\x08plain cancel"),
            Err(E2eError::ControlRejected)
        );
        let cancel = opener.seal_control(b"cancel").unwrap();
        let mut altered = cancel.clone();
        altered[0] ^= 1;
        assert_eq!(
            opened.controls.open(&altered),
            Err(E2eError::ControlRejected)
        );
        assert_eq!(opened.controls.open(&cancel).unwrap(), b"cancel");
        // Replaying the same control frame fails: the sequence moved on.
        assert_eq!(
            opened.controls.open(&cancel),
            Err(E2eError::ControlRejected)
        );
        let again = opener.seal_control(b"second").unwrap();
        assert_eq!(opened.controls.open(&again).unwrap(), b"second");
    }

    /// The into-buffer seal writes exactly the tunnel frame of `seal_chunk`'s
    /// body (the same bytes on the wire), appended to what the buffer held.
    #[test]
    fn seal_chunk_into_writes_the_framed_chunk() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, mut opener) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let nonce = [9u8; RESPONSE_NONCE_LEN];
        let open = || {
            open_request_with_response_nonce(
                &dsk,
                &bpk,
                b"i",
                &sealed,
                NOW,
                &mut ReplayGuard::default(),
                &nonce,
            )
            .unwrap()
            .sealer
        };
        let (mut a, mut b) = (open(), open());
        let mut buf = b"kept".to_vec();
        for (data, last) in [(&b"first"[..], false), (b"", false), (b"end", true)] {
            let body = a.seal_chunk(data, last).unwrap();
            let mut framed = b"kept".to_vec();
            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
            framed.extend_from_slice(&body);
            buf.truncate(4);
            b.seal_chunk_into(&mut buf, data, last).unwrap();
            assert_eq!(buf, framed);
            assert_eq!(opener.open_chunk(&buf[8..]).unwrap(), (data.to_vec(), last));
        }
        // After the final chunk: refused, the buffer as it was.
        assert_eq!(
            b.seal_chunk_into(&mut buf, b"x", false),
            Err(E2eError::AfterFinal)
        );
        assert_eq!(buf.len(), 8 + 5 + 3 + 16);
        assert_eq!(
            open().seal_chunk_into(&mut buf, &vec![0; MAX_CHUNK + 1], false),
            Err(E2eError::TooLarge)
        );
        assert_eq!(buf.len(), 8 + 5 + 3 + 16);
    }

    /// Opening in place gives the data inside the frame, refuses what
    /// `open_chunk` refuses, and a refused frame changes nothing.
    #[test]
    fn open_chunk_in_place_opens_inside_the_frame() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, mut opener) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let (_, mut sealer) =
            open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut ReplayGuard::default()).unwrap();
        let first = sealer.seal_chunk(b"one", false).unwrap();
        let second = sealer.seal_chunk(b"two", false).unwrap();
        let end = sealer.seal_chunk(b"three", true).unwrap();
        // A plain frame after nothing sealed is not a chunk; a forged first frame fails.
        let mut forged = first.clone();
        forged[START_OVERHEAD + 6] ^= 1;
        assert_eq!(
            opener.open_chunk_in_place(&mut forged),
            Err(E2eError::ChunkRejected)
        );
        let mut frame = first.clone();
        let (data, last) = opener.open_chunk_in_place(&mut frame).unwrap();
        assert_eq!((&data[..], last), (&b"one"[..], false));
        // The data is where the ciphertext was: no copy.
        assert_eq!(&frame[START_OVERHEAD + 5..START_OVERHEAD + 8], b"one");
        // Reordered: refused (in place it cannot tell why), and nothing moved.
        assert_eq!(
            opener.open_chunk_in_place(&mut end.clone()),
            Err(E2eError::ChunkRejected)
        );
        assert_eq!(
            opener.open_chunk_in_place(&mut first.clone()),
            Err(E2eError::Malformed)
        );
        let mut frame = second.clone();
        assert_eq!(
            opener.open_chunk_in_place(&mut frame).unwrap(),
            (&mut b"two".to_vec()[..], false)
        );
        assert_eq!(opener.finish(), Err(E2eError::Truncated));
        let mut frame = end.clone();
        let (data, last) = opener.open_chunk_in_place(&mut frame).unwrap();
        assert_eq!((&data[..], last), (&b"three"[..], true));
        opener.finish().unwrap();
        assert_eq!(
            opener.open_chunk_in_place(&mut end.clone()),
            Err(E2eError::AfterFinal)
        );
    }

    /// A [`Recipient`] (cached public key and per-browser static DH) opens
    /// what `hpke`'s sender seals, for several browsers in turn, with the same response
    /// keys and control messages as the uncached path; a cached browser's key does not
    /// open another browser's request.
    #[test]
    fn a_recipient_caches_without_mixing_browsers() {
        let (dsk, dpk, bsk, bpk) = keys();
        let other_sk = [0x44; 32];
        let other_pk = public_of(&other_sk).unwrap();
        let recipient = Recipient::new(&dsk);
        assert_eq!(recipient.public_key(), dpk);
        let mut guard = ReplayGuard::default();
        for round in 0..3 {
            for (sk, pk) in [(bsk, bpk), (other_sk, other_pk)] {
                let (sealed, mut opener) =
                    seal_request(&dpk, &sk, b"i", format!("req {round}").as_bytes(), NOW).unwrap();
                // The other browser's key (cached by now) does not open it.
                let wrong = if pk == bpk { other_pk } else { bpk };
                assert_eq!(
                    recipient
                        .open_request(&wrong, b"i", &sealed, NOW, &mut guard)
                        .unwrap_err(),
                    E2eError::RequestRejected
                );
                let nonce = [round as u8; RESPONSE_NONCE_LEN];
                let mut cached = recipient
                    .open_with_response_nonce(&pk, b"i", &sealed, NOW, &mut guard, &nonce)
                    .unwrap();
                let mut uncached = open_request_with_response_nonce(
                    &dsk,
                    &pk,
                    b"i",
                    &sealed,
                    NOW,
                    &mut ReplayGuard::default(),
                    &nonce,
                )
                .unwrap();
                assert_eq!(cached.request, format!("req {round}").as_bytes());
                let chunk = cached.sealer.seal_chunk(b"answer", true).unwrap();
                assert_eq!(uncached.sealer.seal_chunk(b"answer", true).unwrap(), chunk);
                assert_eq!(
                    opener.open_chunk(&chunk).unwrap(),
                    (b"answer".to_vec(), true)
                );
                let cancel = opener.seal_control(b"cancel").unwrap();
                assert_eq!(cached.controls.open(&cancel).unwrap(), b"cancel");
                assert_eq!(uncached.controls.open(&cancel).unwrap(), b"cancel");
            }
        }
        // A low-order browser key gives an all-zero DH: refused, not cached.
        let (sealed, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        assert_eq!(
            recipient
                .open_request(&[0; 32], b"i", &sealed, NOW, &mut guard)
                .unwrap_err(),
            E2eError::RequestRejected
        );
    }

    /// The hand-written receiver (SetupAuthR, the context's Open, Export)
    /// reproduces RFC 9180 A.2.3, this suite in auth mode.
    #[test]
    fn recipient_setup_matches_rfc9180_auth_vectors() {
        let file: serde_json::Value = serde_json::from_str(include_str!(
            "../vectors/rfc9180-x25519-sha256-chacha20poly1305.json"
        ))
        .unwrap();
        let h = |v: &serde_json::Value, f: &str| hex::decode(v[f].as_str().unwrap()).unwrap();
        let key = |v: &serde_json::Value, f: &str| -> [u8; 32] { h(v, f).try_into().unwrap() };
        let v = file["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["section"] == "A.2.3")
            .unwrap();
        let recipient = Recipient::new(&key(v, "skRm"));
        assert_eq!(recipient.public_key(), key(v, "pkRm"));
        for _ in 0..2 {
            // Twice: the second time with the static DH from the cache.
            let (mut ctx, exporter) = recipient
                .setup(&key(v, "pkSm"), &key(v, "enc"), &h(v, "info"))
                .unwrap();
            let encryptions = v["encryptions"].as_array().unwrap();
            assert!(!encryptions.is_empty());
            for e in encryptions {
                assert_eq!(
                    ctx.open(&h(e, "ciphertext"), &h(e, "aad")).unwrap(),
                    h(e, "plaintext")
                );
            }
            let exports = v["exports"].as_array().unwrap();
            assert!(!exports.is_empty());
            for x in exports {
                let mut out = vec![0u8; x["L"].as_u64().unwrap() as usize];
                export(&exporter, &h(x, "exporter_context"), &mut out);
                assert_eq!(out, h(x, "exported_value"));
            }
        }
        // Another sender key: the context does not open the first message.
        let (mut ctx, _) = recipient
            .setup(&key(v, "pkRm"), &key(v, "enc"), &h(v, "info"))
            .unwrap();
        let first = &v["encryptions"][0];
        assert!(
            ctx.open(&h(first, "ciphertext"), &h(first, "aad"))
                .is_none()
        );
    }

    /// What a desktop restores after a restart refuses replays.
    #[test]
    fn a_restored_guard_refuses_replays() {
        let (dsk, dpk, bsk, bpk) = keys();
        let (sealed, _) = seal_request(&dpk, &bsk, b"i", b"req", NOW).unwrap();
        let mut before = ReplayGuard::default();
        open_request(&dsk, &bpk, b"i", &sealed, NOW, &mut before).unwrap();
        let saved: Vec<_> = before.entries().collect();
        assert_eq!(saved.len(), 1);
        let mut after = ReplayGuard::default();
        for (enc, ts) in saved.iter().copied() {
            after.restore(enc, ts, NOW + 10);
        }
        assert_eq!(
            open_request(&dsk, &bpk, b"i", &sealed, NOW + 10, &mut after).unwrap_err(),
            E2eError::Replayed
        );
        // Expired entries are not restored.
        let mut late = ReplayGuard::default();
        late.restore(saved[0].0, saved[0].1, NOW + DEFAULT_WINDOW_SECS + 1);
        assert!(late.is_empty());
        // Without a record: everything stamped before the given moment is stale.
        let mut blind = ReplayGuard::default();
        blind.refuse_before(NOW + 1);
        assert_eq!(
            open_request(&dsk, &bpk, b"i", &sealed, NOW + 10, &mut blind).unwrap_err(),
            E2eError::Stale
        );
    }
}
