//! `GET /api/account`: the user's plan and how much of it is used, whether the account
//! has a password and which providers it signs in with;
//! `POST /api/account/password`: change the password, or set one on an account made by
//! an OpenID provider (every other session is signed out); `DELETE /api/account`:
//! delete the account with its devices, sessions, usage and ratings;
//! `GET /api/account/identities`: the account's ways to sign in (a password or not, and
//! each linked provider identity); `DELETE /api/account/identities/{id}`: unlink one,
//! never the last way in.
//!
//! The changes need fresh proof of who is asking ([`prove_identity`]): the current
//! password for an account that has one; for an account without a password, a sign-in
//! at its provider within `[oidc] reauth_max_age_secs` (the web app sends the person
//! through `/api/auth/oidc/{name}/start?reauth=1`, and the session's `auth_time`, carried
//! in its access token, says when). A stolen access token alone can do neither.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
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

/// `GET` and `DELETE /api/account`, `POST /api/account/password`,
/// `GET /api/account/identities`, `DELETE /api/account/identities/{id}`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/api/account", get(account).delete(delete_account))
        .route("/api/account/password", post(change_password))
        .route("/api/account/identities", get(identities))
        .route(
            "/api/account/identities/{id}",
            axum::routing::delete(unlink_identity),
        )
}

/// What proved who is asking for a sensitive change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// The current password was given and is right.
    Password,
    /// The account has no password, and the person signed in at its provider recently.
    RecentSignIn,
}

/// Whether the account has a password (an account made by a provider sign-in has none
/// until one is set).
fn has_password(user: &crate::store::User) -> bool {
    user.password_hash != crate::store::identities::NO_PASSWORD
}

/// "5 minutes", "90 seconds", "2 hours".
fn span(secs: u64) -> String {
    match secs {
        1 => "1 second".into(),
        s if s >= 7200 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// Whether a session whose person last proved who they are at `auth_time` may make a
/// sensitive change at `now`, given the window `max_age_secs`: `Err(None)` when it
/// never said, `Err(Some(age))` when too long ago.
fn recent_enough(auth_time: Option<i64>, now: i64, max_age_secs: u64) -> Result<(), Option<u64>> {
    match auth_time {
        Some(at) if now.saturating_sub(at) <= max_age_secs as i64 => Ok(()),
        Some(at) => Err(Some(now.saturating_sub(at).max(0) as u64)),
        None => Err(None),
    }
}

/// A 403 `reauth_required`: the account has no password and the session's last sign-in
/// at a provider is missing or too old. `providers` are the ones the person can confirm
/// with (`/api/auth/oidc/{name}/start?reauth=1`).
fn reauth_required(message: String, providers: Vec<String>, max_age_secs: u64) -> Response {
    crate::metrics::refused("reauth_required");
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({
            "error": message,
            "code": "reauth_required",
            "providers": providers,
            "max_age_secs": max_age_secs,
        })),
    )
        .into_response()
}

/// The signed-in user, and proof that it is them asking: the current `password` for an
/// account that has one (checked like a sign-in, same limits); for an account without
/// one, a sign-in at its provider within `reauth_max_age_secs` (the access token's
/// `auth_time`).
async fn prove_identity(
    state: &RelayState,
    peer: SocketAddr,
    headers: &HeaderMap,
    password: Option<String>,
) -> Result<(crate::store::User, Proof), Response> {
    let claims = bearer(state, headers)
        .await
        .map_err(|e| e.into_response())?;
    let user = state
        .store
        .user(&claims.sub)
        .await
        .map_err(|e| internal(e).into_response())?
        .ok_or_else(|| {
            ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()).into_response()
        })?;
    if has_password(&user) {
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "the current password is required".into(),
            )
            .into_response());
        };
        let user = reauthenticate(state, peer, headers, password)
            .await
            .map_err(|e| e.into_response())?;
        return Ok((user, Proof::Password));
    }
    let max_age = state.config.oidc.reauth_max_age_secs;
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let auth_time = state.accounts.tokens.auth_time(token).ok().flatten();
    let now = auth::now_secs() as i64;
    let Err(age) = recent_enough(auth_time, now, max_age) else {
        return Ok((user, Proof::RecentSignIn));
    };
    let providers = state
        .store
        .identity_providers(&user.id)
        .await
        .map_err(|e| internal(e).into_response())?;
    let named = match providers.as_slice() {
        [one] => state
            .config
            .oidc
            .providers
            .iter()
            .find(|p| &p.name == one)
            .map(|p| p.display_name().to_owned())
            .unwrap_or_else(|| one.clone()),
        _ => "your identity provider".to_owned(),
    };
    let message = match age {
        Some(age) => format!(
            "your last sign-in with {named} was {} ago; this account has no password, so sign in with {named} again to confirm it is you, then try again within {}",
            span(age),
            span(max_age),
        ),
        None => format!(
            "this account has no password: sign in with {named} again to confirm it is you, then try again within {}",
            span(max_age),
        ),
    };
    tracing::info!(user_id = %user.id, ?auth_time, "sensitive change refused: no recent sign-in at the provider");
    Err(reauth_required(message, providers, max_age))
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
    /// Required when the account has a password; an account without one proves who it
    /// is by a recent sign-in at its provider instead.
    #[serde(default)]
    current_password: Option<String>,
    new_password: String,
    /// Put the new refresh token in the cookie (the web app: its cookie is not sent to
    /// this path, which is outside `/api/auth`).
    #[serde(default)]
    cookie: bool,
}

