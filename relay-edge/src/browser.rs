//! A browser's session: per stream, read the stream-open header, authorize, open a
//! stream to the device, and splice.
//!
//! A session arrives over WebTransport (HTTP/3 on the UDP port, [`serve`]) or, where
//! that cannot work (UDP blocked, a browser without WebTransport), over a WebSocket at
//! [`WEBSOCKET_PATH`] on the HTTP port carrying tunnel's mux ([`crate::ws`]). Both are
//! served by [`serve_session`], generic over the stream halves ([`BrowserConn`]): the
//! same header rules, authorization, limits, refusals, splice and metrics (labelled
//! with the transport).
//!
//! This is a driver: the header's rules (cap, time limit, version) are tunnel's
//! `HeaderReader`, the decision is [`crate::authorize`], the copying is [`crate::splice`].
//! What is here is the I/O between them: gathering the facts and taking the places a
//! grant reserves. A status-event stream is served by `events::serve`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aisa_tunnel::io::{read_header, write_frame};
use aisa_tunnel::mux::driver::MuxConnection;
use aisa_tunnel::proto::{HEADER_TIMEOUT, Refusal};
use aisa_tunnel::{Envelope, ErrorCode, OpenHeader, RelayHeader};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::Claims;
use crate::authorize::{Denied, Destination, Facts, Grant, authenticate, authorize, destination};
use crate::cluster::forward::DeviceAt;
use crate::splice::{self, SpliceRecv, SpliceSend};
use crate::state::{OpenGuard, RelayState};

/// The path of the WebTransport endpoint.
pub const WEBTRANSPORT_PATH: &str = "/wt";

/// The path of the WebSocket endpoint (the browser's TCP path), on the HTTP port.
pub const WEBSOCKET_PATH: &str = "/tunnel/browser";

/// What carries a browser session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserTransport {
    /// WebTransport over HTTP/3 (QUIC) on the UDP port.
    WebTransport,
    /// Tunnel's mux over a WebSocket on the HTTP port.
    WebSocket,
}

impl BrowserTransport {
    /// `webtransport` or `websocket`: the `transport` label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BrowserTransport::WebTransport => "webtransport",
            BrowserTransport::WebSocket => "websocket",
        }
    }
}

/// A browser session's connection, to raise its stream limit and to close it (a
/// revoked token closes every session that used it, [`crate::sessions`]).
#[derive(Clone)]
pub enum SessionConnection {
    /// The QUIC connection under a WebTransport session.
    Quic(quinn::Connection),
    /// A mux connection over a WebSocket.
    Mux(MuxConnection),
}

impl SessionConnection {
    /// Closes the session with `code` and `reason` (a QUIC CONNECTION_CLOSE, a mux GOAWAY).
    pub fn close(&self, code: u32, reason: &str) {
        match self {
            SessionConnection::Quic(conn) => conn.close(code.into(), reason.as_bytes()),
            SessionConnection::Mux(conn) => conn.close(code, reason),
        }
    }

    /// Lets the browser have `max` bidirectional streams open at once.
    fn allow_streams(&self, max: u32) {
        match self {
            SessionConnection::Quic(conn) => conn.set_max_concurrent_bi_streams(max.into()),
            SessionConnection::Mux(conn) => conn.set_max_incoming_streams(max as usize),
        }
    }
}

/// The streams of a browser session, whatever carries them: what [`serve_session`]
/// needs of a transport.
pub trait BrowserConn: Send + Sync + 'static {
    /// The sending half of a stream.
    type Send: SpliceSend + AsyncWrite + Unpin + 'static;
    /// The receiving half of a stream.
    type Recv: SpliceRecv + AsyncRead + Unpin + 'static;
    /// The next stream the browser opens; `None` once the session is over.
    fn accept_bi(&self) -> impl Future<Output = Option<(Self::Send, Self::Recv)>> + Send;
}

