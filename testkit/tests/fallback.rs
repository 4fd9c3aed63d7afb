//! The desktop's TCP fallback with UDP really blocked: a `relay-edge` process in this
//! network namespace, a `desktop-node` process in a namespace of its own
//! (`scripts/netns.sh`), and nftables rules that drop (black hole) the node's UDP to the
//! relay's port while TCP flows. The browser's part is played here, over WebTransport
//! from this namespace (its UDP is not blocked: the rule only matches packets coming
//! from the node's namespace).
//!
//! * UDP dropped from the start: the node connects over TCP (the mux on the WebSocket
//!   at `/tunnel/desktop`) within a second of trying, and actions stream; UDP unblocked:
//!   the node moves back to QUIC in the background, and new streams go over QUIC
//!   (the relay's `aisa_relay_desktop_streams_total{transport}`).
//! * UDP dropped in the middle of a running stream: that stream ends with an ERROR or a
//!   reset (never a clean end that lost output), and the next actions run over TCP.
//!
//! Needs root (namespaces, nftables) and `ip` and `nft` (`scripts/prereqs.sh test`
//! installs them). Where `scripts/netns.sh check` fails, each test prints why and skips.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, OpenHeader, StreamKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const EMAIL: &str = "fallback@example.com";
const PASSWORD: &str = "fallback-password-123";
const API_KEY: &str = "sk-fallback";
const WAIT: Duration = Duration::from_secs(30);

fn script() -> PathBuf {
    aisa_testkit::guest::workspace_root().join("scripts/netns.sh")
}

