//! Linux: the Desktop Notifications Specification (`org.freedesktop.Notifications` at
//! `/org/freedesktop/Notifications` on the session bus), which GNOME Shell, KDE Plasma,
//! XFCE's xfce4-notifyd, dunst, mako and others implement.
//!
//! A notification carries the `default` action (the spec's "clicked" action) when the
//! face is served; the node listens for `ActionInvoked` with that key on its own
//! notifications and opens the face itself. It never expires (the request waits up to
//! 15 minutes) and is withdrawn with `CloseNotification` once the request is decided.
//! The body is sent as markup-escaped text when the service says it renders markup
//! (`body-markup`), as plain text otherwise.
//!
//! No session bus (a server, a container, SSH without a desktop) means no
//! notifications at all; a bus without a notification service means every `Notify`
//! fails, which the watcher logs once.

use std::collections::HashMap;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::zvariant::Value;

use super::{APP_NAME, Note};

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications",
    gen_blocking = false
)]
trait Notifications {
    /// Shows a notification; the answer is its id.
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, &Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;

    /// Withdraws a notification.
    fn close_notification(&self, id: u32) -> zbus::Result<()>;

    /// What the service can do (`actions`, `body-markup`, …).
    fn get_capabilities(&self) -> zbus::Result<Vec<String>>;

    /// The service's name, vendor, version and spec version.
    fn get_server_information(&self) -> zbus::Result<(String, String, String, String)>;

    /// The person chose an action (`default`: clicked the notification).
    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: &str) -> zbus::Result<()>;
}

/// The session bus's notification service.
pub(super) struct Backend {
    proxy: NotificationsProxy<'static>,
    /// The service's capabilities, asked at the first notification.
    capabilities: Option<Vec<String>>,
    /// Forwards `ActionInvoked` (`default`) to the watcher.
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Backend {
    /// A click reaches the node through `ActionInvoked`, which opens the face.
    pub(super) const CLICK_OPENS_FACE: bool = true;

    /// Connects to the session bus; `clicks` receives the ids of clicked notifications.
    /// Fails only without a session bus: the notification service itself may start
    /// later (D-Bus activation, a desktop still logging in).
    pub(super) async fn connect(clicks: mpsc::Sender<u32>) -> Result<Backend, String> {
        let connection = zbus::Connection::session()
            .await
            .map_err(|err| format!("no D-Bus session bus ({err})"))?;
        let proxy = NotificationsProxy::new(&connection)
            .await
            .map_err(|err| format!("the D-Bus session bus refused a proxy ({err})"))?;
        let mut invoked = proxy
            .receive_action_invoked()
            .await
            .map_err(|err| format!("cannot listen on the D-Bus session bus ({err})"))?;
        let listener = tokio::spawn(async move {
            while let Some(signal) = invoked.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.action_key == "default" && clicks.send(args.id).await.is_err() {
                    break;
                }
            }
        });
        Ok(Backend {
            proxy,
            capabilities: None,
            listener,
        })
    }

    /// The service, for the log: its name and version, or that none answers yet.
    pub(super) async fn describe(&self) -> String {
        match self.proxy.get_server_information().await {
            Ok((name, vendor, version, spec)) => {
                format!("{name} {version} ({vendor}, specification {spec})")
            }
            Err(err) => format!("none answers on the session bus yet ({err})"),
        }
    }

    /// Shows `note`; its id, to withdraw it later.
    pub(super) async fn show(&mut self, note: &Note) -> Result<Option<u32>, String> {
        if self.capabilities.is_none() {
            let capabilities = self
                .proxy
                .get_capabilities()
                .await
                .map_err(|err| format!("no notification service answers ({err})"))?;
            self.capabilities = Some(capabilities);
        }
        let capabilities = self.capabilities.as_deref().unwrap_or_default();
        let can = |name: &str| capabilities.iter().any(|c| c == name);
        let body = if can("body-markup") {
            escape_markup(&note.body)
        } else {
            note.body.clone()
        };
        let actions: &[&str] = if note.open_url.is_some() && can("actions") {
            &["default", "Review"]
        } else {
            &[]
        };
        let urgency = Value::U8(1);
        let category = Value::from("x-aisa.install-request");
        let hints = HashMap::from([("urgency", &urgency), ("category", &category)]);
        let id = self
            .proxy
            .notify(
                APP_NAME,
                0,
                "dialog-information",
                &note.summary,
                &body,
                actions,
                hints,
                // Never expires: the request waits until decided (then it is withdrawn).
                0,
            )
            .await
            .map_err(|err| format!("Notify failed ({err})"))?;
        Ok(Some(id))
    }

    /// Withdraws notification `id` (already gone is fine).
    pub(super) async fn close(&mut self, id: u32) {
        if let Err(err) = self.proxy.close_notification(id).await {
            tracing::debug!(%err, id, "CloseNotification failed");
        }
    }
}

/// `text` for a service that renders the spec's markup subset: `&`, `<` and `>`
/// escaped, so an app's name shows as written and never as markup.
fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            super::escape_markup("<b>Fish & Chips</b>"),
            "&lt;b&gt;Fish &amp; Chips&lt;/b&gt;"
        );
    }
}
