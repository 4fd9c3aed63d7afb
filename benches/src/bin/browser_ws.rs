//! The browser's WebSocket leg against WebTransport, on loopback: time to the first
//! chunk and throughput of actions run by a browser-role client over each, through a
//! real relay and desktop node (in this process, `aisa_testkit::system::System`).
//!
//! * first chunk: an `echo` action of one word on a session that is already open, from
//!   opening the stream to the first STREAM_CHUNK read (`ROUNDS` samples, default 50,
//!   alternating the transports);
//! * throughput: an `echo` of 896 KiB in 64 KiB words (the request must fit one 1 MiB
//!   frame), from opening the stream to STREAM_END, `BIG_ROUNDS` (default 10) per
//!   transport; the rate counts the chunks' text.
//!
//! `cargo run --release -p aisa-benches --bin browser-ws`. Figures to standard output;
//! benches/README.md records a run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use aisa_testkit::system::{System, execute};
use aisa_testkit::ws_browser::ws_session;
use aisa_tunnel::mux::driver::MuxConnection;
use aisa_tunnel::proto::{ClientEvent, ClientRequest};
use aisa_tunnel::{Body, Envelope, OpenHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes the request and reads the reply; returns (time to first chunk, time to the
/// end, bytes of chunk text).
async fn exchange<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    started: Instant,
    header: &OpenHeader,
    request: &Envelope,
    mut send: W,
    mut recv: R,
) -> (Duration, Duration, usize) {
    let mut machine = ClientRequest::new(header, request);
    send.write_all(&machine.poll_transmit().unwrap())
        .await
        .unwrap();
    let mut first = None;
    let mut bytes = 0;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = recv.read(&mut buf).await.unwrap();
        let events = if n == 0 {
            machine.finish().into_iter().collect()
        } else {
            machine.receive(&buf[..n])
        };
        for event in events {
            match event {
                ClientEvent::Message(Envelope {
                    body: Body::StreamChunk { data, .. },
                    ..
                }) => {
                    first.get_or_insert_with(|| started.elapsed());
                    bytes += data.len();
                }
                ClientEvent::Done(Ok(_)) => {
                    return (first.unwrap_or_default(), started.elapsed(), bytes);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(n > 0, "stream ended early");
    }
}

async fn over_wt(
    session: &wtransport::Connection,
    header: &OpenHeader,
    request: &Envelope,
) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let (send, recv) = session.open_bi().await.unwrap().await.unwrap();
    exchange(started, header, request, send, recv).await
}

async fn over_ws(
    session: &MuxConnection,
    header: &OpenHeader,
    request: &Envelope,
) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let (send, recv) = session.open_bi().unwrap();
    exchange(started, header, request, send, recv).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let big_rounds: usize = std::env::var("BIG_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let system = System::start_with(aisa_node::sandbox::Limits {
        output_bytes: 16 << 20,
        ..Default::default()
    })
    .await;
    system.lift_plan_limits().await;
    let header = system.header(&system.device_id);
    let wt = system.browser().await;
    let ws = ws_session(system.relay().http_addr).await;

    let small = execute("hello-ai", "echo", serde_json::json!({ "text": "hi" }));
    // Warm both paths (module cache, connections).
    over_wt(&wt, &header, &small).await;
    over_ws(&ws, &header, &small).await;
    let (mut wt_first, mut ws_first) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        wt_first.push(over_wt(&wt, &header, &small).await.0);
        ws_first.push(over_ws(&ws, &header, &small).await.0);
    }
    let (wt50, ws50) = (
        percentile(&mut wt_first, 0.5),
        percentile(&mut ws_first, 0.5),
    );
    let (wt95, ws95) = (
        percentile(&mut wt_first, 0.95),
        percentile(&mut ws_first, 0.95),
    );
    println!("first chunk, {rounds} rounds each (ms):");
    println!("  webtransport  p50 {:7.2}  p95 {:7.2}", ms(wt50), ms(wt95));
    println!("  websocket     p50 {:7.2}  p95 {:7.2}", ms(ws50), ms(ws95));
    println!(
        "  websocket / webtransport p50: {:.2}x",
        ms(ws50) / ms(wt50)
    );

    let word = "y".repeat(64 * 1024 - 1) + " ";
    // 14 words: 896 KiB, under the 1 MiB frame cap of the request itself.
    let big = execute(
        "hello-ai",
        "echo",
        serde_json::json!({ "text": word.repeat(14) }),
    );
    let (mut wt_rate, mut ws_rate) = (Vec::new(), Vec::new());
    for _ in 0..big_rounds {
        let (_, t, n) = over_wt(&wt, &header, &big).await;
        wt_rate.push(n as f64 / t.as_secs_f64() / (1 << 20) as f64);
        let (_, t, n) = over_ws(&ws, &header, &big).await;
        ws_rate.push(n as f64 / t.as_secs_f64() / (1 << 20) as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wtm, wsm) = (median(&mut wt_rate), median(&mut ws_rate));
    println!("throughput, 896 KiB echo, {big_rounds} rounds each (MiB/s, median):");
    println!("  webtransport  {wtm:7.1}");
    println!("  websocket     {wsm:7.1}");
    println!("  websocket / webtransport: {:.2}x", wsm / wtm);
}