impl BrowserConn for wtransport::Connection {
    type Send = wtransport::SendStream;
    type Recv = wtransport::RecvStream;
    async fn accept_bi(&self) -> Option<(Self::Send, Self::Recv)> {
        match wtransport::Connection::accept_bi(self).await {
            Ok(pair) => Some(pair),
            Err(err) => {
                debug!(%err, "session ended");
                None
            }
        }
    }
}

impl BrowserConn for MuxConnection {
    type Send = aisa_tunnel::mux::driver::SendStream;
    type Recv = aisa_tunnel::mux::driver::RecvStream;
    async fn accept_bi(&self) -> Option<(Self::Send, Self::Recv)> {
        let pair = MuxConnection::accept_bi(self).await;
        if pair.is_none() {
            debug!(closed = ?self.close_reason(), "session ended");
        }
        pair
    }
}

/// Streams a browser may have open at once on its session, once one of its streams has
/// authenticated.
pub const BROWSER_STREAMS: u32 = 256;

/// Bidirectional streams a connection may have open before any of its streams has
/// authenticated: the WebTransport session's own stream and a few whose headers are
/// being read. Together with the header cap ([`aisa_tunnel::MAX_HEADER_LEN`]) and the
/// receive windows this bounds what an unauthenticated peer can make the relay hold.
pub const PRE_AUTH_STREAMS: u32 = 8;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// One browser session, shared by its streams.
struct Session {
    id: u64,
    transport: BrowserTransport,
    connection: SessionConnection,
    /// Set once a stream of this session has presented a valid token.
    authenticated: AtomicBool,
    /// The last token a stream of this session presented that verified, with its
    /// claims: the session's next streams with the same token skip the signature check
    /// until the token expires. (Revocation is still checked on every stream, against
    /// the user's generation; see [`TokenCache`].)
    verified: TokenCache,
}

/// One verified access token per session. A session normally uses one token at a time
/// (until it is refreshed); a different token replaces the cached one.
#[derive(Default)]
struct TokenCache(std::sync::Mutex<Option<Arc<(String, Claims)>>>);

impl TokenCache {
    /// The claims of `token` if it is the cached one and has not expired at `now_secs`.
    fn get(&self, token: &str, now_secs: u64) -> Option<Claims> {
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        (cached.0 == token && cached.1.exp > now_secs).then(|| cached.1.clone())
    }

    /// Remembers a token that verified.
    fn put(&self, token: &str, claims: &Claims) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new((token.to_owned(), claims.clone())));
    }
}

impl Session {
    /// Called when a stream authenticated: the first time, the session gets room for
    /// [`BROWSER_STREAMS`] streams.
    fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::Relaxed) {
            self.connection.allow_streams(BROWSER_STREAMS);
        }
    }
}

/// Serves one WebTransport session until it ends.
pub async fn serve(state: Arc<RelayState>, request: wtransport::endpoint::SessionRequest) {
    if request.path() != WEBTRANSPORT_PATH {
        debug!(path = request.path(), "unknown WebTransport path");
        request.not_found().await;
        return;
    }
    let remote = request.remote_address();
    let wt = match request.accept().await {
        Ok(s) => s,
        Err(err) => {
            debug!(%err, %remote, "session not established");
            return;
        }
    };
    let connection = SessionConnection::Quic(wt.quic_connection().clone());
    serve_session(
        state,
        BrowserTransport::WebTransport,
        remote,
        connection,
        wt,
    )
    .await;
}

/// Serves one browser session, over whichever transport, until it ends: each stream
/// the browser opens is admitted (or refused) and spliced by the same code.
pub async fn serve_session<C: BrowserConn>(
    state: Arc<RelayState>,
    transport: BrowserTransport,
    remote: std::net::SocketAddr,
    connection: SessionConnection,
    conn: C,
) {
    let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("browser", session_id, %remote, transport = transport.as_str());
    async move {
        let session = Arc::new(Session {
            id: session_id,
            transport,
            connection,
            authenticated: AtomicBool::new(false),
            verified: TokenCache::default(),
        });
        metrics::counter!("aisa_relay_browser_sessions_total", "transport" => transport.as_str())
            .increment(1);
        let _open = OpenGuard::open(&state.traffic.browser_sessions);
        state.sessions.opened(session_id, session.connection.clone());
        let _registered = Registered(&state.sessions, session_id);
        let mut streams = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = conn.accept_bi() => match accepted {
                    Some((send, recv)) => {
                        streams.spawn(serve_stream(state.clone(), session.clone(), send, recv).in_current_span());
                    }
                    None => break,
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
            }
        }
        // Let every stream end on its own: with the session gone their reads and writes
        // fail at once, and the splice passes a reset on to the desktop.
        while streams.join_next().await.is_some() {}
    }
    .instrument(span)
    .await
}

