//! `e2e-bench`: what end-to-end encryption costs the desktop per action stream.
//!
//! * setup: opening a sealed request (HPKE auth-mode decapsulation, the key schedule,
//!   opening a 200-byte request, the replay check, and the chunk key derivation), both
//!   with the free `open_request` (three X25519: the ephemeral and static DH and the
//!   recipient's public key) and with a `Recipient` as the node keeps one (one X25519:
//!   the rest is cached). Goal ≤ 60 µs.
//! * per chunk: sealing one 128-byte chunk into a reused frame buffer
//!   (`seal_chunk_into`, the desktop's cost per streamed chunk), and opening it in place
//!   (`open_chunk_in_place`, the browser's, in Rust). Goal ≤ 0.2 µs.
//! * the same per chunk for 16 KiB, as bytes per second.
//! * throughput lost against unencrypted streaming on one real QUIC stream on loopback,
//!   1 KiB and 16 KiB chunks (goal ≤ 5 %); see [`stream`]. `e2e-bench stream` runs only
//!   this part; `ROUNDS` sets its rounds (default 5).
//!
//! Prints medians of several rounds, in CPU time of the measuring thread. Build it optimised; it is kept in a crate of its
//! own so that takes seconds, not the whole workspace.

use std::hint::black_box;
use std::time::Instant;

use aisa_benches::report::Figure;

use aisa_crypto::e2e::{self, ReplayGuard};

mod stream;

/// This thread's CPU time so far, in nanoseconds (Linux `schedstat`), so that figures
/// hold on a machine busy with other work; falls back to wall time elsewhere.
fn cpu_ns() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_nanos() as f64
        })
}

/// Times `f` in CPU nanoseconds.
struct Clock(f64);

