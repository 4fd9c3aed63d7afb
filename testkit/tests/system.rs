//! The system on loopback: a real relay (QUIC + WebTransport + HTTP + SQLite), a real
//! desktop node running the example mini-app in wasmtime, the local OpenAI-format
//! provider, and a wtransport client in the browser's role speaking the wire protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN, OpenHeader, StreamKind};
use desktop_node::ai::OpenAiCompatible;
use desktop_node::apps::{App, Manifest};
use desktop_node::node::{self, NodeContext, RelayTarget};
use desktop_node::sandbox::{Limits, Sandbox};
use relay_edge::{RelayConfig, RelayHandle};
use testkit::openai::{self, FakeOpenAi};
use tokio::sync::watch;

const PASSWORD: &str = "correct horse battery";
const API_KEY: &str = "sk-test-key";
const WAIT: Duration = Duration::from_secs(20);

/// A relay, a provider, one user with one desktop node online, and a spare offline device.
struct System {
    relay: Option<RelayHandle>,
    fake: FakeOpenAi,
    data_dir: tempfile::TempDir,
    token: String,
    device_id: String,
    offline_device_id: String,
    node_stop: watch::Sender<bool>,
    node_task: tokio::task::JoinHandle<Result<(), node::NodeError>>,
    online: watch::Receiver<bool>,
}

fn relay_config(data_dir: &std::path::Path, quic_port: u16) -> RelayConfig {
    RelayConfig {
        quic_listen: ([127, 0, 0, 1], quic_port).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: data_dir.to_owned(),
        heartbeat_secs: 1,
        ..RelayConfig::default()
    }
}

fn test_apps(sandbox: &Sandbox) -> HashMap<String, App> {
    let wasm = std::fs::read(testkit::guest::hello_ai_wasm()).expect("hello_ai.wasm");
    let mut apps = HashMap::new();
    let mut add = |id: &str, actions: &[&str], code: &[u8]| {
        let manifest = Manifest {
            id: id.into(),
            version: "0.1.0".into(),
            name: id.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            enabled: true,
        };
        let module = sandbox.load(code).unwrap_or_else(|e| panic!("{id}: {e}"));
        apps.insert(id.to_owned(), App { manifest, module });
    };
    add("hello-ai", &["write", "echo"], &wasm);
    add("trapper", &["run"], TRAP_WAT.as_bytes());
    add("spinner", &["run"], LOOP_WAT.as_bytes());
    add("hog", &["run"], MEMORY_BOMB_WAT.as_bytes());
    add("flood", &["run"], OUTPUT_FLOOD_WAT.as_bytes());
    apps
}

const GUEST_PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
"#;
const TRAP_WAT: &str = concat!(
    "(module",
    r#"
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32) unreachable))"#
);
const LOOP_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32) (loop $spin (br $spin)) i32.const 0))"#;
const MEMORY_BOMB_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32)
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    i32.const 0))"#;
const OUTPUT_FLOOD_WAT: &str = r#"(module
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32)
    (loop $more (call $emit (i32.const 0) (i32.const 60000)) (br $more))
    i32.const 0))"#;

