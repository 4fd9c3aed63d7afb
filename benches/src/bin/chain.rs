//! The whole chain on loopback: a client in the browser's role (wtransport) → relay-edge
//! → desktop-node → example mini-app in wasmtime (→ the local OpenAI-format provider) →
//! streamed chunks back.
//!
//! `cargo run --release -p aisa-benches --bin chain` prints:
//! * time from sending a request on an open session to its first chunk, p50 / p99,
//!   for the echo action (no model) and the write action (through the provider);
//! * chunks per second and MiB/s for one long streamed answer (echo, no model);
//! * model tokens per second passed through from the provider (over HTTP, server-sent
//!   events) to the browser, one chunk per token;
//! * request → first chunk p50 / p99 of the echo action with 1, 100 and 1,000 streams
//!   open at once (`LEVELS=1,100,1000`), spread over sessions of at most 200 streams,
//!   the desktop admitting 8 at a time and queueing the rest.
//!
//! With `AISA_BENCH_JSON=FILE` every figure is also appended to FILE as a JSON line
//! (`benches/run-all` uses it).

use std::time::{Duration, Instant};

use aisa_benches::percentile;
use aisa_benches::report::Figure;
use aisa_node::sandbox::Limits;
use aisa_node::scheduler::AdmissionConfig;
use aisa_testkit::system::{System, execute, open};
use aisa_tunnel::io::read_frame;
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN};

const ROUNDS: usize = 300;
const LONG_WORDS: usize = 50_000;
/// The most streams one session carries in the concurrency rows (the relay allows 256).
const STREAMS_PER_SESSION: usize = 200;

#[tokio::main]
async fn main() {
    // Eight actions run at once (the default for two processors); up to 2,000 wait.
    let admission = AdmissionConfig {
        max_queued: 2_000,
        max_queued_per_browser: 2_000,
        ..AdmissionConfig::with_running(8)
    };
    let system = System::start_with_admission(
        Limits {
            timeout: Duration::from_secs(60),
            memory_bytes: 64 << 20,
            output_bytes: 16 << 20,
        },
        admission,
    )
    .await;
    system.lift_plan_limits().await;
    let session = system.browser().await;
    let header = system.header(&system.device_id).encode();

    for (label, key, request) in [
        (
            "echo (sandbox only)",
            "echo",
            execute("hello-ai", "echo", serde_json::json!({ "text": "hello" })),
        ),
        (
            "write (sandbox + provider over HTTP)",
            "write",
            execute("hello-ai", "write", serde_json::json!({ "topic": "QUIC" })),
        ),
    ] {
        let mut first = Vec::with_capacity(ROUNDS);
        let mut whole = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS + 20 {
            let started = Instant::now();
            let (_send, mut recv) = open(&session, &[header.clone(), request.encode()]).await;
            let answer = read_answer(&mut recv, started).await;
            if round >= 20 {
                first.push(answer.first_chunk.as_secs_f64() * 1e3);
                whole.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        first.sort_by(f64::total_cmp);
        whole.sort_by(f64::total_cmp);
        println!(
            "{label}: request → first chunk p50 {:.3} ms, p99 {:.3} ms; → STREAM_END p50 {:.3} ms ({ROUNDS} rounds)",
            percentile(&first, 50.0),
            percentile(&first, 99.0),
            percentile(&whole, 50.0),
        );
        let goal = (key == "echo").then_some("≤ 0.25 ms");
        for (p, at) in [("p50", 50.0), ("p99", 99.0)] {
            let mut figure = Figure::new(
                "chain",
                format!("{key}: request on an open session → first chunk, {p}"),
                percentile(&first, at),
                "ms",
            );
            if p == "p50" {
                figure.goal = goal;
            }
            figure.record();
        }
    }

    let text = "word ".repeat(LONG_WORDS);
    let request = execute("hello-ai", "echo", serde_json::json!({ "text": text }));
    let started = Instant::now();
    let (_send, mut recv) = open(&session, &[header.clone(), request.encode()]).await;
    let Answer { chunks, bytes, .. } = read_answer(&mut recv, started).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "one long answer: {chunks} chunks, {:.0} chunks/s, {:.2} MiB/s of text",
        chunks as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64
    );
    Figure::new(
        "chain",
        "one long echo answer",
        chunks as f64 / secs,
        "chunks/s",
    )
    .record();

    let request = execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": "[long] tokens" }),
    );
    let started = Instant::now();
    let (_send, mut recv) = open(&session, &[header, request.encode()]).await;
    let Answer {
        chunks: tokens,
        first_chunk,
        ..
    } = read_answer(&mut recv, started).await;
    let streaming = started.elapsed() - first_chunk;
    println!(
        "model tokens passed through provider → browser: {tokens} tokens, {:.0} tokens/s after the first",
        tokens as f64 / streaming.as_secs_f64()
    );
    Figure::new(
        "chain",
        "model tokens passed through, after the first",
        tokens as f64 / streaming.as_secs_f64(),
        "tokens/s",
    )
    .goal("≥ 1,000 tokens/s")
    .record();

    concurrency(&system).await;
}

/// Request → first chunk of the echo action with `level` streams open at once, for each
/// level in `LEVELS` (default 1, 100, 1,000).
async fn concurrency(system: &System) {
    let levels: Vec<usize> = std::env::var("LEVELS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let header = system.header(&system.device_id).encode();
    let request = execute("hello-ai", "echo", serde_json::json!({ "text": "hello" })).encode();
    for level in levels {
        let mut sessions = Vec::new();
        for _ in 0..level.div_ceil(STREAMS_PER_SESSION) {
            sessions.push(system.browser().await);
        }
        let mut streams = tokio::task::JoinSet::new();
        for i in 0..level {
            let session = sessions[i / STREAMS_PER_SESSION].clone();
            let frames = [header.clone(), request.clone()];
            streams.spawn(async move {
                let started = Instant::now();
                let (_send, mut recv) = open(&session, &frames).await;
                let answer = read_answer(&mut recv, started).await;
                answer.first_chunk.as_secs_f64() * 1e3
            });
        }
        let mut first: Vec<f64> = streams.join_all().await;
        first.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&first, 50.0), percentile(&first, 99.0));
        println!(
            "{level} echo streams at once: request → first chunk p50 {p50:.3} ms, p99 {p99:.3} ms"
        );
        for (p, value) in [("p50", p50), ("p99", p99)] {
            Figure::new(
                "chain",
                format!("echo, {level} streams at once: request → first chunk, {p}"),
                value,
                "ms",
            )
            .record();
        }
    }
}

/// What came back for one request.
struct Answer {
    chunks: u64,
    bytes: u64,
    first_chunk: Duration,
}

/// Reads an answer to its STREAM_END, timing the first chunk from `started`.
async fn read_answer(recv: &mut wtransport::RecvStream, started: Instant) -> Answer {
    let (mut chunks, mut bytes, mut first_chunk) = (0u64, 0u64, None);
    loop {
        let body = read_frame(recv, MAX_FRAME_LEN)
            .await
            .expect("read")
            .expect("frame");
        match Envelope::decode(&body).expect("envelope").body {
            Body::StreamChunk { data, .. } => {
                first_chunk.get_or_insert_with(|| started.elapsed());
                chunks += 1;
                bytes += data.len() as u64;
            }
            Body::StreamEnd { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    Answer {
        chunks,
        bytes,
        first_chunk: first_chunk.expect("at least one chunk"),
    }
}
