//! Files for a form's file field (docs/protocol.md, "Files", since protocol 1.2): the
//! browser browses the folders an app was granted (FILES_LIST → FILES_PAGE) and uploads a
//! file into the app's own data folder (FILE_UPLOAD, FILE_CHUNK… → FILE_PROGRESS…,
//! FILE_STORED). Both come on Control streams and are sealed like any request when the
//! stream is end-to-end encrypted.
//!
//! Listing is bounded by what the person approved for the app: its read and write grants
//! and its `$APP_DATA`, checked the way the app's own `fs` calls are
//! ([`crate::permissions::check_read`]: `..` and symlinks resolved first, the node's home
//! folder never reachable). An entry that is a symlink is listed only when its target is
//! inside those folders too, and then as what it points to; one pointing out is left
//! out. Names starting with a dot are not listed. A folder of more than
//! [`MAX_FOLDER_ENTRIES`] entries is refused; a page holds at most [`MAX_PAGE`].
//!
//! An upload lands in `$APP_DATA/uploads/` under a sanitised form of the browser's file
//! name (never replacing a file: ` (2)`, ` (3)`… are added), at most
//! [`FilesConfig::max_upload_bytes`] (`[files]` in node.toml). Until the last byte is
//! written it is a hidden `.partial-…` file that is removed when the browser cancels,
//! goes away, stalls for [`UPLOAD_IDLE`], or sends more or less than it announced. An
//! upload is also held to the app's `$APP_DATA` quota ([`crate::host::Quotas`], the one
//! its own writes are held to), checked before it starts: what is on disk plus the full
//! announced size of every upload into the same folder still under way. Each upload
//! reserves its announced size at FILE_UPLOAD (under one lock with the check, so two
//! uploads started at the same instant cannot both fit into room only one has) and
//! releases it when it ends: cancelled, failed, or stored (the stored file then counts as
//! itself). The app's own `fs` writes are checked against the disk only, not against
//! these reservations.
//!
//! Every refusal is a sentence for a person ([`FileRefusal`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aisa_tunnel::message::FileEntry;
use aisa_tunnel::{Body, Envelope, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::node::NodeContext;
use crate::permissions::{self, AccessError, Grants, PathError, UserDirs};

/// The most entries one FILES_PAGE holds.
pub const MAX_PAGE: u32 = 200;
/// The most entries a listed folder may have (a bigger one is refused).
pub const MAX_FOLDER_ENTRIES: usize = 10_000;
/// The most bytes one FILE_CHUNK may carry.
pub const MAX_CHUNK_BYTES: usize = 64 << 10;
/// The default of [`FilesConfig::max_upload_bytes`]: 8 MiB, what an app reads in one
/// `fs.read` call.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 8 << 20;
/// How long an upload may wait for its next chunk before it is given up and removed.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(30);
/// The folder of `$APP_DATA` uploads land in.
pub const UPLOADS_DIR: &str = "uploads";
/// How often (in bytes) the desktop reports an upload's progress.
const PROGRESS_EVERY: u64 = 256 << 10;

/// `[files]` in node.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// The largest file a browser may upload, in bytes. Default
    /// [`DEFAULT_MAX_UPLOAD_BYTES`]; 0 refuses every upload.
    pub max_upload_bytes: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

/// A refused or failed file request: the ERROR code and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FileRefusal {
    /// The ERROR code (`denied`, `invalid_payload`, `limit_exceeded`, `unknown_app`,
    /// `cancelled`, `internal`).
    pub code: ErrorCode,
    /// What happened, in words.
    pub message: String,
}

impl FileRefusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FileRefusal {
            code,
            message: message.into(),
        }
    }

    /// The ERROR envelope answering request `request_id`.
    pub fn to_envelope(&self, request_id: u64) -> Envelope {
        Envelope::error(request_id, self.code, self.message.clone())
    }
}

/// What one app may browse: its grants (as written and resolved), its `$APP_DATA`, and
/// the node's home folder (never listed).
#[derive(Debug, Clone)]
pub struct Scope {
    /// The listing of `""`: `$APP_DATA` first, then each granted folder as written.
    roots: Vec<(String, PathBuf)>,
    grants: Grants,
    app_data: PathBuf,
    node_home: PathBuf,
    dirs: UserDirs,
}

