//! The developer portal and the marketplace (HTTP API, `docs/relay.md`).
//!
//! Publishing: an author uploads an unsigned `.aisapp` zip with their access token; the
//! relay reads it with the format's limits, runs the static checks of `aisa_miniapp`,
//! signs it with the platform key ([`crate::signing`]), stores it ([`crate::bundles`])
//! and records the version. The first publisher of an id owns it; versions are
//! immutable; the owner (or the operator, `relay-edge apps yank`) may yank one, which
//! hides it from "latest" but keeps it downloadable by exact version.
//!
//! The marketplace lists apps that have an unyanked version, with search, categories,
//! ratings (one per user) and installs (reported by desktop nodes with their device
//! token). Everything the relay needs to decide here is in the database; bundle bytes
//! only pass through.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{ApiError, bearer, internal};
use crate::state::RelayState;
use crate::store::{AppRow, StoreError, VersionRow};

/// The largest upload `POST /api/portal/apps` accepts: the format's one zip cap
/// ([`aisa_abi::limits::MAX_ZIP_BYTES`], 16 MiB), the most a node downloads too.
pub const MAX_UPLOAD_BYTES: usize = aisa_abi::limits::MAX_ZIP_BYTES as usize;

/// The portal and marketplace routes.
pub fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/api/portal/apps", post(publish))
        .route("/api/portal/apps/{id}/versions/{version}/yank", post(yank))
        .route("/api/marketplace/apps", get(list))
        .route("/api/marketplace/categories", get(categories))
        .route("/api/marketplace/apps/{id}", get(detail))
        .route(
            "/api/marketplace/apps/{id}/versions/{version}/bundle",
            get(download),
        )
        .route("/api/marketplace/apps/{id}/ratings", post(rate))
        .route("/api/marketplace/apps/{id}/installs", post(install))
        .route("/api/platform/keys", get(platform_keys))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.into())
}

/// The newest of `versions` by semantic-version order (unparsable ones ignored).
pub fn newest<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    versions
        .into_iter()
        .filter_map(|v| semver::Version::parse(v).ok().map(|parsed| (parsed, v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

#[derive(Serialize)]
struct Published {
    id: String,
    version: String,
    sha256: String,
    size: u64,
    key_id: String,
}

/// Uploads checked and signed at once; more wait their turn (each holds up to 16 MiB
/// of upload plus as much unpacked).
pub const PUBLISH_CONCURRENCY: usize = 4;

/// Admission for uploads: see [`PUBLISH_CONCURRENCY`].
pub fn publish_slots() -> tokio::sync::Semaphore {
    tokio::sync::Semaphore::new(PUBLISH_CONCURRENCY)
}

fn too_large() -> ApiError {
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the upload is larger than {} MiB, the limit for a bundle",
            MAX_UPLOAD_BYTES >> 20
        ),
    )
}

/// `POST /api/portal/apps`: check, sign, store and publish an uploaded bundle.
///
/// The token is checked before the body is read, and a declared length over the limit
/// is refused at once; the body is then read (counting, up to the limit, within the
/// HTTP body timeout) and only once it is all here does the upload wait for one of the
/// [`PUBLISH_CONCURRENCY`] slots, so a slow upload holds no slot.
async fn publish(
    State(shared): State<Arc<RelayState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let claims = bearer(&shared, &headers).await?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD_BYTES as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, MAX_UPLOAD_BYTES)
        .await
        .map_err(|err| {
            let over = std::error::Error::source(&err)
                .and_then(|e| e.downcast_ref::<http_body_util::LengthLimitError>())
                .is_some();
            if over {
                too_large()
            } else if crate::httpd::BodyTimedOut::is_cause_of(&err) {
                tracing::info!(user_id = %claims.sub, "upload refused: the body came too slowly");
                crate::metrics::refused("body_timeout");
                ApiError(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the upload did not arrive within {} s; try again on a faster connection",
                        shared.config.http_body_timeout_secs
                    ),
                )
            } else {
                bad_request(format!("the upload was not received in full: {err}"))
            }
        })?;
    let _slot = shared
        .market
        .publish_slots
        .acquire()
        .await
        .map_err(internal)?;
    if body.is_empty() {
        return Err(bad_request(
            "the request body is empty; send the .aisapp zip as application/zip",
        ));
    }

    // Reading, checking and signing are CPU work on up to 16 MiB: off the async threads.
    let keys = shared.market.signing.clone();
    let prepared = tokio::task::spawn_blocking(move || crate::signing::prepare(&body, &keys))
        .await
        .map_err(internal)?
        .map_err(bad_request)?;
    let id = prepared.id.clone();
    let version = prepared.version.clone();

    if let Some(app) = shared.store.app(&id).await.map_err(internal)?
        && app.owner_id != claims.sub
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("the app id {id:?} belongs to another author; choose another id"),
        ));
    }
    if shared
        .store
        .app_version(&id, &version)
        .await
        .map_err(internal)?
        .is_some()
    {
        return Err(version_exists(&id, &version));
    }

    let storage_key = crate::bundles::Bundles::new_key(&id, &version);
    let size = prepared.signed.len() as u64;
    shared
        .market
        .bundles
        .put(&storage_key, prepared.signed.clone())
        .await
        .map_err(internal)?;
    match record_version(&shared, &claims.sub, &prepared.row(&storage_key, size)).await {
        Ok(()) => {}
        Err(err) => {
            // Lost a race (or the database failed): the stored copy is nobody's.
            if let Err(cleanup) = shared.market.bundles.delete(&storage_key).await {
                tracing::warn!(err = %cleanup, key = %storage_key, "orphaned bundle left in storage");
            }
            return Err(err);
        }
    }
    metrics::counter!("aisa_publishes_total").increment(1);
    tracing::info!(app = %id, %version, user_id = %claims.sub, sha256 = %prepared.sha256, "published");
    Ok((
        StatusCode::CREATED,
        Json(Published {
            id,
            version,
            sha256: prepared.sha256,
            size,
            key_id: prepared.key_id,
        }),
    ))
}

