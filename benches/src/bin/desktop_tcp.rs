//! The desktop's TCP path against QUIC, on loopback: time to the first chunk and
//! throughput of actions on a desktop reached over QUIC and on one reached over TCP (the
//! mux on a WebSocket), how long a node takes to fall back when the relay's UDP is
//! black-holed, and how long it takes to move back to QUIC once UDP answers again.
//!
//! The black hole is a UDP gate in this process between the node and the relay: while
//! closed it drops every datagram (no answer, no ICMP: the slow case), while open it
//! forwards both ways. The browser's part is played here over WebTransport.
//!
//! `cargo run --release -p aisa-benches --bin desktop-tcp` (`ROUNDS`, default 50:
//! first-chunk samples per transport, taken in turns of 10 with one 3 MiB action per
//! turn, alternating QUIC and TCP so that both see the same machine load). The figures
//! go to standard output and, with `AISA_BENCH_JSON`, through
//! `aisa_benches::report::Figure`; benches/README.md records a run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aisa_benches::report::Figure;
use aisa_node::ai::OpenAiCompatible;
use aisa_node::node::{self, NodeContext, RelayTarget, Transport};
use aisa_node::sandbox::{Limits, Sandbox};
use aisa_testkit::system::{API_KEY, System, test_apps};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, OpenHeader};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Forwards UDP between one client and `relay` while `open`; drops everything otherwise.
async fn udp_gate(relay: SocketAddr, open: Arc<AtomicBool>) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(relay).await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut peer = None;
        let mut a = vec![0u8; 65536];
        let mut b = vec![0u8; 65536];
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    if open.load(Ordering::Relaxed) {
                        peer = Some(from);
                        let _ = back.send(&a[..n]).await;
                    }
                }
                Ok(n) = back.recv(&mut b) => {
                    if let (true, Some(peer)) = (open.load(Ordering::Relaxed), peer) {
                        let _ = front.send_to(&b[..n], peer).await;
                    }
                }
            }
        }
    });
    addr
}

/// Times to the first chunk of `rounds` `echo` actions (ms, unsorted), and the best
/// throughput of `big` whole `bigemit` actions (3 MiB each, MiB/s).
async fn measure(
    session: &wtransport::Connection,
    header: &OpenHeader,
    rounds: usize,
    big: usize,
) -> (Vec<f64>, f64) {
    let mut first = Vec::new();
    for i in 0..rounds {
        let t = Instant::now();
        let (chunk_at, _) = run(session, header, "hello-ai", "echo", &format!("hi {i}"), t).await;
        first.push(chunk_at.as_secs_f64() * 1000.0);
    }
    let mut best = f64::MAX;
    for _ in 0..big {
        let t = Instant::now();
        let (_, bytes) = run(session, header, "bigemit", "run", "x", t).await;
        let secs = t.elapsed().as_secs_f64();
        best = best.min(secs);
        assert!(bytes >= 3 << 20, "bigemit gave {bytes} bytes");
    }
    (first, (3 << 20) as f64 / best / (1024.0 * 1024.0))
}

