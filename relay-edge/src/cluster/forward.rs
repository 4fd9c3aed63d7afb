//! Relay-to-relay forwarding: a browser's stream that arrives at this node for a desktop
//! connected to another node is carried there on the pooled forward connection
//! ([`super::peer::Peers`]), one QUIC stream per browser stream.
//!
//! The entry node authorizes the stream exactly as for a local desktop
//! ([`crate::authorize`]), then opens a stream to the holding node and writes one
//! [`ForwardHeader`] frame: the device, the connection generation the cluster's device
//! map gave, and the relay-stamped header the desktop is to get. The holding node checks
//! that it still holds that connection of the device, opens a stream to the desktop,
//! writes the stamped header to it, and answers one [`ForwardReply`] frame: accepted,
//! or a typed [`ForwardRefusal`], which the entry node turns into the browser's ERROR.
//! The entry node does not wait for the reply before passing the browser's bytes on
//! ([`open_to`], [`ForwardRecv`]). After an accepted reply both nodes splice ([`crate::splice`]) without reading what
//! flows, so backpressure, FIN, resets and STOP_SENDING pass end to end across both
//! hops. The byte layout is in `docs/protocol.md`, "Relay-to-relay forwarding".
//!
//! What is not here: who may open the stream (the entry node's authorization, done
//! before anything is forwarded), where the device is ([`super::Cluster::locate`]), the
//! TLS and the pool ([`super::peer`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aisa_tunnel::ErrorCode;
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::proto::HEADER_TIMEOUT;
use tracing::{Instrument, debug, info, info_span};

use super::peer::{self, PeerError, Peers};
use crate::splice;
use crate::state::{OpenGuard, RelayState};

/// Version byte that starts every [`ForwardHeader`].
pub const FORWARD_VERSION: u8 = 1;

/// The largest forward header body: version, id length, a 255-byte id, the generation
/// and a relay header at its cap ([`aisa_tunnel::MAX_HEADER_LEN`]).
pub const MAX_FORWARD_HEADER: u32 = 2 + 255 + 8 + aisa_tunnel::MAX_HEADER_LEN;

/// The largest reply body: the status byte and a message of at most
/// [`MAX_REPLY_MESSAGE`] bytes.
pub const MAX_REPLY: u32 = 1 + MAX_REPLY_MESSAGE as u32;

/// The longest refusal message carried in a reply, in bytes.
pub const MAX_REPLY_MESSAGE: usize = 512;

/// How long the entry node waits for the holding node's reply before it refuses the
/// browser's stream (the holding node answers as soon as it has opened the desktop's
/// stream, which takes no network round trip).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// `[cluster] forward_idle_timeout_ms` when unset: a peer that answers nothing (not
/// even the keep-alives sent every third of it) for this long is lost, and every stream
/// forwarded through it ends (with an ERROR where one fits, [`ForwardRecv`]). 5 s, as a
/// desktop's keep-alive: between relays in one region a live peer answers within
/// milliseconds, and a browser should not wait longer for a dead one.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;

/// The first frame of a forwarded stream, written by the entry node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardHeader {
    /// The device the stream is for (1 to 255 bytes).
    pub device_id: String,
    /// The generation of the device's connection the entry node located; the holding
    /// node refuses the stream if it holds another one (or none).
    pub generation: u64,
    /// The relay-stamped header for the desktop (a `RelayHeader` frame body: version
    /// bytes, then postcard), passed on unread.
    pub relay_header: Vec<u8>,
}

/// Why a forward header or reply could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardDecodeError {
    /// The body ended before a field did.
    #[error("forward frame truncated")]
    Truncated,
    /// The version byte is not [`FORWARD_VERSION`].
    #[error("forward header version {0}, expected {FORWARD_VERSION}")]
    Version(u8),
    /// The device id is empty or not UTF-8.
    #[error("forward header: invalid device id")]
    DeviceId,
    /// The relay header is missing or longer than its cap.
    #[error("forward header: relay header of {0} bytes (1 to {max} allowed)", max = aisa_tunnel::MAX_HEADER_LEN)]
    RelayHeader(usize),
    /// The reply's status byte is not one this build knows.
    #[error("forward reply: unknown status {0}")]
    Status(u8),
}

