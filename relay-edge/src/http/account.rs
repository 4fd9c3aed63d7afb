//! `GET /api/account`: the user's plan and how much of it is used.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiError, bearer, internal};
use crate::state::RelayState;

/// `GET /api/account`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new().route("/api/account", get(account))
}

#[derive(Serialize)]
struct AccountView {
    user_id: String,
    email: String,
    plan: crate::store::Plan,
    usage: Usage,
}

#[derive(Serialize)]
struct Usage {
    devices: i64,
    actions_today: i64,
    open_streams: i64,
}

/// The user's plan and how much of it is used.
async fn account(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
) -> Result<Json<AccountView>, ApiError> {
    let claims = bearer(&state, &headers).await?;
    let user = state
        .store
        .user(&claims.sub)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()))?;
    let plan = user_plan(&state, &user).await?;
    let usage = Usage {
        devices: state
            .store
            .count_devices(&user.id)
            .await
            .map_err(internal)?,
        // This relay's in-memory count when it has one (the store's lags by up to a
        // flush interval).
        actions_today: match state.actions.counted_today(&user.id) {
            Some(n) => n,
            None => state
                .store
                .actions_on(&user.id, &state.actions.today())
                .await
                .map_err(internal)?,
        },
        open_streams: state.limits.streams_per_user.open_for(&user.id),
    };
    Ok(Json(AccountView {
        user_id: user.id,
        email: user.email,
        plan,
        usage,
    }))
}

pub(super) async fn user_plan(
    state: &RelayState,
    user: &crate::store::User,
) -> Result<crate::store::Plan, ApiError> {
    state
        .store
        .plan(&user.plan_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| internal(format!("user has unknown plan {:?}", user.plan_id)))
}