/// Keeps a session in [`crate::sessions::Sessions`] until dropped.
struct Registered<'a>(&'a crate::sessions::Sessions, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.closed(self.1);
    }
}

/// Why a stream was refused: the protocol's stream rules (its header), or the relay's
/// authorization.
#[derive(Debug, thiserror::Error)]
enum StreamRefused {
    #[error(transparent)]
    Header(#[from] Refusal),
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The device is on another relay node and the stream could not be carried there.
    #[error(transparent)]
    Forward(#[from] crate::cluster::forward::ForwardError),
}

impl StreamRefused {
    /// The ERROR code the browser gets.
    fn code(&self) -> ErrorCode {
        match self {
            StreamRefused::Header(refused) => refused.code(),
            StreamRefused::Denied(denied) => denied.code(),
            StreamRefused::Forward(forward) => forward.code(),
        }
    }

    /// The `aisa_refusals_total` label.
    fn reason(&self) -> &'static str {
        match self {
            StreamRefused::Header(refused) => refused.reason(),
            StreamRefused::Denied(denied) => denied.reason(),
            StreamRefused::Forward(forward) => forward.reason(),
        }
    }
}

/// Writes one ERROR for a refused stream (and counts it), then ends the stream.
async fn refuse<W: SpliceSend + AsyncWrite + Unpin>(
    state: &RelayState,
    send: &mut W,
    code: ErrorCode,
    reason: &'static str,
    message: String,
) {
    info!(%code, reason, message, "stream refused");
    metrics::counter!("aisa_relay_errors_total", "code" => code.as_str()).increment(1);
    crate::metrics::refused(reason);
    let err = Envelope::error(0, code, message);
    if write_frame(send, &err.encode(), state.config.max_frame_len)
        .await
        .is_ok()
    {
        send.finish_stream().await;
    }
}

async fn serve_stream<S, R>(state: Arc<RelayState>, session: Arc<Session>, mut send: S, mut recv: R)
where
    S: SpliceSend + AsyncWrite + Unpin,
    R: SpliceRecv + AsyncRead + Unpin,
{
    let stream = match admit(&state, &session, &mut recv).await {
        Ok(Admitted::Device(stream)) => stream,
        Ok(Admitted::StatusEvents {
            user_id,
            slot,
            version,
        }) => {
            crate::events::serve(&state, &user_id, version, send, recv).await;
            drop(slot);
            return;
        }
        Err(refused) => {
            refuse(
                &state,
                &mut send,
                refused.code(),
                refused.reason(),
                refused.to_string(),
            )
            .await;
            recv.stop_stream(0);
            return;
        }
    };
    let DeviceStream {
        to,
        header,
        slot: _slot,
        counted_day,
    } = stream;
    let uncount = || async {
        if let Some(day) = &counted_day {
            state.actions.uncount(&header.user_id, day);
        }
    };
    let connection = match to {
        DeviceAt::Here(connection) => connection,
        // On another node: the stream is carried there, and that node opens the
        // desktop's stream and writes the header; from here on it is spliced the same.
        DeviceAt::Peer {
            device_id,
            placement,
        } => {
            match crate::cluster::forward::open_to(&state, &device_id, &placement, &header).await {
                Ok(pair) => {
                    return splice_to_device(&state, &session, &header, (recv, send), pair).await;
                }
                Err(refused) => {
                    uncount().await;
                    let refused = StreamRefused::from(refused);
                    let (code, reason) = (refused.code(), refused.reason());
                    refuse(&state, &mut send, code, reason, refused.to_string()).await;
                    recv.stop_stream(0);
                    return;
                }
            }
        }
    };
    let (mut d_send, d_recv) = match connection.open_bi().await {
        Ok(pair) => pair,
        Err(err) => {
            let lost = Denied::DeviceConnectionLost(err.to_string());
            info!(%err, reason = lost.reason(), "stream refused: the device connection is gone");
            crate::metrics::refused(lost.reason());
            uncount().await;
            let err = Envelope::error(0, lost.code(), lost.to_string());
            let _ = write_frame(&mut send, &err.encode(), state.config.max_frame_len).await;
            send.finish_stream().await;
            return;
        }
    };
    if write_frame(&mut d_send, &header.encode(), state.config.max_frame_len)
        .await
        .is_err()
    {
        uncount().await;
        send.reset_stream(splice::PEER_GONE);
        return;
    }
    splice_to_device(&state, &session, &header, (recv, send), (d_send, d_recv)).await;
}

/// Splices a granted browser stream to the device's stream (on this node's desktop
/// connection, or forwarded to the node holding it) until both directions end.
async fn splice_to_device<S: SpliceSend, R: SpliceRecv, DS: SpliceSend, DR: SpliceRecv>(
    state: &RelayState,
    session: &Session,
    header: &RelayHeader,
    (recv, send): (R, S),
    (d_send, d_recv): (DS, DR),
) {
    let kind = match header.kind {
        aisa_tunnel::StreamKind::Action => "action",
        aisa_tunnel::StreamKind::Control => "control",
    };
    metrics::counter!(
        "aisa_relay_streams_total",
        "kind" => kind,
        "transport" => session.transport.as_str()
    )
    .increment(1);
    let _open = OpenGuard::open(&state.traffic.open_streams);
    let observer = state.traffic.splice_observer();
    let ends = splice::splice(
        (recv, send),
        (d_recv, d_send),
        &state.traffic.bytes_spliced,
        observer.as_deref(),
    )
    .await;
    debug!(?ends, "stream spliced to the end");
}

/// An authorized stream, with the places it holds.
enum Admitted {
    /// To a device, spliced.
    Device(DeviceStream),
    /// The user's device-status events, served by the relay itself.
    StatusEvents {
        /// The authenticated user.
        user_id: String,
        /// Counts against the user's event-stream limit while the stream is open.
        slot: crate::limits::Slot<String>,
        /// The protocol version the browser announced (which messages it knows).
        version: aisa_tunnel::Version,
    },
}

/// A stream granted to a device: the device's connection, the header it gets, and what
/// the stream holds while it lives.
struct DeviceStream {
    /// Where the device is connected.
    to: DeviceAt,
    header: RelayHeader,
    /// Counts against the user's concurrent-stream limit while the stream is open.
    slot: crate::limits::StreamSlot,
    /// The day an action was counted on, to take it back if the stream never reaches
    /// the device.
    counted_day: Option<String>,
}

/// Reads the stream-open header, gathers the facts [`authorize`] needs, asks it, and
/// takes the places the grant reserves. Only the I/O is here; the decision is
/// [`crate::authorize`]'s.
async fn admit<R: AsyncRead + Unpin>(
    state: &RelayState,
    session: &Session,
    recv: &mut R,
) -> Result<Admitted, StreamRefused> {
    // The header's own small cap and time limit (tunnel's `HeaderReader`): an announced
    // length over the cap is refused as soon as its four bytes are here, and nothing
    // past the header is read (the rest is spliced).
    let (open, version) = read_header::<OpenHeader, _>(recv, HEADER_TIMEOUT).await?;
    let internal = |err: crate::store::StoreError| {
        warn!(%err, "store lookup failed");
        Denied::Internal
    };
    // A token this session presented before is not verified again (its claims are
    // kept until it expires); the facts come from memory (`crate::facts`), and the
    // store is read only on a miss.
    let (token, fresh) = match session.verified.get(&open.token, crate::auth::now_secs()) {
        Some(claims) => (Ok(claims), false),
        None => (
            state
                .accounts
                .tokens
                .verify(&open.token)
                .map_err(|err| err.to_string()),
            true,
        ),
    };
    let mut facts = Facts::new(
        state.is_draining(),
        token,
        state.config.max_event_streams_per_user,
    );
    if let Ok(claims) = &facts.token {
        facts.user = state
            .store
            .cached_user(&claims.sub)
            .await
            .map_err(internal)?;
    }
    let who = authenticate(&facts)?;
    if fresh {
        // Registered before it is cached: every token the cache skips is one whose
        // user's sessions a revocation closes.
        session.authenticated();
        state
            .sessions
            .authenticated(session.id, &who.user_id, who.generation);
        if let Ok(claims) = &facts.token {
            session.verified.put(&open.token, claims);
        }
    }
    let mut online = None;
    let mut remote = Ok(None);
    match destination(&open) {
        Destination::StatusEvents => {
            facts.open_event_streams = state.limits.event_streams.open_for(&who.user_id);
        }
        Destination::Device(device_id) => {
            facts.device = state
                .store
                .cached_device(device_id)
                .await
                .map_err(internal)?;
            online = state.devices.registry.get(device_id);
            if online.is_none() {
                // Connected to another node of the cluster, perhaps.
                remote = crate::cluster::forward::locate_elsewhere(state, device_id).await;
            }
            facts.device_online = online.is_some() || matches!(remote, Ok(Some(_)));
            // The plan matters only for a device that is online to take the stream.
            if facts.device_online {
                facts.plan = state
                    .store
                    .cached_plan(&who.plan_id)
                    .await
                    .map_err(internal)?;
            }
            facts.open_streams = state.limits.streams_per_user.open_for(&who.user_id);
        }
    }
    let grant = authorize(&open, session.id, &facts).map_err(|denied| match (denied, &remote) {
        // Offline as far as this node can tell, because the cluster's directory is down.
        (Denied::DeviceOffline { .. }, Err(unavailable)) => {
            StreamRefused::from(unavailable.clone())
        }
        (denied, _) => denied.into(),
    })?;
    match &grant {
        Grant::StatusEvents {
            user_id,
            max_streams,
        } => {
            let slot = state
                .limits
                .event_streams
                .try_open(user_id, *max_streams as i64)
                .ok_or_else(|| grant.refuse_streams())?;
            Ok(Admitted::StatusEvents {
                user_id: user_id.clone(),
                slot,
                version,
            })
        }
        Grant::Device {
            device_id,
            header,
            plan,
            max_streams,
            max_actions_per_day,
        } => {
            let to = match (online, remote) {
                (Some(online), _) => DeviceAt::Here(online.connection),
                (None, Ok(Some(placement))) => DeviceAt::Peer {
                    device_id: device_id.clone(),
                    placement,
                },
                _ => return Err(Denied::Internal.into()),
            };
            // In memory, on a single node and in a cluster (there against the totals
            // every node writes to Redis in batches; no round trip once this node has
            // the user's): `crate::limits::take_stream_places`.
            use crate::limits::PlacesRefused;
            let crate::limits::StreamPlaces { slot, counted_day } =
                crate::limits::take_stream_places(
                    state,
                    &header.user_id,
                    *max_streams,
                    *max_actions_per_day,
                )
                .await
                .map_err(|refused| -> StreamRefused {
                    match refused {
                        PlacesRefused::Streams => grant.refuse_streams().into(),
                        PlacesRefused::Actions => Denied::PlanActions {
                            plan: plan.clone(),
                            max: max_actions_per_day.unwrap_or(0),
                        }
                        .into(),
                        PlacesRefused::Store(err) => internal(err).into(),
                    }
                })?;
            Ok(Admitted::Device(DeviceStream {
                to,
                header: header.clone(),
                slot,
                counted_day,
            }))
        }
    }
}
