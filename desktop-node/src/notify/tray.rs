//! Linux: a tray icon, a StatusNotifierItem (the `ksni` crate, on the same zbus as the
//! notifications), which KDE Plasma, XFCE, LXQt, Cinnamon, waybar and GNOME (with the
//! AppIndicator extension, on by default in Ubuntu) show.
//!
//! The icon says whether the node is connected to its relay and how many install
//! requests wait (it asks for attention then); a click, or **Open** in its menu, opens
//! the desktop face; **Quit** stops the node as Ctrl-C or SIGTERM do (running actions
//! finish, the relay is told). Without a StatusNotifierWatcher on the session bus (no
//! tray on this desktop, a server) the node logs that once and runs without one.
//!
//! Not here: a tray on macOS (a menu-bar item: it needs an event loop on the main
//! thread, which the node does not have; docs/desktop.md). Windows has its own
//! (`tray_windows.rs`), with the same menu.

use ksni::TrayMethods;
use ksni::menu::{MenuItem, StandardItem};
use tokio::sync::watch;

use super::APP_NAME;

/// The tray icon's state.
pub(super) struct NodeTray {
    /// The face's login URL, when it is served.
    face_url: Option<String>,
    /// Whether the node is connected to its relay.
    connected: bool,
    /// How many install requests wait.
    waiting: usize,
    /// Turned true by **Quit**: the node's own stop signal.
    quit: watch::Sender<bool>,
}

impl NodeTray {
    fn open_face(&self) {
        super::open_face_from_tray(self.face_url.as_deref());
    }

    /// One line for people: the connection, and what waits.
    fn summary(&self) -> String {
        super::tray_summary(self.connected, self.waiting)
    }
}

impl ksni::Tray for NodeTray {
    fn id(&self) -> String {
        "aisuperapp-desktop-node".into()
    }

    fn title(&self) -> String {
        APP_NAME.into()
    }

    fn category(&self) -> ksni::Category {
        ksni::Category::ApplicationStatus
    }

    fn status(&self) -> ksni::Status {
        if self.waiting > 0 {
            ksni::Status::NeedsAttention
        } else {
            ksni::Status::Active
        }
    }

    fn icon_name(&self) -> String {
        if self.connected {
            "network-transmit-receive".into()
        } else {
            "network-offline".into()
        }
    }

    fn attention_icon_name(&self) -> String {
        "dialog-information".into()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: APP_NAME.into(),
            description: self.summary(),
            ..Default::default()
        }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        self.open_face();
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        vec![
            StandardItem {
                label: self.summary(),
                enabled: false,
                ..Default::default()
            }
            .into(),
            MenuItem::Separator,
            StandardItem {
                label: "Open".into(),
                enabled: self.face_url.is_some(),
                activate: Box::new(|tray: &mut Self| tray.open_face()),
                ..Default::default()
            }
            .into(),
            StandardItem {
                label: "Quit".into(),
                activate: Box::new(|tray: &mut Self| {
                    tracing::info!("tray: Quit chosen; stopping");
                    let _ = tray.quit.send(true);
                }),
                ..Default::default()
            }
            .into(),
        ]
    }
}

/// A tray icon being shown.
pub(super) struct Tray {
    handle: ksni::Handle<NodeTray>,
}

impl Tray {
    /// Shows the icon; `None` (logged) where the desktop has no tray.
    pub(super) async fn show(
        face_url: Option<String>,
        connected: bool,
        quit: watch::Sender<bool>,
    ) -> Option<Tray> {
        let tray = NodeTray {
            face_url,
            connected,
            waiting: 0,
            quit,
        };
        match tray.spawn().await {
            Ok(handle) => {
                tracing::info!("tray icon shown (StatusNotifierItem)");
                Some(Tray { handle })
            }
            Err(err) => {
                tracing::info!(%err, "no tray icon (this desktop has no StatusNotifierItem host)");
                None
            }
        }
    }

    /// Shows the connection and the number of waiting requests.
    pub(super) async fn update(&self, connected: bool, waiting: usize) {
        self.handle
            .update(|tray| {
                tray.connected = connected;
                tray.waiting = waiting;
            })
            .await;
    }

    /// Removes the icon.
    pub(super) async fn remove(self) {
        self.handle.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tray(connected: bool, waiting: usize) -> NodeTray {
        NodeTray {
            face_url: None,
            connected,
            waiting,
            quit: watch::channel(false).0,
        }
    }

    #[test]
    fn the_summary_says_the_connection_and_what_waits() {
        assert_eq!(tray(true, 0).summary(), "Connected to the relay");
        assert_eq!(
            tray(false, 1).summary(),
            "Not connected to the relay; 1 install request waits"
        );
        assert_eq!(
            tray(true, 3).summary(),
            "Connected to the relay; 3 install requests wait"
        );
    }

    #[test]
    fn quit_turns_the_stop_signal() {
        let (quit, stop) = watch::channel(false);
        let mut tray = NodeTray {
            quit,
            ..tray(true, 0)
        };
        let menu = ksni::Tray::menu(&tray);
        let Some(MenuItem::Standard(item)) = menu.into_iter().find(
            |item| matches!(item, MenuItem::Standard(StandardItem { label, .. }) if label == "Quit"),
        ) else {
            panic!("no Quit item");
        };
        (item.activate)(&mut tray);
        assert!(*stop.borrow());
    }
}
