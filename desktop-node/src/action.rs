//! One stream the relay opened on a browser's behalf: read the relay header and the
//! request, run it, answer on the same stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_miniapp::AppId;
use aisa_tunnel::proto::{Refusal, ServeEvent, ServeStream};
use aisa_tunnel::{Body, Envelope, ErrorCode, RelayHeader};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::node::NodeContext;
use crate::sandbox::{ActionContext, ActionError};

/// Output chunks buffered between the sandbox and the stream.
const CHUNK_QUEUE: usize = 16;
/// The most text one STREAM_CHUNK carries: a larger emit is split (at character
/// boundaries) into several chunks, so output never meets the frame limit, sealed or not.
pub const MAX_CHUNK_TEXT: usize = 64 << 10;

/// Serves one stream to its end.
pub async fn serve_stream(
    ctx: Arc<NodeContext>,
    send: crate::node::SendStream,
    mut recv: crate::node::RecvStream,
) {
    let max = aisa_tunnel::MAX_FRAME_LEN;
    let mut send = ReplyStream {
        inner: send,
        ended: false,
        sealer: None,
        buf: Vec::new(),
    };
    let request = async {
        let (header, request) = read_request(&mut recv).await.map_err(Refused::Protocol)?;
        // End-to-end encrypted streams (crate::e2e): the request is sealed, the answer
        // will be too.
        let (request, sealer, paired) = match (&header.e2e, ctx.e2e()) {
            (Some(e2e_header), Some(state)) => {
                let opened = state
                    .open(header.kind, e2e_header, &request)
                    .map_err(Refused::Sealed)?;
                info!(browser = %opened.browser.id, paired = opened.paired, "end-to-end encrypted stream");
                (opened.request, Some(opened.sealer), opened.paired)
            }
            (Some(_), None) => return Err(Refused::NoEncryption),
            (None, _) => (request, None, false),
        };
        let envelope = if paired {
            Envelope::new(
                0,
                Body::StreamEnd {
                    chunks: 0,
                    elapsed_ms: 0,
                },
            )
        } else {
            Envelope::decode(&request)
                .map_err(|e| Refused::Protocol(Refusal::MalformedMessage(e)))?
        };
        // `[e2e] required`: every request must be sealed, status, installs and
        // uninstalls included (the relay must not learn or change which apps there are).
        let required = ctx.e2e().is_some_and(|state| state.required);
        if required && sealer.is_none() {
            return Err(Refused::EncryptionRequired);
        }
        Ok::<_, Refused>((header, envelope, sealer, paired))
    };
    let (header, envelope) = match request.await {
        Ok((header, envelope, sealer, paired)) => {
            send.sealer = sealer;
            if let Err(refusal) = ServeStream::check_kind(header.kind, &envelope.body, paired) {
                info!(reason = refusal.reason(), %refusal, "request refused");
                finish_with(&mut send, refusal.to_envelope(envelope.request_id)).await;
                return;
            }
            if paired {
                // The pairing is done; confirm it, sealed, and end.
                finish_with(&mut send, envelope).await;
                return;
            }
            (header, envelope)
        }
        Err(refused) => {
            info!(reason = refused.reason(), %refused, "request refused");
            finish_with(
                &mut send,
                Envelope::error(0, refused.code(), refused.to_string()),
            )
            .await;
            return;
        }
    };
    let accepted = Instant::now();
    let span = info_span!("stream", user_id = %header.user_id, session_id = header.session_id, request_id = envelope.request_id);
    async move {
        let id = envelope.request_id;
        let reply = match envelope.body {
            Body::ExecuteAction {
                app_id,
                action,
                payload,
                model,
            } => {
                let app_id = match AppId::parse(&app_id) {
                    Ok(app_id) => app_id,
                    Err(err) => return refuse_id(&mut send, id, err).await,
                };
                let request = Request {
                    id,
                    browser: format!("{}/{}", header.user_id, header.session_id),
                    accepted,
                };
                let run = Run {
                    app_id: &app_id,
                    action: &action,
                    payload: &payload,
                    model: model.as_deref(),
                };
                execute(&ctx, &request, run, &mut send, &mut recv).await;
                return;
            }
            Body::GetStatus => ctx.status(id),
            Body::InstallApp { app_id, version } => {
                let app_id = match AppId::parse(&app_id) {
                    Ok(app_id) => app_id,
                    Err(err) => return refuse_id(&mut send, id, err).await,
                };
                install(ctx.clone(), id, app_id, version, &mut send).await;
                return;
            }
            Body::UninstallApp { app_id } => match AppId::parse(&app_id) {
                Ok(app_id) => uninstall(&ctx, id, &app_id).await,
                Err(err) => return refuse_id(&mut send, id, err).await,
            },
            body @ (Body::HistoryList { .. }
            | Body::HistoryGet { .. }
            | Body::HistoryDelete { .. }) => {
                crate::history::answer(ctx.history().cloned(), id, body).await
            }
            Body::FilesList {
                app_id,
                path,
                offset,
                limit,
            } => crate::files::answer_list(&ctx, id, &app_id, path, offset, limit).await,
            Body::FileUpload { app_id, name, size } => {
                // The chunks follow as control messages, sealed like a CANCEL when the
                // stream is encrypted.
                let mut controls = send
                    .sealer
                    .as_mut()
                    .and_then(crate::e2e::Sealing::take_controls);
                let reply = crate::files::answer_upload(
                    &ctx,
                    id,
                    &app_id,
                    name,
                    size,
                    &mut recv,
                    &mut controls,
                    &mut send,
                )
                .await;
                finish_with(&mut send, reply).await;
                return;
            }
            // `ServeStream::check_kind` lets only requests through.
            other => Refusal::UnexpectedMessage {
                what: other.type_name().to_owned(),
                place: "at the start of a browser stream",
            }
            .to_envelope(id),
        };
        let _ = max;
        finish_with(&mut send, reply).await;
    }
    .instrument(span)
    .await
}

