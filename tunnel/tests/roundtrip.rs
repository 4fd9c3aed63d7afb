//! Property tests: decode(encode(x)) == x for every header and envelope, and the frame
//! decoder never panics on arbitrary bytes.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aisa_tunnel::message::{AppStatus, ProviderStatus, UnloadableApp};
use aisa_tunnel::{
    Body, Envelope, FrameBuffer, Hello, OpenHeader, RelayHeader, StreamKind, Version, frame, header,
};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = StreamKind> {
    prop_oneof![Just(StreamKind::Action), Just(StreamKind::Control)]
}

fn body() -> impl Strategy<Value = Body> {
    let s = || ".{0,40}";
    prop_oneof![
        (s(), s(), s(), proptest::option::of(s())).prop_map(|(app_id, action, payload, model)| {
            Body::ExecuteAction {
                app_id,
                action,
                payload,
                model,
            }
        }),
        (s(), proptest::option::of(s()))
            .prop_map(|(app_id, version)| Body::InstallApp { app_id, version }),
        s().prop_map(|app_id| Body::UninstallApp { app_id }),
        Just(Body::GetStatus),
        (any::<u32>(), s()).prop_map(|(seq, data)| Body::StreamChunk { seq, data }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(chunks, elapsed_ms)| Body::StreamEnd { chunks, elapsed_ms }),
        (s(), s()).prop_map(|(code, message)| Body::Error { code, message }),
        (
            any::<bool>(),
            s(),
            proptest::collection::vec((s(), s(), any::<bool>()), 0..4),
            proptest::collection::vec(
                (s(), proptest::collection::vec(s(), 0..3), any::<bool>()),
                0..3
            ),
            proptest::collection::vec((s(), s(), s()), 0..3),
        )
            .prop_map(|(online, node_version, apps, providers, unloadable)| {
                Body::DeviceStatus {
                    online,
                    node_version,
                    apps: apps
                        .into_iter()
                        .map(|(id, version, enabled)| AppStatus {
                            id,
                            version,
                            enabled,
                        })
                        .collect(),
                    providers: providers
                        .into_iter()
                        .map(|(name, models, configured)| ProviderStatus {
                            name,
                            models,
                            configured,
                        })
                        .collect(),
                    unloadable: unloadable
                        .into_iter()
                        .map(|(id, version, reason)| UnloadableApp {
                            id,
                            version,
                            reason,
                        })
                        .collect(),
                }
            }),
        Just(Body::Cancel),
        any::<u64>().prop_map(|nonce| Body::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Body::Pong { nonce }),
        (s(), any::<u8>(), any::<u8>(), any::<u32>()).prop_map(
            |(device_id, major, minor, heartbeat_secs)| Body::Welcome {
                device_id,
                version: Version { major, minor },
                heartbeat_secs
            }
        ),
    ]
}

proptest! {
    #[test]
    fn envelope_round_trips(request_id: u64, device_id in ".{0,40}", body in body()) {
        let env = Envelope { request_id, device_id, body };
        prop_assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }

    #[test]
    fn open_header_round_trips(device_id in "[!-~]{1,128}", kind in kind(), token in "[!-~]{0,200}",
                               e2e in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64))) {
        let h = OpenHeader { device_id, kind, token, e2e };
        prop_assert_eq!(OpenHeader::decode(&h.encode()).unwrap().0, h);
    }

    #[test]
    fn relay_header_round_trips(user_id in "[!-~]{1,128}", session_id: u64, kind in kind(),
                                e2e in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64))) {
        let h = RelayHeader { user_id, session_id, kind, e2e };
        prop_assert_eq!(RelayHeader::decode(&h.encode()).unwrap().0, h);
    }

    #[test]
    fn hello_round_trips(device_token in "[!-~]{1,80}", node_version in "[ -~]{1,20}",
                         identity_key in proptest::collection::vec(any::<u8>(), 32)) {
        let h = Hello { device_token, node_version, identity_key };
        prop_assert_eq!(Hello::decode(&h.encode()).unwrap().0, h);
    }

    /// Whatever the fields hold, a header that decodes obeys every limit: decoding is
    /// where the rules are enforced, so nothing downstream sees an oversize field.
    #[test]
    fn decoded_headers_obey_the_limits(device_id in ".{0,140}", token in ".{0,60}",
                                       node_version in ".{0,70}",
                                       key_len in 0usize..40,
                                       e2e_len in proptest::option::of(0usize..600)) {
        let open = OpenHeader { device_id, kind: StreamKind::Action, token, e2e: e2e_len.map(|n| vec![1; n]) };
        if let Ok((h, _)) = OpenHeader::decode(&open.encode()) {
            prop_assert!(!h.device_id.is_empty() && h.device_id.len() <= header::MAX_ID_LEN);
            prop_assert!(h.device_id.bytes().chain(h.token.bytes()).all(|b| (b'!'..=b'~').contains(&b)));
            prop_assert!(h.e2e.as_ref().is_none_or(|e| !e.is_empty() && e.len() <= header::MAX_E2E_LEN));
        }
        let hello = Hello { device_token: "t".into(), node_version, identity_key: vec![0; key_len] };
        if let Ok((h, _)) = Hello::decode(&hello.encode()) {
            prop_assert_eq!(h.identity_key.len(), header::IDENTITY_KEY_LEN);
            prop_assert!(!h.node_version.is_empty() && h.node_version.len() <= header::MAX_NODE_VERSION_LEN);
            prop_assert!(h.node_version.bytes().all(|b| (b' '..=b'~').contains(&b)));
        }
    }

    #[test]
    fn frames_round_trip_through_arbitrary_splits(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
        split in 1usize..50,
    ) {
        let mut wire = Vec::new();
        for b in &bodies {
            frame::encode_frame(b, 1000, &mut wire).unwrap();
        }
        let mut fb = FrameBuffer::new(1000);
        let mut out = Vec::new();
        for piece in wire.chunks(split) {
            fb.push(piece);
            while let Some(f) = fb.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(fb.finish(), Ok(()));
        prop_assert_eq!(out, bodies);
    }

    #[test]
    fn decoders_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Envelope::decode(&bytes);
        let _ = OpenHeader::decode(&bytes);
        let _ = RelayHeader::decode(&bytes);
        let _ = Hello::decode(&bytes);
        let mut fb = FrameBuffer::new(64);
        fb.push(&bytes);
        while let Ok(Some(_)) = fb.next_frame() {}
    }
}
