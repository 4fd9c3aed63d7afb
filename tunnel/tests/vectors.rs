//! Writes and checks `tunnel/vectors/tunnel-vectors.json`, the byte-exact test vectors the
//! TypeScript codec in `browser-client` is tested against.
//!
//! The test fails if the committed file differs from what this build produces; run it
//! with `UPDATE_VECTORS=1` to rewrite the file after an intended wire change.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aisa_tunnel::message::{AppStatus, FileEntry, ProviderStatus, RunRecord, UnloadableApp};
use aisa_tunnel::{
    Body, Envelope, Hello, MAX_FRAME_LEN, MAX_HEADER_LEN, OpenHeader, RelayHeader, StreamKind,
    Version, frame,
};
use serde_json::{Value, json};

fn vector(name: &str, kind: &str, value: Value, bytes: &[u8]) -> Value {
    json!({ "name": name, "kind": kind, "value": value, "hex": hex::encode(bytes) })
}

fn envelope(name: &str, env: Envelope) -> Value {
    vector(
        name,
        "envelope",
        serde_json::to_value(&env).unwrap(),
        &env.encode(),
    )
}

/// A run as HISTORY_PAGE (`preview`) or HISTORY_RUN carries it.
fn history_run(preview: bool) -> RunRecord {
    RunRecord {
        id: 1,
        app_id: "hello-ai".into(),
        app_name: "Hello AI".into(),
        action: "write".into(),
        input: r#"{"topic":"QUIC ☃"}"#.into(),
        output: "# QUIC\n```rust\nfn main() {}\n```".into(),
        started_ms: 1_795_000_000_000,
        duration_ms: 1234,
        status: "done".into(),
        error_code: String::new(),
        error_message: String::new(),
        capped: !preview,
        preview,
    }
}

