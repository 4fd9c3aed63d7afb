//! [`Refusal`]: why a protocol machine refused a stream or a peer.

use crate::{DecodeError, Envelope, ErrorCode, FrameError, StreamKind};

/// Why a stream (or a control channel) breaks the protocol's rules.
///
/// One value per rule. [`Refusal::code`] maps it to the wire's ERROR code,
/// [`Refusal::reason`] to a short stable label (log field, metric label), and `Display`
/// is the human message sent in the ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The first frame did not arrive in time.
    #[error("no {what} within {secs} s")]
    HeaderTimeout {
        /// Which first frame ("stream-open header", "HELLO", …).
        what: &'static str,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The stream ended before its first frame.
    #[error("stream ended before its {what}")]
    HeaderMissing {
        /// Which first frame.
        what: &'static str,
    },
    /// The first frame announces more bytes than a header may have.
    #[error("{what}: {source}")]
    HeaderTooLarge {
        /// Which first frame.
        what: &'static str,
        /// The announced and the allowed length.
        source: FrameError,
    },
    /// The first frame is not a valid header (malformed, or a field breaks its rule).
    #[error("{0}")]
    InvalidHeader(DecodeError),
    /// The peer speaks a major protocol version this side does not.
    #[error("{0}")]
    UnsupportedVersion(DecodeError),
    /// The relay header arrived but the request did not, in time.
    #[error("no request within {secs} s")]
    RequestTimeout {
        /// The limit, in seconds.
        secs: u64,
    },
    /// The stream ended before its request.
    #[error("stream ended before the request")]
    RequestMissing,
    /// The bytes break the framing rules (a frame over the limit, or cut off).
    #[error("{0}")]
    Framing(FrameError),
    /// A frame is not a valid envelope.
    #[error("{0}")]
    MalformedMessage(DecodeError),
    /// A request came on a stream of the wrong kind.
    #[error(
        "{what} must be sent on a stream of kind {wanted:?}; this stream was opened as {got:?}"
    )]
    WrongStreamKind {
        /// The request's message type (or "Pairing").
        what: String,
        /// The kind it needs.
        wanted: StreamKind,
        /// The stream's kind.
        got: StreamKind,
    },
    /// A message that has no place where it came.
    #[error("unexpected {what} {place}")]
    UnexpectedMessage {
        /// The message type.
        what: String,
        /// Where it came, e.g. "on an action stream".
        place: &'static str,
    },
    /// The control stream's heartbeats stopped: no PONG (desktop side) or no PING
    /// (relay side) for this many intervals.
    #[error("no heartbeat for {missed} intervals ({secs} s)")]
    HeartbeatsMissed {
        /// Intervals without a PONG.
        missed: u32,
        /// Seconds since the last PONG (or since the heartbeats began).
        secs: u64,
    },
    /// The peer ended the stream before the exchange was complete.
    #[error("the stream ended {when}")]
    EndedEarly {
        /// What was still expected, e.g. "before the action finished".
        when: &'static str,
    },
    /// The peer answered with an ERROR.
    #[error("{code}: {message}")]
    Remote {
        /// The ERROR's code as sent.
        code: String,
        /// The ERROR's message.
        message: String,
    },
    /// The transport failed under the stream (reset, connection lost).
    #[error("the stream failed: {0}")]
    Transport(String),
    /// The peer stopped answering after a CANCEL.
    #[error("no answer within {secs} s of the CANCEL")]
    CancelUnanswered {
        /// The grace period, in seconds.
        secs: u64,
    },
}

impl Refusal {
    /// The ERROR code a peer gets for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::HeaderTimeout { .. }
            | Refusal::HeaderMissing { .. }
            | Refusal::HeaderTooLarge { .. }
            | Refusal::InvalidHeader(_)
            | Refusal::RequestTimeout { .. }
            | Refusal::RequestMissing
            | Refusal::Framing(_)
            | Refusal::MalformedMessage(_) => ErrorCode::MalformedFrame,
            Refusal::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Refusal::WrongStreamKind { .. } | Refusal::UnexpectedMessage { .. } => {
                ErrorCode::Unsupported
            }
            Refusal::HeartbeatsMissed { .. }
            | Refusal::EndedEarly { .. }
            | Refusal::CancelUnanswered { .. }
            | Refusal::Transport(_) => ErrorCode::PeerGone,
            Refusal::Remote { code, .. } => ErrorCode::parse(code),
        }
    }

    /// A short stable label for this refusal: the `reason` log field and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::HeaderTimeout { .. } => "header_timeout",
            Refusal::HeaderMissing { .. } => "header_missing",
            Refusal::HeaderTooLarge { .. } => "header_too_large",
            Refusal::InvalidHeader(_) => "invalid_header",
            Refusal::UnsupportedVersion(_) => "unsupported_version",
            Refusal::RequestTimeout { .. } => "request_timeout",
            Refusal::RequestMissing => "request_missing",
            Refusal::Framing(_) => "malformed_frame",
            Refusal::MalformedMessage(_) => "malformed_message",
            Refusal::WrongStreamKind { .. } => "wrong_stream_kind",
            Refusal::UnexpectedMessage { .. } => "unexpected_message",
            Refusal::HeartbeatsMissed { .. } => "heartbeats_missed",
            Refusal::EndedEarly { .. } => "ended_early",
            Refusal::Remote { .. } => "remote_error",
            Refusal::CancelUnanswered { .. } => "cancel_unanswered",
            Refusal::Transport(_) => "peer_gone",
        }
    }

    /// Whether the peer refused for good: a desktop stops reconnecting when its relay
    /// refuses with `unauthenticated`, `unsupported_version` or `forbidden`.
    pub fn is_final(&self) -> bool {
        matches!(self, Refusal::Remote { .. })
            && matches!(
                self.code(),
                ErrorCode::Unauthenticated | ErrorCode::UnsupportedVersion | ErrorCode::Forbidden
            )
    }

    /// The ERROR envelope that tells the peer.
    pub fn to_envelope(&self, request_id: u64) -> Envelope {
        Envelope::error(request_id, self.code(), self.to_string())
    }

    /// Classifies a header decode failure: a newer major version is its own refusal.
    pub(crate) fn from_header_decode(err: DecodeError) -> Refusal {
        match err {
            DecodeError::UnsupportedVersion { .. } => Refusal::UnsupportedVersion(err),
            err => Refusal::InvalidHeader(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_wire_code_and_a_label() {
        let cases = [
            (
                Refusal::HeaderTimeout {
                    what: "HELLO",
                    secs: 10,
                },
                ErrorCode::MalformedFrame,
                "header_timeout",
                "no HELLO within 10 s",
            ),
            (
                Refusal::WrongStreamKind {
                    what: "GetStatus".into(),
                    wanted: StreamKind::Control,
                    got: StreamKind::Action,
                },
                ErrorCode::Unsupported,
                "wrong_stream_kind",
                "GetStatus must be sent on a stream of kind Control; this stream was opened as Action",
            ),
            (
                Refusal::Remote {
                    code: "busy".into(),
                    message: "try later".into(),
                },
                ErrorCode::Busy,
                "remote_error",
                "busy: try later",
            ),
        ];
        for (refusal, code, reason, message) in cases {
            assert_eq!(refusal.code(), code);
            assert_eq!(refusal.reason(), reason);
            assert_eq!(refusal.to_string(), message);
            let env = refusal.to_envelope(7);
            assert_eq!(env.request_id, 7);
            assert_eq!(
                env.body,
                crate::Body::Error {
                    code: code.as_str().into(),
                    message: message.into()
                }
            );
        }
    }
}
