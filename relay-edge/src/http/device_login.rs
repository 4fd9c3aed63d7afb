//! Device login without a password on the desktop, in the manner of OAuth's device
//! authorization grant (RFC 8628), as `gh auth login` does it:
//!
//! 1. `desktop-node login --relay URL` asks `POST /api/device/code` `{name}` and gets a
//!    long secret `device_code`, a short `user_code` (`BCDF-GHJK`), `verification_uri`
//!    (the web app's `/activate` page), `verification_uri_complete` (the same with the
//!    code filled in), `expires_in` and `interval`.
//! 2. The person opens the link in the browser where they are signed in, checks the
//!    code and the device's name (`GET /api/device/code/{user_code}`) and approves or
//!    denies it (`POST /api/device/approve` `{user_code, approve}`).
//! 3. Meanwhile the desktop polls `POST /api/device/token` `{device_code}` every
//!    `interval` seconds; until the person decides it gets 400 `authorization_pending`,
//!    for polling too fast `slow_down` (and the interval grows by 5 s), then
//!    `access_denied` or `expired_token`, or, once, the device's credentials (the same
//!    answer as `POST /api/devices/enroll`). A second collection gets `expired_token`.
//!    With `"confirm": true` the device is pending until the desktop has stored its token
//!    and confirms (`super::devices`), so a login that fails there leaves nothing.
//!
//! The device code is stored hashed; the user code is only good with a signed-in
//! person's approval, and wrong codes count against that person like failed sign-ins.
//! This module does not sign browsers in (the codes register desktops only).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::devices::{check_device_room, register_device};
use super::{ApiError, bearer, internal};
use crate::auth;
use crate::state::RelayState;

/// How long a login waits for the person (seconds).
pub const LOGIN_TTL_SECS: i64 = 600;
/// The poll interval a desktop starts with (seconds).
pub const POLL_INTERVAL_SECS: i64 = 5;
/// The letters of a user code: no vowels (no words), none that look alike (0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"BCDFGHJKMNPQRSTVWXZ";

/// `POST /api/device/code`, `GET /api/device/code/{user_code}`, `POST
/// /api/device/approve`, `POST /api/device/token`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/api/device/code", post(start))
        .route("/api/device/code/{user_code}", get(pending))
        .route("/api/device/approve", post(approve))
        .route("/api/device/token", post(token))
}

/// A fresh user code, `XXXX-XXXX` from [`CODE_ALPHABET`] (19^8 ≈ 1.7e10 codes).
pub fn new_user_code() -> String {
    let mut bytes = [0u8; 8];
    // getrandom only fails where the OS has no randomness; nothing can run safely then.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    let letters: String = bytes
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(*b) % CODE_ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A code as a person may type it (`bcdf ghjk`, `BCDFGHJK`) in its stored form.
pub fn normalize_user_code(typed: &str) -> String {
    let letters: String = typed
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() == 8 {
        format!("{}-{}", &letters[..4], &letters[4..])
    } else {
        letters
    }
}

#[derive(Deserialize)]
struct StartRequest {
    name: String,
}

#[derive(Serialize)]
struct StartReply {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
    expires_in: i64,
    interval: i64,
}

/// The web app's address as this request reached the relay: `X-Forwarded-Proto` and
/// `Host` (the origin the person's browser uses when the desktop named the same URL).
fn origin(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{}", header("host").unwrap_or("localhost"))
}

/// Step 1: a desktop asks to be registered.
async fn start(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Json(req): Json<StartRequest>,
) -> Result<Json<StartReply>, ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a device name has 1 to 100 characters".into(),
        ));
    }
    let device_code = format!(
        "aisa_dc_{}",
        auth::new_refresh_token().trim_start_matches("aisa_rt_")
    );
    let hash = auth::hash_token(&device_code);
    // A clash of user codes is rare; draw again a few times.
    let mut user_code = new_user_code();
    for attempt in 0.. {
        match state
            .store
            .create_device_login(&hash, &user_code, name, LOGIN_TTL_SECS, POLL_INTERVAL_SECS)
            .await
        {
            Ok(()) => break,
            Err(crate::store::StoreError::Duplicate(_)) if attempt < 5 => {
                user_code = new_user_code();
            }
            Err(err) => return Err(internal(err)),
        }
    }
    let base = origin(&headers);
    tracing::info!(%user_code, name, "device login started");
    Ok(Json(StartReply {
        device_code,
        verification_uri: format!("{base}/activate"),
        verification_uri_complete: format!("{base}/activate?code={user_code}"),
        user_code,
        expires_in: LOGIN_TTL_SECS,
        interval: POLL_INTERVAL_SECS,
    }))
}

/// A pending login as the approval page shows it.
#[derive(Serialize)]
struct PendingView {
    user_code: String,
    name: String,
    created_at: i64,
    expires_in: i64,
}

