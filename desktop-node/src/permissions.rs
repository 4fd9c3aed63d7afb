//! What a mini-app may reach: the grants the person approved, and the checks every host
//! call makes against them.
//!
//! [`Grants`] holds resolved folders and host patterns. Folders are written in an app's
//! `permissions.json` with variables (`$HOME`, `$DOCUMENTS`, `$DOWNLOADS`, `$DESKTOP`,
//! `$APP_DATA`); [`UserDirs`] resolves them, the same way for grants and for the paths a
//! guest asks for. The app's own folder (`$APP_DATA`, `<node home>/data/<app-id>/files`)
//! is always readable and writable, whatever the grants say.
//!
//! Path checks ([`check_read`], [`prepare_write`]) resolve `..` and symlinks with
//! `canonicalize` and then require the result to lie inside a granted folder, so a
//! symlink inside a granted folder that points outside it is refused. The node's own
//! home folder (its configuration, secrets, compiled-module cache, installed apps and
//! the other apps' data) is never reachable, even through a grant of a folder that
//! contains it (`$HOME`) or a symlink into it: only the app's own `$APP_DATA` inside it
//! is. Writes refuse a
//! symlink as the final component and open with `O_NOFOLLOW` (see [`open_for_write`]),
//! so a symlink planted between the check and the open is refused too. What this does not
//! stop: a folder component swapped for a symlink between the check and the open (std
//! has no `openat`), and hard links the user made themselves.
//!
//! HTTP checks ([`Grants::allows_url`]) compare `host[:port]` with the granted patterns.

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the person approved for one app, with variables resolved. The default denies
/// everything (the app's own `$APP_DATA` folder stays available: it is not a grant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    /// May ask the model (`ai_generate`).
    pub ai: bool,
    /// Folders whose files it may read (and list), absolute.
    pub read: Vec<PathBuf>,
    /// Folders whose files it may write (and read), absolute.
    pub write: Vec<PathBuf>,
    /// Hosts it may reach over HTTP: `host`, `host:port`, or `*.domain` (any subdomain).
    /// A pattern without a port allows only the scheme's default port (80 or 443).
    pub hosts: Vec<String>,
    /// May use the clipboard.
    pub clipboard: bool,
}

/// Why a permission entry or a path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not absolute and not starting with a known variable.
    #[error(
        "{0:?} is neither absolute nor starts with ~, $HOME, $DOCUMENTS, $DOWNLOADS, $DESKTOP or $APP_DATA"
    )]
    NotAbsolute(String),
    /// A variable this node cannot resolve (e.g. no home folder).
    #[error("{0} is not known on this machine")]
    UnknownVariable(String),
    /// A host pattern that is not `host`, `host:port` or `*.domain`.
    #[error("{0:?} is not a host, host:port or *.domain")]
    BadHost(String),
    /// An empty path, a NUL byte, or a file name that is not a plain name.
    #[error("{0:?} is not a usable path")]
    Malformed(String),
}

