//! Sign-up, sign-in, token refresh and sign-out (`/api/auth/*`), the sessions list, and
//! the credential check device enrollment shares: per-account and per-address sign-in
//! limits, bounded password hashing, refresh tokens that work once.
//!
//! The web app keeps its refresh token in a cookie it cannot read ([`REFRESH_COOKIE`]:
//! `HttpOnly`, `Secure`, `SameSite=Strict`, `Path=/api/auth`), asked for with
//! `"cookie": true` at sign-in, and its access token in memory only; a reload signs in
//! again with one `POST /api/auth/refresh`. Other clients (the CLI, tests) get the
//! refresh token in the JSON answer as before.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, bearer, internal};
use crate::auth;
use crate::state::RelayState;

/// `POST /api/auth/signup`, `/login`, `/refresh` and `/logout`; `GET /api/auth/sessions`
/// and `DELETE /api/auth/sessions/{id}`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/sessions", get(list_sessions))
        .route("/api/auth/sessions/{id}", delete(end_session))
}

/// The web app's refresh-token cookie.
pub(crate) const REFRESH_COOKIE: &str = "aisa_refresh";

/// Where the cookie is sent: the token endpoints only, never the rest of the API.
const COOKIE_PATH: &str = "/api/auth";

/// How long after a refresh the used token may come again in the cookie without
/// counting as a stolen copy: two tabs of one browser refreshing at the same moment send
/// the same cookie.
const REUSE_GRACE_SECS: i64 = 10;

/// An email and a password.
#[derive(Deserialize)]
pub(super) struct Credentials {
    pub(super) email: String,
    pub(super) password: String,
    /// Put the refresh token in [`REFRESH_COOKIE`] instead of the answer (the web app).
    #[serde(default)]
    pub(super) cookie: bool,
}

/// The answer to a sign-in, sign-up or refresh.
#[derive(Serialize)]
pub(super) struct LoginReply {
    token: String,
    /// Absent when the refresh token went into the cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    user_id: String,
    email: String,
    expires_in: u64,
}

/// A login answer, with the `Set-Cookie` header when the refresh token goes in the
/// cookie.
pub(super) struct Issued {
    reply: LoginReply,
    cookie: Option<String>,
}

impl Issued {
    /// The `Set-Cookie` value carrying the refresh token, when it goes in the cookie.
    pub(super) fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }
}

