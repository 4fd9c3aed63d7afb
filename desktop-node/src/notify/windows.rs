//! Windows: a toast, shown through Windows PowerShell's WinRT classes
//! (`Windows.UI.Notifications.ToastNotificationManager`), which every Windows 10 and 11
//! has, so the node needs no WinRT bindings of its own. The script is a constant; the
//! toast's XML (escaped in [`super::toast_xml`]) and the app id reach it in environment
//! variables, never in its source.
//!
//! **Whose toast.** An unpackaged program may only show toasts under an AppUserModelID
//! that a Start-menu shortcut carries. The installer (packaging/windows/desktop-node.nsi)
//! gives its shortcut *AI SuperApp desktop node* the id [`APP_ID`]
//! (`System.AppUserModel.ID`) and registers that id's display name, "AI SuperApp", under
//! `HKCU\Software\Classes\AppUserModelId\AISuperApp.DesktopNode`; when both are there the
//! toast shows as **AI SuperApp**. Without them (a portable run: the exe copied by hand,
//! or built from source) the toast uses Windows PowerShell's own id, registered on every
//! Windows, and shows as "Windows PowerShell" (with "AI SuperApp" as its attribution
//! line). The choice is made once, when the node starts ([`toast_app_id`]), and logged.
//!
//! A click opens the face through the toast's protocol activation (`launch` = the
//! face's login URL with this launch's token: the toast lives in this user's
//! notification store, which only this user and administrators read, as `face.json`).
//! A decided request's toast is withdrawn from the Action Center by its tag.
//!
//! Not tried on Windows here (Wine has no PowerShell or notification platform): the
//! choice of id runs under Wine (scripts/wine-test.sh: the node logs which one it
//! took, with and without the installer's registration); the toast itself is
//! compile-checked only.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::mpsc;

use super::Note;

/// The node's AppUserModelID, which the installer's Start-menu shortcut carries.
pub(crate) const APP_ID: &str = "AISuperApp.DesktopNode";
/// Where the installer registers [`APP_ID`]'s display name and icon (under HKCU).
const APP_ID_KEY: &str = "Software\\Classes\\AppUserModelId\\AISuperApp.DesktopNode";
/// The installer's shortcut, in the Start menu's Programs folder.
const SHORTCUT: &str = "AI SuperApp\\AI SuperApp desktop node.lnk";
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
    /// The AppUserModelID the toasts are shown under ([`toast_app_id`]).
    app_id: &'static str,
}

impl Backend {
    /// A click opens the face's URL (protocol activation).
    pub(super) const CLICK_OPENS_FACE: bool = true;

    /// Windows PowerShell is part of Windows; a missing one shows at the first toast.
    pub(super) async fn connect(_clicks: mpsc::Sender<u32>) -> Result<Backend, String> {
        Ok(Backend {
            next_tag: AtomicU32::new(1),
            app_id: toast_app_id(),
        })
    }

    /// For the log: which app the toasts show as.
    pub(super) async fn describe(&self) -> String {
        if self.app_id == APP_ID {
            format!(
                "toasts as {} (AppUserModelID {APP_ID} of the installer's Start-menu shortcut; through Windows PowerShell)",
                super::APP_NAME
            )
        } else {
            "toasts as Windows PowerShell (no installer's Start-menu shortcut with the AppUserModelID AISuperApp.DesktopNode: a portable run)".into()
        }
    }

    /// Shows `note`; its tag, to withdraw it.
    pub(super) async fn show(&mut self, note: &Note) -> Result<Option<u32>, String> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        powershell(
            &format!("{LOAD}{SHOW}"),
            self.app_id,
            tag,
            Some(&super::toast_xml(note)),
        )
        .await?;
        Ok(Some(tag))
    }

    /// Withdraws toast `tag` from the Action Center.
    pub(super) async fn close(&mut self, tag: u32) {
        if let Err(err) = powershell(&format!("{LOAD}{REMOVE}"), self.app_id, tag, None).await {
            tracing::debug!(%err, tag, "cannot withdraw a toast");
        }
    }
}

/// The AppUserModelID to show toasts under: [`APP_ID`] when the installer set it up
/// (its Start-menu shortcut is there and the id is registered), else Windows
/// PowerShell's.
fn toast_app_id() -> &'static str {
    let shortcut = super::win32::programs_folder().map(|folder| folder.join(SHORTCUT));
    let registered = super::win32::user_key_exists(APP_ID_KEY);
    choose_app_id(shortcut.is_some_and(|path| path.is_file()), registered)
}

/// [`APP_ID`] only when the shortcut (which carries it) and its registration are both
/// there: a toast under an id no shortcut carries is silently dropped by Windows.
fn choose_app_id(shortcut: bool, registered: bool) -> &'static str {
    if shortcut && registered {
        APP_ID
    } else {
        POWERSHELL_APP_ID
    }
}

/// Runs `script` in a hidden Windows PowerShell with the toast's data in its
/// environment.
async fn powershell(script: &str, app_id: &str, tag: u32, xml: Option<&str>) -> Result<(), String> {
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
        .env("AISA_TOAST_APP", app_id)
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
