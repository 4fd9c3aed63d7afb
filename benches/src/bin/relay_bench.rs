//! relay-edge under measurement, as its own process (the release binary):
//!
//! 1. one-stream throughput, desktop → browser, through the relay, against a direct
//!    quinn stream between the same two kinds of endpoint in the same run;
//! 2. the latency the relay adds to a 1 KiB echo (p50, p99), against direct quinn;
//! 3. relay CPU time per forwarded byte (from /proc, during 1);
//! 4. relay RSS per idle connected desktop, with 10,000 desktops connected.
//!
//! ```text
//! cargo build --release -p aisa-relay -p aisa-benches
//! target/release/relay-bench            # RELAY_BIN, DESKTOPS, MIB override the defaults
//! ONLY=memory DESKTOPS=50000 target/release/relay-bench   # only 4 (the scaling rows)
//! CLUSTER=1 ONLY=memory target/release/relay-bench         # 4 with the relay clustered
//! ```
//!
//! `CLUSTER=1` runs the relay as a cluster node (`[cluster] redis_url` to a
//! `redis-server` this binary starts on a free loopback port): every desktop is then also
//! placed in the shared device map, so 4 shows what clustering adds per idle desktop
//! (the goal: nothing measurable in the relay's memory; the map lives in Redis).
//!
//! With `AISA_BENCH_JSON=FILE` every figure is also appended to FILE as a JSON line
//! (`benches/run-all` uses it).
//!
//! The bench process plays browser and desktops; with the relay that is three parties
//! on one machine's cores, so compare the relayed and direct figures with each other,
//! not with a network.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_benches::percentile;
use aisa_benches::report::Figure;
use aisa_relay::store::{Plan, Store};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, Hello, MAX_FRAME_LEN, OpenHeader, RelayHeader, StreamKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const ECHO_ROUNDS: usize = 2000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let desktops = env_or("DESKTOPS", 10_000);
    let mib = env_or("MIB", 512);
    let concurrency = env_or("CONCURRENCY", 32);
    let only_memory = std::env::var("ONLY").is_ok_and(|only| only == "memory");
    let relay_bin =
        std::env::var("RELAY_BIN").unwrap_or_else(|_| "target/release/relay-edge".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = std::env::var("CLUSTER").is_ok_and(|c| c == "1");
    let redis = cluster.then(|| redis_server(dir.path()));

    // Accounts: one user on a plan without practical limits, with desktops + 1 devices.
    let store = Store::open(&format!(
        "sqlite://{}/relay.db?mode=rwc",
        dir.path().display()
    ))
    .await
    .expect("store");
    store
        .upsert_plan(&Plan {
            id: "bench".into(),
            name: "Bench".into(),
            max_devices: 1_000_000,
            max_concurrent_streams: 1_000_000,
            max_actions_per_day: 1_000_000_000,
        })
        .await
        .expect("plan");
    let user = store
        .create_user("bench@example.com", "x")
        .await
        .expect("user");
    store
        .set_user_plan("bench@example.com", "bench")
        .await
        .expect("set plan");
    let mut devices = Vec::with_capacity(desktops + 1);
    for i in 0..=desktops {
        let token = format!("aisa_dt_bench_{i}");
        let device = store
            .create_device(
                &user.id,
                &format!("d{i}"),
                &aisa_relay::auth::hash_device_token(&token),
            )
            .await
            .expect("device");
        devices.push((device.id, token));
    }
    drop(store);

    let mut relay = tokio::process::Command::new(&relay_bin)
        .args(["--data-dir"])
        .arg(dir.path())
        .args([
            "serve",
            "--quic-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            // Every simulated desktop comes from 127.0.0.1.
            "--max-connections-per-ip",
        ])
        .arg((desktops + 100).to_string())
        .envs(redis.iter().flat_map(|(_, url)| {
            [
                ("AISA_RELAY_CLUSTER_REDIS_URL", url.clone()),
                ("AISA_RELAY_CLUSTER_NODE_NAME", "bench".to_owned()),
            ]
        }))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{relay_bin}: {e}; build it with cargo build --release -p aisa-relay")
        });
    let pid = relay.id().expect("pid");
    let mut line = String::new();
    BufReader::new(relay.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .await
        .expect("banner");
    // "relay-edge: http://ADDR (QUIC/WebTransport on udp ADDR), certificate sha-256 HEX"
    let quic: SocketAddr = line
        .split("udp ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .expect("quic addr");
    let cert: [u8; 32] = hex::decode(line.trim().rsplit(' ').next().expect("hash"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let secret = hex::decode(
        std::fs::read_to_string(dir.path().join("jwt-secret"))
            .expect("secret")
            .trim(),
    )
    .expect("hex");
    let jwt = aisa_relay::auth::TokenKeys::new(&secret, 3600)
        .issue(&user.id, &user.email)
        .expect("jwt");
    println!("relay-edge pid {pid} on udp {quic}");

    // The serving desktop: device 0.
    let (serve_id, serve_token) = devices[0].clone();
    let desktop_endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint");
    let serving = connect_desktop(&desktop_endpoint, quic, cert, &serve_token).await;
    tokio::spawn(serve_streams(serving.clone(), true));

    // The browser.
    let browser = wtransport::Endpoint::client(
        wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(cert)])
            .build(),
    )
    .expect("browser endpoint")
    .connect(format!("https://127.0.0.1:{}/wt", quic.port()))
    .await
    .expect("session");

    // The direct baseline: the same desktop role served by a quinn server here.
    let (direct_addr, direct_cert) = direct_server().await;
    let direct_client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint");
    let direct = direct_client
        .connect_with(
            aisa_node::node::client_config(Some(direct_cert)),
            direct_addr,
            "localhost",
        )
        .expect("connect")
        .await
        .expect("direct connection");

    if !only_memory {
        measure_traffic(&browser, &direct, pid, mib, serve_id, jwt).await;
    }
    idle_desktops(pid, devices, quic, cert, concurrency, cluster).await;
    relay.kill().await.ok();
    if let Some((mut redis, _)) = redis {
        let _ = redis.kill();
        let _ = redis.wait();
    }
}

/// `redis-server` on a free loopback port, saving nothing, in `dir`: the process and its URL.
fn redis_server(dir: &std::path::Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("redis://127.0.0.1:{port}"))
}

