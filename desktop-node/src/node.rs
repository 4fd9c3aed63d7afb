//! The node: its shared context, and the connection manager that keeps it connected to
//! the relay (HELLO, heartbeats, reconnect with jittered exponential backoff) and serves
//! every stream the relay opens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::message::AppStatus;
use aisa_tunnel::{Body, Envelope, ErrorCode, Hello};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::ai::AiProvider;
use crate::apps::App;
use crate::backoff::Backoff;
use crate::installer::Installer;
use crate::sandbox::{Limits, LoadedModule, Sandbox};
use crate::scheduler::{Admission, AdmissionConfig};

/// ALPN for desktop connections.
pub const ALPN: &[u8] = b"aisa/1";
/// Relay close code meaning "shutting down, reconnect at once" (see relay-edge).
const CLOSE_SHUTDOWN: u32 = 3;
/// Relay close code meaning "this device was revoked": stop for good.
const CLOSE_REVOKED: u32 = 4;
/// Stream reset code: the node abandoned the stream (stopping, or its peer went away).
pub const STREAM_ABANDONED: u32 = 1;
/// Heartbeats missed before the connection is declared dead.
const MISSED_HEARTBEATS: u32 = 3;

/// Everything the node's handlers share.
pub struct NodeContext {
    /// This device's id.
    pub device_id: String,
    /// The device token.
    pub device_token: String,
    /// The X25519 identity public key.
    pub identity_public: [u8; 32],
    /// The node's software version.
    pub node_version: String,
    /// The wasm sandbox.
    pub sandbox: Sandbox,
    /// Installed apps by id; replaced whole when something is installed or changed.
    apps: std::sync::RwLock<HashMap<String, Arc<App>>>,
    /// The AI provider.
    pub ai: Arc<dyn AiProvider>,
    /// Per-action limits.
    pub limits: Limits,
    /// The node's home folder; apps keep their data in `data/<app-id>/` under it.
    pub home: std::path::PathBuf,
    online: watch::Sender<bool>,
    installer: Option<Installer>,
    js_runtime: Option<LoadedModule>,
    /// Apps given at construction (tests, embedders); kept when apps are reloaded.
    builtin: HashMap<String, Arc<App>>,
    /// End-to-end encryption (paired browsers, the identity secret), if enabled.
    e2e: Option<Arc<crate::e2e::E2eState>>,
    /// How many actions run and wait at once, and who goes next.
    admission: Admission,
    /// The round trip of the latest PING on the control stream.
    heartbeat_rtt: watch::Sender<Option<Duration>>,
}

