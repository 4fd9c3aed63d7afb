//! The wire protocol's decoders (tunnel/): the frame splitter, envelopes and the three
//! stream headers. None may panic; whatever decodes must pass its own validation and
//! re-encode to bytes that decode to the same value; splitting the input into frames must
//! not depend on how the bytes arrived.

#![no_main]

use aisa_tunnel::frame::{encode_frame, split_frame};
use aisa_tunnel::{Envelope, FrameBuffer, Hello, MAX_HEADER_LEN, OpenHeader, RelayHeader, Version};
use libfuzzer_sys::fuzz_target;

/// A small frame limit, so the fuzzer reaches "too large" too.
const MAX: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // Frames, fed in pieces of a size taken from the input, must come out exactly as a
    // one-shot split of the whole buffer gives them.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut frames = FrameBuffer::new(MAX);
    let mut got = Vec::new();
    let mut failed = false;
    for piece in data.chunks(step) {
        frames.push(piece);
        loop {
            match frames.next_frame() {
                Ok(Some(body)) => got.push(body),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    let mut expected = Vec::new();
    let mut rest = data;
    let mut expected_failed = false;
    loop {
        match split_frame(rest, MAX) {
            Ok(Some((body, used))) => {
                expected.push(body.to_vec());
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(_) => {
                expected_failed = true;
                break;
            }
        }
    }
    assert_eq!(got, expected, "frames depend on how the bytes arrived");
    assert_eq!(failed, expected_failed);
    if !failed {
        assert_eq!(frames.pending(), rest.len());
        assert_eq!(frames.finish().is_ok(), rest.is_empty());
    }

    for body in got.iter().map(Vec::as_slice).chain([data]) {
        // Re-framing a body gives back the body.
        let mut framed = Vec::new();
        if encode_frame(body, MAX, &mut framed).is_ok() {
            assert_eq!(split_frame(&framed, MAX), Ok(Some((body, framed.len()))));
        }
        if let Ok(env) = Envelope::decode(body) {
            assert_eq!(Envelope::decode(&env.encode()).as_ref(), Ok(&env));
        }
    }

    if let Ok((h, _peer)) = OpenHeader::decode(data) {
        assert!(data.len() <= MAX_HEADER_LEN as usize);
        assert_eq!(h.validate(), Ok(()), "decoded but invalid: {h:?}");
        assert_eq!(OpenHeader::decode(&h.encode()), Ok((h, Version::CURRENT)));
    }
    if let Ok((h, _peer)) = RelayHeader::decode(data) {
        assert_eq!(h.validate(), Ok(()), "decoded but invalid: {h:?}");
        assert_eq!(RelayHeader::decode(&h.encode()), Ok((h, Version::CURRENT)));
    }
    if let Ok((h, _peer)) = Hello::decode(data) {
        assert_eq!(h.validate(), Ok(()), "decoded but invalid: {h:?}");
        assert_eq!(Hello::decode(&h.encode()), Ok((h, Version::CURRENT)));
    }
});
