//! Relay-to-relay connections: the forward endpoint's mutual TLS, and one pooled QUIC
//! connection per peer node.
//!
//! Every node of a cluster binds one UDP socket for forwarding (`[cluster]
//! forward_listen`). The same quinn endpoint accepts peers' connections (as a server)
//! and dials peers (as a client); both sides present a certificate issued by the
//! cluster's CA and refuse a peer whose certificate is not, so a stranger can neither
//! push streams into a node nor pose as one. ALPN is [`FORWARD_ALPN`]; the TLS server
//! name is always [`FORWARD_SERVER_NAME`] (a peer is trusted as a member of the cluster,
//! not as a particular node: the forward header names the device, and the receiving
//! node checks that it holds it).
//!
//! [`Peers`] keeps one connection per peer address and multiplexes every forwarded
//! stream on it; a connection that closed (peer restarted, partition, idle timeout) is
//! replaced by the next stream that needs it.
//!
//! What is not here: the forward header and the streams' lives ([`super::forward`]),
//! where a device is ([`super::Cluster`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN of relay-to-relay forward connections.
pub const FORWARD_ALPN: &[u8] = b"aisa-relay-forward/1";

/// The TLS server name every node's forward certificate carries (as a DNS subject
/// alternative name) and every node asks for.
pub const FORWARD_SERVER_NAME: &str = "aisa-relay-forward";

/// How long dialing a peer may take before the stream that needed it is refused.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Streams a peer may have open on one forward connection at once.
pub const MAX_FORWARDED_STREAMS: u32 = 4096;

/// Bytes a peer may send on one forwarded stream ahead of the reader (as the relay's
/// own endpoint allows a browser or desktop).
const STREAM_RECEIVE_WINDOW: u32 = 1 << 20;
/// Bytes a peer may send on all streams of a forward connection ahead of the reader.
const CONNECTION_RECEIVE_WINDOW: u32 = 32 << 20;

/// Why forward TLS could not be set up, or a peer not reached.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// A certificate or key file could not be read or parsed (the message names it).
    #[error("cluster TLS: {0}")]
    Files(String),
    /// rustls refused the certificates or keys.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// A certificate could not be made.
    #[error("cluster TLS: {0}")]
    Generate(#[from] rcgen::Error),
    /// The peer did not answer within [`CONNECT_TIMEOUT`].
    #[error("peer {0} did not answer within {CONNECT_TIMEOUT:?}")]
    Timeout(SocketAddr),
    /// The connection to the peer failed (handshake refused, unreachable, closed).
    #[error("peer {addr}: {reason}")]
    Connect {
        /// The peer's forward address.
        addr: SocketAddr,
        /// What quinn said.
        reason: String,
    },
}

/// A node's forward identity: the cluster CA it trusts and its own certificate chain and
/// key, issued by that CA.
pub struct ForwardTls {
    /// The cluster CA's certificate: peers must present a chain to it.
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl ForwardTls {
    /// Reads the operator's PEM files: the CA certificate, this node's certificate
    /// (chain) and its private key. The node's certificate must carry the DNS name
    /// [`FORWARD_SERVER_NAME`].
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, PeerError> {
        use rustls::pki_types::pem::PemObject;
        let ca = CertificateDer::from_pem_file(ca)
            .map_err(|e| PeerError::Files(format!("{}: {e}", ca.display())))?;
        let identity = crate::cert::load_pem(cert, key)
            .map_err(|e| PeerError::Files(format!("{}: {e}", cert.display())))?;
        Ok(ForwardTls {
            ca,
            chain: identity.chain,
            key: identity.key,
        })
    }

    /// The rustls server side: TLS 1.3 only, [`FORWARD_ALPN`], and a client certificate
    /// chained to the cluster CA required.
    fn rustls_server(&self) -> Result<rustls::ServerConfig, PeerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()
        .map_err(|e| PeerError::Tls(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PeerError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![FORWARD_ALPN.to_vec()];
        tls.max_early_data_size = 0;
        Ok(tls)
    }

    /// The rustls client side: the server must chain to the cluster CA under
    /// [`FORWARD_SERVER_NAME`]; this node presents its own certificate.
    fn rustls_client(&self) -> Result<rustls::ClientConfig, PeerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PeerError::Tls(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![FORWARD_ALPN.to_vec()];
        Ok(tls)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, PeerError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| PeerError::Tls(format!("the cluster CA certificate: {e}")))?;
        Ok(roots)
    }

    /// quinn's server configuration for the forward endpoint.
    pub fn server_config(&self, idle: Duration) -> Result<quinn::ServerConfig, PeerError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(self.rustls_server()?)
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport(idle)));
        Ok(config)
    }

    /// quinn's client configuration for dialing peers.
    pub fn client_config(&self, idle: Duration) -> Result<quinn::ClientConfig, PeerError> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(self.rustls_client()?)
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport(idle)));
        Ok(config)
    }
}

/// The forward connections' transport settings, the same both ways: room for many
/// streams, receive windows that bound what a peer can make a node hold, and
/// keep-alives at a third of `idle`, so that a connection nothing answers (a dead peer,
/// a partition) is declared lost after `idle` and its streams end.
fn transport(idle: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok())
        .keep_alive_interval(Some(idle / 3))
        .max_concurrent_bidi_streams(MAX_FORWARDED_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(CONNECTION_RECEIVE_WINDOW.into());
    transport
}

/// A cluster CA made with rcgen: for tests, benchmarks and operators who let the relay
/// make their cluster's certificates (see docs/relay.md, "Cluster forwarding").
pub struct ClusterCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl ClusterCa {
    /// A new CA with a fresh key (ECDSA P-256).
    pub fn generate() -> Result<Self, PeerError> {
        Self::with_key(rcgen::KeyPair::generate_for(
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )?)
    }

