//! Sign-up, sign-in, token refresh and sign-out (`/api/auth/*`), and the credential
//! check device enrollment shares: per-account and per-address sign-in limits, bounded
//! password hashing, refresh tokens that work once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, internal};
use crate::auth;
use crate::state::RelayState;

/// `POST /api/auth/signup`, `/login`, `/refresh` and `/logout`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
}

/// An email and a password.
#[derive(Deserialize)]
pub(super) struct Credentials {
    pub(super) email: String,
    pub(super) password: String,
}

#[derive(Serialize)]
struct LoginReply {
    token: String,
    refresh_token: String,
    user_id: String,
    email: String,
    expires_in: u64,
}

/// A fresh access token and refresh token for a user.
async fn issue_tokens(
    state: &RelayState,
    user: &crate::store::User,
) -> Result<LoginReply, ApiError> {
    let token = state
        .accounts
        .tokens
        .issue_in_generation(&user.id, &user.email, user.token_generation)
        .map_err(internal)?;
    let refresh_token = auth::new_refresh_token();
    let expires_at = (auth::now_secs() + state.config.refresh_token_ttl_secs) as i64;
    state
        .store
        .insert_refresh_token(&user.id, &auth::hash_token(&refresh_token), expires_at)
        .await
        .map_err(internal)?;
    // The user's first streams then find the record in memory (`crate::facts`).
    state.store.cached_user(&user.id).await.map_err(internal)?;
    Ok(LoginReply {
        token,
        refresh_token,
        user_id: user.id.clone(),
        email: user.email.clone(),
        expires_in: state.accounts.tokens.ttl_secs(),
    })
}

/// An API error, or a refusal that tells the client when to come back (429 from the
/// sign-in limiter, 503 when password hashing is saturated), with `Retry-After`.
pub(crate) enum CredError {
    /// A plain API error.
    Api(ApiError),
    /// Come back in `secs` seconds.
    RetryLater {
        status: StatusCode,
        message: String,
        secs: u64,
    },
}

impl From<ApiError> for CredError {
    fn from(err: ApiError) -> Self {
        CredError::Api(err)
    }
}

impl IntoResponse for CredError {
    fn into_response(self) -> Response {
        match self {
            CredError::Api(err) => err.into_response(),
            CredError::RetryLater {
                status,
                message,
                secs,
            } => (
                status,
                [(axum::http::header::RETRY_AFTER, secs.to_string())],
                Json(json!({ "error": message })),
            )
                .into_response(),
        }
    }
}

/// 503 with `Retry-After` when no hashing place came free in time.
fn hashing_busy(state: &RelayState) -> CredError {
    tracing::info!(
        in_use = state.accounts.hashing.in_use(),
        "sign-in refused: password hashing is saturated"
    );
    crate::metrics::refused("hashing_busy");
    CredError::RetryLater {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the server is busy checking passwords; try again shortly".into(),
        secs: state.accounts.hashing.retry_after_secs(),
    }
}

/// The client's address: the TCP peer, or what a trusted proxy says.
pub(super) fn client_ip(state: &RelayState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    state.accounts.proxies.client_ip(peer.ip(), headers)
}

/// Checks email and password; the same answer for an unknown email and a wrong password.
/// Too many failures for the account (the email) or for the client's address (behind
/// `trusted_proxies`, the address they name) within the window are refused with 429
/// before the password is even looked at.
pub(super) async fn check_credentials(
    state: &RelayState,
    client: IpAddr,
    creds: &Credentials,
) -> Result<crate::store::User, CredError> {
    let keys = [
        format!("email:{}", creds.email.trim().to_lowercase()),
        format!("ip:{client}"),
    ];
    let now = Instant::now();
    if let Some(wait) = keys
        .iter()
        .filter_map(|k| state.accounts.logins.check(k, now))
        .max()
    {
        metrics::counter!("aisa_relay_logins_total", "result" => "limited").increment(1);
        crate::metrics::refused("login_limited");
        tracing::info!(%client, "sign-in refused: too many failures for the account or address");
        let secs = wait.as_secs().max(1);
        return Err(CredError::RetryLater {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("too many failed sign-ins; try again in {secs} s"),
            secs,
        });
    }
    let result = verify_credentials(state, creds).await;
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    metrics::counter!("aisa_relay_logins_total", "result" => outcome).increment(1);
    match &result {
        Ok(_) => state.accounts.logins.succeeded(&keys[0]),
        Err(CredError::Api(ApiError(StatusCode::UNAUTHORIZED, _))) => keys
            .iter()
            .for_each(|k| state.accounts.logins.failed(k, now)),
        Err(_) => {}
    }
    result
}

/// An argon2id hash checked against when the email is unknown, so that the answer takes
/// as long as for a known email and timing does not tell which emails exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| auth::hash_password("no such user").unwrap_or_default())
}