/// 1–3: throughput, relay CPU per byte, and the latency the relay adds.
async fn measure_traffic(
    browser: &wtransport::Connection,
    direct: &quinn::Connection,
    pid: u32,
    mib: usize,
    serve_id: String,
    jwt: String,
) {
    let bytes = (mib as u64) << 20;
    // 1 + 3: throughput and relay CPU per byte.
    let (mut send, mut recv) = direct.open_bi().await.expect("direct stream");
    send.write_all(b"T").await.expect("mode");
    let direct_rate = pull(&mut send, &mut recv, bytes).await;
    let header = OpenHeader {
        device_id: serve_id.clone(),
        kind: StreamKind::Control,
        token: jwt.clone(),
        e2e: None,
    };
    let (mut send, mut recv) = browser
        .open_bi()
        .await
        .expect("open")
        .await
        .expect("opened");
    write_frame(&mut send, &header.encode(), MAX_FRAME_LEN)
        .await
        .expect("header");
    let cpu_before = cpu_seconds(pid);
    let relayed_rate = pull(&mut send, &mut recv, bytes).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    println!(
        "throughput, one stream, {mib} MiB desktop → browser: relayed {relayed_rate:.0} MiB/s, direct quinn {direct_rate:.0} MiB/s, ratio {:.2}",
        relayed_rate / direct_rate
    );
    println!(
        "relay CPU per forwarded byte: {:.2} ns ({cpu:.2} s of CPU for {mib} MiB)",
        cpu * 1e9 / bytes as f64
    );
    Figure::new(
        "relay-bench",
        format!("one-stream throughput, {mib} MiB, relayed"),
        relayed_rate,
        "MiB/s",
    )
    .baseline(direct_rate, "direct quinn")
    .goal("≥ 0.95× with the relay on its own core")
    .record();
    Figure::new(
        "relay-bench",
        "relay CPU per forwarded byte",
        cpu * 1e9 / bytes as f64,
        "ns/byte",
    )
    .goal("≤ 1.0 ns")
    .record();

    // 2: 1 KiB echo latency.
    let (mut send, mut recv) = direct.open_bi().await.expect("direct stream");
    send.write_all(b"E").await.expect("mode");
    let direct_rtt = echo_rounds(&mut send, &mut recv).await;
    let header = OpenHeader {
        device_id: serve_id,
        kind: StreamKind::Action,
        token: jwt,
        e2e: None,
    };
    let (mut send, mut recv) = browser
        .open_bi()
        .await
        .expect("open")
        .await
        .expect("opened");
    write_frame(&mut send, &header.encode(), MAX_FRAME_LEN)
        .await
        .expect("header");
    let relayed_rtt = echo_rounds(&mut send, &mut recv).await;
    let (d50, d99) = (percentile(&direct_rtt, 50.0), percentile(&direct_rtt, 99.0));
    let (r50, r99) = (
        percentile(&relayed_rtt, 50.0),
        percentile(&relayed_rtt, 99.0),
    );
    println!(
        "1 KiB echo round trip ({ECHO_ROUNDS} rounds): relayed p50 {r50:.1} µs p99 {r99:.1} µs; direct p50 {d50:.1} µs p99 {d99:.1} µs; added by the relay p50 {:.1} µs p99 {:.1} µs",
        r50 - d50,
        r99 - d99
    );
    Figure::new(
        "relay-bench",
        "1 KiB echo round trip, relayed, p50",
        r50,
        "µs",
    )
    .baseline(d50, "direct quinn")
    .record();
    Figure::new(
        "relay-bench",
        "1 KiB echo round trip, relayed, p99",
        r99,
        "µs",
    )
    .baseline(d99, "direct quinn")
    .record();
}