impl ForwardHeader {
    /// The frame body: version, id length, id, generation (big-endian), relay header.
    ///
    /// Panics if the device id is longer than 255 bytes (the entry node only forwards
    /// ids that passed the open header's checks, at most `MAX_ID_LEN`).
    pub fn encode(&self) -> Vec<u8> {
        let id = self.device_id.as_bytes();
        let id_len = u8::try_from(id.len()).expect("device ids are at most 128 bytes");
        let mut out = Vec::with_capacity(2 + id.len() + 8 + self.relay_header.len());
        out.push(FORWARD_VERSION);
        out.push(id_len);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.relay_header);
        out
    }

    /// Parses a frame body written by [`ForwardHeader::encode`].
    pub fn decode(body: &[u8]) -> Result<Self, ForwardDecodeError> {
        let [version, id_len, rest @ ..] = body else {
            return Err(ForwardDecodeError::Truncated);
        };
        if *version != FORWARD_VERSION {
            return Err(ForwardDecodeError::Version(*version));
        }
        let id_len = usize::from(*id_len);
        if id_len == 0 {
            return Err(ForwardDecodeError::DeviceId);
        }
        if rest.len() < id_len + 8 {
            return Err(ForwardDecodeError::Truncated);
        }
        let (id, rest) = rest.split_at(id_len);
        let device_id = std::str::from_utf8(id)
            .map_err(|_| ForwardDecodeError::DeviceId)?
            .to_owned();
        let (generation, relay_header) = rest.split_at(8);
        let generation = u64::from_be_bytes(generation.try_into().unwrap_or_default());
        if relay_header.is_empty() || relay_header.len() > aisa_tunnel::MAX_HEADER_LEN as usize {
            return Err(ForwardDecodeError::RelayHeader(relay_header.len()));
        }
        Ok(ForwardHeader {
            device_id,
            generation,
            relay_header: relay_header.to_vec(),
        })
    }
}

/// Why the holding node refused a forwarded stream. Each has one status byte on the
/// wire ([`ForwardRefusal::status`]), one ERROR code for the browser, one metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardRefusal {
    /// The device is not connected to the holding node (any more).
    DeviceGone,
    /// The device is connected there, but by another connection than the one located
    /// (it reconnected): the device map was stale.
    Generation,
    /// The holding node is shutting down.
    Draining,
    /// The holding node could not open a stream to the desktop (its connection failed).
    DesktopLost,
    /// The forward header was not valid.
    BadHeader,
}

impl ForwardRefusal {
    const ALL: [ForwardRefusal; 5] = [
        ForwardRefusal::DeviceGone,
        ForwardRefusal::Generation,
        ForwardRefusal::Draining,
        ForwardRefusal::DesktopLost,
        ForwardRefusal::BadHeader,
    ];

    /// The reply's status byte (0 is "accepted").
    pub fn status(self) -> u8 {
        match self {
            ForwardRefusal::DeviceGone => 1,
            ForwardRefusal::Generation => 2,
            ForwardRefusal::Draining => 3,
            ForwardRefusal::DesktopLost => 4,
            ForwardRefusal::BadHeader => 5,
        }
    }

    /// The ERROR code the browser gets.
    pub fn code(self) -> ErrorCode {
        match self {
            ForwardRefusal::DeviceGone
            | ForwardRefusal::Generation
            | ForwardRefusal::DesktopLost => ErrorCode::DeviceOffline,
            ForwardRefusal::Draining => ErrorCode::PeerGone,
            ForwardRefusal::BadHeader => ErrorCode::Internal,
        }
    }

    /// The `aisa_refusals_total{reason}` label.
    pub fn reason(self) -> &'static str {
        match self {
            ForwardRefusal::DeviceGone => "forward_device_gone",
            ForwardRefusal::Generation => "forward_generation",
            ForwardRefusal::Draining => "forward_draining",
            ForwardRefusal::DesktopLost => "forward_desktop_lost",
            ForwardRefusal::BadHeader => "forward_bad_header",
        }
    }
}

/// The holding node's answer to a [`ForwardHeader`]: one frame, before any spliced byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardReply {
    /// The desktop's stream is open and has its header; what follows is the desktop's.
    Accepted,
    /// Refused; the stream ends after this frame. The message is for logs and for the
    /// browser's ERROR.
    Refused(ForwardRefusal, String),
}

impl ForwardReply {
    /// The frame body: a status byte (0 accepted), then a UTF-8 message for a refusal.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ForwardReply::Accepted => vec![0],
            ForwardReply::Refused(refusal, message) => {
                let mut end = message.len().min(MAX_REPLY_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let mut out = Vec::with_capacity(1 + end);
                out.push(refusal.status());
                out.extend_from_slice(&message.as_bytes()[..end]);
                out
            }
        }
    }

    /// Parses a reply body.
    pub fn decode(body: &[u8]) -> Result<Self, ForwardDecodeError> {
        let [status, message @ ..] = body else {
            return Err(ForwardDecodeError::Truncated);
        };
        if *status == 0 {
            return Ok(ForwardReply::Accepted);
        }
        let refusal = ForwardRefusal::ALL
            .into_iter()
            .find(|r| r.status() == *status)
            .ok_or(ForwardDecodeError::Status(*status))?;
        Ok(ForwardReply::Refused(
            refusal,
            String::from_utf8_lossy(message).into_owned(),
        ))
    }
}

