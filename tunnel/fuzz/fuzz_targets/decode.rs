//! Fuzzes every decoder of the wire protocol: the frame splitter and the header and
//! envelope decoders must never panic, and whatever decodes must re-encode to bytes that
//! decode to the same value.
//!
//! Run with `cargo fuzz run decode` from `tunnel/` (cargo-fuzz; on a stable toolchain set
//! `RUSTC_BOOTSTRAP=1`).

#![no_main]

use aisa_tunnel::{Envelope, FrameBuffer, Hello, OpenHeader, RelayHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut frames = FrameBuffer::new(64 * 1024);
    frames.push(data);
    while let Ok(Some(body)) = frames.next_frame() {
        if let Ok(env) = Envelope::decode(&body) {
            assert_eq!(Envelope::decode(&env.encode()).as_ref(), Ok(&env));
        }
    }
    let _ = frames.finish();
    if let Ok((h, _)) = OpenHeader::decode(data) {
        assert_eq!(OpenHeader::decode(&h.encode()).map(|(h, _)| h), Ok(h));
    }
    if let Ok((h, _)) = RelayHeader::decode(data) {
        assert_eq!(RelayHeader::decode(&h.encode()).map(|(h, _)| h), Ok(h));
    }
    if let Ok((h, _)) = Hello::decode(data) {
        assert_eq!(Hello::decode(&h.encode()).map(|(h, _)| h), Ok(h));
    }
});
