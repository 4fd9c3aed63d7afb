//! `fs`: files in granted folders. Reads need a read grant covering the path (after `..`
//! and symlinks are resolved), writes a write grant; `$APP_DATA` is always allowed.
//! See [`crate::permissions`] for the path rules.
//!
//! Bounds: a file read is at most [`MAX_READ_BYTES`], a write [`MAX_WRITE_BYTES`], a
//! listing [`MAX_LIST_ENTRIES`]; `$APP_DATA` as a whole is held to the app's
//! [`super::Quotas`] (bytes and entries), checked before a write under a per-app lock, so
//! a write that would pass the quota is `too_large` and leaves the old file as it was.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::{CallContext, Cancel, ErrorCode, HostError, Quotas, blocking};
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
    let home = ctx.node_home();
    match request {
        Request::Read { path } => {
            let bytes = read(grants, app_data, home, ctx.resolve(&path)?).await?;
            let text = String::from_utf8(bytes).map_err(|_| {
                HostError::invalid(format!("{path} is not UTF-8 text; use read_base64"))
            })?;
            Ok(text.into())
        }
        Request::ReadBase64 { path } => {
            let bytes = read(grants, app_data, home, ctx.resolve(&path)?).await?;
            Ok(base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into())
        }
        Request::PdfText { path } => {
            let bytes = read(grants, app_data, home, ctx.resolve(&path)?).await?;
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
            let quotas = ctx.shared.quotas;
            // One write at a time per app, so two writes cannot both pass the quota.
            let lock = ctx.shared.storage_lock(&app_data);
            let _held = lock.lock().await;
            blocking(move |cancel| {
                let len = content.len() as u64;
                // Before anything is created: the folders this write would add count too.
                if let Some((folder, missing)) = existing_ancestor(&path) {
                    check_app_data_quota(&app_data, &folder, &path, missing, len, &quotas, cancel)?;
                }
                let target = permissions::prepare_write(&grants, &app_data, &home, &path)?;
                let folder = target.parent().unwrap_or(&target);
                check_app_data_quota(&app_data, folder, &target, 0, len, &quotas, cancel)?;
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
            blocking(move |cancel| list(&grants, &app_data, &home, &path, cancel)).await
        }
    }
}

/// What `$APP_DATA` holds: bytes of regular files and the number of entries, counted
/// without following symlinks; stops counting once past `quotas`.
fn app_data_usage(
    app_data: &Path,
    quotas: &Quotas,
    cancel: &Cancel,
) -> Result<(u64, u64), HostError> {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut folders = vec![app_data.to_owned()];
    while let Some(folder) = folders.pop() {
        cancel.check()?;
        let Ok(list) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in list.flatten() {
            entries += 1;
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                folders.push(entry.path());
            } else if meta.is_file() {
                bytes = bytes.saturating_add(meta.len());
            }
            if entries > quotas.app_data_entries || bytes > quotas.app_data_bytes {
                return Ok((bytes, entries));
            }
        }
    }
    Ok((bytes, entries))
}

/// The canonical form of the nearest existing ancestor of `path` (itself included), and
/// how many folders below it a write to `path` would create.
fn existing_ancestor(path: &Path) -> Option<(PathBuf, u64)> {
    let mut missing = 0u64;
    let mut at = path.parent()?;
    loop {
        match std::fs::canonicalize(at) {
            Ok(canonical) => return Some((canonical, missing)),
            Err(_) => {
                missing += 1;
                at = at.parent()?;
            }
        }
    }
}

/// Refuses (`too_large`) a write of `len` bytes to `target` that creates `new_folders`
/// folders, when `folder` (the canonical folder the write lands in or below) lies in
/// `$APP_DATA` and `$APP_DATA` would then pass its quota. Writes elsewhere (granted
/// folders of the person) are not counted.
fn check_app_data_quota(
    app_data: &Path,
    folder: &Path,
    target: &Path,
    new_folders: u64,
    len: u64,
    quotas: &Quotas,
    cancel: &Cancel,
) -> Result<(), HostError> {
    let Ok(root) = std::fs::canonicalize(app_data) else {
        return Ok(());
    };
    if !folder.starts_with(&root) {
        return Ok(());
    }
    let (bytes, entries) = app_data_usage(&root, quotas, cancel)?;
    let replaced = std::fs::symlink_metadata(target)
        .ok()
        .filter(|m| m.is_file());
    let after = bytes - replaced.as_ref().map_or(0, |m| m.len().min(bytes)) + len;
    let entries_after = entries + new_folders + u64::from(replaced.is_none());
    if after > quotas.app_data_bytes {
        return Err(HostError::too_large(format!(
            "$APP_DATA would hold {after} bytes; this app may keep {} there (delete files first)",
            quotas.app_data_bytes
        )));
    }
    if entries_after > quotas.app_data_entries {
        return Err(HostError::too_large(format!(
            "$APP_DATA would hold more than {} files and folders",
            quotas.app_data_entries
        )));
    }
    Ok(())
}

/// Reads a whole file after the read check, up to [`MAX_READ_BYTES`].
async fn read(
    grants: std::sync::Arc<Grants>,
    app_data: PathBuf,
    home: PathBuf,
    path: PathBuf,
) -> Result<Vec<u8>, HostError> {
    blocking(move |_| {
        let canonical = permissions::check_read(&grants, &app_data, &home, &path)?;
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

fn list(
    grants: &Grants,
    app_data: &Path,
    home: &Path,
    path: &Path,
    cancel: &Cancel,
) -> super::Answer {
    let canonical = permissions::check_read(grants, app_data, home, path)?;
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
        if out.len() % 256 == 0 {
            cancel.check()?;
        }
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
