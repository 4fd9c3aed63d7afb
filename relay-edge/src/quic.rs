//! The QUIC endpoint's settings: TLS 1.3 with both ALPNs, the transport limits that
//! bound what an unauthenticated peer can make the relay hold, and a stateless-reset key
//! that survives a restart.

use std::sync::Arc;
use std::time::Duration;

use crate::cert::TlsIdentity;
use crate::server::{DESKTOP_ALPN, H3_ALPN, StartError};

/// A connection from which nothing arrives for this long is gone. QUIC takes the smaller
/// of the two sides' limits, so this also bounds how long a browser keeps a session whose
/// packets no longer reach the relay (UDP blocked mid-session): the relay closes it, or
/// the browser's own timer fires, and the page races its transports again.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The relay PINGs every connection this often, so that a peer with nothing in flight
/// (a browser between actions) is not closed at [`IDLE_TIMEOUT`], and so that a peer
/// that stopped answering is noticed: its ACKs stop, and the relay's idle timer runs out.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// QUIC + TLS 1.3 server configuration offering both ALPNs.
pub(crate) fn server_config(identity: &TlsIdentity) -> Result<quinn::ServerConfig, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| StartError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![H3_ALPN.to_vec(), DESKTOP_ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    // quinn reserves state for every stream a peer may open, so the defaults are small:
    // a desktop opens one stream (its control stream), and a browser needs three
    // unidirectional HTTP/3 streams and one bidirectional one to set up its session,
    // plus a few streams whose headers have not been checked yet. Browsers get room for
    // their action streams once one of their streams has authenticated
    // (`BROWSER_STREAMS`, see browser.rs). quinn buffers what a peer sends before the
    // relay reads it, up to the receive windows: those bound what an unauthenticated
    // connection can make the relay hold.
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            IDLE_TIMEOUT.as_millis() as u32,
        ))))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_concurrent_bidi_streams(crate::browser::PRE_AUTH_STREAMS.into())
        .max_concurrent_uni_streams(3u32.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(CONNECTION_RECEIVE_WINDOW.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The endpoint's settings: a stateless-reset key that survives a restart.
///
/// A relay that dies without a word (a crash, SIGKILL, a lost machine) leaves its peers
/// holding connections that nothing answers; they would learn it only at their idle
/// timeout ([`IDLE_TIMEOUT`]). When the relay comes back on the same address, packets of those old
/// connections reach the new process, which answers each with a stateless reset (RFC
/// 9000 §10.3). A peer believes a reset only if it carries the token the old process
/// gave for that connection id, an HMAC of the id: so the key must be the same across
/// restarts. It is derived from the TLS private key (which persists in the data
/// directory or the configured key file) and the node's name (so that relay nodes
/// sharing one certificate cannot reset each other's connections).
pub(crate) fn endpoint_config(identity: &TlsIdentity, node_name: &str) -> quinn::EndpointConfig {
    let (_, hkdf) = hkdf::Hkdf::<sha2::Sha256>::extract(
        Some(b"aisa relay-edge stateless reset v1"),
        identity.key.secret_der(),
    );
    let mut key = [0u8; 32];
    hkdf.expand(node_name.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let mut config = quinn::EndpointConfig::new(Arc::new(ResetKey(key)));
    // quinn's default connection ids carry a check keyed per process, so a restarted
    // relay would drop the old connections' packets as invalid instead of resetting them.
    config.cid_generator(|| Box::new(RandomCids));
    config
}

/// Connection ids of 8 random bytes, valid for any process: a packet for an id this
/// process does not know is answered with a stateless reset (rate-limited by quinn, and
/// always smaller than the packet that caused it).
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the OS random number generator failed");
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// HMAC-SHA256 under a fixed key, as quinn wants for stateless-reset tokens.
struct ResetKey([u8; 32]);

impl ResetKey {
    fn mac(&self, data: &[u8]) -> hkdf::hmac::Hmac<sha2::Sha256> {
        use hkdf::hmac::Mac;
        let mut mac = <hkdf::hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(data);
        mac
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        use hkdf::hmac::Mac;
        let tag = self.mac(data).finalize().into_bytes();
        let n = signature_out.len().min(tag.len());
        signature_out[..n].copy_from_slice(&tag[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        use hkdf::hmac::Mac;
        self.mac(data)
            .verify_slice(signature)
            .map_err(|_| quinn::crypto::CryptoError)
    }
}

/// Bytes a peer may send on one stream ahead of the relay's reads.
const STREAM_RECEIVE_WINDOW: u32 = 1 << 20;
/// Bytes a peer may send on all streams of a connection ahead of the relay's reads.
const CONNECTION_RECEIVE_WINDOW: u32 = 8 << 20;