fn build_vectors() -> Value {
    let open = OpenHeader {
        device_id: "8f2c1f0e-device".into(),
        kind: StreamKind::Action,
        token: "eyJhbGciOi.payload.sig".into(),
        e2e: None,
    };
    let open_e2e = OpenHeader {
        device_id: "d".into(),
        kind: StreamKind::Control,
        token: String::new(),
        e2e: Some(vec![0, 1, 2, 254, 255]),
    };
    let relay = RelayHeader {
        user_id: "u-1".into(),
        session_id: 1 << 40,
        kind: StreamKind::Action,
        e2e: None,
    };
    let hello = Hello {
        device_token: "dt_secret".into(),
        node_version: "0.1.0".into(),
        identity_key: (0..32).collect(),
    };
    let mut vectors = vec![
        vector(
            "open header, action",
            "open_header",
            serde_json::to_value(&open).unwrap(),
            &open.encode(),
        ),
        vector(
            "open header, control with e2e bytes",
            "open_header",
            serde_json::to_value(&open_e2e).unwrap(),
            &open_e2e.encode(),
        ),
        vector(
            "relay header",
            "relay_header",
            serde_json::to_value(&relay).unwrap(),
            &relay.encode(),
        ),
        vector(
            "hello",
            "hello",
            serde_json::to_value(&hello).unwrap(),
            &hello.encode(),
        ),
    ];
    let bodies = [
        (
            "execute action",
            Body::ExecuteAction {
                app_id: "hello-ai".into(),
                action: "write".into(),
                payload: r#"{"topic":"QUIC ☃"}"#.into(),
                model: None,
            },
        ),
        (
            "execute action with a model (1.2)",
            Body::ExecuteAction {
                app_id: "hello-ai".into(),
                action: "write".into(),
                payload: "{}".into(),
                model: Some("gpt-4o ☃".into()),
            },
        ),
        (
            "install app, latest",
            Body::InstallApp {
                app_id: "seo-writer".into(),
                version: None,
            },
        ),
        (
            "install app, pinned",
            Body::InstallApp {
                app_id: "seo-writer".into(),
                version: Some("1.2.3".into()),
            },
        ),
        ("uninstall app", Body::UninstallApp { app_id: "x".into() }),
        ("get status", Body::GetStatus),
        (
            "stream chunk",
            Body::StreamChunk {
                seq: 128,
                data: "Hello, wörld".into(),
            },
        ),
        (
            "stream end",
            Body::StreamEnd {
                chunks: 300,
                elapsed_ms: 16384,
            },
        ),
        (
            "error",
            Body::Error {
                code: "device_offline".into(),
                message: "device is offline".into(),
            },
        ),
        (
            "device status",
            Body::DeviceStatus {
                online: true,
                node_version: "0.1.0".into(),
                apps: vec![
                    AppStatus {
                        id: "hello-ai".into(),
                        version: "0.1.0".into(),
                        enabled: true,
                    },
                    AppStatus {
                        id: "b".into(),
                        version: "2.0.0".into(),
                        enabled: false,
                    },
                ],
                providers: vec![],
                unloadable: vec![],
            },
        ),
        (
            "device status with providers and unloadable apps (1.2)",
            Body::DeviceStatus {
                online: true,
                node_version: "0.2.0".into(),
                apps: vec![],
                providers: vec![
                    ProviderStatus {
                        name: "openai".into(),
                        models: vec!["gpt-4o-mini".into(), "gpt-4o".into()],
                        configured: true,
                    },
                    ProviderStatus {
                        name: "local".into(),
                        models: vec![],
                        configured: false,
                    },
                ],
                unloadable: vec![UnloadableApp {
                    id: "js-app".into(),
                    version: "1.0.0".into(),
                    reason: "This desktop has no JavaScript runtime ☃.".into(),
                }],
            },
        ),
        ("cancel", Body::Cancel),
        (
            "ping",
            Body::Ping {
                nonce: u32::MAX as u64,
            },
        ),
        (
            "pong",
            Body::Pong {
                nonce: (1 << 53) - 1,
            },
        ),
        (
            "welcome",
            Body::Welcome {
                device_id: "dev".into(),
                version: Version::CURRENT,
                heartbeat_secs: 15,
            },
        ),
        (
            "status snapshot end",
            Body::StatusSnapshotEnd { devices: 0 },
        ),
        (
            "history list",
            Body::HistoryList {
                query: "quarterly ☃".into(),
                offset: 20,
                limit: 200,
            },
        ),
        ("history get", Body::HistoryGet { run_id: 1 << 40 }),
        (
            "history delete one",
            Body::HistoryDelete { run_id: Some(3) },
        ),
        ("history delete all", Body::HistoryDelete { run_id: None }),
        (
            "history page",
            Body::HistoryPage {
                total: 2,
                runs: vec![
                    history_run(true),
                    RunRecord {
                        id: 2,
                        status: "failed".into(),
                        error_code: "provider_error".into(),
                        error_message: "the provider said 429".into(),
                        output: String::new(),
                        ..history_run(true)
                    },
                ],
            },
        ),
        (
            "history run",
            Body::HistoryRun {
                run: history_run(false),
            },
        ),
        ("history deleted", Body::HistoryDeleted { count: 128 }),
        (
            "files list",
            Body::FilesList {
                app_id: "file-qa".into(),
                path: "$DOCUMENTS/notes ☃".into(),
                offset: 200,
                limit: 50,
            },
        ),
        (
            "files page",
            Body::FilesPage {
                path: String::new(),
                total: 2,
                entries: vec![
                    FileEntry {
                        name: "$DOCUMENTS".into(),
                        path: "$DOCUMENTS".into(),
                        dir: true,
                        size: 0,
                    },
                    FileEntry {
                        name: "a.md".into(),
                        path: "$APP_DATA/a.md".into(),
                        dir: false,
                        size: 1 << 33,
                    },
                ],
            },
        ),
        (
            "file upload",
            Body::FileUpload {
                app_id: "file-qa".into(),
                name: "report ☃.pdf".into(),
                size: 70_000,
            },
        ),
        (
            "file chunk",
            Body::FileChunk {
                data: vec![0, 1, 127, 128, 255],
            },
        ),
        ("file progress", Body::FileProgress { received: 65_536 }),
        (
            "file stored",
            Body::FileStored {
                path: "$APP_DATA/uploads/report _.pdf".into(),
                size: 70_000,
            },
        ),
    ];
    for (i, (name, body)) in bodies.into_iter().enumerate() {
        let request_id = [0, 1, 127, 128, 300, 16_383, 16_384][i % 7];
        vectors.push(envelope(
            name,
            Envelope {
                request_id,
                device_id: if i % 2 == 0 {
                    "dev-1".into()
                } else {
                    String::new()
                },
                body,
            },
        ));
    }
    for body in [&b""[..], b"abc"] {
        let mut wire = Vec::new();
        frame::encode_frame(body, MAX_FRAME_LEN, &mut wire).unwrap();
        vectors.push(vector(
            &format!("frame of {} bytes", body.len()),
            "frame",
            json!({ "body_hex": hex::encode(body) }),
            &wire,
        ));
    }

    let mut newer_minor = open.encode();
    newer_minor[1] = 3;
    newer_minor.extend_from_slice(&[9, 9]);
    let mut newer = vector(
        "open header from a newer minor version with an appended field",
        "open_header",
        serde_json::to_value(&open).unwrap(),
        &newer_minor,
    );
    // Decoders must accept these bytes; encoders write the current version instead.
    newer["decode_only"] = json!(true);
    vectors.push(newer);

    // Messages of a 1.1 peer, without the fields 1.2 appended: decoders read them with
    // those fields at their defaults.
    let older = [
        (
            "execute action from a 1.1 browser (no model)",
            Body::ExecuteAction {
                app_id: "hello-ai".into(),
                action: "write".into(),
                payload: "{}".into(),
                model: None,
            },
            1,
        ),
        (
            "device status from a 1.1 desktop (no providers, no unloadable apps)",
            Body::DeviceStatus {
                online: true,
                node_version: "0.1.0".into(),
                apps: vec![AppStatus {
                    id: "a".into(),
                    version: "1.0.0".into(),
                    enabled: true,
                }],
                providers: vec![],
                unloadable: vec![],
            },
            2,
        ),
    ];
    for (name, body, added) in older {
        let env = Envelope::new(5, body);
        let bytes = env.encode();
        let mut v = vector(
            name,
            "envelope",
            serde_json::to_value(&env).unwrap(),
            &bytes[..bytes.len() - added],
        );
        v["decode_only"] = json!(true);
        vectors.push(v);
    }

    let truncated_env = Envelope::new(
        5,
        Body::StreamChunk {
            seq: 0,
            data: "abc".into(),
        },
    )
    .encode();
    let invalid = json!([
        { "name": "major version 2", "kind": "open_header", "hex": "0200", "error": "unsupported protocol version 2.0" },
        { "name": "empty header", "kind": "open_header", "hex": "", "error": "version" },
        { "name": "unknown stream kind", "kind": "open_header", "hex": "010001640701740000", "error": "malformed" },
        { "name": "unknown message type", "kind": "envelope", "hex": "01006300", "error": "malformed" },
        { "name": "truncated string", "kind": "envelope", "hex": hex::encode(&truncated_env[..truncated_env.len() - 1]), "error": "malformed" },
        { "name": "invalid utf-8", "kind": "envelope", "hex": "0100040001ff", "error": "malformed" },
        { "name": "identity key of 5 bytes", "kind": "hello", "hex": hex::encode(Hello { identity_key: vec![1; 5], ..hello.clone() }.encode()), "error": "identity_key is 5 bytes long, not 32" },
        { "name": "identity key of 0 bytes", "kind": "hello", "hex": hex::encode(Hello { identity_key: Vec::new(), ..hello.clone() }.encode()), "error": "identity_key is 0 bytes long, not 32" },
        { "name": "empty device token", "kind": "hello", "hex": hex::encode(Hello { device_token: String::new(), ..hello.clone() }.encode()), "error": "device_token is empty" },
        { "name": "node version with a control character", "kind": "hello", "hex": hex::encode(Hello { node_version: "1.0\n".into(), ..hello.clone() }.encode()), "error": "node_version has a character outside printable ASCII" },
        { "name": "device id over 128 bytes", "kind": "open_header", "hex": hex::encode(OpenHeader { device_id: "d".repeat(129), ..open.clone() }.encode()), "error": "device_id is 129 bytes long, over the limit of 128" },
        { "name": "empty device id on an action stream", "kind": "open_header", "hex": hex::encode(OpenHeader { device_id: String::new(), ..open.clone() }.encode()), "error": "device_id is empty" },
        { "name": "empty e2e bytes", "kind": "open_header", "hex": hex::encode(OpenHeader { e2e: Some(Vec::new()), ..open.clone() }.encode()), "error": "e2e is empty" },
        { "name": "e2e over 512 bytes", "kind": "relay_header", "hex": hex::encode(RelayHeader { e2e: Some(vec![0; 513]), ..relay.clone() }.encode()), "error": "e2e is 513 bytes long, over the limit of 512" },
        { "name": "empty user id", "kind": "relay_header", "hex": hex::encode(RelayHeader { user_id: String::new(), ..relay.clone() }.encode()), "error": "user_id is empty" },
        { "name": "header over 4096 bytes", "kind": "open_header", "hex": hex::encode(OpenHeader { token: "t".repeat(4100), ..open.clone() }.encode()), "error": "exceeds the header limit of 4096" },
        { "name": "oversize frame", "kind": "frame", "hex": "00100001", "error": "exceeds the maximum" },
        { "name": "frame cut mid-body", "kind": "frame", "hex": "0000000501", "error": "truncated" },
    ]);
    json!({
        "protocol": Version::CURRENT.to_string(),
        "max_frame_len": MAX_FRAME_LEN,
        "max_header_len": MAX_HEADER_LEN,
        "vectors": vectors,
        "invalid": invalid,
    })
}