/// Reads the relay header and the request through the protocol's [`ServeStream`]
/// machine: header under the header cap, both within its time limit, and not one byte
/// past the request (CANCELs are read later, by the cancel watcher).
async fn read_request(
    recv: &mut crate::node::RecvStream,
) -> Result<(RelayHeader, Vec<u8>), Refusal> {
    let mut machine = ServeStream::new(Instant::now());
    let mut header = None;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let want = machine.want().min(buf.len());
        let Some(deadline) = machine.deadline() else {
            unreachable!("the request is returned as soon as it is complete")
        };
        let read = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            recv.read(&mut buf[..want]),
        )
        .await;
        let bytes = match read {
            Err(_) => {
                machine.handle_timeout(Instant::now())?;
                continue;
            }
            Ok(Ok(Some(n))) => &buf[..n],
            Ok(Ok(None)) => {
                machine.finish()?;
                continue;
            }
            Ok(Err(err)) => return Err(Refusal::Transport(err.to_string())),
        };
        for event in machine.receive(bytes)? {
            match event {
                ServeEvent::Header(h) => header = Some(h),
                ServeEvent::Request(request) => {
                    let header = header.take().ok_or(Refusal::RequestMissing)?;
                    return Ok((header, request));
                }
                ServeEvent::Frame(_) => {}
            }
        }
    }
}

/// Why a stream was refused before its request ran.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// The stream broke a protocol rule (header, request, time limits).
    #[error(transparent)]
    Protocol(Refusal),
    /// A sealed request that does not open.
    #[error(transparent)]
    Sealed(crate::e2e::E2eRefusal),
    /// A sealed request to a node without end-to-end encryption.
    #[error("this desktop does not serve end-to-end encrypted streams")]
    NoEncryption,
    /// A plain request to a node that requires end-to-end encryption.
    #[error(
        "this desktop accepts only end-to-end encrypted requests: pair this browser (desktop-node pair)"
    )]
    EncryptionRequired,
}

