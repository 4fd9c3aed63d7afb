//! Crash reports: a panic hook that writes a local report, and its opt-in upload.
//!
//! [`install`] sets a panic hook (before the default one, which still prints to standard
//! error) that writes one JSON [`Report`] per panic into `crashes/` in the node's log
//! folder: the node's version and protocol, the OS and architecture, the panicking
//! thread, where it panicked and its message, a backtrace, and the last
//! [`TAIL_LINES`] log lines (kept in memory by [`tail_layer`]).
//!
//! A report never holds a secret or a person's data: the message and the log lines go
//! through [`scrub`] first, which replaces every value registered with [`register_secret`]
//! (the device token, the provider key, the passphrase), anything shaped like a token or
//! key, e-mail addresses, the home folder's path, and every quoted string and `{…}`
//! block (where payloads, inputs, outputs and file contents would appear). The backtrace
//! holds only function names and source locations of the node's own code.
//!
//! With the person's consent (`[crash_reports] upload = true` in `node.toml`, off by
//! default) [`upload_when_online`] sends pending reports to the relay each time the node
//! connects (`POST /api/crash-reports`, `Authorization: Device <token>`); accepted ones
//! move to `crashes/sent/`, refused ones (malformed, too large) to `crashes/rejected/`,
//! and the rest wait for the next connection. Without consent they stay local.
//!
//! What is not here: storing reports on the relay (`aisa_relay::http::crash_reports`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// `[crash_reports]` in `node.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CrashReportsConfig {
    /// Send crash reports to the relay (the operator of your relay reads them). Off by
    /// default: reports are then only written locally, in the log folder's `crashes/`.
    pub upload: bool,
}

/// The folder, inside the node's log folder, where reports are written.
pub const FOLDER: &str = "crashes";

/// The format name every report carries.
pub const FORMAT: &str = "aisa-crash-report/1";
/// Log lines kept in memory for the next report.
pub const TAIL_LINES: usize = 50;
/// Longest kept log line or message, in characters.
const MAX_LINE: usize = 400;
/// Longest kept backtrace, in bytes.
const MAX_BACKTRACE: usize = 24 << 10;
/// Pending reports kept locally; the oldest go first.
const MAX_PENDING: usize = 20;

/// One crash report, as written to disk and uploaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// [`FORMAT`].
    pub format: String,
    /// The node's version (`CARGO_PKG_VERSION`).
    pub node_version: String,
    /// The wire protocol it speaks, `major.minor`.
    pub protocol: String,
    /// `linux`, `windows`, `macos`, …
    pub os: String,
    /// `x86_64`, `aarch64`, …
    pub arch: String,
    /// When it panicked, Unix seconds.
    pub created_at: u64,
    /// The panicking thread's name, if it had one.
    pub thread: Option<String>,
    /// `file:line:column` of the panic.
    pub location: Option<String>,
    /// The panic message, scrubbed.
    pub message: String,
    /// The backtrace (function names and source locations).
    pub backtrace: String,
    /// The last log lines before the panic, scrubbed.
    pub log_tail: Vec<String>,
}

static SECRETS: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());
static TAIL: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static IN_HOOK: AtomicBool = AtomicBool::new(false);

/// Remembers a secret the node holds (`kind` names it for the debug trigger), so that
/// [`scrub`] removes it from every report. Values under 8 characters are ignored.
pub fn register_secret(kind: &'static str, value: &str) {
    let value = value.trim();
    if value.len() < 8 {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|(_, v)| v == value) {
        secrets.push((kind, value.to_owned()));
    }
}

/// A tracing layer keeping the last [`TAIL_LINES`] formatted log lines in memory for
/// the next report (scrubbed when the report is written, not here).
pub fn tail_layer<S>() -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    TailWriter,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(TailWriter)
}

/// Where [`tail_layer`] writes: the in-memory ring of recent lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct TailWriter;