/// Why the entry node could not forward a stream: each turns into the browser's ERROR
/// ([`ForwardError::code`], `Display`) and a metric label ([`ForwardError::reason`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The device is not connected to this node and the cluster's shared state (the
    /// device map in Redis) cannot be read: it may be online elsewhere.
    #[error(
        "the relay cannot locate the device right now (the cluster's shared state is unavailable); try again shortly"
    )]
    Unavailable,
    /// This node has no forward endpoint (`[cluster] forward_listen` unset), or the
    /// device map named a node that does not forward.
    #[error("the relay node holding the device cannot be reached from this node")]
    NotConfigured,
    /// The holding node could not be reached, or the connection to it failed.
    #[error("the relay node holding the device cannot be reached; try again: {0}")]
    Unreachable(String),
    /// The holding node refused (see [`ForwardRefusal`]).
    #[error("{message}")]
    Refused {
        /// Which refusal.
        refusal: ForwardRefusal,
        /// The holding node's message.
        message: String,
    },
    /// The holding node answered something that is not a reply.
    #[error("the relay node holding the device answered badly: {0}")]
    Protocol(String),
}

impl ForwardError {
    /// The ERROR code the browser gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            ForwardError::Unavailable => ErrorCode::Unavailable,
            ForwardError::NotConfigured | ForwardError::Unreachable(_) => ErrorCode::PeerGone,
            ForwardError::Refused { refusal, .. } => refusal.code(),
            ForwardError::Protocol(_) => ErrorCode::Internal,
        }
    }

    /// The `aisa_refusals_total{reason}` label.
    pub fn reason(&self) -> &'static str {
        match self {
            ForwardError::Unavailable => "cluster_unavailable",
            ForwardError::NotConfigured => "forward_not_configured",
            ForwardError::Unreachable(_) => "forward_unreachable",
            ForwardError::Refused { refusal, .. } => refusal.reason(),
            ForwardError::Protocol(_) => "forward_protocol",
        }
    }
}

impl From<PeerError> for ForwardError {
    fn from(err: PeerError) -> Self {
        ForwardError::Unreachable(err.to_string())
    }
}

/// Where a granted device stream goes.
pub enum DeviceAt {
    /// The device is connected to this node.
    Here(crate::link::DesktopLink),
    /// The device is connected to another node, where the stream is forwarded.
    Peer {
        /// The device.
        device_id: String,
        /// Its node, that node's forward address, and the connection's generation.
        placement: super::Placement,
    },
}

/// Where a device that is not connected to this node is: `Ok(None)` when it is online
/// nowhere, [`ForwardError::Unavailable`] when the cluster cannot say.
pub async fn locate_elsewhere(
    state: &RelayState,
    device_id: &str,
) -> Result<Option<super::Placement>, ForwardError> {
    match state.cluster.locate(device_id).await {
        // Connected here after all (it came online meanwhile): not a forward; the
        // browser retries.
        Ok(Some(placement)) if state.cluster.is_local(&placement) => Ok(None),
        Ok(placement) => Ok(placement),
        Err(super::ClusterUnavailable) => Err(ForwardError::Unavailable),
    }
}

/// Opens the forwarded stream for a granted browser stream to `device_id` at
/// `placement`, carrying `header` (the relay-stamped header the desktop gets), as halves
/// the browser's stream is spliced to.
///
/// Pipelined: it returns once the forward header is written, so the browser's request
/// flows to the holding node at once, without waiting a round trip for its reply; the
/// reply is read from the holding node's direction before anything of it is spliced
/// ([`ForwardRecv`]). A refusal from there reaches the browser as an ERROR frame and a
/// clean end, as a refusal of this node's own would. Failing to reach the node at all
/// is still an `Err` here.
pub async fn open_to(
    state: &RelayState,
    device_id: &str,
    placement: &super::Placement,
    header: &aisa_tunnel::RelayHeader,
) -> Result<(quinn::SendStream, ForwardRecv), ForwardError> {
    let forwarding = state
        .forwarding
        .as_ref()
        .ok_or(ForwardError::NotConfigured)?;
    let forward = ForwardHeader {
        device_id: device_id.to_owned(),
        generation: placement.generation,
        relay_header: header.encode(),
    };
    let (send, recv) = forwarding.start(placement.forward_addr, &forward).await?;
    Ok((
        send,
        ForwardRecv {
            recv,
            reply: ReplyState::Awaited,
            frames: FrameCursor::default(),
            sealed: header.e2e.is_some(),
        },
    ))
}

