//! A normal action's latency while hostile mini-apps run, next to the idle
//! figure, on the whole chain over loopback (wtransport client → relay-edge →
//! desktop-node → hello-ai's `echo` in wasmtime).
//!
//! `cargo run --release -p aisa-benches --bin starvation` prints, for the idle node and for
//! the node running `2 × CPUs` guests that loop until their time limit:
//! * a normal action's request → first chunk, p50 / p99 / max;
//! * GET_STATUS on a Control stream, request → DEVICE_STATUS, p50 / p99 / max.
//!
//! Env: `ROUNDS` (default 200), `TOKIO_WORKER_THREADS` (the node's runtime; default the
//! number of CPUs).

use std::time::{Duration, Instant};

use aisa_benches::percentile;
use aisa_node::sandbox::Limits;
use aisa_testkit::system::{System, execute, open};
use aisa_tunnel::io::read_frame;
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, StreamKind};

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let system = System::start_with(Limits {
        timeout: Duration::from_secs(600),
        memory_bytes: 16 << 20,
        output_bytes: 1 << 20,
    })
    .await;
    system.lift_plan_limits().await;
    let observer = system.browser().await;
    measure("idle", &system, &observer, rounds).await;

    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let loops = 2 * cpus;
    let mut hostile = Vec::new();
    for _ in 0..loops {
        let session = system.browser().await;
        let request = execute("spinner", "run", serde_json::json!({}));
        let streams = open(
            &session,
            &[system.header(&system.device_id).encode(), request.encode()],
        )
        .await;
        hostile.push((session, streams));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    measure(
        &format!("{loops} looping guests"),
        &system,
        &observer,
        rounds,
    )
    .await;
    drop(hostile);
}

async fn measure(label: &str, system: &System, session: &wtransport::Connection, rounds: usize) {
    let mut action = Vec::with_capacity(rounds);
    let mut status = Vec::with_capacity(rounds);
    let echo = execute("hello-ai", "echo", serde_json::json!({ "text": "hello" }));
    for round in 0..rounds + 10 {
        let a = first_frame(system, session, StreamKind::Action, &echo).await;
        let s = first_frame(
            system,
            session,
            StreamKind::Control,
            &Envelope::new(1, Body::GetStatus),
        )
        .await;
        if round >= 10 {
            action.push(a.as_secs_f64() * 1e3);
            status.push(s.as_secs_f64() * 1e3);
        }
    }
    action.sort_by(f64::total_cmp);
    status.sort_by(f64::total_cmp);
    let show = |v: &[f64]| {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            percentile(v, 50.0),
            percentile(v, 99.0),
            v.last().copied().unwrap_or_default()
        )
    };
    println!("{label}: normal action → first chunk {}", show(&action));
    println!("{label}: GET_STATUS → DEVICE_STATUS {}", show(&status));
}

async fn first_frame(
    system: &System,
    session: &wtransport::Connection,
    kind: StreamKind,
    request: &Envelope,
) -> Duration {
    let mut header = system.header(&system.device_id);
    header.kind = kind;
    let started = Instant::now();
    let (_send, mut recv) = open(session, &[header.encode(), request.encode()]).await;
    let frame = read_frame(&mut recv, MAX_FRAME_LEN)
        .await
        .expect("read")
        .expect("a frame");
    let took = started.elapsed();
    let answer = Envelope::decode(&frame).expect("envelope");
    assert!(
        matches!(
            answer.body,
            Body::StreamChunk { .. } | Body::DeviceStatus { .. }
        ),
        "{answer:?}"
    );
    took
}
