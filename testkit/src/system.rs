//! A whole system on loopback, for tests and benchmarks: a real relay (QUIC +
//! WebTransport + HTTP + SQLite in a temporary folder), the local OpenAI-format provider,
//! one user with a desktop node online running the example mini-app (and a few hostile
//! ones) in wasmtime, a spare offline device, and helpers that play the browser's part
//! over a wtransport client.

#![allow(clippy::expect_used)] // test support: a failed setup is reported by its panic

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aisa_node::ai::OpenAiCompatible;
use aisa_node::apps::{App, AppInfo};
use aisa_node::config::Home;
use aisa_node::installer::Installer;
use aisa_node::installer::approvals::Approvals;
use aisa_node::installer::market::Market;
use aisa_node::node::{self, NodeContext, RelayTarget};
use aisa_node::sandbox::{Limits, Sandbox, SandboxConfig};
use aisa_node::scheduler::AdmissionConfig;
use aisa_relay::{RelayConfig, RelayHandle};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::proto::{ClientEvent, ClientRequest, Refusal};
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN, OpenHeader, StreamKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::provider::{self, FakeProvider};

/// The test user's password.
pub const PASSWORD: &str = "correct horse battery";
/// The provider key the node is configured with.
pub const API_KEY: &str = "sk-test-key";
/// How long any step may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A relay, a provider, one user with one desktop node online, and a spare offline device.
pub struct System {
    /// See the struct doc.
    pub relay: Option<RelayHandle>,
    /// See the struct doc.
    pub fake: FakeProvider,
    /// See the struct doc.
    pub data_dir: tempfile::TempDir,
    /// The database URL, `None` for SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// See the struct doc.
    pub token: String,
    /// See the struct doc.
    pub device_id: String,
    /// See the struct doc.
    pub offline_device_id: String,
    /// The spare device's token.
    pub offline_device_token: String,
    /// See the struct doc.
    pub node_stop: watch::Sender<bool>,
    /// See the struct doc.
    pub node_task: tokio::task::JoinHandle<Result<(), node::NodeError>>,
    /// See the struct doc.
    pub online: watch::Receiver<bool>,
    /// The node's latest PING round trip to the relay.
    pub heartbeat_rtt: watch::Receiver<Option<Duration>>,
}

/// A relay configuration on loopback with data in `data_dir` and the given database
/// (SQLite in `data_dir` when `None`).
pub fn relay_config(
    data_dir: &std::path::Path,
    quic_port: u16,
    database_url: Option<String>,
) -> RelayConfig {
    RelayConfig {
        quic_listen: ([127, 0, 0, 1], quic_port).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: data_dir.to_owned(),
        database_url,
        heartbeat_secs: 1,
        ..RelayConfig::default()
    }
}

/// The database for a new test system (moved to [`crate::fakes`], where the relay's tests
/// find it too).
pub use crate::fakes::test_database;

/// The example app plus hostile ones: `trapper` (traps), `spinner` (loops forever),
/// `hog` (grows memory without end), `flood` (emits without end), and `bigemit` (one
/// emit larger than a frame).
pub fn test_apps(sandbox: &Sandbox) -> HashMap<String, Arc<App>> {
    let wasm = std::fs::read(crate::guest::hello_ai_wasm()).expect("hello_ai.wasm");
    let mut apps = HashMap::new();
    let mut add = |id: &str, actions: &[&str], code: &[u8]| {
        let manifest = AppInfo {
            id: id.into(),
            version: "0.1.0".into(),
            name: id.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            enabled: true,
        };
        let module = sandbox.load(code).unwrap_or_else(|e| panic!("{id}: {e}"));
        apps.insert(id.to_owned(), Arc::new(App::wasm(manifest, module)));
    };
    add("hello-ai", &["write", "echo"], &wasm);
    add("trapper", &["run"], TRAP_WAT.as_bytes());
    add("spinner", &["run"], LOOP_WAT.as_bytes());
    add("hog", &["run"], MEMORY_BOMB_WAT.as_bytes());
    add("flood", &["run"], OUTPUT_FLOOD_WAT.as_bytes());
    add("bigemit", &["run"], BIG_EMIT_WAT.as_bytes());
    apps
}

/// Emits 3 MiB (of NUL characters) in one call: more than one frame may carry.
pub const BIG_EMIT_WAT: &str = r#"(module
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 49)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 3200000)
  (func (export "aisapp_run") (param i32 i32) (result i32)
    (call $emit (i32.const 0) (i32.const 3145728))
    i32.const 0))"#;

