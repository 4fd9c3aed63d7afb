//! [`HeaderReader`]: the first frame of a stream, within its size cap and time limit.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::{ExactFrames, Refusal};
use crate::frame::FrameError;
use crate::{DecodeError, Hello, MAX_HEADER_LEN, OpenHeader, RelayHeader, Version};

/// A header that opens a stream: decoded and checked field by field.
pub trait StreamHeader: Sized {
    /// Its name in messages ("stream-open header", "HELLO", "relay header").
    const WHAT: &'static str;
    /// Decodes and validates a header frame's body.
    fn decode_header(body: &[u8]) -> Result<(Self, Version), DecodeError>;
}

impl StreamHeader for OpenHeader {
    const WHAT: &'static str = "stream-open header";
    fn decode_header(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        OpenHeader::decode(body)
    }
}

impl StreamHeader for RelayHeader {
    const WHAT: &'static str = "relay header";
    fn decode_header(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        RelayHeader::decode(body)
    }
}

impl StreamHeader for Hello {
    const WHAT: &'static str = "HELLO";
    fn decode_header(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        Hello::decode(body)
    }
}

/// Reads a stream's first frame: at most [`MAX_HEADER_LEN`] bytes (a longer announced
/// length is refused as soon as its four bytes are in, before any body is buffered),
/// within a time limit counted from the stream's arrival.
///
/// Drive it by reading at most [`HeaderReader::want`] bytes at a time (then nothing past
/// the header is consumed), calling [`HeaderReader::receive`] with them,
/// [`HeaderReader::finish`] when the stream ends, and [`HeaderReader::handle_timeout`]
/// once [`HeaderReader::deadline`] has passed.
#[derive(Debug)]
pub struct HeaderReader<H> {
    frames: ExactFrames,
    deadline: Instant,
    limit: Duration,
    header: PhantomData<fn() -> H>,
}

impl<H: StreamHeader> HeaderReader<H> {
    /// A reader for a stream that arrived at `now`, allowing `limit` for its header.
    pub fn new(now: Instant, limit: Duration) -> Self {
        HeaderReader {
            frames: ExactFrames::new(MAX_HEADER_LEN),
            deadline: now + limit,
            limit,
            header: PhantomData,
        }
    }

    /// How many bytes to read next.
    pub fn want(&self) -> usize {
        self.frames.want()
    }

    /// When the header must have arrived.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Takes received bytes; returns the header once it is complete.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Option<(H, Version)>, Refusal> {
        self.frames.receive(bytes);
        match self.frames.next_frame() {
            Ok(None) => Ok(None),
            Ok(Some(body)) => H::decode_header(&body)
                .map(Some)
                .map_err(Refusal::from_header_decode),
            Err(source @ FrameError::TooLarge { .. }) => Err(Refusal::HeaderTooLarge {
                what: H::WHAT,
                source,
            }),
            Err(err) => Err(Refusal::Framing(err)),
        }
    }

    /// The stream ended before the header was complete: cut mid-frame (the framing's
    /// own "truncated" error), or before any byte of it.
    pub fn finish(&self) -> Refusal {
        match self.frames.finish() {
            Err(err) => Refusal::Framing(err),
            Ok(()) => Refusal::HeaderMissing { what: H::WHAT },
        }
    }

    /// Checks the time limit: a refusal once `now` is at or past the deadline.
    pub fn handle_timeout(&self, now: Instant) -> Result<(), Refusal> {
        if now < self.deadline {
            return Ok(());
        }
        Err(Refusal::HeaderTimeout {
            what: H::WHAT,
            secs: self.limit.as_secs(),
        })
    }

    /// Bytes received past the header (none when the driver kept to `want`).
    pub fn into_rest(self) -> Vec<u8> {
        self.frames.into_rest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;
    use crate::{ErrorCode, StreamKind};

    fn open() -> OpenHeader {
        OpenHeader {
            device_id: "dev".into(),
            kind: StreamKind::Action,
            token: "t".into(),
            e2e: None,
        }
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(body, u32::MAX, &mut out).unwrap();
        out
    }

    #[test]
    fn a_header_read_byte_by_byte_arrives_whole() {
        let t0 = Instant::now();
        let mut reader = HeaderReader::<OpenHeader>::new(t0, Duration::from_secs(10));
        let wire = framed(&open().encode());
        let mut got = None;
        for byte in &wire {
            assert!(got.is_none());
            got = reader.receive(&[*byte]).unwrap();
        }
        assert_eq!(got.unwrap().0, open());
        assert!(reader.into_rest().is_empty());
    }

    #[test]
    fn the_deadline_counts_from_arrival_not_from_the_last_byte() {
        let t0 = Instant::now();
        let mut reader = HeaderReader::<OpenHeader>::new(t0, Duration::from_secs(10));
        let wire = framed(&open().encode());
        reader.receive(&wire[..3]).unwrap();
        assert_eq!(reader.deadline(), t0 + Duration::from_secs(10));
        assert!(
            reader
                .handle_timeout(t0 + Duration::from_millis(9_999))
                .is_ok()
        );
        let refusal = reader
            .handle_timeout(t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(refusal.reason(), "header_timeout");
        assert_eq!(refusal.code(), ErrorCode::MalformedFrame);
        assert_eq!(refusal.to_string(), "no stream-open header within 10 s");
    }

    #[test]
    fn an_oversized_header_is_refused_on_its_length_alone() {
        let mut reader = HeaderReader::<Hello>::new(Instant::now(), Duration::from_secs(10));
        let refusal = reader
            .receive(&(MAX_HEADER_LEN + 1).to_be_bytes())
            .unwrap_err();
        assert_eq!(refusal.reason(), "header_too_large");
        assert!(
            refusal
                .to_string()
                .starts_with("HELLO: frame of 4097 bytes")
        );
    }

    #[test]
    fn a_newer_major_version_is_its_own_refusal() {
        let mut body = open().encode();
        body[0] = 9;
        let mut reader = HeaderReader::<OpenHeader>::new(Instant::now(), Duration::from_secs(1));
        let refusal = reader.receive(&framed(&body)).unwrap_err();
        assert_eq!(refusal.code(), ErrorCode::UnsupportedVersion);
        let mut reader = HeaderReader::<OpenHeader>::new(Instant::now(), Duration::from_secs(1));
        let refusal = reader.receive(&framed(&[1, 0, 200])).unwrap_err();
        assert_eq!(refusal.reason(), "invalid_header");
    }

    #[test]
    fn an_early_end_is_header_missing() {
        let reader = HeaderReader::<RelayHeader>::new(Instant::now(), Duration::from_secs(1));
        assert_eq!(
            reader.finish().to_string(),
            "stream ended before its relay header"
        );
    }

    #[test]
    fn an_end_mid_header_is_told_from_a_clean_end() {
        let mut reader = HeaderReader::<OpenHeader>::new(Instant::now(), Duration::from_secs(1));
        assert_eq!(reader.receive(&[0, 0, 0, 9, 1, 0]).unwrap(), None);
        let refusal = reader.finish();
        assert_eq!(refusal.code(), ErrorCode::MalformedFrame);
        assert!(refusal.to_string().contains("mid-frame"), "{refusal}");
    }
}
