//! Load and chaos through the real processes: a
//! `relay-edge` and a `desktop-node` process on loopback, many concurrent action streams
//! from WebTransport sessions (the browser's part, played here), while a seeded schedule
//! SIGKILLs the desktop and the relay at random moments and starts them again (the relay
//! on the same ports and data, so accounts, tokens and its certificate survive).
//!
//! Every stream runs hello-ai's `echo` action, whose output is known: the text comes
//! back word by word. A stream's outcome is one of:
//!
//! * `end`: STREAM_END, every chunk in order (`seq` 0, 1, 2, …, no gap, no repeat), the
//!   text exactly the one sent, the chunk count in STREAM_END the one received;
//! * `error:<code>`: an ERROR envelope (the relay's `device_offline` while the desktop is
//!   away, the desktop's `busy` when its queue is full, …) after a correct prefix;
//! * `reset`: the relay reset the stream (it does when the desktop's side of the splice
//!   dies) after a correct prefix;
//! * `conn_lost`: the whole WebTransport session failed (the relay died) after a correct
//!   prefix, or the stream could not be opened on a session that had just failed.
//!
//! `end` and `error` are always acceptable. `reset` and `conn_lost` are acceptable only
//! for a stream that lived within [`KILL_SHADOW`] of a kill: a SIGKILLed process sends
//! nothing, so its peers learn of its death by an idle timeout (the relay keeps a dead
//! desktop's connection until the desktop reconnects and replaces it, or 30 s pass; this
//! test's sessions time out after [`CLIENT_IDLE`]). Anything else fails the test: a chunk
//! lost, repeated, reordered or altered (`corrupt`), a clean end of stream with neither
//! STREAM_END nor ERROR (`cut`), or no end within the stream timeout (`hung`).
//!
//! Then two calm rounds (no kills) measure memory: the relay's and the node's RSS (from
//! /proc) before, at the peak, and after each round. The second round must not leave
//! more memory behind than the first (a leak grows with every round; an allocator that
//! keeps freed pages does not), and after both, RSS must be within a slack of the
//! baseline.
//!
//! Parameters (environment variables; defaults are the CI smoke):
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `CHAOS_STREAMS` | 50 | concurrent streams (each a loop: open, echo, check, again) |
//! | `CHAOS_SECS` | 10 | how long the chaos phase starts new streams |
//! | `CHAOS_NODE_KILLS` / `CHAOS_RELAY_KILLS` | 1 / 1 | SIGKILLs of each process |
//! | `CHAOS_SEED` | the clock | the schedule's seed (printed; set it to replay one) |
//! | `CHAOS_WORDS` | 16 | words per echo (chunks per stream) |
//! | `CHAOS_STREAM_TIMEOUT_SECS` | 45 | a stream with no end by then is `hung` |
//! | `CHAOS_CALM_SECS` | 5 | length of each calm round |
//! | `CHAOS_RSS_SLACK_MIB` | 96 | allowed RSS above the baseline after the calm rounds |
//! | `AISA_BIN_DIR` | built here | where `relay-edge` and `desktop-node` are |
//!
//! `scripts/test-full.sh` runs 1,000 streams for 60 s. The figures go to standard output
//! (`-- --nocapture` shows them); docs/security.md records a full run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aisa_tunnel::io::{ReadError, read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, OpenHeader, StreamKind};
use futures_util::FutureExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const EMAIL: &str = "chaos@example.com";
const PASSWORD: &str = "chaos-password-123";
const API_KEY: &str = "sk-chaos";
/// Streams per WebTransport session (the relay allows 256 once one has authenticated).
const STREAMS_PER_SESSION: usize = 100;
/// The test's sessions give up on a silent relay after this long.
const CLIENT_IDLE: Duration = Duration::from_secs(10);
/// How long after a kill a stream may still see its effects as a reset or a lost
/// session: the relay's 30 s idle timeout for a desktop that died without a word, plus
/// margin. A stream that starts later than this after the last kill must end cleanly.
const KILL_SHADOW: Duration = Duration::from_secs(35);

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The test's knobs, see the module doc.
#[derive(Debug, Clone)]
struct Params {
    streams: usize,
    secs: u64,
    node_kills: u64,
    relay_kills: u64,
    seed: u64,
    words: usize,
    stream_timeout: Duration,
    calm_secs: u64,
    rss_slack_mib: u64,
}

