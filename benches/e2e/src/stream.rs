//! Throughput of one real QUIC stream on loopback, plain against end-to-end sealed.
//!
//! The writer sends the desktop's response stream as the node does: one length-prefixed
//! frame (`aisa_tunnel` framing, u32 big-endian length + body) per chunk. Plain, the
//! body is the chunk (`write_frame`); sealed, `ResponseSealer::seal_chunk_into` seals the
//! chunk (the last one final) straight into one reused frame buffer that is written as
//! is, and the reader opens every frame in place with
//! `ResponseOpener::open_chunk_in_place` and calls `finish()` at the end. MiB/s counts payload (chunk data) delivered, wall time
//! from the writer's first frame to the reader's end of stream. Rounds alternate plain
//! and sealed on fresh streams of the same connection; medians are reported, with the
//! CPU time of the whole process (both ends, QUIC, TLS) per MiB. It reports; it asserts
//! nothing about the goal.

use std::sync::Arc;
use std::time::Instant;

use aisa_benches::report::Figure;
use aisa_crypto::e2e::{self, ReplayGuard, ResponseOpener, ResponseSealer};
use aisa_tunnel::frame::MAX_FRAME_LEN;
use aisa_tunnel::io::{read_frame, write_frame};

use crate::median;

const MIB: f64 = (1u64 << 20) as f64;

/// CPU seconds (user + system) of the whole process so far, all threads: both ends, the
/// QUIC endpoints and TLS. From `/proc/self/stat` in clock ticks (assumed 100 per second),
/// so good to 10 ms; 0 where there is no `/proc`.
fn process_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses: utime and stime are
            // the 12th and 13th.
            let rest = &s[s.rfind(')')? + 2..];
            let mut f = rest.split_whitespace().skip(11);
            let user: f64 = f.next()?.parse().ok()?;
            let system: f64 = f.next()?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(0.0)
}

/// A server and a client endpoint on loopback, connected; returns both ends.
async fn connect() -> (
    quinn::Endpoint,
    quinn::Endpoint,
    quinn::Connection,
    quinn::Connection,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let server_config =
        quinn::ServerConfig::with_single_cert(vec![cert.clone()], key).expect("server config");
    let server =
        quinn::Endpoint::server(server_config, ([127, 0, 0, 1], 0).into()).expect("server");
    let addr = server.local_addr().expect("addr");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client_config =
        quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client config");
    let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("client");
    client.set_default_client_config(client_config);

    // Both ends at once: the client's handshake needs the server to accept it.
    let (client_conn, server_conn) = tokio::join!(
        async { client.connect(addr, "localhost").expect("connect").await },
        async { server.accept().await.expect("incoming").await }
    );
    let server_conn = server_conn.expect("accept");
    (
        server,
        client,
        server_conn,
        client_conn.expect("connection"),
    )
}

/// A fresh sealer/opener pair, as one action stream has.
fn keys() -> (ResponseSealer, ResponseOpener) {
    let desktop_sk = [0x5a; 32];
    let browser_sk = [0xa5; 32];
    let desktop_pk = e2e::public_of(&desktop_sk).expect("key");
    let browser_pk = e2e::public_of(&browser_sk).expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (sealed, opener) =
        e2e::seal_request(&desktop_pk, &browser_sk, b"device", b"request", now).expect("seal");
    let (_, sealer) = e2e::open_request(
        &desktop_sk,
        &browser_pk,
        b"device",
        &sealed,
        now,
        &mut ReplayGuard::default(),
    )
    .expect("open");
    (sealer, opener)
}

