//! The TCP path to the relay: a WebSocket to `{relay_url}/tunnel/desktop` on the relay's
//! HTTP(S) port, carrying tunnel's mux (one mux frame per binary message, as the
//! browser's WebSocket leg does), so it passes through the same load balancers and
//! ingresses as the web app.
//!
//! TLS: an `https://` relay URL gives `wss://` (TLS 1.3 or 1.2, web PKI: the certificate
//! of whatever terminates TLS in front of the relay). Over plain `http://` the WebSocket
//! is not encrypted, so the device token in the HELLO would cross the network in clear;
//! the node takes that path only to a loopback or private (RFC 1918, unique-local)
//! address, where a development relay or the tests run, and refuses it otherwise (a
//! network that blocks UDP must not be able to downgrade a node to plaintext).
//!
//! What is not here: racing, healing (`super::path`), the control stream
//! (`super::connection`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aisa_tunnel::mux::driver::KeepAlive;
use aisa_tunnel::mux::ws::{self, Tungstenite};
use aisa_tunnel::mux::{Config, Side};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

use super::link::NodeLink;

/// The relay's WebSocket path for desktops.
pub const DESKTOP_PATH: &str = "/tunnel/desktop";

/// Mux keep-alive on the TCP path: the control stream's heartbeats decide when the
/// relay is gone; these PINGs keep idle NAT and proxy mappings open.
const KEEPALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(30),
};

/// A byte stream the WebSocket runs on: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Where the TCP path goes, parsed from the relay URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TcpTarget {
    /// `wss` (TLS) or `ws` (plain).
    secure: bool,
    host: String,
    port: u16,
    /// The WebSocket URL.
    url: String,
}

impl TcpTarget {
    /// Parses `http(s)://host[:port][/prefix]`, and refuses plain `http://` to a host that
    /// is not a loopback or private address.
    pub(super) fn parse(relay_url: &str) -> Result<TcpTarget, String> {
        let (secure, rest) = if let Some(rest) = relay_url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = relay_url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{relay_url:?} is not an http(s) URL"));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                match port.parse::<u16>() {
                    Ok(port) => (host, port),
                    Err(_) => (authority, if secure { 443 } else { 80 }),
                }
            }
            _ => (authority, if secure { 443 } else { 80 }),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("{relay_url:?} has no host"));
        }
        if !secure && !plain_allowed(&host) {
            return Err(format!(
                "not taking the TCP path to {host} over plain http (the device token would \
                 cross the network unencrypted); give the relay's https:// URL"
            ));
        }
        let shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let url = format!(
            "{}://{shown}:{port}{prefix}{DESKTOP_PATH}",
            if secure { "wss" } else { "ws" }
        );
        Ok(TcpTarget {
            secure,
            host,
            port,
            url,
        })
    }
}

/// Whether plain (unencrypted) `ws://` may go to `host`: loopback, RFC 1918 and
/// unique-local addresses, and `localhost`.
fn plain_allowed(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}

/// Dials the relay's TCP path at `relay_url`: TCP, TLS for https, the WebSocket
/// upgrade, then the mux on it.
pub(super) async fn dial(relay_url: &str) -> Result<NodeLink, String> {
    let target = TcpTarget::parse(relay_url)?;
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("TCP to {}:{}: {e}", target.host, target.port))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if target.secure {
        Box::new(tls(&target.host, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio_tungstenite::client_async(target.url.as_str(), io)
        .await
        .map_err(|e| format!("WebSocket to {}: {e}", target.url))?;
    Ok(start(ws))
}

/// Runs the mux (the dialing side) over `ws`.
fn start<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(ws: WebSocketStream<S>) -> NodeLink {
    let (conn, driver) =
        ws::start::<Tungstenite, _, _>(Side::Dialer, Config::default(), KEEPALIVE, ws);
    NodeLink::mux(conn, tokio::spawn(driver))
}

async fn tls(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_become_websocket_urls() {
        let t = TcpTarget::parse("https://relay.example.com").unwrap();
        assert_eq!(t.url, "wss://relay.example.com:443/tunnel/desktop");
        assert!(t.secure);
        let t = TcpTarget::parse("https://relay.example.com:8443/base/").unwrap();
        assert_eq!(t.url, "wss://relay.example.com:8443/base/tunnel/desktop");
        let t = TcpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.url, "ws://127.0.0.1:8080/tunnel/desktop");
        assert!(TcpTarget::parse("http://10.231.3.1:9000").is_ok());
        assert!(TcpTarget::parse("http://localhost:9000").is_ok());
        let t = TcpTarget::parse("http://[::1]:9000").unwrap();
        assert_eq!(t.url, "ws://[::1]:9000/tunnel/desktop");
        assert!(TcpTarget::parse("ftp://x").is_err());
    }

    #[test]
    fn plain_http_to_a_public_host_is_refused() {
        let err = TcpTarget::parse("http://relay.example.com").unwrap_err();
        assert!(err.contains("plain http"), "{err}");
        assert!(TcpTarget::parse("http://8.8.8.8:80").is_err());
    }
}
