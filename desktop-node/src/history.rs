//! Run history: every action this node ran (app, action, input, output, when, how long,
//! how it ended), kept on the desktop and nowhere else, for the web app's History screen.
//!
//! The store is one JSON-lines file, `history/runs.jsonl` in the node's own folder (which
//! no mini-app grant reaches), readable only by this user. A run is one appended line;
//! an index in memory (id, start time, where its line is) is built from the file when
//! the node starts. Retention is by age, by number of runs and by the file's size
//! (`[history]` in `node.toml`, [`HistoryConfig`]); the oldest runs go first. Runs that
//! retention drops are only left out of the index until the dead lines outweigh the live
//! ones, then the file is rewritten (into a temporary file, renamed over the old one);
//! deleting runs on request rewrites it at once, so what a person deleted is gone from
//! the disk. A line cut short by a crash is dropped when the file is opened.
//!
//! Inputs and outputs are capped ([`HistoryConfig::max_input_kib`],
//! [`HistoryConfig::max_output_kib`]): a run keeps their beginnings and says it was
//! `capped`. The AI provider's key never reaches the store: it is not part of a run, and
//! any text equal to it in an input or output is replaced by `[redacted]` before it is
//! written ([`History::with_redactions`]).
//!
//! What this module does not do: it does not serve the relay (the browser asks the node,
//! over a stream the relay splices without reading, sealed when end-to-end encryption is
//! on; see docs/protocol.md, "History"), and it keeps no history of refusals that never
//! ran (unknown app or action, invalid payload, `busy`).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aisa_tunnel::message::RunRecord;
use aisa_tunnel::{Body, Envelope, ErrorCode};
use serde::{Deserialize, Serialize};

/// The most runs one HISTORY_PAGE carries.
pub const MAX_PAGE: u32 = 100;
/// How many characters of input and output a HISTORY_PAGE's previews keep.
pub const PREVIEW_CHARS: usize = 300;
/// What replaces a secret found in a run's text.
pub const REDACTED: &str = "[redacted]";
/// Secrets shorter than this are not searched for (they would match ordinary text).
const MIN_REDACTED_LEN: usize = 8;

/// `[history]` in `node.toml`. On by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep a history of runs. Default on; off, nothing is recorded and the history
    /// requests are answered `unsupported`.
    pub enabled: bool,
    /// Runs older than this many days are dropped. Default 90; 0 keeps them regardless
    /// of age.
    pub max_age_days: u32,
    /// At most this many runs are kept (the oldest go first). Default 1,000.
    pub max_runs: usize,
    /// The history file's size at most, MiB (the oldest runs go first). Default 32.
    pub max_mib: u64,
    /// Each run keeps at most this much of its input, KiB. Default 64.
    pub max_input_kib: usize,
    /// Each run keeps at most this much of its output, KiB. Default 256.
    pub max_output_kib: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            max_age_days: 90,
            max_runs: 1000,
            max_mib: 32,
            max_input_kib: 64,
            max_output_kib: 256,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// STREAM_END: the action finished.
    Done,
    /// An ERROR other than `cancelled`.
    Failed,
    /// The browser cancelled it, or stopped reading.
    Cancelled,
}

impl RunStatus {
    /// The status's text in a [`RunRecord`].
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The app's id.
    pub app_id: String,
    /// The app's name.
    pub app_name: String,
    /// The action.
    pub action: String,
    /// The JSON payload as the browser sent it.
    pub input: String,
    /// The output text.
    pub output: String,
    /// When it started.
    pub started: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// How it ended.
    pub status: RunStatus,
    /// The ERROR code of a run that did not finish; empty when done.
    pub error_code: String,
    /// The ERROR message; empty when done.
    pub error_message: String,
    /// The output was already cut by the one who collected it ([`RunLog`]).
    pub output_capped: bool,
}

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRun {
    id: u64,
    app_id: String,
    app_name: String,
    action: String,
    input: String,
    output: String,
    started_ms: u64,
    duration_ms: u32,
    status: String,
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    error_message: String,
    #[serde(default)]
    capped: bool,
}

