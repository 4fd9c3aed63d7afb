//! Writes and checks `tunnel/vectors/exchanges.json`: whole request exchanges as the
//! browser's protocol machine ([`ClientRequest`]) sees them, byte for byte, with the
//! events it must report and the bytes it must send. The TypeScript machine in
//! `browser-client` replays the same file.
//!
//! Each exchange has the open header and request, then steps in order:
//! - `{"op":"open","send":HEX}`: the bytes the machine sends first;
//! - `{"op":"receive","hex":HEX,"events":[…]}`: bytes from the relay, and the events;
//! - `{"op":"finish","events":[…]}`: the relay finished the stream;
//! - `{"op":"cancel","at_ms":N,"send":HEX}`: the user cancelled at N ms, and the bytes;
//! - `{"op":"timeout","at_ms":N,"events":[…]}`: the clock reached N ms.
//!
//! An event is `{"type":"message","envelope":…}`, `{"type":"done","envelope":…}` or
//! `{"type":"failed","code":…,"reason":…,"message":…}`.
//!
//! Run with `UPDATE_VECTORS=1` to rewrite the file after an intended change.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use aisa_tunnel::proto::{ClientEvent, ClientRequest};
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN, OpenHeader, StreamKind, frame};
use serde_json::{Value, json};

/// One thing that happens to the machine.
enum Op {
    Receive(Vec<u8>),
    Finish,
    Cancel(u64),
    Timeout(u64),
}

fn framed(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_frame(&envelope.encode(), MAX_FRAME_LEN, &mut out).unwrap();
    out
}

fn event_json(event: ClientEvent) -> Value {
    match event {
        ClientEvent::Message(envelope) => json!({ "type": "message", "envelope": envelope }),
        ClientEvent::Done(Ok(envelope)) => json!({ "type": "done", "envelope": envelope }),
        ClientEvent::Done(Err(refusal)) => json!({
            "type": "failed",
            "code": refusal.code().as_str(),
            "reason": refusal.reason(),
            "message": refusal.to_string(),
        }),
    }
}

/// Runs `ops` against a fresh machine and records every step.
fn exchange(name: &str, kind: StreamKind, request: Body, ops: Vec<Op>) -> Value {
    let header = OpenHeader {
        device_id: "dev-1".into(),
        kind,
        token: "token".into(),
        e2e: None,
    };
    let request = Envelope {
        request_id: 7,
        device_id: "dev-1".into(),
        body: request,
    };
    let t0 = Instant::now();
    let mut machine = ClientRequest::new(&header, &request);
    let mut steps =
        vec![json!({ "op": "open", "send": hex::encode(machine.poll_transmit().unwrap()) })];
    for op in ops {
        steps.push(match op {
            Op::Receive(bytes) => {
                let events: Vec<Value> = machine
                    .receive(&bytes)
                    .into_iter()
                    .map(event_json)
                    .collect();
                json!({ "op": "receive", "hex": hex::encode(bytes), "events": events })
            }
            Op::Finish => {
                let events: Vec<Value> = machine.finish().into_iter().map(event_json).collect();
                json!({ "op": "finish", "events": events })
            }
            Op::Cancel(at_ms) => {
                machine.cancel(t0 + Duration::from_millis(at_ms));
                let sent = machine.poll_transmit().unwrap_or_default();
                json!({ "op": "cancel", "at_ms": at_ms, "send": hex::encode(sent) })
            }
            Op::Timeout(at_ms) => {
                let events: Vec<Value> = machine
                    .handle_timeout(t0 + Duration::from_millis(at_ms))
                    .into_iter()
                    .map(event_json)
                    .collect();
                json!({ "op": "timeout", "at_ms": at_ms, "events": events })
            }
        });
    }
    json!({ "name": name, "header": header, "request": request, "steps": steps })
}

fn chunk(seq: u32, data: &str) -> Envelope {
    Envelope::new(
        7,
        Body::StreamChunk {
            seq,
            data: data.into(),
        },
    )
}

fn end(chunks: u32) -> Envelope {
    Envelope::new(
        7,
        Body::StreamEnd {
            chunks,
            elapsed_ms: 12,
        },
    )
}

fn execute() -> Body {
    Body::ExecuteAction {
        app_id: "hello-ai".into(),
        action: "greet".into(),
        payload: r#"{"name":"Ada"}"#.into(),
        model: None,
    }
}