    /// The CA every node derives from the same `secret` (a shared cluster key, at least
    /// 32 bytes): its Ed25519 key is HKDF-SHA256 of the secret, so nodes given only the
    /// secret issue certificates that each other's verifiers accept (a trust anchor is
    /// its name and key; the certificates' dates and serials may differ).
    pub fn from_secret(secret: &[u8]) -> Result<Self, PeerError> {
        if secret.len() < 32 {
            return Err(PeerError::Tls(format!(
                "the cluster secret has {} bytes; it needs at least 32",
                secret.len()
            )));
        }
        let (_, hkdf) =
            hkdf::Hkdf::<sha2::Sha256>::extract(Some(b"aisa relay-edge cluster CA v1"), secret);
        let mut seed = [0u8; 32];
        hkdf.expand(b"ed25519 seed", &mut seed)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        // PKCS#8 v1 of an Ed25519 private key (RFC 8410): a fixed prefix, then the seed.
        let mut pkcs8 = hex::decode("302e020100300506032b657004220420").unwrap_or_default();
        pkcs8.extend_from_slice(&seed);
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8),
            &rcgen::PKCS_ED25519,
        )?;
        Self::with_key(key)
    }

    fn with_key(key: rcgen::KeyPair) -> Result<Self, PeerError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "AI SuperApp relay cluster CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { params, key, cert })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key, PEM (keep it off the relays when the operator issues the
    /// certificates).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a node certificate (a fresh ECDSA P-256 key) for [`FORWARD_SERVER_NAME`],
    /// usable as server and client, named `node` in its subject.
    pub fn issue(&self, node: &str) -> Result<ForwardTls, PeerError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![FORWARD_SERVER_NAME.to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("relay node {node}"));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(825);
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ForwardTls {
            ca: self.cert.der().clone(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// One pooled QUIC connection per peer node, dialed on first use from the node's forward
/// endpoint.
pub struct Peers {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    /// Per peer address, the connection (or none yet, or a dial that just failed). The
    /// async lock makes the streams that find no connection wait for one dial instead
    /// of each dialing.
    slots: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Slot>>>>,
}

/// A peer's connection as the pool knows it.
#[derive(Default)]
enum Slot {
    /// Never dialed, or the connection closed.
    #[default]
    Empty,
    /// The connection in use.
    Live(quinn::Connection),
    /// The last dial failed; until `until`, streams for this peer fail at once with the
    /// same error instead of each waiting out another dial (a dead peer would otherwise
    /// hold every stream queued behind the lock for [`CONNECT_TIMEOUT`] each).
    Failed {
        until: std::time::Instant,
        error: String,
    },
}

/// How long a failed dial is remembered.
pub const FAILED_DIAL_MEMORY: Duration = Duration::from_secs(1);

impl Peers {
    /// A pool dialing from `endpoint` with `client`.
    pub fn new(endpoint: quinn::Endpoint, client: quinn::ClientConfig) -> Self {
        Peers {
            endpoint,
            client,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The forward endpoint (its local address is where peers reach this node).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// The live connection to the peer at `addr`, dialed if there is none (or the last
    /// one closed), within [`CONNECT_TIMEOUT`].
    pub async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, PeerError> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        match &*slot {
            Slot::Live(conn) if conn.close_reason().is_none() => return Ok(conn.clone()),
            Slot::Failed { until, error } if std::time::Instant::now() < *until => {
                return Err(PeerError::Connect {
                    addr,
                    reason: error.clone(),
                });
            }
            _ => {}
        }
        *slot = Slot::Empty;
        match self.dial(addr).await {
            Ok(conn) => {
                tracing::info!(peer = %addr, "forward connection to a peer node opened");
                *slot = Slot::Live(conn.clone());
                Ok(conn)
            }
            Err(err) => {
                tracing::info!(peer = %addr, %err, "forward connection to a peer node failed");
                *slot = Slot::Failed {
                    until: std::time::Instant::now() + FAILED_DIAL_MEMORY,
                    error: err.to_string(),
                };
                Err(err)
            }
        }
    }

    async fn dial(&self, addr: SocketAddr) -> Result<quinn::Connection, PeerError> {
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, FORWARD_SERVER_NAME)
            .map_err(|e| PeerError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| PeerError::Timeout(addr))?
            .map_err(|e| PeerError::Connect {
                addr,
                reason: e.to_string(),
            })
    }

    /// How many peers have a live connection now.
    pub fn connected(&self) -> usize {
        let slots: Vec<_> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .filter(|slot| {
                slot.try_lock()
                    .is_ok_and(|s| matches!(&*s, Slot::Live(c) if c.close_reason().is_none()))
            })
            .count()
    }

    /// Closes every forward connection (shutdown; tests cutting a partition).
    pub fn close_all(&self, reason: &[u8]) {
        let slots: Vec<_> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in slots {
            if let Ok(slot) = slot.try_lock()
                && let Slot::Live(conn) = &*slot
            {
                conn.close(0u32.into(), reason);
            }
        }
    }
}

/// Binds the forward endpoint on `listen`, serving peers with `tls` and dialing them.
pub fn bind(
    listen: SocketAddr,
    tls: &ForwardTls,
    idle: Duration,
) -> Result<(quinn::Endpoint, quinn::ClientConfig), PeerError> {
    let socket = std::net::UdpSocket::bind(listen).map_err(|e| PeerError::Connect {
        addr: listen,
        reason: format!("cannot bind the forward port: {e}"),
    })?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(tls.server_config(idle)?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| PeerError::Connect {
        addr: listen,
        reason: e.to_string(),
    })?;
    Ok((endpoint, tls.client_config(idle)?))
}
