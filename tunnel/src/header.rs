//! The first frame of every stream, and version negotiation.
//!
//! A header body is two version bytes (`major`, `minor`) followed by the postcard encoding
//! of the header. A decoder refuses a different major version with
//! [`DecodeError::UnsupportedVersion`] before it looks at the rest. A newer minor version
//! may only append fields at the end of a header, which an older decoder ignores, so an
//! older peer keeps working.
//!
//! Every field is checked when a header is decoded, not later by whoever reads it: a
//! header frame is at most [`MAX_HEADER_LEN`] bytes, ids and tokens have a maximum length
//! and only visible ASCII, the identity key is exactly [`IDENTITY_KEY_LEN`] bytes, and
//! the opaque end-to-end bytes have bounds. A header that breaks a rule is refused with
//! [`DecodeError::InvalidField`] naming the field. The limits are listed in
//! `docs/protocol.md` ("Header limits") and mirrored by the TypeScript codec.

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// The largest header frame body any peer accepts: 4 KiB. Headers are read before the
/// sender is authenticated, so they get a much smaller cap than [`crate::MAX_FRAME_LEN`].
pub const MAX_HEADER_LEN: u32 = 4096;
/// The longest device id ([`OpenHeader::device_id`]) or user id ([`RelayHeader::user_id`]),
/// in bytes.
pub const MAX_ID_LEN: usize = 128;
/// The longest access token ([`OpenHeader::token`]), in bytes.
pub const MAX_TOKEN_LEN: usize = 2048;
/// The longest device token ([`Hello::device_token`]), in bytes.
pub const MAX_DEVICE_TOKEN_LEN: usize = 256;
/// The longest node version ([`Hello::node_version`]), in bytes.
pub const MAX_NODE_VERSION_LEN: usize = 64;
/// The length of an identity key ([`Hello::identity_key`]): an X25519 public key.
pub const IDENTITY_KEY_LEN: usize = 32;
/// The longest end-to-end blob ([`OpenHeader::e2e`], [`RelayHeader::e2e`]), in bytes.
pub const MAX_E2E_LEN: usize = 512;

/// How a header field breaks its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// Longer than its maximum.
    #[error("is {len} bytes long, over the limit of {max}")]
    TooLong {
        /// The field's length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// Not of its one allowed length.
    #[error("is {len} bytes long, not {want}")]
    WrongLength {
        /// The field's length in bytes.
        len: usize,
        /// The one length allowed.
        want: usize,
    },
    /// Empty where a value is required.
    #[error("is empty")]
    Empty,
    /// Holds a character outside the allowed set (visible ASCII; space too in a version).
    #[error("has a character outside printable ASCII")]
    NotPrintable,
}

/// Checks a text field: at most `max` bytes, non-empty when `required`, and only visible
/// ASCII (`!`..=`~`), or printable ASCII (space too) when `space`.
fn check_text(
    what: &'static str,
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
    space: bool,
) -> Result<(), DecodeError> {
    let fail = |problem| DecodeError::InvalidField {
        what,
        field,
        problem,
    };
    if value.len() > max {
        return Err(fail(FieldProblem::TooLong {
            len: value.len(),
            max,
        }));
    }
    if required && value.is_empty() {
        return Err(fail(FieldProblem::Empty));
    }
    let lowest = if space { b' ' } else { b'!' };
    if !value.bytes().all(|b| (lowest..=b'~').contains(&b)) {
        return Err(fail(FieldProblem::NotPrintable));
    }
    Ok(())
}

/// Checks the optional end-to-end blob: absent, or 1 to [`MAX_E2E_LEN`] bytes.
fn check_e2e(what: &'static str, e2e: Option<&[u8]>) -> Result<(), DecodeError> {
    let fail = |problem| DecodeError::InvalidField {
        what,
        field: "e2e",
        problem,
    };
    match e2e {
        None => Ok(()),
        Some([]) => Err(fail(FieldProblem::Empty)),
        Some(bytes) if bytes.len() > MAX_E2E_LEN => Err(fail(FieldProblem::TooLong {
            len: bytes.len(),
            max: MAX_E2E_LEN,
        })),
        Some(_) => Ok(()),
    }
}

