//! The HTTP API and the web app: sign-in, device list, device enrollment, and what the
//! page needs to open its WebTransport session.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{self, Claims};
use crate::server::Shared;

/// The API routes, plus the web app's files when `web_root` is set.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/devices", get(list_devices))
        .route("/api/devices/enroll", post(enroll_device))
        .route("/api/session", get(session_info))
        .route("/healthz", get(|| async { "ok" }));
    let app = match &shared.config.web_root {
        Some(root) => api.fallback_service(tower_http::services::ServeDir::new(root).fallback(
            tower_http::services::ServeFile::new(root.join("index.html")),
        )),
        None => api,
    };
    app.with_state(shared)
}

/// An error answer: a status and `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%err, "API failure");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct LoginReply {
    token: String,
    user_id: String,
    email: String,
    expires_in: u64,
}

/// Checks email and password; the same answer for an unknown email and a wrong password.
async fn check_credentials(
    shared: &Shared,
    creds: &Credentials,
) -> Result<crate::store::User, ApiError> {
    let user = shared
        .store
        .user_by_email(&creds.email)
        .await
        .map_err(internal)?;
    let refused = || ApiError(StatusCode::UNAUTHORIZED, "wrong email or password".into());
    let Some(user) = user else {
        return Err(refused());
    };
    let password = creds.password.clone();
    let hash = user.password_hash.clone();
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(internal)?;
    if !ok {
        return Err(refused());
    }
    if user.disabled {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "this account is disabled".into(),
        ));
    }
    Ok(user)
}

async fn login(
    State(shared): State<Arc<Shared>>,
    Json(creds): Json<Credentials>,
) -> Result<Json<LoginReply>, ApiError> {
    let user = check_credentials(&shared, &creds).await?;
    let token = shared
        .tokens
        .issue(&user.id, &user.email)
        .map_err(internal)?;
    Ok(Json(LoginReply {
        token,
        user_id: user.id,
        email: user.email,
        expires_in: shared.tokens.ttl_secs(),
    }))
}

fn bearer(shared: &Shared, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    shared
        .tokens
        .verify(token)
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))
}

#[derive(Serialize)]
struct DeviceView {
    id: String,
    name: String,
    online: bool,
    node_version: Option<String>,
    last_seen: Option<i64>,
    identity_key: Option<String>,
}

async fn list_devices(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let claims = bearer(&shared, &headers)?;
    let devices = shared
        .store
        .devices_for_user(&claims.sub)
        .await
        .map_err(internal)?;
    Ok(Json(
        devices
            .into_iter()
            .map(|d| DeviceView {
                online: shared.registry.get(&d.id).is_some(),
                id: d.id,
                name: d.name,
                node_version: d.node_version,
                last_seen: d.last_seen,
                identity_key: d.identity_key,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
struct EnrollRequest {
    email: String,
    password: String,
    name: String,
}

#[derive(Serialize)]
struct EnrollReply {
    device_id: String,
    device_token: String,
    quic_port: u16,
    cert_sha256: String,
}

/// `desktop-node login`: creates a device for the user and returns its token once.
async fn enroll_device(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollReply>, ApiError> {
    let user = check_credentials(
        &shared,
        &Credentials {
            email: req.email,
            password: req.password,
        },
    )
    .await?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a device name has 1 to 100 characters".into(),
        ));
    }
    let token = auth::new_device_token();
    let device = shared
        .store
        .create_device(&user.id, name, &auth::hash_device_token(&token))
        .await
        .map_err(internal)?;
    Ok(Json(EnrollReply {
        device_id: device.id,
        device_token: token,
        quic_port: shared.quic_addr.port(),
        cert_sha256: hex::encode(shared.cert_sha256()),
    }))
}

#[derive(Serialize)]
struct SessionInfo {
    webtransport_url: String,
    cert_sha256: Vec<String>,
}

/// Where the page opens its WebTransport session, and the certificate hash to pin (empty
/// with a production certificate, which browsers verify normally).
async fn session_info(State(shared): State<Arc<Shared>>) -> Json<SessionInfo> {
    let host = &shared.config.public_host;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Json(SessionInfo {
        webtransport_url: format!(
            "https://{host}:{}{}",
            shared.quic_addr.port(),
            crate::browser::WEBTRANSPORT_PATH
        ),
        cert_sha256: if shared.self_signed {
            vec![hex::encode(shared.cert_sha256())]
        } else {
            vec![]
        },
    })
}
