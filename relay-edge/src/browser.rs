//! A browser's WebTransport session: per stream, read the stream-open header, authorize,
//! open a stream to the device, and splice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aisa_tunnel::io::{ReadError, read_frame, write_frame};
use aisa_tunnel::{
    DecodeError, Envelope, ErrorCode, FrameError, MAX_HEADER_LEN, OpenHeader, RelayHeader,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::server::Shared;
use crate::splice;

/// The path of the WebTransport endpoint.
pub const WEBTRANSPORT_PATH: &str = "/wt";

/// Streams a browser may have open at once on its session, once one of its streams has
/// authenticated.
pub const BROWSER_STREAMS: u32 = 256;

/// Bidirectional streams a connection may have open before any of its streams has
/// authenticated: the WebTransport session's own stream and a few whose headers are
/// being read. Together with the header cap ([`aisa_tunnel::MAX_HEADER_LEN`]) and the
/// receive windows this bounds what an unauthenticated peer can make the relay hold.
pub const PRE_AUTH_STREAMS: u32 = 8;

/// How long a browser has to send a stream's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// One browser session, shared by its streams.
struct Session {
    id: u64,
    connection: quinn::Connection,
    /// Set once a stream of this session has presented a valid token.
    authenticated: AtomicBool,
}

impl Session {
    /// Called when a stream authenticated: the first time, the session gets room for
    /// [`BROWSER_STREAMS`] streams.
    fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::Relaxed) {
            self.connection
                .set_max_concurrent_bi_streams(BROWSER_STREAMS.into());
        }
    }
}