/// 4: relay memory per idle connected desktop (all devices but the serving one).
async fn idle_desktops(
    pid: u32,
    devices: Vec<(String, String)>,
    quic: SocketAddr,
    cert: [u8; 32],
    concurrency: usize,
    clustered: bool,
) {
    let rss_before = rss_kib(pid);
    let idle_endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint");
    let started = Instant::now();
    let mut idle = Vec::with_capacity(devices.len());
    let mut pending = tokio::task::JoinSet::new();
    for (_, token) in devices.into_iter().skip(1) {
        let endpoint = idle_endpoint.clone();
        pending.spawn(async move { connect_desktop(&endpoint, quic, cert, &token).await });
        if pending.len() >= concurrency {
            idle.push(pending.join_next().await.expect("task").expect("join"));
        }
    }
    while let Some(conn) = pending.join_next().await {
        idle.push(conn.expect("join"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    println!(
        "{} idle desktops connected in {:.1} s; relay RSS {} → {} KiB: {:.1} KiB per idle desktop",
        idle.len(),
        started.elapsed().as_secs_f64(),
        rss_before,
        rss_after,
        (rss_after - rss_before) as f64 / idle.len() as f64
    );
    Figure::new(
        "relay-bench",
        format!(
            "relay RSS per idle connected desktop, {} connected{}",
            idle.len(),
            if clustered { ", clustered (Redis)" } else { "" }
        ),
        (rss_after - rss_before) as f64 / idle.len() as f64,
        "KiB",
    )
    .goal("≤ 24 KiB at 50,000")
    .record();
}

/// Connects as a desktop: HELLO, then WELCOME.
async fn connect_desktop(
    endpoint: &quinn::Endpoint,
    relay: SocketAddr,
    cert: [u8; 32],
    token: &str,
) -> quinn::Connection {
    let conn = endpoint
        .connect_with(
            aisa_node::node::client_config(Some(cert)),
            relay,
            "localhost",
        )
        .expect("connect")
        .await
        .expect("connected");
    let (mut send, mut recv) = conn.open_bi().await.expect("control");
    let hello = Hello {
        device_token: token.into(),
        node_version: "bench".into(),
        identity_key: vec![0; 32],
    };
    write_frame(&mut send, &hello.encode(), MAX_FRAME_LEN)
        .await
        .expect("hello");
    let reply = read_frame(&mut recv, MAX_FRAME_LEN)
        .await
        .expect("read")
        .expect("frame");
    let Body::Welcome { heartbeat_secs, .. } = Envelope::decode(&reply).expect("envelope").body
    else {
        panic!("expected WELCOME");
    };
    // Keep the control stream going for the connection's life, PINGing as a node does
    // (the relay closes a desktop that stays silent for three intervals).
    let every = Duration::from_secs(heartbeat_secs.max(1).into());
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        let mut sink = [0u8; 64];
        for nonce in 1u64.. {
            tokio::select! {
                _ = ticker.tick() => {
                    let ping = Envelope::new(nonce, Body::Ping { nonce });
                    if write_frame(&mut send, &ping.encode(), MAX_FRAME_LEN).await.is_err() {
                        return;
                    }
                }
                read = recv.read(&mut sink) => if !matches!(read, Ok(Some(_))) {
                    return;
                },
            }
        }
    });
    conn
}

/// Serves relay-opened (or, `relayed == false`, client-opened) streams: a Control
/// stream reads a u64 N and sends N bytes; an Action stream (or mode byte `E`) echoes.
async fn serve_streams(conn: quinn::Connection, relayed: bool) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let echo = if relayed {
                let header = read_frame(&mut recv, MAX_FRAME_LEN)
                    .await
                    .expect("read")
                    .expect("header");
                RelayHeader::decode(&header).expect("relay header").0.kind == StreamKind::Action
            } else {
                let mut mode = [0u8; 1];
                recv.read_exact(&mut mode).await.expect("mode");
                mode[0] == b'E'
            };
            if echo {
                let _ = tokio::io::copy(&mut recv, &mut send).await;
                let _ = send.finish();
                return;
            }
            let n = recv.read_u64().await.expect("length");
            let block = vec![7u8; 256 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                send.write_all(&block[..k]).await.expect("send");
                left -= k as u64;
            }
            let _ = send.finish();
        });
    }
}

