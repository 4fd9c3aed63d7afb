//! The user's devices: list them, enroll one (`desktop-node login --email`), rename,
//! revoke. Device login without a password is in `super::device_login`.
//!
//! A device is registered before the desktop has stored its token, so a login that
//! fails after that point (the desktop's secret store refuses, the process dies) would
//! leave a device nobody has. A desktop that says it will confirm (`"confirm": true` in
//! the enrollment or the device login's poll: `desktop-node login` does) therefore gets a
//! *pending* device until it says its login finished (`POST /api/device/confirm` with
//! its token) or first connects: a pending device is not listed (here or in the status
//! events), its desktop may withdraw it (`DELETE /api/device/pending`, when storing the
//! token failed), and after `pending_device_ttl_secs` (default 15 minutes) it is deleted
//! and its token refused. Clients that do not say so (nodes from before this) get a
//! finished device at once, as before.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::account::user_plan;
use super::sessions::{CredError, Credentials, check_credentials, client_ip};
use super::{ApiError, bearer, internal};
use crate::auth;
use crate::state::RelayState;

/// `GET /api/devices`, `POST /api/devices/enroll`, `PATCH` and `DELETE /api/devices/{id}`;
/// `POST /api/device/confirm` and `DELETE /api/device/pending` (the desktop, with its
/// token).
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/api/devices", get(list_devices))
        .route("/api/devices/enroll", post(enroll_device))
        .route("/api/device/confirm", post(confirm_device))
        .route(
            "/api/device/pending",
            axum::routing::delete(withdraw_device),
        )
        .route(
            "/api/devices/{id}",
            patch(rename_device).delete(revoke_device),
        )
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
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let claims = bearer(&state, &headers).await?;
    let devices = state
        .store
        .devices_for_user(&claims.sub)
        .await
        .map_err(internal)?;
    let mut views = Vec::with_capacity(devices.len());
    for d in devices {
        views.push(DeviceView {
            // Connected here, or (clustered) to another node.
            online: state.cluster.is_online(&d.id).await,
            id: d.id,
            name: d.name,
            node_version: d.node_version,
            last_seen: d.last_seen,
            identity_key: d.identity_key,
        });
    }
    Ok(Json(views))
}

#[derive(Deserialize)]
struct EnrollRequest {
    email: String,
    password: String,
    name: String,
    /// The desktop confirms once it stored the token: the device is pending till then.
    #[serde(default)]
    confirm: bool,
}

/// A registered device's credentials, as `desktop-node login` stores them.
#[derive(Serialize)]
pub(super) struct EnrollReply {
    pub(super) device_id: String,
    device_token: String,
    quic_port: u16,
    cert_sha256: String,
}

/// `desktop-node login`: creates a device for the user and returns its token once.
async fn enroll_device(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollReply>, CredError> {
    let user = check_credentials(
        &state,
        client_ip(&state, peer, &headers),
        &Credentials {
            email: req.email,
            password: req.password,
            cookie: false,
        },
    )
    .await?;
    Ok(Json(
        register_device(&state, &user, &req.name, req.confirm).await?,
    ))
}

/// Checks the plan's device limit and the name, then registers a device for `user`
/// (pending until the desktop confirms, when it said it will: `pending`); the answer
/// carries its token, which is shown this once. Enrollment with a password and device
/// login (`super::device_login`) both end here.
pub(super) async fn register_device(
    state: &RelayState,
    user: &crate::store::User,
    name: &str,
    pending: bool,
) -> Result<EnrollReply, ApiError> {
    check_device_room(state, user).await?;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a device name has 1 to 100 characters".into(),
        ));
    }
    let token = auth::new_device_token();
    let hash = auth::hash_device_token(&token);
    let device_id = if pending {
        let until = (auth::now_secs() + state.config.pending_device_ttl_secs.max(1)) as i64;
        state
            .store
            .create_pending_device(&user.id, name, &hash, until)
            .await
            .map_err(internal)?
    } else {
        state
            .store
            .create_device(&user.id, name, &hash)
            .await
            .map_err(internal)?
            .id
    };
    Ok(EnrollReply {
        device_id,
        device_token: token,
        // The advertised port (`public_quic_addr`), which may differ from the bound one.
        quic_port: state.config.advertised_quic(state.endpoint.quic_addr).1,
        cert_sha256: hex::encode(state.endpoint.cert_sha256()),
    })
}

/// The device token a desktop presents as `Authorization: Bearer aisa_dt_…`.
fn device_token(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing device token".into()))
}

/// `POST /api/device/confirm`: the desktop stored its token, so its login finished and
/// the device is listed from now on. Also answers for a finished device (a retry).
async fn confirm_device(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = device_token(&headers)?;
    match state
        .store
        .finish_pending_device(&auth::hash_device_token(&token))
        .await
        .map_err(internal)?
    {
        Some(device_id) => {
            tracing::info!(%device_id, "device login finished");
            Ok(Json(serde_json::json!({ "device_id": device_id })))
        }
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "unknown device token (revoked, or its login did not finish in time: run the login again)"
                .into(),
        )),
    }
}

/// `DELETE /api/device/pending`: the desktop could not store its token, so the device
/// its login registered goes (only while its login has not finished).
async fn withdraw_device(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = device_token(&headers)?;
    if state
        .store
        .withdraw_pending_device(&auth::hash_device_token(&token))
        .await
        .map_err(internal)?
    {
        tracing::info!("a device whose login failed was withdrawn");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            "no device with this token is waiting for its login to finish".into(),
        ))
    }
}

/// A 403 when the user's plan has no room for another device.
pub(super) async fn check_device_room(
    state: &RelayState,
    user: &crate::store::User,
) -> Result<(), ApiError> {
    let plan = user_plan(state, user).await?;
    if state
        .store
        .count_devices(&user.id)
        .await
        .map_err(internal)?
        >= plan.max_devices
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "plan limit: the {} plan allows {} devices; remove one first",
                plan.name, plan.max_devices
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct RenameRequest {
    name: String,
}

async fn rename_device(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(req): Json<RenameRequest>,
) -> Result<StatusCode, ApiError> {
    let claims = bearer(&state, &headers).await?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a device name has 1 to 100 characters".into(),
        ));
    }
    if !state
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
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let claims = bearer(&state, &headers).await?;
    if !state
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
    if let Some(online) = state.devices.registry.get(&id) {
        online.connection.close(
            crate::desktop::CLOSE_REVOKED,
            b"unauthenticated: this device was revoked",
        );
    }
    Ok(StatusCode::NO_CONTENT)
}
