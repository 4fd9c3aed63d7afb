//! Liveness (`GET /healthz`), readiness (`GET /readyz`: the database answers), and the
//! metrics listener's `GET /metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::ApiError;
use crate::state::RelayState;

/// `GET /healthz` and `GET /readyz`, on the public listener.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

/// `GET /metrics`, for the metrics listener only.
pub(super) fn metrics_routes() -> Router<Arc<RelayState>> {
    Router::new().route(
        "/metrics",
        get(|State(state): State<Arc<RelayState>>| async move { crate::metrics::render(&state) }),
    )
}

/// Ready when the database answers.
async fn readyz(State(state): State<Arc<RelayState>>) -> Result<&'static str, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")))?;
    Ok("ready")
}
