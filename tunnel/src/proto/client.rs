//! [`ClientRequest`]: the browser's end of one request stream.

use std::time::Instant;

use super::{CANCEL_GRACE, Refusal};
use crate::frame::{FrameBuffer, encode_frame};
use crate::{Body, Envelope, MAX_FRAME_LEN, OpenHeader};

/// How a request ended.
pub type Outcome = Result<Envelope, Refusal>;

/// What a [`ClientRequest`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A message before the answer's end: a STREAM_CHUNK (not reported after a CANCEL).
    Message(Envelope),
    /// The request is over: its last message (STREAM_END, or DEVICE_STATUS answering
    /// GET_STATUS), or why it failed (an ERROR from the relay or desktop arrives as
    /// [`Refusal::Remote`]). Nothing is reported after this.
    Done(Outcome),
}

/// The browser's side of a request stream: it sends the stream-open header and the
/// request, then reads STREAM_CHUNKs until exactly one final message: STREAM_END,
/// DEVICE_STATUS (the answer to GET_STATUS) or ERROR.
///
/// - Any other message type ends the request as unexpected.
/// - The stream ending (FIN) before the final message, or inside a frame, fails it.
/// - [`ClientRequest::cancel`] queues a CANCEL; chunks that still arrive are dropped,
///   and if no final message comes within [`CANCEL_GRACE`] the request fails (reset
///   the stream then).
///
/// On an end-to-end encrypted stream the driver opens each frame itself and hands the
/// envelopes to [`ClientRequest::handle_envelope`]; [`ClientRequest::receive`] is the
/// same for plain streams, with the framing done here.
#[derive(Debug)]
pub struct ClientRequest {
    request_id: u64,
    device_id: String,
    frames: FrameBuffer,
    out: Vec<u8>,
    cancel_deadline: Option<Instant>,
    done: bool,
}

impl ClientRequest {
    /// Opens a plain request: queues `header` and `request`.
    pub fn new(header: &OpenHeader, request: &Envelope) -> Self {
        Self::with_body(header, request.request_id, &request.encode())
    }

    /// Opens a request whose first frame's body is given as is (a sealed request).
    pub fn with_body(header: &OpenHeader, request_id: u64, body: &[u8]) -> Self {
        let mut out = Vec::new();
        let _ = encode_frame(&header.encode(), MAX_FRAME_LEN, &mut out);
        let _ = encode_frame(body, MAX_FRAME_LEN, &mut out);
        ClientRequest {
            request_id,
            device_id: header.device_id.clone(),
            frames: FrameBuffer::new(MAX_FRAME_LEN),
            out,
            cancel_deadline: None,
            done: false,
        }
    }

    /// Bytes to send, if any are queued.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// Whether the request is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether a CANCEL was sent.
    pub fn is_cancelled(&self) -> bool {
        self.cancel_deadline.is_some()
    }

    /// Asks the desktop to stop: queues a plain CANCEL (finish the sending side after
    /// it) and starts the grace period. Does nothing once the request is over or a
    /// CANCEL was already sent.
    pub fn cancel(&mut self, now: Instant) {
        let mut cancel = Envelope::new(self.request_id, Body::Cancel);
        cancel.device_id = self.device_id.clone();
        self.cancel_with_body(now, &cancel.encode());
    }

    /// Like [`ClientRequest::cancel`], with the CANCEL frame's body given (sealed).
    pub fn cancel_with_body(&mut self, now: Instant, body: &[u8]) {
        if self.done || self.cancel_deadline.is_some() {
            return;
        }
        let _ = encode_frame(body, MAX_FRAME_LEN, &mut self.out);
        self.cancel_deadline = Some(now + CANCEL_GRACE);
    }

    /// When to call [`ClientRequest::handle_timeout`]: the end of the cancel grace.
    pub fn deadline(&self) -> Option<Instant> {
        self.cancel_deadline.filter(|_| !self.done)
    }

