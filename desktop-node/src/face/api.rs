//! The face's routes: the page and its script and styles, `/login`, and the JSON API
//! the page calls (`/api/…`). Requests reach these only through [`super::check_request`].
//!
//! | route | does |
//! | --- | --- |
//! | `GET /login?token=T` | trades this launch's token for the session cookie, then 303 to `/` |
//! | `GET /`, `/face.js`, `/face.css` | the page |
//! | `GET /api/status` | connected, relay, transport, running and queued actions, apps, log folder |
//! | `GET /api/pending` | waiting install requests, each with the permission lines the CLI prints |
//! | `POST /api/pending/decide` | `{id, version, sha256, decision}`: approve or deny exactly that bundle |
//! | `GET /api/keys` | the providers with a stored key (never a key, nor a hint of one) |
//! | `POST /api/keys/set`, `/api/keys/remove` | `{provider, key}`, `{provider}` |
//! | `POST /api/pair` | a new one-time pairing link, its QR code (SVG) and fingerprint |
//! | `GET /api/log` | the last lines of the newest log file |
//! | `POST /api/logs/open` | opens the log folder in the file manager |

use std::path::Path;
use std::sync::Arc;

use aisa_node::installer::approvals::{Decision, PendingInstall};
use aisa_node::secrets::Zeroizing;
use aisa_tunnel::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::FaceState;

type Shared = State<Arc<FaceState>>;

/// The routes, with their state.
pub(super) fn router(state: Arc<FaceState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/face.js", get(script))
        .route("/face.css", get(styles))
        .route("/login", get(login))
        .route("/api/status", get(status))
        .route("/api/pending", get(pending))
        .route("/api/pending/decide", post(decide))
        .route("/api/keys", get(keys))
        .route("/api/keys/set", post(set_key))
        .route("/api/keys/remove", post(remove_key))
        .route("/api/pair", post(pair))
        .route("/api/log", get(log_tail))
        .route("/api/logs/open", post(open_logs))
        .with_state(state)
}

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page/index.html"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("page/face.js"),
    )
        .into_response()
}

async fn styles() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("page/face.css"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

async fn login(State(state): Shared, Query(query): Query<LoginQuery>) -> Response {
    match state.guard.check_token(query.token.as_deref()) {
        Ok(()) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, state.guard.set_cookie()),
                (header::LOCATION, "/".to_owned()),
            ],
        )
            .into_response(),
        Err(refusal) => super::refused(refusal),
    }
}

/// A JSON error answer: `{"error": message}`.
fn failed(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn status(State(state): Shared) -> Json<Value> {
    let ctx = &state.ctx;
    let connected = *ctx.online().borrow();
    let transport = (*ctx.transport().borrow()).map(|t| t.as_str());
    let (running, queued) = ctx.admission().load();
    let apps = match ctx.status(0).body {
        Body::DeviceStatus { apps, .. } => apps
            .into_iter()
            .map(|a| json!({ "id": a.id, "version": a.version, "enabled": a.enabled }))
            .collect(),
        _ => Vec::new(),
    };
    Json(json!({
        "device_id": ctx.device_id,
        "node_version": ctx.node_version,
        "relay": state.relay_url,
        "connected": connected,
        "transport": transport,
        "running": running,
        "queued": queued,
        "apps": apps,
        "provider": state.provider,
        "log_dir": state.home.log_dir().display().to_string(),
    }))
}

/// One waiting request as the page shows it.
fn pending_json(request: &PendingInstall) -> Value {
    json!({
        "id": request.id,
        "version": request.version,
        "name": request.name,
        "sha256": request.sha256,
        "short_hash": request.short_hash(),
        "requested_at": request.requested_at,
        "permissions": request.permissions.shown(),
    })
}

async fn pending(State(state): Shared) -> Response {
    let Some(installer) = state.ctx.installer() else {
        return Json(json!({ "pending": [] })).into_response();
    };
    let list: Vec<Value> = installer
        .approvals
        .list()
        .iter()
        .map(pending_json)
        .collect();
    Json(json!({ "pending": list })).into_response()
}

#[derive(Deserialize)]
struct DecideBody {
    id: String,
    version: String,
    /// The full SHA-256 of the bundle the page showed.
    sha256: String,
    decision: Decision,
}

async fn decide(State(state): Shared, Json(body): Json<DecideBody>) -> Response {
    let Some(installer) = state.ctx.installer() else {
        return failed(StatusCode::NOT_FOUND, "this node does not install apps");
    };
    // Exactly the bundle the page showed: its whole hash, not a prefix.
    let request = match installer.approvals.select(
        &body.id,
        Some(&body.version),
        Some(&body.sha256),
    ) {
        Ok(request) if request.sha256 == body.sha256.to_ascii_lowercase() => request,
        Ok(_) | Err(_) => {
            return failed(
                StatusCode::NOT_FOUND,
                format!(
                    "no install request for {}@{} with that bundle is waiting (decided already, or timed out)",
                    body.id, body.version
                ),
            );
        }
    };
    tracing::info!(app = %request.id, version = %request.version, decision = ?body.decision, "install decided on the desktop face");
    match crate::cli::apps::apply_decision(&state.home, &request, body.decision).await {
        Ok(message) => Json(json!({ "message": message })).into_response(),
        Err(err) => failed(StatusCode::CONFLICT, format!("{err:#}")),
    }
}

/// A provider's name as `desktop-node keys` takes it: 1 to 32 of `[a-z0-9-]`.
fn provider_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The answer to a provider name that is not one.
fn bad_provider() -> Response {
    failed(
        StatusCode::BAD_REQUEST,
        "a provider is named with lowercase letters, digits and '-' (openai, anthropic, google, local)",
    )
}

/// Runs a secret-store call off the async threads (keychains block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{err:#}"),
        )),
        Err(err) => Err(failed(StatusCode::INTERNAL_SERVER_ERROR, err)),
    }
}