/// The protocol major version this build speaks. Peers with another major are refused.
pub const PROTOCOL_MAJOR: u8 = 1;
/// The protocol minor version this build speaks: 1.1 added STATUS_SNAPSHOT_END; 1.2
/// added EXECUTE_ACTION's `model`, DEVICE_STATUS's `providers` and `unloadable`
/// ([`crate::Body::DEVICE_DETAILS_SINCE`]) and the file messages (types 19–24).
pub const PROTOCOL_MINOR: u8 = 2;

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes bump this.
    pub major: u8,
    /// Compatible additions bump this.
    pub minor: u8,
}

impl Version {
    /// The version this build speaks.
    pub const CURRENT: Version = Version {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
    };

    /// The version two peers use: the same major, the lower minor.
    pub fn negotiate(self, peer: Version) -> Result<Version, DecodeError> {
        if peer.major != self.major {
            return Err(DecodeError::UnsupportedVersion {
                major: peer.major,
                minor: peer.minor,
            });
        }
        Ok(Version {
            major: self.major,
            minor: self.minor.min(peer.minor),
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What a stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// One action: EXECUTE_ACTION in, STREAM_CHUNK… STREAM_END or ERROR out.
    Action,
    /// A request that is not an action (GET_STATUS, INSTALL_APP, UNINSTALL_APP).
    Control,
}

/// First frame of a stream a browser opens to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenHeader {
    /// The device the stream is for.
    pub device_id: String,
    /// What the stream carries.
    pub kind: StreamKind,
    /// The user's access token (a JWT).
    pub token: String,
    /// Reserved for end-to-end mode: opaque bytes (the HPKE encapsulation) that the relay
    /// forwards to the desktop without reading. `None` for plain streams.
    pub e2e: Option<Vec<u8>>,
}

/// First frame of a stream the relay opens to a desktop on a browser's behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHeader {
    /// The user the relay authenticated.
    pub user_id: String,
    /// The browser session (one WebTransport session) the stream belongs to.
    pub session_id: u64,
    /// What the stream carries, as the browser declared it.
    pub kind: StreamKind,
    /// [`OpenHeader::e2e`], forwarded untouched.
    pub e2e: Option<Vec<u8>>,
}

/// First frame of the control stream a desktop opens after connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The device token from `desktop-node login`.
    pub device_token: String,
    /// The node's software version, for the registry.
    pub node_version: String,
    /// The node's static X25519 identity public key (exactly [`IDENTITY_KEY_LEN`] bytes).
    pub identity_key: Vec<u8>,
}

/// Encodes a header with the current version prefix.
pub fn encode_header<T: Serialize>(header: &T) -> Vec<u8> {
    let mut out = vec![PROTOCOL_MAJOR, PROTOCOL_MINOR];
    // Serializing into a Vec cannot fail for these types (no maps, no unsized sequences).
    out.extend(postcard::to_allocvec(header).unwrap_or_default());
    out
}

/// Decodes a header, checking its version prefix first.
///
/// Returns the header and the version the peer announced.
pub fn decode_header<'de, T: Deserialize<'de>>(
    body: &'de [u8],
    what: &'static str,
) -> Result<(T, Version), DecodeError> {
    let [major, minor, rest @ ..] = body else {
        return Err(DecodeError::MissingVersion);
    };
    let peer = Version {
        major: *major,
        minor: *minor,
    };
    Version::CURRENT.negotiate(peer)?;
    if body.len() > MAX_HEADER_LEN as usize {
        return Err(DecodeError::HeaderTooLarge {
            what,
            len: body.len(),
            max: MAX_HEADER_LEN as usize,
        });
    }
    let (value, _newer_fields) =
        postcard::take_from_bytes(rest).map_err(|e| DecodeError::malformed(what, e))?;
    Ok((value, peer))
}

