//! `fs`: files in granted folders. Reads need a read grant covering the path (after `..`
//! and symlinks are resolved), writes a write grant; `$APP_DATA` is always allowed.
//! See [`crate::permissions`] for the path rules.

use std::io::{Read, Write};
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

use super::{CallContext, ErrorCode, HostError, blocking};
use crate::permissions::{self, Grants};

/// The largest file `read`, `read_base64` and `pdf_text` accept.
pub const MAX_READ_BYTES: u64 = 8 << 20;
/// The largest content `write` accepts.
pub const MAX_WRITE_BYTES: usize = 8 << 20;
/// The most entries `list` returns; a bigger folder is `too_large`.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// The ops of `fs`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A UTF-8 text file as a string.
    Read {
        /// The file.
        path: String,
    },
    /// Any file as base64.
    ReadBase64 {
        /// The file.
        path: String,
    },
    /// Creates or replaces a file with text; missing folders are created.
    Write {
        /// The file.
        path: String,
        /// Its new content.
        content: String,
    },
    /// A folder's entries `[{name, dir, size}]`, sorted by name.
    List {
        /// The folder.
        path: String,
    },
    /// The text of a PDF file.
    PdfText {
        /// The file.
        path: String,
    },
}

/// Runs one `fs` call.
pub async fn call(ctx: &CallContext, request: Request) -> super::Answer {
    let grants = ctx.grants.clone();
    let app_data = ctx.app_data();
    match request {
        Request::Read { path } => {
            let bytes = read(grants, app_data, ctx.resolve(&path)?).await?;
            let text = String::from_utf8(bytes).map_err(|_| {
                HostError::invalid(format!("{path} is not UTF-8 text; use read_base64"))
            })?;
            Ok(text.into())
        }
        Request::ReadBase64 { path } => {
            let bytes = read(grants, app_data, ctx.resolve(&path)?).await?;
            Ok(base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into())
        }
        Request::PdfText { path } => {
            let bytes = read(grants, app_data, ctx.resolve(&path)?).await?;
            Ok(super::pdf::extract_text(bytes).await?.into())
        }
        Request::Write { path, content } => {
            if content.len() > MAX_WRITE_BYTES {
                return Err(HostError::too_large(format!(
                    "content of {} bytes; files are limited to {MAX_WRITE_BYTES}",
                    content.len()
                )));
            }
            let path = ctx.resolve(&path)?;
            blocking(move || {
                let target = permissions::prepare_write(&grants, &app_data, &path)?;
                let mut file = permissions::open_for_write(&target)?;
                file.write_all(content.as_bytes())
                    .and_then(|()| file.sync_data())
                    .map_err(|e| HostError::failed(format!("{}: {e}", path.display())))?;
                Ok(serde_json::Value::Null)
            })
            .await
        }
        Request::List { path } => {
            let path = ctx.resolve(&path)?;
            blocking(move || list(&grants, &app_data, &path)).await
        }
    }
}

/// Reads a whole file after the read check, up to [`MAX_READ_BYTES`].
async fn read(
    grants: std::sync::Arc<Grants>,
    app_data: PathBuf,
    path: PathBuf,
) -> Result<Vec<u8>, HostError> {
    blocking(move || {
        let canonical = permissions::check_read(&grants, &app_data, &path)?;
        let file = permissions::open_for_read(&canonical)?;
        let mut bytes = Vec::new();
        file.take(MAX_READ_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| HostError::failed(format!("{}: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_READ_BYTES {
            return Err(HostError::too_large(format!(
                "{} is larger than {MAX_READ_BYTES} bytes",
                path.display()
            )));
        }
        Ok(bytes)
    })
    .await
}

fn list(grants: &Grants, app_data: &std::path::Path, path: &std::path::Path) -> super::Answer {
    let canonical = permissions::check_read(grants, app_data, path)?;
    let failed = |e: std::io::Error| HostError::failed(format!("{}: {e}", path.display()));
    let entries = std::fs::read_dir(&canonical).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotADirectory {
            HostError::invalid(format!("{} is not a folder", path.display()))
        } else {
            failed(e)
        }
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(failed)?;
        if out.len() == MAX_LIST_ENTRIES {
            return Err(HostError::new(
                ErrorCode::TooLarge,
                format!(
                    "{} has more than {MAX_LIST_ENTRIES} entries",
                    path.display()
                ),
            ));
        }
        // Not following symlinks: a link is listed as what it is, not as its target.
        let meta = entry.metadata().map_err(failed)?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            meta.is_dir(),
            meta.len(),
        ));
    }
    out.sort();
    Ok(out
        .into_iter()
        .map(|(name, dir, size)| serde_json::json!({ "name": name, "dir": dir, "size": size }))
        .collect())
}
