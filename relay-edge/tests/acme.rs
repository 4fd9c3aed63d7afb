//! ACME end to end against Debian's `pebble` (a small ACME CA for tests, the Let's
//! Encrypt team's), started here on loopback: a relay with `[acme]` orders a certificate
//! for `127.0.0.1`, pebble validates the HTTP-01 challenge by fetching it from the
//! relay's HTTP port (real validation, not `PEBBLE_VA_ALWAYS_VALID`), and the relay's QUIC
//! endpoint (desktops, and browsers' WebTransport: one endpoint) then presents a
//! certificate that chains to pebble's root, without a restart. Renewal replaces it while
//! the relay runs; a restarted relay serves the cached one at once.
//!
//! Debian's pebble package ships no certificate for pebble's own HTTPS listener (the
//! upstream `test/certs` folder is not packaged), so the test makes one: a CA and a
//! `127.0.0.1` certificate for the listener, given to the relay as `directory_ca_file`.
//!
//! Skipped when `pebble` is not installed, unless `CI` is set (`scripts/prereqs.sh`
//! installs it there): then a missing pebble fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_relay::RelayHandle;
use aisa_relay::acme::AcmeConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const WAIT: Duration = Duration::from_secs(60);

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pebble`, or `None` (skip) when it is not installed outside CI.
fn pebble_binary() -> Option<&'static str> {
    let found = std::process::Command::new("pebble")
        .arg("-h")
        .output()
        .is_ok();
    if found {
        return Some("pebble");
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("pebble is not installed (apt-get install pebble; scripts/prereqs.sh)");
    }
    eprintln!("skipped: pebble is not installed (apt-get install pebble)");
    None
}

/// A running pebble: its directory URL and management address.
struct Pebble {
    _child: Child,
    directory: String,
    management: SocketAddr,
    /// The CA that signed pebble's own HTTPS certificate (PEM file).
    listener_ca: std::path::PathBuf,
}

/// Starts pebble with HTTP-01 validation against `http_port` on loopback.
fn start_pebble(dir: &Path, http_port: u16) -> Option<Pebble> {
    let binary = pebble_binary()?;
    // The listener's certificate: a CA, and a leaf for 127.0.0.1 it signed.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pebble listener test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let listener_ca = dir.join("pebble-listener-ca.pem");
    std::fs::write(&listener_ca, ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).unwrap();
    let (port, management_port) = (free_port(), free_port());
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let child = std::process::Command::new(binary)
        .arg("-config")
        .arg(dir.join("pebble.json"))
        // No random sleep before validating, no nonces refused at random (pebble's test
        // habits; the client's retries are not what this test is about).
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(std::fs::File::create(dir.join("pebble.log")).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pebble starts");
    let child = Child(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Pebble {
        _child: child,
        directory: format!("https://127.0.0.1:{port}/dir"),
        management: ([127, 0, 0, 1], management_port).into(),
        listener_ca,
    })
}

impl Pebble {
    /// The root pebble issues under (made anew each run), from its management API.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let ca = std::fs::read(&self.listener_ca).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let pem = client
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pebble's root")
    }
}

fn relay_config(
    dir: &Path,
    http_port: u16,
    pebble: &Pebble,
    renew_before_days: u32,
) -> aisa_relay::RelayConfig {
    let mut config = aisa_testkit::system::relay_config(dir, 0, None);
    config.http_listen = ([127, 0, 0, 1], http_port).into();
    config.acme = AcmeConfig {
        domains: vec!["127.0.0.1".into()],
        directory_url: pebble.directory.clone(),
        contact: vec!["mailto:ops@example.com".into()],
        directory_ca_file: Some(pebble.listener_ca.clone()),
        renew_before_days,
        check_secs: 1,
        ..AcmeConfig::default()
    };
    config
}

/// The certificate the relay's QUIC endpoint presents to a client that trusts only
/// `root` and checks the name `127.0.0.1`, over ALPN `alpn`; `Err` when the handshake
/// fails (a certificate not from `root`, or not for the name).
async fn presented(
    relay: &RelayHandle,
    root: &CertificateDer<'static>,
    alpn: &[u8],
) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(relay.quic_addr, "127.0.0.1")
        .unwrap()
        .await
        .map_err(|e| e.to_string())?;
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .expect("a certificate chain");
    conn.close(0u32.into(), b"done");
    Ok(chain[0].to_vec())
}

/// Waits until the relay presents a certificate from `root`, other than `not`.
async fn wait_for_certificate(
    relay: &RelayHandle,
    root: &CertificateDer<'static>,
    not: Option<&[u8]>,
) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(cert) = presented(relay, root, b"aisa/1").await
            && Some(cert.as_slice()) != not
        {
            return cert;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from the ACME CA in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_gets_renews_and_keeps_a_certificate_from_pebble() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let Some(pebble) = start_pebble(dir.path(), http_port) else {
        return;
    };
    let root = pebble.issuing_root().await;
    let data = dir.path().join("relay");
    std::fs::create_dir_all(&data).unwrap();

    // First start: no certificate yet. The relay serves a placeholder, orders one,
    // answers pebble's HTTP-01 request on its HTTP port, and loads the certificate
    // for new connections.
    let relay = aisa_relay::start(relay_config(&data, http_port, &pebble, 30))
        .await
        .expect("relay starts");
    let started = Instant::now();
    let first = wait_for_certificate(&relay, &root, None).await;
    eprintln!("first ACME certificate after {:?}", started.elapsed());
    assert_eq!(
        relay.cert_sha256(),
        sha256(&first),
        "the relay's own record follows"
    );
    // Browsers' WebTransport uses the same endpoint and certificate (ALPN h3), and
    // /api/session offers no hash to pin: the certificate is a CA's.
    assert_eq!(presented(&relay, &root, b"h3").await.unwrap(), first);
    let session: serde_json::Value =
        reqwest::get(format!("http://{}/api/session", relay.http_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        session["cert_sha256"],
        serde_json::json!([]),
        "no pinning of a CA's certificate: {session}"
    );
    // Kept in the cache with its expiry (pebble's certificates last years).
    let cert_pem = std::fs::read(data.join("acme/cert.pem")).unwrap();
    let expires = aisa_relay::acme::not_after(&cert_pem).unwrap();
    assert!(expires > time::OffsetDateTime::now_utc().unix_timestamp() + 86_400);
    relay.shutdown(Duration::ZERO).await;

    // Restarted with renewal due at once (more days asked than the certificate has):
    // it serves the cached certificate from the start, then a renewed one, without a
    // restart.
    let relay = aisa_relay::start(relay_config(&data, http_port, &pebble, 100_000))
        .await
        .expect("relay restarts");
    assert_eq!(
        presented(&relay, &root, b"aisa/1").await.unwrap(),
        first,
        "the cached certificate is served at once"
    );
    let renewed = wait_for_certificate(&relay, &root, Some(&first)).await;
    assert_ne!(renewed, first);
    relay.shutdown(Duration::ZERO).await;

    // Restarted with the default renewal window: the cached (renewed) certificate
    // stays; no new order.
    let relay = aisa_relay::start(relay_config(&data, http_port, &pebble, 30))
        .await
        .expect("relay restarts");
    let kept = presented(&relay, &root, b"aisa/1").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(presented(&relay, &root, b"aisa/1").await.unwrap(), kept);
    assert_ne!(kept, first, "the renewed certificate was kept");
    relay.shutdown(Duration::ZERO).await;
}

fn sha256(der: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}