/// Memory and allocator exports for hand-written test guests.
pub const GUEST_PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
"#;
/// Traps at once.
pub const TRAP_WAT: &str = concat!(
    "(module",
    r#"
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32) unreachable))"#
);
/// Loops forever.
pub const LOOP_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32) (loop $spin (br $spin)) i32.const 0))"#;
/// Grows memory until refused.
pub const MEMORY_BOMB_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32)
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    i32.const 0))"#;
/// Emits 60 KB pieces forever.
pub const OUTPUT_FLOOD_WAT: &str = r#"(module
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "aisapp_run") (param i32 i32) (result i32)
    (loop $more (call $emit (i32.const 0) (i32.const 60000)) (br $more))
    i32.const 0))"#;

impl System {
    /// Starts everything with test limits (3 s, 16 MiB, 256 KiB of output) and waits
    /// until the node is online.
    pub async fn start() -> System {
        System::start_with(Limits {
            timeout: Duration::from_secs(3),
            memory_bytes: 16 << 20,
            output_bytes: 256 << 10,
        })
        .await
    }

    /// Starts everything with the given sandbox limits.
    pub async fn start_with(limits: Limits) -> System {
        System::start_full(limits, false, None).await
    }

    /// Starts everything with the given sandbox limits and action admission.
    pub async fn start_with_admission(limits: Limits, admission: AdmissionConfig) -> System {
        System::start_full(limits, false, Some(admission)).await
    }

    /// Starts everything with test limits, with the JavaScript runtime guest loaded so
    /// that JS apps installed from the marketplace run (its compiled code is cached under
    /// `target/guest/compiled`).
    pub async fn start_with_js() -> System {
        System::start_full(
            Limits {
                timeout: Duration::from_secs(10),
                memory_bytes: 64 << 20,
                output_bytes: 256 << 10,
            },
            true,
            None,
        )
        .await
    }

