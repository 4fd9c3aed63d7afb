//! The `desktop-node` binary's version checks and crash reports, against real relays on
//! loopback (docs/compatibility.md; docs/desktop.md, "Crash reports").
//!
//! * An old node is refused by a relay whose `[compat] min_node_version` is above the
//!   node's version: the process stops at once (no retries) and tells the person to run
//!   `desktop-node update`.
//! * A node refuses a relay whose protocol is outside its range (a scripted relay on
//!   real QUIC that WELCOMEs with protocol 2.0, then 0.9), saying who has to update.
//! * A node forced to panic (the debug-only `AISA_NODE_TEST_PANIC` trigger, whose
//!   message carries the node's real device token, provider key and passphrase and an
//!   action payload) writes a local report holding none of them; it stays local without
//!   consent, and with `[crash_reports] upload = true` it reaches the relay's folder at
//!   the next connection, and moves to `crashes/sent/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_testkit::system::{self, System};
use aisa_tunnel::{Body, Envelope, Hello, Version};
use common::{Killed, run_to_end};

const PASSPHRASE: &str = "compat crash test passphrase";

fn node(home: &Path) -> Command {
    let mut cmd = Command::new(common::NODE);
    cmd.arg("--home")
        .arg(home)
        .env("AISA_PASSPHRASE", PASSPHRASE)
        .env("AISA_SECRETS_BACKEND", "file")
        .env_remove("OPENAI_API_KEY")
        .env_remove("AISA_NODE_HOME")
        .env_remove("AISA_NODE_TEST_PANIC")
        .env("AISA_JS_RUNTIME", "/nonexistent-probe");
    cmd
}

