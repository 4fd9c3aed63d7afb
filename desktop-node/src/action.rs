//! One stream the relay opened on a browser's behalf: read the relay header and the
//! request, run it, answer on the same stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_tunnel::io::{ReadError, read_frame, write_frame};
use aisa_tunnel::{Body, DecodeError, Envelope, ErrorCode, RelayHeader};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::node::NodeContext;
use crate::sandbox::{ActionContext, ActionError};

/// How long the relay has to send the header and the request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Output chunks buffered between the sandbox and the stream.
const CHUNK_QUEUE: usize = 16;

/// Serves one stream to its end.
pub async fn serve_stream(
    ctx: Arc<NodeContext>,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max = aisa_tunnel::MAX_FRAME_LEN;
    let mut send = ReplyStream {
        inner: send,
        ended: false,
        sealer: None,
    };
    let request = async {
        let header = read_body(&mut recv).await?;
        let (header, _version) = RelayHeader::decode(&header).map_err(decode_error)?;
        let request = read_body(&mut recv).await?;
        // End-to-end encrypted streams (crate::e2e): the request is sealed, the answer
        // will be too.
        let (request, sealer, paired) = match (&header.e2e, ctx.e2e()) {
            (Some(e2e_header), Some(state)) => {
                let opened = state
                    .open(e2e_header, &request)
                    .map_err(|e| (ErrorCode::Denied, e.to_string()))?;
                info!(browser = %opened.browser.id, paired = opened.paired, "end-to-end encrypted stream");
                (opened.request, Some(opened.sealer), opened.paired)
            }
            (Some(_), None) => {
                return Err((
                    ErrorCode::Unsupported,
                    "this desktop does not serve end-to-end encrypted streams".into(),
                ));
            }
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
            Envelope::decode(&request).map_err(decode_error)?
        };
        // `[e2e] required`: actions must be sealed (status and install requests may stay
        // plain: they carry no app payload and no model output).
        let required = ctx.e2e().is_some_and(|state| state.required);
        if required && sealer.is_none() && matches!(envelope.body, Body::ExecuteAction { .. }) {
            return Err((
                ErrorCode::Denied,
                "this desktop accepts only end-to-end encrypted actions: pair this browser (desktop-node pair)".into(),
            ));
        }
        Ok::<_, (ErrorCode, String)>((header, envelope, sealer, paired))
    };
    let (header, envelope) = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok((header, envelope, sealer, paired))) => {
            send.sealer = sealer;
            if paired {
                // The pairing is done; confirm it, sealed, and end.
                finish_with(&mut send, envelope).await;
                return;
            }
            (header, envelope)
        }
        Ok(Err((code, message))) => {
            debug!(%code, message, "request refused");
            finish_with(&mut send, Envelope::error(0, code, message)).await;
            return;
        }
        Err(_) => {
            finish_with(
                &mut send,
                Envelope::error(0, ErrorCode::MalformedFrame, "no request within 10 s"),
            )
            .await;
            return;
        }
    };
    let span = info_span!("stream", user_id = %header.user_id, session_id = header.session_id, request_id = envelope.request_id);
    async move {
        let id = envelope.request_id;
        let reply = match envelope.body {
            Body::ExecuteAction {
                app_id,
                action,
                payload,
            } => {
                execute(&ctx, id, &app_id, &action, &payload, &mut send, &mut recv).await;
                return;
            }
            Body::GetStatus => ctx.status(id),
            Body::InstallApp { app_id, version } => {
                install(ctx.clone(), id, app_id, version, &mut send).await;
                return;
            }
            Body::UninstallApp { app_id } => uninstall(&ctx, id, &app_id).await,
            other => Envelope::error(
                id,
                ErrorCode::Unsupported,
                format!("a browser stream cannot start with {}", type_name(&other)),
            ),
        };
        let _ = max;
        finish_with(&mut send, reply).await;
    }
    .instrument(span)
    .await
}