    /// Ends the request if the cancel grace is over.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ClientEvent> {
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        self.fail(Refusal::CancelUnanswered {
            secs: CANCEL_GRACE.as_secs(),
        })
    }

    /// Takes bytes from the relay (plain streams).
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<ClientEvent> {
        if self.done {
            return Vec::new();
        }
        self.frames.push(bytes);
        let mut events = Vec::new();
        while !self.done {
            let envelope = match self.frames.next_frame() {
                Ok(None) => break,
                Ok(Some(body)) => match Envelope::decode(&body) {
                    Ok(envelope) => envelope,
                    Err(err) => {
                        events.extend(self.fail(Refusal::MalformedMessage(err)));
                        break;
                    }
                },
                Err(err) => {
                    events.extend(self.fail(Refusal::Framing(err)));
                    break;
                }
            };
            events.extend(self.handle_envelope(envelope));
        }
        events
    }

    /// Takes one message (already opened, on an encrypted stream).
    pub fn handle_envelope(&mut self, envelope: Envelope) -> Option<ClientEvent> {
        if self.done {
            return None;
        }
        match &envelope.body {
            Body::StreamChunk { .. } if self.is_cancelled() => None,
            Body::StreamChunk { .. } | Body::FileProgress { .. } => {
                Some(ClientEvent::Message(envelope))
            }
            Body::StreamEnd { .. }
            | Body::DeviceStatus { .. }
            | Body::HistoryPage { .. }
            | Body::HistoryRun { .. }
            | Body::HistoryDeleted { .. }
            | Body::FilesPage { .. }
            | Body::FileStored { .. } => {
                self.done = true;
                Some(ClientEvent::Done(Ok(envelope)))
            }
            Body::Error { code, message } => {
                let refusal = Refusal::Remote {
                    code: code.clone(),
                    message: message.clone(),
                };
                self.fail(refusal)
            }
            other => {
                let refusal = Refusal::UnexpectedMessage {
                    what: other.type_name().to_owned(),
                    place: "on a request stream",
                };
                self.fail(refusal)
            }
        }
    }

    /// The relay finished the stream. Before the final message that fails the request.
    pub fn finish(&mut self) -> Option<ClientEvent> {
        if self.done {
            return None;
        }
        if let Err(err) = self.frames.finish() {
            return self.fail(Refusal::Framing(err));
        }
        self.fail(Refusal::EndedEarly {
            when: "before the answer was complete",
        })
    }

    fn fail(&mut self, refusal: Refusal) -> Option<ClientEvent> {
        self.done = true;
        Some(ClientEvent::Done(Err(refusal)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{ErrorCode, StreamKind};

    fn header() -> OpenHeader {
        OpenHeader {
            device_id: "dev".into(),
            kind: StreamKind::Action,
            token: "t".into(),
            e2e: None,
        }
    }

    fn framed(envelope: &Envelope) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&envelope.encode(), MAX_FRAME_LEN, &mut out).unwrap();
        out
    }

    fn chunk(seq: u32) -> Envelope {
        Envelope::new(
            1,
            Body::StreamChunk {
                seq,
                data: format!("c{seq}"),
            },
        )
    }

    fn request() -> ClientRequest {
        ClientRequest::new(&header(), &Envelope::new(1, Body::GetStatus))
    }

    #[test]
    fn chunks_then_end() {
        let mut req = request();
        assert!(req.poll_transmit().is_some());
        let end = Envelope::new(
            1,
            Body::StreamEnd {
                chunks: 2,
                elapsed_ms: 5,
            },
        );
        let wire = [framed(&chunk(0)), framed(&chunk(1)), framed(&end)].concat();
        let (first, rest) = wire.split_at(7);
        let mut events = req.receive(first);
        events.extend(req.receive(rest));
        assert_eq!(
            events,
            [
                ClientEvent::Message(chunk(0)),
                ClientEvent::Message(chunk(1)),
                ClientEvent::Done(Ok(end)),
            ]
        );
        assert!(
            req.receive(&framed(&chunk(2))).is_empty(),
            "nothing after the end"
        );
        assert_eq!(req.finish(), None);
    }

    #[test]
    fn an_error_ends_the_request_with_its_code() {
        let mut req = request();
        let events = req.receive(&framed(&Envelope::error(1, ErrorCode::Busy, "full")));
        let [ClientEvent::Done(Err(refusal))] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(refusal.code(), ErrorCode::Busy);
        assert_eq!(refusal.to_string(), "busy: full");
    }

    #[test]
    fn an_early_fin_or_a_cut_frame_fails() {
        let mut req = request();
        req.receive(&framed(&chunk(0)));
        let Some(ClientEvent::Done(Err(refusal))) = req.finish() else {
            panic!()
        };
        assert_eq!(refusal.reason(), "ended_early");

        let mut req = request();
        req.receive(&framed(&chunk(0))[..5]);
        let Some(ClientEvent::Done(Err(refusal))) = req.finish() else {
            panic!()
        };
        assert_eq!(refusal.reason(), "malformed_frame");
    }

    #[test]
    fn cancel_drops_later_chunks_and_gives_up_after_the_grace() {
        let t0 = Instant::now();
        let mut req = request();
        req.poll_transmit();
        req.cancel(t0);
        req.cancel(t0); // once only
        let sent = req.poll_transmit().unwrap();
        let mut cancel = Envelope::new(1, Body::Cancel);
        cancel.device_id = "dev".into();
        assert_eq!(sent, framed(&cancel));
        assert!(req.receive(&framed(&chunk(0))).is_empty());
        assert_eq!(req.deadline(), Some(t0 + CANCEL_GRACE));
        assert_eq!(req.handle_timeout(t0 + Duration::from_secs(4)), None);
        let Some(ClientEvent::Done(Err(refusal))) = req.handle_timeout(t0 + CANCEL_GRACE) else {
            panic!()
        };
        assert_eq!(refusal.reason(), "cancel_unanswered");
        assert_eq!(req.deadline(), None);
    }

    #[test]
    fn an_unexpected_message_ends_the_request() {
        let mut req = request();
        let events = req.receive(&framed(&Envelope::new(1, Body::Ping { nonce: 1 })));
        let [ClientEvent::Done(Err(refusal))] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(refusal.to_string(), "unexpected Ping on a request stream");
    }
}