/// Where a byte stream of length-prefixed frames (a `u32` big-endian length, then the
/// body; docs/protocol.md, "Frames") is, counted from its lengths alone: the bodies
/// are skipped unread. The entry node keeps one over the answer it passes to the
/// browser, so that when the holding node is lost it knows whether the browser has a
/// whole number of frames (an ERROR frame may follow) or half of one (it may not).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FrameCursor {
    /// The current frame's length prefix, its first `prefix_len` bytes seen so far.
    prefix: [u8; 4],
    /// How many bytes of the prefix were seen (0 to 3; 0 also between frames).
    prefix_len: usize,
    /// Bytes of the current frame's body still to come.
    body_left: u64,
    /// Whole frames passed.
    frames: u64,
}

impl FrameCursor {
    /// Follows `bytes`, the next bytes of the stream.
    pub fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = (self.body_left.min(bytes.len() as u64)) as usize;
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                if self.body_left == 0 {
                    self.frames += 1;
                }
                continue;
            }
            let n = (4 - self.prefix_len).min(bytes.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&bytes[..n]);
            self.prefix_len += n;
            bytes = &bytes[n..];
            if self.prefix_len == 4 {
                self.prefix_len = 0;
                self.body_left = u64::from(u32::from_be_bytes(self.prefix));
                if self.body_left == 0 {
                    self.frames += 1;
                }
            }
        }
    }

    /// Whether the bytes so far end exactly at a frame's end (or are none).
    pub fn at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.body_left == 0
    }

    /// How many whole frames the bytes so far hold.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// The holding node's direction of a pipelined forwarded stream, as the entry node
/// splices it to the browser: first the holding node's reply (not passed on), then its
/// bytes as they come. A refusal becomes one ERROR frame for the browser (the code and
/// message of the [`ForwardRefusal`]) and then the clean end.
///
/// When the forward connection is lost after the reply (the holding node died, or the
/// network between the relays failed: the connection's idle timeout), the browser gets
/// an ERROR `peer_gone` frame and a clean end instead of a bare reset, provided the
/// answer so far ends at a frame boundary ([`FrameCursor`]) and, on an end-to-end
/// stream, nothing of the answer has passed yet (the browser refuses a plain frame after
/// a sealed one). Otherwise (half a frame passed, or a sealed answer begun) the stream
/// is reset with `PEER_GONE`: an ERROR cannot be put inside a frame, and a reset is the
/// honest end. A reset by the holding node itself (its desktop's stream failed) is
/// passed on as a reset, as on a single node.
pub struct ForwardRecv {
    recv: quinn::RecvStream,
    reply: ReplyState,
    /// The answer's frames passed to the browser so far.
    frames: FrameCursor,
    /// The stream is end-to-end encrypted (its header said so).
    sealed: bool,
}

enum ReplyState {
    /// The holding node has not answered yet.
    Awaited,
    /// Accepted: its bytes follow.
    Accepted,
    /// Refused: the ERROR frame for the browser has been given; the stream ends.
    Ended,
}

impl ForwardRecv {
    /// Reads the reply: `Ok(None)` when accepted, `Ok(Some(frame))` with the ERROR frame
    /// for the browser when refused, `Err` when the stream failed first.
    async fn reply(&mut self) -> Result<Option<bytes::Bytes>, ()> {
        let read = tokio::time::timeout(REPLY_TIMEOUT, read_frame(&mut self.recv, MAX_REPLY)).await;
        let refused = match read {
            Ok(Ok(Some(body))) => match ForwardReply::decode(&body) {
                Ok(ForwardReply::Accepted) => {
                    metrics::counter!("aisa_relay_forwarded_streams_total", "direction" => "out")
                        .increment(1);
                    return Ok(None);
                }
                Ok(ForwardReply::Refused(refusal, message)) => {
                    ForwardError::Refused { refusal, message }
                }
                Err(err) => ForwardError::Protocol(err.to_string()),
            },
            Ok(Ok(None)) => ForwardError::Protocol("the stream ended before a reply".into()),
            // Lost before anything of the desktop's answer: nothing is half-way, so the
            // browser gets an ERROR rather than a reset.
            Ok(Err(err)) => ForwardError::Unreachable(format!(
                "the connection to it failed before it answered ({err})"
            )),
            Err(_) => ForwardError::Unreachable(format!("no answer within {REPLY_TIMEOUT:?}")),
        };
        info!(reason = refused.reason(), %refused, "forwarded stream refused by the holding node");
        crate::metrics::refused(refused.reason());
        let _ = self.recv.stop(0u32.into());
        error_frame(refused.code(), &refused.to_string())
    }

