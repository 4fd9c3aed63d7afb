//! Native notifications: when an install request from the browser starts waiting for
//! the person's approval, the desktop says so, so nobody has to watch a terminal.
//!
//! The node watches its `pending/` folder (the one `desktop-node apps pending` and the
//! desktop face read, [`aisa_node::installer::approvals`]) twice a second. Every
//! request that appears gets one notification: "Install request: <name> <version>",
//! with the body "<name> wants: <the permission lines the CLI prints>". When the
//! desktop face is served, clicking the notification opens it (its first section lists
//! the waiting requests with Approve and Deny); without the face the body names the
//! `desktop-node apps approve` command. When the request is decided (from the face, the
//! CLI) or times out, the notification is withdrawn where the OS allows it.
//!
//! Per OS (`cfg`):
//! - Linux: `org.freedesktop.Notifications` on the session bus, over zbus ([`linux`]);
//!   the click is the `default` action, answered by the node itself (which opens the
//!   face with [`crate::face::open`]), so the face's token never leaves the node.
//! - macOS: `osascript`'s `display notification` ([`macos`]): Notification Center shows
//!   it, but a click cannot be routed back to the node without an app bundle.
//! - Windows: a toast through Windows PowerShell's WinRT classes ([`windows`]), shown as
//!   "AI SuperApp" under the installer's AppUserModelID when its Start-menu shortcut is
//!   there (else as Windows PowerShell); a click opens the face's login URL through the
//!   toast's protocol activation.
//!
//! Where none of these answers (a server without a D-Bus session, no notification
//! service), the node logs that once and carries on. Nothing here can change a
//! request: the watcher only reads the folder, and every failure ends in the log.
//!
//! The tray icon lives here too (Linux: `tray`, a StatusNotifierItem; Windows:
//! `tray_windows`, a notification-area icon on a thread of its own): it shows the same
//! waiting requests and the connection, opens the face, and its Quit stops the node.
//!
//! Not here: a menu-bar icon on macOS (docs/desktop.md says what is missing), approving from inside the notification (a decision needs the permissions shown in full, which
//! the face does), notifications for anything but install requests (an app's update is
//! an install request; an uninstall from the browser needs no approval, it only takes
//! capability away; rollback is a command the person runs: nothing waits for them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aisa_node::installer::approvals::{Approvals, PendingInstall};
use aisa_node::node::NodeContext;
use tokio::sync::{mpsc, watch};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as platform;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as platform;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod unsupported;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
use unsupported as platform;

/// How often the `pending/` folder is read.
const POLL: Duration = Duration::from_millis(500);
/// The name notifications carry (the application name on Linux, the title elsewhere).
pub const APP_NAME: &str = "AI SuperApp";
/// The most characters of an app's name shown (a name comes from the bundle's author).
const MAX_NAME_CHARS: usize = 64;
/// The most characters of a notification's body.
const MAX_BODY_CHARS: usize = 480;

/// What one notification says about one waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The title line: `Install request: <name> <version>`.
    pub summary: String,
    /// `<name> wants: <permissions>.` and what to do about it.
    pub body: String,
    /// The face's login URL, when the face is served: where a click leads.
    pub open_url: Option<String>,
}

impl Note {
    /// The notification for `request`; `face_url` is the served face's login URL;
    /// `clickable` says whether a click on the notification opens the face.
    pub fn for_request(request: &PendingInstall, face_url: Option<&str>, clickable: bool) -> Note {
        let name = plain(&request.name, MAX_NAME_CHARS);
        let name = if name.is_empty() {
            plain(&request.id, MAX_NAME_CHARS)
        } else {
            name
        };
        let version = plain(&request.version, 32);
        let lines = request.permissions.describe();
        let wants = if lines.is_empty() {
            "no permissions".to_owned()
        } else {
            lines.join("; ")
        };
        let next = match face_url {
            Some(_) if clickable => "Click to review it in the desktop face.".to_owned(),
            Some(_) => "Review it in the desktop face (`desktop-node face` opens it).".to_owned(),
            None => format!(
                "Approve with: desktop-node apps approve {} --version {version} --hash {}",
                plain(&request.id, MAX_NAME_CHARS),
                request.short_hash()
            ),
        };
        let body = plain(&format!("{name} wants: {wants}."), MAX_BODY_CHARS);
        Note {
            summary: format!("Install request: {name} {version}"),
            body: format!("{body}\n{next}"),
            open_url: face_url.map(str::to_owned),
        }
    }
}