impl Grants {
    /// Grants from the entries of `permissions.json` (the `filesystem.read`,
    /// `filesystem.write` and `network` lists as written, with variables), resolved with
    /// `dirs` and the app's own folder `app_data`. An entry that cannot be resolved is an
    /// error: the person approved something this machine cannot honour.
    pub fn resolve(
        ai: bool,
        read: &[String],
        write: &[String],
        network: &[String],
        clipboard: bool,
        dirs: &UserDirs,
        app_data: &Path,
    ) -> Result<Grants, PathError> {
        let paths = |list: &[String]| {
            list.iter()
                .map(|p| dirs.resolve(p, app_data))
                .collect::<Result<Vec<_>, _>>()
        };
        let hosts = network
            .iter()
            .map(|h| normalize_host_pattern(h).ok_or_else(|| PathError::BadHost(h.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Grants {
            ai,
            read: paths(read)?,
            write: paths(write)?,
            hosts,
            clipboard,
        })
    }

    /// Grants for everything a bundle's `permissions.json` asks for (use it once the
    /// person approved all of it), resolved as [`Grants::resolve`] does.
    pub fn from_permissions(
        permissions: &aisa_abi::Permissions,
        dirs: &UserDirs,
        app_data: &Path,
    ) -> Result<Grants, PathError> {
        Grants::resolve(
            permissions.ai,
            &permissions.filesystem.read,
            &permissions.filesystem.write,
            &permissions.network,
            permissions.clipboard,
            dirs,
            app_data,
        )
    }

    /// Whether `url` (`http` or `https`) points at a granted host and port.
    pub fn allows_url(&self, url: &reqwest::Url) -> bool {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let default_port = if url.scheme() == "https" { 443 } else { 80 };
        self.hosts
            .iter()
            .any(|pattern| host_matches(pattern, host, port, default_port))
    }
}

/// Lower-cases a `host`, `host:port` or `*.domain[:port]` pattern; `None` if it is none of
/// these.
fn normalize_host_pattern(pattern: &str) -> Option<String> {
    let pattern = pattern.trim().to_ascii_lowercase();
    let (host, port) = split_host_port(&pattern)?;
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid_name = if name.starts_with('[') {
        name.ends_with(']')
            && name[1..name.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
    } else {
        !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if !valid_name {
        return None;
    }
    if let Some(port) = port {
        port.parse::<u16>().ok()?;
    }
    Some(pattern)
}

/// `host[:port]` split; the host of `[v6]:port` keeps its brackets.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if text.starts_with('[') {
        let end = text.find(']')?;
        let rest = &text[end + 1..];
        return match rest.strip_prefix(':') {
            Some(port) => Some((&text[..=end], Some(port))),
            None if rest.is_empty() => Some((text, None)),
            None => None,
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

/// Whether a normalized pattern allows `host` (as the URL spells it) on `port`.
fn host_matches(pattern: &str, host: &str, port: u16, default_port: u16) -> bool {
    let Some((pattern_host, pattern_port)) = split_host_port(pattern) else {
        return false;
    };
    let want_port = match pattern_port {
        Some(p) => p.parse::<u16>().ok(),
        None => Some(default_port),
    };
    if want_port != Some(port) {
        return false;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern_host.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern_host,
    }
}

/// The person's folders that path variables name. Missing ones make their variable
/// unusable (an error), never a guess at another folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDirs {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$DOCUMENTS`.
    pub documents: Option<PathBuf>,
    /// `$DOWNLOADS`.
    pub downloads: Option<PathBuf>,
    /// `$DESKTOP`.
    pub desktop: Option<PathBuf>,
}

impl UserDirs {
    /// The folders of the user running the node. On Unix: `$HOME`, and the XDG user
    /// directories from `$XDG_CONFIG_HOME/user-dirs.dirs` (what `xdg-user-dir` reads),
    /// falling back to `~/Documents`, `~/Downloads` and `~/Desktop`. Elsewhere (Windows):
    /// the system's known folders (the profile folder, Documents, Downloads, Desktop).
    #[cfg(not(unix))]
    pub fn from_env() -> UserDirs {
        let Some(dirs) = directories::UserDirs::new() else {
            return UserDirs::default();
        };
        UserDirs {
            home: Some(dirs.home_dir().to_owned()),
            documents: dirs.document_dir().map(Path::to_owned),
            downloads: dirs.download_dir().map(Path::to_owned),
            desktop: dirs.desktop_dir().map(Path::to_owned),
        }
    }

    /// See the other platforms' version above.
    #[cfg(unix)]
    pub fn from_env() -> UserDirs {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute());
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|c| c.is_absolute())
            .or_else(|| home.as_ref().map(|h| h.join(".config")));
        let file = config
            .and_then(|c| std::fs::read_to_string(c.join("user-dirs.dirs")).ok())
            .unwrap_or_default();
        let Some(home) = home else {
            return UserDirs::default();
        };
        let pick = |key: &str, fallback: &str| {
            parse_user_dir(&file, key, &home).unwrap_or_else(|| home.join(fallback))
        };
        UserDirs {
            documents: Some(pick("XDG_DOCUMENTS_DIR", "Documents")),
            downloads: Some(pick("XDG_DOWNLOAD_DIR", "Downloads")),
            desktop: Some(pick("XDG_DESKTOP_DIR", "Desktop")),
            home: Some(home),
        }
    }

    /// Resolves a path as written in a grant or a host call: absolute, or starting with a
    /// variable followed by nothing or `/…`, or `~` (the home folder, as `$HOME`) followed
    /// by nothing or `/…`. `..` is kept (checks resolve it later).
    pub fn resolve(&self, text: &str, app_data: &Path) -> Result<PathBuf, PathError> {
        if text.is_empty() || text.contains('\0') {
            return Err(PathError::Malformed(text.to_owned()));
        }
        // `~` and `~/…` as a shell writes them (not `~user`).
        if text == "~" || text.starts_with("~/") || text.starts_with("~\\") {
            let rest = text.get(2..).unwrap_or_default();
            return self.resolve(&format!("$HOME/{rest}"), app_data);
        }
        if let Some(rest) = text.strip_prefix('$') {
            let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let base = match name {
                "HOME" => self.home.clone(),
                "DOCUMENTS" => self.documents.clone(),
                "DOWNLOADS" => self.downloads.clone(),
                "DESKTOP" => self.desktop.clone(),
                "APP_DATA" => Some(app_data.to_owned()),
                _ => return Err(PathError::NotAbsolute(text.to_owned())),
            }
            .ok_or_else(|| PathError::UnknownVariable(format!("${name}")))?;
            let tail = tail.trim_start_matches('/');
            return Ok(if tail.is_empty() {
                base
            } else {
                base.join(tail)
            });
        }
        let path = PathBuf::from(text);
        if !path.is_absolute() {
            return Err(PathError::NotAbsolute(text.to_owned()));
        }
        Ok(path)
    }
}

/// One `XDG_…_DIR="$HOME/…"` line of `user-dirs.dirs`.
#[cfg(unix)]
fn parse_user_dir(file: &str, key: &str, home: &Path) -> Option<PathBuf> {
    let line = file
        .lines()
        .map(str::trim)
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with('=')))?;
    let value = line[key.len() + 1..].trim().trim_matches('"');
    let path = match value.strip_prefix("$HOME") {
        Some(rest) => home.join(rest.trim_start_matches('/')),
        None => PathBuf::from(value),
    };
    (path.is_absolute() && path != home).then_some(path)
}