impl OpenHeader {
    const WHAT: &'static str = "stream-open header";

    /// Checks every field: `device_id` at most [`MAX_ID_LEN`] bytes of visible ASCII,
    /// empty only on a `Control` stream (the status events); `token` at most
    /// [`MAX_TOKEN_LEN`] bytes of visible ASCII (an empty one is refused later, as
    /// unauthenticated); `e2e` absent or 1 to [`MAX_E2E_LEN`] bytes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_text(
            Self::WHAT,
            "device_id",
            &self.device_id,
            MAX_ID_LEN,
            self.kind != StreamKind::Control,
            false,
        )?;
        check_text(
            Self::WHAT,
            "token",
            &self.token,
            MAX_TOKEN_LEN,
            false,
            false,
        )?;
        check_e2e(Self::WHAT, self.e2e.as_deref())
    }

    /// Encodes this header as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        encode_header(self)
    }
    /// Decodes a frame body.
    ///
    /// Fails on a wrong version, a malformed body, or a field that breaks its rule
    /// ([`OpenHeader::validate`]).
    pub fn decode(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        let (header, version): (Self, Version) = decode_header(body, Self::WHAT)?;
        header.validate()?;
        Ok((header, version))
    }
}

impl RelayHeader {
    const WHAT: &'static str = "relay header";

    /// Checks every field: `user_id` 1 to [`MAX_ID_LEN`] bytes of visible ASCII; `e2e`
    /// absent or 1 to [`MAX_E2E_LEN`] bytes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_text(
            Self::WHAT,
            "user_id",
            &self.user_id,
            MAX_ID_LEN,
            true,
            false,
        )?;
        check_e2e(Self::WHAT, self.e2e.as_deref())
    }

    /// Encodes this header as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        encode_header(self)
    }
    /// Decodes a frame body.
    ///
    /// Fails on a wrong version, a malformed body, or a field that breaks its rule
    /// ([`RelayHeader::validate`]).
    pub fn decode(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        let (header, version): (Self, Version) = decode_header(body, Self::WHAT)?;
        header.validate()?;
        Ok((header, version))
    }
}

impl Hello {
    const WHAT: &'static str = "hello";