impl Refused {
    /// The ERROR code the browser gets.
    fn code(&self) -> ErrorCode {
        match self {
            Refused::Protocol(refusal) => refusal.code(),
            Refused::Sealed(_) | Refused::EncryptionRequired => ErrorCode::Denied,
            Refused::NoEncryption => ErrorCode::Unsupported,
        }
    }

    /// The log's `reason` field.
    fn reason(&self) -> &'static str {
        match self {
            Refused::Protocol(refusal) => refusal.reason(),
            Refused::Sealed(_) => "e2e_refused",
            Refused::NoEncryption => "e2e_not_served",
            Refused::EncryptionRequired => "e2e_required",
        }
    }
}

/// Answers a request whose app id is not one, with `invalid_payload` and the rule.
async fn refuse_id(send: &mut ReplyStream, request_id: u64, err: aisa_miniapp::AppIdError) {
    info!(reason = "invalid_app_id", %err, "request refused");
    finish_with(
        send,
        Envelope::error(request_id, ErrorCode::InvalidPayload, err.to_string()),
    )
    .await;
}

/// INSTALL_APP: streams the request's progress states as STREAM_CHUNKs (JSON), then
/// STREAM_END once installed, or ERROR (`denied`, `install_failed`).
async fn install(
    ctx: Arc<NodeContext>,
    request_id: u64,
    app_id: AppId,
    version: Option<String>,
    send: &mut ReplyStream,
) {
    let started = Instant::now();
    let (mut states, task) =
        crate::installer::remote::start(ctx, app_id.as_str().to_owned(), version);
    let mut seq = 0u32;
    while let Some(state) = states.recv().await {
        let chunk = Envelope::new(
            request_id,
            Body::StreamChunk {
                seq,
                data: state.to_string(),
            },
        );
        if send.write(&chunk, false).await.is_err() {
            // The browser went away; the request stays open for the person to decide.
            send.reset();
            return;
        }
        seq += 1;
    }
    let elapsed_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    let reply = match task.await {
        Ok(Ok(_version)) => Envelope::new(
            request_id,
            Body::StreamEnd {
                chunks: seq,
                elapsed_ms,
            },
        ),
        Ok(Err(err)) => {
            let code = match err {
                crate::installer::InstallError::Denied(_) => ErrorCode::Denied,
                crate::installer::InstallError::NotFound(_) => ErrorCode::UnknownApp,
                _ => ErrorCode::InstallFailed,
            };
            warn!(%err, "install request failed");
            Envelope::error(request_id, code, err.to_string())
        }
        Err(join) => Envelope::error(request_id, ErrorCode::Internal, join.to_string()),
    };
    finish_with(send, reply).await;
}

/// UNINSTALL_APP: removes every version (the app's data stays, see docs/desktop.md) and
/// answers with the new DEVICE_STATUS.
async fn uninstall(ctx: &Arc<NodeContext>, request_id: u64, app_id: &AppId) -> Envelope {
    let Some(installer) = ctx.installer() else {
        return Envelope::error(
            request_id,
            ErrorCode::Unsupported,
            "this node cannot remove apps",
        );
    };
    match installer.uninstall(app_id) {
        Ok(()) => {
            info!(%app_id, "uninstalled at the browser's request");
            ctx.reload_apps().await;
            ctx.status(request_id)
        }
        Err(crate::installer::InstallError::NotFound(msg)) => {
            Envelope::error(request_id, ErrorCode::UnknownApp, msg)
        }
        Err(err) => Envelope::error(request_id, ErrorCode::InstallFailed, err.to_string()),
    }
}

/// The answering half of a stream. Dropped before its answer is complete (the task
/// aborted because the node is stopping or the connection failed), it resets the stream,
/// so that the browser sees a failure rather than a clean but truncated end.
struct ReplyStream {
    inner: crate::node::SendStream,
    ended: bool,
    /// Seals every answer frame on an end-to-end encrypted stream.
    sealer: Option<crate::e2e::Sealing>,
    /// The frame being written, reused from one frame to the next.
    buf: Vec<u8>,
}

