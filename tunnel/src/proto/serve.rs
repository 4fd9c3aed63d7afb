//! [`ServeStream`]: the desktop node's end of one stream the relay opened.

use std::time::Instant;

use super::{ExactFrames, REQUEST_TIMEOUT, Refusal};
use crate::frame::FrameError;
use crate::{Body, MAX_FRAME_LEN, MAX_HEADER_LEN, RelayHeader, StreamKind};

/// What a [`ServeStream`] learned from the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeEvent {
    /// The relay header: who asked, on which kind of stream, sealed or not.
    Header(RelayHeader),
    /// The request frame's body: an envelope, or a sealed one when the header says e2e.
    /// Decode it (after opening it), then call [`ServeStream::check_kind`].
    Request(Vec<u8>),
    /// A later frame from the browser (a CANCEL, plain or sealed).
    Frame(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Request,
    Running,
}

/// The node's side of a browser stream: the relay header, then one request, both within
/// [`REQUEST_TIMEOUT`] of the stream's arrival; then any later frames (CANCEL) until the
/// browser finishes its side.
///
/// The header is read under the header cap ([`MAX_HEADER_LEN`]), everything after it
/// under the frame cap ([`MAX_FRAME_LEN`]).
#[derive(Debug)]
pub struct ServeStream {
    frames: ExactFrames,
    state: State,
    deadline: Instant,
}

impl ServeStream {
    /// A stream that arrived at `now`.
    pub fn new(now: Instant) -> Self {
        ServeStream {
            frames: ExactFrames::new(MAX_HEADER_LEN),
            state: State::Header,
            deadline: now + REQUEST_TIMEOUT,
        }
    }

    /// How many bytes to read next.
    pub fn want(&self) -> usize {
        self.frames.want()
    }

    /// When the header and request must have arrived; `None` once they have.
    pub fn deadline(&self) -> Option<Instant> {
        (self.state != State::Running).then_some(self.deadline)
    }

