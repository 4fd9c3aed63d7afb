//! The stream multiplexer's decoders and state machine (tunnel/src/mux/): none may panic.
//! A frame that decodes re-encodes to the same bytes; splitting a byte stream into frames
//! does not depend on how the bytes arrived; a WebSocket message decodes exactly when it
//! holds one whole frame; and a connection fed any frames (as either side, while its
//! application reads, writes, finishes and stops) keeps its own rules.

#![no_main]

use aisa_tunnel::mux::{Config, Connection, Frame, FrameDecoder, Side};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Byte stream, fed in pieces of a size taken from the input.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut failed = false;
    'feed: for piece in data.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    // The same bytes in one piece give the same frames.
    let mut whole = FrameDecoder::new();
    whole.push(data);
    let mut again = Vec::new();
    let mut whole_failed = false;
    loop {
        match whole.next_frame() {
            Ok(Some(frame)) => again.push(frame),
            Ok(None) => break,
            Err(_) => {
                whole_failed = true;
                break;
            }
        }
    }
    assert_eq!(frames, again);
    assert_eq!(failed, whole_failed);

    // Every frame re-encodes to bytes that decode to it, as a message too.
    for frame in &frames {
        let bytes = frame.to_bytes();
        assert_eq!(bytes.len(), frame.encoded_len());
        assert_eq!(Frame::decode_message(bytes).as_ref(), Ok(frame));
    }
    // The whole input as one WebSocket message: fine exactly when it is one frame.
    let message = Frame::decode_message(Bytes::copy_from_slice(data));
    if let Ok(frame) = &message {
        assert_eq!(frame.to_bytes().as_ref(), data);
    }

    // The frames into a connection of either side, with the application busy meanwhile.
    for side in [Side::Dialer, Side::Acceptor] {
        let mut conn = Connection::new(side, Config { max_incoming_streams: 4, max_queued: 4096 });
        let mine = conn.open().ok();
        for (i, frame) in frames.iter().enumerate() {
            let _ = conn.handle(frame.clone());
            while let Some(id) = conn.accept() {
                let _ = conn.write(id, &Bytes::from_static(b"answer"));
                if i % 2 == 0 {
                    let _ = conn.finish(id);
                }
            }
            if let Some(id) = mine {
                let _ = conn.read(id, 1 + i % 70_000);
                let _ = conn.write(id, &Bytes::from_static(b"more"));
                if i % 7 == 3 {
                    let _ = conn.stop(id, 1);
                }
            }
            // What it sends is always well-formed.
            while let Some(out) = conn.poll_transmit() {
                assert_eq!(Frame::decode_message(out.to_bytes()), Ok(out));
            }
        }
        if let Some(id) = mine {
            conn.release_send(id);
            conn.release_recv(id);
        }
    }
});
