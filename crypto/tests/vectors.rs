//! Test vectors, in two parts.
//!
//! 1. RFC 9180's own vectors for the suite this project uses (A.2.1 base, A.2.3 auth),
//!    from `vectors/rfc9180-x25519-sha256-chacha20poly1305.json`: key derivation, the
//!    encapsulation, every sealed message and export must match, and the receiver must
//!    open them.
//! 2. `vectors/e2e-vectors.json`: this project's construction ([`aisa_crypto::e2e`]) with
//!    fixed keys and an injected ephemeral key, written by this test and read by the
//!    browser's tests (`browser-client/test/unit/e2e.test.ts`). The test fails if the
//!    committed file differs from what this build produces; `UPDATE_VECTORS=1` rewrites it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aisa_crypto::e2e::{self, ReplayGuard};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use serde_json::{Value, json};

type Kem = X25519HkdfSha256;

fn h(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().unwrap_or_else(|| panic!("field {field}"))).unwrap()
}

/// RFC 9180 §7.1.2: X25519 private keys are serialized clamped (RFC 7748); the
/// appendix lists them as DeriveKeyPair's expand step produced them, before clamping.
fn clamped(mut sk: Vec<u8>) -> Vec<u8> {
    sk[0] &= 248;
    sk[31] &= 127;
    sk[31] |= 64;
    sk
}

struct FixedIkm(Vec<u8>);

impl hpke::rand_core::TryRng for FixedIkm {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        unreachable!("only fill_bytes is used")
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        unreachable!("only fill_bytes is used")
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        dst.copy_from_slice(&self.0[..dst.len()]);
        Ok(())
    }
}

impl hpke::rand_core::TryCryptoRng for FixedIkm {}

#[test]
fn rfc9180_vectors_for_our_suite() {
    let file: Value = serde_json::from_str(include_str!(
        "../vectors/rfc9180-x25519-sha256-chacha20poly1305.json"
    ))
    .unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        assert_eq!(
            (
                v["kem_id"].as_u64(),
                v["kdf_id"].as_u64(),
                v["aead_id"].as_u64()
            ),
            (Some(32), Some(1), Some(3))
        );
        let section = v["section"].as_str().unwrap();
        let info = h(v, "info");
        // DeriveKeyPair.
        let (sk_r, pk_r) = Kem::derive_keypair(&h(v, "ikmR"));
        assert_eq!(
            sk_r.to_bytes().to_vec(),
            clamped(h(v, "skRm")),
            "{section} skRm"
        );
        assert_eq!(pk_r.to_bytes().to_vec(), h(v, "pkRm"), "{section} pkRm");
        let (sk_e, pk_e) = Kem::derive_keypair(&h(v, "ikmE"));
        assert_eq!(
            sk_e.to_bytes().to_vec(),
            clamped(h(v, "skEm")),
            "{section} skEm"
        );
        assert_eq!(pk_e.to_bytes().to_vec(), h(v, "pkEm"), "{section} pkEm");

        let mode = v["mode"].as_u64().unwrap();
        let sender = match mode {
            0 => OpModeS::Base,
            2 => {
                let (sk_s, pk_s) = Kem::derive_keypair(&h(v, "ikmS"));
                assert_eq!(
                    sk_s.to_bytes().to_vec(),
                    clamped(h(v, "skSm")),
                    "{section} skSm"
                );
                assert_eq!(pk_s.to_bytes().to_vec(), h(v, "pkSm"), "{section} pkSm");
                OpModeS::Auth((sk_s, pk_s))
            }
            other => panic!("mode {other} is not one this project uses"),
        };
        let (enc, mut sender_ctx) =
            hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &sender,
                &pk_r,
                &info,
                &mut hpke::rand_core::UnwrapErr(FixedIkm(h(v, "ikmE"))),
            )
            .unwrap();
        assert_eq!(enc.to_bytes().to_vec(), h(v, "enc"), "{section} enc");

        let receiver = match mode {
            0 => OpModeR::Base,
            _ => OpModeR::Auth(<Kem as hpke::Kem>::PublicKey::from_bytes(&h(v, "pkSm")).unwrap()),
        };
        let sk_r = <Kem as hpke::Kem>::PrivateKey::from_bytes(&h(v, "skRm")).unwrap();
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&h(v, "enc")).unwrap();
        let mut receiver_ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &receiver, &sk_r, &enc, &info,
        )
        .unwrap();
        let encryptions = v["encryptions"].as_array().unwrap();
        assert!(!encryptions.is_empty());
        for (seq, e) in encryptions.iter().enumerate() {
            let sealed = sender_ctx.seal(&h(e, "plaintext"), &h(e, "aad")).unwrap();
            assert_eq!(sealed, h(e, "ciphertext"), "{section} seal seq {seq}");
            let opened = receiver_ctx
                .open(&h(e, "ciphertext"), &h(e, "aad"))
                .unwrap();
            assert_eq!(opened, h(e, "plaintext"), "{section} open seq {seq}");
        }
        for x in v["exports"].as_array().unwrap() {
            let mut out = vec![0u8; x["L"].as_u64().unwrap() as usize];
            sender_ctx
                .export(&h(x, "exporter_context"), &mut out)
                .unwrap();
            assert_eq!(out, h(x, "exported_value"), "{section} sender export");
            receiver_ctx
                .export(&h(x, "exporter_context"), &mut out)
                .unwrap();
            assert_eq!(out, h(x, "exported_value"), "{section} receiver export");
        }
    }
}

