//! Cross-transport splicing in cluster mode: two relays in this process sharing a
//! `redis-server` (started by the test on loopback) and one SQLite database; a desktop
//! node (in process) on its TCP leg (the mux over a WebSocket at `/tunnel/desktop`,
//! its QUIC dial black-holed) connected to node B; browsers on node A, one on the
//! WebSocket leg (`/tunnel/browser`, the mux over one WebSocket) and one on
//! WebTransport. Actions run from A, through the forward connection to B, to the
//! desktop over TCP, and stream their chunks and STREAM_END back; then the other way
//! round, the WebSocket browser on A reaches a second desktop on B over QUIC. The
//! relays' metrics say which transports carried the streams.
//!
//! Needs `redis-server` (scripts/prereqs.sh installs it). Without it the test is
//! skipped, unless `CI` is set: then it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // tests: a failure is the panic

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_node::ai::OpenAiCompatible;
use aisa_node::node::{self, NodeContext, RelayTarget};
use aisa_node::sandbox::{Limits, Sandbox};
use aisa_relay::RelayHandle;
use aisa_testkit::system::{
    API_KEY, PASSWORD, WAIT, chunks_text, execute, relay_config, test_apps,
};
use aisa_tunnel::{Body, Envelope, OpenHeader, StreamKind};
use tokio::sync::watch;

const SECRET: &str = "an example cluster secret of 32+ bytes, tests only";

// ---------------------------------------------------------------- Redis

/// Whether `redis-server` can run here; absent, the test skips, or fails under CI.
fn have_redis() -> bool {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed (scripts/prereqs.sh installs it)"
        );
        eprintln!("redis-server missing: skipped");
    }
    found
}

/// A child process killed (SIGKILL) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-server` on `port` (a fresh one, nothing saved).
fn redis_server(port: u16, dir: &std::path::Path) -> Child {
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Child(child)
}

// ---------------------------------------------------------------- desktops

/// A desktop node online at `relay`, with the example app.
struct Desktop {
    device_id: String,
    _fake: aisa_testkit::provider::FakeProvider,
    _black_hole: std::net::UdpSocket,
    stop: watch::Sender<bool>,
}

/// Enrols a device of bob's at `relay` and brings a desktop node for it online, over
/// TCP (`tcp`: its QUIC dial black-holed) or over QUIC (no TCP URL given).
async fn desktop(relay: &RelayHandle, dir: &std::path::Path, tcp: bool) -> Desktop {
    let enrolled: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/devices/enroll", relay.http_addr))
        .json(&serde_json::json!({ "email": "bob@example.com", "password": PASSWORD, "name": "desk" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_id = enrolled["device_id"].as_str().expect("enrolled").to_owned();
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(API_KEY.into()))
        .await
        .unwrap();
    let sandbox = Sandbox::new().unwrap();
    let apps = test_apps(&sandbox);
    let ai = OpenAiCompatible::new(&fake.base_url(), "gpt-4o-mini", Some(API_KEY.into())).unwrap();
    let ctx = Arc::new(NodeContext::new(
        device_id.clone(),
        enrolled["device_token"].as_str().unwrap().to_owned(),
        [7; 32],
        sandbox,
        apps,
        Arc::new(ai),
        Limits::default(),
        dir.join(if tcp { "node-tcp" } else { "node-quic" }),
    ));
    let mut online = ctx.online();
    // On TCP, the QUIC dial goes to a UDP socket that never answers (a black hole);
    // TCP is dialled at once and wins, and no probe moves the node back to QUIC here.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = RelayTarget {
        quic_addr: if tcp {
            black_hole.local_addr().unwrap().to_string()
        } else {
            relay.quic_addr.to_string()
        },
        server_name: "localhost".into(),
        cert_sha256: Some(relay.cert_sha256()),
        pin_from: None,
        tcp_url: tcp.then(|| format!("http://{}", relay.http_addr)),
        path: node::PathConfig {
            head_start: Duration::ZERO,
            probe_first: Duration::from_secs(3600),
            probe_max: Duration::from_secs(3600),
            ..Default::default()
        },
    };
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(node::run(ctx, target, stop_rx));
    tokio::time::timeout(WAIT, online.wait_for(|o| *o))
        .await
        .expect("online in time")
        .unwrap();
    Desktop {
        device_id,
        _fake: fake,
        _black_hole: black_hole,
        stop,
    }
}

// ---------------------------------------------------------------- browsers

use aisa_testkit::ws_browser::{run_ws, ws_session};

/// A WebTransport browser session to `relay`.
async fn wt_session(relay: &RelayHandle) -> wtransport::Connection {
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(relay.cert_sha256())])
        .build();
    wtransport::Endpoint::client(config)
        .unwrap()
        .connect(format!("https://127.0.0.1:{}/wt", relay.quic_addr.port()))
        .await
        .expect("WebTransport session")
}