impl Params {
    fn from_env() -> Params {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Params {
            streams: env_num("CHAOS_STREAMS", 50) as usize,
            secs: env_num("CHAOS_SECS", 10),
            node_kills: env_num("CHAOS_NODE_KILLS", 1),
            relay_kills: env_num("CHAOS_RELAY_KILLS", 1),
            seed: env_num("CHAOS_SEED", clock),
            words: env_num("CHAOS_WORDS", 16).max(1) as usize,
            stream_timeout: Duration::from_secs(env_num("CHAOS_STREAM_TIMEOUT_SECS", 45)),
            calm_secs: env_num("CHAOS_CALM_SECS", 5),
            rss_slack_mib: env_num("CHAOS_RSS_SLACK_MIB", 96),
        }
    }
}

/// SplitMix64: a small seeded generator, so a printed seed replays the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }
}

/// Where the binaries are: `AISA_BIN_DIR`, else this test's own profile folder after
/// `cargo build --workspace --bins` (a no-op when they are fresh, as after CI's build).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AISA_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/chaos-<hash>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_owned();
    let mut build = aisa_testkit::guest::cargo();
    build
        .current_dir(aisa_testkit::guest::workspace_root())
        // The whole workspace's binaries, as CI's `cargo build --workspace` builds them:
        // building only these two packages would resolve features differently and
        // rebuild half the dependency tree.
        .args(["build", "--locked", "--workspace", "--bins"]);
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build runs");
    assert!(status.success(), "cargo build of the binaries failed");
    profile
}

/// Resident memory of a process in bytes (0 when it is gone).
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// 64 hex digits as 32 bytes.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

/// The relay and node processes, their addresses, and where they keep their data.
struct Procs {
    bin: PathBuf,
    dir: PathBuf,
    provider_url: String,
    relay: Option<Child>,
    node: Option<Child>,
    quic: SocketAddr,
    http: SocketAddr,
}

impl Procs {
    /// Starts the relay on `quic` / `http` (port 0: any) and reads its banner.
    async fn spawn_relay(
        bin: &Path,
        dir: &Path,
        quic: SocketAddr,
        http: SocketAddr,
    ) -> (Child, SocketAddr, SocketAddr, [u8; 32]) {
        // After a SIGKILL the ports are free at once, but allow a few tries.
        for attempt in 0.. {
            let mut child = Command::new(bin.join("relay-edge"))
                .arg("--data-dir")
                .arg(dir.join("relay"))
                .args(["serve", "--quic-listen", &quic.to_string()])
                .args(["--http-listen", &http.to_string()])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file(dir, "relay.log"))
                .kill_on_drop(true)
                .spawn()
                .expect("relay-edge starts");
            let mut out = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(30), out.read_line(&mut line))
                .await
                .expect("the relay's banner in time");
            if read.is_err() || line.is_empty() {
                let _ = child.kill().await;
                assert!(
                    attempt < 20,
                    "the relay does not start; see {dir:?}/relay.log"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            // Keep draining its standard output so it never blocks on a full pipe.
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = out.read_to_end(&mut sink).await;
            });
            // "relay-edge: http://ADDR (QUIC/WebTransport on udp ADDR), certificate sha-256 HEX"
            let http: SocketAddr = line
                .split("http://")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("http address in {line:?}"));
            let quic: SocketAddr = line
                .split("udp ")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("QUIC address in {line:?}"));
            let cert = unhex32(line.trim().rsplit(' ').next().unwrap_or(""))
                .unwrap_or_else(|| panic!("certificate hash in {line:?}"));
            return (child, quic, http, cert);
        }
        unreachable!()
    }

    fn spawn_node(&self) -> Child {
        Command::new(self.bin.join("desktop-node"))
            .arg("--home")
            .arg(self.dir.join("node"))
            .args(["run", "--ai-base-url", &self.provider_url])
            .env("OPENAI_API_KEY", API_KEY)
            .env("AISA_SECRETS_BACKEND", "file")
            .env("AISA_PASSPHRASE", PASSWORD)
            .env("RUST_LOG", "warn")
            .env_remove("AISA_NODE_HOME")
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "node.log"))
            .stderr(log_file(&self.dir, "node.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("desktop-node starts")
    }

    fn node_cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bin.join("desktop-node"));
        cmd.arg("--home")
            .arg(self.dir.join("node"))
            .env("AISA_SECRETS_BACKEND", "file")
            .env("AISA_PASSPHRASE", PASSWORD)
            .env_remove("AISA_NODE_HOME");
        cmd
    }

    fn pids(&self) -> (u32, u32) {
        (
            self.relay.as_ref().and_then(Child::id).unwrap_or(0),
            self.node.as_ref().and_then(Child::id).unwrap_or(0),
        )
    }

    async fn kill(child: &mut Option<Child>) {
        if let Some(mut c) = child.take() {
            let _ = c.start_kill(); // SIGKILL: no goodbye to anyone
            let _ = c.wait().await;
        }
    }

    async fn restart_relay(&mut self) {
        let (child, _, _, _) = Procs::spawn_relay(&self.bin, &self.dir, self.quic, self.http).await;
        self.relay = Some(child);
    }
}