    /// Takes received bytes; returns what they completed, in order.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<ServeEvent>, Refusal> {
        self.frames.receive(bytes);
        let mut events = Vec::new();
        loop {
            let body = match self.frames.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(events),
                Err(err @ FrameError::TooLarge { .. }) if self.state == State::Header => {
                    return Err(Refusal::HeaderTooLarge {
                        what: "relay header",
                        source: err,
                    });
                }
                Err(err) => return Err(Refusal::Framing(err)),
            };
            match self.state {
                State::Header => {
                    let (header, _version) =
                        RelayHeader::decode(&body).map_err(Refusal::from_header_decode)?;
                    self.state = State::Request;
                    self.frames.set_max(MAX_FRAME_LEN);
                    events.push(ServeEvent::Header(header));
                }
                State::Request => {
                    self.state = State::Running;
                    events.push(ServeEvent::Request(body));
                }
                State::Running => events.push(ServeEvent::Frame(body)),
            }
        }
    }

    /// The browser finished its side. Before the request that is a refusal; after it,
    /// the request goes on (a browser may close its side once it has asked).
    pub fn finish(&self) -> Result<(), Refusal> {
        match self.state {
            State::Header | State::Request => Err(Refusal::RequestMissing),
            State::Running => self.frames.finish().map_err(Refusal::Framing),
        }
    }

    /// Checks the time limit: a refusal once `now` is at or past the deadline while the
    /// header or the request is still missing.
    pub fn handle_timeout(&self, now: Instant) -> Result<(), Refusal> {
        if self.state == State::Running || now < self.deadline {
            return Ok(());
        }
        Err(Refusal::RequestTimeout {
            secs: REQUEST_TIMEOUT.as_secs(),
        })
    }

    /// The stream-kind rule: actions only on `Action` streams (the relay counts those
    /// against the plan's daily actions), status, installs, removals, history requests
    /// and pairing only on `Control` streams. The relay stamps the kind the browser declared, so a browser
    /// cannot run an action on a stream the relay did not count as one. Any other
    /// message cannot start a stream.
    pub fn check_kind(kind: StreamKind, body: &Body, pairing: bool) -> Result<(), Refusal> {
        let wanted = match body {
            _ if pairing => StreamKind::Control,
            Body::ExecuteAction { .. } => StreamKind::Action,
            Body::GetStatus
            | Body::InstallApp { .. }
            | Body::UninstallApp { .. }
            | Body::HistoryList { .. }
            | Body::HistoryGet { .. }
            | Body::HistoryDelete { .. }
            | Body::FilesList { .. }
            | Body::FileUpload { .. } => StreamKind::Control,
            other => {
                return Err(Refusal::UnexpectedMessage {
                    what: other.type_name().to_owned(),
                    place: "at the start of a browser stream",
                });
            }
        };
        if kind == wanted {
            return Ok(());
        }
        let what = if pairing { "Pairing" } else { body.type_name() };
        Err(Refusal::WrongStreamKind {
            what: what.to_owned(),
            wanted,
            got: kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::frame::encode_frame;
    use crate::{Envelope, ErrorCode};

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(body, u32::MAX, &mut out).unwrap();
        out
    }

    fn header(kind: StreamKind) -> RelayHeader {
        RelayHeader {
            user_id: "u".into(),
            session_id: 1,
            kind,
            e2e: None,
        }
    }

    #[test]
    fn header_request_and_cancel_in_one_read() {
        let mut stream = ServeStream::new(Instant::now());
        let request = Envelope::new(3, Body::GetStatus).encode();
        let cancel = Envelope::new(3, Body::Cancel).encode();
        let wire = [
            framed(&header(StreamKind::Control).encode()),
            framed(&request),
            framed(&cancel),
        ]
        .concat();
        let events = stream.receive(&wire).unwrap();
        assert_eq!(
            events,
            [
                ServeEvent::Header(header(StreamKind::Control)),
                ServeEvent::Request(request),
                ServeEvent::Frame(cancel),
            ]
        );
        assert_eq!(stream.deadline(), None);
        assert!(stream.finish().is_ok());
    }

    #[test]
    fn the_request_must_follow_within_ten_seconds_of_arrival() {
        let t0 = Instant::now();
        let mut stream = ServeStream::new(t0);
        stream
            .receive(&framed(&header(StreamKind::Action).encode()))
            .unwrap();
        assert!(stream.handle_timeout(t0 + Duration::from_secs(9)).is_ok());
        let refusal = stream
            .handle_timeout(t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(refusal.to_string(), "no request within 10 s");
        assert_eq!(refusal.code(), ErrorCode::MalformedFrame);
        assert_eq!(stream.finish().unwrap_err(), Refusal::RequestMissing);
    }

    #[test]
    fn the_header_has_the_small_cap_and_the_request_the_large_one() {
        let mut stream = ServeStream::new(Instant::now());
        let refusal = stream
            .receive(&(MAX_HEADER_LEN + 1).to_be_bytes())
            .unwrap_err();
        assert_eq!(refusal.reason(), "header_too_large");

        let mut stream = ServeStream::new(Instant::now());
        stream
            .receive(&framed(&header(StreamKind::Action).encode()))
            .unwrap();
        assert!(
            stream
                .receive(&(MAX_HEADER_LEN + 1).to_be_bytes())
                .unwrap()
                .is_empty()
        );
        assert_eq!(stream.want(), (MAX_HEADER_LEN + 1) as usize);
    }

    #[test]
    fn a_cut_frame_after_the_request_is_malformed() {
        let mut stream = ServeStream::new(Instant::now());
        let wire = [
            framed(&header(StreamKind::Action).encode()),
            framed(b"x"),
            vec![0, 0, 0, 9, 1],
        ]
        .concat();
        stream.receive(&wire).unwrap();
        assert_eq!(stream.finish().unwrap_err().reason(), "malformed_frame");
    }

    #[test]
    fn requests_must_come_on_their_stream_kind() {
        let execute = Body::ExecuteAction {
            app_id: "a".into(),
            action: "b".into(),
            payload: "{}".into(),
            model: None,
        };
        assert!(ServeStream::check_kind(StreamKind::Action, &execute, false).is_ok());
        assert!(ServeStream::check_kind(StreamKind::Control, &Body::GetStatus, false).is_ok());
        let err = ServeStream::check_kind(StreamKind::Control, &execute, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("ExecuteAction must be sent on a stream of kind Action")
        );
        assert_eq!(err.code(), ErrorCode::Unsupported);
        for body in [Body::GetStatus, Body::UninstallApp { app_id: "a".into() }] {
            let err = ServeStream::check_kind(StreamKind::Action, &body, false).unwrap_err();
            assert_eq!(err.reason(), "wrong_stream_kind");
        }
        let err = ServeStream::check_kind(StreamKind::Action, &execute, true).unwrap_err();
        assert!(err.to_string().starts_with("Pairing must be sent"));
        let err = ServeStream::check_kind(StreamKind::Action, &Body::Ping { nonce: 1 }, false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected Ping at the start of a browser stream"
        );
    }

    #[test]
    fn history_requests_come_on_control_streams_and_answers_start_nothing() {
        let requests = [
            Body::HistoryList {
                query: String::new(),
                offset: 0,
                limit: 20,
            },
            Body::HistoryGet { run_id: 1 },
            Body::HistoryDelete { run_id: None },
            Body::FilesList {
                app_id: "a".into(),
                path: String::new(),
                offset: 0,
                limit: 50,
            },
            Body::FileUpload {
                app_id: "a".into(),
                name: "n".into(),
                size: 1,
            },
        ];
        for body in requests {
            assert!(ServeStream::check_kind(StreamKind::Control, &body, false).is_ok());
            let err = ServeStream::check_kind(StreamKind::Action, &body, false).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Unsupported);
            assert!(
                err.to_string().contains(&format!(
                    "{} must be sent on a stream of kind Control",
                    body.type_name()
                )),
                "{err}"
            );
        }
        let answer = Body::HistoryDeleted { count: 1 };
        let err = ServeStream::check_kind(StreamKind::Control, &answer, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected HistoryDeleted at the start of a browser stream"
        );
    }
}