    async fn start_full(limits: Limits, js: bool, admission: Option<AdmissionConfig>) -> System {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let database_url = test_database().await;
        let relay = aisa_relay::start(relay_config(data_dir.path(), 0, database_url.clone()))
            .await
            .expect("relay starts");
        let fake = provider::start(([127, 0, 0, 1], 0).into(), Some(API_KEY.into()))
            .await
            .expect("fake provider");

        let store = &relay.state.store;
        let hash = aisa_relay::auth::hash_password(PASSWORD).expect("hash");
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

        let device_id = desk["device_id"]
            .as_str()
            .unwrap_or_else(|| panic!("enroll: {desk}"))
            .to_owned();
        let sandbox = Sandbox::with_config(SandboxConfig {
            cache_dir: js.then(|| crate::guest::workspace_root().join("target/guest/compiled")),
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let js_runtime = js.then(|| {
            aisa_node::js_apps::load_runtime(&sandbox, crate::guest::js_runtime_wasm())
                .expect("the JS runtime loads")
        });
        let apps = test_apps(&sandbox);
        let ai = OpenAiCompatible::new(&fake.base_url(), "gpt-4o-mini", Some(API_KEY.into()))
            .expect("adapter");
        let trusted = Market::new(&base)
            .platform_keys()
            .await
            .expect("platform keys");
        let installer = Installer::new(
            &Home::new(Some(data_dir.path().join("node"))),
            Some(Market::new(&base)),
            trusted,
            desk["device_token"].as_str().map(str::to_owned),
        );
        let ctx = Arc::new(
            NodeContext::new(
                device_id.clone(),
                desk["device_token"].as_str().expect("token").to_owned(),
                [7; 32],
                sandbox,
                apps,
                Arc::new(ai),
                limits,
                data_dir.path().join("node"),
            )
            .with_installer(installer, js_runtime)
            .with_admission(admission.unwrap_or_default()),
        );
        let online = ctx.online();
        let heartbeat_rtt = ctx.heartbeat_rtt();
        let target = RelayTarget {
            quic_addr: relay.quic_addr.to_string(),
            server_name: "localhost".into(),
            cert_sha256: Some(relay.cert_sha256()),
            pin_from: None,
            tcp_url: Some(format!("http://{}", relay.http_addr)),
            path: node::PathConfig::default(),
        };
        let (node_stop, stop_rx) = watch::channel(false);
        let node_task = tokio::spawn(node::run(ctx, target, stop_rx));
        let mut system = System {
            relay: Some(relay),
            fake,
            data_dir,
            database_url,
            token: login["token"].as_str().expect("jwt").to_owned(),
            device_id,
            offline_device_id: spare["device_id"].as_str().expect("spare").to_owned(),
            offline_device_token: spare["device_token"]
                .as_str()
                .expect("spare token")
                .to_owned(),
            node_stop,
            node_task,
            online,
            heartbeat_rtt,
        };
        system.wait_online(true).await;
        system
    }

    /// Moves the test user to a plan without practical limits (benchmarks and load tests
    /// run more actions than the free plan's day).
    pub async fn lift_plan_limits(&self) {
        let store = &self.relay().state.store;
        store
            .upsert_plan(&aisa_relay::store::Plan {
                id: "unlimited".into(),
                name: "Unlimited".into(),
                max_devices: 1_000,
                max_concurrent_streams: 1_000,
                max_actions_per_day: 1_000_000,
            })
            .await
            .expect("plan");
        store
            .set_user_plan("alice@example.com", "unlimited")
            .await
            .expect("plan");
    }

    /// The node's home folder (installed apps, pending install requests).
    pub fn node_home(&self) -> std::path::PathBuf {
        self.data_dir.path().join("node")
    }

    /// The node's waiting install requests, as `desktop-node apps approve|deny` sees them.
    pub fn approvals(&self) -> Approvals {
        Approvals::new(self.node_home().join("pending"))
    }

    /// The relay's HTTP base URL.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.relay().http_addr)
    }

    /// Uploads a bundle (zip bytes) to the developer portal as the test user; returns
    /// the HTTP status and the JSON answer.
    pub async fn publish(&self, zip: Vec<u8>) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/portal/apps", self.http_base()))
            .bearer_auth(&self.token)
            .header("content-type", "application/zip")
            .body(zip)
            .send()
            .await
            .expect("portal reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// The test user's id.
    pub fn relay_user_id(&self) -> String {
        self.relay()
            .state
            .accounts
            .tokens
            .verify(&self.token)
            .expect("the test token is valid")
            .sub
    }

    /// The running relay.
    pub fn relay(&self) -> &RelayHandle {
        self.relay.as_ref().expect("relay running")
    }

    /// Waits until the node is (or is not) connected.
    pub async fn wait_online(&mut self, want: bool) {
        tokio::time::timeout(WAIT, self.online.wait_for(|o| *o == want))
            .await
            .expect("node online state in time")
            .expect("node alive");
    }

    /// A new WebTransport session, as a browser opens one.
    pub async fn browser(&self) -> wtransport::Connection {
        browser_session(self.relay()).await
    }

    /// A stream-open header for an action on `device_id` with the user's token.
    pub fn header(&self, device_id: &str) -> OpenHeader {
        OpenHeader {
            device_id: device_id.into(),
            kind: StreamKind::Action,
            token: self.token.clone(),
            e2e: None,
        }
    }
}

/// Opens a WebTransport session to the relay, pinning its certificate hash.
pub async fn browser_session(relay: &RelayHandle) -> wtransport::Connection {
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

/// An EXECUTE_ACTION envelope (request id 42).
pub fn execute(app_id: &str, action: &str, payload: serde_json::Value) -> Envelope {
    Envelope::new(
        42,
        Body::ExecuteAction {
            app_id: app_id.into(),
            action: action.into(),
            payload: payload.to_string(),
            model: None,
        },
    )
}

/// Opens a stream, writes the given frames, and returns both halves.
///
/// A write may fail because the relay refused the stream from its header alone and
/// stopped reading (STOP_SENDING) before the later frames went out; that is not a test
/// failure: the refusal's ERROR is on the receiving half, which the caller reads.
pub async fn open(
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
        if write_frame(&mut send, frame, MAX_FRAME_LEN).await.is_err() {
            break;
        }
    }
    (send, recv)
}

/// Reads envelopes until STREAM_END or ERROR (inclusive), or the stream's end.
pub async fn read_reply(recv: &mut wtransport::RecvStream) -> Vec<Envelope> {
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

/// Runs one request on a new session, on the stream kind it belongs on (`Action` for
/// EXECUTE_ACTION, `Control` for the rest), and returns the whole reply: the messages
/// before the end, then the final one (an ERROR from the relay or desktop included).
///
/// The browser's side is the protocol's own [`ClientRequest`] machine, pumped by
/// [`run_on_stream`].
pub async fn run_action(system: &System, device_id: &str, request: Envelope) -> Vec<Envelope> {
    let session = system.browser().await;
    let (send, recv) = session
        .open_bi()
        .await
        .expect("open a stream")
        .await
        .expect("stream opened");
    run_on_stream(&system.header(device_id), &request, send, recv).await
}

/// Runs `request` on a stream that is already open, whatever carries it (WebTransport
/// here, the WebSocket leg's mux in [`crate::ws_browser`]): writes `header` (its kind set
/// for the request, see [`kind_for`]) and the request through the browser's
/// [`ClientRequest`] machine and returns the reply, ending with STREAM_END or an ERROR,
/// or cut where the stream ended early, broke the framing or was reset.
pub async fn run_on_stream<S, R>(
    header: &OpenHeader,
    request: &Envelope,
    mut send: S,
    mut recv: R,
) -> Vec<Envelope>
where
    S: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut header = header.clone();
    header.kind = kind_for(&request.body);
    let mut machine = ClientRequest::new(&header, request);
    let opening = machine.poll_transmit().expect("header and request");
    // A relay that refuses from the header alone stops reading; its ERROR follows.
    let _ = send.write_all(&opening).await;
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let read = tokio::time::timeout(WAIT, recv.read(&mut buf))
            .await
            .expect("reply in time");
        let events = match read {
            Ok(0) => machine.finish().into_iter().collect(),
            Ok(n) => machine.receive(&buf[..n]),
            // A reset stream ends the reply where it is, as an early end does below.
            Err(_) => return reply,
        };
        for event in events {
            match event {
                ClientEvent::Message(envelope) => reply.push(envelope),
                ClientEvent::Done(Ok(last)) => {
                    reply.push(last);
                    return reply;
                }
                ClientEvent::Done(Err(Refusal::Remote { code, message })) => {
                    reply.push(Envelope::error(
                        request.request_id,
                        ErrorCode::parse(&code),
                        message,
                    ));
                    return reply;
                }
                // The stream ended early or broke the framing: the reply is what came.
                ClientEvent::Done(Err(_)) => return reply,
            }
        }
    }
}

/// The stream kind a request belongs on: `Action` for EXECUTE_ACTION (the relay counts
/// those), `Control` for status, installs and removals.
pub fn kind_for(body: &Body) -> StreamKind {
    match body {
        Body::ExecuteAction { .. } => StreamKind::Action,
        _ => StreamKind::Control,
    }
}

/// The ERROR that ends a reply (panics if there is none).
pub fn error_of(reply: &[Envelope]) -> (ErrorCode, String) {
    match reply.last().map(|e| &e.body) {
        Some(Body::Error { code, message }) => (ErrorCode::parse(code), message.clone()),
        other => panic!("expected an ERROR, got {other:?} in {reply:?}"),
    }
}

/// The concatenated text of a reply's chunks.
pub fn chunks_text(reply: &[Envelope]) -> String {
    reply
        .iter()
        .filter_map(|e| match &e.body {
            Body::StreamChunk { data, .. } => Some(data.as_str()),
            _ => None,
        })
        .collect()
}

/// Starts a `[slow]` write action (one chunk every 200 ms) on `session` and returns its
/// stream once the first chunk has arrived, so the action is surely running.
pub async fn start_slow_action(
    system: &System,
    session: &wtransport::Connection,
    topic: &str,
) -> (wtransport::SendStream, wtransport::RecvStream) {
    let request = execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": format!("[slow] {topic}") }),
    );
    let (send, mut recv) = open(
        session,
        &[system.header(&system.device_id).encode(), request.encode()],
    )
    .await;
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("first chunk in time")
        .expect("read")
        .expect("a frame");
    let first = Envelope::decode(&first).expect("envelope");
    assert!(
        matches!(first.body, Body::StreamChunk { seq: 0, .. }),
        "expected the first chunk, got {first:?}"
    );
    (send, recv)
}

