//! Writes and checks `tunnel/vectors/mux-vectors.json`: mux frames and their bytes, and
//! byte strings that are not frames with the error each must give. The TypeScript mux
//! (`browser-client/src/tunnel/transport/mux.test.ts`) is checked against the same file.
//!
//! Fails if the committed file differs from what this build writes; run with
//! `UPDATE_VECTORS=1` to rewrite it after an intended wire change.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use serde_json::{Value, json};

use super::frame::{Frame, FrameError};

fn value(frame: &Frame) -> Value {
    match frame {
        Frame::Open { id } => json!({"type": "open", "id": id}),
        Frame::Data { id, data } => json!({"type": "data", "id": id, "data": hex::encode(data)}),
        Frame::Finish { id } => json!({"type": "finish", "id": id}),
        Frame::Reset { id, code } => json!({"type": "reset", "id": id, "code": code}),
        Frame::Stop { id, code } => json!({"type": "stop", "id": id, "code": code}),
        Frame::Credit { id, increment } => {
            json!({"type": "credit", "id": id, "increment": increment})
        }
        Frame::Ping { payload } => json!({"type": "ping", "payload": hex::encode(payload)}),
        Frame::Pong { payload } => json!({"type": "pong", "payload": hex::encode(payload)}),
        Frame::GoAway { code, reason } => json!({"type": "goaway", "code": code, "reason": reason}),
    }
}

fn build() -> Value {
    let frames = [
        ("open", Frame::Open { id: 1 }),
        ("open, relay side", Frame::Open { id: 0x7fff_fffe }),
        (
            "data",
            Frame::Data {
                id: 3,
                data: Bytes::from_static(b"\x00\x00\x00\x02hi"),
            },
        ),
        (
            "empty data",
            Frame::Data {
                id: 3,
                data: Bytes::new(),
            },
        ),
        ("finish", Frame::Finish { id: 5 }),
        ("reset", Frame::Reset { id: 2, code: 1 }),
        (
            "stop",
            Frame::Stop {
                id: 2,
                code: 0xffff_ff10,
            },
        ),
        (
            "credit",
            Frame::Credit {
                id: 1,
                increment: 131_072,
            },
        ),
        (
            "ping",
            Frame::Ping {
                payload: [0, 1, 2, 3, 4, 5, 6, 7],
            },
        ),
        ("pong", Frame::Pong { payload: [255; 8] }),
        (
            "goaway",
            Frame::GoAway {
                code: 2,
                reason: "replaced by another node".into(),
            },
        ),
        (
            "goaway, utf-8 reason",
            Frame::GoAway {
                code: 0xffff_ff01,
                reason: "données ✓".into(),
            },
        ),
    ];
    let valid: Vec<Value> = frames
        .iter()
        .map(|(name, f)| json!({"name": name, "frame": value(f), "hex": hex::encode(f.to_bytes())}))
        .collect();
    let invalid_cases: [(&str, &str); 9] = [
        ("short header", "0100000001"),
        ("unknown type", "0a0000000100000000"),
        ("type zero", "000000000100000000"),
        ("open with a payload", "01000000010000000100"),
        ("data above 64 KiB", "020000000100010001"),
        ("ping on a stream", "0700000001000000080000000000000000"),
        ("open on stream 0", "010000000000000000"),
        ("zero credit", "06000000010000000400000000"),
        (
            "two frames in one message",
            "030000000100000000030000000100000000",
        ),
    ];
    let invalid: Vec<Value> = invalid_cases
        .iter()
        .map(|(name, hex)| {
            let hex = (*hex).to_owned();
            let err = Frame::decode_message(Bytes::from(hex::decode(&hex).unwrap())).unwrap_err();
            let kind = match err {
                FrameError::Truncated { .. } => "truncated",
                FrameError::TrailingBytes { .. } => "trailing",
                FrameError::UnknownType(_) => "type",
                FrameError::BadLength { .. } => "length",
                FrameError::BadStream { .. } => "stream",
                FrameError::ZeroCredit(_) => "credit",
                FrameError::BadReason => "reason",
            };
            json!({"name": name, "hex": hex, "error": kind})
        })
        .collect();
    json!({
        "about": "mux frames (docs/protocol.md, Stream multiplexing over WebSocket and TCP); written by tunnel/src/mux/vectors.rs",
        "header_len": super::frame::HEADER_LEN,
        "max_data": super::frame::MAX_DATA,
        "initial_window": super::conn::INITIAL_WINDOW,
        "valid": valid,
        "invalid": invalid,
    })
}

#[test]
fn vectors_decode_to_their_frames() {
    let v = build();
    for case in v["valid"].as_array().unwrap() {
        let bytes = hex::decode(case["hex"].as_str().unwrap()).unwrap();
        let frame = Frame::decode_message(Bytes::from(bytes)).unwrap();
        assert_eq!(value(&frame), case["frame"]);
    }
}

#[test]
fn committed_vectors_match() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/mux-vectors.json");
    let text = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is stale: run with UPDATE_VECTORS=1",
        path.display()
    );
}
