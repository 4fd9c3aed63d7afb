//! Windows: a toast, shown through Windows PowerShell's WinRT classes
//! (`Windows.UI.Notifications.ToastNotificationManager`), which every Windows 10 and 11
//! has. Why PowerShell and not the `windows` crate's WinRT bindings in the node: an
//! unpackaged program may only show toasts under an AppUserModelID that a Start-menu
//! shortcut registers, and the node's installer does not set one yet; PowerShell's own
//! id is registered on every Windows, so the toast shows as coming from "Windows
//! PowerShell". The script is a constant; the toast's XML (escaped in
//! [`super::toast_xml`]) reaches it in an environment variable, never in its source.
//!
//! A click opens the face through the toast's protocol activation (`launch` = the
//! face's login URL with this launch's token: the toast lives in this user's
//! notification store, which only this user and administrators read, as `face.json`).
//! A decided request's toast is withdrawn from the Action Center by its tag.
//!
//! Not tried on Windows here (Wine has no PowerShell or notification platform): checked
//! with `cargo check --target x86_64-pc-windows-gnu` only.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::mpsc;

use super::Note;

/// Windows PowerShell's AppUserModelID, registered on every Windows.
const POWERSHELL_APP_ID: &str =
    "{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\\WindowsPowerShell\\v1.0\\powershell.exe";
/// The group of the node's toasts.
const GROUP: &str = "aisa-install";
/// No console window for the PowerShell child.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

const LOAD: &str = "$ErrorActionPreference = 'Stop'; \
[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType = WindowsRuntime] > $null; \
[Windows.Data.Xml.Dom.XmlDocument, Windows.Data.Xml.Dom.XmlDocument, ContentType = WindowsRuntime] > $null; ";

const SHOW: &str = "$xml = New-Object Windows.Data.Xml.Dom.XmlDocument; \
$xml.LoadXml($env:AISA_TOAST_XML); \
$toast = New-Object Windows.UI.Notifications.ToastNotification $xml; \
$toast.Tag = $env:AISA_TOAST_TAG; $toast.Group = $env:AISA_TOAST_GROUP; \
[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier($env:AISA_TOAST_APP).Show($toast)";

const REMOVE: &str = "[Windows.UI.Notifications.ToastNotificationManager]::History.Remove($env:AISA_TOAST_TAG, $env:AISA_TOAST_GROUP, $env:AISA_TOAST_APP)";

/// Toasts through `powershell.exe`.
pub(super) struct Backend {
    next_tag: AtomicU32,
}

impl Backend {
    /// A click opens the face's URL (protocol activation).
    pub(super) const CLICK_OPENS_FACE: bool = true;

    /// Windows PowerShell is part of Windows; a missing one shows at the first toast.
    pub(super) async fn connect(_clicks: mpsc::Sender<u32>) -> Result<Backend, String> {
        Ok(Backend {
            next_tag: AtomicU32::new(1),
        })
    }

    /// For the log.
    pub(super) async fn describe(&self) -> String {
        "toasts (through Windows PowerShell)".into()
    }

    /// Shows `note`; its tag, to withdraw it.
    pub(super) async fn show(&mut self, note: &Note) -> Result<Option<u32>, String> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        powershell(&format!("{LOAD}{SHOW}"), tag, Some(&super::toast_xml(note))).await?;
        Ok(Some(tag))
    }

    /// Withdraws toast `tag` from the Action Center.
    pub(super) async fn close(&mut self, tag: u32) {
        if let Err(err) = powershell(&format!("{LOAD}{REMOVE}"), tag, None).await {
            tracing::debug!(%err, tag, "cannot withdraw a toast");
        }
    }
}

/// Runs `script` in a hidden Windows PowerShell with the toast's data in its
/// environment.
async fn powershell(script: &str, tag: u32, xml: Option<&str>) -> Result<(), String> {
    let mut command = tokio::process::Command::new("powershell.exe");
    command
        .args([
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-Command",
            script,
        ])
        .env("AISA_TOAST_TAG", tag.to_string())
        .env("AISA_TOAST_GROUP", GROUP)
        .env("AISA_TOAST_APP", POWERSHELL_APP_ID)
        .stdin(std::process::Stdio::null())
        .creation_flags(CREATE_NO_WINDOW)
        .kill_on_drop(true);
    if let Some(xml) = xml {
        command.env("AISA_TOAST_XML", xml);
    }
    let output = command
        .output()
        .await
        .map_err(|err| format!("cannot run powershell.exe ({err})"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "powershell.exe failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