/// Why this machine cannot run these tests, if it cannot.
fn cannot_run() -> Option<String> {
    let out = std::process::Command::new("bash")
        .arg(script())
        .arg("check")
        .output()
        .expect("bash runs");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

fn netns(args: &[&str]) -> String {
    let out = std::process::Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "netns.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The workspace's binaries, built as CI builds them.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AISA_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_owned();
    let mut build = aisa_testkit::guest::cargo();
    build
        .current_dir(aisa_testkit::guest::workspace_root())
        .args(["build", "--workspace", "--bins"]);
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(build.status().expect("cargo build runs").success());
    profile
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

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

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

/// A relay here, a node in namespace `ns`, hello-ai installed, the browser's token.
struct Rig {
    ns: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    _relay: Child,
    node: Option<Child>,
    quic: SocketAddr,
    cert: [u8; 32],
    metrics: SocketAddr,
    device_id: String,
    token: String,
    fake: aisa_testkit::provider::FakeProvider,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .args(["down", &self.ns])
            .status();
    }
}

impl Rig {
    /// Namespace `ns` with the veth subnet `10.231.index.0/30`, a relay on the host side
    /// (heartbeats every second, so a dead link is noticed in 3 s), the node signed in.
    async fn start(ns: &str, index: u8) -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin = bin_dir();
        let out = netns(&["up", ns, &index.to_string()]);
        let host: std::net::IpAddr = out
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("host address");
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = aisa_testkit::provider::start((host, 0).into(), Some(API_KEY.into()))
            .await
            .expect("fake provider");
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
                    id: "fallback".into(),
                    name: "Fallback".into(),
                    max_devices: 10,
                    max_concurrent_streams: 1000,
                    max_actions_per_day: 1_000_000,
                })
                .await
                .expect("plan");
            let hash = aisa_relay::auth::hash_password(PASSWORD).expect("hash");
            store.create_user(EMAIL, &hash).await.expect("user");
            assert!(store.set_user_plan(EMAIL, "fallback").await.expect("plan"));
        }
        let metrics = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            probe.local_addr().expect("addr")
        };
        std::fs::write(dir.path().join("relay.toml"), "heartbeat_secs = 1\n").expect("config");
        let mut relay = Command::new(bin.join("relay-edge"))
            .arg("--data-dir")
            .arg(dir.path().join("relay"))
            .arg("--config")
            .arg(dir.path().join("relay.toml"))
            .args(["serve", "--quic-listen", &format!("{host}:0")])
            .args(["--http-listen", &format!("{host}:0")])
            .args(["--public-host", &host.to_string()])
            .args(["--metrics-addr", &metrics.to_string()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(&dir.path().join("relay.log")))
            .kill_on_drop(true)
            .spawn()
            .expect("relay-edge starts");
        let mut out = BufReader::new(relay.stdout.take().expect("stdout"));
        let mut line = String::new();
        tokio::time::timeout(WAIT, out.read_line(&mut line))
            .await
            .expect("the relay's banner in time")
            .expect("banner");
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        });
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

        let node_cmd = |args: &[&str]| {
            let mut cmd = std::process::Command::new(bin.join("desktop-node"));
            cmd.arg("--home")
                .arg(dir.path().join("node"))
                .args(args)
                .env("AISA_SECRETS_BACKEND", "file")
                .env("AISA_PASSPHRASE", PASSWORD)
                .env_remove("AISA_NODE_HOME");
            cmd
        };
        run_ok(
            node_cmd(&[
                "login",
                "--relay",
                &format!("http://{http}"),
                "--email",
                EMAIL,
                "--password-stdin",
                "--name",
                "fallback desk",
            ]),
            PASSWORD,
        );
        let wasm = aisa_testkit::guest::hello_ai_wasm();
        let mut install = node_cmd(&["apps", "install-local"]);
        install
            .arg(wasm)
            .args(["--id", "hello-ai", "--action", "write,echo"]);
        run_ok(install, "");
        let device_id = std::fs::read_to_string(dir.path().join("node/node.toml"))
            .expect("node.toml")
            .lines()
            .find_map(|l| l.strip_prefix("device_id = "))
            .expect("device_id in node.toml")
            .trim_matches('"')
            .to_owned();
        let login: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{http}/api/auth/login"))
            .json(&serde_json::json!({ "email": EMAIL, "password": PASSWORD }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        Rig {
            ns: ns.to_owned(),
            bin,
            _relay: relay,
            node: None,
            quic,
            cert,
            metrics,
            device_id,
            token: login["token"].as_str().expect("token").to_owned(),
            dir,
            fake,
        }
    }

    fn node_log(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// Starts `desktop-node run` inside the namespace.
    fn start_node(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(self.bin.join("desktop-node"))
            .arg("--home")
            .arg(self.dir.path().join("node"))
            .args(["run", "--ai-base-url", &self.fake.base_url()])
            .env("OPENAI_API_KEY", API_KEY)
            .env("AISA_SECRETS_BACKEND", "file")
            .env("AISA_PASSPHRASE", PASSWORD)
            .env("RUST_LOG", "info,aisa_node::node=debug")
            .env("NO_COLOR", "1")
            .env_remove("AISA_NODE_HOME")
            .stdin(Stdio::null())
            .stdout(log_file(&self.node_log()))
            .stderr(log_file(&self.node_log()))
            .kill_on_drop(true)
            .spawn()
            .expect("desktop-node starts");
        self.node = Some(child);
    }

    /// Waits until the node's log has a line containing every one of `words`; returns it.
    async fn wait_log(&self, words: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::read_to_string(self.node_log()).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no node log line with {words:?} within {within:?}; the log:\n{log}\nrelay log:\n{}",
                std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `aisa_relay_desktop_streams_total{transport}` from the relay's metrics.
    async fn streams_over(&self, transport: &str) -> u64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| {
                l.starts_with("aisa_relay_desktop_streams_total")
                    && l.contains(&format!("transport=\"{transport}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    async fn session(&self) -> wtransport::Connection {
        let config = wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(self.cert)])
            .build();
        wtransport::Endpoint::client(config)
            .expect("client endpoint")
            .connect(format!("https://{}/wt", self.quic))
            .await
            .expect("WebTransport session")
    }

    /// Opens an action stream for hello-ai's `action` with `payload`.
    async fn open(
        &self,
        session: &wtransport::Connection,
        action: &str,
        payload: serde_json::Value,
    ) -> (wtransport::SendStream, wtransport::RecvStream) {
        let header = OpenHeader {
            kind: StreamKind::Action,
            device_id: self.device_id.clone(),
            token: self.token.clone(),
            e2e: None,
        };
        let request = Envelope::new(
            7,
            Body::ExecuteAction {
                app_id: "hello-ai".into(),
                action: action.into(),
                payload: payload.to_string(),
                model: None,
            },
        );
        let (mut send, recv) = session
            .open_bi()
            .await
            .expect("open")
            .await
            .expect("opened");
        for frame in [header.encode(), request.encode()] {
            write_frame(&mut send, &frame, MAX_FRAME_LEN)
                .await
                .expect("write");
        }
        (send, recv)
    }

    /// Runs `echo` of `text` and checks the text comes back whole.
    async fn echo(&self, session: &wtransport::Connection, text: &str) {
        let (_send, mut recv) = self
            .open(session, "echo", serde_json::json!({ "text": text }))
            .await;
        let mut got = String::new();
        loop {
            let body = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
                .await
                .expect("reply in time")
                .expect("read")
                .expect("a frame before the end");
            match Envelope::decode(&body).expect("envelope").body {
                Body::StreamChunk { data, .. } => got.push_str(&data),
                Body::StreamEnd { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, text);
    }
}

/// The namespace index for this process's test number `n` (tests run in parallel; so
/// may several test processes).
fn index(n: u8) -> u8 {
    ((std::process::id() % 50) as u8) * 5 + n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_dropped_desktop_on_tcp_within_a_second_then_back_to_quic() {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: the UDP-blocking tests need network namespaces and nftables: {why}");
        return;
    }
    let ns = format!("aisafb{}a", std::process::id() % 10_000);
    let mut rig = Rig::start(&ns, index(0)).await;
    // Black hole: the node's QUIC packets to the relay vanish, TCP flows.
    netns(&["block", &ns, &rig.quic.port().to_string(), "drop"]);
    rig.start_node();
    let line = rig
        .wait_log(&["connected to the relay", "transport=tcp"], WAIT)
        .await;
    let after_ms: u64 = line
        .split("after_ms=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("after_ms in {line:?}"));
    println!("black-holed UDP: on TCP {after_ms} ms after the node began to dial");
    assert!(
        after_ms <= 1000,
        "fallback took {after_ms} ms, over the 1 s goal"
    );

    let session = rig.session().await;
    rig.echo(&session, "over tcp one two three").await;
    assert!(
        rig.streams_over("tcp").await >= 1,
        "the stream went over TCP"
    );
    let quic_before = rig.streams_over("quic").await;

    // UDP comes back: the node moves to QUIC by itself (first probe within 5-7.5 s).
    netns(&["unblock", &ns]);
    let unblocked = Instant::now();
    rig.wait_log(&["moved back to QUIC"], Duration::from_secs(40))
        .await;
    println!(
        "UDP unblocked: back on QUIC after {} ms",
        unblocked.elapsed().as_millis()
    );
    // The relay may take a moment to take the new link: retry the check briefly.
    rig.echo(&session, "over quic four five").await;
    assert!(
        rig.streams_over("quic").await > quic_before,
        "the stream after the move went over QUIC"
    );
    // The relay took the QUIC link as the same node moving (same identity key), not as
    // another node with the same token: the node is still running, and the TCP link it
    // moved away from was closed by the node ("moved"), not replaced.
    assert!(
        rig.node
            .as_mut()
            .expect("node")
            .try_wait()
            .expect("wait")
            .is_none(),
        "the node stopped after moving: {}",
        std::fs::read_to_string(rig.node_log()).unwrap_or_default()
    );
    rig.wait_log(&["the link the node moved away from is closed"], WAIT)
        .await;
    let log = std::fs::read_to_string(rig.node_log()).unwrap_or_default();
    assert!(!log.contains("replaced this one"), "{log}");
    // It is remembered: transport.json names this network.
    let memory =
        std::fs::read_to_string(rig.dir.path().join("node/transport.json")).expect("memory");
    assert!(memory.contains("\"quic\""), "{memory}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_blocked_mid_stream_the_stream_fails_clearly_and_new_ones_go_over_tcp() {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED: the UDP-blocking tests need network namespaces and nftables: {why}");
        return;
    }
    let ns = format!("aisafb{}b", std::process::id() % 10_000);
    let mut rig = Rig::start(&ns, index(1)).await;
    rig.start_node();
    rig.wait_log(&["connected to the relay", "transport=quic"], WAIT)
        .await;
    let session = rig.session().await;
    rig.echo(&session, "first over quic").await;

    // A slow action streams; then the node's UDP is cut.
    let (_send, mut recv) = rig
        .open(
            &session,
            "write",
            serde_json::json!({ "topic": "[slow] a long story" }),
        )
        .await;
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("first chunk in time")
        .expect("read")
        .expect("a frame");
    assert!(matches!(
        Envelope::decode(&first).expect("envelope").body,
        Body::StreamChunk { .. }
    ));
    netns(&["block", &ns, &rig.quic.port().to_string(), "drop"]);
    // The running stream ends: an ERROR, or a reset (the relay lost the desktop's side
    // mid-frame and cannot write a whole ERROR), never a clean end without STREAM_END.
    let outcome = loop {
        match tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
            .await
            .expect("the stream ends in time")
        {
            Ok(Some(body)) => match Envelope::decode(&body).expect("envelope").body {
                Body::StreamChunk { .. } => continue,
                Body::Error { code, .. } => break format!("error:{code}"),
                Body::StreamEnd { .. } => break "end".to_owned(),
                other => panic!("unexpected {other:?}"),
            },
            Ok(None) => panic!("a clean end without STREAM_END or ERROR"),
            Err(err) => break format!("reset ({err})"),
        }
    };
    println!("the stream running when UDP was cut ended with: {outcome}");
    // The node notices (3 missed heartbeats of 1 s), races again, and lands on TCP.
    rig.wait_log(&["connected to the relay", "transport=tcp"], WAIT)
        .await;
    let tcp_before = rig.streams_over("tcp").await;
    let mut ok = false;
    for _ in 0..50 {
        // The relay may still hold the dead QUIC link for a moment (until its own
        // heartbeat watch closes it): a stream refused or reset then is retried.
        let (_s, mut r) = rig
            .open(
                &session,
                "echo",
                serde_json::json!({ "text": "now over tcp" }),
            )
            .await;
        let mut got = String::new();
        let end = loop {
            match tokio::time::timeout(WAIT, read_frame(&mut r, MAX_FRAME_LEN)).await {
                Ok(Ok(Some(body))) => match Envelope::decode(&body).expect("envelope").body {
                    Body::StreamChunk { data, .. } => got.push_str(&data),
                    Body::StreamEnd { .. } => break true,
                    _ => break false,
                },
                _ => break false,
            }
        };
        if end {
            assert_eq!(got, "now over tcp");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "an action runs over TCP after the UDP cut");
    assert!(rig.streams_over("tcp").await > tcp_before);
}
