//! The `.aisapp` zip: reading it with the format's limits enforced, and writing it.
//!
//! Reading never trusts the zip's headers: sizes are counted as bytes come out of the
//! decompressor, and a reader stops one byte past the limit, so a zip bomb costs at most
//! the limit in memory. Every entry name is checked before its bytes are read.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::manifest::{Manifest, ManifestError};
use crate::permissions::{Permissions, PermissionsError};

/// `manifest.json`.
pub const MANIFEST: &str = "manifest.json";
/// `action-schema.json`.
pub const ACTION_SCHEMA: &str = "action-schema.json";
/// `ui-schema.json`.
pub const UI_SCHEMA: &str = "ui-schema.json";
/// `permissions.json`.
pub const PERMISSIONS: &str = "permissions.json";
/// The JS entry, `bot-logic.js`.
pub const BOT_LOGIC: &str = "bot-logic.js";
/// The optional JS helpers, `tools.js`.
pub const TOOLS: &str = "tools.js";
/// The wasm entry, `logic.wasm`.
pub const LOGIC_WASM: &str = "logic.wasm";
/// The signature, `signature.sig`.
pub const SIGNATURE: &str = "signature.sig";
/// An optional readme.
pub const README: &str = "README.md";
/// An optional icon.
pub const ICON: &str = "icon.png";

/// Every name a bundle may hold.
pub const ENTRY_NAMES: &[&str] = &[
    MANIFEST,
    ACTION_SCHEMA,
    UI_SCHEMA,
    PERMISSIONS,
    BOT_LOGIC,
    TOOLS,
    LOGIC_WASM,
    SIGNATURE,
    README,
    ICON,
];

/// The files every bundle must hold.
pub const REQUIRED: &[&str] = &[MANIFEST, ACTION_SCHEMA, UI_SCHEMA, PERMISSIONS];

/// Size and count limits of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in the zip.
    pub max_entries: usize,
    /// Largest uncompressed entry, in bytes.
    pub max_file_size: u64,
    /// Largest uncompressed total, in bytes.
    pub max_total_size: u64,
    /// Largest zip file, in bytes.
    pub max_zip_size: u64,
}

impl Default for Limits {
    /// The format's limits ([`aisa_abi::limits`]): 32 entries, 8 MiB each, 16 MiB in
    /// all, a 16 MiB zip.
    fn default() -> Limits {
        Limits {
            max_entries: aisa_abi::limits::MAX_ENTRIES,
            max_file_size: aisa_abi::limits::MAX_FILE_BYTES,
            max_total_size: aisa_abi::limits::MAX_TOTAL_BYTES,
            max_zip_size: aisa_abi::limits::MAX_ZIP_BYTES,
        }
    }
}

