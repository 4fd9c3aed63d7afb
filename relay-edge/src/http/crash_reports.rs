//! `POST /api/crash-reports`: desktop nodes whose person agreed (`[crash_reports] upload
//! = true` in `node.toml`) upload the crash reports their panic hook wrote, and the
//! relay keeps them for its operator as files, one JSON document each, under
//! `<dir>/<device id>/<received ms>-<random>.json` (`docs/relay.md`, "Crash reports").
//!
//! The upload is authenticated as the device (`Authorization: Device <token>`, as the
//! install reports are) and bounded three ways, checked in this order: the body's size
//! (`max_bytes`, 413), the device's uploads in the last 24 hours (`per_device_per_day`,
//! 429), and the reports kept in total (`max_reports`, 507: the operator reads and
//! removes them; older ones are never dropped to make room, so one device cannot push
//! out the others'). A report must be a JSON object; the relay adds who sent it and
//! when, and otherwise stores it as sent.
//!
//! What is not here: building and scrubbing reports (the node's `crash` module), and
//! serving them back over HTTP (they are read from the folder, never served).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::Deserialize;

use super::{ApiError, internal};
use crate::state::RelayState;

/// The path desktops upload to.
pub const PATH: &str = "/api/crash-reports";

/// `[crash_reports]`: crash reports uploaded by desktop nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashReportsConfig {
    /// Whether the relay accepts uploads at all (404 when not). Default true.
    pub enabled: bool,
    /// Where they are kept. Default: `crash-reports` in `data_dir`.
    pub dir: Option<PathBuf>,
    /// The largest report accepted, in bytes. Default 65536 (a report is a few KiB: a
    /// backtrace and the last 50 log lines).
    pub max_bytes: usize,
    /// Uploads one device may make in 24 hours. Default 10.
    pub per_device_per_day: usize,
    /// Reports kept in total; further uploads are refused (507) until the operator
    /// removes some. Default 1000.
    pub max_reports: usize,
}

impl Default for CrashReportsConfig {
    fn default() -> Self {
        CrashReportsConfig {
            enabled: true,
            dir: None,
            max_bytes: 64 << 10,
            per_device_per_day: 10,
            max_reports: 1000,
        }
    }
}

/// `POST /api/crash-reports`.
pub(super) fn routes() -> Router<Arc<RelayState>> {
    Router::new().route(PATH, post(upload))
}

/// Serializes the count-then-write of uploads in this process, so two uploads at once
/// cannot both pass a cap with one place left.
static WRITING: Mutex<()> = Mutex::new(());

const DAY: Duration = Duration::from_secs(24 * 3600);

async fn upload(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    let cfg = &state.config.crash_reports;
    if !cfg.enabled {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this relay does not collect crash reports".into(),
        ));
    }
    let refused = |status: StatusCode, result: &'static str, message: String| {
        metrics::counter!("aisa_relay_crash_reports_total", "result" => result).increment(1);
        ApiError(status, message)
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Device "))
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing device token (Authorization: Device <token>)".into(),
            )
        })?;
    let device = state
        .store
        .device_by_token_hash(&crate::auth::hash_device_token(token.trim()))
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown or revoked device token".into(),
            )
        })?;
    let too_large = || {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a crash report is at most {} bytes", cfg.max_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > cfg.max_bytes) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, cfg.max_bytes)
        .await
        .map_err(|_| too_large())?;
    let report: serde_json::Value = serde_json::from_slice(&bytes)
        .ok()
        .filter(serde_json::Value::is_object)
        .ok_or_else(|| {
            refused(
                StatusCode::BAD_REQUEST,
                "invalid",
                "a crash report is a JSON object".into(),
            )
        })?;
    let dir = cfg
        .dir
        .clone()
        .unwrap_or_else(|| state.config.data_dir.join("crash-reports"));
    let (per_device, max_reports) = (cfg.per_device_per_day, cfg.max_reports);
    let device_id = device.id.clone();
    let document = serde_json::json!({
        "device_id": device.id,
        "user_id": device.user_id,
        "node_version": device.node_version,
        "received_at": unix_ms(SystemTime::now()) / 1000,
        "report": report,
    });
    let stored = tokio::task::spawn_blocking(move || {
        store(&dir, &device_id, &document, per_device, max_reports)
    })
    .await
    .map_err(internal)?;
    match stored {
        Ok(name) => {
            metrics::counter!("aisa_relay_crash_reports_total", "result" => "stored").increment(1);
            tracing::info!(device_id = %device.id, file = %name, "crash report stored");
            Ok((
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "stored": name })),
            ))
        }
        Err(Refused::RateLimited) => Err(refused(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("at most {per_device} crash reports per device in 24 hours"),
        )),
        Err(Refused::Full) => Err(refused(
            StatusCode::INSUFFICIENT_STORAGE,
            "full",
            format!("the relay keeps at most {max_reports} crash reports; try again later"),
        )),
        Err(Refused::Io(err)) => Err(internal(err)),
    }
}