impl ReplyStream {
    /// Writes `envelope` as one frame: its encoding, sealed as one chunk (`last` for the
    /// final one) on an encrypted stream. Sealed, the chunk is encrypted straight into
    /// the reused frame buffer (length prefix, header, data, tag) that goes to the stream
    /// as is: no frame allocated or copied per chunk.
    async fn write(&mut self, envelope: &Envelope, last: bool) -> std::io::Result<()> {
        let plain = envelope.encode();
        self.buf.clear();
        match &mut self.sealer {
            Some(sealer) => sealer
                .seal_chunk_into(&mut self.buf, &plain, last)
                .map_err(std::io::Error::other)?,
            None => {
                aisa_tunnel::frame::encode_frame(&plain, aisa_tunnel::MAX_FRAME_LEN, &mut self.buf)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
            }
        }
        tokio::io::AsyncWriteExt::write_all(&mut self.inner, &self.buf).await
    }

    fn reset(&mut self) {
        self.ended = true;
        let _ = self.inner.reset(crate::node::STREAM_ABANDONED);
    }
}

impl crate::files::ProgressSink for ReplyStream {
    async fn send(&mut self, envelope: &Envelope) -> std::io::Result<()> {
        self.write(envelope, false).await
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        if !self.ended {
            self.reset();
        }
    }
}

/// Writes a last envelope and finishes the stream. If the last frame cannot be made or
/// written, the stream is reset instead: the browser sees a failure, never a clean end
/// that lost the answer.
async fn finish_with(send: &mut ReplyStream, envelope: Envelope) {
    let written = send.write(&envelope, true).await;
    if let Err(err) = written {
        warn!(%err, "the last frame could not be sent; resetting the stream");
        send.reset();
        return;
    }
    send.ended = true;
    let _ = send.inner.finish();
}

/// Who asked for an action, and when the desktop accepted the request.
struct Request {
    /// The request id answers carry.
    id: u64,
    /// The browser session that sent it (`user/session`), for fair shares.
    browser: String,
    /// When the request arrived: the action's time limit counts from here, time spent
    /// waiting for a free slot included.
    accepted: Instant,
}

/// What an EXECUTE_ACTION asks for.
struct Run<'a> {
    /// The app.
    app_id: &'a AppId,
    /// The action's name.
    action: &'a str,
    /// Its JSON input.
    payload: &'a str,
    /// The model the browser chose (since 1.2); `None`: the desktop's default.
    model: Option<&'a str>,
}

