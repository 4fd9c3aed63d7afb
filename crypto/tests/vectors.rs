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
const TS: u64 = 1_790_000_000;
const INFO: &[u8] = b"device-8f2c1f0e";
const REQUEST: &[u8] =
    br#"{"type":"EXECUTE_ACTION","app_id":"hello-ai","action":"write","payload":{"topic":"QUIC"}}"#;
const CHUNKS: [(&[u8], bool); 3] = [(b"Echo: ", false), (b"QUIC streams", false), (b"", true)];

fn build_e2e_vectors() -> Value {
    let desktop_pk = e2e::public_of(&DESKTOP_SK).unwrap();
    let browser_pk = e2e::public_of(&BROWSER_SK).unwrap();
    let (sealed, mut opener) =
        e2e::seal_request_with_ephemeral(&desktop_pk, &BROWSER_SK, INFO, REQUEST, TS, &IKM_E)
            .unwrap();
    // The desktop opens what the browser sealed, and seals the response.
    let (request, mut sealer) = e2e::open_request(
        &DESKTOP_SK,
        &browser_pk,
        INFO,
        &sealed,
        TS + 3,
        &mut ReplayGuard::default(),
    )
    .unwrap();
    assert_eq!(request, REQUEST);
    let mut chunks = Vec::new();
    for (data, last) in CHUNKS {
        let chunk = sealer.seal_chunk(data, last).unwrap();
        assert_eq!(opener.open_chunk(&chunk).unwrap(), (data.to_vec(), last));
        chunks.push(json!({
            "data": hex::encode(data),
            "last": last,
            "sealed": hex::encode(&chunk),
        }));
    }
    opener.finish().unwrap();
    json!({
        "description": "aisa e2e construction (docs/e2e.md) with fixed keys and an injected ephemeral key; written by crypto/tests/vectors.rs, read by browser-client/test/unit/e2e.test.ts. Hex strings.",
        "desktop_sk": hex::encode(DESKTOP_SK),
        "desktop_pk": hex::encode(desktop_pk),
        "browser_sk": hex::encode(BROWSER_SK),
        "browser_pk": hex::encode(browser_pk),
        "ikm_e": hex::encode(IKM_E),
        "ts": TS,
        "info": hex::encode(INFO),
        "request": hex::encode(REQUEST),
        "sealed_request": hex::encode(&sealed),
        "chunks": chunks,
    })
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
/// present: the desktop opens the browser's request.
#[test]
fn request_sealed_by_typescript_opens_in_rust() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/e2e-from-ts.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} is missing: run the browser-client unit tests (npm test) to write it");
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    let desktop_sk: [u8; 32] = h(&v, "desktop_sk").try_into().unwrap();
    let browser_pk: [u8; 32] = h(&v, "browser_pk").try_into().unwrap();
    let sealed = h(&v, "sealed_request");
    let ts = v["ts"].as_u64().unwrap();
    let (request, mut sealer) = e2e::open_request(
        &desktop_sk,
        &browser_pk,
        &h(&v, "info"),
        &sealed,
        ts,
        &mut ReplayGuard::default(),
    )
    .unwrap();
    assert_eq!(request, h(&v, "request"));
    // And the response chunks TS expects from this context match what Rust seals.
    for c in v["chunks"].as_array().unwrap() {
        let sealed = sealer
            .seal_chunk(&h(c, "data"), c["last"].as_bool().unwrap())
            .unwrap();
        assert_eq!(sealed, h(c, "sealed"));
    }
}
