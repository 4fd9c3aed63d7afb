//! macOS: Notification Center, through `osascript`'s `display notification` (the
//! AppleScript command every macOS has; no app bundle or entitlement needed).
//!
//! The texts travel as the script's arguments (`on run argv`), never inside the script's
//! source, so an app's name cannot become AppleScript. Limits: the notification is
//! shown as coming from Script Editor, a click cannot reach the node (so the body says
//! to open the face with `desktop-node face`), and it cannot be withdrawn. A native
//! `UNUserNotificationCenter` notification needs a signed app bundle, which the node's
//! archive is not (docs/desktop.md).

use tokio::sync::mpsc;

use super::{APP_NAME, Note};

/// `osascript`.
pub(super) struct Backend;

/// The script: title, subtitle and body are its arguments.
const SCRIPT: [&str; 3] = [
    "on run argv",
    "display notification (item 3 of argv) with title (item 1 of argv) subtitle (item 2 of argv)",
    "end run",
];

impl Backend {
    /// A click opens Script Editor, not the face.
    pub(super) const CLICK_OPENS_FACE: bool = false;

    /// Always there on macOS (`/usr/bin/osascript`).
    pub(super) async fn connect(_clicks: mpsc::Sender<u32>) -> Result<Backend, String> {
        if std::path::Path::new("/usr/bin/osascript").exists() {
            Ok(Backend)
        } else {
            Err("/usr/bin/osascript is missing".into())
        }
    }

    /// For the log.
    pub(super) async fn describe(&self) -> String {
        "Notification Center (osascript)".into()
    }

    /// Shows `note`; it has no id to withdraw it with.
    pub(super) async fn show(&mut self, note: &Note) -> Result<Option<u32>, String> {
        let mut command = tokio::process::Command::new("/usr/bin/osascript");
        for line in SCRIPT {
            command.arg("-e").arg(line);
        }
        let output = command
            .arg(APP_NAME)
            .arg(&note.summary)
            .arg(&note.body)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|err| format!("cannot run osascript ({err})"))?;
        if output.status.success() {
            Ok(None)
        } else {
            Err(format!(
                "osascript failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Notification Center's notifications cannot be withdrawn from a script.
    pub(super) async fn close(&mut self, _id: u32) {}
}