async fn keys(State(state): Shared) -> Response {
    let home = state.home.clone();
    match blocking(move || crate::cli::keys::provider_keys(&home)).await {
        // The hints stay in the terminal: the page names providers only.
        Ok((backend, rows)) => Json(json!({
            "store": backend.name(),
            "providers": rows.into_iter().map(|(p, _)| p).collect::<Vec<_>>(),
            "in_use": state.provider,
        }))
        .into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct SetKeyBody {
    provider: String,
    key: String,
}

async fn set_key(State(state): Shared, Json(body): Json<SetKeyBody>) -> Response {
    if !provider_ok(&body.provider) {
        return bad_provider();
    }
    let body_key = Zeroizing::new(body.key);
    let key = Zeroizing::new(body_key.trim().to_owned());
    if key.len() > 4096 {
        return failed(StatusCode::BAD_REQUEST, "that key is too long to be one");
    }
    let (home, provider) = (state.home.clone(), body.provider.clone());
    let stored = blocking(move || crate::cli::keys::set_provider_key(&home, &provider, &key)).await;
    match stored {
        Ok(backend) => {
            tracing::info!(provider = %body.provider, store = backend.name(), "provider key stored from the desktop face");
            Json(json!({
                "message": format!(
                    "stored the {} key in the {} store; the node uses it from its next start",
                    body.provider,
                    backend.name()
                )
            }))
            .into_response()
        }
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct ProviderBody {
    provider: String,
}

async fn remove_key(State(state): Shared, Json(body): Json<ProviderBody>) -> Response {
    if !provider_ok(&body.provider) {
        return bad_provider();
    }
    let (home, provider) = (state.home.clone(), body.provider.clone());
    match blocking(move || crate::cli::keys::remove_provider_key(&home, &provider)).await {
        Ok(true) => {
            tracing::info!(provider = %body.provider, "provider key removed from the desktop face");
            Json(json!({ "message": format!("removed the {} key", body.provider) })).into_response()
        }
        Ok(false) => failed(
            StatusCode::NOT_FOUND,
            format!("no key stored for {}", body.provider),
        ),
        Err(response) => response,
    }
}

async fn pair(State(state): Shared) -> Response {
    let home = state.home.clone();
    let pairing = match blocking(move || crate::cli::pair::new_pairing(&home)).await {
        Ok(pairing) => pairing,
        Err(response) => return response,
    };
    let svg = match qrcode::QrCode::new(pairing.link.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
        Err(err) => return failed(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    Json(json!({
        "link": pairing.link,
        "fingerprint": pairing.fingerprint,
        "minutes": pairing.minutes,
        "svg": svg,
    }))
    .into_response()
}

/// The last `lines` lines of the most recently written file in `dir` (its last 64 KiB).
fn tail_of_newest(dir: &Path, lines: usize) -> std::io::Result<(String, Vec<String>)> {
    let newest = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, path)| path);
    let Some(path) = newest else {
        return Ok((String::new(), Vec::new()));
    };
    let bytes = std::fs::read(&path)?;
    let start = bytes.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    Ok((
        path.display().to_string(),
        all[from..].iter().map(|l| (*l).to_owned()).collect(),
    ))
}

async fn log_tail(State(state): Shared) -> Response {
    let dir = state.home.log_dir().to_owned();
    match blocking(move || Ok(tail_of_newest(&dir, 40).unwrap_or_default())).await {
        Ok((file, lines)) => Json(json!({ "file": file, "lines": lines })).into_response(),
        Err(response) => response,
    }
}

async fn open_logs(State(state): Shared) -> Response {
    let dir = state.home.log_dir().to_owned();
    if let Err(err) = std::fs::create_dir_all(&dir) {
        return failed(StatusCode::INTERNAL_SERVER_ERROR, err);
    }
    match super::open(&dir.display().to_string()) {
        Ok(()) => Json(json!({ "message": format!("opened {}", dir.display()) })).into_response(),
        Err(err) => failed(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tail_is_the_newest_files_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("old.log"), "old\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(tmp.path().join("new.log"), text).unwrap();
        let (file, lines) = tail_of_newest(tmp.path(), 3).unwrap();
        assert!(file.ends_with("new.log"), "{file}");
        assert_eq!(lines, ["line 97", "line 98", "line 99"]);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(tail_of_newest(empty.path(), 3).unwrap().1.len(), 0);
    }

    #[test]
    fn provider_names_are_checked_before_the_store_sees_them() {
        assert!(provider_ok("openai"));
        assert!(provider_ok("my-local-2"));
        for bad in ["", "OpenAI", "../x", "a/b", &"x".repeat(33)] {
            assert!(!provider_ok(bad), "{bad}");
        }
    }
}
