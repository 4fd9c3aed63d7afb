//! The operator's settings, through a real relay on loopback: the advertised QUIC
//! address (`public_quic_addr`), TLS certificates loaded again without a restart (when
//! the files change, on `RelayHandle::reload_tls`, and on `SIGHUP` to the `relay-edge`
//! process), every setting from `AISA_RELAY_*` variables, and JSON logs.
//!
//! Whether a new connection gets the new certificate is asked the way a desktop asks:
//! a QUIC client that pins one certificate's SHA-256 connects only if the relay
//! presents that one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use aisa_relay::RelayConfig;
use aisa_testkit::fakes::test_database;
use sha2::{Digest, Sha256};

/// How long any step may take before a test fails.
const WAIT: Duration = Duration::from_secs(20);

/// A certificate for `localhost` (PEM) with its key (PEM), and its SHA-256.
fn make_cert(name: &str) -> (String, String, [u8; 32]) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let sha = Sha256::digest(cert.der().as_ref()).into();
    (cert.pem(), key.serialize_pem(), sha)
}

/// Replaces the certificate and key files as an operator's tooling does: each written
/// to a temporary file and renamed over the old one.
fn install(dir: &Path, cert: &(String, String, [u8; 32])) {
    for (name, text) in [("relay.key", &cert.1), ("relay.crt", &cert.0)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Whether a new QUIC connection to `addr` gets the certificate whose SHA-256 is `sha`.
async fn presents(addr: SocketAddr, sha: [u8; 32]) -> bool {
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    let connecting = endpoint
        .connect_with(aisa_node::node::client_config(Some(sha)), addr, "localhost")
        .unwrap();
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(5), connecting).await,
        Ok(Ok(_))
    );
    endpoint.close(0u32.into(), b"done");
    ok
}

/// Waits until new connections to `addr` get the certificate `sha`.
async fn until_presents(addr: SocketAddr, sha: [u8; 32]) {
    let deadline = Instant::now() + WAIT;
    while !presents(addr, sha).await {
        assert!(
            Instant::now() < deadline,
            "the relay still presents the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn relay_with_files(
    dir: &Path,
    adjust: impl FnOnce(&mut RelayConfig),
) -> aisa_relay::RelayHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = RelayConfig {
        quic_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.join("data"),
        database_url: test_database().await,
        tls_cert: Some(dir.join("relay.crt")),
        tls_key: Some(dir.join("relay.key")),
        ..RelayConfig::default()
    };
    adjust(&mut config);
    aisa_relay::start(config).await.expect("relay starts")
}

#[tokio::test]
async fn replaced_certificate_files_are_loaded_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert("first");
    let second = make_cert("second");
    install(dir.path(), &first);
    let relay = relay_with_files(dir.path(), |c| c.tls_reload_secs = 1).await;
    assert!(presents(relay.quic_addr, first.2).await);
    assert!(
        !presents(relay.quic_addr, second.2).await,
        "the pin is checked"
    );
    // A connection opened before the change keeps working.
    let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    let open = endpoint
        .connect_with(
            aisa_node::node::client_config(Some(first.2)),
            relay.quic_addr,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();

    install(dir.path(), &second);
    until_presents(relay.quic_addr, second.2).await;
    assert_eq!(relay.cert_sha256(), second.2);
    assert!(!presents(relay.quic_addr, first.2).await);
    assert!(open.close_reason().is_none(), "open connections are kept");

    // A broken pair (a key that does not match the certificate) is not taken: the
    // current certificate stays.
    let third = make_cert("third");
    std::fs::write(dir.path().join("relay.crt"), &third.0).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(presents(relay.quic_addr, second.2).await);
    relay.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn reload_tls_loads_the_files_at_once_without_watching() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert("first");
    let second = make_cert("second");
    install(dir.path(), &first);
    let relay = relay_with_files(dir.path(), |c| c.tls_reload_secs = 0).await;
    install(dir.path(), &second);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        presents(relay.quic_addr, first.2).await,
        "not watched: the first certificate stays until told"
    );
    assert!(relay.reload_tls().expect("the new files load"));
    assert!(presents(relay.quic_addr, second.2).await);
    relay.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn the_advertised_quic_address_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &make_cert("relay"));
    let relay = relay_with_files(dir.path(), |c| {
        c.public_quic_addr = Some("relay.example.net:443".into());
    })
    .await;
    assert_ne!(relay.quic_addr.port(), 443, "bound elsewhere");
    let session: serde_json::Value =
        reqwest::get(format!("http://{}/api/session", relay.http_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        session["webtransport_url"],
        format!(
            "https://relay.example.net:443{}",
            aisa_relay::browser::WEBTRANSPORT_PATH
        )
        .as_str(),
        "{session}"
    );
    relay.shutdown(Duration::from_millis(100)).await;

    // An IPv6 address is written in brackets; a malformed one stops the start.
    let config = RelayConfig {
        public_quic_addr: Some("2001:db8::1:443".into()),
        ..RelayConfig::default()
    };
    assert!(config.validate().is_err());
    let config = RelayConfig {
        public_quic_addr: Some("[2001:db8::1]:443".into()),
        ..RelayConfig::default()
    };
    assert_eq!(
        config.advertised_quic(([0, 0, 0, 0], 4433).into()),
        ("2001:db8::1".to_owned(), 443)
    );
}

