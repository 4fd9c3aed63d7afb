//! INSTALL_APP from a browser: download and check the bundle, ask the person at the
//! desktop, install on approval. The browser sees the progress as JSON states:
//! `{"state":"downloading","percent":n}`, `{"state":"pending_approval", …}`,
//! `{"state":"installing"}`, `{"state":"installed","version":…}`.
//!
//! The work runs in its own task: a browser that goes away does not cancel a request
//! the person may still approve.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::InstallError;
use super::approvals::Decision;
use crate::node::NodeContext;

/// How long a request waits for the person before it is dropped.
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often the node looks for a decision.
const DECISION_POLL: Duration = Duration::from_millis(200);

/// Starts an install request; progress states arrive on the returned channel, which
/// closes after the last one. The result says how it ended.
pub fn start(
    ctx: Arc<NodeContext>,
    app_id: String,
    version: Option<String>,
) -> (
    mpsc::Receiver<serde_json::Value>,
    tokio::task::JoinHandle<Result<String, InstallError>>,
) {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move { run(ctx, &app_id, version.as_deref(), tx).await });
    (rx, task)
}

async fn run(
    ctx: Arc<NodeContext>,
    app_id: &str,
    version: Option<&str>,
    tx: mpsc::Sender<serde_json::Value>,
) -> Result<String, InstallError> {
    let installer = ctx
        .installer()
        .cloned()
        .ok_or_else(|| InstallError::Invalid("this node cannot install apps".into()))?;
    // Progress is best effort: a browser that stopped reading must not stall the install.
    let report = |state: serde_json::Value| {
        let _ = tx.try_send(state);
    };
    // Refused before anything is downloaded when too many requests already wait.
    installer.approvals.check_room()?;
    report(serde_json::json!({ "state": "downloading", "percent": 0 }));
    let mut last_percent = 0;
    let fetched = installer
        .fetch(app_id, version, |received, total| {
            if let Some(total) = total.filter(|t| *t > 0) {
                let percent = (received * 100 / total).min(100);
                if percent >= last_percent + 10 {
                    last_percent = percent;
                    report(serde_json::json!({ "state": "downloading", "percent": percent }));
                }
            }
        })
        .await?;
    let request = installer.request_approval(&fetched)?;
    let lines = request.permissions.describe();
    report(serde_json::json!({
        "state": "pending_approval",
        "id": request.id,
        "version": request.version,
        "sha256": request.sha256,
        "permissions": lines,
    }));
    let asks = if lines.is_empty() {
        "nothing beyond running".to_owned()
    } else {
        lines.join("; ")
    };
    tracing::info!(app = %request.id, version = %request.version, %asks, "install requested from the browser; waiting for approval");
    let named = format!(
        "{} --version {} --hash {}",
        request.id,
        request.version,
        request.short_hash()
    );
    println!(
        "Install request from your browser: {} {} ({}, bundle {}) asks to: {asks}.\n  Approve: desktop-node apps approve {named}\n  Deny:    desktop-node apps deny {named}",
        request.name,
        request.version,
        request.id,
        request.short_hash()
    );
    let decision = installer
        .approvals
        .wait(&request, DECISION_POLL, APPROVAL_TIMEOUT)
        .await;
    let result = match decision {
        Some(Decision::Approve) => {
            report(serde_json::json!({ "state": "installing" }));
            // Checking and extracting up to 16 MiB is CPU and disk work.
            let (installer, request) = (installer.clone(), request.clone());
            tokio::task::spawn_blocking(move || installer.install_pending(&request))
                .await
                .map_err(InstallError::other)
                .and_then(|r| r)
                .map(|f| (f, ()))
        }
        Some(Decision::Deny) => Err(InstallError::Denied(format!(
            "{}@{}",
            request.id, request.version
        ))),
        None => Err(InstallError::Denied(format!(
            "{}@{} (no answer within {} minutes)",
            request.id,
            request.version,
            APPROVAL_TIMEOUT.as_secs() / 60
        ))),
    };
    installer.approvals.remove(&request);
    let (fetched, ()) = result?;
    ctx.reload_apps().await;
    installer.report_install(&fetched).await;
    tracing::info!(app = %request.id, version = %request.version, "installed");
    report(serde_json::json!({ "state": "installed", "version": request.version }));
    Ok(request.version)
}