/// Runs `cmd` to its end; fails the test if it fails.
fn run_ok(mut cmd: std::process::Command, stdin: &str) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// Sets `[limits]` keys in node.toml (replacing those `login` wrote, if any).
fn set_node_limits(path: &Path, keys: &[(&str, String)]) {
    let text = std::fs::read_to_string(path).expect("node.toml");
    let mut out = Vec::new();
    let mut in_limits = false;
    let mut had_limits = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_limits = trimmed == "[limits]";
            out.push(line.to_owned());
            if in_limits {
                had_limits = true;
                out.extend(keys.iter().map(|(k, v)| format!("{k} = {v}")));
            }
            continue;
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        if in_limits && keys.iter().any(|(k, _)| *k == key) {
            continue;
        }
        out.push(line.to_owned());
    }
    if !had_limits {
        out.push("[limits]".into());
        out.extend(keys.iter().map(|(k, v)| format!("{k} = {v}")));
    }
    std::fs::write(path, out.join("\n") + "\n").expect("write node.toml");
}

/// How one stream ended; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    End,
    Error(String),
    Reset,
    ConnLost,
    Cut,
    Corrupt(String),
    Hung,
}

impl Outcome {
    fn kind(&self) -> String {
        match self {
            Outcome::End => "end".into(),
            Outcome::Error(code) => format!("error:{code}"),
            Outcome::Reset => "reset".into(),
            Outcome::ConnLost => "conn_lost".into(),
            Outcome::Cut => "cut".into(),
            Outcome::Corrupt(_) => "corrupt".into(),
            Outcome::Hung => "hung".into(),
        }
    }
}

/// One finished stream.
#[derive(Debug, Clone)]
struct Record {
    outcome: Outcome,
    started: Instant,
    ended: Instant,
}

/// Runs one echo stream on `conn` and checks what comes back.
async fn echo_stream(
    conn: &wtransport::Connection,
    header: &[u8],
    request_id: u64,
    text: &str,
) -> Outcome {
    let Ok(opening) = conn.open_bi().await else {
        return Outcome::ConnLost;
    };
    let Ok((mut send, mut recv)) = opening.await else {
        return Outcome::ConnLost;
    };
    let request = Envelope::new(
        request_id,
        Body::ExecuteAction {
            app_id: "hello-ai".into(),
            action: "echo".into(),
            payload: serde_json::json!({ "text": text }).to_string(),
            model: None,
        },
    );
    let lost = |conn: &wtransport::Connection| {
        if conn.closed().now_or_never().is_some() {
            Outcome::ConnLost
        } else {
            Outcome::Reset
        }
    };
    for frame in [header.to_vec(), request.encode()] {
        if write_frame(&mut send, &frame, MAX_FRAME_LEN).await.is_err() {
            return lost(conn);
        }
    }
    let mut seq = 0u32;
    let mut got = String::new();
    loop {
        let body = match read_frame(&mut recv, MAX_FRAME_LEN).await {
            Ok(Some(body)) => body,
            Ok(None) => return Outcome::Cut,
            Err(ReadError::Io(_)) => return lost(conn),
            Err(ReadError::Frame(e)) => {
                // A frame cut short is a reset or a lost session if either happened.
                return match lost(conn) {
                    Outcome::ConnLost => Outcome::ConnLost,
                    _ => Outcome::Corrupt(format!("framing: {e}")),
                };
            }
        };
        let env = match Envelope::decode(&body) {
            Ok(env) => env,
            Err(e) => return Outcome::Corrupt(format!("envelope: {e}")),
        };
        match env.body {
            Body::StreamChunk { seq: s, data } => {
                if s != seq {
                    return Outcome::Corrupt(format!("chunk seq {s}, expected {seq}"));
                }
                seq += 1;
                got.push_str(&data);
                if !text.starts_with(&got) {
                    return Outcome::Corrupt(format!("text {got:?} is not a prefix of {text:?}"));
                }
            }
            Body::StreamEnd { chunks, .. } => {
                if got != text || chunks != seq {
                    return Outcome::Corrupt(format!(
                        "END after {seq} chunks (says {chunks}): {got:?} for {text:?}"
                    ));
                }
                return Outcome::End;
            }
            Body::Error { code, .. } => return Outcome::Error(code),
            other => return Outcome::Corrupt(format!("unexpected {other:?}")),
        }
    }
}

