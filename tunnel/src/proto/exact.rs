//! [`ExactFrames`]: a frame decoder that says how many bytes it needs next.

use crate::frame::{FrameBuffer, FrameError, LEN_PREFIX};

/// Splits bytes into frames and tells the driver how many bytes complete the next one,
/// so a driver that reads at most [`ExactFrames::want`] bytes never reads past a frame
/// (after a header, the rest of the stream can be spliced untouched).
///
/// Bytes beyond a frame are kept, not lost: [`ExactFrames::next_frame`] returns them as
/// later frames and [`ExactFrames::into_rest`] hands them back.
#[derive(Debug)]
pub struct ExactFrames {
    buffer: FrameBuffer,
    max: u32,
}

impl ExactFrames {
    /// A decoder refusing frames longer than `max`.
    pub fn new(max: u32) -> Self {
        ExactFrames {
            buffer: FrameBuffer::new(max),
            max,
        }
    }

    /// Changes the largest frame accepted from the next frame on (a header's small cap,
    /// then the general frame cap).
    pub fn set_max(&mut self, max: u32) {
        let mut buffer = FrameBuffer::new(max);
        buffer.push(&self.take_pending());
        self.buffer = buffer;
        self.max = max;
    }

    /// How many more bytes complete the frame being read: the length prefix's missing
    /// bytes, or the body's. Never zero. A length over the limit is reported by
    /// [`ExactFrames::next_frame`], so this stays small for a refused frame.
    pub fn want(&self) -> usize {
        let pending = self.pending_bytes();
        let Some(prefix) = pending.first_chunk::<LEN_PREFIX>() else {
            return LEN_PREFIX - pending.len();
        };
        let len = u32::from_be_bytes(*prefix);
        if len > self.max {
            return 1;
        }
        (LEN_PREFIX + len as usize)
            .saturating_sub(pending.len())
            .max(1)
    }

    /// Adds received bytes.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.buffer.push(bytes);
    }

    /// The next whole frame's body, if one is here.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.buffer.next_frame()
    }

    /// At the end of the stream: fine if no partial frame is left.
    pub fn finish(&self) -> Result<(), FrameError> {
        self.buffer.finish()
    }

    /// Whether bytes of an unfinished frame are buffered.
    pub fn is_mid_frame(&self) -> bool {
        self.buffer.pending() > 0
    }

    /// The bytes received but not returned as a frame.
    pub fn into_rest(mut self) -> Vec<u8> {
        self.take_pending()
    }

    fn pending_bytes(&self) -> &[u8] {
        self.buffer.peek()
    }

    fn take_pending(&mut self) -> Vec<u8> {
        self.buffer.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(body, u32::MAX, &mut out).unwrap();
        out
    }

    #[test]
    fn want_never_reaches_past_the_frame() {
        let mut frames = ExactFrames::new(100);
        let wire = [frame(b"hello"), frame(b"next")].concat();
        let mut at = 0;
        let mut got = Vec::new();
        while got.is_empty() {
            let n = frames.want();
            frames.receive(&wire[at..at + n]);
            at += n;
            if let Some(body) = frames.next_frame().unwrap() {
                got = body;
            }
        }
        assert_eq!(got, b"hello");
        assert_eq!(
            at, 9,
            "read the prefix and the body, nothing of the next frame"
        );
        assert!(frames.into_rest().is_empty());
    }

    #[test]
    fn extra_bytes_are_kept_as_later_frames() {
        let mut frames = ExactFrames::new(100);
        frames.receive(&[frame(b"a"), frame(b"b"), vec![0, 0]].concat());
        assert_eq!(frames.next_frame().unwrap().unwrap(), b"a");
        assert_eq!(frames.next_frame().unwrap().unwrap(), b"b");
        assert_eq!(frames.next_frame().unwrap(), None);
        assert!(frames.is_mid_frame());
        assert_eq!(frames.want(), 2);
        assert!(matches!(
            frames.finish(),
            Err(FrameError::Truncated { have: 2, need: 4 })
        ));
        assert_eq!(frames.into_rest(), [0, 0]);
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_its_body() {
        let mut frames = ExactFrames::new(10);
        frames.receive(&11u32.to_be_bytes());
        assert_eq!(frames.want(), 1);
        assert_eq!(
            frames.next_frame(),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn the_cap_can_change_between_frames() {
        let mut frames = ExactFrames::new(2);
        frames.receive(&frame(b"ab"));
        assert_eq!(frames.next_frame().unwrap().unwrap(), b"ab");
        frames.set_max(5);
        frames.receive(&frame(b"abcde"));
        assert_eq!(frames.next_frame().unwrap().unwrap(), b"abcde");
    }
}