/// The Windows toast for `note` (`ToastGeneric`: the summary, the body, and "AI
/// SuperApp" as its attribution, for when it shows as Windows PowerShell's: a portable
/// run without the installer's AppUserModelID); a click
/// opens `open_url` (protocol activation) when there is one. Every text is XML-escaped.
#[cfg_attr(not(windows), allow(dead_code))]
fn toast_xml(note: &Note) -> String {
    let launch = note.open_url.as_deref().map_or(String::new(), |url| {
        format!(
            " activationType=\"protocol\" launch=\"{}\"",
            escape_xml(url)
        )
    });
    format!(
        "<toast{launch}><visual><binding template=\"ToastGeneric\"><text>{}</text><text>{}</text><text placement=\"attribution\">{APP_NAME}</text></binding></visual></toast>",
        escape_xml(&note.summary),
        escape_xml(&note.body)
    )
}

/// `text` as XML character data or an attribute value.
#[cfg_attr(not(windows), allow(dead_code))]
fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` on one line without control characters, at most `max` characters (cut with
/// `…`): app names and versions come from the bundle, which its author wrote.
fn plain(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() <= max {
        return cleaned.to_owned();
    }
    let mut cut: String = cleaned.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What [`watch`] shows.
pub struct Options {
    /// A notification for each new install request (`[notify] enabled`).
    pub notifications: bool,
    /// A tray icon (`[notify] tray`), whose **Quit** sends `true` here.
    pub tray: Option<watch::Sender<bool>>,
}

/// Watches the node's waiting install requests and shows a notification for each new
/// one, and the tray icon, until `stop` turns true. `face_url` is the served face's
/// login URL, if any. Never fails: a desktop without notifications or a tray is logged
/// once.
pub async fn watch(
    ctx: Arc<NodeContext>,
    face_url: Option<String>,
    stop: watch::Receiver<bool>,
    options: Options,
) {
    let Some(installer) = ctx.installer() else {
        return;
    };
    let approvals = installer.approvals.clone();
    let (clicks_tx, clicks) = mpsc::channel(16);
    let backend = if options.notifications {
        match platform::Backend::connect(clicks_tx).await {
            Ok(backend) => {
                let service = backend.describe().await;
                tracing::info!(
                    %service,
                    "desktop notifications on: install requests waiting for approval are announced"
                );
                Some(backend)
            }
            Err(reason) => {
                tracing::info!(
                    %reason,
                    "no desktop notifications (install requests still show in `desktop-node apps pending` and the desktop face)"
                );
                None
            }
        }
    } else {
        None
    };
    let online = ctx.online();
    let tray = match options.tray {
        Some(quit) => {
            let connected = *online.borrow();
            TrayIcon::show(face_url.clone(), connected, quit).await
        }
        None => None,
    };
    if backend.is_none() && tray.is_none() {
        return;
    }
    Watcher {
        backend,
        tray,
        tray_state: None,
        online,
        approvals,
        face_url,
        shown: BTreeMap::new(),
        failed_once: false,
    }
    .run(clicks, stop)
    .await;
}

#[cfg(target_os = "linux")]
mod tray;
#[cfg(target_os = "linux")]
use tray::Tray as TrayIcon;
#[cfg(windows)]
mod tray_windows;
#[cfg(windows)]
use tray_windows::Tray as TrayIcon;
#[cfg(windows)]
mod win32;

/// The tray's state line, in its menu and tooltip (every OS): the connection, and what
/// waits.
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
fn tray_summary(connected: bool, waiting: usize) -> String {
    let connection = if connected {
        "Connected to the relay"
    } else {
        "Not connected to the relay"
    };
    match waiting {
        0 => connection.to_owned(),
        1 => format!("{connection}; 1 install request waits"),
        n => format!("{connection}; {n} install requests wait"),
    }
}

/// The tray's **Open** (and a click on the icon): opens the face, or says in the log
/// how to turn it on.
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
fn open_face_from_tray(face_url: Option<&str>) {
    match face_url {
        Some(url) => {
            tracing::info!("tray: opening the desktop face");
            if let Err(err) = crate::face::open(url) {
                tracing::warn!(err = %format!("{err:#}"), "cannot open the desktop face");
            }
        }
        None => tracing::info!(
            "tray: the desktop face is off (start the node with `run --face`, or `[face] enabled = true`)"
        ),
    }
}

/// No tray icon on macOS yet (docs/desktop.md).
#[cfg(not(any(target_os = "linux", windows)))]
struct TrayIcon;

#[cfg(not(any(target_os = "linux", windows)))]
impl TrayIcon {
    async fn show(_: Option<String>, _: bool, _: watch::Sender<bool>) -> Option<TrayIcon> {
        tracing::info!("no tray icon on this operating system yet");
        None
    }

    async fn update(&self, _connected: bool, _waiting: usize) {}

    async fn remove(self) {}
}

/// The watch loop's state.
struct Watcher {
    /// The notification service, if there is one.
    backend: Option<platform::Backend>,
    /// The tray icon, if shown, and what it shows (connected, waiting requests).
    tray: Option<TrayIcon>,
    tray_state: Option<(bool, usize)>,
    /// Whether the node is connected to its relay.
    online: watch::Receiver<bool>,
    approvals: Approvals,
    face_url: Option<String>,
    /// Requests already announced (by `PendingInstall::key`), with the handle the OS
    /// gave the notification, if any.
    shown: BTreeMap<String, Option<u32>>,
    /// Whether a failure was logged as a warning already (later ones go to debug).
    failed_once: bool,
}

impl Watcher {
    async fn run(mut self, mut clicks: mpsc::Receiver<u32>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sync().await,
                Some(id) = clicks.recv() => self.clicked(id),
                () = &mut stopped => break,
            }
        }
        // The node stops: its requests' notifications would lead to a face that is gone.
        if let Some(backend) = &mut self.backend {
            for id in std::mem::take(&mut self.shown).into_values().flatten() {
                backend.close(id).await;
            }
        }
        if let Some(tray) = self.tray.take() {
            tray.remove().await;
        }
    }

    /// Announces new requests, withdraws decided ones, keeps the tray icon current.
    async fn sync(&mut self) {
        let approvals = self.approvals.clone();
        let waiting = tokio::task::spawn_blocking(move || approvals.list())
            .await
            .unwrap_or_default();
        if let Some(tray) = &self.tray {
            let connected = *self.online.borrow();
            let state = (connected, waiting.len());
            if self.tray_state != Some(state) {
                self.tray_state = Some(state);
                tray.update(state.0, state.1).await;
            }
        }
        let Some(backend) = &mut self.backend else {
            return;
        };
        for request in &waiting {
            let key = request.key();
            if self.shown.contains_key(&key) {
                continue;
            }
            let note = Note::for_request(
                request,
                self.face_url.as_deref(),
                platform::Backend::CLICK_OPENS_FACE,
            );
            let id = match backend.show(&note).await {
                Ok(id) => {
                    tracing::info!(app = %request.id, version = %request.version, "install request announced on the desktop");
                    id
                }
                Err(reason) => {
                    if self.failed_once {
                        tracing::debug!(%reason, "cannot show a desktop notification");
                    } else {
                        self.failed_once = true;
                        tracing::warn!(%reason, "cannot show a desktop notification (the request still waits in the desktop face and `desktop-node apps pending`)");
                    }
                    None
                }
            };
            // Once per request, shown or not: a failing service is not asked again.
            self.shown.insert(key, id);
        }
        let gone: Vec<String> = self
            .shown
            .keys()
            .filter(|key| !waiting.iter().any(|r| &r.key() == *key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(Some(id)) = self.shown.remove(&key) {
                backend.close(id).await;
            }
        }
    }

    /// A notification of ours was clicked: open the face.
    fn clicked(&self, id: u32) {
        if !self.shown.values().any(|shown| *shown == Some(id)) {
            return;
        }
        let Some(url) = &self.face_url else { return };
        tracing::info!("notification clicked: opening the desktop face");
        if let Err(err) = crate::face::open(url) {
            tracing::warn!(err = %format!("{err:#}"), "cannot open the desktop face");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aisa_node::installer::layout::ApprovedPermissions;

    fn request(name: &str, permissions: ApprovedPermissions) -> PendingInstall {
        PendingInstall {
            id: "seo-writer".into(),
            version: "1.0.0".into(),
            name: name.into(),
            permissions,
            sha256: "3f9a0c51d2e4".repeat(5) + "abcd",
            bundle_path: "/nonexistent".into(),
            requested_at: 0,
        }
    }

    #[test]
    fn the_body_names_the_app_and_what_it_wants() {
        let permissions = ApprovedPermissions {
            ai: true,
            network: vec!["api.example.com".into()],
            ..Default::default()
        };
        let note = Note::for_request(
            &request("SEO Writer", permissions),
            Some("http://127.0.0.1:1/login?token=t"),
            true,
        );
        assert_eq!(note.summary, "Install request: SEO Writer 1.0.0");
        assert_eq!(
            note.body,
            "SEO Writer wants: use your AI provider (with your key, on this machine); connect to api.example.com.\nClick to review it in the desktop face."
        );
        assert_eq!(
            note.open_url.as_deref(),
            Some("http://127.0.0.1:1/login?token=t")
        );
    }

    #[test]
    fn where_a_click_cannot_reach_the_node_the_body_names_the_command() {
        let note = Note::for_request(
            &request("SEO Writer", Default::default()),
            Some("http://127.0.0.1:1/login?token=t"),
            false,
        );
        assert!(
            note.body
                .ends_with("\nReview it in the desktop face (`desktop-node face` opens it)."),
            "{}",
            note.body
        );
    }

    #[test]
    fn without_the_face_the_body_names_the_command() {
        let note = Note::for_request(&request("SEO Writer", Default::default()), None, true);
        assert_eq!(
            note.body,
            "SEO Writer wants: no permissions.\nApprove with: desktop-node apps approve seo-writer --version 1.0.0 --hash 3f9a0c51d2e4"
        );
        assert_eq!(note.open_url, None);
    }

    #[test]
    fn the_windows_toast_escapes_every_text() {
        let note = Note {
            summary: "Install request: <Fish & \"Chips\"> 1.0".into(),
            body: "x wants: y".into(),
            open_url: Some("http://127.0.0.1:5/login?token=ab&x='1'".into()),
        };
        assert_eq!(
            toast_xml(&note),
            "<toast activationType=\"protocol\" launch=\"http://127.0.0.1:5/login?token=ab&amp;x=&apos;1&apos;\"><visual><binding template=\"ToastGeneric\"><text>Install request: &lt;Fish &amp; &quot;Chips&quot;&gt; 1.0</text><text>x wants: y</text><text placement=\"attribution\">AI SuperApp</text></binding></visual></toast>"
        );
        let note = Note {
            open_url: None,
            ..note
        };
        assert!(toast_xml(&note).starts_with("<toast><visual>"));
    }

    #[test]
    fn an_authors_name_cannot_break_lines_or_flood() {
        let long = "x".repeat(500);
        let note = Note::for_request(
            &request(&format!("Evil\nApp\u{7}{long}"), Default::default()),
            None,
            false,
        );
        assert!(!note.summary.contains('\n'), "{}", note.summary);
        assert!(note.summary.starts_with("Install request: Evil App"));
        assert!(note.summary.chars().count() < MAX_NAME_CHARS + 40);
        let first = note.body.lines().next().unwrap();
        assert!(first.chars().count() <= MAX_BODY_CHARS, "{first}");
        assert!(first.contains('…'));
        // An empty name falls back to the id.
        let note = Note::for_request(&request(" ", Default::default()), None, false);
        assert_eq!(note.summary, "Install request: seo-writer 1.0.0");
    }
}