/// Serves one WebTransport session until it ends.
pub async fn serve(shared: Arc<Shared>, request: wtransport::endpoint::SessionRequest) {
    if request.path() != WEBTRANSPORT_PATH {
        debug!(path = request.path(), "unknown WebTransport path");
        request.not_found().await;
        return;
    }
    let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("browser", session_id, remote = %request.remote_address());
    async move {
        let wt = match request.accept().await {
            Ok(s) => s,
            Err(err) => {
                debug!(%err, "session not established");
                return;
            }
        };
        let session = Arc::new(Session {
            id: session_id,
            connection: wt.quic_connection().clone(),
            authenticated: AtomicBool::new(false),
        });
        let _open = crate::server::Gauge::up(&shared.browser_sessions);
        shared.sessions.opened(session_id, session.connection.clone());
        let _registered = Registered(&shared.sessions, session_id);
        let mut streams = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = wt.accept_bi() => match accepted {
                    Ok((send, recv)) => {
                        streams.spawn(serve_stream(shared.clone(), session.clone(), send, recv).in_current_span());
                    }
                    Err(err) => {
                        debug!(%err, "session ended");
                        break;
                    }
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

/// Why a stream was refused: the ERROR the browser gets, and the metric's reason.
struct Refusal {
    code: ErrorCode,
    /// The `aisa_refusals_total` label.
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            reason,
            message: message.into(),
        }
    }
}

async fn serve_stream(
    shared: Arc<Shared>,
    session: Arc<Session>,
    mut send: wtransport::SendStream,
    mut recv: wtransport::RecvStream,
) {
    let target = match authorize(&shared, &session, &mut recv).await {
        Ok(Route::Device(target)) => target,
        Ok(Route::Events { user_id, slot }) => {
            serve_events(&shared, &user_id, send, recv).await;
            drop(slot);
            return;
        }
        Err(Refusal {
            code,
            reason,
            message,
        }) => {
            info!(%code, reason, message, "stream refused");
            metrics::counter!("relay_errors_total", "code" => code.as_str()).increment(1);
            crate::metrics::refused(reason);
            let err = Envelope::error(0, code, message);
            if write_frame(&mut send, &err.encode(), shared.config.max_frame_len)
                .await
                .is_ok()
            {
                let _ = send.finish().await;
            }
            recv.quic_stream_mut().stop(0u32.into()).ok();
            return;
        }
    };
    let Target {
        connection,
        header,
        slot: _slot,
        counted_day,
    } = target;
    let uncount = || async {
        if let Some(day) = &counted_day
            && let Err(err) = shared.store.uncount_action(&header.user_id, day).await
        {
            warn!(%err, "could not take back an action that never ran");
        }
    };
    let (mut d_send, d_recv) = match connection.open_bi().await {
        Ok(pair) => pair,
        Err(err) => {
            info!(%err, reason = "device_offline", "stream refused: the device connection is gone");
            crate::metrics::refused("device_offline");
            uncount().await;
            let err = Envelope::error(
                0,
                ErrorCode::DeviceOffline,
                format!("device connection lost: {err}"),
            );
            let _ = write_frame(&mut send, &err.encode(), shared.config.max_frame_len).await;
            let _ = send.finish().await;
            return;
        }
    };
    if write_frame(&mut d_send, &header.encode(), shared.config.max_frame_len)
        .await
        .is_err()
    {
        uncount().await;
        send.reset(splice::PEER_GONE.into()).ok();
        return;
    }
    let kind = match header.kind {
        aisa_tunnel::StreamKind::Action => "action",
        aisa_tunnel::StreamKind::Control => "control",
    };
    metrics::counter!("relay_streams_total", "kind" => kind).increment(1);
    let _open = crate::server::Gauge::up(&shared.open_streams);
    let ends = splice::splice((recv, send), (d_recv, d_send), &shared.bytes_spliced).await;
    debug!(?ends, "stream spliced to the end");
}

/// Where an authorized stream goes.
enum Route {
    /// To a device, spliced.
    Device(Target),
    /// The user's device-status events, served by the relay itself.
    Events {
        /// The authenticated user.
        user_id: String,
        /// Counts against the user's event-stream limit while the stream is open.
        slot: crate::limits::Slot<String>,
    },
}

struct Target {
    connection: quinn::Connection,
    header: RelayHeader,
    /// Counts against the user's concurrent-stream limit while the stream is open.
    slot: crate::limits::StreamSlot,
    /// The day an action was counted on, to take it back if the stream never reaches
    /// the device.
    counted_day: Option<String>,
}

/// Reads the stream-open header and decides whether the stream may go to its device
/// (or, for a control stream with no device, to the user's status events).
async fn authorize(
    shared: &Shared,
    session: &Session,
    recv: &mut wtransport::RecvStream,
) -> Result<Route, Refusal> {
    let malformed =
        |reason, message: String| Refusal::new(ErrorCode::MalformedFrame, reason, message);
    // The header's own small cap: an announced length over it is refused as soon as
    // its four bytes are here, before anything is read or allocated for the body.
    let body = match tokio::time::timeout(HEADER_TIMEOUT, read_frame(recv, MAX_HEADER_LEN)).await {
        Err(_) => {
            return Err(malformed(
                "header_timeout",
                "no stream-open header within 10 s".into(),
            ));
        }
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => {
            return Err(malformed(
                "header_missing",
                "stream ended before its header".into(),
            ));
        }
        Ok(Err(ReadError::Frame(err @ FrameError::TooLarge { .. }))) => {
            return Err(malformed(
                "header_too_large",
                format!("stream-open header: {err}"),
            ));
        }
        Ok(Err(ReadError::Frame(err))) => return Err(malformed("header_missing", err.to_string())),
        Ok(Err(ReadError::Io(err))) => {
            return Err(Refusal::new(
                ErrorCode::PeerGone,
                "peer_gone",
                err.to_string(),
            ));
        }
    };
    if shared.draining.load(Ordering::Relaxed) {
        return Err(Refusal::new(
            ErrorCode::PeerGone,
            "draining",
            "the relay is shutting down; reconnect and try again",
        ));
    }
    let (open, _version) = OpenHeader::decode(&body).map_err(|err| match err {
        DecodeError::UnsupportedVersion { .. } => Refusal::new(
            ErrorCode::UnsupportedVersion,
            "unsupported_version",
            err.to_string(),
        ),
        _ => malformed("invalid_header", err.to_string()),
    })?;
    let claims = shared.tokens.verify(&open.token).map_err(|err| {
        Refusal::new(
            ErrorCode::Unauthenticated,
            "unauthenticated",
            err.to_string(),
        )
    })?;
    let internal = |err: crate::store::StoreError| {
        warn!(%err, "store lookup failed");
        Refusal::new(
            ErrorCode::Internal,
            "internal",
            "the relay could not check the request",
        )
    };
    let user = match shared.store.user(&claims.sub).await.map_err(internal)? {
        Some(user) if !user.disabled => user,
        _ => {
            return Err(Refusal::new(
                ErrorCode::Unauthenticated,
                "unauthenticated",
                "the account is disabled or gone",
            ));
        }
    };
    if claims.generation < user.token_generation {
        return Err(Refusal::new(
            ErrorCode::Unauthenticated,
            "token_revoked",
            "this access token was revoked (signed out everywhere); sign in again",
        ));
    }
    session.authenticated();
    shared
        .sessions
        .authenticated(session.id, &user.id, claims.generation);
    if open.kind == aisa_tunnel::StreamKind::Control && open.device_id.is_empty() {
        let slot = shared
            .event_streams
            .try_open(&user.id, shared.config.max_event_streams_per_user as i64)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::LimitExceeded,
                    "event_streams_per_user",
                    format!(
                        "at most {} status-event streams may be open at once per account; close one first",
                        shared.config.max_event_streams_per_user
                    ),
                )
            })?;
        return Ok(Route::Events {
            user_id: user.id,
            slot,
        });
    }
    let device = match shared
        .store
        .device(&open.device_id)
        .await
        .map_err(internal)?
    {
        Some(device) if !device.revoked => device,
        _ => {
            return Err(Refusal::new(
                ErrorCode::UnknownDevice,
                "unknown_device",
                format!("no device {:?}", open.device_id),
            ));
        }
    };
    if device.user_id != user.id {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "forbidden",
            format!("device {:?} belongs to another account", open.device_id),
        ));
    }
    let Some(online) = shared.registry.get(&device.id) else {
        return Err(Refusal::new(
            ErrorCode::DeviceOffline,
            "device_offline",
            format!("device {:?} ({}) is offline", device.name, device.id),
        ));
    };
    let plan = shared
        .store
        .plan(&user.plan_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::Internal,
                "internal",
                format!("unknown plan {:?}", user.plan_id),
            )
        })?;
    let slot = shared
        .streams_per_user
        .try_open(&user.id, plan.max_concurrent_streams)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::LimitExceeded,
                "plan_streams",
                format!(
                    "plan limit: the {} plan allows {} streams open at once",
                    plan.name, plan.max_concurrent_streams
                ),
            )
        })?;
    // Only Action streams count as actions. Control streams (GET_STATUS, INSTALL_APP,
    // UNINSTALL_APP, pairing) do not; the desktop refuses an EXECUTE_ACTION on them.
    let mut counted_day = None;
    if open.kind == aisa_tunnel::StreamKind::Action {
        let today = crate::auth::today_utc();
        if !shared
            .store
            .try_count_action(&user.id, &today, plan.max_actions_per_day)
            .await
            .map_err(internal)?
        {
            return Err(Refusal::new(
                ErrorCode::LimitExceeded,
                "plan_actions",
                format!(
                    "plan limit: the {} plan allows {} actions per day; the count resets at 00:00 UTC",
                    plan.name, plan.max_actions_per_day
                ),
            ));
        }
        counted_day = Some(today);
    }
    Ok(Route::Device(Target {
        slot,
        counted_day,
        connection: online.connection,
        header: RelayHeader {
            user_id: claims.sub,
            session_id: session.id,
            kind: open.kind,
            e2e: open.e2e,
        },
    }))
}

/// Sends a DEVICE_STATUS per device of the user, then one per change, until either side
/// ends the stream or the browser falls too far behind.
async fn serve_events(
    shared: &Shared,
    user_id: &str,
    mut send: wtransport::SendStream,
    mut recv: wtransport::RecvStream,
) {
    let max = shared.config.max_frame_len;
    // Subscribe before the snapshot, so that no change falls between the two.
    let mut events = shared.events.subscribe(user_id);
    let devices = match shared.store.devices_for_user(user_id).await {
        Ok(devices) => devices,
        Err(err) => {
            warn!(%err, "device list failed");
            let err = Envelope::error(0, ErrorCode::Internal, "the relay could not list devices");
            let _ = write_frame(&mut send, &err.encode(), max).await;
            let _ = send.finish().await;
            return;
        }
    };
    for device in devices {
        let online = shared.registry.get(&device.id).is_some();
        let status =
            crate::events::device_status(&device.id, online, device.node_version.as_deref());
        if write_frame(&mut send, &status.encode(), max).await.is_err() {
            return;
        }
    }
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if write_frame(&mut send, &event.encode(), max).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            read = recv.read(&mut scratch) => match read {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            },
        }
    }
    let _ = send.finish().await;
}