/// Streams `count` chunks of `size` bytes from `writer` (the desktop) to `reader` (the
/// browser) on a new stream; MiB/s of payload and CPU milliseconds (whole process) per MiB.
async fn run(
    writer: &quinn::Connection,
    reader: &quinn::Connection,
    size: usize,
    count: usize,
    sealed: bool,
) -> (f64, f64) {
    let (mut sealer, mut opener) = if sealed {
        let (s, o) = keys();
        (Some(s), Some(o))
    } else {
        (None, None)
    };
    let data = vec![7u8; size];
    let cpu = process_cpu();
    let started = Instant::now();
    let mut send = writer.open_uni().await.expect("open stream");
    let write = async move {
        // Sealed, as the node writes: each chunk sealed straight into one reused frame
        // buffer (length prefix, header, data, tag), written as is.
        let mut buf = Vec::new();
        for i in 0..count {
            match sealer.as_mut() {
                Some(sealer) => {
                    buf.clear();
                    sealer
                        .seal_chunk_into(&mut buf, &data, i + 1 == count)
                        .expect("seal chunk");
                    send.write_all(&buf).await.map_err(std::io::Error::from)
                }
                None => write_frame(&mut send, &data, MAX_FRAME_LEN).await,
            }
            .expect("write");
        }
        send.finish().expect("finish");
        send
    };
    let read = async {
        let mut recv = reader.accept_uni().await.expect("accept stream");
        let mut got = 0usize;
        while let Some(mut frame) = read_frame(&mut recv, MAX_FRAME_LEN).await.expect("read") {
            got += match opener.as_mut() {
                Some(opener) => opener
                    .open_chunk_in_place(&mut frame)
                    .expect("open chunk")
                    .0
                    .len(),
                None => frame.len(),
            };
        }
        if let Some(opener) = &opener {
            opener.finish().expect("final chunk");
        }
        got
    };
    // Writer and reader as separate tasks, so each may take a core, as the desktop and the
    // browser would.
    let write = tokio::spawn(write);
    let got = read.await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu;
    drop(write.await.expect("writer"));
    assert_eq!(got, size * count, "payload lost");
    let mib = got as f64 / MIB;
    (mib / secs, cpu * 1e3 / mib)
}

/// Runs the plain/sealed rounds for 1 KiB and 16 KiB chunks and prints the table.
pub fn main(rounds: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (_server, _client, desktop, browser) = connect().await;
        println!();
        println!(
            "one QUIC stream on loopback, desktop → browser, length-prefixed frames; median MiB/s of payload over {rounds} rounds (plain and sealed alternating)"
        );
        println!(
            "| chunk | data per run | plain MiB/s | sealed MiB/s | loss | CPU ms per MiB, plain / sealed |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        for (size, mib) in [(1024usize, 64usize), (16 * 1024, 256)] {
            let count = (mib << 20) / size;
            // Warm up the connection (congestion window, allocator) once per size.
            run(&desktop, &browser, size, count / 8, false).await;
            let mut plain = Vec::new();
            let mut sealed = Vec::new();
            let mut plain_cpu = Vec::new();
            let mut sealed_cpu = Vec::new();
            for round in 0..rounds {
                // Alternate which goes first, so a drift in machine load hits both.
                let order = if round % 2 == 0 { [false, true] } else { [true, false] };
                for s in order {
                    let (rate, cpu) = run(&desktop, &browser, size, count, s).await;
                    if s {
                        sealed.push(rate);
                        sealed_cpu.push(cpu);
                    } else {
                        plain.push(rate);
                        plain_cpu.push(cpu);
                    }
                }
            }
            let (p, s) = (median(plain.clone()), median(sealed.clone()));
            println!(
                "| {} KiB | {mib} MiB | {p:.0} ({}) | {s:.0} ({}) | {:.1} % | {:.2} / {:.2} |",
                size / 1024,
                range(&plain),
                range(&sealed),
                (1.0 - s / p) * 100.0,
                median(plain_cpu),
                median(sealed_cpu)
            );
            Figure::new(
                "e2e-bench",
                format!("sealed throughput, one loopback stream, {} KiB chunks", size / 1024),
                s,
                "MiB/s",
            )
            .baseline(p, "plain on the same stream")
            .goal(if size == 1024 { "loss ≤ 25 %" } else { "loss ≤ 15 %" })
            .record();
        }
        desktop.close(0u32.into(), b"done");
    });
}

fn range(xs: &[f64]) -> String {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(0.0, f64::max);
    format!("{lo:.0}–{hi:.0}")
}