impl StoredRun {
    fn into_record(self, preview: bool) -> RunRecord {
        let (input, output) = if preview {
            (
                cut_chars(&self.input, PREVIEW_CHARS),
                cut_chars(&self.output, PREVIEW_CHARS),
            )
        } else {
            (self.input, self.output)
        };
        RunRecord {
            id: self.id,
            app_id: self.app_id,
            app_name: self.app_name,
            action: self.action,
            input,
            output,
            started_ms: self.started_ms,
            duration_ms: self.duration_ms,
            status: self.status,
            error_code: self.error_code,
            error_message: self.error_message,
            capped: self.capped,
            preview,
        }
    }

    /// Whether every word of `words` (lowercase) occurs in the run's text.
    fn matches(&self, words: &[String]) -> bool {
        if words.is_empty() {
            return true;
        }
        let text = [
            &self.app_id,
            &self.app_name,
            &self.action,
            &self.input,
            &self.output,
            &self.error_code,
            &self.error_message,
        ]
        .map(|s| s.to_lowercase())
        .join("\n");
        words.iter().all(|w| text.contains(w.as_str()))
    }
}

/// Where one run's line is in the file.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    started_ms: u64,
    offset: u64,
    /// The line's length, its newline included.
    len: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Live runs, oldest first (ids increase).
    slots: Vec<Slot>,
    /// The file's length.
    file_len: u64,
    /// The last id given.
    last_id: u64,
}

impl Inner {
    fn live_bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.len).sum()
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading or writing the history file failed.
    #[error("the run history could not be read or written: {0}")]
    Io(#[from] std::io::Error),
}

/// The run history of this node. See the module doc.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    config: HistoryConfig,
    redact: Vec<String>,
    inner: Mutex<Inner>,
}

impl History {
    /// Opens (or starts) the history in `dir` (the node's own folder: the file is
    /// `dir/history/runs.jsonl`), applying retention at once.
    pub fn open(dir: &Path, config: HistoryConfig) -> Result<History, HistoryError> {
        let folder = dir.join("history");
        std::fs::create_dir_all(&folder)?;
        let path = folder.join("runs.jsonl");
        let history = History {
            path,
            config,
            redact: Vec::new(),
            inner: Mutex::new(Inner::default()),
        };
        {
            let mut inner = history.lock();
            *inner = history.load()?;
            history.prune(&mut inner, now_ms())?;
        }
        Ok(history)
    }

