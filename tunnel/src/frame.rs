//! Length-prefixed frames.
//!
//! A frame is a `u32` big-endian body length followed by that many bytes. A length above
//! the decoder's maximum is refused as soon as the four length bytes are seen, before
//! anything is allocated for the body.

/// The largest frame body any peer accepts by default: 1 MiB.
pub const MAX_FRAME_LEN: u32 = 1024 * 1024;

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why frame bytes could not be split into frames.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The maximum this decoder accepts.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("truncated frame: stream ended mid-frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the frame received (prefix included).
        have: usize,
        /// Bytes the whole frame needs (prefix included), or 4 when the prefix itself was cut.
        need: usize,
    },
}

/// Appends one frame holding `body` to `out`.
///
/// Fails with [`FrameError::TooLarge`] if `body` is longer than `max`.
pub fn encode_frame(body: &[u8], max: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    out.reserve(LEN_PREFIX + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Returns the body length announced by a 4-byte prefix, checked against `max`.
pub fn check_len(prefix: [u8; LEN_PREFIX], max: u32) -> Result<u32, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Looks for one whole frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the body and the number of bytes the
/// frame occupies (prefix included).
pub fn split_frame(buf: &[u8], max: u32) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let len = check_len(*prefix, max)? as usize;
    let total = LEN_PREFIX + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((&buf[LEN_PREFIX..total], total)))
}

/// A push-based frame decoder: feed it bytes as they arrive, take whole frames out.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    max: u32,
}

impl FrameBuffer {
    /// A decoder that refuses frames longer than `max`.
    pub fn new(max: u32) -> Self {
        FrameBuffer {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next whole frame's body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        match split_frame(&self.buf, self.max)? {
            None => Ok(None),
            Some((body, used)) => {
                let body = body.to_vec();
                self.buf.drain(..used);
                Ok(Some(body))
            }
        }
    }

    /// Call at end of stream: fine if nothing is left, [`FrameError::Truncated`] otherwise.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = match self.buf.first_chunk::<LEN_PREFIX>() {
            Some(prefix) => LEN_PREFIX + u32::from_be_bytes(*prefix) as usize,
            None => LEN_PREFIX,
        };
        Err(FrameError::Truncated {
            have: self.buf.len(),
            need,
        })
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The bytes buffered but not yet returned as a frame.
    pub fn peek(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the buffered bytes out, leaving the decoder empty.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_big_endian_length_then_body() {
        let mut out = Vec::new();
        encode_frame(b"abc", MAX_FRAME_LEN, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn refuses_oversize_body_when_encoding() {
        let mut out = Vec::new();
        let err = encode_frame(&[0; 11], 10, &mut out).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 11, max: 10 });
        assert!(out.is_empty());
    }

    #[test]
    fn refuses_oversize_prefix_before_the_body_arrives() {
        // Only the prefix is here: the decoder must refuse without waiting for 4 GiB.
        let err = split_frame(&[0xff, 0xff, 0xff, 0xff], MAX_FRAME_LEN).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u32::MAX,
                max: MAX_FRAME_LEN
            }
        );
    }

    #[test]
    fn waits_for_whole_frame() {
        assert_eq!(split_frame(&[0, 0], 100).unwrap(), None);
        assert_eq!(split_frame(&[0, 0, 0, 2, 1], 100).unwrap(), None);
        assert_eq!(
            split_frame(&[0, 0, 0, 2, 1, 2, 9], 100).unwrap(),
            Some((&[1u8, 2][..], 6))
        );
    }

    #[test]
    fn buffer_yields_frames_across_pushes_and_detects_truncation() {
        let mut fb = FrameBuffer::new(100);
        fb.push(&[0, 0, 0, 1, 7, 0, 0]);
        assert_eq!(fb.next_frame().unwrap(), Some(vec![7]));
        assert_eq!(fb.next_frame().unwrap(), None);
        assert_eq!(fb.finish(), Err(FrameError::Truncated { have: 2, need: 4 }));
        fb.push(&[0, 2, 5]);
        assert_eq!(fb.next_frame().unwrap(), None);
        assert_eq!(fb.finish(), Err(FrameError::Truncated { have: 5, need: 6 }));
        fb.push(&[6]);
        assert_eq!(fb.next_frame().unwrap(), Some(vec![5, 6]));
        assert_eq!(fb.finish(), Ok(()));
    }

    #[test]
    fn empty_frame_is_valid() {
        let mut fb = FrameBuffer::new(100);
        fb.push(&[0, 0, 0, 0]);
        assert_eq!(fb.next_frame().unwrap(), Some(vec![]));
        assert_eq!(fb.pending(), 0);
    }
}
