//! The first frame of every stream, and version negotiation.
//!
//! A header body is two version bytes (`major`, `minor`) followed by the postcard encoding
//! of the header. A decoder refuses a different major version with
//! [`DecodeError::UnsupportedVersion`] before it looks at the rest. A newer minor version
//! may only append fields at the end of a header, which an older decoder ignores, so an
//! older peer keeps working.

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// The protocol major version this build speaks. Peers with another major are refused.
pub const PROTOCOL_MAJOR: u8 = 1;
/// The protocol minor version this build speaks.
pub const PROTOCOL_MINOR: u8 = 0;

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
    /// The node's static X25519 identity public key (32 bytes).
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
    let (value, _newer_fields) =
        postcard::take_from_bytes(rest).map_err(|e| DecodeError::malformed(what, e))?;
    Ok((value, peer))
}

impl OpenHeader {
    /// Encodes this header as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        encode_header(self)
    }
    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        decode_header(body, "stream-open header")
    }
}

impl RelayHeader {
    /// Encodes this header as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        encode_header(self)
    }
    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        decode_header(body, "relay header")
    }
}

impl Hello {
    /// Encodes this header as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        encode_header(self)
    }
    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<(Self, Version), DecodeError> {
        decode_header(body, "hello")
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
            [1, 0, 2, b'd', b'1', 0, 1, b't', 0],
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
}