    /// Replaces each of `secrets` (the AI provider's key) with [`REDACTED`] in every
    /// input and output recorded from now on. Empty and very short strings are ignored.
    pub fn with_redactions(mut self, secrets: impl IntoIterator<Item = String>) -> Self {
        self.redact = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_REDACTED_LEN)
            .collect();
        self
    }

    /// The settings in effect.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The history file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the file into an index. A last line cut short (no newline: the node stopped
    /// while writing it) is cut off the file; a line that does not parse is skipped.
    fn load(&self) -> Result<Inner, HistoryError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut inner = Inner::default();
        let mut offset = 0usize;
        while let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') {
            let line = &bytes[offset..offset + end];
            match serde_json::from_slice::<StoredRun>(line) {
                Ok(run) if run.id > inner.last_id => {
                    inner.last_id = run.id;
                    inner.slots.push(Slot {
                        id: run.id,
                        started_ms: run.started_ms,
                        offset: offset as u64,
                        len: end as u64 + 1,
                    });
                }
                Ok(run) => tracing::warn!(id = run.id, "history: a run out of order skipped"),
                Err(err) => tracing::warn!(%err, offset, "history: an unreadable line skipped"),
            }
            offset += end + 1;
        }
        if offset < bytes.len() {
            tracing::warn!(
                bytes = bytes.len() - offset,
                "history: a cut-off last line dropped"
            );
            let file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
            file.set_len(offset as u64)?;
        }
        inner.file_len = offset as u64;
        Ok(inner)
    }

    /// Records a run; returns its id.
    pub fn record(&self, run: NewRun) -> Result<u64, HistoryError> {
        let input_cap = self.config.max_input_kib << 10;
        let output_cap = self.config.max_output_kib << 10;
        let input = self.redacted(&run.input);
        let output = self.redacted(&run.output);
        let capped = run.output_capped || input.len() > input_cap || output.len() > output_cap;
        let started_ms = run
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut inner = self.lock();
        // Ids grow with the clock, so they are not reused after everything was deleted.
        let id = (inner.last_id + 1).max(now_ms());
        let stored = StoredRun {
            id,
            app_id: run.app_id,
            app_name: run.app_name,
            action: run.action,
            input: cut_bytes(&input, input_cap).to_owned(),
            output: cut_bytes(&output, output_cap).to_owned(),
            started_ms,
            duration_ms: run.duration.as_millis().min(u32::MAX as u128) as u32,
            status: run.status.as_str().to_owned(),
            error_code: run.error_code,
            error_message: self.redacted(&run.error_message),
            capped,
        };
        let mut line = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = open_for_append(&self.path)?;
        // Appends go where the index thinks the end is (a failed earlier write may have
        // left a partial line behind; it is overwritten).
        file.set_len(inner.file_len)?;
        file.seek(SeekFrom::Start(inner.file_len))?;
        file.write_all(&line)?;
        // Closed before `prune` may rename a rewritten file over this one: Windows refuses
        // to replace a file that is still open ("Access denied").
        drop(file);
        let offset = inner.file_len;
        inner.file_len += line.len() as u64;
        inner.last_id = id;
        inner.slots.push(Slot {
            id,
            started_ms,
            offset,
            len: line.len() as u64,
        });
        self.prune(&mut inner, now_ms())?;
        Ok(id)
    }

    /// Drops runs past retention (age, count, size; oldest first) from the index, and
    /// rewrites the file once dead lines outweigh live ones.
    fn prune(&self, inner: &mut Inner, now_ms: u64) -> Result<(), HistoryError> {
        let c = &self.config;
        if c.max_age_days > 0 {
            let oldest = now_ms.saturating_sub(u64::from(c.max_age_days) * 86_400_000);
            inner.slots.retain(|s| s.started_ms >= oldest);
        }
        let excess = inner.slots.len().saturating_sub(c.max_runs);
        inner.slots.drain(..excess);
        let max_bytes = c.max_mib << 20;
        let mut live = inner.live_bytes();
        let mut drop = 0;
        while live > max_bytes && drop < inner.slots.len() {
            live -= inner.slots[drop].len;
            drop += 1;
        }
        inner.slots.drain(..drop);
        let dead = inner.file_len - live;
        if dead > 0 && dead >= live {
            self.rewrite(inner)?;
        }
        Ok(())
    }

    /// Writes the live runs into a new file and puts it in the old one's place.
    fn rewrite(&self, inner: &mut Inner) -> Result<(), HistoryError> {
        let old = std::fs::read(&self.path)?;
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = Vec::with_capacity(inner.live_bytes() as usize);
        let mut slots = Vec::with_capacity(inner.slots.len());
        for slot in &inner.slots {
            let line = &old[slot.offset as usize..(slot.offset + slot.len) as usize];
            slots.push(Slot {
                offset: out.len() as u64,
                ..*slot
            });
            out.extend_from_slice(line);
        }
        {
            let mut file = create_private(&tmp)?;
            file.write_all(&out)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        inner.slots = slots;
        inner.file_len = out.len() as u64;
        Ok(())
    }

    /// Every live run that matches `query` (words, all of which must occur,
    /// case-insensitive), newest first: how many match, and `limit` (at most
    /// [`MAX_PAGE`]) of them from `offset` on, as previews.
    pub fn list(
        &self,
        query: &str,
        offset: u32,
        limit: u32,
    ) -> Result<(u32, Vec<RunRecord>), HistoryError> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let limit = limit.min(MAX_PAGE) as usize;
        let inner = self.lock();
        let bytes = read_all(&self.path)?;
        let mut total = 0u32;
        let mut page = Vec::new();
        for slot in inner.slots.iter().rev() {
            let Some(run) = parse(&bytes, slot) else {
                continue;
            };
            if !run.matches(&words) {
                continue;
            }
            if total as usize >= offset as usize && page.len() < limit {
                page.push(run.into_record(true));
            }
            total += 1;
        }
        Ok((total, page))
    }

    /// The run `id` as kept, if it is.
    pub fn get(&self, id: u64) -> Result<Option<RunRecord>, HistoryError> {
        let inner = self.lock();
        let Some(slot) = inner.slots.iter().find(|s| s.id == id) else {
            return Ok(None);
        };
        let bytes = read_all(&self.path)?;
        Ok(parse(&bytes, slot).map(|run| run.into_record(false)))
    }

    /// Deletes run `id`, or every run with `None`, from the disk at once; returns how
    /// many were deleted.
    pub fn delete(&self, id: Option<u64>) -> Result<u32, HistoryError> {
        let mut inner = self.lock();
        let before = inner.slots.len();
        match id {
            Some(id) => inner.slots.retain(|s| s.id != id),
            None => inner.slots.clear(),
        }
        let deleted = (before - inner.slots.len()) as u32;
        if deleted > 0 || id.is_none() {
            self.rewrite(&mut inner)?;
        }
        Ok(deleted)
    }

    /// How many runs are kept.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no run is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn redacted(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.redact {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }
}

