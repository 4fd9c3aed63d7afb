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
//! Needs `redis-server` (scripts/prereqs.sh installs it). Without it the test fails,
//! unless `AISA_TEST_REDIS_OPTIONAL=1` (and no `CI`) says to skip it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // tests: a failure is the panic

use std::time::{Duration, Instant};

use aisa_relay::RelayHandle;
use aisa_testkit::system::{WAIT, chunks_text, execute};
use aisa_tunnel::{Body, Envelope, OpenHeader};

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{
    Leg, Redis, action_header, add_user, desktop_node, have_redis, node_config, sign_in,
};

// ---------------------------------------------------------------- browsers

use aisa_testkit::ws_browser::{run_ws, ws_session};

/// A WebTransport browser session to `relay`.
async fn wt_session(relay: &RelayHandle) -> wtransport::Connection {
    cluster_support::browser(relay.quic_addr, relay.cert_sha256()).await
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
    let redis = Redis::single();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("relay.db").display()
    );
    let node =
        |name: &str| aisa_relay::start(node_config(&dir.path().join(name), name, &db, &redis.url));
    let a = node("node-a").await.expect("a starts");
    let b = node("node-b").await.expect("b starts");
    add_user(&b, "bob@example.com").await;
    let desk = desktop_node(&b, "bob@example.com", dir.path(), Leg::Tcp).await;
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

    let token = sign_in(a.http_addr, "bob@example.com").await;
    let header = action_header(&desk.device_id, &token);

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
    let quic_desk = desktop_node(&b, "bob@example.com", dir.path(), Leg::Quic).await;
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