fn version_exists(id: &str, version: &str) -> ApiError {
    ApiError(
        StatusCode::CONFLICT,
        format!(
            "{id} {version} is already published; versions are immutable, so raise the version"
        ),
    )
}

/// Claims the id (first publisher owns it), adds the version, refreshes the summary.
async fn record_version(
    shared: &RelayState,
    user_id: &str,
    row: &VersionRow,
) -> Result<(), ApiError> {
    let summary = summary_of(&row.app_id, user_id, &row.manifest);
    let app = shared.store.claim_app(&summary).await.map_err(internal)?;
    if app.owner_id != user_id {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "the app id {:?} belongs to another author; choose another id",
                row.app_id
            ),
        ));
    }
    match shared.store.insert_version(row).await {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => return Err(version_exists(&row.app_id, &row.version)),
        Err(err) => return Err(internal(err)),
    }
    refresh_summary(shared, &row.app_id).await
}

/// The shown fields of an app, from a version's `manifest.json` (read as the guest
/// contract's [`aisa_abi::Manifest`]; it passed that check when it was published, and
/// a text that no longer does shows empty fields).
fn summary_of(id: &str, owner_id: &str, manifest: &str) -> AppRow {
    let m = aisa_abi::Manifest::from_json(manifest.as_bytes()).ok();
    let text =
        |f: fn(&aisa_abi::Manifest) -> &str| m.as_ref().map(f).unwrap_or_default().to_owned();
    AppRow {
        id: id.to_owned(),
        owner_id: owner_id.to_owned(),
        name: text(|m| &m.name),
        description: text(|m| &m.description),
        category: text(|m| &m.category),
        author: text(|m| &m.author.name),
        created_at: crate::auth::now_secs() as i64,
    }
}

/// Makes the app's name, description, category and author those of its newest
/// unyanked version (unchanged when every version is yanked).
async fn refresh_summary(shared: &RelayState, id: &str) -> Result<(), ApiError> {
    let versions = shared.store.app_versions(id).await.map_err(internal)?;
    let live = versions.iter().filter(|v| !v.yanked);
    let Some(latest) = newest(live.map(|v| v.version.as_str())) else {
        return Ok(());
    };
    if let Some(row) = versions.iter().find(|v| v.version == latest) {
        let summary = summary_of(id, "", &row.manifest);
        shared
            .store
            .update_app_summary(&summary)
            .await
            .map_err(internal)?;
    }
    Ok(())
}

/// Yanks a version for the operator's CLI (no owner check). Returns whether it existed.
pub async fn yank_version(
    store: &crate::store::Store,
    id: &str,
    version: &str,
) -> Result<bool, StoreError> {
    if !store.set_yanked(id, version, true).await? {
        return Ok(false);
    }
    let versions = store.app_versions(id).await?;
    let latest = newest(
        versions
            .iter()
            .filter(|v| !v.yanked)
            .map(|v| v.version.as_str()),
    );
    if let Some(row) = latest.and_then(|l| versions.iter().find(|v| v.version == l)) {
        store
            .update_app_summary(&summary_of(id, "", &row.manifest))
            .await?;
    }
    Ok(true)
}

