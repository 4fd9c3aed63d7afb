//! Property tests: frames round-trip; no byte string panics the decoder or the state
//! machine; and two connections exchanging frames in any interleaving of writes, reads,
//! finishes and deliveries carry every stream's bytes intact and in order.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::conn::{Config, Connection, Read, Side};
use super::frame::{Frame, FrameDecoder, MAX_DATA};

fn frame() -> impl Strategy<Value = Frame> {
    let id = 1..u32::MAX;
    prop_oneof![
        id.clone().prop_map(|id| Frame::Open { id }),
        (id.clone(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(id, d)| {
            Frame::Data {
                id,
                data: Bytes::from(d),
            }
        }),
        id.clone().prop_map(|id| Frame::Finish { id }),
        (id.clone(), any::<u32>()).prop_map(|(id, code)| Frame::Reset { id, code }),
        (id.clone(), any::<u32>()).prop_map(|(id, code)| Frame::Stop { id, code }),
        (id, 1..u32::MAX).prop_map(|(id, increment)| Frame::Credit { id, increment }),
        any::<[u8; 8]>().prop_map(|payload| Frame::Ping { payload }),
        any::<[u8; 8]>().prop_map(|payload| Frame::Pong { payload }),
        (any::<u32>(), ".{0,60}").prop_map(|(code, reason)| Frame::GoAway { code, reason }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Open,
    Write(usize, usize),
    Finish(usize),
    Read(usize, usize),
    /// Delivers up to n queued frames from a to b.
    Deliver(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Open),
        4 => (0..4usize, 1..(3 * MAX_DATA)).prop_map(|(s, n)| Op::Write(s, n)),
        1 => (0..4usize).prop_map(Op::Finish),
        4 => (0..4usize, 1..100_000usize).prop_map(|(s, n)| Op::Read(s, n)),
        4 => (1..20usize).prop_map(Op::Deliver),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip(f in frame()) {
        let bytes = f.to_bytes();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(Frame::decode_message(bytes.clone()).unwrap(), f.clone());
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        prop_assert_eq!(d.next_frame().unwrap(), Some(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Frame::decode_message(Bytes::from(bytes.clone()));
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        let mut conn = Connection::new(Side::Acceptor, Config::default());
        while let Ok(Some(f)) = d.next_frame() {
            let _ = conn.handle(f);
            while conn.poll_transmit().is_some() {}
        }
    }

    #[test]
    fn arbitrary_frames_never_panic(frames in proptest::collection::vec(frame(), 0..60)) {
        let mut conn = Connection::new(Side::Dialer, Config::default());
        let id = conn.open().unwrap();
        for f in frames {
            let _ = conn.handle(f);
            let _ = conn.read(id, 1000);
            let _ = conn.write(id, &Bytes::from_static(b"abc"));
            while conn.poll_transmit().is_some() {}
        }
    }

    #[test]
    fn streams_arrive_intact(ops in proptest::collection::vec(op(), 1..120)) {
        let mut a = Connection::new(Side::Dialer, Config { max_queued: 200_000, ..Config::default() });
        let mut b = Connection::new(Side::Acceptor, Config::default());
        let mut ids = Vec::new();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut finished: Vec<bool> = Vec::new();
        let mut wire = BytesMut::new();
        let mut counter = 0u8;
        let pump_back = |a: &mut Connection, b: &mut Connection| {
            while let Some(f) = b.poll_transmit() {
                a.handle(f).unwrap();
            }
        };
        for op in ops {
            match op {
                Op::Open => {
                    ids.push(a.open().unwrap());
                    sent.push(Vec::new());
                    got.push(Vec::new());
                    finished.push(false);
                }
                Op::Write(s, n) if s < ids.len() && !finished[s] => {
                    let data: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                    let taken = a.write(ids[s], &Bytes::from(data.clone())).unwrap();
                    prop_assert!(taken <= MAX_DATA);
                    sent[s].extend_from_slice(&data[..taken]);
                }
                Op::Finish(s) if s < ids.len() && !finished[s] => {
                    a.finish(ids[s]).unwrap();
                    finished[s] = true;
                }
                Op::Read(s, n) if s < ids.len() => {
                    // The receiver may not know the stream yet.
                    if let Ok(Read::Data(d)) = b.read(ids[s], n) {
                        prop_assert!(d.len() <= n);
                        got[s].extend_from_slice(&d);
                    }
                    pump_back(&mut a, &mut b);
                }
                Op::Deliver(n) => {
                    for _ in 0..n {
                        let Some(f) = a.poll_transmit() else { break };
                        f.encode(&mut wire);
                    }
                    let mut d = FrameDecoder::new();
                    d.push(&wire.split());
                    while let Some(f) = d.next_frame().unwrap() {
                        b.handle(f).unwrap();
                    }
                    pump_back(&mut a, &mut b);
                }
                _ => {}
            }
        }
        // Drain everything: deliver all, read all.
        for _ in 0..10_000 {
            while let Some(f) = a.poll_transmit() {
                b.handle(f).unwrap();
            }
            let mut progress = false;
            for (s, id) in ids.iter().enumerate() {
                while let Ok(Read::Data(d)) = b.read(*id, usize::MAX) {
                    got[s].extend_from_slice(&d);
                    progress = true;
                }
            }
            pump_back(&mut a, &mut b);
            if !progress && !a.has_transmit() {
                break;
            }
        }
        for s in 0..ids.len() {
            prop_assert!(got[s] == sent[s], "stream {} differs", s);
            if finished[s] {
                prop_assert_eq!(b.read(ids[s], 1).unwrap(), Read::End);
            }
        }
        prop_assert!(a.closed().is_none() && b.closed().is_none());
    }
}