/// Fixed inputs of the cross-language vector.
const DESKTOP_SK: [u8; 32] = [0xd5; 32];
const BROWSER_SK: [u8; 32] = [0xb7; 32];
const IKM_E: [u8; 32] = [0x42; 32];
const RESPONSE_NONCE: [u8; 32] = [0x5e; 32];
const TS: u64 = 1_790_000_000;
const INFO: &[u8] = b"device-8f2c1f0e";
const REQUEST: &[u8] =
    br#"{"type":"EXECUTE_ACTION","app_id":"hello-ai","action":"write","payload":{"topic":"QUIC"}}"#;
const CHUNKS: [(&[u8], bool); 3] = [(b"Echo: ", false), (b"QUIC streams", false), (b"", true)];
/// An encoded CANCEL envelope (request id 7, no device id): varint 7, empty string, type 8.
const CANCEL: &[u8] = &[0x07, 0x00, 0x08];

/// What each field of the vector files holds (written into them, for implementers).
fn fields() -> Value {
    json!({
        "desktop_sk / desktop_pk": "the desktop's static X25519 identity key (skR / pkR), raw 32 bytes",
        "browser_sk / browser_pk": "the browser's static X25519 key (skS / pkS), raw 32 bytes",
        "ikm_e": "the IKM of DeriveKeyPair for the ephemeral key (fixed here for the vector only)",
        "ts": "the request's timestamp, unix seconds (a JSON number)",
        "info": "the caller info: the device id, UTF-8",
        "hpke_info": "the HPKE info: \"aisa-e2e-v2\" || 0x00 || info",
        "request": "the request plaintext",
        "request_aad": "the AAD of the request: 0x02 || ts (u64 BE)",
        "enc": "the encapsulated key (the ephemeral public key)",
        "sealed_request": "0x02 || enc || ts || HPKE ciphertext (sequence 0)",
        "exported_secret": "Export(\"aisa-e2e response\", 32) from the HPKE context",
        "response_nonce": "the desktop's random 32-byte responder nonce (fixed here for the vector only)",
        "salt": "enc || response_nonce",
        "prk": "HKDF-Extract(salt, exported_secret), plain RFC 5869 HKDF-SHA256",
        "key": "HKDF-Expand(prk, \"aisa-e2e key\", 32)",
        "base_nonce": "HKDF-Expand(prk, \"aisa-e2e nonce\", 12)",
        "chunks[].data / last": "a chunk's plaintext and whether it is the final one",
        "chunks[].nonce": "base_nonce XOR (i as 12-byte big-endian), for chunk i",
        "chunks[].sealed": "the frame body: chunk = 0x02 (more) | 0x03 (final) || len (u32 BE) || ChaCha20-Poly1305(key, nonce, aad = \"\" | \"final\", data) with its tag; the first frame is 0x01 || response_nonce || chunk",
        "controls[].plaintext / sealed": "a control message from the browser (an encoded CANCEL envelope) and HPKE-seal(aad = \"control\", plaintext) with the request's context (sequence 1, 2, …), the frame body"
    })
}