/// `POST /api/portal/apps/{id}/versions/{version}/yank`: the owner withdraws a version.
async fn yank(
    State(shared): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let claims = bearer(&shared, &headers).await?;
    let app = shared
        .store
        .app(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("no app {id:?}")))?;
    if app.owner_id != claims.sub {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("only the author of {id} may yank its versions"),
        ));
    }
    if !yank_version(&shared.store, &id, &version)
        .await
        .map_err(internal)?
    {
        return Err(not_found(format!("{id} has no version {version:?}")));
    }
    tracing::info!(app = %id, %version, user_id = %claims.sub, "yanked");
    Ok(Json(
        json!({ "id": id, "version": version, "yanked": true }),
    ))
}

#[derive(Serialize)]
struct Rating {
    average: f64,
    count: i64,
}

impl Rating {
    fn new(sum: i64, count: i64) -> Self {
        let average = if count > 0 {
            // Two decimals are all a person reads.
            ((sum as f64 / count as f64) * 100.0).round() / 100.0
        } else {
            0.0
        };
        Rating { average, count }
    }
}

#[derive(Serialize)]
struct Listed {
    id: String,
    name: String,
    description: String,
    category: String,
    author: String,
    latest_version: Option<String>,
    rating: Rating,
    installs: i64,
}