impl System {
    async fn start() -> System {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let relay = relay_edge::start(relay_config(data_dir.path(), 0))
            .await
            .expect("relay starts");
        let fake = openai::start(([127, 0, 0, 1], 0).into(), Some(API_KEY.into()))
            .await
            .expect("fake provider");

        let store = &relay.shared.store;
        let hash = relay_edge::auth::hash_password(PASSWORD).expect("hash");
        store
            .create_user("alice@example.com", &hash)
            .await
            .expect("user");
        let http = reqwest::Client::new();
        let base = format!("http://{}", relay.http_addr);
        let enroll = |name: &'static str| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let reply: serde_json::Value = http
                    .post(format!("{base}/api/devices/enroll"))
                    .json(&serde_json::json!({ "email": "alice@example.com", "password": PASSWORD, "name": name }))
                    .send()
                    .await
                    .expect("enroll")
                    .json()
                    .await
                    .expect("enroll json");
                reply
            }
        };
        let desk = enroll("desk").await;
        let spare = enroll("spare").await;
        let login: serde_json::Value = http
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({ "email": "alice@example.com", "password": PASSWORD }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");

        let device_id = desk["device_id"].as_str().expect("device_id").to_owned();
        let sandbox = Sandbox::new().expect("sandbox");
        let apps = test_apps(&sandbox);
        let ai = OpenAiCompatible::new(&fake.base_url(), "gpt-4o-mini", Some(API_KEY.into()))
            .expect("adapter");
        let limits = Limits {
            timeout: Duration::from_secs(3),
            memory_bytes: 16 << 20,
            output_bytes: 256 << 10,
        };
        let ctx = Arc::new(NodeContext::new(
            device_id.clone(),
            desk["device_token"].as_str().expect("token").to_owned(),
            [7; 32],
            sandbox,
            apps,
            Arc::new(ai),
            limits,
        ));
        let online = ctx.online();
        let target = RelayTarget {
            quic_addr: relay.quic_addr.to_string(),
            server_name: "localhost".into(),
            cert_sha256: Some(relay.cert_sha256()),
            pin_from: None,
        };
        let (node_stop, stop_rx) = watch::channel(false);
        let node_task = tokio::spawn(node::run(ctx, target, stop_rx));
        let mut system = System {
            relay: Some(relay),
            fake,
            data_dir,
            token: login["token"].as_str().expect("jwt").to_owned(),
            device_id,
            offline_device_id: spare["device_id"].as_str().expect("spare").to_owned(),
            node_stop,
            node_task,
            online,
        };
        system.wait_online(true).await;
        system
    }

    fn relay(&self) -> &RelayHandle {
        self.relay.as_ref().expect("relay running")
    }

    async fn wait_online(&mut self, want: bool) {
        tokio::time::timeout(WAIT, self.online.wait_for(|o| *o == want))
            .await
            .expect("node online state in time")
            .expect("node alive");
    }

    async fn browser(&self) -> wtransport::Connection {
        browser_session(self.relay()).await
    }

    fn header(&self, device_id: &str) -> OpenHeader {
        OpenHeader {
            device_id: device_id.into(),
            kind: StreamKind::Action,
            token: self.token.clone(),
            e2e: None,
        }
    }
}

async fn browser_session(relay: &RelayHandle) -> wtransport::Connection {
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(relay.cert_sha256())])
        .build();
    let endpoint = wtransport::Endpoint::client(config).expect("client endpoint");
    endpoint
        .connect(format!("https://127.0.0.1:{}/wt", relay.quic_addr.port()))
        .await
        .expect("WebTransport session")
}

fn execute(app_id: &str, action: &str, payload: serde_json::Value) -> Envelope {
    Envelope::new(
        42,
        Body::ExecuteAction {
            app_id: app_id.into(),
            action: action.into(),
            payload: payload.to_string(),
        },
    )
}

/// Opens a stream, writes the given frames, and returns both halves.
async fn open(
    session: &wtransport::Connection,
    frames: &[Vec<u8>],
) -> (wtransport::SendStream, wtransport::RecvStream) {
    let (mut send, recv) = session
        .open_bi()
        .await
        .expect("open")
        .await
        .expect("opened");
    for frame in frames {
        write_frame(&mut send, frame, MAX_FRAME_LEN)
            .await
            .expect("write");
    }
    (send, recv)
}

/// Reads envelopes until STREAM_END or ERROR (inclusive), or the stream's end.
async fn read_reply(recv: &mut wtransport::RecvStream) -> Vec<Envelope> {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(WAIT, read_frame(recv, MAX_FRAME_LEN))
            .await
            .expect("reply in time");
        let Ok(Some(body)) = frame else { return out };
        let env = Envelope::decode(&body).expect("valid envelope");
        let last = matches!(env.body, Body::StreamEnd { .. } | Body::Error { .. });
        out.push(env);
        if last {
            return out;
        }
    }
}

async fn run_action(system: &System, device_id: &str, request: Envelope) -> Vec<Envelope> {
    let session = system.browser().await;
    let (_send, mut recv) = open(
        &session,
        &[system.header(device_id).encode(), request.encode()],
    )
    .await;
    read_reply(&mut recv).await
}

fn error_of(reply: &[Envelope]) -> (ErrorCode, String) {
    match reply.last().map(|e| &e.body) {
        Some(Body::Error { code, message }) => (ErrorCode::parse(code), message.clone()),
        other => panic!("expected an ERROR, got {other:?} in {reply:?}"),
    }
}

fn chunks_text(reply: &[Envelope]) -> String {
    reply
        .iter()
        .filter_map(|e| match &e.body {
            Body::StreamChunk { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect()
}

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