async fn verify_credentials(
    state: &RelayState,
    creds: &Credentials,
) -> Result<crate::store::User, CredError> {
    // Longer than sign-up allows: wrong, and not worth hashing.
    if creds.email.len() > 254 || creds.password.len() > 1024 {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "wrong email or password".into()).into());
    }
    let user = state
        .store
        .user_by_email(&creds.email)
        .await
        .map_err(internal)?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = creds.password.clone();
    let ok = state
        .accounts
        .hashing
        .run(move || auth::verify_password(&password, hash.as_deref().unwrap_or(dummy_hash())))
        .await
        .map_err(|_| hashing_busy(state))?;
    let user = match user {
        Some(user) if ok => user,
        _ => {
            return Err(
                ApiError(StatusCode::UNAUTHORIZED, "wrong email or password".into()).into(),
            );
        }
    };
    if user.disabled {
        return Err(ApiError(StatusCode::FORBIDDEN, "this account is disabled".into()).into());
    }
    Ok(user)
}

async fn login(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(creds): Json<Credentials>,
) -> Result<Json<LoginReply>, CredError> {
    let user = check_credentials(&state, client_ip(&state, peer, &headers), &creds).await?;
    Ok(Json(issue_tokens(&state, &user).await?))
}

/// Creates an account (when `allow_signup` is on) and signs it in.
async fn signup(
    State(state): State<Arc<RelayState>>,
    Json(creds): Json<Credentials>,
) -> Result<(StatusCode, Json<LoginReply>), CredError> {
    if !state.config.allow_signup {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "sign-up is closed on this relay".into(),
        )
        .into());
    }
    let email = creds.email.trim();
    if !email.contains('@') || email.len() > 254 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "that is not an email address".into(),
        )
        .into());
    }
    if creds.password.chars().count() < 8 || creds.password.len() > 1024 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a password has 8 to 1024 characters".into(),
        )
        .into());
    }
    let password = creds.password.clone();
    let hash = state
        .accounts
        .hashing
        .run(move || auth::hash_password(&password))
        .await
        .map_err(|_| hashing_busy(&state))?
        .map_err(internal)?;
    let user = match state.store.create_user(email, &hash).await {
        Ok(user) => user,
        Err(crate::store::StoreError::Duplicate(_)) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "an account with this email exists; sign in instead".into(),
            )
            .into());
        }
        Err(err) => return Err(internal(err).into()),
    };
    Ok((
        StatusCode::CREATED,
        Json(issue_tokens(&state, &user).await?),
    ))
}

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
    #[serde(default)]
    everywhere: bool,
}

/// Trades a refresh token for a new pair. Each refresh token works once; presenting a
/// used one again means it was copied, so every session of that user is signed out.
async fn refresh(
    State(state): State<Arc<RelayState>>,
    Json(req): Json<RefreshRequest>,
) -> Result<Json<LoginReply>, ApiError> {
    let refused = |why: &str| ApiError(StatusCode::UNAUTHORIZED, why.to_owned());
    let stored = state
        .store
        .refresh_token(&auth::hash_token(&req.refresh_token))
        .await
        .map_err(internal)?
        .ok_or_else(|| refused("unknown refresh token"))?;
    if stored.revoked {
        state
            .store
            .revoke_all_refresh_tokens(&stored.user_id)
            .await
            .map_err(internal)?;
        revoke_access(
            &state,
            &stored.user_id,
            "a used refresh token was presented again",
        )
        .await?;
        crate::metrics::refused("refresh_token_reused");
        tracing::warn!(user_id = %stored.user_id, "refresh token reused: all sessions signed out");
        return Err(refused(
            "this refresh token was already used; sign in again",
        ));
    }
    if stored.expires_at < auth::now_secs() as i64 {
        return Err(refused("the refresh token expired; sign in again"));
    }
    if !state
        .store
        .revoke_refresh_token(&stored.id)
        .await
        .map_err(internal)?
    {
        return Err(refused(
            "this refresh token was already used; sign in again",
        ));
    }
    let user = state
        .store
        .user(&stored.user_id)
        .await
        .map_err(internal)?
        .filter(|u| !u.disabled)
        .ok_or_else(|| refused("the account is disabled or gone"))?;
    Ok(Json(issue_tokens(&state, &user).await?))
}

/// Revokes every access token of a user issued so far, and closes this node's sessions
/// that use one (other nodes close theirs at their next sweep).
async fn revoke_access(state: &RelayState, user_id: &str, why: &str) -> Result<(), ApiError> {
    if let Some(generation) = state
        .store
        .revoke_access_tokens(user_id)
        .await
        .map_err(internal)?
    {
        let closed = state.sessions.revoke(user_id, generation, why);
        tracing::info!(%user_id, closed, why, "access tokens revoked");
    }
    Ok(())
}

/// Signs out: revokes the refresh token (or, with `everywhere`, all of the user's
/// refresh and access tokens, closing the sessions that use them).
async fn logout(
    State(state): State<Arc<RelayState>>,
    Json(req): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let stored = state
        .store
        .refresh_token(&auth::hash_token(&req.refresh_token))
        .await
        .map_err(internal)?;
    if let Some(stored) = stored {
        if req.everywhere {
            state
                .store
                .revoke_all_refresh_tokens(&stored.user_id)
                .await
                .map_err(internal)?;
            revoke_access(&state, &stored.user_id, "signed out everywhere").await?;
            tracing::info!(user_id = %stored.user_id, "signed out everywhere");
        } else {
            state
                .store
                .revoke_refresh_token(&stored.id)
                .await
                .map_err(internal)?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