/// Why a bundle cannot be read or built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bytes are not a zip the reader understands.
    #[error("the bundle is not a valid zip file: {0}")]
    Zip(String),
    /// The zip file itself is too large.
    #[error("the bundle is {size} bytes; the limit is {limit}")]
    ZipTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More entries than allowed.
    #[error("the bundle has {count} entries; the limit is {limit}")]
    TooManyEntries {
        /// How many there are.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An entry name is absolute.
    #[error("entry {0:?} is an absolute path")]
    AbsolutePath(String),
    /// An entry name has a `..` component.
    #[error("entry {0:?} climbs out of the bundle with '..'")]
    ParentDir(String),
    /// An entry name has a backslash.
    #[error("entry {0:?} contains a backslash")]
    Backslash(String),
    /// An entry name is not UTF-8 or holds control characters.
    #[error("entry name {0:?} is not a plain UTF-8 file name")]
    BadName(String),
    /// A directory entry.
    #[error("entry {0:?} is a directory; bundles hold only files at the top level")]
    Directory(String),
    /// A symlink (or other special file) entry.
    #[error("entry {0:?} is a symbolic link or special file; only regular files are allowed")]
    Symlink(String),
    /// An encrypted entry or one compressed with an unsupported method.
    #[error("entry {name:?} uses {what}; only stored or deflated, unencrypted entries are allowed")]
    Unsupported {
        /// The entry.
        name: String,
        /// What it uses.
        what: String,
    },
    /// Two entries with one name.
    #[error("the bundle holds two entries named {0:?}")]
    Duplicate(String),
    /// The zip's central directory lists one name more than once.
    #[error("the bundle's zip directory lists the same entry name more than once")]
    DuplicateInDirectory,
    /// A name that is not part of the format.
    #[error("entry {0:?} is not part of the .aisapp format (allowed: {ENTRY_NAMES:?})")]
    UnknownEntry(String),
    /// One file is larger than allowed (counted while decompressing).
    #[error("entry {name:?} is larger than {limit} bytes uncompressed")]
    FileTooLarge {
        /// The entry.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// The files together are larger than allowed (counted while decompressing).
    #[error("the bundle's files add up to more than {limit} bytes uncompressed")]
    TotalTooLarge {
        /// The limit.
        limit: u64,
    },
    /// An entry's data is damaged (bad CRC, truncated stream).
    #[error("entry {name:?} cannot be read: {reason}")]
    Corrupt {
        /// The entry.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// A required file is missing.
    #[error("the bundle has no {0}")]
    Missing(&'static str),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The permissions are invalid.
    #[error(transparent)]
    Permissions(#[from] PermissionsError),
    /// A source file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Checks one entry name: no absolute path, `..`, backslash, directory, or name outside
/// [`ENTRY_NAMES`].
pub fn check_entry_name(name: &str) -> Result<(), BundleError> {
    if name.contains('\\') {
        return Err(BundleError::Backslash(name.to_owned()));
    }
    if name.starts_with('/') || name.as_bytes().get(1) == Some(&b':') {
        return Err(BundleError::AbsolutePath(name.to_owned()));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(BundleError::ParentDir(name.to_owned()));
    }
    if name.chars().any(char::is_control) {
        return Err(BundleError::BadName(name.to_owned()));
    }
    if name.ends_with('/') {
        return Err(BundleError::Directory(name.to_owned()));
    }
    if !ENTRY_NAMES.contains(&name) {
        return Err(BundleError::UnknownEntry(name.to_owned()));
    }
    Ok(())
}

/// A bundle in memory: its files by name (at most 16 MiB in all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Reads a `.aisapp` zip with the format's [`Limits`].
    pub fn from_zip_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        Bundle::from_zip_bytes_with_limits(bytes, &Limits::default())
    }

    /// Reads a `.aisapp` zip with the given limits.
    pub fn from_zip_bytes_with_limits(
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Bundle, BundleError> {
        if bytes.len() as u64 > limits.max_zip_size {
            return Err(BundleError::ZipTooLarge {
                size: bytes.len() as u64,
                limit: limits.max_zip_size,
            });
        }
        let mut zip =
            ZipArchive::new(Cursor::new(bytes)).map_err(|e| BundleError::Zip(e.to_string()))?;
        if zip.len() > limits.max_entries {
            return Err(BundleError::TooManyEntries {
                count: zip.len(),
                limit: limits.max_entries,
            });
        }
        if zip.has_duplicate_names() {
            return Err(BundleError::DuplicateInDirectory);
        }
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        for i in 0..zip.len() {
            let entry = zip
                .by_index_raw(i)
                .map_err(|e| BundleError::Zip(e.to_string()))?;
            let name = std::str::from_utf8(entry.name_raw())
                .map_err(|_| {
                    BundleError::BadName(String::from_utf8_lossy(entry.name_raw()).into())
                })?
                .to_owned();
            check_entry_name(&name)?;
            if entry.is_dir() {
                return Err(BundleError::Directory(name));
            }
            // 0o170000 is the file-type field: only "none" or "regular file" pass.
            let kind = entry.unix_mode().unwrap_or(0) & 0o170_000;
            if entry.is_symlink() || (kind != 0 && kind != 0o100_000) {
                return Err(BundleError::Symlink(name));
            }
            if entry.encrypted() {
                return Err(BundleError::Unsupported {
                    name,
                    what: "encryption".into(),
                });
            }
            let method = entry.compression();
            if method != CompressionMethod::Stored && method != CompressionMethod::Deflated {
                return Err(BundleError::Unsupported {
                    name,
                    what: format!("compression {method}"),
                });
            }
            if files.contains_key(&name) {
                return Err(BundleError::Duplicate(name));
            }
            drop(entry);
            let entry = zip.by_index(i).map_err(|e| BundleError::Corrupt {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            let remaining = limits.max_total_size - total;
            let cap = limits.max_file_size.min(remaining);
            let mut data = Vec::new();
            entry
                .take(cap + 1)
                .read_to_end(&mut data)
                .map_err(|e| BundleError::Corrupt {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            if data.len() as u64 > cap {
                return Err(if cap == limits.max_file_size {
                    BundleError::FileTooLarge {
                        name,
                        limit: limits.max_file_size,
                    }
                } else {
                    BundleError::TotalTooLarge {
                        limit: limits.max_total_size,
                    }
                });
            }
            total += data.len() as u64;
            files.insert(name, data);
        }
        Ok(Bundle { files })
    }

    /// A bundle from files by name; names and limits are checked.
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> Result<Bundle, BundleError> {
        let mut bundle = Bundle::default();
        for (name, data) in files {
            bundle.insert(&name, data)?;
        }
        Ok(bundle)
    }

    /// Reads the format's files from an app's source folder (other files there, such as
    /// `src/` or `Cargo.toml`, are not part of the bundle; neither is a `signature.sig`).
    pub fn from_dir(dir: &Path) -> Result<Bundle, BundleError> {
        let mut bundle = Bundle::default();
        for name in ENTRY_NAMES.iter().filter(|n| **n != SIGNATURE) {
            let path = dir.join(name);
            let size = match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(BundleError::Io { path, source }),
            };
            // Refuse a huge file before reading it into memory.
            let limit = Limits::default().max_file_size;
            if size > limit {
                return Err(BundleError::FileTooLarge {
                    name: (*name).to_owned(),
                    limit,
                });
            }
            let data = std::fs::read(&path).map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?;
            bundle.insert(name, data)?;
        }
        Ok(bundle)
    }

    /// Adds or replaces a file, checking its name and the size limits.
    pub fn insert(&mut self, name: &str, data: Vec<u8>) -> Result<(), BundleError> {
        check_entry_name(name)?;
        let limits = Limits::default();
        if data.len() as u64 > limits.max_file_size {
            return Err(BundleError::FileTooLarge {
                name: name.to_owned(),
                limit: limits.max_file_size,
            });
        }
        let others: u64 = self
            .files
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, d)| d.len() as u64)
            .sum();
        if others + data.len() as u64 > limits.max_total_size {
            return Err(BundleError::TotalTooLarge {
                limit: limits.max_total_size,
            });
        }
        self.files.insert(name.to_owned(), data);
        Ok(())
    }

    /// Removes a file, returning it.
    pub fn remove(&mut self, name: &str) -> Option<Vec<u8>> {
        self.files.remove(name)
    }

    /// The files by name, sorted.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    /// One file's bytes.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// One required file's bytes, or [`BundleError::Missing`].
    pub fn require(&self, name: &'static str) -> Result<&[u8], BundleError> {
        self.file(name).ok_or(BundleError::Missing(name))
    }

    /// The parsed, validated manifest.
    pub fn manifest(&self) -> Result<Manifest, BundleError> {
        Ok(Manifest::from_json(self.require(MANIFEST)?)?)
    }

    /// The parsed, validated permissions.
    pub fn permissions(&self) -> Result<Permissions, BundleError> {
        Ok(Permissions::from_json(self.require(PERMISSIONS)?)?)
    }

    /// Whether `signature.sig` is present.
    pub fn is_signed(&self) -> bool {
        self.files.contains_key(SIGNATURE)
    }

    /// Writes the zip: names sorted, fixed timestamps (1980-01-01) and modes, deflate, so
    /// the same files always give the same bytes.
    pub fn to_zip_bytes(&self) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(DateTime::DEFAULT)
            .unix_permissions(0o644);
        for (name, data) in &self.files {
            // Writing to a Vec cannot fail, and names were checked on insert.
            let written = zip
                .start_file(name.as_str(), options)
                .and_then(|()| zip.write_all(data).map_err(Into::into));
            debug_assert!(written.is_ok(), "{written:?}");
        }
        zip.finish().map(Cursor::into_inner).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zip_over_the_one_cap_is_refused_before_it_is_read() {
        // One cap for the format, the relay's upload and the node's download: 16 MiB
        // (the format allowed a 17 MiB zip that nobody could upload or download).
        let cap = aisa_abi::limits::MAX_ZIP_BYTES;
        assert_eq!(Limits::default().max_zip_size, 16 << 20);
        let over = vec![0u8; cap as usize + 1];
        assert!(matches!(
            Bundle::from_zip_bytes(&over),
            Err(BundleError::ZipTooLarge { limit, .. }) if limit == cap
        ));
        let at = vec![0u8; cap as usize];
        assert!(matches!(
            Bundle::from_zip_bytes(&at),
            Err(BundleError::Zip(_))
        ));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_entry_name("manifest.json").is_ok());
        for (name, want) in [
            ("/etc/passwd", "absolute"),
            ("C:/x", "absolute"),
            ("../x", "'..'"),
            ("a/../manifest.json", "'..'"),
            ("a\\b", "backslash"),
            ("src/", "directory"),
            ("evil.sh", "not part of"),
            ("manifest.json\n", "plain UTF-8"),
        ] {
            let err = check_entry_name(name).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn writing_is_deterministic_and_round_trips() {
        let mut a = Bundle::default();
        a.insert("tools.js", b"export const x = 1;".to_vec())
            .unwrap();
        a.insert("manifest.json", b"{}".to_vec()).unwrap();
        let mut b = Bundle::default();
        b.insert("manifest.json", b"{}".to_vec()).unwrap();
        b.insert("tools.js", b"export const x = 1;".to_vec())
            .unwrap();
        assert_eq!(a.to_zip_bytes(), b.to_zip_bytes());
        assert_eq!(Bundle::from_zip_bytes(&a.to_zip_bytes()).unwrap(), a);
    }

    #[test]
    fn from_dir_takes_only_format_files_and_refuses_huge_ones_unread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.json"), "{}").unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(dir.path().join("signature.sig"), "{}").unwrap();
        let b = Bundle::from_dir(dir.path()).unwrap();
        assert_eq!(b.files().keys().collect::<Vec<_>>(), ["manifest.json"]);
        // A sparse 1 GiB file: refused by its size, never read.
        let f = std::fs::File::create(dir.path().join("logic.wasm")).unwrap();
        f.set_len(1 << 30).unwrap();
        let err = Bundle::from_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, BundleError::FileTooLarge { ref name, .. } if name == "logic.wasm"),
            "{err}"
        );
    }

    #[test]
    fn insert_enforces_limits() {
        let mut b = Bundle::default();
        let err = b.insert("logic.wasm", vec![0; (8 << 20) + 1]).unwrap_err();
        assert!(matches!(err, BundleError::FileTooLarge { .. }), "{err}");
        b.insert("logic.wasm", vec![0; 8 << 20]).unwrap();
        b.insert("bot-logic.js", vec![0; 8 << 20]).unwrap();
        let err = b.insert("tools.js", vec![0; 1]).unwrap_err();
        assert!(matches!(err, BundleError::TotalTooLarge { .. }), "{err}");
    }
}