/// The pending, unexpired login with this code, or 404; a wrong code counts against
/// the signed-in user like a failed sign-in, so codes cannot be guessed in bulk.
async fn find_pending(
    state: &RelayState,
    user_id: &str,
    typed: &str,
) -> Result<crate::store::DeviceLogin, ApiError> {
    let key = format!("device-code:{user_id}");
    let now = Instant::now();
    if let Some(wait) = state.accounts.logins.wait(&key, now).await {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many wrong codes; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let code = normalize_user_code(typed);
    let login = state
        .store
        .device_login_by_user_code(&code)
        .await
        .map_err(internal)?
        .filter(|l| {
            l.expires_at > auth::now_secs() as i64
                && l.approved_by.is_none()
                && !l.denied
                && l.device_id.is_none()
        });
    match login {
        Some(login) => Ok(login),
        None => {
            state.accounts.logins.failed(&key, now);
            Err(ApiError(
                StatusCode::NOT_FOUND,
                "no desktop is waiting with this code (it may have expired: run the login again)"
                    .into(),
            ))
        }
    }
}

/// Step 2a: what is asking (for the person to check before approving).
async fn pending(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(user_code): Path<String>,
) -> Result<Json<PendingView>, ApiError> {
    let claims = bearer(&state, &headers).await?;
    let login = find_pending(&state, &claims.sub, &user_code).await?;
    Ok(Json(PendingView {
        expires_in: login.expires_at - auth::now_secs() as i64,
        user_code: login.user_code,
        name: login.name,
        created_at: login.created_at,
    }))
}

#[derive(Deserialize)]
struct ApproveRequest {
    user_code: String,
    approve: bool,
}

/// Step 2b: the signed-in person approves (the device will be theirs) or denies.
async fn approve(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Json(req): Json<ApproveRequest>,
) -> Result<StatusCode, ApiError> {
    let claims = bearer(&state, &headers).await?;
    let login = find_pending(&state, &claims.sub, &req.user_code).await?;
    if req.approve {
        let user = state
            .store
            .user(&claims.sub)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()))?;
        check_device_room(&state, &user).await?;
    }
    let approver = req.approve.then_some(claims.sub.as_str());
    if !state
        .store
        .decide_device_login(&login.id, approver)
        .await
        .map_err(internal)?
    {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this code was already answered or has expired".into(),
        ));
    }
    tracing::info!(user_code = %login.user_code, approved = req.approve, "device login decided");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct TokenRequest {
    device_code: String,
    /// The desktop confirms once it stored the token (`POST /api/device/confirm`): the
    /// device it collects is pending till then (`super::devices`).
    #[serde(default)]
    confirm: bool,
}

/// An RFC 8628 error answer: 400 `{"error": code, "error_description": text}`.
fn grant_error(code: &str, description: &str, interval: Option<i64>) -> Response {
    let mut body = json!({ "error": code, "error_description": description });
    if let Some(interval) = interval {
        body["interval"] = json!(interval);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Step 3: the desktop polls until the person decided.
async fn token(
    State(state): State<Arc<RelayState>>,
    Json(req): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    let Some(login) = state
        .store
        .device_login_by_device_code(&auth::hash_token(&req.device_code))
        .await
        .map_err(internal)?
    else {
        return Ok(grant_error("invalid_grant", "unknown device code", None));
    };
    let now = auth::now_secs() as i64;
    if login.device_id.is_some() || login.expires_at <= now {
        return Ok(grant_error(
            "expired_token",
            "this login expired or was used; run the login again",
            None,
        ));
    }
    if login.denied {
        return Ok(grant_error(
            "access_denied",
            "the login was denied in the browser",
            None,
        ));
    }
    let Some(user_id) = login.approved_by.clone() else {
        // RFC 8628 §3.5: polling faster than the interval slows the desktop down.
        if now - login.last_poll < login.interval_secs {
            let interval = login.interval_secs + 5;
            state
                .store
                .note_device_login_poll(&login.id, interval)
                .await
                .map_err(internal)?;
            return Ok(grant_error("slow_down", "polling too fast", Some(interval)));
        }
        state
            .store
            .note_device_login_poll(&login.id, login.interval_secs)
            .await
            .map_err(internal)?;
        return Ok(grant_error(
            "authorization_pending",
            "waiting for the person to approve the code in the browser",
            None,
        ));
    };
    let user = state
        .store
        .user(&user_id)
        .await
        .map_err(internal)?
        .filter(|u| !u.disabled)
        .ok_or_else(|| {
            ApiError(
                StatusCode::FORBIDDEN,
                "the account is disabled or gone".into(),
            )
        })?;
    let reply = register_device(&state, &user, &login.name, req.confirm).await?;
    if !state
        .store
        .finish_device_login(&login.id, &reply.device_id)
        .await
        .map_err(internal)?
    {
        // Another poll collected it first: this device never existed.
        state
            .store
            .delete_device_row(&reply.device_id)
            .await
            .map_err(internal)?;
        return Ok(grant_error(
            "expired_token",
            "this login expired or was used; run the login again",
            None,
        ));
    }
    tracing::info!(user_id = %user.id, device_id = %reply.device_id, "device registered by device login");
    Ok(Json(reply).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_have_two_groups_of_four_unambiguous_letters() {
        for _ in 0..200 {
            let code = new_user_code();
            assert_eq!(code.len(), 9, "{code}");
            assert_eq!(&code[4..5], "-");
            assert!(
                code.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| CODE_ALPHABET.contains(&b)),
                "{code}"
            );
        }
    }

    #[test]
    fn typed_codes_are_normalized() {
        assert_eq!(normalize_user_code("bcdf ghjk"), "BCDF-GHJK");
        assert_eq!(normalize_user_code(" BCDFGHJK\n"), "BCDF-GHJK");
        assert_eq!(normalize_user_code("BCDF-GHJK"), "BCDF-GHJK");
        assert_eq!(normalize_user_code("abc"), "ABC");
    }
}