impl NodeContext {
    /// A context; the node starts offline.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device_id: String,
        device_token: String,
        identity_public: [u8; 32],
        sandbox: Sandbox,
        apps: HashMap<String, Arc<App>>,
        ai: Arc<dyn AiProvider>,
        limits: Limits,
        home: std::path::PathBuf,
    ) -> Self {
        NodeContext {
            device_id,
            device_token,
            identity_public,
            node_version: env!("CARGO_PKG_VERSION").to_owned(),
            sandbox,
            builtin: apps.clone(),
            apps: std::sync::RwLock::new(apps),
            ai,
            limits,
            home,
            online: watch::channel(false).0,
            installer: None,
            js_runtime: None,
            e2e: None,
            admission: Admission::new(AdmissionConfig::default()),
            heartbeat_rtt: watch::channel(None).0,
        }
    }

    /// Watches the round trip of each PING to the relay (`None` until the first PONG):
    /// how promptly the connection is served.
    pub fn heartbeat_rtt(&self) -> watch::Receiver<Option<Duration>> {
        self.heartbeat_rtt.subscribe()
    }

    /// Runs and queues actions within `config` (default: [`AdmissionConfig::default`]).
    pub fn with_admission(mut self, config: AdmissionConfig) -> Self {
        self.admission = Admission::new(config);
        self
    }

    /// The node's action admission.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Serves end-to-end encrypted streams (and, with `required`, only those).
    pub fn with_e2e(mut self, e2e: crate::e2e::E2eState) -> Self {
        self.e2e = Some(Arc::new(e2e));
        self
    }

    /// The end-to-end state, if this node serves encrypted streams.
    pub fn e2e(&self) -> Option<&Arc<crate::e2e::E2eState>> {
        self.e2e.as_ref()
    }

    /// Lets browsers request installs and removals (INSTALL_APP, UNINSTALL_APP), and
    /// reloads apps from the installer's folder; `js_runtime` runs JavaScript apps.
    pub fn with_installer(
        mut self,
        installer: Installer,
        js_runtime: Option<LoadedModule>,
    ) -> Self {
        self.installer = Some(installer);
        self.js_runtime = js_runtime;
        self
    }

    /// The mini-app manager, if this node installs apps.
    pub fn installer(&self) -> Option<&Installer> {
        self.installer.as_ref()
    }

    /// Loads the installed apps again from disk (after an install, or a change made by
    /// the CLI) and makes them the ones actions use. Apps whose active version did not
    /// change keep their compiled code. Compiling is CPU work: it runs off the async
    /// threads.
    pub async fn reload_apps(self: &Arc<Self>) {
        let ctx = self.clone();
        let reload = tokio::task::spawn_blocking(move || ctx.reload_apps_blocking());
        if let Err(err) = reload.await {
            tracing::error!(%err, "reloading apps failed");
        }
    }

    fn reload_apps_blocking(&self) {
        let Some(installer) = &self.installer else {
            return;
        };
        let previous = self.apps.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (apps, problems) = crate::apps::load_all_reusing(
            installer.apps.root(),
            &self.sandbox,
            self.js_runtime.as_ref(),
            &previous,
        );
        for problem in problems {
            tracing::warn!(%problem, "app not loaded");
        }
        let mut all = self.builtin.clone();
        all.extend(apps);
        tracing::info!(apps = ?all.keys().collect::<Vec<_>>(), "apps loaded");
        self.set_apps(all);
    }

    /// Reloads the apps whenever the apps folder's generation marker changes (the CLI
    /// changed something), until `stop` turns true.
    pub async fn watch_apps(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(installer) = &self.installer else {
            return;
        };
        let mut seen = installer.apps.generation();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let now = installer.apps.generation();
            if now != seen {
                seen = now;
                self.reload_apps().await;
            }
        }
    }

    /// Watches whether the node is connected to the relay.
    pub fn online(&self) -> watch::Receiver<bool> {
        self.online.subscribe()
    }

    /// The installed app `id`, if any.
    pub fn app(&self, id: &str) -> Option<Arc<App>> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Replaces the installed apps (after an install or a change on disk).
    pub fn set_apps(&self, apps: HashMap<String, Arc<App>>) {
        *self.apps.write().unwrap_or_else(|e| e.into_inner()) = apps;
    }

    /// A DEVICE_STATUS answer.
    pub fn status(&self, request_id: u64) -> Envelope {
        let mut apps: Vec<AppStatus> = self
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|a| AppStatus {
                id: a.manifest.id.clone(),
                version: a.manifest.version.clone(),
                enabled: a.manifest.enabled,
            })
            .collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        Envelope {
            request_id,
            device_id: self.device_id.clone(),
            body: Body::DeviceStatus {
                online: true,
                node_version: self.node_version.clone(),
                apps,
            },
        }
    }
}

/// Where and how to reach the relay.
#[derive(Debug, Clone)]
pub struct RelayTarget {
    /// `host:port` of the relay's QUIC port.
    pub quic_addr: String,
    /// TLS server name.
    pub server_name: String,
    /// Pinned certificate hash; `None` verifies with web PKI.
    pub cert_sha256: Option<[u8; 32]>,
    /// If set, fetch the pin from `{relay_url}/api/session` before each connection.
    pub pin_from: Option<String>,
}

/// Why the node stopped trying to connect.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The relay refused this device for good (revoked token, incompatible version).
    #[error("the relay refused this device: {code}: {message}")]
    Refused {
        /// The relay's error code.
        code: String,
        /// The relay's explanation.
        message: String,
    },
    /// The local QUIC endpoint could not be created.
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// How a connection attempt ended, when it did not end the node.
enum Attempt {
    /// Never connected.
    Failed(String),
    /// Was connected for a while, then lost.
    Lost {
        connected_for: Duration,
        reason: String,
    },
    /// The relay is restarting: reconnect at once.
    RelayShutdown,
}