impl Listed {
    fn new(app: AppRow, latest: Option<String>, rating: Rating, installs: i64) -> Self {
        Listed {
            id: app.id,
            name: app.name,
            description: app.description,
            category: app.category,
            author: app.author,
            latest_version: latest,
            rating,
            installs,
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    category: Option<String>,
}

/// `GET /api/marketplace/apps?q=&category=`.
async fn list(
    State(shared): State<Arc<RelayState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let listings = shared
        .store
        .list_apps(query.q.as_deref(), query.category.as_deref(), false)
        .await
        .map_err(internal)?;
    let apps: Vec<Listed> = listings
        .into_iter()
        .map(|l| {
            let latest = newest(l.live_versions.iter().map(String::as_str)).map(str::to_owned);
            Listed::new(
                l.app,
                latest,
                Rating::new(l.rating_sum, l.rating_count),
                l.installs,
            )
        })
        .collect();
    Ok(Json(json!({ "apps": apps })))
}

/// `GET /api/marketplace/categories`.
async fn categories(State(shared): State<Arc<RelayState>>) -> Result<Json<Value>, ApiError> {
    let categories: Vec<Value> = shared
        .store
        .categories()
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(name, count)| json!({ "name": name, "count": count }))
        .collect();
    Ok(Json(json!({ "categories": categories })))
}

#[derive(Serialize)]
struct VersionView {
    version: String,
    published_at: i64,
    yanked: bool,
    sha256: String,
    size: i64,
    runtime: String,
    /// Where the signed bundle is, relative to the relay's base URL.
    download_url: String,
}

/// A stored JSON document, or null if it does not parse (it did when published).
fn document(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// `GET /api/marketplace/apps/{id}`: the list fields, every version (newest first) and
/// the latest version's permissions and schemas.
async fn detail(
    State(shared): State<Arc<RelayState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let app = shared
        .store
        .app(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("no app {id:?} in the marketplace")))?;
    let mut versions = shared.store.app_versions(&id).await.map_err(internal)?;
    versions.sort_by(|a, b| {
        let parse = |v: &str| semver::Version::parse(v).ok();
        parse(&b.version).cmp(&parse(&a.version))
    });
    let latest = newest(
        versions
            .iter()
            .filter(|v| !v.yanked)
            .map(|v| v.version.as_str()),
    )
    .map(str::to_owned);
    // The schemas shown are the latest's; with every version yanked, the newest's.
    let shown = latest
        .as_deref()
        .and_then(|l| versions.iter().find(|v| v.version == l))
        .or(versions.first());
    let (sum, count) = shared.store.app_rating(&id).await.map_err(internal)?;
    let installs = shared.store.app_installs(&id).await.map_err(internal)?;
    let mut view =
        serde_json::to_value(Listed::new(app, latest, Rating::new(sum, count), installs))
            .map_err(internal)?;
    view["permissions"] = shown.map_or(Value::Null, |v| document(&v.permissions));
    view["action_schema"] = shown.map_or(Value::Null, |v| document(&v.action_schema));
    view["ui_schema"] = shown.map_or(Value::Null, |v| document(&v.ui_schema));
    // JSON objects lose their key order here; the author's order of the actions is kept
    // apart so that forms list them as written.
    view["actions"] = json!(
        shown.map_or_else(Vec::new, |v| aisa_abi::action_schema::action_order(
            &v.action_schema
        ))
    );
    view["versions"] = serde_json::to_value(
        versions
            .into_iter()
            .map(|v| VersionView {
                download_url: format!("/api/marketplace/apps/{id}/versions/{}/bundle", v.version),
                version: v.version,
                published_at: v.published_at,
                yanked: v.yanked,
                sha256: v.sha256,
                size: v.size,
                runtime: v.runtime,
            })
            .collect::<Vec<_>>(),
    )
    .map_err(internal)?;
    Ok(Json(view))
}

/// `GET /api/marketplace/apps/{id}/versions/{version}/bundle`: the signed zip, streamed
/// from bundle storage, with its SHA-256 in `x-aisapp-sha256`. Yanked versions are still
/// served (someone may need exactly that one).
async fn download(
    State(shared): State<Arc<RelayState>>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let row = shared
        .store
        .app_version(&id, &version)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("{id} has no version {version:?}")))?;
    let (size, stream) = shared
        .market
        .bundles
        .stream(&row.storage_key)
        .await
        .map_err(internal)?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(sha) = HeaderValue::from_str(&row.sha256) {
        headers.insert("x-aisapp-sha256", sha);
    }
    // id and version were validated when published: safe in a header.
    if let Ok(disposition) =
        HeaderValue::from_str(&format!("attachment; filename=\"{id}-{version}.aisapp\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct RateRequest {
    stars: i64,
}

/// `POST /api/marketplace/apps/{id}/ratings`: one rating per user; a second replaces
/// the first.
async fn rate(
    State(shared): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<RateRequest>, JsonRejection>,
) -> Result<Json<Rating>, ApiError> {
    let claims = bearer(&shared, &headers).await?;
    let Json(req) = body.map_err(|e| bad_request(format!("expected {{\"stars\": 1..5}}: {e}")))?;
    if !(1..=5).contains(&req.stars) {
        return Err(bad_request("stars must be 1 to 5"));
    }
    if shared.store.app(&id).await.map_err(internal)?.is_none() {
        return Err(not_found(format!("no app {id:?} in the marketplace")));
    }
    let (sum, count) = shared
        .store
        .rate_app(&id, &claims.sub, req.stars)
        .await
        .map_err(internal)?;
    Ok(Json(Rating::new(sum, count)))
}

#[derive(Deserialize)]
struct InstallReport {
    version: String,
}

/// `POST /api/marketplace/apps/{id}/installs` with `Authorization: Device <token>`: a
/// desktop node reports an install. Counted once per device and version.
async fn install(
    State(shared): State<Arc<RelayState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<InstallReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Device "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing device token (Authorization: Device <token>)".into(),
            )
        })?;
    let device = shared
        .store
        .device_by_token_hash(&crate::auth::hash_device_token(token.trim()))
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked device token".into(),
            )
        })?;
    let Json(report) = body.map_err(|e| bad_request(format!("expected {{\"version\"}}: {e}")))?;
    if shared
        .store
        .app_version(&id, &report.version)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(not_found(format!(
            "{id} has no version {:?}",
            report.version
        )));
    }
    if shared
        .store
        .record_install(&id, &report.version, &device.id)
        .await
        .map_err(internal)?
    {
        metrics::counter!("aisa_installs_total", "app" => id.clone()).increment(1);
        tracing::info!(app = %id, version = %report.version, device_id = %device.id, "installed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/platform/keys`: the trusted platform keys; the first signs.
async fn platform_keys(State(shared): State<Arc<RelayState>>) -> Json<Value> {
    Json(json!({ "keys": shared.market.signing.listed() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_is_by_semver_not_by_text() {
        assert_eq!(newest(["1.9.0", "1.10.0", "1.2.0"]), Some("1.10.0"));
        assert_eq!(newest(["2.0.0-beta.1", "1.0.0", "2.0.0"]), Some("2.0.0"));
        assert_eq!(newest(["nonsense", "0.1.0"]), Some("0.1.0"));
        assert_eq!(newest([]), None);
    }

    #[test]
    fn averages_are_rounded_and_zero_without_ratings() {
        assert_eq!(Rating::new(0, 0).average, 0.0);
        assert_eq!(Rating::new(10, 3).average, 3.33);
        assert_eq!(Rating::new(9, 2).average, 4.5);
    }
}
