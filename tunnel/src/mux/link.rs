//! How a desktop's link ended, in the same terms whatever carried it: a raw QUIC
//! connection (feature `quinn`) or a mux connection. The relay (`DesktopLink`) and the
//! node (`NodeLink`) both report a link's end as a [`LinkClosed`], so a close code means
//! the same on both transports and both ends (`docs/protocol.md`, "Close codes and reset
//! codes").
//!
//! The rule: a code is there only when the peer closed on purpose, with an application
//! close code (QUIC's CONNECTION_CLOSE of the application, the mux's GOAWAY). The mux's
//! own codes ([`code::PROTOCOL_ERROR`] and above: a broken rule, the idle timeout, the
//! transport lost) and every QUIC transport error are a link *lost*: no code, only what
//! went wrong.

use super::Closed;
use super::code;

/// How a link ended: the peer's close code when it closed on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClosed {
    /// The application close code, when the peer closed the link on purpose; `None` when
    /// it was lost (timeout, reset, transport error, a broken mux rule) or closed here.
    pub code: Option<u32>,
    /// The reason given, or what went wrong.
    pub reason: String,
}

impl std::fmt::Display for LinkClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "closed by the peer with code {code}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for LinkClosed {}

impl From<Closed> for LinkClosed {
    fn from(closed: Closed) -> Self {
        // The mux's own codes sit at the top of the u32 space; below them a GOAWAY from
        // the peer carries its application close code.
        let on_purpose = closed.by_peer && closed.code < code::PROTOCOL_ERROR;
        LinkClosed {
            code: on_purpose.then_some(closed.code),
            reason: closed.reason,
        }
    }
}

#[cfg(feature = "io")]
impl LinkClosed {
    /// How `conn` ended, for a call that failed because it has (or is ending).
    pub fn of_mux(conn: &super::driver::MuxConnection) -> LinkClosed {
        conn.close_reason().map_or_else(
            || LinkClosed {
                code: None,
                reason: "the mux connection ended".into(),
            },
            LinkClosed::from,
        )
    }
}

#[cfg(feature = "quinn")]
impl From<quinn::ConnectionError> for LinkClosed {
    fn from(err: quinn::ConnectionError) -> Self {
        match err {
            quinn::ConnectionError::ApplicationClosed(close) => LinkClosed {
                code: u32::try_from(close.error_code.into_inner()).ok(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            other => LinkClosed {
                code: None,
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u32, by_peer: bool) -> LinkClosed {
        Closed {
            code,
            reason: "why".into(),
            by_peer,
        }
        .into()
    }

    #[test]
    fn a_goaway_from_the_peer_carries_its_code() {
        assert_eq!(closed(0, true).code, Some(0));
        assert_eq!(closed(6, true).code, Some(6));
        assert_eq!(
            closed(code::PROTOCOL_ERROR - 1, true).code,
            Some(0xffff_ff00)
        );
        assert_eq!(
            closed(2, true).to_string(),
            "closed by the peer with code 2: why"
        );
    }

    #[test]
    fn the_mux_own_codes_and_a_local_close_are_a_lost_link() {
        for c in [
            code::PROTOCOL_ERROR,
            code::FLOW_CONTROL_ERROR,
            code::IDLE_TIMEOUT,
            code::CONNECTION_LOST,
        ] {
            let lost = closed(c, true);
            assert_eq!(lost.code, None, "{c:#x}");
            assert_eq!(lost.to_string(), "why");
        }
        assert_eq!(closed(3, false).code, None);
    }

    #[cfg(feature = "quinn")]
    #[test]
    fn quinn_application_close_carries_its_code_and_the_rest_are_lost() {
        let app = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(3),
            reason: bytes::Bytes::from_static(b"relay shutting down"),
        });
        assert_eq!(
            LinkClosed::from(app),
            LinkClosed {
                code: Some(3),
                reason: "relay shutting down".into()
            }
        );
        let big = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u64(1 << 40).unwrap(),
            reason: bytes::Bytes::new(),
        });
        assert_eq!(LinkClosed::from(big).code, None);
        let lost = LinkClosed::from(quinn::ConnectionError::TimedOut);
        assert_eq!(lost.code, None);
        assert_eq!(lost.reason, quinn::ConnectionError::TimedOut.to_string());
    }
}