/// Runs one action; returns when its first chunk came (since `t`) and the bytes of text.
async fn run(
    session: &wtransport::Connection,
    header: &OpenHeader,
    app: &str,
    action: &str,
    text: &str,
    t: Instant,
) -> (Duration, usize) {
    let request = Envelope::new(
        1,
        Body::ExecuteAction {
            app_id: app.into(),
            action: action.into(),
            payload: serde_json::json!({ "text": text }).to_string(),
            model: None,
        },
    );
    let (mut send, mut recv) = session.open_bi().await.unwrap().await.unwrap();
    write_frame(&mut send, &header.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    write_frame(&mut send, &request.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    let mut first = None;
    let mut bytes = 0;
    loop {
        let body = read_frame(&mut recv, MAX_FRAME_LEN).await.unwrap().unwrap();
        match Envelope::decode(&body).unwrap().body {
            Body::StreamChunk { data, .. } => {
                first.get_or_insert_with(|| t.elapsed());
                bytes += data.len();
            }
            Body::StreamEnd { .. } => return (first.unwrap_or_default(), bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn p(sorted: &[f64], q: f64) -> f64 {
    aisa_benches::percentile(sorted, q)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // bigemit writes 3 MiB: both nodes may output 16 MiB per action.
    let limits = Limits {
        output_bytes: 16 << 20,
        ..Limits::default()
    };
    let system = System::start_with(limits).await;
    system.lift_plan_limits().await;
    let relay = system.relay();

    // A second node (the spare device) behind the UDP gate, closed: a black hole.
    let open = Arc::new(AtomicBool::new(false));
    let gate = udp_gate(relay.quic_addr, open.clone()).await;
    let sandbox = Sandbox::new().unwrap();
    let apps: HashMap<_, _> = test_apps(&sandbox);
    let ctx = Arc::new(NodeContext::new(
        system.offline_device_id.clone(),
        system.offline_device_token.clone(),
        [9; 32],
        sandbox,
        apps,
        Arc::new(
            OpenAiCompatible::new(&system.fake.base_url(), "m", Some(API_KEY.into())).unwrap(),
        ),
        limits,
        system.data_dir.path().join("tcp-node"),
    ));
    let mut transport = ctx.transport();
    let target = RelayTarget {
        quic_addr: gate.to_string(),
        server_name: "localhost".into(),
        cert_sha256: Some(relay.cert_sha256()),
        pin_from: None,
        tcp_url: Some(format!("http://{}", relay.http_addr)),
        path: node::PathConfig::default(),
    };
    let (_stop, stop_rx) = watch::channel(false);
    let started = Instant::now();
    tokio::spawn(node::run(ctx.clone(), target, stop_rx));
    transport
        .wait_for(|t| *t == Some(Transport::Tcp))
        .await
        .unwrap();
    let fallback = started.elapsed();

    let session = system.browser().await;
    let quic_header = system.header(&system.device_id);
    let tcp_header = system.header(&system.offline_device_id);
    // Warm both paths.
    for header in [&quic_header, &tcp_header] {
        run(&session, header, "hello-ai", "echo", "warm", Instant::now()).await;
    }
    // Interleaved, one sample of each in turn: on a shared machine whose load changes
    // from second to second, both transports see the same load.
    let mut quic_first = Vec::new();
    let mut tcp_first = Vec::new();
    let mut quic_mib: f64 = 0.0;
    let mut tcp_mib: f64 = 0.0;
    for _ in 0..rounds.div_ceil(10) {
        let (q, qm) = measure(&session, &quic_header, 10, 1).await;
        let (t, tm) = measure(&session, &tcp_header, 10, 1).await;
        quic_first.extend(q);
        tcp_first.extend(t);
        quic_mib = quic_mib.max(qm);
        tcp_mib = tcp_mib.max(tm);
    }
    quic_first.sort_by(|a, b| a.total_cmp(b));
    tcp_first.sort_by(|a, b| a.total_cmp(b));

    open.store(true, Ordering::Relaxed);
    let opened = Instant::now();
    transport
        .wait_for(|t| *t == Some(Transport::Quic))
        .await
        .unwrap();
    let back = opened.elapsed();
    let (mut healed_first, _) = measure(&session, &tcp_header, rounds.min(10), 1).await;
    healed_first.sort_by(|a, b| a.total_cmp(b));

    println!("desktop leg, loopback, {rounds} first-chunk samples each (ms):");
    println!(
        "  QUIC: first chunk p50 {:.2} p90 {:.2}; bigemit 3 MiB {:.0} MiB/s",
        p(&quic_first, 50.0),
        p(&quic_first, 90.0),
        quic_mib
    );
    println!(
        "  TCP:  first chunk p50 {:.2} p90 {:.2}; bigemit 3 MiB {:.0} MiB/s",
        p(&tcp_first, 50.0),
        p(&tcp_first, 90.0),
        tcp_mib
    );
    println!(
        "  TCP/QUIC: first chunk p50 x{:.2}, throughput x{:.2}",
        p(&tcp_first, 50.0) / p(&quic_first, 50.0),
        tcp_mib / quic_mib
    );
    println!(
        "  fallback with UDP black-holed: on TCP {} ms after the node started",
        fallback.as_millis()
    );
    println!(
        "  UDP answering again: back on QUIC after {} ms (probe schedule: 5 s, then doubling to 60 s, +0-50 %)",
        back.as_millis()
    );
    println!(
        "  after the move, first chunk p50 {:.2} ms",
        p(&healed_first, 50.0)
    );

    const BENCH: &str = "desktop-tcp";
    let quic_p50 = p(&quic_first, 50.0);
    Figure::new(
        BENCH,
        "echo: first chunk p50, desktop on TCP",
        p(&tcp_first, 50.0),
        "ms",
    )
    .baseline(quic_p50, "desktop on QUIC")
    .goal("≤ 1.5× QUIC")
    .record();
    Figure::new(
        BENCH,
        "echo: first chunk p90, desktop on TCP",
        p(&tcp_first, 90.0),
        "ms",
    )
    .baseline(p(&quic_first, 90.0), "desktop on QUIC")
    .record();
    Figure::new(BENCH, "3 MiB action, desktop on TCP", tcp_mib, "MiB/s")
        .baseline(quic_mib, "desktop on QUIC")
        .goal("≥ 0.8× QUIC")
        .record();
    Figure::new(
        BENCH,
        "fallback with UDP black-holed: node start → on TCP",
        fallback.as_secs_f64() * 1000.0,
        "ms",
    )
    .goal("≤ 1 s")
    .record();
    Figure::new(
        BENCH,
        "UDP answers again → back on QUIC",
        back.as_secs_f64() * 1000.0,
        "ms",
    )
    .record();
    Figure::new(
        BENCH,
        "echo: first chunk p50 after moving back to QUIC",
        p(&healed_first, 50.0),
        "ms",
    )
    .baseline(quic_p50, "desktop on QUIC")
    .record();
}