impl Clock {
    fn start() -> Clock {
        Clock(cpu_ns())
    }
    fn ns(&self) -> f64 {
        cpu_ns() - self.0
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let stream_rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    if std::env::args().nth(1).as_deref() == Some("stream") {
        stream::main(stream_rounds);
        return;
    }
    let desktop_sk = [0x5a; 32];
    let browser_sk = [0xa5; 32];
    let desktop_pk = e2e::public_of(&desktop_sk).expect("key");
    let browser_pk = e2e::public_of(&browser_sk).expect("key");
    let request = vec![b'x'; 200];
    let now = 1_800_000_000;

    // Setup on the desktop: a fresh sealed request each time (a replay would be refused).
    let n = 2000;
    let sealed: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            e2e::seal_request(&desktop_pk, &browser_sk, b"device", &request, now)
                .expect("seal")
                .0
        })
        .collect();
    let mut rounds = Vec::new();
    for round in sealed.chunks(n / 5) {
        let mut guard = ReplayGuard::default();
        let start = Clock::start();
        for s in round {
            black_box(
                e2e::open_request(&desktop_sk, &browser_pk, b"device", s, now, &mut guard)
                    .expect("open"),
            );
        }
        rounds.push(start.ns() / 1e3 / round.len() as f64);
    }
    println!(
        "desktop setup per stream, key as bytes (open_request: 3 X25519): {:.1} µs median of {} rounds",
        median(rounds),
        5
    );
    // What the node does: a Recipient made once, with the static-static DH cached.
    let recipient = e2e::Recipient::new(&desktop_sk);
    let mut rounds = Vec::new();
    for round in sealed.chunks(n / 5) {
        let mut guard = ReplayGuard::default();
        let start = Clock::start();
        for s in round {
            black_box(
                recipient
                    .open_request(&browser_pk, b"device", s, now, &mut guard)
                    .expect("open"),
            );
        }
        rounds.push(start.ns() / 1e3 / round.len() as f64);
    }
    let setup = median(rounds);
    println!(
        "desktop setup per stream (Recipient::open_request, the node's: 1 X25519): {setup:.1} µs median of 5 rounds (goal ≤ 60 µs)"
    );
    Figure::new("e2e-bench", "desktop setup per stream", setup, "µs")
        .goal("≤ 60 µs")
        .record();
    // Its parts: the one X25519 left, and the rest (key schedule, AEAD, replay check).
    {
        let sk = x25519_dalek::StaticSecret::from(desktop_sk);
        let pk = x25519_dalek::PublicKey::from(browser_pk);
        let count = 2000;
        let start = Clock::start();
        for _ in 0..count {
            black_box(sk.diffie_hellman(black_box(&pk)));
        }
        println!(
            "  of which one X25519 (x25519-dalek): {:.1} µs",
            start.ns() / 1e3 / count as f64
        );
    }

    // Browser setup, for comparison.
    let start = Clock::start();
    for _ in 0..500 {
        black_box(
            e2e::seal_request(&desktop_pk, &browser_sk, b"device", &request, now).expect("seal"),
        );
    }
    println!(
        "browser setup per stream (seal_request, Rust): {:.1} µs",
        start.ns() / 1e3 / 500.0
    );

    // The floor: the AEAD alone on 128 bytes, in place, same key each time.
    {
        use chacha20poly1305::aead::{AeadInOut, KeyInit};
        let aead = chacha20poly1305::ChaCha20Poly1305::new(&[1u8; 32].into());
        let mut buf = [7u8; 128];
        let count = 200_000u64;
        let start = Clock::start();
        for i in 0..count {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&i.to_be_bytes());
            black_box(
                aead.encrypt_inout_detached(&nonce.into(), b"", (&mut buf[..]).into())
                    .expect("seal"),
            );
        }
        println!(
            "ChaCha20-Poly1305 alone (chacha20poly1305 crate), 128 bytes in place: {:.0} ns",
            start.ns() / count as f64
        );
    }
    // The AEAD the chunks use: ring's, in assembly.
    let ring_alone;
    {
        use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[1u8; 32]).expect("key"));
        let mut buf = [7u8; 128];
        let count = 200_000u64;
        let start = Clock::start();
        for i in 0..count {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&i.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut buf[..],
                )
                .expect("seal");
            black_box(tag.as_ref()[0]);
        }
        ring_alone = start.ns() / count as f64;
        println!(
            "ChaCha20-Poly1305 alone (ring, the chunks' AEAD), 128 bytes in place: {ring_alone:.0} ns"
        );
    }

    for size in [128usize, 16 * 1024] {
        let data = vec![7u8; size];
        let count = if size == 128 { 200_000 } else { 5_000 };
        let mut seal_rounds = Vec::new();
        let mut open_rounds = Vec::new();
        for _ in 0..5 {
            let (sealed, mut opener) =
                e2e::seal_request(&desktop_pk, &browser_sk, b"device", &request, now)
                    .expect("seal");
            let (_, mut sealer) = e2e::open_request(
                &desktop_sk,
                &browser_pk,
                b"device",
                &sealed,
                now,
                &mut ReplayGuard::default(),
            )
            .expect("open");
            // For the browser's half: frames sealed beforehand, untimed, in one buffer.
            let mut frames = Vec::with_capacity(count * (size + 64));
            for _ in 0..count {
                sealer
                    .seal_chunk_into(&mut frames, &data, false)
                    .expect("seal chunk");
            }
            // As the node writes: each chunk sealed and framed into one reused buffer.
            let mut buf = Vec::with_capacity(size + 64);
            let start = Clock::start();
            for _ in 0..count {
                buf.clear();
                sealer
                    .seal_chunk_into(&mut buf, &data, false)
                    .expect("seal chunk");
                black_box(&buf);
            }
            seal_rounds.push(start.ns() / count as f64);
            // Each frame opened in place.
            let start = Clock::start();
            let mut rest = &mut frames[..];
            while rest.len() > 4 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let (frame, tail) = rest[4..].split_at_mut(len);
                black_box(opener.open_chunk_in_place(frame).expect("open chunk"));
                rest = tail;
            }
            open_rounds.push(start.ns() / count as f64);
        }
        let seal = median(seal_rounds);
        let open = median(open_rounds);
        println!(
            "{size}-byte chunk: seal {:.0} ns ({:.0} MiB/s), open {:.0} ns ({:.0} MiB/s){}",
            seal,
            size as f64 / seal * 1e9 / (1 << 20) as f64,
            open,
            size as f64 / open * 1e9 / (1 << 20) as f64,
            if size == 128 {
                " (goal ≤ 0.2 µs)"
            } else {
                ""
            }
        );
        let figure = Figure::new(
            "e2e-bench",
            format!("seal one {size}-byte chunk"),
            seal,
            "ns",
        );
        if size == 128 {
            figure
                .baseline(ring_alone, "the AEAD alone")
                .goal("≤ 200 ns")
                .record();
        } else {
            figure.record();
        }
    }
    stream::main(stream_rounds);
}