/// The construction recomputed from the RFCs' primitives (not through `aisa_crypto`), for
/// the intermediate values of the vector.
fn intermediates(enc: &[u8], secret: &[u8; 32], response_nonce: &[u8; 32]) -> Value {
    let salt = [enc, &response_nonce[..]].concat();
    let (prk, hk) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(&salt), secret);
    let mut key = [0u8; 32];
    let mut base = [0u8; 12];
    hk.expand(b"aisa-e2e key", &mut key).unwrap();
    hk.expand(b"aisa-e2e nonce", &mut base).unwrap();
    json!({
        "exported_secret": hex::encode(secret),
        "salt": hex::encode(&salt),
        "prk": hex::encode(prk),
        "key": hex::encode(key),
        "base_nonce": hex::encode(base),
    })
}

fn chunk_nonce(base: &[u8], i: u64) -> Vec<u8> {
    let mut n = base.to_vec();
    for (b, c) in n[4..].iter_mut().zip(i.to_be_bytes()) {
        *b ^= c;
    }
    n
}

/// The exporter secret of the request's HPKE context, set up independently.
fn exported_secret(sk_r: &[u8; 32], pk_s: &[u8; 32], info: &[u8], enc: &[u8]) -> [u8; 32] {
    let sk_r = <Kem as hpke::Kem>::PrivateKey::from_bytes(sk_r).unwrap();
    let pk_s = <Kem as hpke::Kem>::PublicKey::from_bytes(pk_s).unwrap();
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).unwrap();
    let hpke_info = [&b"aisa-e2e-v2\0"[..], info].concat();
    let ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Auth(pk_s),
        &sk_r,
        &enc,
        &hpke_info,
    )
    .unwrap();
    let mut out = [0u8; 32];
    ctx.export(b"aisa-e2e response", &mut out).unwrap();
    out
}