/// Changes the password (or sets the first one of an account made by a provider, which
/// can then sign in with it too): proves who is asking ([`prove_identity`]), stores the
/// new one, signs out every session (their refresh and access tokens), and signs this
/// one in again (new tokens, in the cookie when asked with `cookie` or when the request
/// came with one).
async fn change_password(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<PasswordChange>,
) -> Result<Response, Response> {
    if req.new_password.chars().count() < 8 || req.new_password.len() > 1024 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a password has 8 to 1024 characters".into(),
        )
        .into_response());
    }
    let (user, proof) = prove_identity(&state, peer, &headers, req.current_password).await?;
    store_password(&state, &headers, &user, proof, req.new_password, req.cookie)
        .await
        .map_err(IntoResponse::into_response)
}

/// Stores `new_password` for a user whose identity was proven, signs every session out
/// and this one in again.
async fn store_password(
    state: &RelayState,
    headers: &HeaderMap,
    user: &crate::store::User,
    proof: Proof,
    new_password: String,
    cookie: bool,
) -> Result<Response, CredError> {
    let hash = state
        .accounts
        .hashing
        .run(move || auth::hash_password(&new_password))
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
    revoke_access(state, &user.id, "the password was changed").await?;
    match proof {
        Proof::Password => {
            tracing::info!(user_id = %user.id, "password changed; every session signed out")
        }
        Proof::RecentSignIn => tracing::info!(
            user_id = %user.id,
            "first password set after a recent sign-in at the provider; every session signed out"
        ),
    }
    let user = state
        .store
        .user(&user.id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()))?;
    let cookie = cookie || cookie_token(headers).is_some();
    Ok(issue_tokens(state, &user, SessionOf::New(headers), cookie)
        .await?
        .into_response())
}

#[derive(Deserialize)]
struct DeleteAccount {
    /// Required when the account has a password (see [`prove_identity`]).
    #[serde(default)]
    password: Option<String>,
}

/// Deletes the account: its devices (disconnected at once), sessions, usage and ratings;
/// its open sessions are closed. Needs fresh proof of who is asking ([`prove_identity`]):
/// the password, or for an account without one a recent sign-in at its provider.
async fn delete_account(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<DeleteAccount>,
) -> Result<Response, Response> {
    let (user, proof) = prove_identity(&state, peer, &headers, req.password).await?;
    delete_proven(&state, &user, proof)
        .await
        .map_err(IntoResponse::into_response)
}

/// Deletes a user whose identity was proven, with everything that is theirs.
async fn delete_proven(
    state: &RelayState,
    user: &crate::store::User,
    proof: Proof,
) -> Result<Response, CredError> {
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
    revoke_access(state, &user.id, "the account was deleted").await?;
    state
        .store
        .delete_device_logins_of(&user.id)
        .await
        .map_err(internal)?;
    // Devices whose login had not finished go with the rest (delete_user deletes every
    // device row of the user).
    state
        .store
        .delete_user(&user.email)
        .await
        .map_err(internal)?;
    tracing::info!(user_id = %user.id, devices = devices.len(), ?proof, "account deleted");
    Ok((
        StatusCode::NO_CONTENT,
        [(axum::http::header::SET_COOKIE, refresh_cookie(None, 0))],
    )
        .into_response())
}

/// `GET /api/account/identities`: how the account signs in.
#[derive(Serialize)]
struct SignInMethods {
    /// Whether the account has a password.
    has_password: bool,
    /// The linked provider identities, oldest link first.
    identities: Vec<IdentityView>,
}

/// One linked identity as the account page shows it: never the issuer URL nor the whole
/// subject.
#[derive(Serialize)]
struct IdentityView {
    /// The id to unlink it with (`identities::identity_id`).
    id: String,
    /// The configured provider's name.
    provider: String,
    /// Its display name (the name when the provider is no longer configured).
    provider_name: String,
    /// The email the provider vouched for at linking, if it gave one.
    email: Option<String>,
    /// The end of the subject (`identities::subject_hint`), to tell identities without
    /// an email apart.
    subject_hint: String,
    /// When it was linked, and when it last signed in (seconds since the epoch).
    linked_at: i64,
    last_used: i64,
}

/// The signed-in user's record.
async fn signed_in_user(
    state: &RelayState,
    headers: &HeaderMap,
) -> Result<crate::store::User, ApiError> {
    let claims = bearer(state, headers).await?;
    state
        .store
        .user(&claims.sub)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()))
}

