//! Relays sharing state through Redis (`[cluster] redis_url`): two relay nodes in this
//! process, one SQLite database, and a real `redis-server` started by the test (one
//! server, or a 3-master Redis Cluster made with `redis-cli --cluster create`), all on
//! loopback.
//!
//! Shown here: a browser's status events on one node see a desktop on the other come
//! and go; a device revoked or a user signed out everywhere on one node is cut on the
//! other within a second (with the periodic sweep switched off, so only pub/sub can do
//! it) (the plan's limits and sign-in limits across nodes: `cluster_limits.rs`);
//! Redis killed and restarted: the nodes write their devices again, and during the
//! outage `locate` fails for a device on another node while a local one is still
//! found; a starting node clears only its own entries; a node killed outright (a
//! process of its own, SIGKILL): browsers on the other node are told its desktops are
//! offline within seconds, except one that reconnected there.
//!
//! Uses the Redis servers scripts/services.sh started (`AISA_TEST_REDIS`,
//! `AISA_TEST_REDIS_CLUSTER`) when set, otherwise starts its own; the restart and
//! start-up tests always start their own. Needs `redis-server` and `redis-cli`
//! (scripts/prereqs.sh installs them); without them the tests fail, unless
//! `AISA_TEST_REDIS_OPTIONAL=1` says to skip them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::path::Path;
use std::time::{Duration, Instant};

use aisa_relay::cluster::shared::PRESENCE_CHANNEL;
use aisa_relay::cluster::{ClusterUnavailable, NodeName};
use aisa_relay::config::ClusterConfig;
use aisa_relay::limits::take_stream_places;
use aisa_relay::{RelayConfig, RelayHandle};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, Hello, MAX_FRAME_LEN, OpenHeader, StreamKind};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse battery";
const SECRET: &str = "0123456789abcdef0123456789abcdef-cluster-test";

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{Redis, have_redis};

// ---------------------------------------------------------------- relay fixtures