/// A WebTransport session shared by up to [`STREAMS_PER_SESSION`] workers, reopened
/// when it fails.
struct SessionSlot {
    endpoint: wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    url: String,
    conn: tokio::sync::Mutex<Option<wtransport::Connection>>,
}

impl SessionSlot {
    fn new(quic: SocketAddr, cert: [u8; 32]) -> SessionSlot {
        let config = wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(cert)])
            .keep_alive_interval(Some(Duration::from_secs(1)))
            .max_idle_timeout(Some(CLIENT_IDLE))
            .expect("idle timeout")
            .build();
        SessionSlot {
            endpoint: wtransport::Endpoint::client(config).expect("client endpoint"),
            url: format!("https://127.0.0.1:{}/wt", quic.port()),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The live session, opening one if needed; `None` while the relay is unreachable.
    async fn get(&self) -> Option<wtransport::Connection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && c.closed().now_or_never().is_none()
        {
            return Some(c.clone());
        }
        *slot = None;
        let conn = tokio::time::timeout(Duration::from_secs(5), self.endpoint.connect(&self.url))
            .await
            .ok()?
            .ok()?;
        *slot = Some(conn.clone());
        Some(conn)
    }
}

/// What the load phases share.
struct Load {
    device_id: String,
    token: String,
    words: usize,
    stream_timeout: Duration,
    next_id: AtomicU64,
    records: Mutex<Vec<Record>>,
}