/// The account's ways to sign in.
async fn identities(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
) -> Result<Json<SignInMethods>, ApiError> {
    let user = signed_in_user(&state, &headers).await?;
    let linked = state
        .store
        .identities_of(&user.id)
        .await
        .map_err(internal)?;
    let identities = linked
        .into_iter()
        .map(|identity| IdentityView {
            id: identity.id(),
            provider_name: state
                .config
                .oidc
                .providers
                .iter()
                .find(|p| p.name == identity.provider)
                .map(|p| p.display_name().to_owned())
                .unwrap_or_else(|| identity.provider.clone()),
            subject_hint: crate::store::identities::subject_hint(&identity.subject),
            provider: identity.provider,
            email: identity.email,
            linked_at: identity.linked_at,
            last_used: identity.last_used,
        })
        .collect();
    Ok(Json(SignInMethods {
        has_password: has_password(&user),
        identities,
    }))
}

/// The sentence for unlinking the last way in.
const LAST_WAY_IN: &str = "this is the only way left to sign in to this account: set a password or link another provider first, then unlink this one";

/// A 409 `last_sign_in_method`.
fn last_way_in() -> Response {
    (
        StatusCode::CONFLICT,
        Json(serde_json::json!({ "error": LAST_WAY_IN, "code": "last_sign_in_method" })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct UnlinkIdentity {
    /// Required when the account has a password (see [`prove_identity`]).
    #[serde(default)]
    password: Option<String>,
}

/// Unlinks one of the account's identities: 404 for an id that is not one of this
/// account's (another user's too), 409 when it is the last way to sign in (no password,
/// no other identity; asked before any proof, and again atomically in the store), then
/// fresh proof of who is asking ([`prove_identity`]). Sessions stay signed in; the
/// identity no longer opens the account (unless its provider vouches for the account's
/// email at a later sign-in, which links it again: the linking rule).
async fn unlink_identity(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<UnlinkIdentity>,
) -> Result<StatusCode, Response> {
    let not_found = || {
        ApiError(
            StatusCode::NOT_FOUND,
            "this account has no such sign-in method".into(),
        )
        .into_response()
    };
    let user = signed_in_user(&state, &headers)
        .await
        .map_err(IntoResponse::into_response)?;
    let linked = state
        .store
        .identities_of(&user.id)
        .await
        .map_err(|e| internal(e).into_response())?;
    let Some(identity) = linked.iter().find(|i| i.id() == id) else {
        return Err(not_found());
    };
    if !has_password(&user) && linked.len() <= 1 {
        return Err(last_way_in());
    }
    let (user, proof) = prove_identity(&state, peer, &headers, req.password).await?;
    use crate::store::identities::Unlinked;
    match state
        .store
        .unlink_identity(&user.id, &identity.issuer, &identity.subject)
        .await
        .map_err(|e| internal(e).into_response())?
    {
        Unlinked::Done => {
            tracing::info!(user_id = %user.id, provider = %identity.provider, ?proof, "identity unlinked");
            Ok(StatusCode::NO_CONTENT)
        }
        Unlinked::NotFound => Err(not_found()),
        Unlinked::LastWayIn => Err(last_way_in()),
    }
}

#[derive(Serialize)]
struct AccountView {
    user_id: String,
    email: String,
    plan: crate::store::Plan,
    usage: Usage,
    /// Whether the account has a password (one made by a provider sign-in has none until
    /// one is set; it then proves who it is by a recent sign-in at the provider).
    has_password: bool,
    /// The providers (configured names) the account signs in with.
    providers: Vec<String>,
    /// When this session's person last proved who they are (seconds since the epoch),
    /// if known.
    auth_time: Option<i64>,
    /// How recent that must be for an account without a password to set one or delete
    /// itself (seconds).
    reauth_max_age_secs: u64,
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
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    Ok(Json(AccountView {
        has_password: has_password(&user),
        providers: state
            .store
            .identity_providers(&user.id)
            .await
            .map_err(internal)?,
        auth_time: state.accounts.tokens.auth_time(token).ok().flatten(),
        reauth_max_age_secs: state.config.oidc.reauth_max_age_secs,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_counts_as_proof_only_within_the_window() {
        assert_eq!(recent_enough(Some(1_000), 1_000, 300), Ok(()));
        assert_eq!(recent_enough(Some(700), 1_000, 300), Ok(()));
        assert_eq!(recent_enough(Some(699), 1_000, 300), Err(Some(301)));
        assert_eq!(recent_enough(None, 1_000, 300), Err(None));
        // A provider's clock ahead of ours is no later than now.
        assert_eq!(recent_enough(Some(1_010), 1_000, 300), Ok(()));
    }

    #[test]
    fn spans_read_as_words() {
        assert_eq!(span(1), "1 second");
        assert_eq!(span(90), "90 seconds");
        assert_eq!(span(300), "5 minutes");
        assert_eq!(span(3 * 3600 + 5), "3 hours");
    }
}