fn build_e2e_vectors() -> Value {
    let desktop_pk = e2e::public_of(&DESKTOP_SK).unwrap();
    let browser_pk = e2e::public_of(&BROWSER_SK).unwrap();
    let (sealed, mut opener) =
        e2e::seal_request_with_ephemeral(&desktop_pk, &BROWSER_SK, INFO, REQUEST, TS, &IKM_E)
            .unwrap();
    let enc = &sealed[1..33];
    // The desktop opens what the browser sealed, and seals the response.
    let mut opened = e2e::open_request_with_response_nonce(
        &DESKTOP_SK,
        &browser_pk,
        INFO,
        &sealed,
        TS + 3,
        &mut ReplayGuard::default(),
        &RESPONSE_NONCE,
    )
    .unwrap();
    assert_eq!(opened.request, REQUEST);
    let secret = exported_secret(&DESKTOP_SK, &browser_pk, INFO, enc);
    let mid = intermediates(enc, &secret, &RESPONSE_NONCE);
    let base = h(&mid, "base_nonce");
    let mut chunks = Vec::new();
    for (i, (data, last)) in CHUNKS.into_iter().enumerate() {
        let chunk = opened.sealer.seal_chunk(data, last).unwrap();
        assert_eq!(opener.open_chunk(&chunk).unwrap(), (data.to_vec(), last));
        // The same bytes from the AEAD directly, with the recomputed key and nonce.
        let aead =
            <chacha20poly1305::ChaCha20Poly1305 as chacha20poly1305::KeyInit>::new_from_slice(&h(
                &mid, "key",
            ))
            .unwrap();
        let nonce = chunk_nonce(&base, i as u64);
        let aad: &[u8] = if last { b"final" } else { b"" };
        let ct = chacha20poly1305::aead::Aead::encrypt(
            &aead,
            &chacha20poly1305::Nonce::try_from(&nonce[..]).unwrap(),
            chacha20poly1305::aead::Payload { msg: data, aad },
        )
        .unwrap();
        let at = if i == 0 { e2e::START_OVERHEAD } else { 0 };
        if i == 0 {
            assert_eq!(chunk[..at], [&[0x01][..], &RESPONSE_NONCE[..]].concat());
        }
        assert_eq!(chunk[at + 5..], ct[..], "chunk {i}");
        chunks.push(json!({
            "data": hex::encode(data),
            "last": last,
            "nonce": hex::encode(chunk_nonce(&base, i as u64)),
            "sealed": hex::encode(&chunk),
        }));
    }
    opener.finish().unwrap();
    let control = opener.seal_control(CANCEL).unwrap();
    assert_eq!(opened.controls.open(&control).unwrap(), CANCEL);
    let mut v = json!({
        "description": "aisa e2e construction (docs/e2e.md) with fixed keys, an injected ephemeral key and a fixed responder nonce; written by crypto/tests/vectors.rs, read by browser-client/test/unit/e2e.test.ts. Hex strings except ts.",
        "fields": fields(),
        "desktop_sk": hex::encode(DESKTOP_SK),
        "desktop_pk": hex::encode(desktop_pk),
        "browser_sk": hex::encode(BROWSER_SK),
        "browser_pk": hex::encode(browser_pk),
        "ikm_e": hex::encode(IKM_E),
        "ts": TS,
        "info": hex::encode(INFO),
        "hpke_info": hex::encode([&b"aisa-e2e-v2\0"[..], INFO].concat()),
        "request": hex::encode(REQUEST),
        "request_aad": hex::encode([&[e2e::VERSION][..], &TS.to_be_bytes()].concat()),
        "enc": hex::encode(enc),
        "sealed_request": hex::encode(&sealed),
        "response_nonce": hex::encode(RESPONSE_NONCE),
        "chunks": chunks,
        "controls": [{ "plaintext": hex::encode(CANCEL), "sealed": hex::encode(&control) }],
    });
    for (k, x) in mid.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn e2e_vectors_are_current() {
    let fresh = serde_json::to_string_pretty(&build_e2e_vectors()).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/e2e-vectors.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if std::env::var_os("UPDATE_VECTORS").is_some() || committed.is_empty() {
        std::fs::write(path, &fresh).unwrap();
    } else {
        assert_eq!(
            committed, fresh,
            "vectors/e2e-vectors.json is stale: rerun with UPDATE_VECTORS=1"
        );
    }
}

/// A vector sealed by the TypeScript side (written by `browser-client`'s e2e test), when
/// present: the desktop opens the browser's request and its CANCEL, derives the same
/// intermediate values, and seals the same response chunks under TS's responder nonce.
#[test]
fn request_sealed_by_typescript_opens_in_rust() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/e2e-from-ts.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} is missing: run the browser-client unit tests (npm test) to write it");
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    let desktop_sk: [u8; 32] = h(&v, "desktop_sk").try_into().unwrap();
    let browser_pk: [u8; 32] = h(&v, "browser_pk").try_into().unwrap();
    let response_nonce: [u8; 32] = h(&v, "response_nonce").try_into().unwrap();
    let sealed = h(&v, "sealed_request");
    let ts = v["ts"].as_u64().unwrap();
    let mut opened = e2e::open_request_with_response_nonce(
        &desktop_sk,
        &browser_pk,
        &h(&v, "info"),
        &sealed,
        ts,
        &mut ReplayGuard::default(),
        &response_nonce,
    )
    .unwrap();
    assert_eq!(opened.request, h(&v, "request"));
    assert_eq!(opened.header.enc.to_vec(), h(&v, "enc"));
    let secret = exported_secret(&desktop_sk, &browser_pk, &h(&v, "info"), &h(&v, "enc"));
    let mid = intermediates(&h(&v, "enc"), &secret, &response_nonce);
    for k in ["exported_secret", "salt", "prk", "key", "base_nonce"] {
        assert_eq!(h(&mid, k), h(&v, k), "{k}");
    }
    // And the response chunks TS expects from this context match what Rust seals.
    for c in v["chunks"].as_array().unwrap() {
        let sealed = opened
            .sealer
            .seal_chunk(&h(c, "data"), c["last"].as_bool().unwrap())
            .unwrap();
        assert_eq!(sealed, h(c, "sealed"));
    }
    // The browser's sealed control messages open on the desktop.
    let controls = v["controls"].as_array().unwrap();
    assert!(!controls.is_empty());
    for c in controls {
        assert_eq!(
            opened.controls.open(&h(c, "sealed")).unwrap(),
            h(c, "plaintext")
        );
    }
}