/// Answers a history request (HISTORY_LIST, HISTORY_GET, HISTORY_DELETE) from `history`
/// (`None`: history is off on this node). The file work runs off the async threads.
pub async fn answer(history: Option<Arc<History>>, request_id: u64, body: Body) -> Envelope {
    let Some(history) = history else {
        return Envelope::error(
            request_id,
            ErrorCode::Unsupported,
            "this desktop keeps no run history ([history] enabled = false in node.toml)",
        );
    };
    let work = tokio::task::spawn_blocking(move || match body {
        Body::HistoryList {
            query,
            offset,
            limit,
        } => history
            .list(&query, offset, limit)
            .map(|(total, runs)| Body::HistoryPage { total, runs }),
        Body::HistoryGet { run_id } => history.get(run_id).map(|run| match run {
            Some(run) => Body::HistoryRun { run },
            None => Body::Error {
                code: ErrorCode::UnknownRun.as_str().to_owned(),
                message: format!(
                    "this desktop keeps no run {run_id} (deleted, or past its retention)"
                ),
            },
        }),
        Body::HistoryDelete { run_id } => history
            .delete(run_id)
            .map(|count| Body::HistoryDeleted { count }),
        other => Ok(Body::Error {
            code: ErrorCode::Unsupported.as_str().to_owned(),
            message: format!("{} is not a history request", other.type_name()),
        }),
    });
    match work.await {
        Ok(Ok(body)) => Envelope::new(request_id, body),
        Ok(Err(err)) => {
            tracing::warn!(%err, "history request failed");
            Envelope::error(request_id, ErrorCode::Internal, err.to_string())
        }
        Err(join) => Envelope::error(request_id, ErrorCode::Internal, join.to_string()),
    }
}

/// Collects one action's run as it goes (output as it streams, capped as the history
/// keeps it) and records it when the action's final answer is known.
#[derive(Debug)]
pub struct RunLog {
    history: Arc<History>,
    run: NewRun,
    began: Instant,
    cap: usize,
}

impl RunLog {
    /// Starts the record of a run of `action` of the app `app_id` (named `app_name`)
    /// with `input`, now.
    pub fn start(
        history: Arc<History>,
        app_id: &str,
        app_name: &str,
        action: &str,
        input: &str,
    ) -> RunLog {
        let cap = history.config.max_output_kib << 10;
        RunLog {
            history,
            run: NewRun {
                app_id: app_id.to_owned(),
                app_name: app_name.to_owned(),
                action: action.to_owned(),
                input: input.to_owned(),
                output: String::new(),
                started: SystemTime::now(),
                duration: Duration::ZERO,
                status: RunStatus::Done,
                error_code: String::new(),
                error_message: String::new(),
                output_capped: false,
            },
            began: Instant::now(),
            cap,
        }
    }

    /// The run starts again now (it waited in the queue until now).
    pub fn restart_clock(&mut self) {
        self.run.started = SystemTime::now();
        self.began = Instant::now();
    }

    /// Adds output text (kept up to the output cap).
    pub fn push(&mut self, text: &str) {
        let room = self.cap.saturating_sub(self.run.output.len());
        if text.len() > room {
            self.run.output.push_str(cut_bytes(text, room));
            self.run.output_capped = true;
        } else {
            self.run.output.push_str(text);
        }
    }

