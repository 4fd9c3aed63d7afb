//! Other systems: no notifications (the face and the CLI still list waiting requests).

use tokio::sync::mpsc;

use super::Note;

/// Nothing.
pub(super) struct Backend;

impl Backend {
    /// No notification, no click.
    pub(super) const CLICK_OPENS_FACE: bool = false;

    /// Always refused.
    pub(super) async fn connect(_clicks: mpsc::Sender<u32>) -> Result<Backend, String> {
        Err("this operating system has no notification support in the node".into())
    }

    /// For the log.
    pub(super) async fn describe(&self) -> String {
        "none".into()
    }

    /// Never called.
    pub(super) async fn show(&mut self, _note: &Note) -> Result<Option<u32>, String> {
        Err("no notifications here".into())
    }

    /// Never called.
    pub(super) async fn close(&mut self, _id: u32) {}
}