/// Logs a new device in at `http_addr` with the binary; returns its device id.
fn login(http_addr: SocketAddr, home: &Path) -> String {
    let mut login = node(home);
    login.args([
        "login",
        "--relay",
        &format!("http://{http_addr}"),
        "--email",
        "alice@example.com",
        "--password-stdin",
        "--name",
        "compat-test",
    ]);
    run_to_end(login, system::PASSWORD);
    let config = std::fs::read_to_string(home.join("node.toml")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("device_id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// Starts `desktop-node run` with its output in `console/`.
fn start_run(home: &Path, console: &Path, base_url: &str, env: &[(&str, &str)]) -> Killed {
    let mut run = node(home);
    run.env(
        "RUST_LOG",
        "debug,quinn=warn,wasmtime=warn,cranelift=warn,h2=warn,hyper=warn",
    )
    .args(["run", "--ai-provider", "openai", "--ai-base-url", base_url])
    .envs(env.iter().copied())
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(console.join("stdout")).unwrap())
    .stderr(std::fs::File::create(console.join("stderr")).unwrap());
    Killed(run.spawn().unwrap())
}

fn console_text(console: &Path) -> String {
    format!(
        "{}{}",
        std::fs::read_to_string(console.join("stdout")).unwrap_or_default(),
        std::fs::read_to_string(console.join("stderr")).unwrap_or_default()
    )
}

/// Waits up to `limit` for the process to end; returns its status.
async fn ended(node: &mut Killed, limit: Duration, console: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "the node did not stop: {}",
            console_text(console)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A user alice on a relay started with `config`.
async fn relay_with(
    edit: impl FnOnce(&mut aisa_relay::RelayConfig),
) -> (aisa_relay::server::RelayHandle, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let mut config = system::relay_config(data.path(), 0, None);
    edit(&mut config);
    let relay = aisa_relay::start(config).await.unwrap();
    let hash = aisa_relay::auth::hash_password(system::PASSWORD).unwrap();
    relay
        .state
        .store
        .create_user("alice@example.com", &hash)
        .await
        .unwrap();
    (relay, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_older_than_the_relays_minimum_is_refused_and_told_to_update() {
    let (relay, _data) = relay_with(|c| c.compat.min_node_version = Some("99.0.0".into())).await;
    let home = tempfile::tempdir().unwrap();
    let console = tempfile::tempdir().unwrap();
    let device_id = login(relay.http_addr, home.path());
    let mut run = start_run(home.path(), console.path(), "http://127.0.0.1:9", &[]);
    // Refused for good: the process ends by itself, well before a retry's backoff.
    let status = ended(&mut run, Duration::from_secs(30), console.path()).await;
    let said = console_text(console.path());
    assert!(!status.success(), "{said}");
    let version = env!("CARGO_PKG_VERSION");
    for part in [
        "unsupported_version",
        &format!("desktop-node {version} is too old for this relay"),
        "accepts 99.0.0 or newer",
        "`desktop-node update`",
    ] {
        assert!(said.contains(part), "{part:?} not in {said}");
    }
    assert!(relay.state.devices.registry.get(&device_id).is_none());
    // The relay's own default lets the same node in (the check is the configured one).
    let (relay, _data) = relay_with(|_| {}).await;
    let home = tempfile::tempdir().unwrap();
    let console = tempfile::tempdir().unwrap();
    let device_id = login(relay.http_addr, home.path());
    let _run = start_run(home.path(), console.path(), "http://127.0.0.1:9", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay.state.devices.registry.get(&device_id).is_none() {
        assert!(
            Instant::now() < deadline,
            "not online: {}",
            console_text(console.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scripted relay on real QUIC (ALPN `aisa/1`, a development certificate): reads each
/// HELLO, answers WELCOME with protocol `version`, and reports the HELLO's node version.
async fn scripted_relay(
    version: Version,
) -> (
    SocketAddr,
    String,
    tokio::sync::mpsc::Receiver<String>,
    tempfile::TempDir,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let identity = aisa_relay::cert::dev_identity(dir.path(), "localhost").unwrap();
    let sha = hex::encode(identity.sha256());
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![b"aisa/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        ([127, 0, 0, 1], 0).into(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (hellos, heard) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let hellos = hellos.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                    return;
                };
                let Ok(Some(frame)) =
                    aisa_tunnel::io::read_frame(&mut recv, aisa_tunnel::MAX_FRAME_LEN).await
                else {
                    return;
                };
                let (hello, _) = Hello::decode(&frame).unwrap();
                let _ = hellos.send(hello.node_version).await;
                let welcome = Envelope::new(
                    0,
                    Body::Welcome {
                        device_id: "scripted".into(),
                        version,
                        heartbeat_secs: 15,
                    },
                );
                let mut out = Vec::new();
                aisa_tunnel::frame::encode_frame(
                    &welcome.encode(),
                    aisa_tunnel::MAX_FRAME_LEN,
                    &mut out,
                )
                .unwrap();
                let _ = send.write_all(&out).await;
                conn.closed().await;
            });
        }
    });
    (addr, sha, heard, dir)
}

/// Points the node in `home` at the scripted relay (pinned certificate, no TCP way).
fn point_at(home: &Path, addr: SocketAddr, sha: &str) {
    let path = home.join("node.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    config.insert("quic_addr".into(), addr.to_string().into());
    config.insert("server_name".into(), "localhost".into());
    config.insert("cert_sha256".into(), sha.into());
    config.insert("cert_pin_from_relay".into(), false.into());
    // Nothing listens on the discard port: the TCP path fails at once.
    config.insert("relay_url".into(), "http://127.0.0.1:9".into());
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_relays_outside_its_protocol_range() {
    let (relay, _data) = relay_with(|_| {}).await;
    let home = tempfile::tempdir().unwrap();
    login(relay.http_addr, home.path());
    for (version, expected) in [
        (
            Version { major: 2, minor: 0 },
            [
                "the relay speaks protocol 2.0, newer than this desktop-node",
                "`desktop-node update`",
            ],
        ),
        (
            Version { major: 0, minor: 9 },
            [
                "the relay speaks protocol 0.9, older than this desktop-node",
                "ask the relay's operator to update the relay",
            ],
        ),
    ] {
        let (addr, sha, mut heard, _dir) = scripted_relay(version).await;
        point_at(home.path(), addr, &sha);
        let console = tempfile::tempdir().unwrap();
        let mut run = start_run(home.path(), console.path(), "http://127.0.0.1:9", &[]);
        let status = ended(&mut run, Duration::from_secs(30), console.path()).await;
        let said = console_text(console.path());
        assert!(!status.success(), "{said}");
        for part in expected {
            assert!(said.contains(part), "{part:?} not in {said}");
        }
        // The node announced its version, and connected once: no retry loop.
        assert_eq!(heard.recv().await.unwrap(), env!("CARGO_PKG_VERSION"));
        assert!(heard.try_recv().is_err(), "the node tried again: {said}");
    }
}

/// The pending crash reports in the node's log folder.
fn local_reports(home: &Path) -> Vec<PathBuf> {
    aisa_node::crash::pending(&home.join("logs").join(aisa_node::crash::FOLDER))
}

/// The reports the relay keeps for `device_id`.
fn relay_reports(data: &Path, device_id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("crash-reports").join(device_id))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect()
}

/// Runs `write` until the node is online and it succeeds. Right after a node was killed
/// and started again, the relay may still hold the dead link for a heartbeat or two: a
/// stream to it ends with nothing, and is tried again.
async fn run_one(system: &System, device_id: &str, topic: &str, console: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "no action succeeded: {}",
            console_text(console)
        );
        let reply = system::run_action(
            system,
            device_id,
            system::execute("hello-ai", "write", serde_json::json!({ "topic": topic })),
        )
        .await;
        match reply.last().map(|e| &e.body) {
            Some(Body::StreamEnd { .. }) => return,
            Some(Body::Error { code, .. }) if code == "device_offline" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            None => tokio::time::sleep(Duration::from_millis(300)).await,
            other => panic!("action failed: {other:?}: {}", console_text(console)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_report_holds_no_secret_and_is_uploaded_only_with_consent() {
    let system = System::start().await;
    let key = format!("sk-planted-{}-Zx81QmRt", std::process::id());
    let payload = format!("PLANTED-PAYLOAD-{}", std::process::id());
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(key.clone()))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let device_id = login(system.relay().http_addr, home.path());
    let mut set = node(home.path());
    set.args(["keys", "set", "openai", "--stdin"]);
    run_to_end(set, &format!("{key}\n"));
    let mut install = node(home.path());
    install
        .args(["apps", "install-local"])
        .arg(aisa_testkit::guest::hello_ai_wasm())
        .args(["--id", "hello-ai", "--action", "write,echo"]);
    run_to_end(install, "");
    let config = std::fs::read_to_string(home.path().join("node.toml")).unwrap();
    assert!(
        config.contains("[crash_reports]\nupload = false"),
        "off by default, and written so the person finds it: {config}"
    );

    // 1. A panic: its message carries the real secrets and a payload.
    let trigger = home.path().join("panic-now");
    let console = tempfile::tempdir().unwrap();
    let run = start_run(
        home.path(),
        console.path(),
        &fake.base_url(),
        &[("AISA_NODE_TEST_PANIC", trigger.to_str().unwrap())],
    );
    run_one(&system, &device_id, &payload, console.path()).await;
    std::fs::write(
        &trigger,
        format!(
            "crash test: token {{device_token}} key {{provider_key}} passphrase {{passphrase}} \
             payload {{\"topic\":\"{payload}\"}} input \"{payload}\""
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while local_reports(home.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no report: {}",
            console_text(console.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(run);
    let said = console_text(console.path());
    // The trigger really planted them: the default hook printed the raw message.
    assert!(said.contains(&key) && said.contains("aisa_dt_"), "{said}");
    let reports = local_reports(home.path());
    assert_eq!(reports.len(), 1);
    let text = std::fs::read_to_string(&reports[0]).unwrap();
    for secret in [key.as_str(), "aisa_dt_", PASSPHRASE, payload.as_str()] {
        assert!(!text.contains(secret), "{secret} in the report: {text}");
    }
    let report: aisa_node::crash::Report = serde_json::from_str(&text).unwrap();
    assert_eq!(report.node_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(report.os, std::env::consts::OS);
    assert_eq!(report.arch, std::env::consts::ARCH);
    assert_eq!(report.thread.as_deref(), Some("crash-test-trigger"));
    assert!(
        report.message.contains("token [secret]") && report.message.contains("payload {…}"),
        "{}",
        report.message
    );
    assert!(report.backtrace.contains("crash"), "{}", report.backtrace);
    // The node's own lines before the panic (at `debug`, the last 50 of them).
    assert!(
        report.log_tail.len() > 3 && report.log_tail.iter().any(|l| l.contains("aisa_node")),
        "{:?}",
        report.log_tail
    );

    // 2. Without consent the report stays on the desktop, across a connection.
    let console = tempfile::tempdir().unwrap();
    let run = start_run(home.path(), console.path(), &fake.base_url(), &[]);
    run_one(&system, &device_id, "again", console.path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(run);
    assert!(relay_reports(system.data_dir.path(), &device_id).is_empty());
    assert_eq!(local_reports(home.path()).len(), 1);

    // 3. With consent it is uploaded at the next connection, as the device.
    let path = home.path().join("node.toml");
    let config = std::fs::read_to_string(&path).unwrap().replace(
        "[crash_reports]\nupload = false",
        "[crash_reports]\nupload = true",
    );
    std::fs::write(&path, config).unwrap();
    let console = tempfile::tempdir().unwrap();
    let _run = start_run(home.path(), console.path(), &fake.base_url(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay_reports(system.data_dir.path(), &device_id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "not uploaded: {}",
            console_text(console.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = relay_reports(system.data_dir.path(), &device_id);
    assert_eq!(stored.len(), 1);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored[0]).unwrap()).unwrap();
    assert_eq!(stored["device_id"], device_id.as_str());
    assert_eq!(stored["report"]["message"], report.message.as_str());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !local_reports(home.path()).is_empty() {
        assert!(Instant::now() < deadline, "not moved to sent/");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        home.path()
            .join("logs/crashes/sent")
            .read_dir()
            .unwrap()
            .next()
            .is_some()
    );
}