async fn read_body(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, (ErrorCode, String)> {
    match read_frame(recv, aisa_tunnel::MAX_FRAME_LEN).await {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err((
            ErrorCode::MalformedFrame,
            "stream ended before the request".into(),
        )),
        Err(ReadError::Frame(e)) => Err((ErrorCode::MalformedFrame, e.to_string())),
        Err(ReadError::Io(e)) => Err((ErrorCode::PeerGone, e.to_string())),
    }
}

fn decode_error(err: DecodeError) -> (ErrorCode, String) {
    let code = match err {
        DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::MalformedFrame,
    };
    (code, err.to_string())
}

fn type_name(body: &Body) -> String {
    let debug = format!("{body:?}");
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// INSTALL_APP: streams the request's progress states as STREAM_CHUNKs (JSON), then
/// STREAM_END once installed, or ERROR (`denied`, `install_failed`).
async fn install(
    ctx: Arc<NodeContext>,
    request_id: u64,
    app_id: String,
    version: Option<String>,
    send: &mut ReplyStream,
) {
    let started = Instant::now();
    let (mut states, task) = crate::installer::remote::start(ctx, app_id, version);
    let mut seq = 0u32;
    while let Some(state) = states.recv().await {
        let chunk = Envelope::new(
            request_id,
            Body::StreamChunk {
                seq,
                data: state.to_string(),
            },
        );
        let Ok(body) = send.body(&chunk, false) else {
            send.reset();
            return;
        };
        if write_frame(&mut send.inner, &body, aisa_tunnel::MAX_FRAME_LEN)
            .await
            .is_err()
        {
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

/// UNINSTALL_APP: removes every version and answers with the new DEVICE_STATUS.
async fn uninstall(ctx: &Arc<NodeContext>, request_id: u64, app_id: &str) -> Envelope {
    let Some(installer) = ctx.installer() else {
        return Envelope::error(
            request_id,
            ErrorCode::Unsupported,
            "this node cannot remove apps",
        );
    };
    match installer.uninstall(app_id) {
        Ok(()) => {
            info!(app_id, "uninstalled at the browser's request");
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
    inner: quinn::SendStream,
    ended: bool,
    /// Seals every answer frame on an end-to-end encrypted stream.
    sealer: Option<aisa_crypto::e2e::ResponseSealer>,
}

impl ReplyStream {
    /// The frame body for `envelope`: its encoding, sealed as one chunk (`last` for the
    /// final one) on an encrypted stream.
    fn body(&mut self, envelope: &Envelope, last: bool) -> std::io::Result<Vec<u8>> {
        let plain = envelope.encode();
        match &mut self.sealer {
            Some(sealer) => sealer
                .seal_chunk(&plain, last)
                .map_err(std::io::Error::other),
            None => Ok(plain),
        }
    }

    fn reset(&mut self) {
        self.ended = true;
        let _ = self.inner.reset(crate::node::STREAM_ABANDONED.into());
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        if !self.ended {
            self.reset();
        }
    }
}

/// Writes a last envelope and finishes the stream.
async fn finish_with(send: &mut ReplyStream, envelope: Envelope) {
    if let Ok(body) = send.body(&envelope, true) {
        let _ = write_frame(&mut send.inner, &body, aisa_tunnel::MAX_FRAME_LEN).await;
    }
    send.ended = true;
    let _ = send.inner.finish();
}

/// Runs an action, streaming its output, until it ends, fails, or the browser cancels.
async fn execute(
    ctx: &NodeContext,
    request_id: u64,
    app_id: &str,
    action: &str,
    payload: &str,
    send: &mut ReplyStream,
    recv: &mut quinn::RecvStream,
) {
    let started = Instant::now();
    let Some(app) = ctx.app(app_id).filter(|a| a.manifest.enabled) else {
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
    let input = app.action_input(action, &payload);

    let (tx, mut rx) = mpsc::channel::<String>(CHUNK_QUEUE);
    let action_ctx = match action_context(ctx, &app) {
        Ok(action_ctx) => action_ctx,
        Err(err) => {
            let msg = format!("{app_id}: an approved permission cannot be used here: {err}");
            return finish_with(send, Envelope::error(request_id, ErrorCode::AppFailed, msg)).await;
        }
    };
    let run = ctx.sandbox.run(&app.module, &action_ctx, &input, tx);
    let forward = async {
        let mut seq = 0u32;
        while let Some(data) = rx.recv().await {
            let chunk = Envelope::new(request_id, Body::StreamChunk { seq, data });
            let body = send.body(&chunk, false)?;
            write_frame(&mut send.inner, &body, aisa_tunnel::MAX_FRAME_LEN).await?;
            seq += 1;
        }
        Ok::<u32, std::io::Error>(seq)
    };
    let outcome = tokio::select! {
        (result, forwarded) = async { tokio::join!(run, forward) } => Some((result, forwarded)),
        cancel = watch_for_cancel(recv) => {
            let elapsed_ms = started.elapsed().as_millis();
            info!(app_id, action, reason = cancel, elapsed_ms, "action cancelled");
            None
        }
    };
    let elapsed_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    let reply = match outcome {
        None => Envelope::error(request_id, ErrorCode::Cancelled, "the action was cancelled"),
        Some((_, Err(err))) => {
            debug!(%err, "browser stopped reading");
            send.reset();
            return;
        }
        Some((Ok(()), Ok(chunks))) => {
            info!(app_id, action, chunks, elapsed_ms, "action finished");
            Envelope::new(request_id, Body::StreamEnd { chunks, elapsed_ms })
        }
        Some((Err(err), Ok(_))) => {
            warn!(app_id, action, %err, elapsed_ms, "action failed");
            let code = match err {
                ActionError::Ai(_) => ErrorCode::ProviderError,
                _ => ErrorCode::AppFailed,
            };
            Envelope::error(request_id, code, err.to_string())
        }
    };
    finish_with(send, reply).await;
}

/// The sandbox's view of one action of `app`: its approved permissions resolved into
/// grants (variables such as `$DOCUMENTS` as this machine names them), its data under the
/// node's home, the node's limits and model.
fn action_context(
    ctx: &NodeContext,
    app: &crate::apps::App,
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
    Ok(ActionContext::new(
        id.clone(),
        app.manifest.version.clone(),
        &ctx.home,
        ctx.ai.clone(),
    )
    .with_grants(grants)
    .with_limits(ctx.limits))
}

/// Completes when the browser sends CANCEL or its side of the stream fails. A clean
/// finish of the browser's side is not a cancel: it simply has nothing more to say.
async fn watch_for_cancel(recv: &mut quinn::RecvStream) -> &'static str {
    loop {
        match read_frame(recv, aisa_tunnel::MAX_FRAME_LEN).await {
            Ok(Some(body)) => {
                if let Ok(Envelope {
                    body: Body::Cancel, ..
                }) = Envelope::decode(&body)
                {
                    return "cancel requested";
                }
            }
            Ok(None) => std::future::pending::<()>().await,
            Err(_) => return "the browser went away",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_short() {
        assert_eq!(type_name(&Body::Cancel), "Cancel");
        assert_eq!(type_name(&Body::Ping { nonce: 1 }), "Ping");
    }
}