    /// Records the run, ended by `reply` (STREAM_END: done; ERROR `cancelled`:
    /// cancelled; another ERROR: failed). A failure to write is logged; the action's
    /// answer does not depend on it.
    pub async fn finish(self, reply: &Envelope) {
        let (status, code, message) = match &reply.body {
            Body::Error { code, message } if code == ErrorCode::Cancelled.as_str() => {
                (RunStatus::Cancelled, code.clone(), message.clone())
            }
            Body::Error { code, message } => (RunStatus::Failed, code.clone(), message.clone()),
            _ => (RunStatus::Done, String::new(), String::new()),
        };
        self.finish_as(status, code, message).await;
    }

    /// Records the run with the given ending.
    pub async fn finish_as(mut self, status: RunStatus, code: String, message: String) {
        self.run.duration = self.began.elapsed();
        self.run.status = status;
        self.run.error_code = code;
        self.run.error_message = message;
        let history = self.history;
        let run = self.run;
        let written = tokio::task::spawn_blocking(move || history.record(run)).await;
        match written {
            Ok(Ok(id)) => tracing::debug!(run_id = id, "run recorded in the history"),
            Ok(Err(err)) => tracing::warn!(%err, "the run could not be recorded"),
            Err(err) => tracing::warn!(%err, "the run could not be recorded"),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

fn parse(bytes: &[u8], slot: &Slot) -> Option<StoredRun> {
    let line = bytes.get(slot.offset as usize..(slot.offset + slot.len) as usize)?;
    serde_json::from_slice(line).ok()
}

/// The longest start of `text` of at most `max` bytes that ends on a character boundary.
fn cut_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The first `max` characters of `text`, with "…" when cut.
fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn open_for_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn run(app: &str, input: &str, output: &str) -> NewRun {
        NewRun {
            app_id: app.into(),
            app_name: format!("{app} app"),
            action: "write".into(),
            input: input.into(),
            output: output.into(),
            started: SystemTime::now(),
            duration: Duration::from_millis(12),
            status: RunStatus::Done,
            error_code: String::new(),
            error_message: String::new(),
            output_capped: false,
        }
    }

    fn ids(history: &History, query: &str) -> Vec<u64> {
        history
            .list(query, 0, MAX_PAGE)
            .unwrap()
            .1
            .iter()
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn records_survive_a_restart_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        let a = history
            .record(run("a", r#"{"topic":"one"}"#, "first"))
            .unwrap();
        let b = history
            .record(run("b", r#"{"topic":"two"}"#, "second"))
            .unwrap();
        assert!(b > a);
        drop(history);
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        assert_eq!(ids(&history, ""), [b, a]);
        let got = history.get(a).unwrap().unwrap();
        assert_eq!((got.app_id.as_str(), got.app_name.as_str()), ("a", "a app"));
        assert_eq!(got.input, r#"{"topic":"one"}"#);
        assert_eq!(got.output, "first");
        assert_eq!((got.status.as_str(), got.duration_ms), ("done", 12));
        assert!(!got.preview && !got.capped);
        // A new run after the restart gets a larger id.
        assert!(history.record(run("c", "{}", "")).unwrap() > b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(history.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn search_needs_every_word_in_any_field_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        let a = history
            .record(run(
                "seo-writer",
                r#"{"topic":"Quarterly Numbers"}"#,
                "Revenue grew",
            ))
            .unwrap();
        let mut failed = run("hello-ai", r#"{"topic":"cats"}"#, "");
        failed.status = RunStatus::Failed;
        failed.error_code = "provider_error".into();
        failed.error_message = "rate limited by the provider".into();
        let b = history.record(failed).unwrap();
        assert_eq!(ids(&history, "quarterly"), [a]);
        assert_eq!(ids(&history, "QUARTERLY revenue"), [a]);
        assert_eq!(ids(&history, "quarterly cats"), Vec::<u64>::new());
        assert_eq!(ids(&history, "SEO"), [a]);
        assert_eq!(ids(&history, "rate limited"), [b]);
        assert_eq!(ids(&history, "provider_error"), [b]);
        assert_eq!(ids(&history, "  "), [b, a]);
    }

    #[test]
    fn pages_count_every_match_and_cap_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        let all: Vec<u64> = (0..130)
            .map(|i| history.record(run("a", &format!("{i}"), "x")).unwrap())
            .collect();
        let (total, page) = history.list("", 5, 3).unwrap();
        assert_eq!(total, 130);
        let got: Vec<u64> = page.iter().map(|r| r.id).collect();
        assert_eq!(got, [all[124], all[123], all[122]]);
        let (total, page) = history.list("", 0, 1000).unwrap();
        assert_eq!((total, page.len()), (130, MAX_PAGE as usize));
        let (total, page) = history.list("", 200, 10).unwrap();
        assert_eq!((total, page.len()), (130, 0));
    }

    #[test]
    fn previews_are_short_and_the_whole_run_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        let long = "é".repeat(1000);
        let id = history.record(run("a", "{}", &long)).unwrap();
        let (_, page) = history.list("", 0, 10).unwrap();
        assert!(page[0].preview);
        assert_eq!(page[0].output.chars().count(), PREVIEW_CHARS + 1); // and "…"
        assert!(page[0].output.ends_with('…'));
        assert_eq!(history.get(id).unwrap().unwrap().output, long);
    }

    #[test]
    fn inputs_and_outputs_are_capped_at_character_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let config = HistoryConfig {
            max_input_kib: 1,
            max_output_kib: 2,
            ..HistoryConfig::default()
        };
        let history = History::open(dir.path(), config).unwrap();
        let id = history
            .record(run("a", &"☃".repeat(1000), &"x".repeat(5000)))
            .unwrap();
        let got = history.get(id).unwrap().unwrap();
        assert!(got.capped);
        assert_eq!(got.input, "☃".repeat(341)); // 1,023 bytes: 1,024 would split one
        assert_eq!(got.output.len(), 2048);
        let small = history.record(run("a", "{}", "short")).unwrap();
        assert!(!history.get(small).unwrap().unwrap().capped);

        // The run log caps as the output streams, and says so.
        let history = Arc::new(history);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut log = RunLog::start(history.clone(), "a", "A", "write", "{}");
        for _ in 0..5 {
            log.push(&"y".repeat(1000));
        }
        rt.block_on(log.finish(&Envelope::new(
            1,
            Body::StreamEnd {
                chunks: 5,
                elapsed_ms: 1,
            },
        )));
        let (_, page) = history.list("", 0, 1).unwrap();
        let got = history.get(page[0].id).unwrap().unwrap();
        assert_eq!((got.output.len(), got.capped), (2048, true));
        assert_eq!(got.status, "done");
    }

    #[test]
    fn retention_by_count_keeps_the_newest_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = HistoryConfig {
            max_runs: 3,
            ..HistoryConfig::default()
        };
        let history = History::open(dir.path(), config.clone()).unwrap();
        let all: Vec<u64> = (0..10)
            .map(|i| history.record(run("a", &format!("{i}"), "out")).unwrap())
            .collect();
        assert_eq!(ids(&history, ""), [all[9], all[8], all[7]]);
        assert_eq!(history.get(all[0]).unwrap(), None);
        // The file was rewritten along the way: it does not hold all ten.
        let lines = std::fs::read_to_string(history.path())
            .unwrap()
            .lines()
            .count();
        assert!(lines < 10, "{lines} lines");
        drop(history);
        let history = History::open(dir.path(), config).unwrap();
        assert_eq!(ids(&history, ""), [all[9], all[8], all[7]]);
    }

    #[test]
    fn retention_by_size_and_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let config = HistoryConfig {
            max_mib: 1,
            ..HistoryConfig::default()
        };
        let history = History::open(dir.path(), config).unwrap();
        let big = "z".repeat(200 << 10);
        let all: Vec<u64> = (0..8)
            .map(|_| history.record(run("a", "{}", &big)).unwrap())
            .collect();
        // 200 KiB each (and some JSON around it): five fit in 1 MiB, six do not.
        let kept = ids(&history, "");
        assert_eq!(kept.len(), 5, "{kept:?}");
        assert_eq!(kept[0], all[7]);
        assert!(std::fs::metadata(history.path()).unwrap().len() <= 2 << 20);

        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        let mut old = run("a", "{}", "old");
        old.started = SystemTime::now() - Duration::from_secs(91 * 86_400);
        let mut recent = run("a", "{}", "recent");
        recent.started = SystemTime::now() - Duration::from_secs(89 * 86_400);
        history.record(old).unwrap();
        let recent = history.record(recent).unwrap();
        assert_eq!(ids(&history, ""), [recent]);
        // max_age_days = 0 keeps runs of any age.
        let dir = tempfile::tempdir().unwrap();
        let config = HistoryConfig {
            max_age_days: 0,
            ..HistoryConfig::default()
        };
        let history = History::open(dir.path(), config).unwrap();
        let mut ancient = run("a", "{}", "ancient");
        ancient.started = UNIX_EPOCH + Duration::from_secs(1);
        let id = history.record(ancient).unwrap();
        assert_eq!(ids(&history, ""), [id]);
    }

    #[test]
    fn delete_one_and_all_leave_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        let a = history.record(run("a", "{}", "secret plan alpha")).unwrap();
        let b = history.record(run("b", "{}", "secret plan beta")).unwrap();
        assert_eq!(history.delete(Some(a)).unwrap(), 1);
        assert_eq!(history.delete(Some(a)).unwrap(), 0);
        assert_eq!(ids(&history, ""), [b]);
        let file = std::fs::read_to_string(history.path()).unwrap();
        assert!(!file.contains("alpha") && file.contains("beta"), "{file}");
        drop(history);
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        assert_eq!(ids(&history, ""), [b]);
        history.record(run("c", "{}", "gamma")).unwrap();
        assert_eq!(history.delete(None).unwrap(), 2);
        assert!(history.is_empty());
        assert_eq!(std::fs::read(history.path()).unwrap(), b"");
        // Ids are not reused after everything was deleted.
        assert!(history.record(run("d", "{}", "")).unwrap() > b);
    }

    #[test]
    fn a_cut_off_last_line_is_dropped_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        let a = history.record(run("a", "{}", "kept")).unwrap();
        let path = history.path().to_owned();
        drop(history);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(br#"{"id":99999999999999,"app_id":"cut"#)
            .unwrap();
        drop(file);
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        assert_eq!(ids(&history, ""), [a]);
        let b = history.record(run("b", "{}", "after")).unwrap();
        drop(history);
        let history = History::open(dir.path(), HistoryConfig::default()).unwrap();
        assert_eq!(ids(&history, ""), [b, a]);
    }

    #[test]
    fn the_provider_key_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let key = "sk-live-0123456789abcdef";
        let history = History::open(dir.path(), HistoryConfig::default())
            .unwrap()
            .with_redactions([key.to_owned(), String::new(), "short".into()]);
        let mut leaked = run(
            "a",
            &format!(r#"{{"k":"{key}"}}"#),
            &format!("key is {key}"),
        );
        leaked.error_message = format!("bad key {key}");
        let id = history.record(leaked).unwrap();
        let file = std::fs::read_to_string(history.path()).unwrap();
        assert!(!file.contains(key), "{file}");
        let got = history.get(id).unwrap().unwrap();
        assert_eq!(got.output, format!("key is {REDACTED}"));
        // "short" is below the length that is searched for.
        history.record(run("a", "{}", "a short text")).unwrap();
        assert!(
            std::fs::read_to_string(history.path())
                .unwrap()
                .contains("a short text")
        );
    }

    #[test]
    fn answers_follow_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let history = Arc::new(History::open(dir.path(), HistoryConfig::default()).unwrap());
        let id = history.record(run("a", "{}", "out")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ask = |body| rt.block_on(answer(Some(history.clone()), 9, body));
        let page = ask(Body::HistoryList {
            query: String::new(),
            offset: 0,
            limit: 10,
        });
        assert_eq!(page.request_id, 9);
        let Body::HistoryPage { total: 1, runs } = page.body else {
            panic!("{page:?}")
        };
        assert_eq!(runs[0].id, id);
        let missing = ask(Body::HistoryGet { run_id: id + 1 });
        assert!(
            matches!(&missing.body, Body::Error { code, .. } if code == "unknown_run"),
            "{missing:?}"
        );
        let deleted = ask(Body::HistoryDelete { run_id: Some(id) });
        assert_eq!(deleted.body, Body::HistoryDeleted { count: 1 });
        let off = rt.block_on(answer(None, 3, Body::HistoryGet { run_id: 1 }));
        assert!(
            matches!(&off.body, Body::Error { code, .. } if code == "unsupported"),
            "{off:?}"
        );
    }
}