    /// The end of the answer when reading it failed after the reply: the ERROR frame
    /// for the browser if one may be written here (see [`ForwardRecv`]), else `Err`
    /// (the splice resets the browser's stream).
    fn lost(&mut self, err: quinn::ReadError) -> Result<Option<bytes::Bytes>, ()> {
        let quinn::ReadError::ConnectionLost(lost) = err else {
            // The holding node reset the stream (its desktop's side failed): passed on.
            return Err(());
        };
        if !error_fits(&self.frames, self.sealed) {
            info!(%lost, whole = self.frames.at_boundary(), sealed = self.sealed, "forward connection lost mid-frame or mid-sealed-answer: the browser's stream is reset");
            metrics::counter!("aisa_relay_forward_lost_streams_total", "ended" => "reset")
                .increment(1);
            return Err(());
        }
        info!(%lost, "forward connection lost: the browser's stream ends with ERROR peer_gone");
        metrics::counter!("aisa_relay_forward_lost_streams_total", "ended" => "error").increment(1);
        self.reply = ReplyState::Ended;
        error_frame(
            ErrorCode::PeerGone,
            &format!(
                "the relay node holding the device was lost mid-answer ({lost}); the answer is incomplete, try again"
            ),
        )
    }
}

/// Whether the relay may end an answer that was cut off with an ERROR frame of its own:
/// only between two frames (never inside one), and on an end-to-end stream only before
/// the answer's first (sealed) frame, after which the browser would refuse a plain one.
pub fn error_fits(answer: &FrameCursor, sealed: bool) -> bool {
    answer.at_boundary() && (!sealed || answer.frames() == 0)
}

/// One ERROR frame (request id 0) as the bytes the browser gets.
fn error_frame(code: ErrorCode, message: &str) -> Result<Option<bytes::Bytes>, ()> {
    let error = aisa_tunnel::Envelope::error(0, code, message.to_owned());
    let mut frame = Vec::new();
    aisa_tunnel::frame::encode_frame(&error.encode(), aisa_tunnel::MAX_FRAME_LEN, &mut frame)
        .map_err(drop)?;
    Ok(Some(bytes::Bytes::from(frame)))
}

impl splice::SpliceRecv for ForwardRecv {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<bytes::Bytes>, ()> {
        match self.reply {
            ReplyState::Accepted => {}
            ReplyState::Ended => return Ok(None),
            ReplyState::Awaited => match self.reply().await? {
                None => self.reply = ReplyState::Accepted,
                Some(error) => {
                    self.reply = ReplyState::Ended;
                    return Ok(Some(error));
                }
            },
        }
        match self.recv.read_chunk(max, true).await {
            Ok(Some(chunk)) => {
                self.frames.advance(&chunk.bytes);
                Ok(Some(chunk.bytes))
            }
            Ok(None) => Ok(None),
            Err(err) => self.lost(err),
        }
    }

    fn stop_stream(&mut self, code: u32) {
        let _ = self.recv.stop(code.into());
    }
}

/// This node's forwarding: its endpoint (serving peers, in [`serve`]) and the pool of
/// connections it dials peers with.
pub struct Forwarding {
    /// One connection per peer node.
    pub peers: Peers,
    /// The address this node's forward endpoint is bound to.
    pub local_addr: SocketAddr,
}

impl Forwarding {
    /// Binds the forward endpoint on `listen` with `tls`; connections nothing answers
    /// for `idle` are dropped (their streams end).
    pub fn bind(
        listen: SocketAddr,
        tls: &peer::ForwardTls,
        idle: Duration,
    ) -> Result<Self, PeerError> {
        let (endpoint, client) = peer::bind(listen, tls, idle)?;
        let local_addr = endpoint.local_addr().map_err(|e| PeerError::Connect {
            addr: listen,
            reason: e.to_string(),
        })?;
        Ok(Forwarding {
            peers: Peers::new(endpoint, client),
            local_addr,
        })
    }

