//! The HTTP API and the web app: sign-in, device list, device enrollment, and what the
//! page needs to open its WebTransport session. The developer portal and the
//! marketplace are in [`crate::marketplace`].

use std::sync::Arc;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{self, Claims};
use crate::server::Shared;

/// The API routes, plus the web app's files when `web_root` is set.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/account", get(account))
        .route("/api/devices", get(list_devices))
        .route("/api/devices/enroll", post(enroll_device))
        .route(
            "/api/devices/{id}",
            patch(rename_device).delete(revoke_device),
        )
        .route("/api/session", get(session_info))
        .merge(crate::marketplace::routes())
        // An unknown API path is a JSON 404, not the web app's index page.
        .route(
            "/api/{*rest}",
            any(|| async { ApiError(StatusCode::NOT_FOUND, "no such API endpoint".into()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    let app = match &shared.config.web_root {
        Some(root) => api.fallback_service(tower_http::services::ServeDir::new(root).fallback(
            tower_http::services::ServeFile::new(root.join("index.html")),
        )),
        None => api,
    };
    app.with_state(shared)
}

/// The metrics listener's routes (`metrics_addr`): `GET /metrics` only, kept off the
/// public API.
pub fn metrics_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(shared): State<Arc<Shared>>| async move { crate::metrics::render(&shared) }),
        )
        .with_state(shared)
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

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
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
async fn issue_tokens(shared: &Shared, user: &crate::store::User) -> Result<LoginReply, ApiError> {
    let token = shared
        .tokens
        .issue_in_generation(&user.id, &user.email, user.token_generation)
        .map_err(internal)?;
    let refresh_token = auth::new_refresh_token();
    let expires_at = (auth::now_secs() + shared.config.refresh_token_ttl_secs) as i64;
    shared
        .store
        .insert_refresh_token(&user.id, &auth::hash_token(&refresh_token), expires_at)
        .await
        .map_err(internal)?;
    Ok(LoginReply {
        token,
        refresh_token,
        user_id: user.id.clone(),
        email: user.email.clone(),
        expires_in: shared.tokens.ttl_secs(),
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
fn hashing_busy(shared: &Shared) -> CredError {
    tracing::info!(
        in_use = shared.hashing.in_use(),
        "sign-in refused: password hashing is saturated"
    );
    crate::metrics::refused("hashing_busy");
    CredError::RetryLater {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the server is busy checking passwords; try again shortly".into(),
        secs: shared.hashing.retry_after_secs(),
    }
}

/// The client's address: the TCP peer, or what a trusted proxy says.
fn client_ip(shared: &Shared, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    shared.proxies.client_ip(peer.ip(), headers)
}

/// Checks email and password; the same answer for an unknown email and a wrong password.
/// Too many failures for the account (the email) or for the client's address (behind
/// `trusted_proxies`, the address they name) within the window are refused with 429
/// before the password is even looked at.
async fn check_credentials(
    shared: &Shared,
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
        .filter_map(|k| shared.logins.check(k, now))
        .max()
    {
        metrics::counter!("relay_logins_total", "result" => "limited").increment(1);
        crate::metrics::refused("login_limited");
        tracing::info!(%client, "sign-in refused: too many failures for the account or address");
        let secs = wait.as_secs().max(1);
        return Err(CredError::RetryLater {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("too many failed sign-ins; try again in {secs} s"),
            secs,
        });
    }
    let result = verify_credentials(shared, creds).await;
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    metrics::counter!("relay_logins_total", "result" => outcome).increment(1);
    match &result {
        Ok(_) => shared.logins.succeeded(&keys[0]),
        Err(CredError::Api(ApiError(StatusCode::UNAUTHORIZED, _))) => {
            keys.iter().for_each(|k| shared.logins.failed(k, now))
        }
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
    shared: &Shared,
    creds: &Credentials,
) -> Result<crate::store::User, CredError> {
    // Longer than sign-up allows: wrong, and not worth hashing.
    if creds.email.len() > 254 || creds.password.len() > 1024 {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "wrong email or password".into()).into());
    }
    let user = shared
        .store
        .user_by_email(&creds.email)
        .await
        .map_err(internal)?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = creds.password.clone();
    let ok = shared
        .hashing
        .run(move || auth::verify_password(&password, hash.as_deref().unwrap_or(dummy_hash())))
        .await
        .map_err(|_| hashing_busy(shared))?;
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
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(creds): Json<Credentials>,
) -> Result<Json<LoginReply>, CredError> {
    let user = check_credentials(&shared, client_ip(&shared, peer, &headers), &creds).await?;
    Ok(Json(issue_tokens(&shared, &user).await?))
}

/// Creates an account (when `allow_signup` is on) and signs it in.
async fn signup(
    State(shared): State<Arc<Shared>>,
    Json(creds): Json<Credentials>,
) -> Result<(StatusCode, Json<LoginReply>), CredError> {
    if !shared.config.allow_signup {
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
    let hash = shared
        .hashing
        .run(move || auth::hash_password(&password))
        .await
        .map_err(|_| hashing_busy(&shared))?
        .map_err(internal)?;
    let user = match shared.store.create_user(email, &hash).await {
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
        Json(issue_tokens(&shared, &user).await?),
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
    State(shared): State<Arc<Shared>>,
    Json(req): Json<RefreshRequest>,
) -> Result<Json<LoginReply>, ApiError> {
    let refused = |why: &str| ApiError(StatusCode::UNAUTHORIZED, why.to_owned());
    let stored = shared
        .store
        .refresh_token(&auth::hash_token(&req.refresh_token))
        .await
        .map_err(internal)?
        .ok_or_else(|| refused("unknown refresh token"))?;
    if stored.revoked {
        shared
            .store
            .revoke_all_refresh_tokens(&stored.user_id)
            .await
            .map_err(internal)?;
        revoke_access(
            &shared,
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
    if !shared
        .store
        .revoke_refresh_token(&stored.id)
        .await
        .map_err(internal)?
    {
        return Err(refused(
            "this refresh token was already used; sign in again",
        ));
    }
    let user = shared
        .store
        .user(&stored.user_id)
        .await
        .map_err(internal)?
        .filter(|u| !u.disabled)
        .ok_or_else(|| refused("the account is disabled or gone"))?;
    Ok(Json(issue_tokens(&shared, &user).await?))
}

/// Revokes every access token of a user issued so far, and closes this node's sessions
/// that use one (other nodes close theirs at their next sweep).
async fn revoke_access(shared: &Shared, user_id: &str, why: &str) -> Result<(), ApiError> {
    if let Some(generation) = shared
        .store
        .revoke_access_tokens(user_id)
        .await
        .map_err(internal)?
    {
        let closed = shared.sessions.revoke(user_id, generation, why);
        tracing::info!(%user_id, closed, why, "access tokens revoked");
    }
    Ok(())
}

/// Signs out: revokes the refresh token (or, with `everywhere`, all of the user's
/// refresh and access tokens, closing the sessions that use them).
async fn logout(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let stored = shared
        .store
        .refresh_token(&auth::hash_token(&req.refresh_token))
        .await
        .map_err(internal)?;
    if let Some(stored) = stored {
        if req.everywhere {
            shared
                .store
                .revoke_all_refresh_tokens(&stored.user_id)
                .await
                .map_err(internal)?;
            revoke_access(&shared, &stored.user_id, "signed out everywhere").await?;
            tracing::info!(user_id = %stored.user_id, "signed out everywhere");
        } else {
            shared
                .store
                .revoke_refresh_token(&stored.id)
                .await
                .map_err(internal)?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
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
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<AccountView>, ApiError> {
    let claims = bearer(&shared, &headers).await?;
    let user = shared
        .store
        .user(&claims.sub)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "the account is gone".into()))?;
    let plan = user_plan(&shared, &user).await?;
    let usage = Usage {
        devices: shared
            .store
            .count_devices(&user.id)
            .await
            .map_err(internal)?,
        actions_today: shared
            .store
            .actions_on(&user.id, &auth::today_utc())
            .await
            .map_err(internal)?,
        open_streams: shared.streams_per_user.open_for(&user.id),
    };
    Ok(Json(AccountView {
        user_id: user.id,
        email: user.email,
        plan,
        usage,
    }))
}

async fn user_plan(
    shared: &Shared,
    user: &crate::store::User,
) -> Result<crate::store::Plan, ApiError> {
    shared
        .store
        .plan(&user.plan_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| internal(format!("user has unknown plan {:?}", user.plan_id)))
}

/// The claims of a request's bearer token, whose user still exists, is not disabled, and
/// has not revoked the token (the same checks every stream gets, so they take effect at
/// once).
pub(crate) async fn bearer(shared: &Shared, headers: &HeaderMap) -> Result<Claims, ApiError> {
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
    let claims = shared
        .tokens
        .verify(token)
        .map_err(|e| refused(e.to_string()))?;
    match shared.store.user(&claims.sub).await.map_err(internal)? {
        Some(user) if user.disabled => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "the account is disabled or gone".into(),
        )),
        Some(user) if claims.generation < user.token_generation => {
            crate::metrics::refused("token_revoked");
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "this access token was revoked (signed out everywhere); sign in again".into(),
            ))
        }
        Some(_) => Ok(claims),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "the account is disabled or gone".into(),
        )),
    }
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
    let claims = bearer(&shared, &headers).await?;
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollReply>, CredError> {
    let user = check_credentials(
        &shared,
        client_ip(&shared, peer, &headers),
        &Credentials {
            email: req.email,
            password: req.password,
        },
    )
    .await?;
    let plan = user_plan(&shared, &user).await?;
    if shared
        .store
        .count_devices(&user.id)
        .await
        .map_err(internal)?
        >= plan.max_devices
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "plan limit: the {} plan allows {} devices; revoke one first",
                plan.name, plan.max_devices
            ),
        )
        .into());
    }
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a device name has 1 to 100 characters".into(),
        )
        .into());
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

#[derive(Deserialize)]
struct RenameRequest {
    name: String,
}

async fn rename_device(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<RenameRequest>,
) -> Result<StatusCode, ApiError> {
    let claims = bearer(&shared, &headers).await?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a device name has 1 to 100 characters".into(),
        ));
    }
    if !shared
        .store
        .rename_device(&claims.sub, &id, name)
        .await
        .map_err(internal)?
    {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no such device in your account".into(),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a device: its token stops working and its live connection is closed.
async fn revoke_device(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let claims = bearer(&shared, &headers).await?;
    if !shared
        .store
        .revoke_device(&claims.sub, &id)
        .await
        .map_err(internal)?
    {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no such device in your account".into(),
        ));
    }
    if let Some(online) = shared.registry.get(&id) {
        online.connection.close(
            crate::desktop::CLOSE_REVOKED.into(),
            b"unauthenticated: this device was revoked",
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ready when the database answers.
async fn readyz(State(shared): State<Arc<Shared>>) -> Result<&'static str, ApiError> {
    shared
        .store
        .ping()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")))?;
    Ok("ready")
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
