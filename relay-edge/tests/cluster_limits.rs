//! The plan's limits across relay nodes (`[cluster] redis_url`): two relay nodes in this
//! process, one SQLite database, and a real `redis-server` started by the test (one
//! server, or a 3-master Redis Cluster made with `redis-cli --cluster create`), all on
//! loopback.
//!
//! Each node decides a stream's limits in memory, against the totals Redis last reported
//! plus what it counted since, and writes its counts in batches every `count_sync_ms`
//! (`aisa_relay::limits::tally`). Shown here: a stream costs no Redis round trip once the
//! node has the user's totals; the concurrent-stream and daily limits hold across nodes
//! within the bound `docs/relay.md` ("Cluster state") gives, and every admitted action is
//! in Redis's count after a batch, exactly once; the counts survive a node's restart and
//! Redis's (a node seeds an empty Redis from what it knows); sign-in failures count on
//! every node; and the same limit through real streams (a desktop node on one node,
//! browser sessions on both, one forwarded).
//!
//! Uses the Redis servers scripts/services.sh started (`AISA_TEST_REDIS`,
//! `AISA_TEST_REDIS_CLUSTER`) when set, otherwise starts its own; the restart test always
//! starts its own. Needs `redis-server` and `redis-cli` (scripts/prereqs.sh installs
//! them); without them the tests fail, unless `AISA_TEST_REDIS_OPTIONAL=1` says to skip.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use aisa_relay::limits::{PlacesRefused, StreamPlaces, take_stream_places};
use aisa_relay::{RelayConfig, RelayHandle, RelayState};
use aisa_testkit::system::PASSWORD;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
/// The nodes' `count_sync_ms` here.
const SYNC_MS: u64 = 100;

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{Redis, have_redis};

// ---------------------------------------------------------------- Redis

/// The day's action count of `user_id` in Redis, read through the node's client (a
/// single server and a cluster alike; not counted among the node's operations).
async fn redis_actions(state: &RelayState, user_id: &str) -> Option<i64> {
    let shared = state.cluster.shared().unwrap();
    let day = state.actions.today();
    let key = aisa_relay::cluster::shared::actions_key(user_id, &day);
    use fred::interfaces::KeysInterface;
    let value: Option<i64> = shared.client().get(key).await.unwrap();
    value
}

// ---------------------------------------------------------------- relay fixtures

/// Two relay nodes sharing one database and one Redis.
struct Nodes {
    a: RelayHandle,
    b: RelayHandle,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    db: String,
    redis_url: String,
    suffix: String,
}

/// The shared cluster settings (`cluster_support::node_config`: loopback, forwarding,
/// one JWT secret) with this test's batch interval and sign-in limit.
fn config(dir: &Path, node: &str, redis_url: &str, db: &str) -> RelayConfig {
    let mut config = cluster_support::node_config(&dir.join(node), node, db, redis_url);
    config.cluster.count_sync_ms = Some(SYNC_MS);
    config.login_max_failures = 3;
    // Short, so that the failures this leaves in a shared Redis soon expire.
    config.login_window_secs = 30;
    config
}

