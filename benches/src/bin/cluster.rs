//! `cluster`: what relay-to-relay forwarding adds to an action, on loopback.
//!
//! Two relays (A and B, in this process) share one database and a Redis server this
//! binary starts (`redis-server` from the PATH, on a free port, in a temporary folder);
//! a desktop node running the example mini-app is connected to B. The same echo action
//! is run from a browser session on B (single node: browser → B → desktop) and from one
//! on A (cross node: browser → A → forward connection → B → desktop), alternately, and
//! the request → first chunk and request → STREAM_END times are compared; then a 3 MiB
//! answer is pulled both ways for throughput.
//!
//! `ROUNDS` (default 300) echo actions per path; `PULLS` (default 10) 3 MiB answers.
//! Then the Redis commands an action costs, per path: every command both nodes sent
//! while `ROUNDS` more actions ran, divided by the actions (and, apart, the commands of
//! the stream's admission: `count_cold`, a user's totals read when the node has none
//! fresh, and `locate`, the device map for a device on another node; the limits
//! themselves are decided in memory and written in batches, `count_sync`).
//! Prints a table and records the figures (`benches/run-all`); nothing is asserted (see
//! benches/README.md for figures).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: a failed setup panics

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_benches::percentile;
use aisa_benches::report::Figure;
use aisa_node::ai::OpenAiCompatible;
use aisa_node::node::{self, NodeContext, RelayTarget};
use aisa_node::sandbox::{Limits, Sandbox};
use aisa_relay::RelayHandle;
use aisa_testkit::system::{API_KEY, PASSWORD, execute, open, relay_config, test_apps};
use aisa_tunnel::io::read_frame;
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, OpenHeader, StreamKind};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A Redis server on a free loopback port, stopped on drop.
struct Redis {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> Redis {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Redis {
        child,
        url: format!("redis://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn relay(
    dir: &std::path::Path,
    name: &str,
    database_url: &str,
    redis_url: &str,
) -> RelayHandle {
    let mut config = relay_config(dir, 0, Some(database_url.into()));
    config.jwt_secret = Some("a cluster-wide JWT secret of at least 32 bytes".into());
    config.cluster.node_name = Some(name.into());
    config.cluster.redis_url = Some(redis_url.into());
    config.cluster.forward_listen = Some(([127, 0, 0, 1], 0).into());
    config.cluster.forward_secret = Some("the cluster's forward secret, 32+ bytes long".into());
    aisa_relay::start(config).await.expect("relay starts")
}

/// Runs one request on `session`; returns (request → first frame, request → END) in µs
/// and the bytes of chunk text received.
async fn run(
    session: &wtransport::Connection,
    header: &OpenHeader,
    request: &Envelope,
) -> (f64, f64, usize) {
    let started = Instant::now();
    let (_send, mut recv) = open(session, &[header.encode(), request.encode()]).await;
    let mut first = None;
    let mut bytes = 0;
    loop {
        let body = read_frame(&mut recv, MAX_FRAME_LEN)
            .await
            .expect("read")
            .expect("a frame");
        first.get_or_insert_with(|| started.elapsed());
        match Envelope::decode(&body).expect("envelope").body {
            Body::StreamChunk { data, .. } => bytes += data.len(),
            Body::StreamEnd { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    (micros(first.unwrap()), micros(started.elapsed()), bytes)
}

fn summary(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    (percentile(samples, 50.0), percentile(samples, 99.0))
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds = env_or("ROUNDS", 300);
    let pulls = env_or("PULLS", 10);
    let redis = redis();
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/shared.db?mode=rwc", dir.path().display());
    let b = relay(&dir.path().join("b"), "node-b", &database_url, &redis.url).await;
    let a = relay(&dir.path().join("a"), "node-a", &database_url, &redis.url).await;

    let store = &b.state.store;
    let hash = aisa_relay::auth::hash_password(PASSWORD).unwrap();
    store.create_user("bench@example.com", &hash).await.unwrap();
    store
        .upsert_plan(&aisa_relay::store::Plan {
            id: "unlimited".into(),
            name: "Unlimited".into(),
            max_devices: 1_000,
            max_concurrent_streams: 1_000,
            max_actions_per_day: 1_000_000,
        })
        .await
        .unwrap();
    store
        .set_user_plan("bench@example.com", "unlimited")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let credentials =
        serde_json::json!({ "email": "bench@example.com", "password": PASSWORD, "name": "desk" });
    let desk: serde_json::Value = http
        .post(format!("http://{}/api/devices/enroll", b.http_addr))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login: serde_json::Value = http
        .post(format!("http://{}/api/auth/login", a.http_addr))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_id = desk["device_id"].as_str().expect("enrolled").to_owned();
    let token = login["token"].as_str().expect("signed in").to_owned();

    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(API_KEY.into()))
        .await
        .unwrap();
    let sandbox = Sandbox::new().unwrap();
    let apps: HashMap<_, _> = test_apps(&sandbox);
    let ai = OpenAiCompatible::new(&fake.base_url(), "m", Some(API_KEY.into())).unwrap();
    let ctx = Arc::new(NodeContext::new(
        device_id.clone(),
        desk["device_token"].as_str().unwrap().to_owned(),
        [7; 32],
        sandbox,
        apps,
        Arc::new(ai),
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 256 << 20,
            output_bytes: 64 << 20,
        },
        dir.path().join("node"),
    ));
    let mut online = ctx.online();
    let target = RelayTarget {
        quic_addr: b.quic_addr.to_string(),
        server_name: "localhost".into(),
        cert_sha256: Some(b.cert_sha256()),
        pin_from: None,
        tcp_url: None,
        path: node::PathConfig::default(),
    };
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(node::run(ctx, target, stop_rx));
    online.wait_for(|o| *o).await.unwrap();
    // Until A sees the device in the shared map.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let header = OpenHeader {
        device_id: device_id.clone(),
        kind: StreamKind::Action,
        token,
        e2e: None,
    };
    let single = aisa_testkit::system::browser_session(&b).await;
    let cross = aisa_testkit::system::browser_session(&a).await;
    let echo = execute("hello-ai", "echo", serde_json::json!({ "text": "ping" }));
    // Warm up both paths (the forward connection is dialed on the first stream).
    for _ in 0..20 {
        run(&single, &header, &echo).await;
        run(&cross, &header, &echo).await;
    }
    let (mut s_first, mut s_end, mut c_first, mut c_end) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (f, e, _) = run(&single, &header, &echo).await;
        s_first.push(f);
        s_end.push(e);
        let (f, e, _) = run(&cross, &header, &echo).await;
        c_first.push(f);
        c_end.push(e);
    }
    let big = execute("bigemit", "run", serde_json::json!({}));
    let (mut single_mib, mut cross_mib) = (Vec::new(), Vec::new());
    for _ in 0..pulls {
        let (_, e, n) = run(&single, &header, &big).await;
        single_mib.push(n as f64 / (1 << 20) as f64 / (e / 1e6));
        let (_, e, n) = run(&cross, &header, &big).await;
        cross_mib.push(n as f64 / (1 << 20) as f64 / (e / 1e6));
    }