impl Load {
    /// `workers` loops of echo streams until `until`, on sessions to the relay.
    async fn run(
        self: &Arc<Self>,
        quic: SocketAddr,
        cert: [u8; 32],
        workers: usize,
        until: Instant,
    ) {
        let slots: Vec<Arc<SessionSlot>> = (0..workers.div_ceil(STREAMS_PER_SESSION))
            .map(|_| Arc::new(SessionSlot::new(quic, cert)))
            .collect();
        let header = OpenHeader {
            device_id: self.device_id.clone(),
            kind: StreamKind::Action,
            token: self.token.clone(),
            e2e: None,
        }
        .encode();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let slot = slots[w / STREAMS_PER_SESSION].clone();
            let load = self.clone();
            let header = header.clone();
            tasks.spawn(async move {
                while Instant::now() < until {
                    let Some(conn) = slot.get().await else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    let id = load.next_id.fetch_add(1, Ordering::Relaxed);
                    let text: String = (0..load.words).map(|j| format!("s{id}w{j} ")).collect();
                    let started = Instant::now();
                    let outcome = tokio::time::timeout(
                        load.stream_timeout,
                        echo_stream(&conn, &header, id, &text),
                    )
                    .await
                    .unwrap_or(Outcome::Hung);
                    let ended = Instant::now();
                    let pause = outcome != Outcome::End;
                    load.records.lock().expect("records").push(Record {
                        outcome,
                        started,
                        ended,
                    });
                    if pause {
                        // Not a hot loop while the desktop is away.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn take(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().expect("records"))
    }
}

/// Counts by outcome kind, and the p50 / p99 time of the streams that ended.
fn summary(records: &[Record]) -> (BTreeMap<String, usize>, Duration, Duration) {
    let mut kinds = BTreeMap::new();
    let mut times: Vec<Duration> = Vec::new();
    for r in records {
        *kinds.entry(r.outcome.kind()).or_insert(0) += 1;
        if r.outcome == Outcome::End {
            times.push(r.ended - r.started);
        }
    }
    times.sort();
    let pct = |p: f64| {
        if times.is_empty() {
            Duration::ZERO
        } else {
            times[((times.len() - 1) as f64 * p).round() as usize]
        }
    };
    (kinds, pct(0.5), pct(0.99))
}

/// Waits until an echo through the relay to the node ends well.
async fn wait_ready(load: &Arc<Load>, quic: SocketAddr, cert: [u8; 32], within: Duration) {
    let deadline = Instant::now() + within;
    let slot = SessionSlot::new(quic, cert);
    let header = OpenHeader {
        device_id: load.device_id.clone(),
        kind: StreamKind::Action,
        token: load.token.clone(),
        e2e: None,
    }
    .encode();
    loop {
        if let Some(conn) = slot.get().await
            && let Ok(Outcome::End) = tokio::time::timeout(
                Duration::from_secs(5),
                echo_stream(&conn, &header, 0, "ready? yes"),
            )
            .await
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the system did not recover within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Which process a chaos event kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Node,
    Relay,
}

/// A relay and a node process on loopback, signed in, hello-ai installed, serving.
struct Rig {
    procs: Procs,
    load: Arc<Load>,
    quic: SocketAddr,
    cert: [u8; 32],
    dir: tempfile::TempDir,
    _fake: aisa_testkit::provider::FakeProvider,
}

impl Rig {
    /// Starts both processes for `streams` concurrent streams of `words` words, and
    /// waits until an echo goes through.
    async fn start(streams: usize, words: usize, stream_timeout: Duration) -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin = bin_dir();
        let wasm = aisa_testkit::guest::hello_ai_wasm();
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(API_KEY.into()))
            .await
            .expect("fake provider");

        // The account, on a plan whose limits the load does not reach.
        {
            std::fs::create_dir_all(dir.path().join("relay")).expect("relay dir");
            let store = aisa_relay::store::Store::open(&format!(
                "sqlite://{}/relay/relay.db?mode=rwc",
                dir.path().display()
            ))
            .await
            .expect("store");
            store
                .upsert_plan(&aisa_relay::store::Plan {
                    id: "chaos".into(),
                    name: "Chaos".into(),
                    max_devices: 10,
                    max_concurrent_streams: 100_000,
                    max_actions_per_day: 1_000_000_000,
                })
                .await
                .expect("plan");
            let hash = aisa_relay::auth::hash_password(PASSWORD).expect("hash");
            store.create_user(EMAIL, &hash).await.expect("user");
            assert!(store.set_user_plan(EMAIL, "chaos").await.expect("plan"));
        }

        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let (relay, quic, http, cert) = Procs::spawn_relay(&bin, dir.path(), any, any).await;
        let mut procs = Procs {
            bin,
            dir: dir.path().to_owned(),
            provider_url: fake.base_url(),
            relay: Some(relay),
            node: None,
            quic,
            http,
        };

        // The desktop: signed in, hello-ai installed, admission sized for the load.
        let mut login = procs.node_cmd();
        login.args(["login", "--relay", &format!("http://{http}")]);
        login.args(["--email", EMAIL, "--password-stdin", "--name", "chaos desk"]);
        run_ok(login, PASSWORD);
        let mut install = procs.node_cmd();
        install.args(["apps", "install-local"]).arg(wasm).args([
            "--id",
            "hello-ai",
            "--action",
            "write,echo",
        ]);
        run_ok(install, "");
        let node_toml = dir.path().join("node/node.toml");
        set_node_limits(
            &node_toml,
            &[
                ("timeout_secs", "30".into()),
                ("max_running_actions", "64".into()),
                ("max_queued_actions", (2 * streams).max(256).to_string()),
            ],
        );
        let device_id = std::fs::read_to_string(&node_toml)
            .expect("node.toml")
            .lines()
            .find_map(|l| l.strip_prefix("device_id = "))
            .expect("device_id in node.toml")
            .trim_matches('"')
            .to_owned();
        procs.node = Some(procs.spawn_node());

        let login: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{http}/api/auth/login"))
            .json(&serde_json::json!({ "email": EMAIL, "password": PASSWORD }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        let load = Arc::new(Load {
            device_id,
            token: login["token"].as_str().expect("token").to_owned(),
            words,
            stream_timeout,
            next_id: AtomicU64::new(1),
            records: Mutex::new(Vec::new()),
        });
        wait_ready(&load, quic, cert, Duration::from_secs(60)).await;
        Rig {
            procs,
            load,
            quic,
            cert,
            dir,
            _fake: fake,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_chaos_through_real_processes() {
    let params = Params::from_env();
    println!("chaos: {params:?} (replay with CHAOS_SEED={})", params.seed);
    let Rig {
        procs,
        load,
        quic,
        cert,
        dir,
        _fake,
    } = Rig::start(params.streams, params.words, params.stream_timeout).await;

    // The chaos schedule: kills at random moments in the middle 10–80 % of the phase,
    // each process started again 0.2–2 s after its kill.
    let mut rng = Rng(params.seed);
    let span = params.secs * 1000;
    let mut plan: Vec<(Duration, Target, Duration)> = Vec::new();
    for (target, n) in [
        (Target::Node, params.node_kills),
        (Target::Relay, params.relay_kills),
    ] {
        for _ in 0..n {
            plan.push((
                rng.millis(span / 10, span * 8 / 10),
                target,
                rng.millis(200, 2000),
            ));
        }
    }
    plan.sort_by_key(|p| p.0);
    println!(
        "chaos: schedule {:?}",
        plan.iter()
            .map(|(at, t, down)| format!("{t:?} at {at:?} down {down:?}"))
            .collect::<Vec<_>>()
    );
    let kills: Arc<Mutex<Vec<(Target, Instant)>>> = Arc::default();
    let phase_start = Instant::now();
    let until = phase_start + Duration::from_secs(params.secs);
    let procs = Arc::new(tokio::sync::Mutex::new(procs));
    let chaos = {
        let procs = procs.clone();
        let kills = kills.clone();
        tokio::spawn(async move {
            for (at, target, down) in plan {
                tokio::time::sleep_until((phase_start + at).into()).await;
                let mut p = procs.lock().await;
                match target {
                    Target::Node => Procs::kill(&mut p.node).await,
                    Target::Relay => Procs::kill(&mut p.relay).await,
                }
                kills.lock().expect("kills").push((target, Instant::now()));
                drop(p);
                tokio::time::sleep(down).await;
                let mut p = procs.lock().await;
                match target {
                    Target::Node => p.node = Some(p.spawn_node()),
                    Target::Relay => p.restart_relay().await,
                }
            }
        })
    };
    load.run(quic, cert, params.streams, until).await;
    chaos.await.expect("chaos schedule");
    let chaos_records = load.take();
    let kills = kills.lock().expect("kills").clone();

    // Judge the chaos phase.
    let (kinds, p50, p99) = summary(&chaos_records);
    println!(
        "chaos phase: {} streams in {:.1} s, outcomes {kinds:?}, end p50 {p50:?} p99 {p99:?}",
        chaos_records.len(),
        phase_start.elapsed().as_secs_f64()
    );
    let mut bad = Vec::new();
    for r in &chaos_records {
        let near_kill = |only_relay: bool| {
            kills.iter().any(|(t, at)| {
                (!only_relay || *t == Target::Relay)
                    && *at <= r.ended
                    && r.started.saturating_duration_since(*at) <= KILL_SHADOW
            })
        };
        let ok = match &r.outcome {
            Outcome::End | Outcome::Error(_) => true,
            Outcome::Reset => near_kill(false),
            Outcome::ConnLost => near_kill(true),
            Outcome::Cut | Outcome::Corrupt(_) | Outcome::Hung => false,
        };
        if !ok {
            bad.push(format!(
                "{:?} (started {:?} into the phase, lasted {:?})",
                r.outcome,
                r.started.saturating_duration_since(phase_start),
                r.ended - r.started
            ));
        }
    }
    let logs = || {
        format!(
            "relay log:\n{}\nnode log:\n{}",
            std::fs::read_to_string(dir.path().join("relay.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
        )
    };
    assert!(
        bad.is_empty(),
        "seed {}: {} streams ended badly, e.g. {:?}\n{}",
        params.seed,
        bad.len(),
        &bad[..bad.len().min(10)],
        logs()
    );
    assert!(
        kinds.get("end").copied().unwrap_or(0) > 0,
        "no stream completed in the chaos phase"
    );

    // Recovery, then the calm rounds that measure memory.
    let recovered = Instant::now();
    wait_ready(&load, quic, cert, Duration::from_secs(90)).await;
    println!(
        "recovery: actions work again {:.1} s after the phase ended",
        recovered.elapsed().as_secs_f64()
    );
    let (relay_pid, node_pid) = procs.lock().await.pids();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = (rss(relay_pid), rss(node_pid));
    let mut afters = Vec::new();
    for round in 1..=2 {
        let peak = Arc::new(Mutex::new(baseline));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let mut p = peak.lock().expect("peak");
                    p.0 = p.0.max(rss(relay_pid));
                    p.1 = p.1.max(rss(node_pid));
                }
            })
        };
        let start = Instant::now();
        load.run(
            quic,
            cert,
            params.streams,
            start + Duration::from_secs(params.calm_secs),
        )
        .await;
        sampler.abort();
        let records = load.take();
        let (kinds, p50, p99) = summary(&records);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = (rss(relay_pid), rss(node_pid));
        let peak = *peak.lock().expect("peak");
        println!(
            "calm round {round}: {} streams in {:.1} s, outcomes {kinds:?}, end p50 {p50:?} p99 {p99:?}; \
             RSS relay {:.1} → peak {:.1} → {:.1} MiB, node {:.1} → peak {:.1} → {:.1} MiB",
            records.len(),
            start.elapsed().as_secs_f64(),
            mib(baseline.0),
            mib(peak.0),
            mib(after.0),
            mib(baseline.1),
            mib(peak.1),
            mib(after.1),
        );
        let odd: Vec<_> = records
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::End | Outcome::Error(_)))
            .map(|r| r.outcome.clone())
            .take(10)
            .collect();
        assert!(
            odd.is_empty(),
            "calm round {round}: streams ended badly without any kill: {odd:?}\n{}",
            logs()
        );
        assert!(
            records.iter().all(|r| match &r.outcome {
                Outcome::Error(code) => code == "busy",
                _ => true,
            }),
            "calm round {round}: errors other than busy: {kinds:?}"
        );
        afters.push(after);
    }
    assert_ne!(relay_pid, 0, "the relay runs");
    assert_ne!(node_pid, 0, "the node runs");
    let slack = params.rss_slack_mib << 20;
    for (name, base, first, second) in [
        ("relay", baseline.0, afters[0].0, afters[1].0),
        ("node", baseline.1, afters[0].1, afters[1].1),
    ] {
        assert!(
            second <= first + slack / 4,
            "{name}: RSS grew from {:.1} to {:.1} MiB over a second identical round (a leak?)",
            mib(first),
            mib(second)
        );
        assert!(
            second <= base + slack,
            "{name}: RSS {:.1} MiB after the load, baseline {:.1} MiB (slack {} MiB)",
            mib(second),
            mib(base),
            params.rss_slack_mib
        );
    }
    let mut p = procs.lock().await;
    Procs::kill(&mut p.node).await;
    Procs::kill(&mut p.relay).await;
}

/// Found by the chaos test: a relay that died without a word (SIGKILL, a crash, a lost
/// machine) left its desktops and browsers holding dead connections until their 30 s
/// idle timeout, so after a restart the relay was back but every desktop stayed offline
/// for half a minute. The restarted relay now answers the old connections' packets with
/// stateless resets their peers accept (its reset key survives the restart), so both
/// learn within a keep-alive interval or two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_and_restarted_is_noticed_within_seconds() {
    let Rig {
        mut procs,
        load,
        quic,
        cert,
        dir: _dir,
        _fake,
    } = Rig::start(8, 4, Duration::from_secs(30)).await;
    // A browser session with a long idle timeout: only a reset can end it early.
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(cert)])
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(Duration::from_secs(120)))
        .expect("idle timeout")
        .build();
    let endpoint = wtransport::Endpoint::client(config).expect("client endpoint");
    let session = endpoint
        .connect(format!("https://127.0.0.1:{}/wt", quic.port()))
        .await
        .expect("session");

    Procs::kill(&mut procs.relay).await;
    let killed = Instant::now();
    procs.restart_relay().await;
    let restarted = killed.elapsed();
    let closed = tokio::time::timeout(Duration::from_secs(15), session.closed())
        .await
        .expect(
            "the browser's session ends within seconds of the restart, not at its idle timeout",
        );
    let browser_knew = killed.elapsed();
    wait_ready(&load, quic, cert, Duration::from_secs(15)).await;
    let desktop_back = killed.elapsed();
    println!(
        "relay killed: restarted after {restarted:?}; the browser's session ended after \
         {browser_knew:?} ({closed}); actions work again after {desktop_back:?}"
    );
    assert!(
        desktop_back < Duration::from_secs(20),
        "the desktop took {desktop_back:?} to come back (its idle timeout is 30 s)"
    );
    Procs::kill(&mut procs.node).await;
    Procs::kill(&mut procs.relay).await;
}
