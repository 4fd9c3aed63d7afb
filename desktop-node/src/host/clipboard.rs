//! `clipboard`: needs the clipboard grant. This node answers `unavailable` to a granted
//! call: a clipboard needs a desktop session (X11 or Wayland), which a node started as a
//! service or on a headless machine does not have, and no clipboard crate we know works
//! without one. Without the grant the answer is `permission_denied`, as everywhere.

use serde::Deserialize;

use super::{CallContext, ErrorCode, HostError};

/// The ops of `clipboard`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The clipboard's text.
    Read {},
    /// Replaces the clipboard's text.
    Write {
        /// The new text.
        text: String,
    },
}

/// Runs one `clipboard` call.
pub fn call(ctx: &CallContext, request: Request) -> super::Answer {
    if !ctx.grants.clipboard {
        return Err(HostError::denied("the clipboard is not granted"));
    }
    let what = match request {
        Request::Read {} => "reading",
        Request::Write { .. } => "writing",
    };
    Err(HostError::new(
        ErrorCode::Unavailable,
        format!("{what} the clipboard is not available on this node"),
    ))
}