    /// Checks every field: `device_token` 1 to [`MAX_DEVICE_TOKEN_LEN`] bytes of visible
    /// ASCII; `node_version` 1 to [`MAX_NODE_VERSION_LEN`] bytes of printable ASCII;
    /// `identity_key` exactly [`IDENTITY_KEY_LEN`] bytes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_text(
            Self::WHAT,
            "device_token",
            &self.device_token,
            MAX_DEVICE_TOKEN_LEN,
            true,
            false,
        )?;
        check_text(
            Self::WHAT,
            "node_version",
            &self.node_version,
            MAX_NODE_VERSION_LEN,
            true,
            true,
        )?;
        if self.identity_key.len() != IDENTITY_KEY_LEN {
            return Err(DecodeError::InvalidField {
                what: Self::WHAT,
                field: "identity_key",
                problem: FieldProblem::WrongLength {
                    len: self.identity_key.len(),
                    want: IDENTITY_KEY_LEN,
                },
            });
        }
        Ok(())
    }

    /// Encodes this header as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        encode_header(self)
    }
    /// Decodes a frame body.
    ///
    /// Fails on a wrong version, a malformed body, or a field that breaks its rule
    /// ([`Hello::validate`]).
    pub fn decode(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        let (header, version): (Self, Version) = decode_header(body, Self::WHAT)?;
        header.validate()?;
        Ok((header, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> OpenHeader {
        OpenHeader {
            device_id: "d1".into(),
            kind: StreamKind::Action,
            token: "t".into(),
            e2e: None,
        }
    }

    #[test]
    fn open_header_bytes_are_exact() {
        assert_eq!(
            open().encode(),
            [1, PROTOCOL_MINOR, 2, b'd', b'1', 0, 1, b't', 0],
            "major, minor, str d1, variant Action, str t, None"
        );
    }

    #[test]
    fn unknown_major_is_refused_before_the_body() {
        let err = OpenHeader::decode(&[2, 7, 0xff]).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion { major: 2, minor: 7 });
        assert!(err.to_string().contains("unsupported protocol version 2.7"));
    }

    #[test]
    fn newer_minor_with_appended_fields_still_decodes() {
        let mut body = open().encode();
        body[1] = 9;
        body.extend_from_slice(&[42, 42, 42]);
        let (h, v) = OpenHeader::decode(&body).unwrap();
        assert_eq!(h, open());
        assert_eq!(v, Version { major: 1, minor: 9 });
        assert_eq!(Version::CURRENT.negotiate(v).unwrap(), Version::CURRENT);
    }

    #[test]
    fn empty_and_truncated_headers_are_errors() {
        assert_eq!(OpenHeader::decode(&[]), Err(DecodeError::MissingVersion));
        assert_eq!(OpenHeader::decode(&[1]), Err(DecodeError::MissingVersion));
        let body = open().encode();
        for cut in 2..body.len() {
            assert!(
                matches!(
                    OpenHeader::decode(&body[..cut]),
                    Err(DecodeError::Malformed { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn unknown_stream_kind_is_malformed() {
        let err = OpenHeader::decode(&[1, 0, 0, 5, 0, 0]).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Malformed {
                what: "stream-open header",
                ..
            }
        ));
    }

    fn hello(key_len: usize) -> Hello {
        Hello {
            device_token: "aisa_dt_abc".into(),
            node_version: "0.1.0 (linux)".into(),
            identity_key: vec![7; key_len],
        }
    }

    fn field_of(err: DecodeError) -> (&'static str, FieldProblem) {
        match err {
            DecodeError::InvalidField { field, problem, .. } => (field, problem),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn identity_key_must_be_exactly_32_bytes() {
        assert_eq!(Hello::decode(&hello(32).encode()).unwrap().0, hello(32));
        // The lengths the review sent, each of which used to be accepted and stored.
        for len in [0, 5, 31, 33, 65_536] {
            let err = Hello::decode(&hello(len).encode()).unwrap_err();
            if len > MAX_HEADER_LEN as usize {
                assert!(
                    matches!(err, DecodeError::HeaderTooLarge { what: "hello", .. }),
                    "{err:?}"
                );
                continue;
            }
            assert_eq!(
                field_of(err.clone()),
                (
                    "identity_key",
                    FieldProblem::WrongLength {
                        len,
                        want: IDENTITY_KEY_LEN
                    }
                )
            );
            assert_eq!(
                err.to_string(),
                format!("invalid hello: identity_key is {len} bytes long, not 32")
            );
        }
    }

    #[test]
    fn hello_text_fields_have_limits() {
        let mut h = hello(32);
        h.device_token = String::new();
        assert_eq!(
            field_of(Hello::decode(&h.encode()).unwrap_err()),
            ("device_token", FieldProblem::Empty)
        );
        h.device_token = "t".repeat(MAX_DEVICE_TOKEN_LEN + 1);
        assert_eq!(
            field_of(Hello::decode(&h.encode()).unwrap_err()),
            (
                "device_token",
                FieldProblem::TooLong {
                    len: MAX_DEVICE_TOKEN_LEN + 1,
                    max: MAX_DEVICE_TOKEN_LEN
                }
            )
        );
        let mut h = hello(32);
        h.node_version = "1.0\n\x1b[31mforged log line".into();
        assert_eq!(
            field_of(Hello::decode(&h.encode()).unwrap_err()),
            ("node_version", FieldProblem::NotPrintable)
        );
        h.node_version = "1.0-é".into();
        assert_eq!(
            field_of(Hello::decode(&h.encode()).unwrap_err()),
            ("node_version", FieldProblem::NotPrintable)
        );
        h.node_version = "v".repeat(MAX_NODE_VERSION_LEN + 1);
        assert!(matches!(
            field_of(Hello::decode(&h.encode()).unwrap_err()),
            ("node_version", FieldProblem::TooLong { .. })
        ));
    }

    #[test]
    fn open_header_fields_have_limits() {
        let mut h = open();
        h.device_id = "d".repeat(MAX_ID_LEN);
        assert!(OpenHeader::decode(&h.encode()).is_ok(), "at the limit");
        h.device_id.push('d');
        assert!(matches!(
            field_of(OpenHeader::decode(&h.encode()).unwrap_err()),
            ("device_id", FieldProblem::TooLong { .. })
        ));
        h.device_id = "d 1".into();
        assert_eq!(
            field_of(OpenHeader::decode(&h.encode()).unwrap_err()),
            ("device_id", FieldProblem::NotPrintable)
        );
        // An empty device id is the status-event stream: Control only.
        h.device_id = String::new();
        assert_eq!(
            field_of(OpenHeader::decode(&h.encode()).unwrap_err()),
            ("device_id", FieldProblem::Empty)
        );
        h.kind = StreamKind::Control;
        assert!(OpenHeader::decode(&h.encode()).is_ok());

        let mut h = open();
        h.token = "t".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            field_of(OpenHeader::decode(&h.encode()).unwrap_err()),
            ("token", FieldProblem::TooLong { .. })
        ));
        h.token = "a\u{0}b".into();
        assert_eq!(
            field_of(OpenHeader::decode(&h.encode()).unwrap_err()),
            ("token", FieldProblem::NotPrintable)
        );

        let mut h = open();
        h.e2e = Some(Vec::new());
        assert_eq!(
            field_of(OpenHeader::decode(&h.encode()).unwrap_err()),
            ("e2e", FieldProblem::Empty)
        );
        h.e2e = Some(vec![0; MAX_E2E_LEN]);
        assert!(OpenHeader::decode(&h.encode()).is_ok());
        h.e2e = Some(vec![0; MAX_E2E_LEN + 1]);
        assert!(matches!(
            field_of(OpenHeader::decode(&h.encode()).unwrap_err()),
            ("e2e", FieldProblem::TooLong { .. })
        ));
    }

    #[test]
    fn relay_header_fields_have_limits() {
        let mut h = RelayHeader {
            user_id: "u-1".into(),
            session_id: u64::MAX,
            kind: StreamKind::Action,
            e2e: Some(vec![1; 74]),
        };
        assert_eq!(RelayHeader::decode(&h.encode()).unwrap().0, h);
        h.user_id = String::new();
        assert_eq!(
            field_of(RelayHeader::decode(&h.encode()).unwrap_err()),
            ("user_id", FieldProblem::Empty)
        );
        h.user_id = "u".repeat(MAX_ID_LEN + 1);
        assert!(matches!(
            field_of(RelayHeader::decode(&h.encode()).unwrap_err()),
            ("user_id", FieldProblem::TooLong { .. })
        ));
    }

    #[test]
    fn a_header_over_the_header_limit_is_refused_before_its_fields() {
        let mut body = open().encode();
        body.resize(MAX_HEADER_LEN as usize + 1, 0);
        assert_eq!(
            OpenHeader::decode(&body),
            Err(DecodeError::HeaderTooLarge {
                what: "stream-open header",
                len: MAX_HEADER_LEN as usize + 1,
                max: MAX_HEADER_LEN as usize
            })
        );
        // The largest valid header fits with room to spare.
        let biggest = OpenHeader {
            device_id: "d".repeat(MAX_ID_LEN),
            kind: StreamKind::Action,
            token: "t".repeat(MAX_TOKEN_LEN),
            e2e: Some(vec![0; MAX_E2E_LEN]),
        };
        assert!(biggest.encode().len() <= MAX_HEADER_LEN as usize);
        assert!(OpenHeader::decode(&biggest.encode()).is_ok());
    }
}