impl std::io::Write for TailWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        // Never block a logging thread on a panicking one.
        if let Ok(mut tail) = TAIL.try_lock() {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(truncate(line, MAX_LINE));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for TailWriter {
    type Writer = TailWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Prefixes of tokens and keys: this relay's device tokens, OpenAI/Anthropic (`sk-`),
/// Google (`AIza`), JWTs (`eyJ`), GitHub, Slack, xAI.
const SECRET_PREFIXES: [&str; 9] = [
    "aisa_dt_",
    "sk-",
    "sk_",
    "AIza",
    "eyJ",
    "ghp_",
    "github_pat_",
    "xox",
    "xai-",
];

/// Removes what must never leave the machine from `text` (see the module doc): the
/// registered secrets, token-shaped words, e-mail addresses, the home folder, and the
/// contents of every quoted string and `{…}` block.
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let home = directories::BaseDirs::new().map(|d| d.home_dir().to_string_lossy().into_owned());
    scrub_with(text, &secrets, home.as_deref())
}

fn scrub_with(text: &str, secrets: &[(&'static str, String)], home: Option<&str>) -> String {
    let mut text = text.to_owned();
    for (_, secret) in secrets {
        text = text.replace(secret.as_str(), "[secret]");
    }
    if let Some(home) = home.filter(|h| h.len() > 1) {
        text = text.replace(home, "~");
    }
    let text = blank_enclosed(&text);
    scrub_words(&text)
}

/// `"…"` and `{…}` (outermost, nested braces counted) keep only their delimiters.
fn blank_enclosed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    quoted = false;
                    if depth == 0 {
                        out.push_str("…\"");
                    }
                }
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                if depth == 0 {
                    out.push('"');
                }
            }
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("{…");
                }
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push('}');
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    if quoted && depth == 0 {
        out.push('…');
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-+/=.~@%".contains(c)
}

/// Replaces token-shaped words and e-mail addresses.
fn scrub_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(&judge_word(word));
            word.clear();
        }
    };
    for c in text.chars() {
        if is_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn judge_word(word: &str) -> String {
    if word.contains('@') && word.contains('.') {
        return "[email]".into();
    }
    // `key=value`: judge the value.
    if let Some((key, value)) = word.split_once('=')
        && !key.is_empty()
        && !value.is_empty()
    {
        return format!("{key}={}", judge_word(value));
    }
    let bare = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if SECRET_PREFIXES.iter().any(|p| bare.starts_with(p)) && bare.len() >= 12 {
        return "[redacted]".into();
    }
    // Long runs of letters and digits (keys, tokens, hashes), also inside a path; ids
    // shaped like UUIDs (devices, requests) are kept.
    let random_looking = word.split(['/', '.', '\\']).any(|part| {
        !is_uuid(part)
            && part.len() >= 24
            && part.chars().any(|c| c.is_ascii_digit())
            && part.chars().any(|c| c.is_ascii_alphabetic())
    });
    if random_looking {
        return "[redacted]".into();
    }
    word.to_owned()
}

fn is_uuid(part: &str) -> bool {
    part.len() == 36
        && part.matches('-').count() == 4
        && part.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Report {
    /// A report of a panic with `message` at `location`, on the current thread, with
    /// `backtrace` and the current log tail; message and tail scrubbed here.
    pub fn new(message: &str, location: Option<String>, backtrace: String) -> Report {
        let tail: Vec<String> = match TAIL.try_lock() {
            Ok(tail) => tail.iter().map(|l| scrub(l)).collect(),
            Err(_) => vec!["[log lines unavailable]".into()],
        };
        Report {
            format: FORMAT.into(),
            node_version: env!("CARGO_PKG_VERSION").into(),
            protocol: aisa_tunnel::Version::CURRENT.to_string(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            created_at: unix_now(),
            thread: std::thread::current().name().map(str::to_owned),
            location,
            message: truncate(&scrub(message), MAX_LINE * 4),
            backtrace: truncate_bytes(backtrace, MAX_BACKTRACE),
            log_tail: tail,
        }
    }
}

fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str("\n…");
    }
    text
}

/// Sets the panic hook that writes a [`Report`] into `dir` for every panic, then runs
/// the hook that was set before (standard error). A panic inside the hook writes nothing.
pub fn install(dir: PathBuf) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_HOOK.swap(true, Ordering::SeqCst) {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a panic without a message)".into());
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            let backtrace = std::backtrace::Backtrace::force_capture().to_string();
            let report = Report::new(&message, location, backtrace);
            match write(&dir, &report) {
                Ok(path) => eprintln!("desktop-node: crash report written to {}", path.display()),
                Err(err) => eprintln!("desktop-node: could not write a crash report: {err}"),
            }
            IN_HOOK.store(false, Ordering::SeqCst);
        }
        previous(info);
    }));
}