impl Scope {
    /// The scope of an app whose approved grants are `read` and `write` (as written in
    /// its permissions, with variables), whose data folder is `app_data`, on a node whose
    /// home is `node_home`. A grant this machine cannot resolve is left out.
    pub fn new(
        read: &[String],
        write: &[String],
        dirs: &UserDirs,
        app_data: PathBuf,
        node_home: PathBuf,
    ) -> Scope {
        let mut roots = vec![("$APP_DATA".to_owned(), app_data.clone())];
        let (mut readable, mut writable) = (Vec::new(), Vec::new());
        for (list, out) in [(read, &mut readable), (write, &mut writable)] {
            for written in list {
                let Ok(path) = dirs.resolve(written, &app_data) else {
                    continue;
                };
                out.push(path.clone());
                if !roots.iter().any(|(w, _)| w == written) {
                    roots.push((written.clone(), path));
                }
            }
        }
        Scope {
            roots,
            grants: Grants {
                read: readable,
                write: writable,
                ..Grants::default()
            },
            app_data,
            node_home,
            dirs: dirs.clone(),
        }
    }

    /// The scope of the installed app `app` on this node (its approved permissions).
    pub fn for_app(ctx: &NodeContext, app: &crate::apps::App) -> Scope {
        let app_data = crate::sandbox::app_dir(&ctx.home, &app.manifest.id).join("files");
        Scope::new(
            &app.approved.read,
            &app.approved.write,
            &crate::sandbox::user_dirs_from_env(),
            app_data,
            ctx.home.clone(),
        )
    }

    /// The app's data folder (`$APP_DATA`).
    pub fn app_data(&self) -> &Path {
        &self.app_data
    }

    /// One page of the folder `path` (as the app would write it; empty for the granted
    /// folders): how many entries it has in all, and up to `limit` (at most
    /// [`MAX_PAGE`]) of them after `offset`, folders first, each by name. Blocking.
    pub fn list(
        &self,
        path: &str,
        offset: u32,
        limit: u32,
    ) -> Result<(u32, Vec<FileEntry>), FileRefusal> {
        let path = path.trim();
        let mut entries = if path.is_empty() {
            self.root_entries()
        } else {
            self.folder_entries(path)?
        };
        entries.sort_by(|a, b| {
            b.dir
                .cmp(&a.dir)
                .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
                .then_with(|| a.name.cmp(&b.name))
        });
        let total = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let page = entries
            .into_iter()
            .skip(offset as usize)
            .take(limit.min(MAX_PAGE) as usize)
            .collect();
        Ok((total, page))
    }

    fn root_entries(&self) -> Vec<FileEntry> {
        let _ = permissions::create_private_dir_all(&self.app_data);
        self.roots
            .iter()
            .filter(|(_, path)| path.is_dir())
            .map(|(written, _)| FileEntry {
                name: written.clone(),
                path: written.clone(),
                dir: true,
                size: 0,
            })
            .collect()
    }

    /// Resolves a typed path (`~`, `$DOCUMENTS/…`, absolute); `..` is refused outright.
    fn resolve(&self, path: &str) -> Result<PathBuf, FileRefusal> {
        if path.split(['/', '\\']).any(|part| part == "..") {
            return Err(FileRefusal::new(
                ErrorCode::InvalidPayload,
                format!("“{path}” goes up a folder with “..”; open folders from the list instead."),
            ));
        }
        self.dirs
            .resolve(path, &self.app_data)
            .map_err(|e| path_refusal(path, &e))
    }