impl Nodes {
    async fn start(redis: &Redis) -> Nodes {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let db = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("relay.db").display()
        );
        let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
        let a = Self::node(dir.path(), "a", &suffix, &redis.url, &db).await;
        let b = Self::node(dir.path(), "b", &suffix, &redis.url, &db).await;
        Nodes {
            a,
            b,
            http: reqwest::Client::new(),
            dir,
            db,
            redis_url: redis.url.clone(),
            suffix,
        }
    }

    async fn node(dir: &Path, which: &str, suffix: &str, redis: &str, db: &str) -> RelayHandle {
        let name = format!("node-{which}{suffix}");
        let relay = aisa_relay::start(config(dir, &name, redis, db))
            .await
            .expect("node starts");
        assert!(relay.state.cluster.is_clustered());
        relay
    }

    /// Stops node a and starts it again (same name, same database, same Redis).
    async fn restart_a(&mut self) {
        let fresh = Self::node(
            self.dir.path(),
            "a2",
            &self.suffix,
            &self.redis_url,
            &self.db,
        )
        .await;
        let old = std::mem::replace(&mut self.a, fresh);
        old.shutdown(Duration::from_millis(100)).await;
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

    /// Signs up on node a; returns the user's id.
    async fn user(&self, email: &str) -> String {
        let (status, reply) = self
            .post(
                &self.a,
                "/api/auth/signup",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        reply["user_id"].as_str().unwrap().to_owned()
    }

    async fn stop(self) {
        self.a.shutdown(Duration::from_millis(100)).await;
        self.b.shutdown(Duration::from_millis(100)).await;
    }
}

/// The Redis commands a stream's admission sends (the background batches are other
/// operations: `count_sync`).
fn admission_trips(state: &RelayState) -> u64 {
    let counts = &state.cluster.shared().unwrap().counts;
    counts.of("count_cold") + counts.of("locate")
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

async fn take(
    state: &RelayState,
    user_id: &str,
    streams: i64,
    actions: i64,
) -> Option<StreamPlaces> {
    match take_stream_places(state, user_id, streams, Some(actions)).await {
        Ok(places) => Some(places),
        Err(PlacesRefused::Actions) => None,
        Err(other) => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- the tests

/// Streams and actions: no round trip once warm; the limits across nodes; uncounts;
/// sign-in failures.
async fn limits_hold_across_nodes_with_no_round_trip_per_stream(redis: Redis) {
    let nodes = Nodes::start(&redis).await;
    let user_id = nodes.user("cy@example.com").await;
    let uid = user_id.as_str();
    let (a, b) = (&nodes.a.state, &nodes.b.state);

    // At most 2 streams open at once, across both nodes. The first stream of the user
    // on a node learns the totals (one round trip); the following ones cost none.
    let before = admission_trips(a);
    let s1 = take_stream_places(a, uid, 2, None)
        .await
        .expect("first, on a");
    assert_eq!(admission_trips(a) - before, 1, "a cold user: one sync");
    drop(s1);
    let before = admission_trips(a);
    for _ in 0..100 {
        drop(
            take_stream_places(a, uid, 2, None)
                .await
                .expect("again, on a"),
        );
    }
    // None, unless this busy machine held a's batches back for 4 intervals (the
    // totals are then stale, and one stream syncs them again).
    let trips = admission_trips(a) - before;
    assert!(
        trips <= 1,
        "warm: {trips} Redis round trips for 100 streams"
    );
    let s1 = take_stream_places(a, uid, 2, None)
        .await
        .expect("first, on a");
    let s2 = take_stream_places(b, uid, 2, None)
        .await
        .expect("second, on b");
    // Within a batch interval both nodes know the other's stream, and refuse a third.
    for node in [a, b] {
        eventually("a third stream refused", || async move {
            match take_stream_places(node, uid, 2, None).await {
                Ok(_) => false,
                Err(PlacesRefused::Streams) => true,
                Err(other) => panic!("{other:?}"),
            }
        })
        .await;
    }
    // One ends on b: a may open one again once b's batch says so.
    drop(s2);
    eventually("b's closed stream frees a place", || async move {
        take_stream_places(a, uid, 2, None).await.is_ok()
    })
    .await;
    drop(s1);

    // At most 3 actions a day, taken one at a time on alternating nodes with a batch
    // interval between: exactly 3 pass, whichever node.
    let mut held = Vec::new();
    for (i, node) in [b, a, b].into_iter().enumerate() {
        held.push(
            take(node, uid, 10, 3)
                .await
                .unwrap_or_else(|| panic!("{i}")),
        );
        tokio::time::sleep(Duration::from_millis(3 * SYNC_MS)).await;
    }
    for node in [a, b] {
        assert!(
            take(node, uid, 10, 3).await.is_none(),
            "the fourth is refused"
        );
    }
    assert_eq!(redis_actions(a, uid).await, Some(3));
    // An action that never reached its device is given back, on every node.
    let third = held.pop().unwrap();
    b.actions
        .uncount(uid, third.counted_day.as_deref().unwrap());
    eventually("the uncount reaches the other node", || async move {
        take(a, uid, 10, 3).await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3 * SYNC_MS)).await;
    assert!(take(b, uid, 10, 3).await.is_none(), "a's retake reached b");
    drop(held);

    // Sign-in failures count on every node: three on a, then b refuses.
    for _ in 0..3 {
        let (status, _) = nodes
            .post(
                &nodes.a,
                "/api/auth/login",
                json!({"email": "cy@example.com", "password": "wrong"}),
            )
            .await;
        assert_eq!(status, 401);
    }
    let nodes_ref = &nodes;
    eventually("node b refuses the fourth sign-in", || async move {
        let (status, _) = nodes_ref
            .post(
                &nodes_ref.b,
                "/api/auth/login",
                json!({"email": "cy@example.com", "password": PASSWORD}),
            )
            .await;
        status == 429
    })
    .await;
    nodes.stop().await;
}

/// Both nodes take a user's actions as fast as they can, at once: the cluster admits at
/// least the limit (no node refuses before the total reached it) and at most the bound
/// of docs/relay.md for two nodes (the limit plus what the other node had left when it
/// last read the total), and Redis ends with exactly the admitted count.
async fn a_burst_on_two_nodes_stays_within_the_documented_bound(redis: Redis) {
    const LIMIT: i64 = 40;
    let nodes = Nodes::start(&redis).await;
    let user_id = nodes.user("burst@example.com").await;
    let (a, b) = (nodes.a.state.clone(), nodes.b.state.clone());
    // Both nodes warm, each with one action, and both have read the total of 2.
    assert!(take(&a, &user_id, 1000, LIMIT).await.is_some());
    assert!(take(&b, &user_id, 1000, LIMIT).await.is_some());
    let uid = user_id.as_str();
    let (ra, rb) = (&a, &b);
    eventually("both nodes read the total of 2", || async move {
        let seen = |s: &RelayState| s.cluster.shared().unwrap().tally.actions_seen(uid);
        seen(ra) == Some(2) && seen(rb) == Some(2) && redis_actions(ra, uid).await == Some(2)
    })
    .await;

    let admitted = Arc::new(AtomicI64::new(2));
    let go = Arc::new(AtomicBool::new(false));
    let mut burst = tokio::task::JoinSet::new();
    for state in [a.clone(), b.clone()] {
        let (admitted, go, user_id) = (admitted.clone(), go.clone(), user_id.clone());
        burst.spawn(async move {
            while !go.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
            // Keep asking for three batch intervals after the first refusal.
            let mut refused_at = None;
            loop {
                match take(&state, &user_id, 1000, LIMIT).await {
                    Some(_) => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    None => {
                        let at = *refused_at.get_or_insert_with(Instant::now);
                        if at.elapsed() > Duration::from_millis(3 * SYNC_MS) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
    }
    go.store(true, Ordering::Release);
    while burst.join_next().await.is_some() {}
    let admitted = admitted.load(Ordering::SeqCst);
    // The bound for N = 2 nodes that both last read the total K = 2: L + (N − 1)(L − K).
    let bound = LIMIT + (LIMIT - 2);
    eprintln!("burst on two nodes: {admitted} admitted, limit {LIMIT}, bound {bound}");
    assert!(admitted >= LIMIT, "{admitted} < {LIMIT}: refused too early");
    assert!(admitted <= bound, "{admitted} > {bound}");
    // After a batch: every admitted action is in Redis's count, once; and both refuse.
    eventually("Redis has every admitted action", || async move {
        redis_actions(ra, uid).await == Some(admitted)
    })
    .await;
    for node in [&a, &b] {
        assert!(take(node, uid, 1000, LIMIT).await.is_none());
    }
    // And the store gets them too (each node writes what it counted).
    let store = &a.store;
    let day = a.actions.today();
    let day = day.as_str();
    eventually("the store has every admitted action", || async move {
        store.actions_on(uid, day).await.unwrap() == admitted
    })
    .await;
    drop((a, b));
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_limits_hold_across_nodes_with_no_round_trip_per_stream() {
    if have_redis() {
        limits_hold_across_nodes_with_no_round_trip_per_stream(Redis::shared(
            "AISA_TEST_REDIS",
            Redis::single,
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_limits_hold_across_nodes_with_no_round_trip_per_stream() {
    if have_redis() {
        limits_hold_across_nodes_with_no_round_trip_per_stream(Redis::shared(
            "AISA_TEST_REDIS_CLUSTER",
            Redis::cluster,
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_a_burst_on_two_nodes_stays_within_the_documented_bound() {
    if have_redis() {
        a_burst_on_two_nodes_stays_within_the_documented_bound(Redis::shared(
            "AISA_TEST_REDIS",
            Redis::single,
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_a_burst_on_two_nodes_stays_within_the_documented_bound() {
    if have_redis() {
        a_burst_on_two_nodes_stays_within_the_documented_bound(Redis::shared(
            "AISA_TEST_REDIS_CLUSTER",
            Redis::cluster,
        ))
        .await;
    }
}

/// The counts survive: a node's batch before it stops, a restarted node reading the
/// total back, and a Redis restarted empty, which the nodes seed again from what they
/// know (while it is down, each node goes on counting alone, and those actions are
/// written when it is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_a_node_restart_and_a_redis_restart() {
    if !have_redis() {
        return;
    }
    const LIMIT: i64 = 6;
    let mut redis = Redis::single();
    let mut nodes = Nodes::start(&redis).await;
    let user_id = nodes.user("keep@example.com").await;
    let uid = user_id.as_str();
    // Two actions on a; a stops at once (its batch interval has not come): its last
    // batch on the way out writes them.
    for _ in 0..2 {
        assert!(take(&nodes.a.state, uid, 10, LIMIT).await.is_some());
    }
    nodes.restart_a().await;
    assert_eq!(redis_actions(&nodes.b.state, uid).await, Some(2));
    // The restarted a reads the total back: 4 more, not 6.
    for i in 0..4 {
        assert!(take(&nodes.a.state, uid, 10, LIMIT).await.is_some(), "{i}");
    }
    assert!(take(&nodes.a.state, uid, 10, LIMIT).await.is_none());
    let (a, b) = (&nodes.a.state, &nodes.b.state);
    eventually("Redis has 6", || async move {
        redis_actions(b, uid).await == Some(6)
    })
    .await;

    // Redis dies with everything in it, and comes back empty: a's next batch seeds the
    // day's count from what a knows, so the limit still holds on b.
    let user2 = nodes.user("keep2@example.com").await;
    let u2 = user2.as_str();
    assert!(take(a, u2, 10, LIMIT).await.is_some());
    eventually("a's batch wrote user 2's action", || async move {
        redis_actions(b, u2).await == Some(1)
    })
    .await;
    redis.servers[0].kill();
    // Meanwhile a decides alone, on what it knows: 1 + 2 more.
    for _ in 0..2 {
        assert!(take(a, u2, 10, LIMIT).await.is_some(), "counted alone");
    }
    redis.servers[0].spawn();
    eventually(
        "the restarted Redis has user 1's 6 and user 2's 3",
        || async move {
            redis_actions(b, uid).await == Some(6) && redis_actions(b, u2).await == Some(3)
        },
    )
    .await;
    // b learns the total from Redis: 3 more for user 2, then refused.
    for i in 0..3 {
        assert!(take(b, u2, 10, LIMIT).await.is_some(), "{i}");
    }
    assert!(take(b, u2, 10, LIMIT).await.is_none());
    assert!(
        take(b, uid, 10, LIMIT).await.is_none(),
        "user 1 still at the limit"
    );
    nodes.stop().await;
}

/// The same limit through real streams: a desktop node on b, a browser session on each
/// node (a's streams are forwarded to b), a plan of 3 actions a day. Alternating with a
/// batch interval between, exactly 3 echo actions run, whichever node the browser is on;
/// the next is refused with `limit_exceeded` on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_actions_through_either_node_stop_at_the_daily_limit() {
    if !have_redis() {
        return;
    }
    let redis = Redis::single();
    let nodes = Nodes::start(&redis).await;
    let email = "plan3@example.com";
    cluster_support::add_user(&nodes.a, email).await;
    let store = &nodes.a.state.store;
    store
        .upsert_plan(&aisa_relay::store::Plan {
            id: "three".into(),
            name: "Three a day".into(),
            max_devices: 5,
            max_concurrent_streams: 5,
            max_actions_per_day: 3,
        })
        .await
        .unwrap();
    store.set_user_plan(email, "three").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let desk =
        cluster_support::desktop_node(&nodes.b, email, dir.path(), cluster_support::Leg::Quic)
            .await;
    let token = cluster_support::sign_in(nodes.a.http_addr, email).await;
    let header = cluster_support::action_header(&desk.device_id, &token);
    let on_a = cluster_support::browser(nodes.a.quic_addr, nodes.a.cert_sha256()).await;
    let on_b = cluster_support::browser(nodes.b.quic_addr, nodes.b.cert_sha256()).await;
    let ends = |reply: &[aisa_tunnel::Envelope]| -> Result<(), String> {
        match reply.last().map(|e| &e.body) {
            Some(aisa_tunnel::Body::StreamEnd { .. }) => Ok(()),
            Some(aisa_tunnel::Body::Error { code, message }) => Err(format!("{code}: {message}")),
            other => panic!("{other:?}"),
        }
    };
    for (i, session) in [&on_a, &on_b, &on_a].into_iter().enumerate() {
        let reply = cluster_support::echo(session, &header, "hi").await;
        ends(&reply).unwrap_or_else(|e| panic!("action {i}: {e}"));
        tokio::time::sleep(Duration::from_millis(3 * SYNC_MS)).await;
    }
    for session in [&on_a, &on_b] {
        let reply = cluster_support::echo(session, &header, "one more").await;
        let refused = ends(&reply).expect_err("the fourth is refused");
        assert!(refused.starts_with("limit_exceeded"), "{refused}");
        assert!(refused.contains("3 actions per day"), "{refused}");
    }
    let user_id = desk.user_id.clone();
    assert_eq!(redis_actions(&nodes.a.state, &user_id).await, Some(3));
    let _ = desk.stop.send(true);
    nodes.stop().await;
}