/// Runs `request` on a new WebTransport stream of `session`; the reply.
async fn run_wt(
    session: &wtransport::Connection,
    header: &OpenHeader,
    request: Envelope,
) -> Vec<Envelope> {
    let (_send, mut recv) =
        aisa_testkit::system::open(session, &[header.encode(), request.encode()]).await;
    aisa_testkit::system::read_reply(&mut recv).await
}

/// The chunks' texts of `reply`, and whether it ended with STREAM_END.
fn chunks_and_end(reply: &[Envelope]) -> (Vec<String>, bool) {
    let chunks = reply
        .iter()
        .filter_map(|e| match &e.body {
            Body::StreamChunk { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    let ended = matches!(reply.last().map(|e| &e.body), Some(Body::StreamEnd { .. }));
    (chunks, ended)
}

/// The value of the counter line `name{labels}` on the process's metrics page (0 when
/// absent). Both relays share the process-wide recorder; only this test runs here.
fn counter(relay: &RelayHandle, line: &str) -> u64 {
    let page = aisa_relay::metrics::render(&relay.state);
    page.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_either_leg_of_one_relay_run_actions_on_desktops_of_another_on_either_leg() {
    if !have_redis() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let _redis = redis_server(redis_port, dir.path());
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("relay.db").display()
    );
    let node = |name: &str| {
        let data = dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        let mut config = relay_config(&data, 0, Some(db.clone()));
        config.jwt_secret = Some("one JWT secret for both nodes, 32+ bytes long".into());
        config.cluster.node_name = Some(name.into());
        config.cluster.redis_url = Some(format!("redis://127.0.0.1:{redis_port}"));
        config.cluster.forward_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.cluster.forward_secret = Some(SECRET.into());
        aisa_relay::start(config)
    };
    let a = node("node-a").await.expect("a starts");
    let b = node("node-b").await.expect("b starts");
    let hash = aisa_relay::auth::hash_password(PASSWORD).unwrap();
    b.state
        .store
        .create_user("bob@example.com", &hash)
        .await
        .unwrap();
    let desk = desktop(&b, dir.path(), true).await;
    assert!(
        counter(
            &b,
            "aisa_relay_desktop_connections_total{result=\"ok\",transport=\"tcp\"}"
        ) >= 1,
        "the desktop is on its TCP leg"
    );
    assert_eq!(
        counter(
            &b,
            "aisa_relay_desktop_connections_total{result=\"ok\",transport=\"quic\"}"
        ),
        0,
        "and not on QUIC"
    );
    assert!(
        a.state
            .devices
            .registry
            .generation(&desk.device_id)
            .is_none()
    );

    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/auth/login", a.http_addr))
        .json(&serde_json::json!({ "email": "bob@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = OpenHeader {
        device_id: desk.device_id.clone(),
        kind: StreamKind::Action,
        token: login["token"].as_str().expect("signed in").to_owned(),
        e2e: None,
    };

    // Browser on A's WebSocket leg. The device map in Redis may lag the desktop's
    // connection a moment: retry an echo until it comes back whole (only ERRORs before).
    let ws = ws_session(a.http_addr).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = run_ws(
            &ws,
            &header,
            execute("hello-ai", "echo", serde_json::json!({ "text": "first" })),
        )
        .await;
        match reply.last().map(|e| &e.body) {
            Some(Body::StreamEnd { .. }) => {
                assert_eq!(chunks_text(&reply), "first");
                break;
            }
            Some(Body::Error { .. }) => {}
            other => panic!("neither an answer nor an ERROR: {other:?}"),
        }
        assert!(Instant::now() < deadline, "no answer in time: {reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ws_before = counter(
        &a,
        "aisa_relay_streams_total{kind=\"action\",transport=\"websocket\"}",
    );
    let wt_before = counter(
        &a,
        "aisa_relay_streams_total{kind=\"action\",transport=\"webtransport\"}",
    );
    let tcp_before = counter(&b, "aisa_relay_desktop_streams_total{transport=\"tcp\"}");
    let out_before = counter(&a, "aisa_relay_forwarded_streams_total{direction=\"out\"}");
    let in_before = counter(&b, "aisa_relay_forwarded_streams_total{direction=\"in\"}");
    let spliced_before = b
        .state
        .traffic
        .bytes_spliced
        .load(std::sync::atomic::Ordering::Relaxed);

    // A streaming action (one chunk per provider token), WebSocket -> A -> B -> TCP.
    let expected = aisa_testkit::provider::reply_tokens("Write a short paragraph about QUIC.");
    let write = || execute("hello-ai", "write", serde_json::json!({ "topic": "QUIC" }));
    let (chunks, ended) = chunks_and_end(&run_ws(&ws, &header, write()).await);
    assert!(expected.len() > 1, "the answer streams in several chunks");
    assert_eq!(
        chunks, expected,
        "one chunk per token, in order, over WS+TCP"
    );
    assert!(ended, "STREAM_END came back through the forward connection");

    // Several streams at once on the one WebSocket, each forwarded.
    let runs = (0..4).map(|i| {
        let (ws, header) = (ws.clone(), header.clone());
        tokio::spawn(async move {
            let text = format!("websocket stream {i} across relays");
            let reply = run_ws(
                &ws,
                &header,
                execute("hello-ai", "echo", serde_json::json!({ "text": text })),
            )
            .await;
            (text, chunks_and_end(&reply).1, chunks_text(&reply))
        })
    });
    for run in runs {
        let (sent, ended, got) = run.await.unwrap();
        assert!(ended);
        assert_eq!(sent, got);
    }

    // The other browser transport on A: WebTransport -> A -> B -> TCP.
    let wt = wt_session(&a).await;
    let (chunks, ended) = chunks_and_end(&run_wt(&wt, &header, write()).await);
    assert_eq!(
        chunks, expected,
        "one chunk per token, in order, over WT+TCP"
    );
    assert!(ended);

    // What the relays counted: 5 streams from A's WebSocket leg and 1 from its
    // WebTransport leg, all 6 forwarded out of A, into B, and to the desktop over TCP.
    let delta = |relay: &RelayHandle, line: &str, before: u64| counter(relay, line) - before;
    assert_eq!(
        delta(
            &a,
            "aisa_relay_streams_total{kind=\"action\",transport=\"websocket\"}",
            ws_before
        ),
        5
    );
    assert_eq!(
        delta(
            &a,
            "aisa_relay_streams_total{kind=\"action\",transport=\"webtransport\"}",
            wt_before
        ),
        1
    );
    assert_eq!(
        delta(
            &a,
            "aisa_relay_forwarded_streams_total{direction=\"out\"}",
            out_before
        ),
        6
    );
    assert_eq!(
        delta(
            &b,
            "aisa_relay_forwarded_streams_total{direction=\"in\"}",
            in_before
        ),
        6
    );
    assert_eq!(
        delta(
            &b,
            "aisa_relay_desktop_streams_total{transport=\"tcp\"}",
            tcp_before
        ),
        6
    );
    assert_eq!(
        counter(&b, "aisa_relay_desktop_streams_total{transport=\"quic\"}"),
        0,
        "no stream reached a desktop over QUIC yet"
    );
    assert!(
        b.state
            .traffic
            .bytes_spliced
            .load(std::sync::atomic::Ordering::Relaxed)
            > spliced_before,
        "the holder spliced the forwarded streams onto the desktop's TCP link"
    );

    // The other way round: a second desktop of bob's on B over QUIC, reached from the
    // same WebSocket browser on A (WebSocket -> A -> B -> QUIC).
    let quic_desk = desktop(&b, dir.path(), false).await;
    let quic_header = OpenHeader {
        device_id: quic_desk.device_id.clone(),
        ..header.clone()
    };
    let quic_before = counter(&b, "aisa_relay_desktop_streams_total{transport=\"quic\"}");
    let deadline = Instant::now() + WAIT;
    let reply = loop {
        let reply = run_ws(&ws, &quic_header, write()).await;
        match reply.last().map(|e| &e.body) {
            Some(Body::StreamEnd { .. }) => break reply,
            Some(Body::Error { .. }) => {}
            other => panic!("neither an answer nor an ERROR: {other:?}"),
        }
        assert!(Instant::now() < deadline, "no answer in time: {reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (chunks, ended) = chunks_and_end(&reply);
    assert_eq!(
        chunks, expected,
        "one chunk per token, in order, over WS+QUIC"
    );
    assert!(ended);
    assert_eq!(
        delta(
            &b,
            "aisa_relay_desktop_streams_total{transport=\"quic\"}",
            quic_before
        ),
        1,
        "the stream reached the desktop over QUIC"
    );
    assert_eq!(
        counter(&b, "aisa_relay_desktop_streams_total{transport=\"tcp\"}") - tcp_before,
        6,
        "and not over the other desktop's TCP link"
    );
    let _ = quic_desk.stop.send(true);
    let _ = desk.stop.send(true);
}