/// Two relay nodes sharing one database and one Redis.
struct Nodes {
    a: RelayHandle,
    b: RelayHandle,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn config(dir: &Path, node: &str, redis_url: &str, db: &str) -> RelayConfig {
    let data_dir = dir.join(node);
    std::fs::create_dir_all(&data_dir).unwrap();
    RelayConfig {
        quic_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir,
        database_url: Some(db.to_owned()),
        jwt_secret: Some(SECRET.into()),
        // Only pub/sub can cut sessions within the test's second.
        revocation_check_secs: 3600,
        heartbeat_secs: 2,
        login_max_failures: 3,
        // Short, so that the failures this leaves in a shared Redis soon expire.
        login_window_secs: 30,
        cluster: ClusterConfig {
            redis_url: Some(redis_url.to_owned()),
            node_name: Some(node.to_owned()),
            ..ClusterConfig::default()
        },
        ..RelayConfig::default()
    }
}

impl Nodes {
    /// Nodes `node-a` and `node-b` (with `suffix`: `node-a-SUFFIX`…, so that tests
    /// sharing one Redis do not clear each other's entries).
    async fn start(redis: &Redis, suffix: &str) -> Nodes {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let db = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("relay.db").display()
        );
        let a = aisa_relay::start(config(
            dir.path(),
            &format!("node-a{suffix}"),
            &redis.url,
            &db,
        ))
        .await
        .expect("node a starts");
        let b = aisa_relay::start(config(
            dir.path(),
            &format!("node-b{suffix}"),
            &redis.url,
            &db,
        ))
        .await
        .expect("node b starts");
        assert!(a.state.cluster.is_clustered());
        Nodes {
            a,
            b,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn post(&self, relay: &RelayHandle, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("http://{}{path}", relay.http_addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Signs up on node a; returns the answer (token, refresh_token, user_id).
    async fn user(&self, email: &str) -> Value {
        let (status, reply) = self
            .post(
                &self.a,
                "/api/auth/signup",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        reply
    }

    /// Enrolls a device (through node a); returns (device id, device token).
    async fn device(&self, email: &str) -> (String, String) {
        let (status, reply) = self
            .post(
                &self.a,
                "/api/devices/enroll",
                json!({"email": email, "password": PASSWORD, "name": "laptop"}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        (
            reply["device_id"].as_str().unwrap().to_owned(),
            reply["device_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Signs `email` up, enrolls a device and connects it to node a; returns the user's
    /// access token, the device id and the connected desktop.
    async fn desktop_on_a(&self, email: &str) -> (String, String, Desktop) {
        let user = self.user(email).await;
        let token = user["token"].as_str().unwrap().to_owned();
        let (device_id, device_token) = self.device(email).await;
        let desktop = connect_desktop(&self.a, &device_token).await;
        (token, device_id, desktop)
    }

    async fn stop(self) {
        self.a.shutdown(Duration::from_millis(100)).await;
        self.b.shutdown(Duration::from_millis(100)).await;
    }
}

/// A desktop connected to `relay` (HELLO answered with WELCOME), sending a PING every
/// second so that the relay does not take it for gone (until dropped or closed).
struct Desktop {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    _recv: quinn::RecvStream,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

async fn connect_desktop(relay: &RelayHandle, device_token: &str) -> Desktop {
    connect_desktop_at(relay.quic_addr, relay.cert_sha256(), device_token).await
}

/// [`connect_desktop`] to the relay at `quic` whose certificate is `cert_sha256`.
async fn connect_desktop_at(
    quic: std::net::SocketAddr,
    cert_sha256: [u8; 32],
    device_token: &str,
) -> Desktop {
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    let conn = endpoint
        .connect_with(
            aisa_node::node::client_config(Some(cert_sha256)),
            quic,
            "localhost",
        )
        .unwrap()
        .await
        .expect("desktop connects");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        device_token: device_token.to_owned(),
        node_version: "0.1.0".into(),
        identity_key: vec![1; 32],
    };
    write_frame(&mut send, &hello.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    let reply = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("an answer in time")
        .unwrap()
        .unwrap();
    let reply = Envelope::decode(&reply).unwrap();
    assert!(matches!(reply.body, Body::Welcome { .. }), "{reply:?}");
    let heartbeats = tokio::spawn(async move {
        for nonce in 0.. {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let ping = Envelope::new(0, Body::Ping { nonce });
            if write_frame(&mut send, &ping.encode(), MAX_FRAME_LEN)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Desktop {
        _endpoint: endpoint,
        conn,
        _recv: recv,
        heartbeats,
    }
}

async fn browser(relay: &RelayHandle) -> wtransport::Connection {
    cluster_support::browser(relay.quic_addr, relay.cert_sha256()).await
}

/// A status-event stream opened with `token`.
async fn status_stream(
    session: &wtransport::Connection,
    token: &str,
) -> (wtransport::SendStream, wtransport::RecvStream) {
    let (mut send, recv) = session.open_bi().await.unwrap().await.unwrap();
    let header = OpenHeader {
        device_id: String::new(),
        kind: StreamKind::Control,
        token: token.to_owned(),
        e2e: None,
    };
    write_frame(&mut send, &header.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    (send, recv)
}

async fn next_event(recv: &mut wtransport::RecvStream) -> Envelope {
    let frame = tokio::time::timeout(WAIT, read_frame(recv, MAX_FRAME_LEN))
        .await
        .expect("an event in time")
        .expect("read")
        .expect("an event, not the end");
    Envelope::decode(&frame).unwrap()
}

fn online(event: &Envelope) -> Option<bool> {
    match event.body {
        Body::DeviceStatus { online, .. } => Some(online),
        _ => None,
    }
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------- the tests

fn unique() -> String {
    format!("-{}", uuid::Uuid::new_v4().simple())
}

async fn presence_is_seen_across_nodes(redis: Redis) {
    let suffix = unique();
    let nodes = Nodes::start(&redis, &suffix).await;
    let user = nodes.user("ada@example.com").await;
    let token = user["token"].as_str().unwrap();
    let (device_id, device_token) = nodes.device("ada@example.com").await;

    // A browser watches on node b; the desktop is not connected yet.
    let session = browser(&nodes.b).await;
    let (_send, mut events) = status_stream(&session, token).await;
    let first = next_event(&mut events).await;
    assert_eq!(
        (first.device_id.as_str(), online(&first)),
        (device_id.as_str(), Some(false))
    );
    assert_eq!(
        next_event(&mut events).await.body,
        Body::StatusSnapshotEnd { devices: 1 }
    );
    assert_eq!(nodes.b.state.cluster.locate(&device_id).await, Ok(None));

    // It connects to node a: b's browser sees it come, and b locates it on a.
    let desktop = connect_desktop(&nodes.a, &device_token).await;
    let came = next_event(&mut events).await;
    assert_eq!(
        (came.device_id.as_str(), online(&came)),
        (device_id.as_str(), Some(true))
    );
    let placement = nodes
        .b
        .state
        .cluster
        .locate(&device_id)
        .await
        .unwrap()
        .expect("placed");
    assert_eq!(
        placement.node,
        NodeName::new(&format!("node-a{suffix}")).unwrap()
    );
    assert!(!nodes.b.state.cluster.is_local(&placement));
    // Locating a device connected to the node itself asks Redis nothing.
    let before = nodes.a.state.cluster.shared().unwrap().counts.of("locate");
    let here = nodes
        .a
        .state
        .cluster
        .locate(&device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        nodes.a.state.cluster.shared().unwrap().counts.of("locate"),
        before,
        "no round trip for a local device"
    );
    assert!(nodes.a.state.cluster.is_local(&here));
    assert_eq!(here.generation, placement.generation);

    // A snapshot taken on b now says online too.
    let (_send2, mut later) = status_stream(&session, token).await;
    assert_eq!(online(&next_event(&mut later).await), Some(true));

    // It connects again, to node b (a new network, another balancer pick): the later
    // connection wins, the one on a is closed as replaced, and no browser is told it
    // went offline meanwhile.
    let moved = connect_desktop(&nodes.b, &device_token).await;
    let closed = tokio::time::timeout(Duration::from_secs(1), desktop.conn.closed())
        .await
        .expect("the older connection on node a is closed within a second");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, aisa_relay::desktop::CLOSE_REPLACED.into())
        }
        other => panic!("closed otherwise: {other}"),
    }
    let again = next_event(&mut events).await;
    assert_eq!(online(&again), Some(true), "{again:?}");
    let there = nodes
        .a
        .state
        .cluster
        .locate(&device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(there.node.as_str(), format!("node-b{suffix}"));
    assert!(there.generation > here.generation);
    let quiet = tokio::time::timeout(
        Duration::from_millis(500),
        read_frame(&mut events, MAX_FRAME_LEN),
    )
    .await;
    assert!(
        quiet.is_err(),
        "no 'offline' for the replaced connection: {quiet:?}"
    );
    let row = nodes
        .a
        .state
        .store
        .device(&device_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "online");
    assert_eq!(row.relay_node, Some(format!("node-b{suffix}")));
    let desktop = moved;

    // It goes: b's browser sees it go, and the map forgets it.
    desktop.conn.close(0u32.into(), b"bye");
    let went = next_event(&mut events).await;
    assert_eq!(
        (went.device_id.as_str(), online(&went)),
        (device_id.as_str(), Some(false))
    );
    let (b, id) = (&nodes.b, device_id.as_str());
    eventually("the device map forgets the device", || async move {
        b.state.cluster.locate(id).await == Ok(None)
    })
    .await;
    nodes.stop().await;
}

async fn revocations_cut_on_every_node_within_a_second(redis: Redis) {
    let nodes = Nodes::start(&redis, &unique()).await;
    let user = nodes.user("bo@example.com").await;
    let token = user["token"].as_str().unwrap();
    let refresh = user["refresh_token"].as_str().unwrap();
    let (device_id, device_token) = nodes.device("bo@example.com").await;

    // The desktop on a; revoked through b's API.
    let desktop = connect_desktop(&nodes.a, &device_token).await;
    let revoke = nodes
        .http
        .delete(format!(
            "http://{}/api/devices/{device_id}",
            nodes.b.http_addr
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status().as_u16(), 204);
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(1), desktop.conn.closed())
        .await
        .expect("the desktop on node a is cut within a second");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, aisa_relay::desktop::CLOSE_REVOKED.into())
        }
        other => panic!("closed otherwise: {other}"),
    }
    eprintln!("device cut on the other node after {:?}", started.elapsed());

    // A browser session on a uses the token; signing out everywhere on b cuts it.
    let session = browser(&nodes.a).await;
    let (_send, mut events) = status_stream(&session, token).await;
    next_event(&mut events).await; // the session is now known to use the token
    let (status, _) = nodes
        .post(
            &nodes.b,
            "/api/auth/logout",
            json!({"refresh_token": refresh, "everywhere": true}),
        )
        .await;
    assert_eq!(status, 204);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), session.closed())
        .await
        .expect("the browser session on node a is cut within a second");
    eprintln!(
        "session cut on the other node after {:?}",
        started.elapsed()
    );
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_presence_is_seen_across_nodes() {
    if have_redis() {
        presence_is_seen_across_nodes(Redis::shared("AISA_TEST_REDIS", Redis::single)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_presence_is_seen_across_nodes() {
    if have_redis() {
        presence_is_seen_across_nodes(Redis::shared("AISA_TEST_REDIS_CLUSTER", Redis::cluster))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_revocations_cut_on_every_node_within_a_second() {
    if have_redis() {
        revocations_cut_on_every_node_within_a_second(Redis::shared(
            "AISA_TEST_REDIS",
            Redis::single,
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_revocations_cut_on_every_node_within_a_second() {
    if have_redis() {
        revocations_cut_on_every_node_within_a_second(Redis::shared(
            "AISA_TEST_REDIS_CLUSTER",
            Redis::cluster,
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_the_nodes_register_again_and_locate_fails_meanwhile() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::single();
    let nodes = Nodes::start(&redis, "").await;
    nodes.user("di@example.com").await;
    let (device_id, device_token) = nodes.device("di@example.com").await;
    let desktop = connect_desktop(&nodes.a, &device_token).await;
    let (b, id) = (&nodes.b, device_id.as_str());
    eventually("b locates the device on a", || async move {
        matches!(b.state.cluster.locate(id).await, Ok(Some(_)))
    })
    .await;

    // Redis dies (with everything in it).
    redis.servers[0].kill();
    let started = Instant::now();
    assert_eq!(
        nodes.b.state.cluster.locate(&device_id).await,
        Err(ClusterUnavailable),
        "a device on another node cannot be located"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let here = nodes.a.state.cluster.locate(&device_id).await;
    assert!(
        matches!(here, Ok(Some(_))),
        "a local device still is: {here:?}"
    );
    // Local decisions go on: a stream place on a is taken from this node's counts.
    let user_id = nodes
        .a
        .state
        .store
        .device(&device_id)
        .await
        .unwrap()
        .unwrap()
        .user_id;
    take_stream_places(&nodes.a.state, &user_id, 2, Some(5))
        .await
        .expect("local limits work without Redis");

    // Redis is back, empty: node a writes its device again, b finds it.
    redis.servers[0].spawn();
    eventually(
        "b locates the device again after the restart",
        || async move {
            matches!(b.state.cluster.locate(id).await, Ok(Some(p)) if p.node.as_str() == "node-a")
        },
    )
    .await;
    assert!(
        redis.servers[0]
            .cli(&["SMEMBERS", "aisa:relay:node:{node-a}:devices"])
            .contains(&device_id),
        "node a's set was written again"
    );
    // And the subscriptions are back (each node's subscriber reconnects on its own
    // backoff, so wait until both are subscribed again): b sees the desktop leave.
    let server = &redis.servers[0];
    eventually("both nodes subscribed again", || async move {
        let out = server.cli(&["PUBSUB", "NUMSUB", PRESENCE_CHANNEL]);
        out.lines().nth(1).map(str::trim) == Some("2")
    })
    .await;
    let token = nodes
        .post(
            &nodes.b,
            "/api/auth/login",
            json!({"email": "di@example.com", "password": PASSWORD}),
        )
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = browser(&nodes.b).await;
    let (_send, mut events) = status_stream(&session, &token).await;
    assert_eq!(online(&next_event(&mut events).await), Some(true));
    next_event(&mut events).await; // the snapshot's end
    desktop.conn.close(0u32.into(), b"bye");
    assert_eq!(online(&next_event(&mut events).await), Some(false));
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_clears_only_its_own_entries() {
    if !have_redis() {
        return;
    }
    let redis = Redis::single();
    let server = &redis.servers[0];
    // What a crashed "node-a" and a live "node-z" left.
    for (device, node) in [("dev-mine", "node-a"), ("dev-theirs", "node-z")] {
        server.cli(&[
            "HSET",
            &format!("aisa:relay:device:{{{device}}}"),
            "node",
            node,
            "addr",
            "127.0.0.1:1",
            "gen",
            "1",
            "user",
            "u",
        ]);
        server.cli(&[
            "SADD",
            &format!("aisa:relay:node:{{{node}}}:devices"),
            device,
        ]);
    }
    // A device of node-a's that node-z took over since (a later connection) stays.
    server.cli(&[
        "HSET",
        "aisa:relay:device:{dev-moved}",
        "node",
        "node-z",
        "addr",
        "127.0.0.1:1",
        "gen",
        "2",
        "user",
        "u",
    ]);
    server.cli(&["SADD", "aisa:relay:node:{node-a}:devices", "dev-moved"]);

    let nodes = Nodes::start(&redis, "").await;
    let exists = |device: &str| server.cli(&["EXISTS", &format!("aisa:relay:device:{{{device}}}")]);
    assert_eq!(exists("dev-mine").trim(), "0", "node-a's own entry cleared");
    assert_eq!(
        exists("dev-theirs").trim(),
        "1",
        "another node's entry kept"
    );
    assert_eq!(
        exists("dev-moved").trim(),
        "1",
        "an entry another node took over kept"
    );
    assert_eq!(
        nodes
            .b
            .state
            .cluster
            .locate("dev-theirs")
            .await
            .unwrap()
            .unwrap()
            .node
            .as_str(),
        "node-z"
    );
    nodes.stop().await;
}

/// Reads `events` into `view` (device id → online) until `done(view)`; false when
/// `within` passes first.
async fn watch_until(
    events: &mut wtransport::RecvStream,
    view: &mut std::collections::HashMap<String, bool>,
    within: Duration,
    done: impl Fn(&std::collections::HashMap<String, bool>) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !done(view) {
        let Ok(frame) = tokio::time::timeout_at(deadline, read_frame(events, MAX_FRAME_LEN)).await
        else {
            return false;
        };
        let event =
            Envelope::decode(&frame.expect("read").expect("an event, not the end")).unwrap();
        if let Some(online) = online(&event) {
            view.insert(event.device_id, online);
        }
    }
    true
}

/// The gap this covers: pub/sub delivers only to subscribers connected when a message is
/// published, so a desktop that leaves (or joins) node a while Redis is down was never
/// seen to by browsers on node b. Now a publisher publishes again what it could not, and
/// a subscriber that is back resyncs what its browsers watch from the device map: the
/// browser on b shows the truth within seconds of Redis's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_changed_while_redis_restarted_reaches_browsers_on_the_other_node() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::single();
    let nodes = Nodes::start(&redis, "").await;
    let user = nodes.user("eve@example.com").await;
    let token = user["token"].as_str().unwrap();
    let (leaving, leaving_token) = nodes.device("eve@example.com").await;
    let (joining, joining_token) = nodes.device("eve@example.com").await;
    let desktop = connect_desktop(&nodes.a, &leaving_token).await;
    let (b, id) = (&nodes.b, leaving.as_str());
    eventually("b locates the desktop on a", || async move {
        matches!(b.state.cluster.locate(id).await, Ok(Some(_)))
    })
    .await;

    // A browser on b watches both devices: one online (on a), one offline.
    let session = browser(&nodes.b).await;
    let (_send, mut events) = status_stream(&session, token).await;
    let mut view = std::collections::HashMap::new();
    assert!(
        watch_until(&mut events, &mut view, WAIT, |v| v.len() == 2).await,
        "the snapshot"
    );
    assert!(view[&leaving], "the desktop on a is online");
    assert!(!view[&joining], "the other device is offline");

    // Redis dies. Meanwhile, on a, one desktop leaves and the other joins: a cannot
    // publish either change.
    let a_shared = nodes.a.state.cluster.shared().unwrap().clone();
    let failed_before = a_shared
        .counts
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    redis.servers[0].kill();
    desktop.conn.close(0u32.into(), b"bye");
    let (a, gone) = (&nodes.a, leaving.as_str());
    eventually("the desktop left node a", || async move {
        a.state.devices.registry.generation(gone).is_none()
    })
    .await;
    let _joined = connect_desktop(&nodes.a, &joining_token).await;
    let shared = &a_shared;
    eventually("node a tried to publish both changes", || async move {
        shared
            .counts
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= failed_before + 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (view[&leaving], view[&joining]),
        (true, false),
        "nothing reached b during the outage"
    );

    // Redis is back, empty. The browser on b converges to the truth within seconds (the
    // nodes reconnect within 2 s; an offline is believed after OFFLINE_GRACE).
    redis.servers[0].spawn();
    let back = Instant::now();
    let converged = watch_until(&mut events, &mut view, Duration::from_secs(10), |v| {
        !v[&leaving] && v[&joining]
    })
    .await;
    assert!(
        converged,
        "the browser on b still shows {view:?} 10 s after Redis came back"
    );
    eprintln!(
        "browser on node b converged {:?} after Redis came back",
        back.elapsed()
    );
    // And stays there: no status contradicts it afterwards.
    let quiet = watch_until(&mut events, &mut view, Duration::from_secs(3), |v| {
        v[&leaving] || !v[&joining]
    })
    .await;
    assert!(!quiet, "a later status contradicted the truth: {view:?}");
    nodes.stop().await;
}

/// Redis behind Sentinel (`redis-sentinel://…?sentinelServiceName=…`): a master and a
/// replica from Debian's redis-server, one Sentinel. Two relays (forwarding on) run a
/// desktop on a and a browser on b; the master is killed, the Sentinel promotes the
/// replica, and the relays carry on: the browser on b still runs actions on the desktop
/// on a, and still sees it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_fails_over_and_the_relays_carry_on() {
    if !have_redis() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut redis = Redis::sentinel();
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("relay.db").display()
    );
    let node = |name: &str| {
        aisa_relay::start(cluster_support::node_config(
            &dir.path().join(name),
            name,
            &db,
            &redis.url,
        ))
    };
    let a = node("node-a").await.expect("a starts on Sentinel");
    let b = node("node-b").await.expect("b starts on Sentinel");
    cluster_support::add_user(&a, "fay@example.com").await;
    let desk = cluster_support::desktop_node(
        &a,
        "fay@example.com",
        dir.path(),
        cluster_support::Leg::Quic,
    )
    .await;
    let token = cluster_support::sign_in(b.http_addr, "fay@example.com").await;
    let token = token.as_str();
    let header = cluster_support::action_header(&desk.device_id, token);
    let session = browser(&b).await;
    cluster_support::echo_until_ok(&session, &header, "before the failover").await;
    let (_send, mut events) = status_stream(&session, token).await;
    let mut view = std::collections::HashMap::new();
    assert!(watch_until(&mut events, &mut view, WAIT, |v| !v.is_empty()).await);
    assert!(view[&desk.device_id], "the desktop on a is online");

    // The master dies; the Sentinel promotes the replica.
    let replica = redis.servers[1].port;
    redis.servers[0].kill();
    let killed = Instant::now();
    let redis_ref = &redis;
    eventually("the Sentinel promotes the replica", || async move {
        redis_ref.sentinel_master_port() == Some(replica)
    })
    .await;
    eprintln!("Sentinel failed over after {:?}", killed.elapsed());

    // The relays follow: b locates the desktop on a through the new master, and the
    // action is forwarded to it (ERRORs while they reconnect, never a hang).
    let errors = cluster_support::echo_until_ok(&session, &header, "after the failover").await;
    eprintln!(
        "an action from b reached the desktop on a {:?} after the master died (errors before: {errors:?})",
        killed.elapsed()
    );
    let placed = redis.servers[1].cli(&[
        "HGET",
        &format!("aisa:relay:device:{{{}}}", desk.device_id),
        "node",
    ]);
    assert_eq!(
        placed.trim(),
        "node-a",
        "the new master holds the device map"
    );
    assert!(killed.elapsed() < WAIT, "{:?}", killed.elapsed());

    // Pub/sub runs on the new master: the desktop leaves a, the browser on b sees it go.
    let _ = desk.stop.send(true);
    let id = desk.device_id.clone();
    assert!(
        watch_until(&mut events, &mut view, WAIT, |v| !v[&id]).await,
        "the browser on b saw the desktop leave after the failover"
    );
    a.shutdown(Duration::from_millis(100)).await;
    b.shutdown(Duration::from_millis(100)).await;
}

/// The test's own connection to Redis (RESP written by hand), for commands that must get
/// through while Redis takes no new connections.
struct Admin(std::io::BufReader<std::net::TcpStream>);

impl Admin {
    fn connect(port: u16) -> Admin {
        Admin(std::io::BufReader::new(
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap(),
        ))
    }

    /// How many clients Redis has connected (`INFO clients`).
    fn connected_clients(&mut self) -> usize {
        let info = self.command(&["INFO", "clients"]);
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Sends a command; its reply (a status, an integer or a bulk string) as text.
    fn command(&mut self, args: &[&str]) -> String {
        use std::io::{BufRead, Read, Write};
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.0.get_mut().write_all(out.as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        match line.as_bytes().first() {
            Some(b'$') => {
                let len: usize = line[1..].trim().parse().unwrap();
                let mut body = vec![0; len + 2];
                self.0.read_exact(&mut body).unwrap();
                String::from_utf8_lossy(&body[..len]).into_owned()
            }
            Some(b'+' | b':') => line[1..].trim().to_owned(),
            _ => panic!("redis answered {line:?} to {args:?}"),
        }
    }
}

/// The gap the subscriber's resync covers by itself: node b's subscriber is away (its
/// connection cut, and Redis taking no new ones for a while) while node a, whose own
/// connection is fine, publishes a desktop leaving: the message reaches no one on b and
/// a has no reason to publish it again. Once b's subscriber is back it resyncs from the
/// device map, and the browser on b shows the desktop offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_published_while_a_subscriber_was_away_reaches_its_browsers() {
    if !have_redis() {
        return;
    }
    let redis = Redis::single();
    let nodes = Nodes::start(&redis, "").await;
    let (token, device_id, desktop) = nodes.desktop_on_a("gus@example.com").await;
    let (b, id) = (&nodes.b, device_id.as_str());
    eventually("b locates the desktop on a", || async move {
        matches!(b.state.cluster.locate(id).await, Ok(Some(_)))
    })
    .await;
    let session = browser(&nodes.b).await;
    let (_send, mut events) = status_stream(&session, &token).await;
    let mut view = std::collections::HashMap::new();
    assert!(watch_until(&mut events, &mut view, WAIT, |v| !v.is_empty()).await);
    assert!(view[&device_id], "online on a");

    // Both subscribers are cut, and Redis takes no new connection (the nodes' command
    // connections stay).
    let mut admin = Admin::connect(redis.servers[0].port);
    let connected = admin.connected_clients();
    admin.command(&["CONFIG", "SET", "maxclients", &(connected - 2).to_string()]);
    assert_eq!(admin.command(&["CLIENT", "KILL", "TYPE", "pubsub"]), "2");

    // The desktop leaves a; a publishes it (to no one).
    let a_shared = nodes.a.state.cluster.shared().unwrap().clone();
    let published = a_shared.counts.of("publish");
    let errors = a_shared
        .counts
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    desktop.conn.close(0u32.into(), b"bye");
    let shared = &a_shared;
    eventually("node a published the change", || async move {
        shared.counts.of("publish") > published
    })
    .await;
    assert_eq!(
        a_shared
            .counts
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        errors,
        "a's publish went through"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(view[&device_id], "nothing reached b meanwhile");
    assert!(
        !watch_until(&mut events, &mut view, Duration::from_millis(200), |v| !v
            [&device_id])
        .await
    );

    // Redis takes connections again: b's subscriber comes back and resyncs.
    admin.command(&["CONFIG", "SET", "maxclients", "10000"]);
    let back = Instant::now();
    let id = device_id.clone();
    assert!(
        watch_until(&mut events, &mut view, Duration::from_secs(10), |v| !v[&id]).await,
        "the browser on b still shows the desktop online 10 s after its subscriber could return"
    );
    eprintln!(
        "browser on node b corrected {:?} after its subscriber could return",
        back.elapsed()
    );
    nodes.stop().await;
}

/// The gap the liveness covers (`aisa_relay::cluster::liveness`): a relay node killed
/// outright (SIGKILL) publishes nothing more, and its desktops' device map entries live on
/// for `3 × heartbeat_secs` (30 s here, far longer than this test). Two relay processes;
/// two desktops on node a, a browser's status stream on node b. Node a is killed, and one
/// desktop reconnects to b at once: the browser on b is told the other one is offline
/// within the documented bound, and never that the one that moved is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_desktops_go_offline_for_browsers_on_another_node() {
    if have_redis() {
        a_killed_node_s_desktops_go_offline(Redis::single()).await;
    }
}

/// The same on a 3-master Redis Cluster. (These start their own Redis, so they are not
/// named `single_redis_…`/`redis_cluster_…`: CI runs those again on scripts/services.sh's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_desktops_go_offline_on_a_3_master_cluster_too() {
    if have_redis() {
        a_killed_node_s_desktops_go_offline(Redis::cluster()).await;
    }
}

async fn a_killed_node_s_desktops_go_offline(redis: Redis) {
    use aisa_relay::cluster::liveness::{INTERVAL, LAPSE};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let cert = cluster_support::write_cert(dir.path());
    let db = format!("sqlite://{}/shared.db?mode=rwc", dir.path().display());
    {
        let store = aisa_relay::store::Store::open(&db).await.unwrap();
        let hash = aisa_relay::auth::hash_password(aisa_testkit::system::PASSWORD).unwrap();
        store.create_user("hal@example.com", &hash).await.unwrap();
    }
    let a = cluster_support::relay_process(dir.path(), "node-a", &db, &redis.url, 10);
    let b = cluster_support::relay_process(dir.path(), "node-b", &db, &redis.url, 10);
    let (lost, lost_token) = cluster_support::enrol(a.http, "hal@example.com").await;
    let (moving, moving_token) = cluster_support::enrol(a.http, "hal@example.com").await;
    let _lost_desktop = connect_desktop_at(a.quic, cert, &lost_token).await;
    let _moving_on_a = connect_desktop_at(a.quic, cert, &moving_token).await;

    // A browser on b watches both: online, on a.
    let token = cluster_support::sign_in(b.http, "hal@example.com").await;
    let session = cluster_support::browser(b.quic, cert).await;
    let (_send, mut events) = status_stream(&session, &token).await;
    let mut view = std::collections::HashMap::new();
    assert!(
        watch_until(&mut events, &mut view, WAIT, |v| v.len() == 2
            && v.values().all(|online| *online))
        .await,
        "the browser on b sees both desktops on a online: {view:?}"
    );

    // Node a dies; one desktop reconnects to b at once, the other is gone for good.
    drop(a);
    let killed = Instant::now();
    let _moving_on_b = connect_desktop_at(b.quic, cert, &moving_token).await;
    eprintln!(
        "a desktop reconnected to b {:?} after the kill",
        killed.elapsed()
    );

    // The documented bound: the liveness lapses within LAPSE of the kill, b reads it
    // within INTERVAL, then one correction pass. The margin covers scheduling on a busy
    // 2-core machine.
    let bound = LAPSE + INTERVAL;
    let mut moved_offline = false;
    let told = tokio::time::timeout(bound + Duration::from_millis(1500), async {
        loop {
            let event = next_event(&mut events).await;
            match online(&event) {
                Some(false) if event.device_id == lost => return,
                Some(false) if event.device_id == moving => moved_offline = true,
                _ => {}
            }
        }
    })
    .await;
    let took = killed.elapsed();
    assert!(
        told.is_ok(),
        "the browser on b was not told the desktop on the killed node is offline within {took:?}"
    );
    eprintln!(
        "the browser on b was told the desktop is offline {took:?} after the kill (bound {bound:?} + one pass)"
    );
    assert!(
        !moved_offline,
        "the desktop that reconnected to b was reported offline"
    );
    // Nothing contradicts it afterwards.
    let (lost_id, moving_id) = (lost.clone(), moving.clone());
    view.insert(lost.clone(), false);
    assert!(
        !watch_until(&mut events, &mut view, Duration::from_millis(1500), |v| v
            [&lost_id]
            || !v[&moving_id])
        .await,
        "a later status contradicted it: {view:?}"
    );

    // The device map still names the dead node (its entry lives on until its TTL): the
    // liveness, not the entry's expiry, is what told b. A new snapshot on b agrees.
    let key = format!("aisa:relay:device:{{{lost}}}");
    assert!(
        redis
            .servers
            .iter()
            .any(|server| server.cli(&["HGET", &key, "node"]).trim() == "node-a"),
        "the dead node's entry is still there"
    );
    let (_send, mut fresh) = status_stream(&session, &token).await;
    let mut snapshot = std::collections::HashMap::new();
    assert!(watch_until(&mut fresh, &mut snapshot, WAIT, |v| v.len() == 2).await);
    assert_eq!(
        (snapshot[&lost], snapshot[&moving]),
        (false, true),
        "a new snapshot on b"
    );
    drop(b);
}

/// A node that stops (SIGTERM, a rolling update) stops its cluster tasks first, so it
/// publishes its desktops' leaving to no one: it lapses its own liveness as it stops, and
/// the browser on the other node is told within one liveness read (plus a pass), long
/// before the desktop's device map entry would expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_s_desktops_go_offline_for_browsers_on_another_node() {
    use aisa_relay::cluster::liveness::INTERVAL;
    if !have_redis() {
        return;
    }
    let redis = Redis::single();
    let nodes = Nodes::start(&redis, "").await;
    let (token, device_id, _desktop) = nodes.desktop_on_a("ivy@example.com").await;
    let session = browser(&nodes.b).await;
    let (_send, mut events) = status_stream(&session, &token).await;
    let mut view = std::collections::HashMap::new();
    let id = device_id.clone();
    assert!(
        watch_until(&mut events, &mut view, WAIT, |v| v.get(&id) == Some(&true)).await,
        "the browser on b sees the desktop on a online"
    );

    let Nodes { a, b, _dir, .. } = nodes;
    let stopping = Instant::now();
    a.shutdown(Duration::from_millis(100)).await;
    // It lapsed itself as it stopped (left alone, its liveness would last up to 3 s).
    let lapses: f64 = redis.servers[0]
        .cli(&["ZSCORE", aisa_relay::cluster::shared::ALIVE_KEY, "node-a"])
        .trim()
        .parse()
        .expect("node a is in the liveness set");
    let time = redis.servers[0].cli(&["TIME"]);
    let mut time = time.lines().map(|l| l.trim().parse::<u64>().unwrap());
    let now_ms = time.next().unwrap() * 1000 + time.next().unwrap() / 1000;
    assert!(
        lapses as u64 <= now_ms,
        "node a's liveness lapses {} ms from now",
        lapses as u64 - now_ms
    );
    // So b is told within one read (INTERVAL) plus a pass; the entry lives 6 s. (The
    // window leaves room for a busy machine.)
    assert!(
        watch_until(&mut events, &mut view, INTERVAL * 3, |v| !v[&id]).await,
        "the browser on b still shows the desktop of the stopped node online {:?} after the stop",
        stopping.elapsed()
    );
    eprintln!(
        "the browser on b was told {:?} after node a began stopping (one read: {INTERVAL:?})",
        stopping.elapsed()
    );
    b.shutdown(Duration::from_millis(100)).await;
}

/// The price of the liveness, and how it is paid back: a node that is alive but cannot
/// reach Redis for longer than the lapse is taken for dead (its desktop shown offline on
/// the other node), and once it reaches Redis again the other node believes it alive at
/// its next read and tells its browsers the desktop is online, without the desktop
/// doing anything. Node a's command connection is cut (`CLIENT KILL ID`) and kept out
/// (`maxclients`); its subscriber and node b's connections stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_is_taken_for_dead_then_alive_again() {
    use aisa_relay::cluster::liveness::{INTERVAL, LAPSE};
    if !have_redis() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = Redis::single();
    let port = redis.servers[0].port;
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("relay.db").display()
    );
    let a = aisa_relay::start(config(dir.path(), "node-a", &redis.url, &db))
        .await
        .expect("node a starts");
    // Node a's command connection: the only one in no channel so far.
    let mut admin = Admin::connect(port);
    let own = admin.command(&["CLIENT", "ID"]);
    let list = admin.command(&["CLIENT", "LIST"]);
    let a_commands: Vec<String> = list
        .lines()
        .filter(|l| l.contains(" sub=0 ") && l.contains(" psub=0 "))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next().map(str::to_owned))
        .filter(|id| *id != own)
        .collect();
    assert_eq!(a_commands.len(), 1, "{list}");
    let b = aisa_relay::start(config(dir.path(), "node-b", &redis.url, &db))
        .await
        .expect("node b starts");
    let nodes = Nodes {
        a,
        b,
        http: reqwest::Client::new(),
        _dir: dir,
    };
    let (token, device_id, _desktop) = nodes.desktop_on_a("joe@example.com").await;
    let session = browser(&nodes.b).await;
    let (_send, mut events) = status_stream(&session, &token).await;
    let mut view = std::collections::HashMap::new();
    let id = device_id.clone();
    assert!(watch_until(&mut events, &mut view, WAIT, |v| v.get(&id) == Some(&true)).await);

    // Node a loses Redis (not the desktop, not node b).
    let connected = admin.connected_clients();
    admin.command(&["CONFIG", "SET", "maxclients", &(connected - 1).to_string()]);
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", &a_commands[0]]),
        "1"
    );
    let cut = Instant::now();
    assert!(
        watch_until(&mut events, &mut view, LAPSE + INTERVAL * 3, |v| !v[&id]).await,
        "node b did not take node a for dead {:?} after it lost Redis",
        cut.elapsed()
    );
    eprintln!(
        "node a taken for dead {:?} after it lost Redis",
        cut.elapsed()
    );

    // Node a reaches Redis again (its reconnect backoff is at most 2 s): alive, and the
    // browser on b is told the desktop, which never left, is online.
    admin.command(&["CONFIG", "SET", "maxclients", "10000"]);
    let back = Instant::now();
    // Its reconnect (at most 2 s), b's next read (INTERVAL), a pass; and room for a busy
    // machine.
    let within = Duration::from_secs(2) + INTERVAL * 3;
    assert!(
        watch_until(&mut events, &mut view, within, |v| v[&id]).await,
        "the browser on b still shows the desktop offline {:?} after node a could reach Redis",
        back.elapsed()
    );
    eprintln!(
        "the browser on b was told the desktop is online {:?} after node a could reach Redis again",
        back.elapsed()
    );
    let (b, id) = (&nodes.b, device_id.as_str());
    eventually("b locates the desktop on a again", || async move {
        matches!(b.state.cluster.locate(id).await, Ok(Some(p)) if p.node.as_str() == "node-a")
    })
    .await;
    nodes.stop().await;
}