/// Runs an action, streaming its output, until it ends, fails, or the browser cancels.
/// It first takes a place in the node's admission ([`crate::scheduler`]): at once, after
/// a wait in the queue, or not at all (`busy`).
async fn execute(
    ctx: &NodeContext,
    request: &Request,
    run: Run<'_>,
    send: &mut ReplyStream,
    recv: &mut crate::node::RecvStream,
) {
    let Run {
        app_id,
        action,
        payload,
        model,
    } = run;
    let request_id = request.id;
    // On an encrypted stream only a sealed CANCEL counts.
    let mut controls = send
        .sealer
        .as_mut()
        .and_then(crate::e2e::Sealing::take_controls);
    let Some(app) = ctx.app(app_id.as_str()).filter(|a| a.manifest.enabled) else {
        let msg = format!("no enabled app {app_id:?} is installed on this device");
        return finish_with(
            send,
            Envelope::error(request_id, ErrorCode::UnknownApp, msg),
        )
        .await;
    };
    if !app.manifest.actions.iter().any(|a| a == action) {
        let msg = format!(
            "{app_id} has no action {action:?}; it has {:?}",
            app.manifest.actions
        );
        return finish_with(
            send,
            Envelope::error(request_id, ErrorCode::UnknownAction, msg),
        )
        .await;
    }
    let raw_payload = payload;
    let payload: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("the payload is not JSON: {e}");
            return finish_with(
                send,
                Envelope::error(request_id, ErrorCode::InvalidPayload, msg),
            )
            .await;
        }
    };
    if let Err(msg) = app.validate_payload(action, &payload) {
        return finish_with(
            send,
            Envelope::error(request_id, ErrorCode::InvalidPayload, msg),
        )
        .await;
    }
    // The model the browser chose (since 1.2), if this desktop offers it.
    let ai = match ctx.ai_for(model) {
        Ok(ai) => ai,
        Err(msg) => {
            info!(reason = "model", %app_id, action, model, "request refused");
            return finish_with(
                send,
                Envelope::error(request_id, ErrorCode::InvalidPayload, msg),
            )
            .await;
        }
    };
    // From here on the request is a run: the history records how it ends.
    let mut log = ctx.history().map(|history| {
        crate::history::RunLog::start(
            history.clone(),
            app_id.as_str(),
            &app.manifest.name,
            action,
            raw_payload,
        )
    });
    let input = app.action_input(action, &payload);
    let action_ctx = match action_context(ctx, &app, ai) {
        Ok(action_ctx) => action_ctx,
        Err(err) => {
            let msg = format!("{app_id}: an approved permission cannot be used here: {err}");
            let reply = Envelope::error(request_id, ErrorCode::AppFailed, msg);
            return finish_logged(send, reply, log).await;
        }
    };
    let limit = action_ctx.limits.timeout;
    let deadline = request.accepted + limit;

    // A place to run: now, after a wait, or `busy`.
    let mut ticket = match ctx.admission().request(&request.browser, app_id.as_str()) {
        Ok(ticket) => ticket,
        Err(busy) => {
            info!(reason = "busy", %app_id, action, %busy, "request refused");
            return finish_with(
                send,
                Envelope::error(request_id, ErrorCode::Busy, busy.to_string()),
            )
            .await;
        }
    };
    if ticket.was_queued() {
        debug!(%app_id, action, "action queued");
        let waited = tokio::select! {
            () = ticket.ready() => None,
            cancel = watch_for_cancel(recv, &mut controls) => {
                info!(%app_id, action, reason = cancel, "queued action cancelled");
                Some(Envelope::error(request_id, ErrorCode::Cancelled, "the action was cancelled while it waited for a free slot"))
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let msg = format!(
                    "the action ran out of time after {} waiting for a free slot: this desktop is busy; try again in a few seconds",
                    crate::sandbox::seconds(limit)
                );
                Some(Envelope::error(request_id, ErrorCode::AppFailed, msg))
            }
        };
        if let Some(reply) = waited {
            drop(ticket);
            return finish_logged(send, reply, log).await;
        }
    }
    if let Some(log) = &mut log {
        log.restart_clock();
    }
    let started = Instant::now();
    let queued_for = started - request.accepted;

    let (tx, mut rx) = mpsc::channel::<String>(CHUNK_QUEUE);
    let action_ctx = action_ctx.with_deadline(deadline);
    let run = ctx.sandbox.run(&app.module, &action_ctx, &input, tx);
    let forward = async {
        let mut seq = 0u32;
        while let Some(data) = rx.recv().await {
            if let Some(log) = &mut log {
                log.push(&data);
            }
            for piece in split_text(&data, MAX_CHUNK_TEXT) {
                let chunk = Envelope::new(
                    request_id,
                    Body::StreamChunk {
                        seq,
                        data: piece.to_owned(),
                    },
                );
                send.write(&chunk, false).await?;
                seq += 1;
            }
        }
        Ok::<u32, std::io::Error>(seq)
    };
    let outcome = tokio::select! {
        (result, forwarded) = async { tokio::join!(run, forward) } => Some((result, forwarded)),
        cancel = watch_for_cancel(recv, &mut controls) => {
            let elapsed_ms = started.elapsed().as_millis();
            info!(%app_id, action, reason = cancel, elapsed_ms, "action cancelled");
            None
        }
    };
    drop(ticket);
    let elapsed_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    let reply = match outcome {
        None => Envelope::error(request_id, ErrorCode::Cancelled, "the action was cancelled"),
        Some((_, Err(err))) => {
            debug!(%err, "browser stopped reading");
            send.reset();
            if let Some(log) = log {
                let message = "the browser stopped reading the answer".to_owned();
                log.finish_as(
                    crate::history::RunStatus::Cancelled,
                    ErrorCode::Cancelled.as_str().to_owned(),
                    message,
                )
                .await;
            }
            return;
        }
        Some((Ok(()), Ok(chunks))) => {
            info!(%app_id, action, chunks, elapsed_ms, "action finished");
            Envelope::new(request_id, Body::StreamEnd { chunks, elapsed_ms })
        }
        Some((Err(err), Ok(_))) => {
            warn!(%app_id, action, %err, elapsed_ms, "action failed");
            let code = match err {
                ActionError::Ai(_) => ErrorCode::ProviderError,
                _ => ErrorCode::AppFailed,
            };
            let mut message = err.to_string();
            if matches!(err, ActionError::Timeout(_)) && queued_for >= Duration::from_secs(1) {
                message.push_str(&format!(
                    " ({} of it waiting for a free slot)",
                    crate::sandbox::seconds(Duration::from_secs(queued_for.as_secs()))
                ));
            }
            Envelope::error(request_id, code, message)
        }
    };
    finish_logged(send, reply, log).await;
}

