//! What the cluster tests share (`cluster.rs`, `cluster_state.rs`,
//! `cluster_transports.rs`): Redis on loopback (one server, a 3-master Redis Cluster, or a
//! master with a replica watched by Sentinel, all from Debian's `redis-server`), a relay
//! node's cluster settings, a relay node as a process of its own, a desktop node online
//! at a relay, and a browser's WebTransport session.
//!
//! Included by each test binary with `#[path = "support/cluster.rs"] mod cluster_support;`;
//! a binary uses only some of it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_node::ai::OpenAiCompatible;
use aisa_node::node::{self, NodeContext, RelayTarget};
use aisa_node::sandbox::{Limits, Sandbox};
use aisa_relay::{RelayConfig, RelayHandle};
use aisa_testkit::system::{API_KEY, PASSWORD, WAIT, relay_config, test_apps};
use tokio::sync::watch;

/// The forward secret of the test clusters (the cluster CA is derived from it).
pub const FORWARD_SECRET: &str = "an example cluster secret of 32+ bytes, tests only";

// ---------------------------------------------------------------- Redis

/// Whether `redis-server` can run here. Without it the test fails (under `CI` always),
/// unless `AISA_TEST_REDIS_OPTIONAL=1` says to skip it.
pub fn have_redis() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none()
                && std::env::var_os("AISA_TEST_REDIS_OPTIONAL").is_some(),
            "redis-server is not installed (scripts/prereqs.sh installs it)"
        );
        eprintln!("redis-server missing: skipped");
    }
    found
}

/// A child process killed (SIGKILL) when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `redis-server` process on loopback (a Redis, or a Sentinel), killed when dropped;
/// it can be killed and started again on the same port.
pub struct Server {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    /// A config file given first (a Sentinel's, which it rewrites).
    config_file: Option<PathBuf>,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl Server {
    /// A Redis in its own folder under `dir`, nothing saved, with `extra` arguments.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server {
            port,
            dir,
            config_file: None,
            args,
            child: None,
        };
        server.spawn();
        server
    }

    /// A Sentinel watching the master on `master_port` as service `service` (quorum 1),
    /// calling it down after 1 s without an answer.
    pub fn sentinel(dir: &Path, service: &str, master_port: u16) -> Server {
        let port = free_port();
        let dir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sentinel.conf");
        std::fs::write(
            &file,
            format!(
                "bind 127.0.0.1\nprotected-mode no\n\
                 sentinel monitor {service} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 3000\n\
                 sentinel parallel-syncs {service} 1\n"
            ),
        )
        .unwrap();
        let mut server = Server {
            port,
            dir,
            config_file: Some(file),
            args: vec!["--sentinel".into()],
            child: None,
        };
        server.spawn();
        server
    }

    /// Starts the process (again) and waits until it answers PING.
    pub fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some(file) = &self.config_file {
            command.arg(file);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {} did not answer", self.port);
    }

    /// Kills the process (SIGKILL: a Redis's data is gone, nothing is saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli` against it; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single Redis, a 3-master Redis Cluster, or a master and a replica behind a Sentinel:
/// its servers (the Sentinel last) and the URL the relays are given.
pub struct Redis {
    /// The servers this test started (none when it uses scripts/services.sh's).
    pub servers: Vec<Server>,
    /// `[cluster] redis_url`.
    pub url: String,
    _dir: tempfile::TempDir,
}

/// The Sentinel service name of [`Redis::sentinel`].
pub const SENTINEL_SERVICE: &str = "aisa";

impl Redis {
    /// The one scripts/services.sh started (`$var`), else one of this test's own.
    pub fn shared(var: &str, own: fn() -> Redis) -> Redis {
        match std::env::var(var) {
            Ok(url) => Redis {
                servers: Vec::new(),
                url,
                _dir: tempfile::tempdir().unwrap(),
            },
            Err(_) => own(),
        }
    }