#[test]
fn invalid_vectors_fail_on_the_rust_side_too() {
    let v = build_vectors();
    for case in v["invalid"].as_array().unwrap() {
        let bytes = hex::decode(case["hex"].as_str().unwrap()).unwrap();
        let want = case["error"].as_str().unwrap();
        let err = match case["kind"].as_str().unwrap() {
            "open_header" => OpenHeader::decode(&bytes).unwrap_err().to_string(),
            "relay_header" => RelayHeader::decode(&bytes).unwrap_err().to_string(),
            "hello" => Hello::decode(&bytes).unwrap_err().to_string(),
            "envelope" => Envelope::decode(&bytes).unwrap_err().to_string(),
            "frame" => {
                let mut fb = aisa_tunnel::FrameBuffer::new(MAX_FRAME_LEN);
                fb.push(&bytes);
                match fb.next_frame() {
                    Err(e) => e.to_string(),
                    Ok(None) => fb.finish().unwrap_err().to_string(),
                    Ok(Some(_)) => panic!("{} decoded", case["name"]),
                }
            }
            other => panic!("unknown kind {other}"),
        };
        assert!(
            err.contains(want),
            "{}: {err:?} lacks {want:?}",
            case["name"]
        );
    }
}

#[test]
fn vectors_file_matches_this_build() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/tunnel-vectors.json");
    let fresh = serde_json::to_string_pretty(&build_vectors()).unwrap() + "\n";
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{path} is out of date: run `UPDATE_VECTORS=1 cargo test -p aisa-tunnel --test vectors` and commit it"
    );
}