/// Why a file operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Outside every granted folder, or through a symlink where none is allowed.
    #[error("{0}")]
    Denied(String),
    /// The path (or its folder) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The path is malformed.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Another I/O failure.
    #[error("{0}")]
    Io(String),
}

fn io_error(path: &Path, err: io::Error) -> AccessError {
    match err.kind() {
        io::ErrorKind::NotFound => {
            AccessError::NotFound(format!("{} does not exist", path.display()))
        }
        io::ErrorKind::PermissionDenied => {
            AccessError::Denied(format!("{}: the system refused access", path.display()))
        }
        _ => AccessError::Io(format!("{}: {err}", path.display())),
    }
}

/// Canonical forms of the roots that exist; the app folder is created first when asked.
fn canonical_roots(roots: &[PathBuf], app_data: &Path) -> Vec<PathBuf> {
    let _ = create_private_dir_all(app_data);
    std::iter::once(app_data)
        .chain(roots.iter().map(PathBuf::as_path))
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect()
}

/// Creates a folder and its parents, readable only by this user on Unix.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Whether the canonical path `canonical` may be reached: inside `$APP_DATA`, or inside
/// one of `roots` (canonical grants) and not inside the node's home folder.
fn reachable(
    canonical: &Path,
    app_data: &Path,
    node_home: &Path,
    roots: &[PathBuf],
) -> Result<(), String> {
    let app_data = std::fs::canonicalize(app_data).ok();
    if app_data.as_ref().is_some_and(|a| canonical.starts_with(a)) {
        return Ok(());
    }
    let home = std::fs::canonicalize(node_home).unwrap_or_else(|_| node_home.to_owned());
    if canonical.starts_with(&home) {
        return Err("it is in the node's own folder, which no grant reaches".into());
    }
    if roots.iter().any(|r| canonical.starts_with(r)) {
        Ok(())
    } else {
        Err("it is not granted".into())
    }
}