    /// The forwarding `[cluster]` configures: none without `forward_listen`; else the
    /// endpoint bound there, with the operator's certificate files or, given
    /// `forward_secret`, a certificate this node issues itself under the CA derived from
    /// the secret ([`peer::ClusterCa::from_secret`]).
    pub fn from_config(
        config: &crate::config::RelayConfig,
        node: &super::NodeName,
    ) -> Result<Option<Self>, PeerError> {
        let cluster = &config.cluster;
        let Some(listen) = cluster.forward_listen else {
            return Ok(None);
        };
        let tls = match (
            &cluster.forward_ca,
            &cluster.forward_cert,
            &cluster.forward_key,
            &cluster.forward_secret,
        ) {
            (Some(ca), Some(cert), Some(key), None) => peer::ForwardTls::load(ca, cert, key)?,
            (None, None, None, Some(secret)) => {
                peer::ClusterCa::from_secret(secret.as_bytes())?.issue(node.as_str())?
            }
            _ => {
                return Err(PeerError::Files(
                    "[cluster] forward_listen needs forward_ca, forward_cert and forward_key \
                     together, or forward_secret instead"
                        .into(),
                ));
            }
        };
        let idle = Duration::from_millis(
            cluster
                .forward_idle_timeout_ms
                .unwrap_or(DEFAULT_IDLE_TIMEOUT_MS)
                .max(100),
        );
        Ok(Some(Self::bind(listen, &tls, idle)?))
    }

    /// Opens a forwarded stream to the node at `to` and writes `header`, without waiting
    /// for the reply (see [`open_to`]).
    pub async fn start(
        &self,
        to: SocketAddr,
        header: &ForwardHeader,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ForwardError> {
        if to.port() == 0 {
            return Err(ForwardError::NotConfigured);
        }
        let conn = self.peers.connection(to).await?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
        write_frame(&mut send, &header.encode(), MAX_FORWARD_HEADER)
            .await
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?;
        Ok((send, recv))
    }

    /// Opens a forwarded stream to the node at `to` for `header`'s device and returns
    /// it once that node has accepted it (its desktop's stream is open and has the
    /// stamped header); the caller splices it to the browser's stream.
    pub async fn open(
        &self,
        to: SocketAddr,
        header: &ForwardHeader,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ForwardError> {
        let (mut send, mut recv) = self.start(to, header).await?;
        let reply =
            match tokio::time::timeout(REPLY_TIMEOUT, read_frame(&mut recv, MAX_REPLY)).await {
                Err(_) => {
                    let _ = send.reset(splice::PEER_GONE.into());
                    return Err(ForwardError::Unreachable(format!(
                        "no answer within {REPLY_TIMEOUT:?}"
                    )));
                }
                Ok(Err(err)) => return Err(ForwardError::Unreachable(err.to_string())),
                Ok(Ok(None)) => {
                    return Err(ForwardError::Protocol(
                        "the stream ended before a reply".into(),
                    ));
                }
                Ok(Ok(Some(body))) => ForwardReply::decode(&body)
                    .map_err(|e| ForwardError::Protocol(e.to_string()))?,
            };
        match reply {
            ForwardReply::Accepted => {
                metrics::counter!("aisa_relay_forwarded_streams_total", "direction" => "out")
                    .increment(1);
                Ok((send, recv))
            }
            ForwardReply::Refused(refusal, message) => {
                let _ = recv.stop(0u32.into());
                Err(ForwardError::Refused { refusal, message })
            }
        }
    }
}

/// Accepts peers' forward connections on `endpoint` until it closes, serving each.
pub async fn serve(state: Arc<RelayState>, endpoint: quinn::Endpoint) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                connections.spawn(serve_peer(state.clone(), incoming));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Serves one peer's forward connection: every stream it opens is one forwarded
/// browser stream.
async fn serve_peer(state: Arc<RelayState>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(err) => {
            // A peer without a certificate from the cluster CA ends here.
            info!(%remote, %err, "forward connection refused");
            crate::metrics::refused("forward_handshake");
            return;
        }
    };
    let span = info_span!("peer", %remote);
    async move {
        info!("forward connection from a peer node");
        let mut streams = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = conn.accept_bi() => match accepted {
                    Ok((send, recv)) => {
                        streams.spawn(serve_stream(state.clone(), send, recv).in_current_span());
                    }
                    Err(err) => {
                        info!(%err, "forward connection ended");
                        break;
                    }
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
            }
        }
        // With the connection gone every stream's reads and writes fail at once; the
        // splices pass a reset on to the desktops.
        while streams.join_next().await.is_some() {}
    }
    .instrument(span)
    .await
}

