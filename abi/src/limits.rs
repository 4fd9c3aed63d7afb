//! The bundle limits: one set, used by the format reader, the relay's upload and the
//! node's download.

/// Most entries in a bundle's zip.
pub const MAX_ENTRIES: usize = 32;
/// Largest uncompressed entry, in bytes (8 MiB).
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// Largest uncompressed total of a bundle's files, in bytes (16 MiB).
pub const MAX_TOTAL_BYTES: u64 = 16 << 20;
/// Largest `.aisapp` zip, in bytes (16 MiB): what `aisapp check` reads, what the relay
/// accepts as an upload (and re-reads once signed) and what the node downloads.
pub const MAX_ZIP_BYTES: u64 = 16 << 20;