    fn folder_entries(&self, path: &str) -> Result<Vec<FileEntry>, FileRefusal> {
        let resolved = self.resolve(path)?;
        let canonical = self.check(path, &resolved)?;
        if !canonical.is_dir() {
            return Err(FileRefusal::new(
                ErrorCode::InvalidPayload,
                format!("“{path}” is a file, not a folder."),
            ));
        }
        let read = std::fs::read_dir(&canonical).map_err(|e| io_refusal(path, &e))?;
        let base = path.trim_end_matches(['/', '\\']);
        let mut out = Vec::new();
        for entry in read {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: no path an app could be given
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let meta = if meta.file_type().is_symlink() {
                // Listed only when it points inside what the app may read, as its target.
                match permissions::check_read(
                    &self.grants,
                    &self.app_data,
                    &self.node_home,
                    &entry.path(),
                ) {
                    Ok(target) => match std::fs::metadata(target) {
                        Ok(meta) => meta,
                        Err(_) => continue,
                    },
                    Err(_) => continue,
                }
            } else {
                meta
            };
            if !meta.is_dir() && !meta.is_file() {
                continue;
            }
            if out.len() == MAX_FOLDER_ENTRIES {
                return Err(FileRefusal::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "“{path}” has more than {MAX_FOLDER_ENTRIES} entries; choose a smaller folder or type the file's path."
                    ),
                ));
            }
            out.push(FileEntry {
                path: format!("{base}/{name}"),
                dir: meta.is_dir(),
                size: if meta.is_dir() { 0 } else { meta.len() },
                name,
            });
        }
        Ok(out)
    }

    /// The canonical form of `resolved` if the app may read it.
    fn check(&self, path: &str, resolved: &Path) -> Result<PathBuf, FileRefusal> {
        let _ = permissions::create_private_dir_all(&self.app_data);
        permissions::check_read(&self.grants, &self.app_data, &self.node_home, resolved).map_err(
            |e| match e {
                AccessError::Denied(why) if why.contains("node's own folder") => FileRefusal::new(
                    ErrorCode::Denied,
                    format!(
                        "“{path}” is inside the desktop node's own folder, which no app may open."
                    ),
                ),
                AccessError::Denied(_) => FileRefusal::new(
                    ErrorCode::Denied,
                    format!(
                        "This app may not open “{path}”: it is outside the folders it was granted."
                    ),
                ),
                AccessError::NotFound(_) => FileRefusal::new(
                    ErrorCode::InvalidPayload,
                    format!("There is no “{path}” on your desktop."),
                ),
                AccessError::Path(err) => path_refusal(path, &err),
                AccessError::Io(why) => FileRefusal::new(
                    ErrorCode::Internal,
                    format!("Your desktop could not open “{path}” ({why})."),
                ),
            },
        )
    }
}

fn path_refusal(path: &str, err: &PathError) -> FileRefusal {
    let message = match err {
        PathError::UnknownVariable(var) => {
            format!("“{path}” starts with {var}, which this desktop does not have.")
        }
        _ => format!(
            "“{path}” is not a path this desktop understands: start it with ~, $DOCUMENTS, $DOWNLOADS, $DESKTOP, $HOME or $APP_DATA, or give a full path."
        ),
    };
    FileRefusal::new(ErrorCode::InvalidPayload, message)
}

fn io_refusal(path: &str, err: &std::io::Error) -> FileRefusal {
    match err.kind() {
        std::io::ErrorKind::NotFound => FileRefusal::new(
            ErrorCode::InvalidPayload,
            format!("There is no “{path}” on your desktop."),
        ),
        std::io::ErrorKind::PermissionDenied => FileRefusal::new(
            ErrorCode::Denied,
            format!("Your desktop's system refused to open “{path}”."),
        ),
        _ => FileRefusal::new(
            ErrorCode::Internal,
            format!("Your desktop could not open “{path}” ({err})."),
        ),
    }
}