    // Redis commands per action, each path on its own (both nodes' commands count:
    // the background refreshes and count batches falling in the window too, which is
    // why the admission's own operations are given apart).
    let commands = |r: &RelayHandle| {
        let counts = &r.state.cluster.shared().expect("clustered").counts;
        let all = counts.commands.load(std::sync::atomic::Ordering::Relaxed);
        (all, counts.of("count_cold") + counts.of("locate"))
    };
    let mut per_action = Vec::new();
    for session in [&single, &cross] {
        let (a0, b0) = (commands(&a), commands(&b));
        for _ in 0..rounds {
            run(session, &header, &echo).await;
        }
        let (a1, b1) = (commands(&a), commands(&b));
        let n = rounds as f64;
        per_action.push((
            ((a1.0 - a0.0) + (b1.0 - b0.0)) as f64 / n,
            ((a1.1 - a0.1) + (b1.1 - b0.1)) as f64 / n,
        ));
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "cluster: {rounds} echo actions per path, {pulls} pulls of 3 MiB; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| measure | single node | cross node | added |");
    println!("| --- | --- | --- | --- |");
    for (what, single, cross) in [
        ("echo: request → first chunk", &mut s_first, &mut c_first),
        ("echo: request → STREAM_END", &mut s_end, &mut c_end),
    ] {
        let (s50, s99) = summary(single);
        let (c50, c99) = summary(cross);
        let added = Figure::new("cluster", format!("{what}, p50, cross node"), c50, "µs")
            .baseline(s50, "single node");
        if what.ends_with("first chunk") {
            added.goal("≤ single + 150 µs").record();
        } else {
            added.record();
        }
        println!(
            "| {what}, p50 | {s50:.0} µs | {c50:.0} µs | {:.0} µs |",
            c50 - s50
        );
        println!(
            "| {what}, p99 | {s99:.0} µs | {c99:.0} µs | {:.0} µs |",
            c99 - s99
        );
    }
    let (s50, _) = summary(&mut single_mib);
    let (c50, _) = summary(&mut cross_mib);
    println!(
        "| 3 MiB answer, median throughput | {s50:.0} MiB/s | {c50:.0} MiB/s | {:+.0} % |",
        (c50 / s50 - 1.0) * 100.0
    );
    Figure::new(
        "cluster",
        "3 MiB answer, median throughput, cross node",
        c50,
        "MiB/s",
    )
    .baseline(s50, "single node")
    .record();
    let [(s_all, s_hot), (c_all, c_hot)] = [per_action[0], per_action[1]];
    println!(
        "| Redis commands per action, admission (count_cold + locate) | {s_hot:.3} | {c_hot:.3} | {:+.3} |",
        c_hot - s_hot
    );
    println!(
        "| Redis commands per action, all (both nodes, background included) | {s_all:.3} | {c_all:.3} | {:+.3} |",
        c_all - s_all
    );
    Figure::new(
        "cluster",
        "Redis round trips per action on the hot path, device on this node",
        s_hot,
        "round trips",
    )
    .goal("0 (limits in memory, no lookup)")
    .record();
    Figure::new(
        "cluster",
        "Redis round trips per action on the hot path, device on another node",
        c_hot,
        "round trips",
    )
    .baseline(s_hot, "device on this node")
    .goal("≤ 1 (the device map)")
    .record();
    Figure::new(
        "cluster",
        "Redis commands per action, all, device on another node",
        c_all,
        "commands",
    )
    .baseline(s_all, "device on this node")
    .record();
    drop(redis);
}