    /// One server.
    pub fn single() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &[]);
        let url = format!("redis://127.0.0.1:{}", server.port);
        Redis {
            servers: vec![server],
            url,
            _dir: dir,
        }
    }

    /// Three masters made a Redis Cluster with `redis-cli --cluster create`.
    pub fn cluster() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let servers: Vec<Server> = (0..3)
            .map(|i| {
                let config = format!("nodes-{i}.conf");
                Server::start(
                    dir.path(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &config,
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + WAIT;
        while !servers
            .iter()
            .all(|s| s.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!(
            "redis-cluster://{}?node={}&node={}",
            addrs[0], addrs[1], addrs[2]
        );
        Redis {
            servers,
            url,
            _dir: dir,
        }
    }

    /// A master (`servers[0]`) and its replica (`servers[1]`), watched by one Sentinel
    /// (`servers[2]`) that fails over to the replica about 1–2 s after the master stops
    /// answering. The URL names the Sentinel and the service
    /// (`redis-sentinel://127.0.0.1:PORT?sentinelServiceName=aisa`).
    pub fn sentinel() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let master = Server::start(dir.path(), &[]);
        let master_port = master.port.to_string();
        let replica = Server::start(dir.path(), &["--replicaof", "127.0.0.1", &master_port]);
        let deadline = Instant::now() + WAIT;
        while !replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sentinel = Server::sentinel(dir.path(), SENTINEL_SERVICE, master.port);
        // The Sentinel learns of the replica from the master's INFO: only then can it
        // fail over.
        while !sentinel
            .cli(&["SENTINEL", "REPLICAS", SENTINEL_SERVICE])
            .contains(&replica.port.to_string())
        {
            assert!(
                Instant::now() < deadline,
                "the Sentinel did not find the replica"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}",
            sentinel.port
        );
        Redis {
            servers: vec![master, replica, sentinel],
            url,
            _dir: dir,
        }
    }

    /// The master's port as the Sentinel (`servers[2]`) names it now.
    pub fn sentinel_master_port(&self) -> Option<u16> {
        let out = self.servers[2].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}

// ---------------------------------------------------------------- relays

/// An in-process relay node's settings: loopback, `data_dir`, the shared `database_url`
/// and Redis, one JWT secret for the cluster, and forwarding on an ephemeral port.
pub fn node_config(
    data_dir: &Path,
    name: &str,
    database_url: &str,
    redis_url: &str,
) -> RelayConfig {
    std::fs::create_dir_all(data_dir).unwrap();
    let mut config = relay_config(data_dir, 0, Some(database_url.to_owned()));
    config.jwt_secret = Some("one JWT secret for both nodes, 32+ bytes long".into());
    config.cluster.node_name = Some(name.into());
    config.cluster.redis_url = Some(redis_url.to_owned());
    config.cluster.forward_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.cluster.forward_secret = Some(FORWARD_SECRET.into());
    config
}

/// Creates `email`'s account (password [`PASSWORD`]) in `relay`'s store.
pub async fn add_user(relay: &RelayHandle, email: &str) {
    let hash = aisa_relay::auth::hash_password(PASSWORD).unwrap();
    relay.state.store.create_user(email, &hash).await.unwrap();
}

/// Signs `email` in at the relay whose HTTP API is at `http`; the access token.
pub async fn sign_in(http: SocketAddr, email: &str) -> String {
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{http}/api/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().expect("signed in").to_owned()
}

/// The header of an action stream to `device_id`, signed with `token`.
pub fn action_header(device_id: &str, token: &str) -> aisa_tunnel::OpenHeader {
    aisa_tunnel::OpenHeader {
        device_id: device_id.to_owned(),
        kind: aisa_tunnel::StreamKind::Action,
        token: token.to_owned(),
        e2e: None,
    }
}

/// A browser's WebTransport session to the relay at `quic` (its certificate pinned).
pub async fn browser(quic: SocketAddr, cert_sha256: [u8; 32]) -> wtransport::Connection {
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(cert_sha256)])
        .build();
    wtransport::Endpoint::client(config)
        .unwrap()
        .connect(format!("https://127.0.0.1:{}/wt", quic.port()))
        .await
        .expect("WebTransport session")
}

// ---------------------------------------------------------------- relay processes

/// PEM text of one DER item.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Writes a fresh certificate for `localhost` and its key to `dir/cert.pem` and
/// `dir/key.pem` (one certificate for every node's public port, as behind one balanced
/// name); its SHA-256 (what browsers and desktops pin).
pub fn write_cert(dir: &Path) -> [u8; 32] {
    let identity =
        aisa_relay::cert::generate_dev(time::OffsetDateTime::now_utc(), "localhost").unwrap();
    std::fs::write(dir.join("cert.pem"), pem("CERTIFICATE", &identity.chain[0])).unwrap();
    std::fs::write(
        dir.join("key.pem"),
        pem("PRIVATE KEY", identity.key.secret_der()),
    )
    .unwrap();
    identity.sha256()
}

/// A `relay-edge serve` process (SIGKILLed when dropped): its HTTP and QUIC addresses.
pub struct RelayProcess {
    /// The process.
    pub child: Child,
    /// Its HTTP API.
    pub http: SocketAddr,
    /// Its QUIC/WebTransport port.
    pub quic: SocketAddr,
}

/// Starts `relay-edge serve` as node `name` of the cluster on `redis_url`, its data in
/// `dir/name`, the certificate [`write_cert`] left in `dir`, the shared `database_url`
/// and `heartbeat_secs` (device map entries live three times that), forwarding on an
/// ephemeral port; returns once it printed its banner.
pub fn relay_process(
    dir: &Path,
    name: &str,
    database_url: &str,
    redis_url: &str,
    heartbeat_secs: u32,
) -> RelayProcess {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let config = format!(
        r#"data_dir = "{data}"
database_url = "{database_url}"
quic_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
tls_cert = "{dir}/cert.pem"
tls_key = "{dir}/key.pem"
jwt_secret = "one JWT secret for every node of the cluster, 32+ bytes"
heartbeat_secs = {heartbeat_secs}

[cluster]
node_name = "{name}"
redis_url = "{redis_url}"
forward_listen = "127.0.0.1:0"
forward_secret = "{FORWARD_SECRET}"
forward_idle_timeout_ms = 1500
"#,
        data = data.display(),
        dir = dir.display(),
    );
    let file = data.join("relay.toml");
    std::fs::write(&file, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-edge"))
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("relay-edge starts");
    let stdout = child.stdout.take().unwrap();
    let child = Child(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    // "relay-edge: http://ADDR (QUIC/WebTransport on udp ADDR), certificate sha-256 HEX"
    let http = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("banner: {line:?}"))
        .parse()
        .unwrap();
    let quic = line
        .split("udp ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("banner: {line:?}"))
        .parse()
        .unwrap();
    RelayProcess { child, http, quic }
}

// ---------------------------------------------------------------- desktops

/// How a [`desktop_node`] reaches its relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// QUIC only.
    Quic,
    /// TCP (the mux over a WebSocket): its QUIC dial goes to a UDP black hole.
    Tcp,
}

/// A desktop node running in this process, with the example app and a fake AI provider.
pub struct RunningDesktop {
    /// Whether it is connected.
    pub online: watch::Receiver<bool>,
    /// Send `true` to stop it.
    pub stop: watch::Sender<bool>,
    _fake: aisa_testkit::provider::FakeProvider,
}

/// A desktop node enrolled and online at a relay ([`desktop_node`]).
pub struct DesktopNode {
    /// Its device id.
    pub device_id: String,
    /// The device's owner.
    pub user_id: String,
    /// The device token it signs in with.
    pub device_token: String,
    /// Whether it is connected.
    pub online: watch::Receiver<bool>,
    /// Send `true` to stop it.
    pub stop: watch::Sender<bool>,
    _fake: aisa_testkit::provider::FakeProvider,
    _black_hole: std::net::UdpSocket,
}

/// Enrols a device of `email`'s (an account with [`PASSWORD`]) at the relay whose HTTP
/// API is at `http`: its id and device token.
pub async fn enrol(http: SocketAddr, email: &str) -> (String, String) {
    let enrolled: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{http}/api/devices/enroll"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD, "name": "desk" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_id = enrolled["device_id"].as_str().expect("enrolled").to_owned();
    let device_token = enrolled["device_token"].as_str().unwrap().to_owned();
    (device_id, device_token)
}

/// Runs a desktop node for an enrolled device, its folder `dir`, dialling `target`;
/// returns once it is online.
pub async fn run_desktop(
    device_id: &str,
    device_token: &str,
    dir: &Path,
    target: RelayTarget,
) -> RunningDesktop {
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(API_KEY.into()))
        .await
        .unwrap();
    let sandbox = Sandbox::new().unwrap();
    let apps = test_apps(&sandbox);
    let ai = OpenAiCompatible::new(&fake.base_url(), "gpt-4o-mini", Some(API_KEY.into())).unwrap();
    let ctx = Arc::new(NodeContext::new(
        device_id.to_owned(),
        device_token.to_owned(),
        [7; 32],
        sandbox,
        apps,
        Arc::new(ai),
        Limits::default(),
        dir.to_owned(),
    ));
    let mut online = ctx.online();
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(node::run(ctx, target, stop_rx));
    tokio::time::timeout(WAIT, online.wait_for(|o| *o))
        .await
        .expect("the desktop is online in time")
        .unwrap();
    RunningDesktop {
        online,
        stop,
        _fake: fake,
    }
}

/// Enrols a device of `email`'s (an account with [`PASSWORD`]) at `relay` and brings a
/// desktop node for it online there over `leg`, its folder under `dir`.
pub async fn desktop_node(relay: &RelayHandle, email: &str, dir: &Path, leg: Leg) -> DesktopNode {
    let (device_id, device_token) = enrol(relay.http_addr, email).await;
    let user_id = relay
        .state
        .store
        .cached_device(&device_id)
        .await
        .unwrap()
        .expect("device row")
        .user_id;
    // On TCP, the QUIC dial goes to a UDP socket that never answers (a black hole);
    // TCP is dialled at once and wins, and no probe moves the node back to QUIC here.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = match leg {
        Leg::Quic => RelayTarget {
            quic_addr: relay.quic_addr.to_string(),
            server_name: "localhost".into(),
            cert_sha256: Some(relay.cert_sha256()),
            pin_from: None,
            tcp_url: None,
            path: node::PathConfig::default(),
        },
        Leg::Tcp => RelayTarget {
            quic_addr: black_hole.local_addr().unwrap().to_string(),
            server_name: "localhost".into(),
            cert_sha256: Some(relay.cert_sha256()),
            pin_from: None,
            tcp_url: Some(format!("http://{}", relay.http_addr)),
            path: node::PathConfig {
                head_start: Duration::ZERO,
                probe_first: Duration::from_secs(3600),
                probe_max: Duration::from_secs(3600),
                ..Default::default()
            },
        },
    };
    let node_dir = dir.join(format!("node-{device_id}"));
    let running = run_desktop(&device_id, &device_token, &node_dir, target).await;
    DesktopNode {
        device_id,
        user_id,
        device_token,
        online: running.online,
        stop: running.stop,
        _fake: running._fake,
        _black_hole: black_hole,
    }
}

