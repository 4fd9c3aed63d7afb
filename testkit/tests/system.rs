//! The system on loopback: a real relay (QUIC + WebTransport + HTTP + SQLite), a real
//! desktop node running the example mini-app in wasmtime, the local OpenAI-format
//! provider, and a wtransport client in the browser's role speaking the wire protocol.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aisa_node::node;
use aisa_node::sandbox::Sandbox;
use aisa_testkit::provider;
use aisa_testkit::system::*;
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_streams_model_output_through_the_relay() {
    let system = System::start().await;
    let reply = run_action(
        &system,
        &system.device_id,
        execute("hello-ai", "write", serde_json::json!({ "topic": "QUIC" })),
    )
    .await;

    let expected = provider::reply_tokens("Write a short paragraph about QUIC.");
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
    assert!(
        system
            .relay()
            .state
            .traffic
            .bytes_spliced
            .load(Ordering::Relaxed)
            > 0
    );
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
    let store = &system.relay().state.store;
    let bob = store
        .create_user(
            "bob@example.com",
            &aisa_relay::auth::hash_password(PASSWORD).expect("hash"),
        )
        .await
        .expect("bob");
    let bob_token = system
        .relay()
        .state
        .accounts
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
            model: None,
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
    let keys = aisa_relay::auth::TokenKeys::new(
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
    let (mut send, mut recv) = start_slow_action(&system, &session, "a long story").await;
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
    let (_send, _recv) = start_slow_action(&system, &session, "vanish").await;
    session.close(0u32.into(), b"tab closed");
    drop(session);
    wait_until(
        || system.fake.stats.aborted.load(Ordering::Relaxed) == 1,
        "provider request aborted",
    )
    .await;
    wait_until(
        || {
            system
                .relay()
                .state
                .traffic
                .open_streams
                .load(Ordering::Relaxed)
                == 0
        },
        "splice ended",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_that_vanishes_mid_stream_resets_the_browser_stream() {
    let system = System::start().await;
    let session = system.browser().await;
    let (_send, mut recv) = start_slow_action(&system, &session, "desktop dies").await;
    // Vanish, not stop: a stopped node drains its running actions (a graceful end); an
    // aborted one drops its connection and every stream at once.
    system.node_task.abort();
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
    let restarted = aisa_relay::start(relay_config(
        system.data_dir.path(),
        port,
        system.database_url.clone(),
    ))
    .await
    .expect("restart on the same port");
    system.relay = Some(restarted);
    system.wait_online(true).await;
    let device = system
        .relay()
        .state
        .store
        .device(&system.device_id)
        .await
        .expect("db")
        .expect("device");
    wait_until(
        || {
            system
                .relay()
                .state
                .devices
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
    let result = run_node_with_token(&system, "x", "aisa_dt_not-a-real-token").await;
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

fn api(system: &System, path: &str) -> String {
    format!("http://{}{path}", system.relay().http_addr)
}

async fn post_json(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_sign_up_refresh_rotate_and_sign_out() {
    let system = System::start().await;
    let creds = serde_json::json!({ "email": "carol@example.com", "password": "carol-password" });
    let (status, signed_up) = post_json(&api(&system, "/api/auth/signup"), creds.clone()).await;
    assert_eq!(status, 201, "{signed_up}");
    let (status, again) = post_json(&api(&system, "/api/auth/signup"), creds.clone()).await;
    assert_eq!(status, 409, "{again}");
    let (status, short) = post_json(
        &api(&system, "/api/auth/signup"),
        serde_json::json!({ "email": "d@e.f", "password": "short" }),
    )
    .await;
    assert_eq!(status, 400, "{short}");

    let (status, login) = post_json(&api(&system, "/api/auth/login"), creds).await;
    assert_eq!(status, 200);
    assert_eq!(login["expires_in"], 900, "access tokens are short-lived");
    let first = login["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    // Refreshing rotates: a new pair, and the old refresh token no longer works.
    let (status, rotated) = post_json(
        &api(&system, "/api/auth/refresh"),
        serde_json::json!({ "refresh_token": first }),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(first, second);
    assert!(
        system
            .relay()
            .state
            .accounts
            .tokens
            .verify(rotated["token"].as_str().expect("token"))
            .is_ok()
    );

    // Reusing the old one is theft: it fails and signs the user out everywhere.
    let (status, reused) = post_json(
        &api(&system, "/api/auth/refresh"),
        serde_json::json!({ "refresh_token": first }),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        reused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already used"),
        "{reused}"
    );
    let (status, _) = post_json(
        &api(&system, "/api/auth/refresh"),
        serde_json::json!({ "refresh_token": second }),
    )
    .await;
    assert_eq!(status, 401, "the newer token was revoked too");

    // Sign out revokes the token presented.
    let (_, login) = post_json(
        &api(&system, "/api/auth/login"),
        serde_json::json!({ "email": "carol@example.com", "password": "carol-password" }),
    )
    .await;
    let token = login["refresh_token"].as_str().expect("refresh").to_owned();
    let (status, _) = post_json(
        &api(&system, "/api/auth/logout"),
        serde_json::json!({ "refresh_token": token }),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = post_json(
        &api(&system, "/api/auth/refresh"),
        serde_json::json!({ "refresh_token": token }),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post_json(
        &api(&system, "/api/auth/refresh"),
        serde_json::json!({ "refresh_token": "aisa_rt_forged" }),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_are_rate_limited() {
    let system = System::start().await;
    let wrong = serde_json::json!({ "email": "alice@example.com", "password": "not it" });
    for attempt in 0..10 {
        let (status, body) = post_json(&api(&system, "/api/auth/login"), wrong.clone()).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
    }
    let (status, body) = post_json(&api(&system, "/api/auth/login"), wrong).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("try again in"),
        "{body}"
    );
    // Even the right password waits now: the limit is checked first.
    let (status, _) = post_json(
        &api(&system, "/api/auth/login"),
        serde_json::json!({ "email": "alice@example.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_limits_give_clear_errors_and_usage_is_reported() {
    let system = System::start().await;
    let store = &system.relay().state.store;
    store
        .upsert_plan(&aisa_relay::store::Plan {
            id: "tiny".into(),
            name: "Tiny".into(),
            max_devices: 2,
            max_concurrent_streams: 1,
            max_actions_per_day: 2,
        })
        .await
        .expect("plan");
    assert!(
        store
            .set_user_plan("alice@example.com", "tiny")
            .await
            .expect("set plan")
    );

    // Devices: Alice has two already.
    let (status, body) = post_json(
        &api(&system, "/api/devices/enroll"),
        serde_json::json!({ "email": "alice@example.com", "password": PASSWORD, "name": "third" }),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("allows 2 devices"),
        "{body}"
    );

    // Concurrent streams: one slow action holds the only slot.
    let session = system.browser().await;
    let (_held, held_recv) = start_slow_action(&system, &session, "hold the slot").await;
    let (code, msg) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("hello-ai", "echo", serde_json::json!({ "text": "x" })),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::LimitExceeded);
    assert!(msg.contains("1 streams open at once"), "{msg}");
    drop(_held);
    drop(held_recv);
    drop(session);
    wait_until(
        || {
            system
                .relay()
                .state
                .limits
                .streams_per_user
                .open_for(&system.relay_user_id())
                == 0
        },
        "slot freed",
    )
    .await;

    // Actions per day: the slow one counted; the one refused for concurrency did not.
    let account: serde_json::Value = reqwest::Client::new()
        .get(api(&system, "/api/account"))
        .bearer_auth(&system.token)
        .send()
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    assert_eq!(account["plan"]["id"], "tiny");
    assert_eq!(account["usage"]["devices"], 2);
    assert_eq!(
        account["usage"]["actions_today"], 1,
        "a stream refused for concurrency is not counted: {account}"
    );
    let reply = run_action(
        &system,
        &system.device_id,
        execute("hello-ai", "echo", serde_json::json!({ "text": "second" })),
    )
    .await;
    assert_eq!(chunks_text(&reply), "second");
    let (code, msg) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("hello-ai", "echo", serde_json::json!({ "text": "third" })),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::LimitExceeded);
    assert!(msg.contains("2 actions per day"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_disconnects_it_for_good_and_disabled_users_are_refused() {
    let mut system = System::start().await;
    let client = reqwest::Client::new();
    let status = client
        .patch(api(&system, &format!("/api/devices/{}", system.device_id)))
        .bearer_auth(&system.token)
        .json(&serde_json::json!({ "name": "renamed desk" }))
        .send()
        .await
        .expect("rename")
        .status();
    assert_eq!(status, 204);
    let devices: serde_json::Value = client
        .get(api(&system, "/api/devices"))
        .bearer_auth(&system.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        devices
            .as_array()
            .expect("array")
            .iter()
            .any(|d| d["name"] == "renamed desk" && d["online"] == true),
        "{devices}"
    );

    let status = client
        .delete(api(&system, &format!("/api/devices/{}", system.device_id)))
        .bearer_auth(&system.token)
        .send()
        .await
        .expect("revoke")
        .status();
    assert_eq!(status, 204);
    let result = tokio::time::timeout(WAIT, &mut system.node_task)
        .await
        .expect("node stops")
        .expect("join");
    let err = result.expect_err("the node gives up");
    assert!(err.to_string().contains("revoked"), "{err}");
    let (code, _) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("hello-ai", "echo", serde_json::json!({ "text": "x" })),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::UnknownDevice);

    // A disabled user's still-valid access token no longer opens streams.
    assert!(
        system
            .relay()
            .state
            .store
            .set_user_disabled("alice@example.com", true)
            .await
            .expect("disable")
    );
    let (code, msg) = error_of(
        &run_action(
            &system,
            &system.offline_device_id,
            execute("hello-ai", "echo", serde_json::json!({ "text": "x" })),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::Unauthenticated, "{msg}");
    // Nor the HTTP API.
    let status = client
        .get(api(&system, "/api/devices"))
        .bearer_auth(&system.token)
        .send()
        .await
        .expect("list")
        .status();
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_live_device_status() {
    let system = System::start().await;
    let session = system.browser().await;
    let mut header = system.header("");
    header.kind = aisa_tunnel::StreamKind::Control;
    let (_send, mut recv) = open(&session, &[header.encode()]).await;
    let mut next_envelope = async || {
        let body = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
            .await
            .expect("status in time")
            .expect("read")
            .expect("frame");
        Envelope::decode(&body).expect("envelope")
    };
    let status = |envelope: Envelope| match envelope {
        Envelope {
            device_id,
            body: Body::DeviceStatus { online, .. },
            ..
        } => (device_id, online),
        other => panic!("expected DEVICE_STATUS, got {other:?}"),
    };
    let mut snapshot = vec![status(next_envelope().await), status(next_envelope().await)];
    snapshot.sort();
    let mut want = vec![
        (system.device_id.clone(), true),
        (system.offline_device_id.clone(), false),
    ];
    want.sort();
    assert_eq!(snapshot, want);
    assert_eq!(
        next_envelope().await.body,
        Body::StatusSnapshotEnd { devices: 2 },
        "the snapshot's end is marked"
    );

    system.node_stop.send_replace(true);
    assert_eq!(
        status(next_envelope().await),
        (system.device_id.clone(), false),
        "pushed when the desktop leaves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_are_served() {
    let system = System::start().await;
    let reply = run_action(
        &system,
        &system.device_id,
        execute("hello-ai", "echo", serde_json::json!({ "text": "counted" })),
    )
    .await;
    assert_eq!(chunks_text(&reply), "counted");
    let _ = run_action(
        &system,
        "no-such-device",
        execute("hello-ai", "echo", serde_json::json!({ "text": "x" })),
    )
    .await;
    let get = |path: &'static str| {
        let url = api(&system, path);
        async move {
            let response = reqwest::get(url).await.expect("get");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok".into()));
    assert_eq!(get("/readyz").await, (200, "ready".into()));
    // Metrics are not on the public API (they have their own `metrics_addr`, off by
    // default); the page is what that listener serves.
    let (status, _) = get("/metrics").await;
    assert_eq!(status, 404);
    let metrics = aisa_relay::metrics::render(&system.relay().state);
    for line in [
        "aisa_relay_connected_devices 1",
        "aisa_relay_open_streams 0",
        "aisa_relay_streams_total{kind=\"action\",transport=\"webtransport\"}",
        "aisa_relay_errors_total{code=\"unknown_device\"}",
        "aisa_relay_desktop_connections_total{result=\"ok\",transport=\"quic\"}",
        "aisa_relay_bytes_spliced_total",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_streams_and_refuses_new_ones() {
    let mut system = System::start().await;
    let session = system.browser().await;
    let (_send, mut recv) = start_slow_action(&system, &session, "finish me").await;

    let relay = system.relay.take().expect("relay");
    let state = relay.state.clone();
    let shutdown = tokio::spawn(relay.shutdown(Duration::from_secs(15)));
    wait_until(|| state.draining.load(Ordering::Relaxed), "draining").await;

    // A new stream on the open session is refused while the old one finishes.
    let echo = execute("hello-ai", "echo", serde_json::json!({ "text": "late" }));
    let (_s, mut late) = open(
        &session,
        &[system.header(&system.device_id).encode(), echo.encode()],
    )
    .await;
    let (code, msg) = error_of(&read_reply(&mut late).await);
    assert_eq!(code, ErrorCode::PeerGone);
    assert!(msg.contains("shutting down"), "{msg}");

    let rest = read_reply(&mut recv).await;
    assert!(
        matches!(rest.last().map(|e| &e.body), Some(Body::StreamEnd { .. })),
        "the open action finished: {rest:?}"
    );
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown in time")
        .expect("join");
    system.wait_online(false).await;
}

/// A desktop that connects and says HELLO properly, keeps its heartbeats going (so the
/// relay keeps it online), then accepts streams and never reads them.
async fn connect_stalling_desktop(
    system: &System,
    token: &str,
) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint");
    let conn = endpoint
        .connect_with(
            node::client_config(Some(system.relay().cert_sha256())),
            system.relay().quic_addr,
            "localhost",
        )
        .expect("connect")
        .await
        .expect("connected");
    let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
    let hello = aisa_tunnel::Hello {
        device_token: token.into(),
        node_version: "stall".into(),
        identity_key: vec![0; 32],
    };
    write_frame(&mut send, &hello.encode(), MAX_FRAME_LEN)
        .await
        .expect("hello");
    let welcome = read_frame(&mut recv, MAX_FRAME_LEN)
        .await
        .expect("read")
        .expect("welcome");
    assert!(matches!(
        Envelope::decode(&welcome).expect("env").body,
        Body::Welcome { .. }
    ));
    // PING every 500 ms (the test relay's interval is 1 s); the PONGs are left unread.
    tokio::spawn(async move {
        for nonce in 1u64.. {
            let ping = Envelope::new(nonce, Body::Ping { nonce });
            if write_frame(&mut send, &ping.encode(), MAX_FRAME_LEN)
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(recv);
    });
    let stall = conn.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(pair) = stall.accept_bi().await {
            held.push(pair); // accepted, never read
        }
    });
    (endpoint, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_that_never_reads_holds_back_its_browser_only() {
    let system = System::start().await;
    let (_endpoint, _stalled) =
        connect_stalling_desktop(&system, &system.offline_device_token).await;
    wait_until(
        || {
            system
                .relay()
                .state
                .devices
                .registry
                .get(&system.offline_device_id)
                .is_some()
        },
        "stalling desktop online",
    )
    .await;

    let session = system.browser().await;
    let (mut send, _recv) = open(
        &session,
        &[system.header(&system.offline_device_id).encode()],
    )
    .await;
    let before = system
        .relay()
        .state
        .traffic
        .bytes_spliced
        .load(Ordering::Relaxed);
    let flood = vec![0u8; 64 * 1024];
    let writing = tokio::time::timeout(Duration::from_secs(3), async {
        for _ in 0..256 {
            send.write_all(&flood).await.expect("write");
        }
    })
    .await;
    assert!(
        writing.is_err(),
        "16 MiB into a desktop that never reads must stall the writer"
    );
    let forwarded = system
        .relay()
        .state
        .traffic
        .bytes_spliced
        .load(Ordering::Relaxed)
        - before;
    assert!(
        forwarded < 8 << 20,
        "the relay forwarded only what flow control allowed: {forwarded} bytes"
    );

    // The relay and the other desktop keep serving.
    let reply = run_action(
        &system,
        &system.device_id,
        execute(
            "hello-ai",
            "echo",
            serde_json::json!({ "text": "unaffected" }),
        ),
    )
    .await;
    assert_eq!(chunks_text(&reply), "unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opening_thousands_of_streams_gets_answers_and_breaks_nothing() {
    let system = System::start().await;
    let session = system.browser().await;
    let header = system.header(&system.offline_device_id).encode();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2000 {
        let session = session.clone();
        let header = header.clone();
        tasks.spawn(async move {
            let (_send, mut recv) = open(&session, &[header]).await;
            error_of(&read_reply(&mut recv).await).0
        });
    }
    let mut refused = 0;
    while let Some(code) = tasks.join_next().await {
        assert_eq!(code.expect("task"), ErrorCode::DeviceOffline);
        refused += 1;
    }
    assert_eq!(refused, 2000);
    let reply = run_action(
        &system,
        &system.device_id,
        execute(
            "hello-ai",
            "echo",
            serde_json::json!({ "text": "still here" }),
        ),
    )
    .await;
    assert_eq!(chunks_text(&reply), "still here");
    wait_until(
        || {
            system
                .relay()
                .state
                .traffic
                .open_streams
                .load(Ordering::Relaxed)
                == 0
        },
        "no stream left open",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_loses_its_tokens_and_devices() {
    let system = System::start().await;
    assert!(
        system
            .relay()
            .state
            .store
            .delete_user("alice@example.com")
            .await
            .expect("delete")
    );
    let (code, msg) = error_of(
        &run_action(
            &system,
            &system.device_id,
            execute("hello-ai", "echo", serde_json::json!({ "text": "x" })),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::Unauthenticated, "{msg}");

    // The deleted device's token no longer passes HELLO.
    let err = run_node_with_token(
        &system,
        &system.offline_device_id,
        &system.offline_device_token,
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("unauthenticated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replaced_by_another_with_its_token_stops_instead_of_fighting_back() {
    let system = System::start().await;
    let registry = &system.relay().state.devices.registry;
    let first = run_node_with_token(
        &system,
        &system.offline_device_id,
        &system.offline_device_token,
    );
    // The second node starts once the first is online, and takes the device over.
    let second = async {
        wait_until(
            || registry.get(&system.offline_device_id).is_some(),
            "the first node online",
        )
        .await;
        run_node_with_token(
            &system,
            &system.offline_device_id,
            &system.offline_device_token,
        )
        .await
    };
    tokio::select! {
        ended = first => {
            let err = ended.expect_err("the replaced node stops with an error");
            assert!(matches!(err, node::NodeError::Replaced), "{err}");
            assert!(err.to_string().contains("desktop-node login"), "{err}");
        }
        ended = second => panic!("the second node ended first: {ended:?}"),
    }
}
