//! `GET /api/account`: the user's plan and how much of it is used;
//! `POST /api/account/password`: change the password (every other session is signed
//! out); `DELETE /api/account`: delete the account with its devices, sessions, usage
//! and ratings.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::sessions::{
    CredError, Credentials, SessionOf, check_credentials, client_ip, cookie_token, issue_tokens,
    refresh_cookie, revoke_access,
};
use super::{ApiError, bearer, internal};
use crate::auth;
use crate::state::RelayState;

/// `GET` and `DELETE /api/account`, `POST /api/account/password`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/api/account", get(account).delete(delete_account))
        .route("/api/account/password", post(change_password))
}

/// The signed-in user's record, and their password checked like a sign-in (same limits).
async fn reauthenticate(
    state: &RelayState,
    peer: SocketAddr,
    headers: &HeaderMap,
    password: String,
) -> Result<crate::store::User, CredError> {
    let claims = bearer(state, headers).await?;
    let creds = Credentials {
        email: claims.email.clone(),
        password,
        cookie: false,
    };
    let user = check_credentials(state, client_ip(state, peer, headers), &creds)
        .await
        .map_err(|err| match err {
            CredError::Api(ApiError(StatusCode::UNAUTHORIZED, _)) => CredError::Api(ApiError(
                StatusCode::FORBIDDEN,
                "the current password is wrong".into(),
            )),
            other => other,
        })?;
    if user.id != claims.sub {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()).into());
    }
    Ok(user)
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
    /// Put the new refresh token in the cookie (the web app: its cookie is not sent to
    /// this path, which is outside `/api/auth`).
    #[serde(default)]
    cookie: bool,
}

/// Changes the password: checks the current one, stores the new one, signs out every
/// session (their refresh and access tokens), and signs this one in again (new tokens,
/// in the cookie when asked with `cookie` or when the request came with one).
async fn change_password(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<PasswordChange>,
) -> Result<Response, CredError> {
    let user = reauthenticate(&state, peer, &headers, req.current_password).await?;
    if req.new_password.chars().count() < 8 || req.new_password.len() > 1024 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a password has 8 to 1024 characters".into(),
        )
        .into());
    }
    let password = req.new_password.clone();
    let hash = state
        .accounts
        .hashing
        .run(move || auth::hash_password(&password))
        .await
        .map_err(|_| {
            CredError::Api(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy checking passwords; try again shortly".into(),
            ))
        })?
        .map_err(internal)?;
    state
        .store
        .set_password_hash(&user.id, &hash)
        .await
        .map_err(internal)?;
    state
        .store
        .revoke_all_refresh_tokens(&user.id)
        .await
        .map_err(internal)?;
    revoke_access(&state, &user.id, "the password was changed").await?;
    tracing::info!(user_id = %user.id, "password changed; every session signed out");
    let user = state
        .store
        .user(&user.id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()))?;
    let cookie = req.cookie || cookie_token(&headers).is_some();
    Ok(
        issue_tokens(&state, &user, SessionOf::New(&headers), cookie)
            .await?
            .into_response(),
    )
}

#[derive(Deserialize)]
struct DeleteAccount {
    password: String,
}

/// Deletes the account: its devices (disconnected at once), sessions, usage and ratings;
/// its open sessions are closed. Asks for the password again.
async fn delete_account(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<DeleteAccount>,
) -> Result<Response, CredError> {
    let user = reauthenticate(&state, peer, &headers, req.password).await?;
    let devices = state
        .store
        .devices_for_user(&user.id)
        .await
        .map_err(internal)?;
    for device in &devices {
        state
            .store
            .revoke_device(&user.id, &device.id)
            .await
            .map_err(internal)?;
        if let Some(online) = state.devices.registry.get(&device.id) {
            online.connection.close(
                crate::desktop::CLOSE_REVOKED,
                b"unauthenticated: the account was deleted",
            );
        }
    }
    revoke_access(&state, &user.id, "the account was deleted").await?;
    state
        .store
        .delete_device_logins_of(&user.id)
        .await
        .map_err(internal)?;
    state
        .store
        .delete_user(&user.email)
        .await
        .map_err(internal)?;
    tracing::info!(user_id = %user.id, devices = devices.len(), "account deleted");
    Ok((
        StatusCode::NO_CONTENT,
        [(axum::http::header::SET_COOKIE, refresh_cookie(None, 0))],
    )
        .into_response())
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