/// The canonical path of `path` if it may be read (it, after `..` and every symlink are
/// resolved, lies inside `$APP_DATA`, or inside a read or write grant and outside
/// `node_home`, the node's own folder). Blocking: call from `spawn_blocking`.
pub fn check_read(
    grants: &Grants,
    app_data: &Path,
    node_home: &Path,
    path: &Path,
) -> Result<PathBuf, AccessError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| io_error(path, e))?;
    let granted: Vec<PathBuf> = grants.read.iter().chain(&grants.write).cloned().collect();
    let roots = canonical_roots(&granted, app_data);
    reachable(&canonical, app_data, node_home, &roots)
        .map(|()| canonical)
        .map_err(|why| AccessError::Denied(format!("reading {} is refused: {why}", path.display())))
}

/// Checks that `path` may be written and returns the path to open: the canonical parent
/// folder (created inside the granted root when missing) joined with the file name. The
/// final component must be a plain name and must not be a symlink; the folder must lie in
/// `$APP_DATA`, or in a write grant and outside `node_home`. Blocking.
pub fn prepare_write(
    grants: &Grants,
    app_data: &Path,
    node_home: &Path,
    path: &Path,
) -> Result<PathBuf, AccessError> {
    let malformed = || PathError::Malformed(path.display().to_string());
    let Some(Component::Normal(name)) = path.components().next_back() else {
        return Err(malformed().into());
    };
    let parent = path.parent().ok_or_else(malformed)?;
    let roots = canonical_roots(&grants.write, app_data);
    let denied = || AccessError::Denied(format!("writing {} is not granted", path.display()));
    // The longest existing ancestor decides; missing folders below it are created one by
    // one, each checked to be a real folder.
    let mut existing = parent.to_owned();
    let mut missing = Vec::new();
    let canonical_parent = loop {
        match std::fs::canonicalize(&existing) {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(Component::Normal(part)) = existing.components().next_back() else {
                    return Err(denied());
                };
                missing.push(part.to_owned());
                existing = existing.parent().ok_or_else(denied)?.to_owned();
            }
            Err(e) => return Err(io_error(&existing, e)),
        }
    };
    if let Err(why) = reachable(&canonical_parent, app_data, node_home, &roots) {
        return Err(AccessError::Denied(format!(
            "writing {} is refused: {why}",
            path.display()
        )));
    }
    let mut dir = canonical_parent;
    for part in missing.into_iter().rev() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&dir, e)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| io_error(&dir, e))?;
        if !meta.is_dir() {
            return Err(denied());
        }
    }
    let target = dir.join(name);
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        if meta.file_type().is_symlink() {
            return Err(AccessError::Denied(format!(
                "{} is a symlink; writing through it is refused",
                path.display()
            )));
        }
        if !meta.is_file() {
            return Err(AccessError::Denied(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
    }
    Ok(target)
}

/// Opens a checked path for reading without following a symlink in its last component
/// and without blocking on a FIFO; refuses anything but a regular file.
pub fn open_for_read(path: &Path) -> Result<File, AccessError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let file = options.open(path).map_err(|e| open_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(AccessError::Denied(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// Opens (creating or truncating) a path from [`prepare_write`] with `O_NOFOLLOW`, so a
/// symlink that appeared since the check is refused rather than followed.
pub fn open_for_write(path: &Path) -> Result<File, AccessError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            libc::O_NOFOLLOW | libc::O_NONBLOCK,
        );
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let file = options.open(path).map_err(|e| open_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(AccessError::Denied(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

fn open_error(path: &Path, err: io::Error) -> AccessError {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::ELOOP) {
        return AccessError::Denied(format!(
            "{} is a symlink; following it is refused",
            path.display()
        ));
    }
    io_error(path, err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        app_data: PathBuf,
        node_home: PathBuf,
        docs: PathBuf,
        // Only the symlink tests (Unix) look outside.
        #[cfg_attr(not(unix), allow(dead_code))]
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let docs = root.join("docs");
        let outside = root.join("outside");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(docs.join("a.txt"), "a").unwrap();
        std::fs::write(docs.join("sub/b.txt"), "b").unwrap();
        std::fs::write(outside.join("secret.txt"), "s").unwrap();
        Fixture {
            app_data: root.join("home/data/app/files"),
            node_home: root.join("home"),
            _dir: dir,
            root,
            docs,
            outside,
        }
    }

    fn grants(f: &Fixture) -> Grants {
        Grants {
            read: vec![f.docs.clone()],
            write: vec![f.docs.clone()],
            ..Grants::default()
        }
    }

    #[test]
    fn reads_inside_a_grant_and_dot_dot_cannot_leave_it() {
        let f = fixture();
        let g = grants(&f);
        assert!(check_read(&g, &f.app_data, &f.node_home, &f.docs.join("a.txt")).is_ok());
        assert!(check_read(&g, &f.app_data, &f.node_home, &f.docs.join("sub/../a.txt")).is_ok());
        let escape = f.docs.join("../outside/secret.txt");
        assert!(matches!(
            check_read(&g, &f.app_data, &f.node_home, &escape),
            Err(AccessError::Denied(_))
        ));
        assert!(matches!(
            prepare_write(
                &g,
                &f.app_data,
                &f.node_home,
                &f.docs.join("../outside/new.txt")
            ),
            Err(AccessError::Denied(_))
        ));
        // A path that is a prefix as text but not as components.
        std::fs::create_dir_all(f.root.join("docs-other")).unwrap();
        std::fs::write(f.root.join("docs-other/x"), "x").unwrap();
        assert!(check_read(&g, &f.app_data, &f.node_home, &f.root.join("docs-other/x")).is_err());
        assert!(matches!(
            check_read(&g, &f.app_data, &f.node_home, &f.docs.join("missing.txt")),
            Err(AccessError::NotFound(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_to_outside_are_refused_inside_to_inside_allowed() {
        let f = fixture();
        let g = grants(&f);
        std::os::unix::fs::symlink(f.outside.join("secret.txt"), f.docs.join("leak")).unwrap();
        std::os::unix::fs::symlink(&f.outside, f.docs.join("leakdir")).unwrap();
        std::os::unix::fs::symlink(f.docs.join("sub/b.txt"), f.docs.join("alias")).unwrap();
        assert!(check_read(&g, &f.app_data, &f.node_home, &f.docs.join("leak")).is_err());
        assert!(
            check_read(
                &g,
                &f.app_data,
                &f.node_home,
                &f.docs.join("leakdir/secret.txt")
            )
            .is_err()
        );
        assert!(
            prepare_write(
                &g,
                &f.app_data,
                &f.node_home,
                &f.docs.join("leakdir/new.txt")
            )
            .is_err(),
            "a folder symlink pointing outside"
        );
        let inside = check_read(&g, &f.app_data, &f.node_home, &f.docs.join("alias")).unwrap();
        assert_eq!(inside, f.docs.join("sub/b.txt"));
    }

    #[cfg(unix)]
    #[test]
    fn writing_through_a_symlink_is_refused_even_one_planted_after_the_check() {
        let f = fixture();
        let g = grants(&f);
        std::os::unix::fs::symlink(f.docs.join("a.txt"), f.docs.join("link")).unwrap();
        assert!(matches!(
            prepare_write(&g, &f.app_data, &f.node_home, &f.docs.join("link")),
            Err(AccessError::Denied(m)) if m.contains("symlink")
        ));
        // The race: checked while absent, a symlink appears before the open.
        let target = prepare_write(&g, &f.app_data, &f.node_home, &f.docs.join("late")).unwrap();
        std::os::unix::fs::symlink(f.outside.join("secret.txt"), &target).unwrap();
        assert!(matches!(
            open_for_write(&target),
            Err(AccessError::Denied(_))
        ));
        assert_eq!(
            std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
            "s"
        );
        assert!(matches!(
            open_for_read(&target),
            Err(AccessError::Denied(_))
        ));
    }

    #[test]
    fn app_data_is_always_allowed_and_created_on_demand() {
        let f = fixture();
        let none = Grants::default();
        assert!(!f.app_data.exists());
        let target = prepare_write(
            &none,
            &f.app_data,
            &f.node_home,
            &f.app_data.join("out/r.txt"),
        )
        .unwrap();
        assert_eq!(target, f.app_data.join("out/r.txt"));
        std::fs::write(&target, "r").unwrap();
        assert!(check_read(&none, &f.app_data, &f.node_home, &target).is_ok());
        assert!(check_read(&none, &f.app_data, &f.node_home, &f.docs.join("a.txt")).is_err());
        assert!(prepare_write(&none, &f.app_data, &f.node_home, &f.docs.join("a.txt")).is_err());
        // Read-only grants do not allow writing.
        let read_only = Grants {
            read: vec![f.docs.clone()],
            ..Grants::default()
        };
        assert!(check_read(&read_only, &f.app_data, &f.node_home, &f.docs.join("a.txt")).is_ok());
        assert!(
            prepare_write(&read_only, &f.app_data, &f.node_home, &f.docs.join("a.txt")).is_err()
        );
        // A write grant allows reading too (as permissions.json documents it).
        let write_only = Grants {
            write: vec![f.docs.join("sub")],
            ..Grants::default()
        };
        assert!(
            check_read(
                &write_only,
                &f.app_data,
                &f.node_home,
                &f.docs.join("sub/b.txt")
            )
            .is_ok()
        );
        assert!(
            check_read(
                &write_only,
                &f.app_data,
                &f.node_home,
                &f.docs.join("a.txt")
            )
            .is_err()
        );
        // Not a plain file name.
        assert!(prepare_write(&none, &f.app_data, &f.node_home, &f.app_data.join("..")).is_err());
    }

    #[test]
    fn the_node_home_is_never_reachable_through_a_grant_of_a_parent() {
        let f = fixture();
        std::fs::create_dir_all(f.node_home.join("data/other/files")).unwrap();
        std::fs::write(f.node_home.join("node.toml"), "secret").unwrap();
        std::fs::write(f.node_home.join("data/other/files/x"), "other app").unwrap();
        // A grant of the folder that contains the node's home (as $HOME would).
        let everything = Grants {
            read: vec![f.root.clone()],
            write: vec![f.root.clone()],
            ..Grants::default()
        };
        let refused = |r: Result<PathBuf, AccessError>| matches!(r, Err(AccessError::Denied(m)) if m.contains("node's own folder"));
        let home = &f.node_home;
        assert!(refused(check_read(
            &everything,
            &f.app_data,
            home,
            &home.join("node.toml")
        )));
        assert!(refused(check_read(&everything, &f.app_data, home, home)));
        assert!(refused(check_read(
            &everything,
            &f.app_data,
            home,
            &home.join("data/other/files/x")
        )));
        assert!(refused(prepare_write(
            &everything,
            &f.app_data,
            home,
            &home.join("node.toml")
        )));
        assert!(refused(prepare_write(
            &everything,
            &f.app_data,
            home,
            &home.join("miniapps/evil/1.0.0/logic.wasm")
        )));
        assert!(!home.join("miniapps").exists(), "no folder was created");
        // `..` out of $APP_DATA lands in the home folder: refused too.
        assert!(refused(check_read(
            &everything,
            &f.app_data,
            home,
            &f.app_data.join("../../other/files/x")
        )));
        // The rest of the granted folder, and the app's own $APP_DATA, stay reachable.
        assert!(check_read(&everything, &f.app_data, home, &f.docs.join("a.txt")).is_ok());
        assert!(prepare_write(&everything, &f.app_data, home, &f.app_data.join("r.txt")).is_ok());
        #[cfg(unix)]
        {
            // A symlink in a granted folder pointing into the home folder.
            std::os::unix::fs::symlink(home.join("node.toml"), f.docs.join("cfg")).unwrap();
            std::os::unix::fs::symlink(home, f.docs.join("homedir")).unwrap();
            assert!(refused(check_read(
                &everything,
                &f.app_data,
                home,
                &f.docs.join("cfg")
            )));
            assert!(refused(prepare_write(
                &everything,
                &f.app_data,
                home,
                &f.docs.join("homedir/new.toml")
            )));
        }
    }

    /// An absolute path on this platform: `/rest` on Unix, `C:\\rest` on Windows
    /// (where `/rest` has no drive and is not absolute).
    fn abs(rest: &str) -> String {
        if cfg!(windows) {
            format!("C:\\{}", rest.replace('/', "\\"))
        } else {
            format!("/{rest}")
        }
    }

    #[test]
    fn variables_resolve_and_unknown_ones_are_refused() {
        let dirs = UserDirs {
            home: Some(abs("home/p").into()),
            documents: Some(abs("home/p/Docs").into()),
            downloads: None,
            desktop: Some(abs("home/p/Desktop").into()),
        };
        let app_data = PathBuf::from(abs("n/data/x/files"));
        let app = app_data.as_path();
        assert_eq!(
            dirs.resolve("$DOCUMENTS", app).unwrap(),
            Path::new(&abs("home/p/Docs"))
        );
        assert_eq!(
            dirs.resolve("$DOCUMENTS/a/b.txt", app).unwrap(),
            Path::new(&abs("home/p/Docs/a/b.txt"))
        );
        assert_eq!(dirs.resolve("$APP_DATA/r", app).unwrap(), app.join("r"));
        assert_eq!(
            dirs.resolve(&abs("etc/x"), app).unwrap(),
            Path::new(&abs("etc/x"))
        );
        // A path without a root (and on Windows, without a drive) is refused.
        assert!(dirs.resolve("etc/x", app).is_err());
        #[cfg(windows)]
        assert!(dirs.resolve("/etc/x", app).is_err());
        assert!(matches!(
            dirs.resolve("$DOWNLOADS", app),
            Err(PathError::UnknownVariable(_))
        ));
        assert!(dirs.resolve("$PATH", app).is_err());
        assert!(dirs.resolve("$HOMEX/a", app).is_err());
        assert!(dirs.resolve("relative/a", app).is_err());
        assert!(dirs.resolve("", app).is_err());
        assert!(dirs.resolve("/a\0b", app).is_err());
        let g = Grants::resolve(
            true,
            &["$DOCUMENTS".into()],
            &["$APP_DATA".into()],
            &["API.example.com".into(), "*.cdn.example.com:8443".into()],
            false,
            &dirs,
            app,
        )
        .unwrap();
        assert_eq!(g.read, [PathBuf::from(abs("home/p/Docs"))]);
        assert_eq!(g.write, [app.to_owned()]);
        assert_eq!(g.hosts, ["api.example.com", "*.cdn.example.com:8443"]);
        let parsed: aisa_abi::Permissions = serde_json::from_str(
            r#"{"ai": true, "filesystem": {"read": ["$DOCUMENTS"], "write": ["$APP_DATA"]},
                "network": ["API.example.com", "*.cdn.example.com:8443"], "clipboard": false}"#,
        )
        .unwrap();
        assert_eq!(Grants::from_permissions(&parsed, &dirs, app).unwrap(), g);
        for bad in ["", "a b", "http://x", "x:port", "*.", "[::1"] {
            assert!(
                Grants::resolve(false, &[], &[], &[bad.into()], false, &dirs, app).is_err(),
                "{bad}"
            );
        }
    }

    /// XDG's `user-dirs.dirs` exists only on Unix desktops (Windows' folders come from
    /// the system: the next test).
    #[cfg(unix)]
    #[test]
    fn xdg_user_dirs_are_read_from_the_file() {
        let file = "# comment\nXDG_DOCUMENTS_DIR=\"$HOME/Dokumente\"\nXDG_DESKTOP_DIR=\"$HOME/\"\nXDG_DOWNLOAD_DIR=\"/data/dl\"\n";
        let home = Path::new("/home/p");
        assert_eq!(
            parse_user_dir(file, "XDG_DOCUMENTS_DIR", home),
            Some(PathBuf::from("/home/p/Dokumente"))
        );
        assert_eq!(
            parse_user_dir(file, "XDG_DOWNLOAD_DIR", home),
            Some(PathBuf::from("/data/dl"))
        );
        // `$HOME/` means "disabled": the fallback is used instead.
        assert_eq!(parse_user_dir(file, "XDG_DESKTOP_DIR", home), None);
        assert_eq!(parse_user_dir(file, "XDG_MUSIC_DIR", home), None);
    }

    #[test]
    fn the_persons_folders_are_found_and_absolute() {
        let dirs = UserDirs::from_env();
        let found = [&dirs.home, &dirs.documents, &dirs.downloads, &dirs.desktop];
        for dir in found.into_iter().flatten() {
            assert!(dir.is_absolute(), "{dir:?}");
        }
        // Windows always has a profile and a Documents folder (Wine makes both).
        #[cfg(windows)]
        assert!(dirs.home.is_some() && dirs.documents.is_some(), "{dirs:?}");
        #[cfg(unix)]
        if std::env::var_os("HOME").is_some_and(|h| Path::new(&h).is_absolute()) {
            assert!(dirs.home.is_some() && dirs.documents.is_some(), "{dirs:?}");
        }
    }

    #[test]
    fn hosts_match_exactly_by_subdomain_wildcard_and_port() {
        let g = Grants {
            hosts: vec![
                "api.example.com".into(),
                "*.cdn.example.com".into(),
                "127.0.0.1:8080".into(),
                "[::1]:9000".into(),
            ],
            ..Grants::default()
        };
        let allows = |u: &str| g.allows_url(&reqwest::Url::parse(u).unwrap());
        assert!(allows("https://api.example.com/v1"));
        assert!(allows("http://api.example.com/"));
        assert!(allows("https://API.Example.com./x"));
        assert!(allows("https://api.example.com:443/"));
        assert!(!allows("https://api.example.com:8443/"), "other port");
        assert!(
            !allows("https://evil.api.example.com/"),
            "exact means exact"
        );
        assert!(!allows("https://api.example.com.evil.net/"));
        assert!(allows("https://a.cdn.example.com/"));
        assert!(allows("https://a.b.cdn.example.com/"));
        assert!(
            !allows("https://cdn.example.com/"),
            "the wildcard is for subdomains"
        );
        assert!(!allows("https://xcdn.example.com/"));
        assert!(allows("http://127.0.0.1:8080/"));
        assert!(!allows("http://127.0.0.1:8081/"));
        assert!(!allows("http://127.0.0.1/"));
        assert!(allows("http://[::1]:9000/"));
        assert!(!allows("ftp://api.example.com/"));
        assert!(
            !Grants::default()
                .allows_url(&reqwest::Url::parse("https://api.example.com/").unwrap())
        );
    }
}