fn build() -> Value {
    let two_chunks = [
        framed(&chunk(0, "Hel")),
        framed(&chunk(1, "lo")),
        framed(&end(2)),
    ]
    .concat();
    let (a, rest) = two_chunks.split_at(5);
    let (b, c) = rest.split_at(13);
    let status = Envelope::new(
        7,
        Body::DeviceStatus {
            online: true,
            node_version: "0.1.0".into(),
            apps: vec![],
            providers: vec![],
            unloadable: vec![],
        },
    );
    let mut garbage = Vec::new();
    frame::encode_frame(&[0x07, 0x00, 0xff], MAX_FRAME_LEN, &mut garbage).unwrap();
    let exchanges = vec![
        exchange(
            "an action streams two chunks and ends, bytes cut at odd places",
            StreamKind::Action,
            execute(),
            vec![
                Op::Receive(a.to_vec()),
                Op::Receive(b.to_vec()),
                Op::Receive(c.to_vec()),
                Op::Finish,
            ],
        ),
        exchange(
            "get status is answered by one DEVICE_STATUS",
            StreamKind::Control,
            Body::GetStatus,
            vec![Op::Receive(framed(&status)), Op::Finish],
        ),
        exchange(
            "the relay refuses the stream with an ERROR",
            StreamKind::Action,
            execute(),
            vec![
                Op::Receive(framed(&Envelope::error(
                    0,
                    ErrorCode::DeviceOffline,
                    "device \"laptop\" (dev-1) is offline",
                ))),
                Op::Finish,
            ],
        ),
        exchange(
            "a cancel drops later chunks and the desktop answers cancelled",
            StreamKind::Action,
            execute(),
            vec![
                Op::Receive(framed(&chunk(0, "first"))),
                Op::Cancel(250),
                Op::Receive(framed(&chunk(1, "late"))),
                Op::Timeout(4_000),
                Op::Receive(framed(&Envelope::error(
                    7,
                    ErrorCode::Cancelled,
                    "the action was cancelled",
                ))),
                Op::Finish,
            ],
        ),
        exchange(
            "a cancel nobody answers fails after the grace period",
            StreamKind::Action,
            execute(),
            vec![
                Op::Cancel(1_000),
                Op::Timeout(5_999),
                Op::Timeout(6_000),
                Op::Receive(framed(&end(0))),
            ],
        ),
        exchange(
            "the stream ends before the answer",
            StreamKind::Action,
            execute(),
            vec![Op::Receive(framed(&chunk(0, "partial"))), Op::Finish],
        ),
        exchange(
            "the stream is cut inside a frame",
            StreamKind::Action,
            execute(),
            vec![
                Op::Receive(framed(&chunk(0, "cut"))[..6].to_vec()),
                Op::Finish,
            ],
        ),
        exchange(
            "an unexpected message type ends the request",
            StreamKind::Action,
            execute(),
            vec![Op::Receive(framed(&Envelope::new(
                7,
                Body::Pong { nonce: 1 },
            )))],
        ),
        exchange(
            "a frame that is not an envelope ends the request",
            StreamKind::Action,
            execute(),
            vec![Op::Receive(garbage)],
        ),
    ];
    json!({
        "about": "Whole request exchanges for the browser's protocol machine; written by tunnel/tests/exchanges.rs",
        "exchanges": exchanges,
    })
}

#[test]
fn exchanges_file_matches_this_build() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/exchanges.json");
    let built = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(path, &built).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == built,
        "{path} is stale: run `UPDATE_VECTORS=1 cargo test -p aisa-tunnel --test exchanges`"
    );
}

#[test]
fn exchanges_say_what_they_claim() {
    let built = build();
    let exchanges = built["exchanges"].as_array().unwrap();
    let last_event = |i: usize| {
        exchanges[i]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["events"].as_array().cloned().unwrap_or_default())
            .next_back()
            .unwrap()
    };
    assert_eq!(last_event(0)["type"], "done");
    assert_eq!(
        last_event(1)["envelope"]["body"]["DeviceStatus"]["online"],
        true
    );
    assert_eq!(last_event(2)["code"], "device_offline");
    assert_eq!(last_event(3)["code"], "cancelled");
    assert_eq!(last_event(4)["reason"], "cancel_unanswered");
    assert_eq!(last_event(5)["reason"], "ended_early");
    assert_eq!(last_event(6)["reason"], "malformed_frame");
    assert_eq!(last_event(7)["reason"], "unexpected_message");
    assert_eq!(last_event(8)["reason"], "malformed_message");
    // The chunk that came after the cancel is not reported.
    let cancelled = exchanges[3]["steps"].as_array().unwrap();
    assert_eq!(cancelled[3]["events"], json!([]));
}