/// Writes `report` as a new pending report in `dir` (the oldest pending ones beyond
/// [`MAX_PENDING`] are removed); returns its path.
pub fn write(dir: &Path, report: &Report) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut old = pending(dir);
    while old.len() >= MAX_PENDING {
        let _ = std::fs::remove_file(old.remove(0));
    }
    let name = format!(
        "crash-{}-{}-{:08x}.json",
        report.created_at,
        std::process::id(),
        rand::random::<u32>()
    );
    let path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, serde_json::to_vec_pretty(report)?)?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// The pending reports in `dir`, oldest first.
pub fn pending(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("crash-") && n.ends_with(".json"))
        })
        .collect();
    found.sort();
    found
}

/// What one upload round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Accepted by the relay (moved to `sent/`).
    pub sent: usize,
    /// Refused for good (moved to `rejected/`).
    pub rejected: usize,
    /// Still pending: the relay asked to wait, or could not be reached.
    pub waiting: usize,
}

fn move_into(path: &Path, sub: &str) {
    let Some(dir) = path.parent() else { return };
    let target = dir.join(sub);
    let _ = std::fs::create_dir_all(&target);
    if let Some(name) = path.file_name() {
        let _ = std::fs::rename(path, target.join(name));
    }
}

/// Uploads the pending reports in `dir` to the relay at `relay_url` as the device with
/// `device_token`, oldest first, stopping at the first one the relay asks to keep for
/// later (rate limit, full store, no such endpoint, unreachable).
pub async fn upload_pending(
    http: &reqwest::Client,
    dir: &Path,
    relay_url: &str,
    device_token: &str,
) -> Uploaded {
    let mut done = Uploaded::default();
    let reports = pending(dir);
    let url = format!("{}/api/crash-reports", relay_url.trim_end_matches('/'));
    for (i, path) in reports.iter().enumerate() {
        let Ok(body) = std::fs::read(path) else {
            continue;
        };
        let answer = http
            .post(&url)
            .header("authorization", format!("Device {device_token}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match answer.map(|a| a.status().as_u16()) {
            Ok(200 | 201) => {
                move_into(path, "sent");
                done.sent += 1;
            }
            Ok(400 | 413 | 422) => {
                tracing::warn!(file = %path.display(), "the relay refused a crash report; kept in crashes/rejected");
                move_into(path, "rejected");
                done.rejected += 1;
            }
            Ok(status) => {
                tracing::info!(
                    status,
                    "the relay did not take crash reports now; they wait for the next connection"
                );
                done.waiting = reports.len() - i;
                break;
            }
            Err(err) => {
                tracing::info!(%err, "could not upload crash reports; they wait for the next connection");
                done.waiting = reports.len() - i;
                break;
            }
        }
    }
    done
}

/// Each time `online` turns true, uploads the pending reports (see [`upload_pending`]).
/// Runs until `online`'s sender is gone.
pub async fn upload_when_online(
    dir: PathBuf,
    relay_url: String,
    device_token: String,
    mut online: watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    loop {
        if online.wait_for(|on| *on).await.is_err() {
            return;
        }
        if !pending(&dir).is_empty() {
            let done = upload_pending(&http, &dir, &relay_url, &device_token).await;
            tracing::info!(
                sent = done.sent,
                rejected = done.rejected,
                waiting = done.waiting,
                "crash reports uploaded"
            );
        }
        if online.wait_for(|on| !*on).await.is_err() {
            return;
        }
    }
}

/// A hidden trigger for tests, compiled only into debug builds: when the variable
/// `AISA_NODE_TEST_PANIC` names a file, a thread waits for that file to appear and then
/// panics with its contents as the message, `{device_token}`, `{provider_key}` and
/// `{passphrase}` replaced by the registered secrets of those kinds (so a test can
/// prove the report does not carry them).
#[cfg(debug_assertions)]
pub fn test_trigger_from_env() {
    let Some(path) = std::env::var_os("AISA_NODE_TEST_PANIC").map(PathBuf::from) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("crash-test-trigger".into())
        .spawn(move || {
            loop {
                if let Ok(template) = std::fs::read_to_string(&path) {
                    let mut message = template;
                    for (kind, value) in SECRETS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                        message = message.replace(&format!("{{{kind}}}"), value);
                    }
                    panic!("{message}");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
}

/// In release builds the test trigger does not exist.
#[cfg(not(debug_assertions))]
pub fn test_trigger_from_env() {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TOKEN: &str = "aisa_dt_Q2xhdWRlIHNheXMgaGVsbG8gdG8gdGhlIHRlc3Q";
    const KEY: &str = "sk-proj-PLANTEDkey1234567890abcdef";

    fn secrets() -> Vec<(&'static str, String)> {
        vec![("device_token", TOKEN.into()), ("provider_key", KEY.into())]
    }

    #[test]
    fn secrets_payloads_emails_and_home_are_scrubbed() {
        let text = format!(
            "token={TOKEN} key {KEY} payload={{\"topic\":\"PLANTED-PAYLOAD\",\"n\":{{\"x\":1}}}} \
             input=\"my diary entry\" by bob@example.com at /home/alice/notes.txt \
             jwt eyJhbGciOiJIUzI1NiJ9.e30.sig other sk-otherkeyNotRegistered99 \
             hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        let out = scrub_with(&text, &secrets(), Some("/home/alice"));
        for secret in [
            TOKEN, KEY, "PLANTED", "diary", "bob@", "alice", "eyJhbG", "sk-other", "9f86d0",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("token=[secret]"), "{out}");
        assert!(out.contains("payload={…}"), "{out}");
        assert!(out.contains("input=\"…\""), "{out}");
        assert!(out.contains("~/notes.txt"), "{out}");
    }

    #[test]
    fn ordinary_log_lines_stay_readable() {
        let line = "2026-11-29T18:00:01Z  INFO aisa_node::node::connection: connected to the relay device_id=0b6b3f7e-5c1a-4f7e-9d2b-3a4c5d6e7f80 relay=127.0.0.1:4433 transport=quic after_ms=12";
        assert_eq!(scrub_with(line, &secrets(), None), line);
        let panic = "called `Option::unwrap()` on a `None` value";
        assert_eq!(scrub_with(panic, &secrets(), None), panic);
    }

    #[test]
    fn unclosed_quotes_end_the_line_and_short_values_are_not_secrets() {
        assert_eq!(scrub_with("x \"unterminated secret", &[], None), "x \"…");
        assert_eq!(scrub_with("a } b", &[], None), "a } b");
        // A short value is never registered (it would blank ordinary words).
        register_secret("test", "short");
        assert!(!SECRETS.lock().unwrap().iter().any(|(_, v)| v == "short"));
    }

    #[test]
    fn a_report_is_written_listed_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report::new("boom", Some("src/x.rs:1:2".into()), "bt".into());
        assert_eq!(report.format, FORMAT);
        assert_eq!(report.os, std::env::consts::OS);
        let path = write(dir.path(), &report).unwrap();
        let back: Report = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, report);
        for _ in 0..MAX_PENDING + 3 {
            write(dir.path(), &report).unwrap();
        }
        assert_eq!(pending(dir.path()).len(), MAX_PENDING);
        move_into(&pending(dir.path())[0], "sent");
        assert_eq!(pending(dir.path()).len(), MAX_PENDING - 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sent")).unwrap().count(),
            1
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        use std::io::Write;
        let mut w = TailWriter;
        for i in 0..TAIL_LINES + 5 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let tail = TAIL.lock().unwrap();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.back().unwrap(), &format!("line {}", TAIL_LINES + 4));
    }
}