/// Why [`store`] did not keep a report.
#[derive(Debug)]
enum Refused {
    /// The device's 24-hour allowance is used up.
    RateLimited,
    /// `max_reports` are kept already.
    Full,
    /// The folder failed.
    Io(std::io::Error),
}

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// When each report in one device's folder was received (Unix ms, from its name).
fn reports_in(dir: &Path) -> std::io::Result<Vec<u128>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".json")
            && let Some(ms) = stem.split('-').next().and_then(|t| t.parse().ok())
        {
            found.push(ms);
        }
    }
    Ok(found)
}

/// Checks the caps and writes `document` as a new file in the device's folder; returns
/// the path relative to `dir`.
fn store(
    dir: &Path,
    device_id: &str,
    document: &serde_json::Value,
    per_device_per_day: usize,
    max_reports: usize,
) -> Result<String, Refused> {
    let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let now = unix_ms(SystemTime::now());
    // Device ids are UUIDs from the store; a path separator would never be one.
    if device_id.is_empty() || device_id.contains(['/', '\\', '.']) {
        return Err(Refused::Io(std::io::Error::other("unexpected device id")));
    }
    let device_dir = dir.join(device_id);
    let recent = reports_in(&device_dir)
        .map_err(Refused::Io)?
        .into_iter()
        .filter(|ms| now.saturating_sub(*ms) < DAY.as_millis())
        .count();
    if recent >= per_device_per_day {
        return Err(Refused::RateLimited);
    }
    let mut total = 0;
    if let Ok(devices) = std::fs::read_dir(dir) {
        for entry in devices.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                total += reports_in(&entry.path()).map_err(Refused::Io)?.len();
            }
        }
    }
    if total >= max_reports {
        return Err(Refused::Full);
    }
    std::fs::create_dir_all(&device_dir).map_err(Refused::Io)?;
    let name = format!(
        "{now}-{}.json",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let text = serde_json::to_vec_pretty(document).map_err(|e| Refused::Io(e.into()))?;
    let partial = device_dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, text).map_err(Refused::Io)?;
    std::fs::rename(&partial, device_dir.join(&name)).map_err(Refused::Io)?;
    Ok(format!("{device_id}/{name}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_caps_count_recent_reports_per_device_and_all_reports() {
        let dir = tempfile::tempdir().unwrap();
        let doc = serde_json::json!({ "report": {} });
        for _ in 0..2 {
            store(dir.path(), "dev-a", &doc, 2, 3).unwrap();
        }
        assert!(matches!(
            store(dir.path(), "dev-a", &doc, 2, 3),
            Err(Refused::RateLimited)
        ));
        store(dir.path(), "dev-b", &doc, 2, 3).unwrap();
        assert!(matches!(
            store(dir.path(), "dev-c", &doc, 2, 3),
            Err(Refused::Full)
        ));
        // Reports older than a day no longer count against their device, but still
        // against the total.
        let old = dir.path().join("dev-a");
        for entry in std::fs::read_dir(&old).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (_, rest) = name.split_once('-').unwrap();
            let day_ago = unix_ms(SystemTime::now()) - DAY.as_millis() - 1;
            std::fs::rename(&path, old.join(format!("{day_ago}-{rest}"))).unwrap();
        }
        assert!(matches!(
            store(dir.path(), "dev-a", &doc, 2, 3),
            Err(Refused::Full)
        ));
        assert!(matches!(
            store(dir.path(), "dev-a", &doc, 2, 4),
            Ok(name) if name.starts_with("dev-a/")
        ));
        assert!(store(dir.path(), "../x", &doc, 9, 9).is_err());
    }
}