/// Keeps the node connected until `stop` turns true or the relay refuses it for good.
pub async fn run(
    ctx: Arc<NodeContext>,
    target: RelayTarget,
    mut stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let attempt = tokio::select! {
            a = connect_once(&ctx, &mut endpoint, &target) => Some(a?),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(attempt) = attempt else {
            endpoint.close(0u32.into(), b"node stopping");
            // Let the close reach the relay, so it marks the device offline at once
            // rather than at its idle timeout.
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
            return Ok(());
        };
        ctx.online.send_replace(false);
        let delay = match attempt {
            Attempt::RelayShutdown => {
                info!("relay is shutting down; reconnecting");
                backoff.reset();
                Duration::from_millis(rand::random_range(0..250))
            }
            Attempt::Lost {
                connected_for,
                reason,
            } => {
                warn!(%reason, "connection to the relay lost");
                if connected_for > Duration::from_secs(30) {
                    backoff.reset();
                }
                backoff.next_delay(rand::random())
            }
            Attempt::Failed(reason) => {
                let delay = backoff.next_delay(rand::random());
                warn!(%reason, retry_in = ?delay, "cannot connect to the relay");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

async fn connect_once(
    ctx: &Arc<NodeContext>,
    endpoint: &mut quinn::Endpoint,
    target: &RelayTarget,
) -> Result<Attempt, NodeError> {
    let pin = match &target.pin_from {
        Some(url) => match fetch_pin(url).await {
            Ok(pin) => Some(pin),
            Err(e) => {
                return Ok(Attempt::Failed(format!(
                    "fetching the relay certificate: {e}"
                )));
            }
        },
        None => target.cert_sha256,
    };
    let addr = match tokio::net::lookup_host(&target.quic_addr)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            return Ok(Attempt::Failed(format!(
                "cannot resolve {}",
                target.quic_addr
            )));
        }
    };
    let config = client_config(pin);
    let connecting = match endpoint.connect_with(config, addr, &target.server_name) {
        Ok(c) => c,
        Err(e) => return Ok(Attempt::Failed(e.to_string())),
    };
    let conn = match connecting.await {
        Ok(c) => c,
        Err(e) => return Ok(Attempt::Failed(e.to_string())),
    };
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(pair) => pair,
        Err(e) => return Ok(Attempt::Failed(e.to_string())),
    };
    let hello = Hello {
        device_token: ctx.device_token.clone(),
        node_version: ctx.node_version.clone(),
        identity_key: ctx.identity_public.to_vec(),
    };
    if let Err(e) = write_frame(&mut send, &hello.encode(), aisa_tunnel::MAX_FRAME_LEN).await {
        return Ok(Attempt::Failed(e.to_string()));
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        read_frame(&mut recv, aisa_tunnel::MAX_FRAME_LEN),
    )
    .await;
    let heartbeat_secs = match reply.map(|r| r.map(|b| b.map(|b| Envelope::decode(&b)))) {
        Ok(Ok(Some(Ok(Envelope {
            body:
                Body::Welcome {
                    heartbeat_secs,
                    version,
                    ..
                },
            ..
        })))) => {
            info!(device_id = %ctx.device_id, %version, relay = %addr, "connected to the relay");
            heartbeat_secs.max(1)
        }
        Ok(Ok(Some(Ok(Envelope {
            body: Body::Error { code, message },
            ..
        })))) => {
            let permanent = matches!(
                ErrorCode::parse(&code),
                ErrorCode::Unauthenticated | ErrorCode::UnsupportedVersion | ErrorCode::Forbidden
            );
            if permanent {
                return Err(NodeError::Refused { code, message });
            }
            return Ok(Attempt::Failed(format!("{code}: {message}")));
        }
        other => {
            return Ok(Attempt::Failed(format!(
                "no WELCOME from the relay: {other:?}"
            )));
        }
    };
    ctx.online.send_replace(true);
    let connected_at = Instant::now();
    let mut streams = JoinSet::new();
    let reason = tokio::select! {
        reason = heartbeat(&mut send, &mut recv, Duration::from_secs(heartbeat_secs.into()), &ctx.heartbeat_rtt) => {
            conn.close(0u32.into(), reason.as_bytes());
            reason
        }
        err = accept_streams(ctx, &conn, &mut streams) => {
            if let quinn::ConnectionError::ApplicationClosed(close) = &err {
                if close.error_code == CLOSE_SHUTDOWN.into() {
                    return Ok(Attempt::RelayShutdown);
                }
                if close.error_code == CLOSE_REVOKED.into() {
                    return Err(NodeError::Refused {
                        code: ErrorCode::Unauthenticated.to_string(),
                        message: "this device was revoked; run `desktop-node login` again".into(),
                    });
                }
            }
            err.to_string()
        }
    };
    Ok(Attempt::Lost {
        connected_for: connected_at.elapsed(),
        reason,
    })
}

/// Serves relay-opened streams until the connection fails; returns why.
async fn accept_streams(
    ctx: &Arc<NodeContext>,
    conn: &quinn::Connection,
    streams: &mut JoinSet<()>,
) -> quinn::ConnectionError {
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(crate::action::serve_stream(ctx.clone(), send, recv));
                }
                Err(err) => return err,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// Sends PINGs and reads PONGs, publishing each round trip in `rtt`; returns when the
/// relay stops answering.
async fn heartbeat(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    every: Duration,
    rtt: &watch::Sender<Option<Duration>>,
) -> String {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    let mut last_pong = Instant::now();
    let mut sent_at = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if last_pong.elapsed() > every * MISSED_HEARTBEATS {
                    return format!("no PONG for {:?}", last_pong.elapsed());
                }
                nonce += 1;
                sent_at = Instant::now();
                let ping = Envelope::new(nonce, Body::Ping { nonce });
                if let Err(e) = write_frame(send, &ping.encode(), aisa_tunnel::MAX_FRAME_LEN).await {
                    return format!("control stream failed: {e}");
                }
            }
            frame = read_frame(recv, aisa_tunnel::MAX_FRAME_LEN) => match frame {
                Ok(Some(body)) => match Envelope::decode(&body) {
                    Ok(Envelope { body: Body::Pong { nonce: answered }, .. }) => {
                        last_pong = Instant::now();
                        if answered == nonce {
                            rtt.send_replace(Some(sent_at.elapsed()));
                        }
                    }
                    Ok(other) => debug!(?other, "unexpected message on the control stream"),
                    Err(e) => return format!("malformed control message: {e}"),
                },
                Ok(None) => return "the relay closed the control stream".into(),
                Err(e) => return format!("control stream failed: {e}"),
            }
        }
    }
}