/// The `relay-edge` process configured by the environment alone: the advertised
/// address, JSON logs (a `[log]` key) and the certificate files come from `AISA_RELAY_*`
/// variables; `SIGHUP` loads replaced certificate files.
#[tokio::test]
async fn the_binary_takes_every_setting_from_the_environment_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert("first");
    let second = make_cert("second");
    install(dir.path(), &first);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_relay-edge"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AISA_RELAY_DATA_DIR", dir.path().join("data"))
        .env("AISA_RELAY_QUIC_LISTEN", "127.0.0.1:0")
        .env("AISA_RELAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("AISA_RELAY_TLS_CERT", dir.path().join("relay.crt"))
        .env("AISA_RELAY_TLS_KEY", dir.path().join("relay.key"))
        .env("AISA_RELAY_TLS_RELOAD_SECS", "0")
        .env("AISA_RELAY_PUBLIC_QUIC_ADDR", "relay.example.net:443")
        .env("AISA_RELAY_LOG_FORMAT", "json")
        .env("AISA_RELAY_DATABASE_MAX_CONNECTIONS", "4")
        .env("AISA_RELAY_BUNDLES_PREFIX", "relay/")
        .env("AISA_RELAY_NO_SUCH_SETTING", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(url) = test_database().await {
        command.env("AISA_RELAY_DATABASE_URL", url);
    }
    let mut child = command.spawn().expect("relay-edge starts");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    // "relay-edge: http://ADDR (QUIC/WebTransport on udp ADDR), …"
    let http_addr: SocketAddr = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .parse()
        .unwrap();
    let quic_addr: SocketAddr = banner
        .split("udp ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .parse()
        .unwrap();

    let session: serde_json::Value = reqwest::get(format!("http://{http_addr}/api/session"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        session["webtransport_url"]
            .as_str()
            .unwrap()
            .starts_with("https://relay.example.net:443/"),
        "{session}"
    );
    assert!(presents(quic_addr, first.2).await);

    install(dir.path(), &second);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_presents(quic_addr, second.2).await;
    // The reload is logged just after the new files are in use: wait for its line before
    // stopping the relay (CI once killed it in between).
    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !lines
        .iter()
        .any(|l: &String| l.contains("TLS certificate files loaded"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }

    child.kill().unwrap();
    child.wait().unwrap();
    // The rest, up to the end of stderr (the reader thread then drops its sender).
    lines.extend(lines_rx.iter());
    // Every log line is a JSON object; the start, the unknown variable and the reload
    // are among them.
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let said = |what: &str| {
        events
            .iter()
            .any(|e| e["fields"]["message"].as_str().unwrap_or("").contains(what))
    };
    assert!(said("relay listening"), "{lines:#?}");
    assert!(said("TLS certificate files loaded"), "{lines:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["var"] == "AISA_RELAY_NO_SUCH_SETTING"),
        "an unknown variable is reported: {lines:#?}"
    );
}

#[tokio::test]
async fn the_token_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &make_cert("relay"));
    // As systemd's LoadCredential= hands it over: a file, with a trailing newline.
    std::fs::write(dir.path().join("jwt-secret"), "short\n").unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = RelayConfig {
        quic_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("data"),
        database_url: test_database().await,
        jwt_secret_file: Some(dir.path().join("jwt-secret")),
        ..RelayConfig::default()
    };
    let err = aisa_relay::start(config.clone())
        .await
        .err()
        .expect("a 5-byte secret is refused");
    assert!(err.to_string().contains("jwt_secret has 5 bytes"), "{err}");

    std::fs::write(
        dir.path().join("jwt-secret"),
        format!("{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let relay = aisa_relay::start(config).await.expect("relay starts");
    assert!(
        !dir.path().join("data/jwt-secret").exists(),
        "no random secret is made when one is configured"
    );
    relay.shutdown(Duration::from_millis(100)).await;
}