/// Records the run in the history (when it is kept), then answers with `reply` as
/// [`finish_with`] does: a browser that asks for the history right after the answer
/// finds the run there.
async fn finish_logged(
    send: &mut ReplyStream,
    reply: Envelope,
    log: Option<crate::history::RunLog>,
) {
    if let Some(log) = log {
        log.finish(&reply).await;
    }
    finish_with(send, reply).await;
}

/// `text` in pieces of at most `max` bytes, each ending on a character boundary.
fn split_text(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    let mut first = true;
    std::iter::from_fn(move || {
        if rest.is_empty() && !std::mem::take(&mut first) {
            return None;
        }
        first = false;
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// The sandbox's view of one action of `app`: its approved permissions resolved into
/// grants (variables such as `$DOCUMENTS` as this machine names them), its data under the
/// node's home, the node's limits and model.
fn action_context(
    ctx: &NodeContext,
    app: &crate::apps::App,
    ai: Arc<dyn crate::ai::AiProvider>,
) -> Result<ActionContext, crate::permissions::PathError> {
    let id = &app.manifest.id;
    let user_dirs = crate::sandbox::user_dirs_from_env();
    let app_data = crate::sandbox::app_dir(&ctx.home, id).join("files");
    let approved = &app.approved;
    let grants = crate::permissions::Grants::resolve(
        approved.ai,
        &approved.read,
        &approved.write,
        &approved.network,
        approved.clipboard,
        &user_dirs,
        &app_data,
    )?;
    Ok(
        ActionContext::new(id.clone(), app.manifest.version.clone(), &ctx.home, ai)
            .with_grants(grants)
            .with_limits(ctx.limits),
    )
}

/// Completes when the browser sends CANCEL or its side of the stream fails. A clean
/// finish of the browser's side is not a cancel: it simply has nothing more to say. On an
/// encrypted stream only a sealed CANCEL counts (`crate::e2e::watch_for_cancel`).
async fn watch_for_cancel(
    recv: &mut crate::node::RecvStream,
    controls: &mut Option<aisa_crypto::e2e::ControlOpener>,
) -> &'static str {
    crate::e2e::watch_for_cancel(recv, controls).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_text_is_split_at_character_boundaries() {
        let text = "aé☃".repeat(10_000); // 60,000 bytes
        let pieces: Vec<&str> = split_text(&text, 1000).collect();
        assert!(pieces.iter().all(|p| p.len() <= 1000 && !p.is_empty()));
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_text("short", 1000).collect::<Vec<_>>(), ["short"]);
        // An empty emit is still one (empty) chunk, as before.
        assert_eq!(split_text("", 1000).collect::<Vec<_>>(), [""]);
    }
}
