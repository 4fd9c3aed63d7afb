//! The system on loopback: a real relay (QUIC + WebTransport + HTTP + SQLite), a real
//! desktop node running the example mini-app in wasmtime, the local OpenAI-format
//! provider, and a wtransport client in the browser's role speaking the wire protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN};
use desktop_node::ai::OpenAiCompatible;
use desktop_node::node::{self, NodeContext, RelayTarget};
use desktop_node::sandbox::{Limits, Sandbox};
use testkit::openai;
use testkit::system::*;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_streams_model_output_through_the_relay() {
    let system = System::start().await;
    let reply = run_action(
        &system,
        &system.device_id,
        execute("hello-ai", "write", serde_json::json!({ "topic": "QUIC" })),
    )
    .await;

    let expected = openai::reply_tokens("Write a short paragraph about QUIC.");
    let chunks: Vec<&str> = reply
        .iter()
        .filter_map(|e| match &e.body {
            Body::StreamChunk { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, expected, "one chunk per provider token, in order");
    for (i, env) in reply.iter().take(chunks.len()).enumerate() {
        assert_eq!(env.request_id, 42);
        assert!(matches!(env.body, Body::StreamChunk { seq, .. } if seq == i as u32));
    }
    match reply.last().map(|e| &e.body) {
        Some(Body::StreamEnd { chunks: n, .. }) => assert_eq!(*n as usize, expected.len()),
        other => panic!("expected STREAM_END, got {other:?}"),
    }
    assert!(system.relay().shared.bytes_spliced.load(Ordering::Relaxed) > 0);
    assert_eq!(system.fake.stats.completed.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_errors() {
    let system = System::start().await;
    let echo = || execute("hello-ai", "echo", serde_json::json!({ "text": "hi" }));

    let (code, msg) = error_of(&run_action(&system, "no-such-device", echo()).await);
    assert_eq!(code, ErrorCode::UnknownDevice, "{msg}");

    let (code, msg) = error_of(&run_action(&system, &system.offline_device_id, echo()).await);
    assert_eq!(code, ErrorCode::DeviceOffline, "{msg}");
    assert!(msg.contains("spare"), "{msg}");

    // Bob signs in and tries Alice's device.
    let store = &system.relay().shared.store;
    let bob = store
        .create_user(
            "bob@example.com",
            &relay_edge::auth::hash_password(PASSWORD).expect("hash"),
        )
        .await
        .expect("bob");
    let bob_token = system
        .relay()
        .shared
        .tokens
        .issue(&bob.id, &bob.email)
        .expect("token");
    let session = system.browser().await;
    let mut header = system.header(&system.device_id);
    header.token = bob_token;
    let (_s, mut recv) = open(&session, &[header.encode(), echo().encode()]).await;
    let (code, msg) = error_of(&read_reply(&mut recv).await);
    assert_eq!(code, ErrorCode::Forbidden, "{msg}");

    // A forged token and an expired one.
    for token in [format!("{}x", system.token), expired_token(&system)] {
        let mut header = system.header(&system.device_id);
        header.token = token;
        let (_s, mut recv) = open(&session, &[header.encode(), echo().encode()]).await;
        let (code, msg) = error_of(&read_reply(&mut recv).await);
        assert_eq!(code, ErrorCode::Unauthenticated, "{msg}");
    }

    // Unknown app, unknown action, a payload that is not JSON.
    let (code, _) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("nope", "x", serde_json::json!({})),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::UnknownApp);
    let (code, _) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("hello-ai", "delete-all", serde_json::json!({})),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::UnknownAction);
    let bad_payload = Envelope::new(
        1,
        Body::ExecuteAction {
            app_id: "hello-ai".into(),
            action: "echo".into(),
            payload: "{not json".into(),
        },
    );
    let (code, _) = error_of(&run_action(&system, &system.device_id, bad_payload).await);
    assert_eq!(code, ErrorCode::InvalidPayload);

    // The mini-app refuses its own input through `fail`.
    let (code, msg) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("hello-ai", "write", serde_json::json!({})),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::AppFailed);
    assert!(msg.contains("topic"), "{msg}");
}

fn expired_token(system: &System) -> String {
    // Same key, expiry in the past.
    let keys = relay_edge::auth::TokenKeys::new(
        &std::fs::read_to_string(system.data_dir.path().join("jwt-secret"))
            .ok()
            .and_then(|h| hex_decode(h.trim()))
            .expect("jwt secret"),
        0,
    );
    let token = keys.issue("someone", "x@y").expect("issue");
    std::thread::sleep(Duration::from_millis(1100));
    token
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_incompatible_headers_get_errors() {
    let system = System::start().await;
    let session = system.browser().await;

    // Garbage where the header should be.
    let (_s, mut recv) = open(&session, &[vec![0xde, 0xad, 0xbe, 0xef]]).await;
    let (code, msg) = error_of(&read_reply(&mut recv).await);
    assert_eq!(
        code,
        ErrorCode::UnsupportedVersion,
        "0xde is major 222: {msg}"
    );

    let mut broken = system.header(&system.device_id).encode();
    broken.truncate(broken.len() - 3);
    let (_s, mut recv) = open(&session, &[broken]).await;
    let (code, msg) = error_of(&read_reply(&mut recv).await);
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(msg.contains("stream-open header"), "{msg}");

    // An oversize length prefix is refused without waiting for the body.
    let (mut send, mut recv) = session
        .open_bi()
        .await
        .expect("open")
        .await
        .expect("opened");
    send.write_all(&[0x7f, 0xff, 0xff, 0xff])
        .await
        .expect("write");
    let (code, msg) = error_of(&read_reply(&mut recv).await);
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(msg.contains("exceeds the maximum"), "{msg}");

    // A header cut short by the end of the stream.
    let (mut send, mut recv) = session
        .open_bi()
        .await
        .expect("open")
        .await
        .expect("opened");
    send.write_all(&[0, 0, 0, 9, 1, 0]).await.expect("write");
    send.finish().await.expect("finish");
    let (code, msg) = error_of(&read_reply(&mut recv).await);
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(msg.contains("mid-frame"), "{msg}");

    // A malformed request after a valid header reaches the desktop, which refuses it.
    let (_s, mut recv) = open(
        &session,
        &[system.header(&system.device_id).encode(), vec![1, 0, 99]],
    )
    .await;
    let (code, msg) = error_of(&read_reply(&mut recv).await);
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert!(msg.contains("envelope"), "{msg}");

    // The session still works afterwards.
    let reply = run_action(
        &system,
        &system.device_id,
        execute(
            "hello-ai",
            "echo",
            serde_json::json!({ "text": "still fine" }),
        ),
    )
    .await;
    assert_eq!(chunks_text(&reply), "still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mini_apps_are_stopped_and_the_node_keeps_serving() {
    let system = System::start().await;
    let cases = [
        ("trapper", "unreachable"),
        ("spinner", "ran out of time"),
        ("hog", "memory"),
        ("flood", "output limit"),
    ];
    for (app, expect) in cases {
        let started = std::time::Instant::now();
        let (code, msg) = error_of(
            &run_action(
                &system,
                &system.device_id,
                execute(app, "run", serde_json::json!({})),
            )
            .await,
        );
        assert_eq!(code, ErrorCode::AppFailed, "{app}: {msg}");
        assert!(msg.contains(expect), "{app}: {msg:?} lacks {expect:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{app} took {:?}",
            started.elapsed()
        );
    }
    let reply = run_action(
        &system,
        &system.device_id,
        execute(
            "hello-ai",
            "echo",
            serde_json::json!({ "text": "alive and well" }),
        ),
    )
    .await;
    assert_eq!(chunks_text(&reply), "alive and well");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_become_clear_errors() {
    let system = System::start().await;
    let (code, msg) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("hello-ai", "write", serde_json::json!({ "topic": "[500]" })),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::ProviderError);
    assert!(
        msg.contains("HTTP 500") && msg.contains("processing your request"),
        "{msg}"
    );

    let reply = run_action(
        &system,
        &system.device_id,
        execute(
            "hello-ai",
            "write",
            serde_json::json!({ "topic": "[fail]" }),
        ),
    )
    .await;
    let (code, msg) = error_of(&reply);
    assert_eq!(code, ErrorCode::ProviderError);
    assert!(msg.contains("overloaded"), "{msg}");
    assert_eq!(
        chunks_text(&reply),
        "Echo: Write ",
        "the two words before the error arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_action_and_aborts_the_provider_request() {
    let system = System::start().await;
    let session = system.browser().await;
    let request = execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": "[slow] a long story" }),
    );
    let (mut send, mut recv) = open(
        &session,
        &[system.header(&system.device_id).encode(), request.encode()],
    )
    .await;
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("first chunk")
        .expect("read")
        .expect("frame");
    assert!(matches!(
        Envelope::decode(&first).expect("env").body,
        Body::StreamChunk { seq: 0, .. }
    ));
    write_frame(
        &mut send,
        &Envelope::new(42, Body::Cancel).encode(),
        MAX_FRAME_LEN,
    )
    .await
    .expect("cancel");
    let rest = read_reply(&mut recv).await;
    let (code, _) = error_of(&rest);
    assert_eq!(code, ErrorCode::Cancelled);
    wait_until(
        || system.fake.stats.aborted.load(Ordering::Relaxed) == 1,
        "provider request aborted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_vanishes_mid_stream_cancels_the_action() {
    let system = System::start().await;
    let session = system.browser().await;
    let request = execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": "[slow] vanish" }),
    );
    let (_send, mut recv) = open(
        &session,
        &[system.header(&system.device_id).encode(), request.encode()],
    )
    .await;
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("first chunk")
        .expect("read");
    assert!(first.is_some());
    session.close(0u32.into(), b"tab closed");
    drop(session);
    wait_until(
        || system.fake.stats.aborted.load(Ordering::Relaxed) == 1,
        "provider request aborted",
    )
    .await;
    wait_until(
        || system.relay().shared.open_streams.load(Ordering::Relaxed) == 0,
        "splice ended",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_that_vanishes_mid_stream_resets_the_browser_stream() {
    let system = System::start().await;
    let session = system.browser().await;
    let request = execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": "[slow] desktop dies" }),
    );
    let (_send, mut recv) = open(
        &session,
        &[system.header(&system.device_id).encode(), request.encode()],
    )
    .await;
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("first chunk")
        .expect("read");
    assert!(first.is_some());
    system.node_stop.send_replace(true);
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match read_frame(&mut recv, MAX_FRAME_LEN).await {
                Ok(Some(body)) => {
                    let env = Envelope::decode(&body).expect("env");
                    assert!(matches!(env.body, Body::StreamChunk { .. }), "{env:?}");
                }
                other => return other,
            }
        }
    })
    .await
    .expect("the browser learns in time");
    assert!(
        end.is_err(),
        "the stream is reset, not finished cleanly: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reconnects_after_a_relay_restart() {
    let mut system = System::start().await;
    let port = system.relay().quic_addr.port();
    let relay = system.relay.take().expect("relay");
    relay.shutdown(Duration::from_secs(2)).await;
    system.wait_online(false).await;
    let restarted = relay_edge::start(relay_config(system.data_dir.path(), port))
        .await
        .expect("restart on the same port");
    system.relay = Some(restarted);
    system.wait_online(true).await;
    let device = system
        .relay()
        .shared
        .store
        .device(&system.device_id)
        .await
        .expect("db")
        .expect("device");
    wait_until(
        || {
            system
                .relay()
                .shared
                .registry
                .get(&system.device_id)
                .is_some()
        },
        "registered again",
    )
    .await;
    assert_eq!(
        device.node_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let reply = run_action(
        &system,
        &system.device_id,
        execute(
            "hello-ai",
            "echo",
            serde_json::json!({ "text": "back again" }),
        ),
    )
    .await;
    assert_eq!(chunks_text(&reply), "back again");
    system.node_stop.send_replace(true);
    tokio::time::timeout(WAIT, &mut system.node_task)
        .await
        .expect("node stops")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_unknown_device_token_is_refused_for_good() {
    let system = System::start().await;
    let ctx = Arc::new(NodeContext::new(
        "x".into(),
        "aisa_dt_not-a-real-token".into(),
        [1; 32],
        Sandbox::new().expect("sandbox"),
        HashMap::new(),
        Arc::new(OpenAiCompatible::new(&system.fake.base_url(), "m", None).expect("adapter")),
        Limits::default(),
    ));
    let target = RelayTarget {
        quic_addr: system.relay().quic_addr.to_string(),
        server_name: "localhost".into(),
        cert_sha256: Some(system.relay().cert_sha256()),
        pin_from: None,
    };
    let (_stop, stop_rx) = watch::channel(false);
    let result = tokio::time::timeout(WAIT, node::run(ctx, target, stop_rx))
        .await
        .expect("gives up in time");
    let err = result.expect_err("refused");
    assert!(err.to_string().contains("unauthenticated"), "{err}");
}

#[test]
fn imports_outside_the_host_api_are_refused_at_load() {
    let sandbox = Sandbox::new().expect("sandbox");
    let wat = format!(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) {GUEST_PRELUDE}
        (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#
    );
    let err = sandbox.load(wat.as_bytes()).err().expect("refused");
    assert!(
        err.to_string().contains("wasi_snapshot_preview1::fd_write"),
        "{err}"
    );
    let wat = format!(
        r#"(module (import "aisapp_v1" "spawn_shell" (func)) {GUEST_PRELUDE}
        (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#
    );
    let err = sandbox.load(wat.as_bytes()).err().expect("refused");
    assert!(err.to_string().contains("aisapp_v1::spawn_shell"), "{err}");
}

async fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