impl IntoResponse for Issued {
    fn into_response(self) -> Response {
        match self.cookie {
            Some(cookie) => (
                [
                    (axum::http::header::SET_COOKIE, cookie),
                    (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                Json(self.reply),
            )
                .into_response(),
            None => Json(self.reply).into_response(),
        }
    }
}

/// The `Set-Cookie` value carrying `token` (or, with `None`, deleting the cookie).
pub(super) fn refresh_cookie(token: Option<&str>, max_age_secs: u64) -> String {
    let (value, max_age) = match token {
        Some(token) => (token, max_age_secs),
        None => ("", 0),
    };
    format!(
        "{REFRESH_COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    )
}

/// The refresh token in the request's cookie, if any.
pub(super) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == REFRESH_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// A session to continue (its id, start and `auth_time`) on a refresh, or a new one at
/// sign-in with the browser's `User-Agent`.
pub(super) enum SessionOf<'a> {
    /// A password sign-in (or sign-up): the person proved who they are now.
    New(&'a HeaderMap),
    /// A sign-in with an OpenID provider, which says when the person authenticated
    /// there (the ID token's `auth_time`; `None` when it did not say).
    Provider(&'a HeaderMap, Option<i64>),
    /// A refresh: the same session, the same `auth_time`.
    Continue(&'a crate::store::SessionToken),
}

/// A fresh access token and refresh token for a user, the refresh token in the cookie
/// when `cookie` is set.
pub(super) async fn issue_tokens(
    state: &RelayState,
    user: &crate::store::User,
    session: SessionOf<'_>,
    cookie: bool,
) -> Result<Issued, ApiError> {
    let now = auth::now_secs() as i64;
    let agent = |headers: &'_ HeaderMap| -> Option<String> {
        headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (continued, user_agent, auth_time) = match &session {
        SessionOf::New(headers) => (None, agent(headers), Some(now)),
        // A provider's clock a little ahead of ours proves no later sign-in than now.
        SessionOf::Provider(headers, at) => (None, agent(headers), at.map(|t| t.min(now))),
        SessionOf::Continue(old) => (
            Some((old.session_id.as_str(), old.session_started)),
            old.user_agent.clone(),
            old.auth_time,
        ),
    };
    let token = state
        .accounts
        .tokens
        .issue_for_session(&user.id, &user.email, user.token_generation, auth_time)
        .map_err(internal)?;
    let refresh_token = auth::new_refresh_token();
    let ttl = state.config.refresh_token_ttl_secs;
    let expires_at = (auth::now_secs() + ttl) as i64;
    state
        .store
        .insert_session_token(
            &user.id,
            &auth::hash_token(&refresh_token),
            expires_at,
            continued,
            user_agent.as_deref(),
            auth_time,
        )
        .await
        .map_err(internal)?;
    // The user's first streams then find the record in memory (`crate::facts`).
    state.store.cached_user(&user.id).await.map_err(internal)?;
    let (refresh_token, cookie) = if cookie {
        (None, Some(refresh_cookie(Some(&refresh_token), ttl)))
    } else {
        (Some(refresh_token), None)
    };
    Ok(Issued {
        reply: LoginReply {
            token,
            refresh_token,
            user_id: user.id.clone(),
            email: user.email.clone(),
            expires_in: state.accounts.tokens.ttl_secs(),
        },
        cookie,
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
    // In a cluster, the failures every node counted (`LoginLimiter::wait`).
    let mut waits = Vec::with_capacity(keys.len());
    for key in &keys {
        waits.push(state.accounts.logins.wait(key, now).await);
    }
    if let Some(wait) = waits.into_iter().flatten().max() {
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
) -> Result<Issued, CredError> {
    let user = check_credentials(&state, client_ip(&state, peer, &headers), &creds).await?;
    Ok(issue_tokens(&state, &user, SessionOf::New(&headers), creds.cookie).await?)
}

/// Creates an account (when `allow_signup` is on) and signs it in.
async fn signup(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Json(creds): Json<Credentials>,
) -> Result<(StatusCode, Issued), CredError> {
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
        issue_tokens(&state, &user, SessionOf::New(&headers), creds.cookie).await?,
    ))
}

/// The body of `/refresh` and `/logout`: the refresh token, or none when it is in the
/// cookie.
#[derive(Deserialize)]
struct RefreshRequest {
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    everywhere: bool,
}

impl RefreshRequest {
    /// The token presented (the body's, else the cookie's) and whether it came in the
    /// cookie.
    fn token(&self, headers: &HeaderMap) -> Option<(String, bool)> {
        match &self.refresh_token {
            Some(token) => Some((token.clone(), false)),
            None => cookie_token(headers).map(|t| (t, true)),
        }
    }
}

/// A 401 for `/refresh`; one that came with the cookie also deletes it, so that the
/// page does not present a dead token again.
fn refresh_refused(why: &str, cookie: bool) -> Response {
    let err = ApiError(StatusCode::UNAUTHORIZED, why.to_owned());
    if cookie {
        (
            [(axum::http::header::SET_COOKIE, refresh_cookie(None, 0))],
            err,
        )
            .into_response()
    } else {
        err.into_response()
    }
}

/// Trades a refresh token for a new pair. Each refresh token works once; presenting a
/// used one again means it was copied, so every session of that user is signed out
/// (except in the cookie within [`REUSE_GRACE_SECS`] of its use, which is two tabs
/// refreshing at once: refused, nothing else). A token revoked without being used (its session was signed
/// out) is refused, nothing else.
async fn refresh(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Json(req): Json<RefreshRequest>,
) -> Result<Response, ApiError> {
    let Some((presented, cookie)) = req.token(&headers) else {
        return Ok(refresh_refused("not signed in", false));
    };
    let Some(stored) = state
        .store
        .session_token(&auth::hash_token(&presented))
        .await
        .map_err(internal)?
    else {
        return Ok(refresh_refused("unknown refresh token", cookie));
    };
    if stored.revoked {
        let now = auth::now_secs() as i64;
        match stored.rotated_at {
            // Ended by a sign-out, a password change or the sessions list, not used: a
            // browser that was signed out, not a copy.
            None => {
                return Ok(refresh_refused(
                    "this session was signed out; sign in again",
                    cookie,
                ));
            }
            // Not the cookie's fault: another tab has the new one in the same jar. (A
            // token sent in the body is no tab's: reused, it was copied.)
            Some(at) if cookie && now - at <= REUSE_GRACE_SECS => {
                return Ok(ApiError(
                    StatusCode::UNAUTHORIZED,
                    "this refresh token was just used; try again".into(),
                )
                .into_response());
            }
            Some(_) => {}
        }
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
        return Ok(refresh_refused(
            "this refresh token was already used; sign in again",
            cookie,
        ));
    }
    if stored.expires_at < auth::now_secs() as i64 {
        return Ok(refresh_refused(
            "the refresh token expired; sign in again",
            cookie,
        ));
    }
    if !state
        .store
        .rotate_refresh_token(&stored.id)
        .await
        .map_err(internal)?
    {
        return Ok(ApiError(
            StatusCode::UNAUTHORIZED,
            "this refresh token was just used; try again".into(),
        )
        .into_response());
    }
    let Some(user) = state
        .store
        .user(&stored.user_id)
        .await
        .map_err(internal)?
        .filter(|u| !u.disabled)
    else {
        return Ok(refresh_refused("the account is disabled or gone", cookie));
    };
    Ok(
        issue_tokens(&state, &user, SessionOf::Continue(&stored), cookie)
            .await?
            .into_response(),
    )
}

/// Revokes every access token of a user issued so far, and closes this node's sessions
/// that use one (other nodes close theirs at their next sweep).
pub(super) async fn revoke_access(
    state: &RelayState,
    user_id: &str,
    why: &str,
) -> Result<(), ApiError> {
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
/// refresh and access tokens, closing the sessions that use them), and deletes the
/// cookie.
async fn logout(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Json(req): Json<RefreshRequest>,
) -> Result<Response, ApiError> {
    let presented = req.token(&headers);
    let stored = match &presented {
        Some((token, _)) => state
            .store
            .session_token(&auth::hash_token(token))
            .await
            .map_err(internal)?,
        None => None,
    };
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
                .revoke_session(&stored.user_id, &stored.session_id)
                .await
                .map_err(internal)?;
        }
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(axum::http::header::SET_COOKIE, refresh_cookie(None, 0))],
    )
        .into_response())
}

/// One entry of `GET /api/auth/sessions`.
#[derive(Serialize)]
struct SessionEntry {
    #[serde(flatten)]
    session: crate::store::SessionView,
    /// The session this request's cookie belongs to.
    current: bool,
}

/// The user's live sessions (signed-in browsers and CLIs), the current one marked.
async fn list_sessions(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<SessionEntry>>, ApiError> {
    let claims = bearer(&state, &headers).await?;
    let current = match cookie_token(&headers) {
        Some(token) => state
            .store
            .session_token(&auth::hash_token(&token))
            .await
            .map_err(internal)?
            .map(|t| t.session_id),
        None => None,
    };
    let sessions = state
        .store
        .sessions_for_user(&claims.sub)
        .await
        .map_err(internal)?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|session| SessionEntry {
                current: current.as_deref() == Some(session.id.as_str()),
                session,
            })
            .collect(),
    ))
}

/// Ends one of the user's sessions: its refresh token stops working (its access token
/// runs out within `access_token_ttl_secs`).
async fn end_session(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let claims = bearer(&state, &headers).await?;
    if state
        .store
        .revoke_session(&claims.sub, &id)
        .await
        .map_err(internal)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            "no such session in your account".into(),
        ))
    }
}