/// "1.5 MB", for sentences.
fn size_text(bytes: u64) -> String {
    if bytes < 1 << 10 {
        format!("{bytes} bytes")
    } else if bytes < 1 << 20 {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// A file name safe on every platform, from the browser's: letters, digits, spaces and
/// `._-()+,@` kept, anything else (separators, control characters, `:`…) replaced by
/// `_`; no leading dot or space, no trailing dot or space; at most 120 bytes with the
/// extension kept; Windows device names (`CON`, `NUL`, `COM1`…) prefixed with `_`;
/// `upload` when nothing is left.
pub fn sanitize_name(name: &str) -> String {
    // Only the last component of whatever path the browser gave.
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " ._-()+,@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean = clean
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .to_owned();
    if clean.len() > 120 {
        let (stem, ext) = split_ext(&clean);
        let ext = if ext.len() <= 16 { ext } else { "" };
        let mut cut = 120 - ext.len();
        while !stem.is_char_boundary(cut.min(stem.len())) {
            cut -= 1;
        }
        clean = format!("{}{ext}", &stem[..cut.min(stem.len())]);
    }
    let stem_upper = split_ext(&clean).0.to_ascii_uppercase();
    let device = matches!(stem_upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem_upper.starts_with("COM") || stem_upper.starts_with("LPT"))
            && stem_upper.len() == 4
            && stem_upper.as_bytes()[3].is_ascii_digit());
    if device {
        clean.insert(0, '_');
    }
    if clean.is_empty() {
        "upload".to_owned()
    } else {
        clean
    }
}

/// `("report", ".pdf")`; a name without a dot (or only a leading one) has no extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// A file being received into `$APP_DATA/uploads/`. Dropped before [`Upload::finish`]
/// (cancel, disconnect, error), its partial file is removed.
#[derive(Debug)]
pub struct Upload {
    dir: PathBuf,
    partial: PathBuf,
    file: Option<std::fs::File>,
    name: String,
    size: u64,
    received: u64,
    /// The bytes this upload holds against its app's quota ([`Upload::begin_within`]);
    /// released when the upload is dropped, after its partial file is gone.
    reservation: Option<Reservation>,
}

/// Uploads under way, per `$APP_DATA` folder (canonical form): each one's partial file
/// name and the size it announced. Only [`Upload::begin_within`] adds to it, with the
/// quota check under the same lock.
static RESERVED: Mutex<BTreeMap<PathBuf, BTreeMap<String, u64>>> = Mutex::new(BTreeMap::new());

/// One upload's place in [`RESERVED`]; removed on drop.
#[derive(Debug)]
struct Reservation {
    app_data: PathBuf,
    partial: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = reserved.get_mut(&self.app_data) {
            live.remove(&self.partial);
            if live.is_empty() {
                reserved.remove(&self.app_data);
            }
        }
    }
}

impl Upload {
    /// Like [`Upload::begin`], and refused too when `$APP_DATA` would then hold more than
    /// `quotas` allow (the quota the app's own writes are held to). What counts is what
    /// is on disk plus the announced size of every other upload into `app_data` still
    /// under way (their partial files are counted at that size, not at what they have
    /// received); the accepted upload reserves its own size until it is dropped, stored
    /// or not. Blocking.
    pub fn begin_within(
        app_data: &Path,
        name: &str,
        size: u64,
        max: u64,
        quotas: &crate::host::Quotas,
    ) -> Result<Upload, FileRefusal> {
        // One key per folder however it is written.
        let _ = permissions::create_private_dir_all(app_data);
        let key = app_data
            .canonicalize()
            .unwrap_or_else(|_| app_data.to_owned());
        // The check and the reservation under one lock: two uploads starting at the same
        // instant are checked one after the other, the second seeing the first's bytes.
        let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
        let live = reserved.get(&key);
        let pending: u64 = live.map_or(0, |live| live.values().sum());
        let (bytes, entries) = usage(app_data, quotas, live);
        if bytes.saturating_add(pending).saturating_add(size) > quotas.app_data_bytes {
            let message = if pending == 0 {
                format!(
                    "The app's folder on your desktop holds {} and may hold {}; the {} file does not fit (delete files from it first).",
                    size_text(bytes),
                    size_text(quotas.app_data_bytes),
                    size_text(size)
                )
            } else {
                format!(
                    "The app's folder on your desktop holds {}, uploads under way will add {}, and it may hold {}; the {} file does not fit (wait for them to finish, or delete files from it first).",
                    size_text(bytes),
                    size_text(pending),
                    size_text(quotas.app_data_bytes),
                    size_text(size)
                )
            };
            return Err(FileRefusal::new(ErrorCode::LimitExceeded, message));
        }
        // The uploads folder and the partial file (renamed at the end).
        if entries + 2 > quotas.app_data_entries {
            return Err(FileRefusal::new(
                ErrorCode::LimitExceeded,
                format!(
                    "The app's folder on your desktop already holds {entries} files and folders, its limit; delete some first."
                ),
            ));
        }
        let mut upload = Upload::begin(app_data, name, size, max)?;
        let partial = upload
            .partial
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        reserved
            .entry(key.clone())
            .or_default()
            .insert(partial.clone(), size);
        drop(reserved);
        upload.reservation = Some(Reservation {
            app_data: key,
            partial,
        });
        Ok(upload)
    }