/// A quinn server in this process playing the desktop for the direct baseline.
async fn direct_server() -> (SocketAddr, [u8; 32]) {
    let identity = aisa_relay::cert::generate_dev(time_now(), "localhost").expect("cert");
    let hash = identity.sha256();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_no_client_auth()
    .with_single_cert(identity.chain, identity.key)
    .expect("cert");
    tls.alpn_protocols = vec![b"aisa/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        ([127, 0, 0, 1], 0).into(),
    )
    .expect("server");
    let addr = endpoint.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            if let Ok(conn) = incoming.await {
                tokio::spawn(serve_streams(conn, false));
            }
        }
    });
    (addr, hash)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Asks for `bytes` (direct streams get the mode byte first) and reads them; MiB/s.
async fn pull<W, R>(send: &mut W, recv: &mut R, bytes: u64) -> f64
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    let started = Instant::now();
    send.write_u64(bytes).await.expect("ask");
    send.flush().await.expect("flush");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = recv.read(&mut buf).await.expect("read");
        assert!(n > 0, "stream ended early at {got}");
        got += n as u64;
    }
    bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64()
}

/// 1 KiB round trips on an echo stream; sorted microseconds.
async fn echo_rounds<W, R>(send: &mut W, recv: &mut R) -> Vec<f64>
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    let out = [42u8; 1024];
    let mut back = [0u8; 1024];
    let mut samples = Vec::with_capacity(ECHO_ROUNDS);
    for round in 0..ECHO_ROUNDS + 100 {
        let started = Instant::now();
        send.write_all(&out).await.expect("send");
        recv.read_exact(&mut back).await.expect("echo");
        if round >= 100 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    samples
}

/// The process's user + system CPU seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// The process's resident set, KiB.
fn rss_kib(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
