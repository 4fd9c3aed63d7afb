//! The whole chain on loopback: a client in the browser's role (wtransport) → relay-edge
//! → desktop-node → example mini-app in wasmtime (→ the local OpenAI-format provider) →
//! streamed chunks back.
//!
//! `cargo run --release -p aisa-benches --bin chain` prints:
//! * time from sending a request on an open session to its first chunk, p50 / p99,
//!   for the echo action (no model) and the write action (through the provider);
//! * chunks per second and MiB/s for one long streamed answer (echo, no model);
//! * model tokens per second passed through from the provider (over HTTP, server-sent
//!   events) to the browser, one chunk per token.

use std::time::{Duration, Instant};

use aisa_benches::percentile;
use aisa_node::sandbox::Limits;
use aisa_testkit::system::{System, execute, open};
use aisa_tunnel::io::read_frame;
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN};

const ROUNDS: usize = 300;
const LONG_WORDS: usize = 50_000;

#[tokio::main]
async fn main() {
    let system = System::start_with(Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: 64 << 20,
        output_bytes: 16 << 20,
    })
    .await;
    system.lift_plan_limits().await;
    let session = system.browser().await;
    let header = system.header(&system.device_id).encode();

    for (label, request) in [
        (
            "echo (sandbox only)",
            execute("hello-ai", "echo", serde_json::json!({ "text": "hello" })),
        ),
        (
            "write (sandbox + provider over HTTP)",
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