async fn fetch_pin(relay_url: &str) -> Result<[u8; 32], String> {
    #[derive(serde::Deserialize)]
    struct Session {
        cert_sha256: Vec<String>,
    }
    let session: Session = reqwest::get(format!("{}/api/session", relay_url.trim_end_matches('/')))
        .await
        .map_err(|e| e.to_string())?
        .error_for_status()
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let first = session
        .cert_sha256
        .first()
        .ok_or("the relay pins no certificate")?;
    parse_pin(first)
}

/// Parses a hex SHA-256.
pub fn parse_pin(hex_text: &str) -> Result<[u8; 32], String> {
    hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{hex_text:?} is not a hex SHA-256"))
}

/// The QUIC client configuration a node dials the relay with: TLS 1.3, ALPN `aisa/1`,
/// the pinned certificate or web PKI, keep-alives.
pub fn client_config(pin: Option<[u8; 32]>) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3");
    let mut tls = match pin {
        Some(sha256) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert { sha256, provider }))
            .with_no_client_auth(),
        None => builder
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("TLS 1.3 with an initial cipher suite");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    config.transport_config(Arc::new(transport));
    config
}

/// Accepts exactly the certificate whose SHA-256 is pinned (and checks the handshake
/// signature against it).
#[derive(Debug)]
struct PinnedCert {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref())[..] == self.sha256[..] {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