    /// The bytes uploads under way into `app_data` have reserved against its quota
    /// (their announced sizes; see [`Upload::begin_within`]).
    pub fn reserved(app_data: &Path) -> u64 {
        let key = app_data
            .canonicalize()
            .unwrap_or_else(|_| app_data.to_owned());
        RESERVED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map_or(0, |live| live.values().sum())
    }

    /// Starts receiving a file of `size` bytes named `name` (in the browser) into
    /// `app_data`'s `uploads/` folder; refused over `max` bytes. Blocking.
    pub fn begin(app_data: &Path, name: &str, size: u64, max: u64) -> Result<Upload, FileRefusal> {
        if size > max {
            return Err(FileRefusal::new(
                ErrorCode::LimitExceeded,
                format!(
                    "The file is {}; this desktop accepts uploads of up to {} (max_upload_bytes under [files] in its node.toml).",
                    size_text(size),
                    size_text(max)
                ),
            ));
        }
        let failed = |e: std::io::Error| {
            FileRefusal::new(
                ErrorCode::Internal,
                format!("Your desktop could not make room for the upload ({e})."),
            )
        };
        let dir = app_data.join(UPLOADS_DIR);
        permissions::create_private_dir_all(&dir).map_err(failed)?;
        // A planted symlink instead of the folder would send the file elsewhere.
        let meta = std::fs::symlink_metadata(&dir).map_err(failed)?;
        if !meta.is_dir() {
            return Err(FileRefusal::new(
                ErrorCode::Denied,
                "The app's uploads folder on your desktop is not a plain folder; the upload is refused.",
            ));
        }
        let partial = dir.join(format!(".partial-{:016x}", rand::random::<u64>()));
        let file = create_new(&partial).map_err(failed)?;
        Ok(Upload {
            dir,
            partial,
            file: Some(file),
            name: sanitize_name(name),
            size,
            received: 0,
            reservation: None,
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether every announced byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.size
    }

    /// The hidden partial file (removed unless the upload finishes).
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// Appends the next chunk. Blocking.
    pub fn write(&mut self, data: &[u8]) -> Result<(), FileRefusal> {
        if data.len() > MAX_CHUNK_BYTES {
            return Err(FileRefusal::new(
                ErrorCode::InvalidPayload,
                format!(
                    "An upload chunk held {} bytes; at most {MAX_CHUNK_BYTES} are allowed.",
                    data.len()
                ),
            ));
        }
        if self.received + data.len() as u64 > self.size {
            return Err(FileRefusal::new(
                ErrorCode::InvalidPayload,
                format!(
                    "The browser sent more than the {} it announced; nothing was kept.",
                    size_text(self.size)
                ),
            ));
        }
        let file = self.file.as_mut().ok_or_else(|| {
            FileRefusal::new(ErrorCode::Internal, "The upload was already finished.")
        })?;
        file.write_all(data).map_err(|e| {
            FileRefusal::new(
                ErrorCode::Internal,
                format!("Your desktop could not write the upload ({e}); nothing was kept."),
            )
        })?;
        self.received += data.len() as u64;
        Ok(())
    }

    /// Stores the complete file under its sanitised name (with ` (2)`… when taken) and
    /// answers the path a form submits (`$APP_DATA/uploads/NAME`) and its size. Blocking.
    pub fn finish(mut self) -> Result<(String, u64), FileRefusal> {
        if !self.is_complete() {
            return Err(self.incomplete());
        }
        let failed = |e: std::io::Error| {
            FileRefusal::new(
                ErrorCode::Internal,
                format!("Your desktop could not store the upload ({e}); nothing was kept."),
            )
        };
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(failed)?;
        }
        let (stem, ext) = split_ext(&self.name);
        for n in 1..1000 {
            let name = if n == 1 {
                self.name.clone()
            } else {
                format!("{stem} ({n}){ext}")
            };
            let target = self.dir.join(&name);
            // A hard link never replaces an existing file; then the partial name goes.
            match std::fs::hard_link(&self.partial, &target) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.partial);
                    return Ok((format!("$APP_DATA/{UPLOADS_DIR}/{name}"), self.size));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) if !target.exists() && std::fs::symlink_metadata(&target).is_err() => {
                    // A file system without hard links: rename (checked free just above).
                    std::fs::rename(&self.partial, &target).map_err(failed)?;
                    return Ok((format!("$APP_DATA/{UPLOADS_DIR}/{name}"), self.size));
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Err(FileRefusal::new(
            ErrorCode::LimitExceeded,
            format!(
                "The app already keeps too many files named “{}”.",
                self.name
            ),
        ))
    }

    fn incomplete(&self) -> FileRefusal {
        FileRefusal::new(
            ErrorCode::InvalidPayload,
            format!(
                "The upload ended after {} of {}; nothing was kept.",
                size_text(self.received),
                size_text(self.size)
            ),
        )
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.file = None;
        // After `finish` the partial name is already gone.
        let _ = std::fs::remove_file(&self.partial);
        // Then the reservation (the file is gone or stored under its name: no moment
        // when the bytes count nowhere).
        self.reservation = None;
    }
}

/// Bytes of regular files and the number of entries under `app_data`, without following
/// symlinks, leaving out the bytes of the partial files in `live` (uploads under way,
/// counted at their announced size instead); stops counting once past `quotas`.
fn usage(
    app_data: &Path,
    quotas: &crate::host::Quotas,
    live: Option<&BTreeMap<String, u64>>,
) -> (u64, u64) {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut folders = vec![app_data.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(list) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in list.flatten() {
            entries += 1;
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                folders.push(entry.path());
            } else if meta.is_file() {
                let reserved = live.is_some_and(|live| {
                    entry
                        .file_name()
                        .to_str()
                        .is_some_and(|name| live.contains_key(name))
                });
                if !reserved {
                    bytes = bytes.saturating_add(meta.len());
                }
            }
            if entries > quotas.app_data_entries || bytes > quotas.app_data_bytes {
                return (bytes, entries);
            }
        }
    }
    (bytes, entries)
}

fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    options.open(path)
}

/// Where an upload's FILE_PROGRESS messages go (the stream's reply side).
pub trait ProgressSink: Send {
    /// Sends one message that is not the final one.
    fn send(&mut self, envelope: &Envelope) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Receives an upload's chunks from `recv` (sealed control messages when `controls` is
/// given) into `upload`, reporting progress to `sink`, and returns the final answer:
/// FILE_STORED, or ERROR (the partial file then removed).
pub async fn receive<R, S>(
    mut upload: Upload,
    request_id: u64,
    recv: &mut R,
    controls: &mut Option<aisa_crypto::e2e::ControlOpener>,
    sink: &mut S,
) -> Envelope
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
    S: ProgressSink,
{
    let mut reported = 0u64;
    while !upload.is_complete() {
        let frame = tokio::time::timeout(
            UPLOAD_IDLE,
            aisa_tunnel::io::read_frame(recv, aisa_tunnel::MAX_FRAME_LEN),
        )
        .await;
        let body = match frame {
            Err(_) => {
                return FileRefusal::new(
                    ErrorCode::Cancelled,
                    format!(
                        "The upload stalled for {} seconds and was given up; nothing was kept.",
                        UPLOAD_IDLE.as_secs()
                    ),
                )
                .to_envelope(request_id);
            }
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => return upload.incomplete().to_envelope(request_id),
            Ok(Err(err)) => {
                tracing::info!(%err, received = upload.received(), "upload cut off");
                return FileRefusal::new(
                    ErrorCode::PeerGone,
                    "The browser went away during the upload; nothing was kept.",
                )
                .to_envelope(request_id);
            }
        };
        let envelope = match controls.as_mut() {
            // A frame that does not open (one the relay could have injected) is ignored.
            Some(controls) => match crate::e2e::E2eState::open_control(controls, &body) {
                Some(envelope) => envelope,
                None => continue,
            },
            None => match Envelope::decode(&body) {
                Ok(envelope) => envelope,
                Err(err) => {
                    return Envelope::error(request_id, ErrorCode::MalformedFrame, err.to_string());
                }
            },
        };
        match envelope.body {
            Body::FileChunk { data } => {
                let written = tokio::task::spawn_blocking(move || {
                    let result = upload.write(&data);
                    (upload, result)
                })
                .await;
                let result;
                (upload, result) = match written {
                    Ok(done) => done,
                    Err(join) => {
                        return Envelope::error(request_id, ErrorCode::Internal, join.to_string());
                    }
                };
                if let Err(refusal) = result {
                    return refusal.to_envelope(request_id);
                }
                if upload.received() - reported >= PROGRESS_EVERY && !upload.is_complete() {
                    reported = upload.received();
                    let progress =
                        Envelope::new(request_id, Body::FileProgress { received: reported });
                    if sink.send(&progress).await.is_err() {
                        return FileRefusal::new(
                            ErrorCode::PeerGone,
                            "The browser went away during the upload; nothing was kept.",
                        )
                        .to_envelope(request_id);
                    }
                }
            }
            Body::Cancel => {
                return FileRefusal::new(
                    ErrorCode::Cancelled,
                    "The upload was cancelled; nothing was kept.",
                )
                .to_envelope(request_id);
            }
            other => {
                return FileRefusal::new(
                    ErrorCode::InvalidPayload,
                    format!("An upload carries FILE_CHUNKs, not {}.", other.type_name()),
                )
                .to_envelope(request_id);
            }
        }
    }
    match tokio::task::spawn_blocking(move || upload.finish()).await {
        Ok(Ok((path, size))) => {
            tracing::info!(%path, size, "upload stored");
            Envelope::new(request_id, Body::FileStored { path, size })
        }
        Ok(Err(refusal)) => refusal.to_envelope(request_id),
        Err(join) => Envelope::error(request_id, ErrorCode::Internal, join.to_string()),
    }
}

/// The installed app `app_id`, or the `unknown_app` refusal.
fn installed(
    ctx: &NodeContext,
    app_id: &str,
) -> Result<std::sync::Arc<crate::apps::App>, FileRefusal> {
    ctx.app(app_id).ok_or_else(|| {
        FileRefusal::new(
            ErrorCode::UnknownApp,
            format!("No app “{app_id}” is installed on this desktop."),
        )
    })
}

/// Answers FILES_LIST for `app_id` with FILES_PAGE or ERROR.
pub async fn answer_list(
    ctx: &NodeContext,
    request_id: u64,
    app_id: &str,
    path: String,
    offset: u32,
    limit: u32,
) -> Envelope {
    let scope = match installed(ctx, app_id) {
        Ok(app) => Scope::for_app(ctx, &app),
        Err(refusal) => return refusal.to_envelope(request_id),
    };
    let listed = tokio::task::spawn_blocking(move || {
        scope
            .list(&path, offset, limit)
            .map(|(total, entries)| Body::FilesPage {
                path: path.trim().to_owned(),
                total,
                entries,
            })
    })
    .await;
    match listed {
        Ok(Ok(body)) => Envelope::new(request_id, body),
        Ok(Err(refusal)) => {
            tracing::info!(reason = "files_list_refused", code = %refusal.code, %refusal, "request refused");
            refusal.to_envelope(request_id)
        }
        Err(join) => Envelope::error(request_id, ErrorCode::Internal, join.to_string()),
    }
}

/// Serves FILE_UPLOAD for `app_id`: starts the upload (or refuses it) and receives it
/// ([`receive`]); returns the final answer.
#[allow(clippy::too_many_arguments)]
pub async fn answer_upload<R, S>(
    ctx: &NodeContext,
    request_id: u64,
    app_id: &str,
    name: String,
    size: u64,
    recv: &mut R,
    controls: &mut Option<aisa_crypto::e2e::ControlOpener>,
    sink: &mut S,
) -> Envelope
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
    S: ProgressSink,
{
    let app_data = match installed(ctx, app_id) {
        Ok(app) => crate::sandbox::app_dir(&ctx.home, &app.manifest.id).join("files"),
        Err(refusal) => return refusal.to_envelope(request_id),
    };
    let max = ctx.files().max_upload_bytes;
    let quotas = ctx.sandbox.host_quotas();
    let begun = tokio::task::spawn_blocking(move || {
        Upload::begin_within(&app_data, &name, size, max, &quotas)
    })
    .await;
    let upload = match begun {
        Ok(Ok(upload)) => upload,
        Ok(Err(refusal)) => {
            tracing::info!(reason = "upload_refused", code = %refusal.code, %refusal, "request refused");
            return refusal.to_envelope(request_id);
        }
        Err(join) => return Envelope::error(request_id, ErrorCode::Internal, join.to_string()),
    };
    receive(upload, request_id, recv, controls, sink).await
}