// ---------------------------------------------------------------- actions

/// Runs the example app's echo on `session`; the reply (ending with STREAM_END or an
/// ERROR).
pub async fn echo(
    session: &wtransport::Connection,
    open_header: &aisa_tunnel::OpenHeader,
    text: &str,
) -> Vec<aisa_tunnel::Envelope> {
    let request =
        aisa_testkit::system::execute("hello-ai", "echo", serde_json::json!({ "text": text }));
    let (_send, mut recv) =
        aisa_testkit::system::open(session, &[open_header.encode(), request.encode()]).await;
    aisa_testkit::system::read_reply(&mut recv).await
}

/// Echoes until one comes back whole (the cluster converging), within [`WAIT`]; every
/// failed attempt must be an ERROR, not a hang. Returns the ERROR codes seen before.
pub async fn echo_until_ok(
    session: &wtransport::Connection,
    open_header: &aisa_tunnel::OpenHeader,
    text: &str,
) -> Vec<aisa_tunnel::ErrorCode> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let reply = echo(session, open_header, text).await;
        match reply.last().map(|e| &e.body) {
            Some(aisa_tunnel::Body::StreamEnd { .. }) => {
                assert_eq!(aisa_testkit::system::chunks_text(&reply), text);
                return seen;
            }
            Some(aisa_tunnel::Body::Error { code, .. }) => {
                seen.push(aisa_tunnel::ErrorCode::parse(code))
            }
            other => panic!("neither an answer nor an ERROR: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no answer in time; errors: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