/// Runs a desktop node with `device_token` against the system's relay until it stops,
/// and returns how it ended (tests of refused tokens).
pub async fn run_node_with_token(
    system: &System,
    device_id: &str,
    device_token: &str,
) -> Result<(), node::NodeError> {
    // Each call is another node: its own identity key (the relay takes a second link
    // with the same key as the same node moving, not as another node).
    static NEXT_KEY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let key = NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ctx = Arc::new(NodeContext::new(
        device_id.to_owned(),
        device_token.to_owned(),
        [key; 32],
        Sandbox::new().expect("sandbox"),
        HashMap::new(),
        Arc::new(OpenAiCompatible::new(&system.fake.base_url(), "m", None).expect("adapter")),
        Limits::default(),
        system.data_dir.path().join("other-node"),
    ));
    let target = RelayTarget {
        quic_addr: system.relay().quic_addr.to_string(),
        server_name: "localhost".into(),
        cert_sha256: Some(system.relay().cert_sha256()),
        pin_from: None,
        tcp_url: Some(format!("http://{}", system.relay().http_addr)),
        path: node::PathConfig::default(),
    };
    let (_stop, stop_rx) = watch::channel(false);
    tokio::time::timeout(WAIT, node::run(ctx, target, stop_rx))
        .await
        .expect("the node gives up in time")
}
