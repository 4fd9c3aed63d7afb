//! The HTTP API and the web app, one module per area: `sessions` (sign-up, sign-in,
//! token refresh, sign-out), `account` (the plan and its use), `devices` (list,
//! enroll, rename, revoke), `device_login` (`desktop-node login` approved in the
//! browser), `connect` (where the page opens its WebTransport session),
//! `health` (liveness, readiness, and the metrics listener's page) and `releases`
//! (desktop-node's release manifests, when `releases_dir` is set). The developer
//! portal and the marketplace are in [`crate::marketplace`]; the HTTP server loop and
//! its timeouts in [`crate::httpd`]. Sign-in with OpenID Connect providers is `oidc`.
//!
//! This module holds the router, the error answer every handler uses, and the bearer
//! check: a request's access token gets the same checks as a stream's
//! ([`crate::authorize::authenticate`]).

mod account;
mod connect;
pub mod crash_reports;
mod device_login;
mod devices;
mod health;
mod oidc;
pub mod releases;
mod sessions;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::json;

use crate::auth::Claims;
use crate::authorize::{Denied, Facts, authenticate};
use crate::state::RelayState;

/// The API routes, plus the web app's files when `web_root` is set.
pub fn router(state: Arc<RelayState>) -> Router {
    let api = Router::new()
        .merge(sessions::routes())
        .merge(oidc::routes(&state.config))
        .merge(account::routes())
        .merge(devices::routes())
        .merge(device_login::routes())
        .merge(connect::routes())
        .merge(crash_reports::routes())
        .merge(crate::marketplace::routes())
        // An unknown API path is a JSON 404, not the web app's index page.
        .route(
            "/api/{*rest}",
            any(|| async { ApiError(StatusCode::NOT_FOUND, "no such API endpoint".into()) }),
        )
        .merge(health::routes())
        // A desktop's TCP path, where its UDP is blocked (docs/protocol.md).
        .route(
            "/tunnel/desktop",
            axum::routing::get(crate::desktop::websocket),
        )
        // A browser's session over a WebSocket (no WebTransport, or UDP blocked).
        .route(
            crate::browser::WEBSOCKET_PATH,
            axum::routing::get(crate::ws::browser),
        );
    // desktop-node's release manifests and binaries, when `releases_dir` is set.
    let api = match &state.config.releases_dir {
        Some(dir) => api.merge(releases::routes(dir)),
        None => api,
    };
    let app = match &state.config.web_root {
        Some(root) => api.fallback_service(tower_http::services::ServeDir::new(root).fallback(
            tower_http::services::ServeFile::new(root.join("index.html")),
        )),
        None => api,
    };
    app.with_state(state)
}

/// The metrics listener's routes (`metrics_addr`): `GET /metrics` only, kept off the
/// public API.
pub fn metrics_router(state: Arc<RelayState>) -> Router {
    health::metrics_routes().with_state(state)
}

/// An error answer: a status and `{"error": "..."}`.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// A 500 answer for a failure the client cannot fix; the detail goes to the log only.
pub(crate) fn internal(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%err, "API failure");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

/// The claims of a request's bearer token, whose user still exists, is not disabled, and
/// has not revoked the token (the same checks every stream gets, so they take effect at
/// once).
pub(crate) async fn bearer(state: &RelayState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let refused = |message: String| {
        tracing::debug!(message, "API request refused: unauthenticated");
        crate::metrics::refused("http_unauthenticated");
        ApiError(StatusCode::UNAUTHORIZED, message)
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| refused("missing bearer token".into()))?;
    let claims = state
        .accounts
        .tokens
        .verify(token)
        .map_err(|e| refused(e.to_string()))?;
    let mut facts = Facts::new(false, Ok(claims.clone()), 0);
    facts.user = state
        .store
        .cached_user(&claims.sub)
        .await
        .map_err(internal)?;
    match authenticate(&facts) {
        Ok(_) => Ok(claims),
        Err(denied @ Denied::TokenRevoked) => {
            crate::metrics::refused(denied.reason());
            Err(ApiError(StatusCode::UNAUTHORIZED, denied.to_string()))
        }
        Err(denied) => Err(ApiError(StatusCode::UNAUTHORIZED, denied.to_string())),
    }
}