/// Refuses a forwarded stream: one reply frame, then the end of both directions.
async fn refuse(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    refusal: ForwardRefusal,
    message: String,
) {
    info!(reason = refusal.reason(), %message, "forwarded stream refused");
    crate::metrics::refused(refusal.reason());
    let reply = ForwardReply::Refused(refusal, message).encode();
    if write_frame(&mut send, &reply, MAX_REPLY).await.is_ok() {
        let _ = send.finish();
    }
    let _ = recv.stop(0u32.into());
}

/// One forwarded stream on the holding node: read the forward header, check that the
/// device's located connection is here, open the desktop's stream, write the stamped
/// header, accept, splice.
async fn serve_stream(
    state: Arc<RelayState>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let body = match tokio::time::timeout(HEADER_TIMEOUT, read_frame(&mut recv, MAX_FORWARD_HEADER))
        .await
    {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return,
        Ok(Err(err)) => {
            let message = format!("forward header: {err}");
            return refuse(send, recv, ForwardRefusal::BadHeader, message).await;
        }
        Err(_) => {
            let message = format!("no forward header within {HEADER_TIMEOUT:?}");
            return refuse(send, recv, ForwardRefusal::BadHeader, message).await;
        }
    };
    let header = match ForwardHeader::decode(&body) {
        Ok(header) => header,
        Err(err) => return refuse(send, recv, ForwardRefusal::BadHeader, err.to_string()).await,
    };
    let device_id = header.device_id.as_str();
    if state.is_draining() {
        let message = "the relay node holding the device is shutting down; try again".into();
        return refuse(send, recv, ForwardRefusal::Draining, message).await;
    }
    let (Some(online), Some(generation)) = (
        state.devices.registry.get(device_id),
        state.devices.registry.generation(device_id),
    ) else {
        let message = format!("device {device_id} is offline (it left the relay node it was on)");
        return refuse(send, recv, ForwardRefusal::DeviceGone, message).await;
    };
    if generation != header.generation {
        let message = format!("device {device_id} reconnected; try again");
        debug!(
            have = generation,
            asked = header.generation,
            "generation differs"
        );
        return refuse(send, recv, ForwardRefusal::Generation, message).await;
    }
    let (mut d_send, d_recv) = match online.connection.open_bi().await {
        Ok(pair) => pair,
        Err(err) => {
            let message = format!("device connection lost: {err}");
            return refuse(send, recv, ForwardRefusal::DesktopLost, message).await;
        }
    };
    if let Err(err) = write_frame(
        &mut d_send,
        &header.relay_header,
        state.config.max_frame_len,
    )
    .await
    {
        let message = format!("device connection lost: {err}");
        return refuse(send, recv, ForwardRefusal::DesktopLost, message).await;
    }
    if write_frame(&mut send, &ForwardReply::Accepted.encode(), MAX_REPLY)
        .await
        .is_err()
    {
        // The entry node is gone: so is the browser. Tell the desktop.
        let _ = d_send.reset(splice::PEER_GONE);
        return;
    }
    metrics::counter!("aisa_relay_forwarded_streams_total", "direction" => "in").increment(1);
    let _open = OpenGuard::open(&state.traffic.open_streams);
    let observer = state.traffic.splice_observer();
    let ends = splice::splice(
        (recv, send),
        (d_recv, d_send),
        &state.traffic.bytes_spliced,
        observer.as_deref(),
    )
    .await;
    debug!(?ends, "forwarded stream spliced to the end");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            aisa_tunnel::frame::encode_frame(body, aisa_tunnel::MAX_FRAME_LEN, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn the_frame_cursor_knows_a_boundary_from_the_middle_of_a_frame_however_it_is_cut() {
        let bytes = framed(&[b"first", b"", b"third frame"]);
        // Boundaries: after 4+5, after 4+0 more, after 4+11 more.
        let ends = [9, 13, 28];
        assert_eq!(bytes.len(), 28);
        // Every way of cutting the stream in two chunks, and byte by byte.
        for cut in 0..=bytes.len() {
            let mut cursor = FrameCursor::default();
            cursor.advance(&bytes[..cut]);
            let whole = cut == 0 || ends.contains(&cut);
            assert_eq!(cursor.at_boundary(), whole, "cut at {cut}");
            assert_eq!(
                cursor.frames(),
                ends.iter().filter(|e| **e <= cut).count() as u64,
                "cut at {cut}"
            );
            cursor.advance(&bytes[cut..]);
            assert!(cursor.at_boundary());
            assert_eq!(cursor.frames(), 3);
        }
        let mut cursor = FrameCursor::default();
        for (i, byte) in bytes.iter().enumerate() {
            cursor.advance(std::slice::from_ref(byte));
            assert_eq!(cursor.at_boundary(), ends.contains(&(i + 1)), "byte {i}");
        }
        // A length prefix cut after 2 of its 4 bytes is not a boundary.
        let mut cursor = FrameCursor::default();
        cursor.advance(&[0, 0]);
        assert!(!cursor.at_boundary());
    }

    #[test]
    fn an_error_is_added_only_between_frames_and_never_after_a_sealed_frame() {
        let two = framed(&[b"chunk 0", b"chunk 1"]);
        let mut nothing = FrameCursor::default();
        nothing.advance(&[]);
        let mut whole = FrameCursor::default();
        whole.advance(&two);
        let mut half = FrameCursor::default();
        half.advance(&two[..two.len() - 3]);
        // Plain: an ERROR fits between frames, not inside one.
        assert!(error_fits(&nothing, false));
        assert!(error_fits(&whole, false));
        assert!(!error_fits(&half, false));
        // End to end: only before the first sealed frame.
        assert!(error_fits(&nothing, true));
        assert!(!error_fits(&whole, true));
        assert!(!error_fits(&half, true));
    }

    #[test]
    fn a_forward_header_has_the_documented_bytes() {
        let header = ForwardHeader {
            device_id: "d1".into(),
            generation: 0x0102_0304_0506_0708,
            relay_header: vec![1, 1, 0xaa],
        };
        let bytes = header.encode();
        // The vector in docs/protocol.md, "Relay-to-relay forwarding".
        assert_eq!(
            bytes,
            [1, 2, b'd', b'1', 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 0xaa]
        );
        assert_eq!(ForwardHeader::decode(&bytes), Ok(header));
    }

    #[test]
    fn bad_forward_headers_are_refused() {
        let good = ForwardHeader {
            device_id: "dev".into(),
            generation: 9,
            relay_header: vec![1, 1, 5],
        }
        .encode();
        assert_eq!(
            ForwardHeader::decode(&[]),
            Err(ForwardDecodeError::Truncated)
        );
        let mut other = good.clone();
        other[0] = 2;
        assert_eq!(
            ForwardHeader::decode(&other),
            Err(ForwardDecodeError::Version(2))
        );
        assert_eq!(
            ForwardHeader::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(ForwardDecodeError::DeviceId)
        );
        assert_eq!(
            ForwardHeader::decode(&good[..good.len() - 3]),
            Err(ForwardDecodeError::RelayHeader(0))
        );
        assert_eq!(
            ForwardHeader::decode(&good[..8]),
            Err(ForwardDecodeError::Truncated)
        );
        let mut big = good[..13].to_vec();
        big.extend(std::iter::repeat_n(
            0,
            aisa_tunnel::MAX_HEADER_LEN as usize + 1,
        ));
        assert!(matches!(
            ForwardHeader::decode(&big),
            Err(ForwardDecodeError::RelayHeader(_))
        ));
        let mut not_utf8 = good.clone();
        not_utf8[2] = 0xff;
        assert_eq!(
            ForwardHeader::decode(&not_utf8),
            Err(ForwardDecodeError::DeviceId)
        );
    }

    #[test]
    fn replies_round_trip_and_have_the_documented_bytes() {
        assert_eq!(ForwardReply::Accepted.encode(), [0]);
        let refused = ForwardReply::Refused(ForwardRefusal::Generation, "moved".into());
        assert_eq!(refused.encode(), [2, b'm', b'o', b'v', b'e', b'd']);
        for reply in [ForwardReply::Accepted, refused] {
            assert_eq!(ForwardReply::decode(&reply.encode()), Ok(reply));
        }
        for refusal in ForwardRefusal::ALL {
            let reply = ForwardReply::Refused(refusal, String::new());
            assert_eq!(ForwardReply::decode(&reply.encode()), Ok(reply));
        }
        assert_eq!(
            ForwardReply::decode(&[9]),
            Err(ForwardDecodeError::Status(9))
        );
        assert_eq!(
            ForwardReply::decode(&[]),
            Err(ForwardDecodeError::Truncated)
        );
        // A long message is cut at the cap, on a character boundary.
        let long = ForwardReply::Refused(ForwardRefusal::DeviceGone, "é".repeat(400)).encode();
        assert!(long.len() <= MAX_REPLY as usize, "{}", long.len());
        assert!(std::str::from_utf8(&long[1..]).is_ok());
    }
}
