//! `http`: requests to hosts the person approved. The URL's `host[:port]` must match a
//! network grant ([`Grants::allows_url`]); redirects are followed by hand, each hop
//! checked the same way (at most [`MAX_REDIRECTS`]); the response body is capped at
//! [`MAX_BODY_BYTES`] and the whole exchange at [`TIMEOUT`].
//!
//! A grant by name reaches public addresses only: names are resolved here
//! ([`PublicOnly`]) and loopback, private, link-local and other non-public addresses are
//! dropped, so an app's author cannot point a granted name at this machine or its
//! network. IPv6 addresses that embed an IPv4 address (IPv4-mapped and -compatible,
//! NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) are
//! dropped too, whatever IPv4 address they carry. Such addresses are reached only when the grant names them as IP literals
//! (`127.0.0.1:8080`) or the host is `localhost`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::{CallContext, HostError};
use crate::permissions::Grants;

/// The largest response body.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// The largest request body.
pub const MAX_REQUEST_BODY_BYTES: usize = 8 << 20;
/// Time for the whole call, redirects included.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// The ops of `http`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// One HTTP request; answers `{status, headers, body}`.
    Fetch {
        /// `http://` or `https://` URL.
        url: String,
        /// `GET` (default), `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS`.
        #[serde(default)]
        method: Option<String>,
        /// Request headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Request body (text).
        #[serde(default)]
        body: Option<String>,
    },
}

/// The shared client: no automatic redirects (each hop is checked here), no proxy from
/// the environment, TLS with the Mozilla roots.
pub(crate) fn client() -> reqwest::Result<reqwest::Client> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PublicOnly))
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!(
            "aisuperapp-desktop-node/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Ok(mut tls) = tls {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder.build()
}

/// The system resolver, keeping public addresses only (any address for `localhost`).
/// IP literals in URLs never come here.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = public_addresses(&host, found)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses a name may be reached at: all of them for `localhost`, else the public
/// ones; an error when none is left.
pub fn public_addresses(
    host: &str,
    found: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    if host.trim_end_matches('.').eq_ignore_ascii_case("localhost") {
        return Ok(found);
    }
    let kept: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
    if kept.is_empty() {
        return Err(format!(
            "{host} resolves to no public address (a grant by name does not reach this machine or its network)"
        )
        .into());
    }
    Ok(kept)
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19))) // benchmarking
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Addresses that carry an IPv4 address inside, which a gateway or the host's
            // own stack may turn into a connection to that IPv4 address (this machine,
            // the local network): never taken from a name.
            let embeds_v4 = s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff) // IPv4-compatible ::a.b.c.d, IPv4-mapped ::ffff:a.b.c.d
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64 64:ff9b::/96 (RFC 6052)
                || s[..3] == [0x64, 0xff9b, 1] // local-use NAT64 64:ff9b:1::/48 (RFC 8215)
                || s[0] == 0x2002 // 6to4 2002::/16
                || s[..2] == [0x2001, 0]; // Teredo 2001::/32
            !(embeds_v4
                || v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020) // ORCHIDv2 2001:20::/28
                || s[..2] == [0x2001, 0x0db8] // documentation
                || s[0] == 0x3fff && (s[1] & 0xf000) == 0) // documentation 3fff::/20
        }
    }
}

/// Runs one `http` call.
pub async fn call(ctx: &CallContext, request: Request) -> super::Answer {
    let Request::Fetch {
        url,
        method,
        headers,
        body,
    } = request;
    let url = Url::parse(&url).map_err(|e| HostError::invalid(format!("url {url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HostError::invalid(format!(
            "only http and https URLs are allowed, not {}",
            url.scheme()
        )));
    }
    let method = match method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("PATCH") => Method::PATCH,
        Some("DELETE") => Method::DELETE,
        Some("OPTIONS") => Method::OPTIONS,
        Some(other) => {
            return Err(HostError::invalid(format!(
                "method {other:?} is not allowed"
            )));
        }
    };
    let mut header_map = reqwest::header::HeaderMap::new();
    for (name, value) in &headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HostError::invalid(format!("header name {name:?}")))?;
        if matches!(
            name.as_str(),
            "host" | "connection" | "transfer-encoding" | "content-length"
        ) {
            return Err(HostError::invalid(format!(
                "header {name} is set by the host"
            )));
        }
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| HostError::invalid(format!("header {name} has an invalid value")))?;
        header_map.append(name, value);
    }
    if body
        .as_ref()
        .is_some_and(|b| b.len() > MAX_REQUEST_BODY_BYTES)
    {
        return Err(HostError::too_large(format!(
            "request bodies are limited to {MAX_REQUEST_BODY_BYTES} bytes"
        )));
    }
    let exchange = fetch(&ctx.shared.http, &ctx.grants, url, method, header_map, body);
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(HostError::failed(format!(
                "no complete answer within {TIMEOUT:?}"
            )))
        })
}

async fn fetch(
    client: &reqwest::Client,
    grants: &Grants,
    mut url: Url,
    mut method: Method,
    mut headers: reqwest::header::HeaderMap,
    mut body: Option<String>,
) -> super::Answer {
    let mut hops = 0;
    let response = loop {
        if !grants.allows_url(&url) {
            let what = if hops == 0 { "" } else { "a redirect to " };
            return Err(HostError::denied(format!(
                "{what}{} is not a granted host",
                host_port(&url)
            )));
        }
        let mut request = client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(body) = &body {
            request = request.body(body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| HostError::failed(format!("{}: {}", host_port(&url), error_chain(&e))))?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            break response;
        };
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(HostError::failed(format!(
                "more than {MAX_REDIRECTS} redirects"
            )));
        }
        let next = url
            .join(&location)
            .map_err(|e| HostError::failed(format!("bad redirect location {location:?}: {e}")))?;
        if status == StatusCode::SEE_OTHER
            || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                && method == Method::POST)
        {
            method = Method::GET;
            body = None;
            headers.remove(reqwest::header::CONTENT_TYPE);
        }
        if next.host_str() != url.host_str()
            || next.port_or_known_default() != url.port_or_known_default()
        {
            // Credentials meant for one host never follow a redirect to another.
            headers.remove(reqwest::header::AUTHORIZATION);
            headers.remove(reqwest::header::COOKIE);
            headers.remove(reqwest::header::PROXY_AUTHORIZATION);
        }
        url = next;
    };
    let status = response.status().as_u16();
    let mut answer_headers = serde_json::Map::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match answer_headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                answer_headers.insert(name.as_str().to_owned(), value.into());
            }
        }
    }
    if response
        .content_length()
        .is_some_and(|l| l > MAX_BODY_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| HostError::failed(format!("reading the body: {}", error_chain(&e))))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(serde_json::json!({
        "status": status,
        "headers": answer_headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

fn too_big() -> HostError {
    HostError::too_large(format!(
        "the response body is larger than {MAX_BODY_BYTES} bytes"
    ))
}

fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => url.to_string(),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reach_public_addresses_only() {
        let addr = |s: &str| -> SocketAddr { s.parse().expect("address") };
        for local in [
            "127.0.0.1:0",
            "10.1.2.3:0",
            "172.16.0.1:0",
            "192.168.1.1:0",
            "169.254.169.254:0",
            "100.64.0.1:0",
            "0.0.0.0:0",
            "[::1]:0",
            "[fd00::1]:0",
            "[fe80::1]:0",
            "[::ffff:127.0.0.1]:0",
            // IPv4 inside IPv6: even a public IPv4 address inside
            // is refused, a gateway decides where these go.
            "[::ffff:93.184.216.34]:0",
            "[::127.0.0.1]:0",
            "[::10.0.0.1]:0",
            "[64:ff9b::7f00:1]:0",
            "[64:ff9b::a9fe:a9fe]:0",
            "[64:ff9b:1::a00:1]:0",
            "[2002:7f00:1::1]:0",
            "[2002:c0a8:101::1]:0",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:0",
            "[2001::1]:0",
            "[fec0::1]:0",
            "[100::1]:0",
            "[2001:db8::1]:0",
        ] {
            assert!(!is_public(addr(local).ip()), "{local}");
        }
        for public in [
            "93.184.216.34:0",
            "1.1.1.1:0",
            "[2606:4700::1111]:0",
            "[2001:4860:4860::8888]:0",
            "[2a00:1450:4001::1]:0",
        ] {
            assert!(is_public(addr(public).ip()), "{public}");
        }
        let mixed = vec![addr("127.0.0.1:0"), addr("93.184.216.34:0")];
        assert_eq!(
            public_addresses("api.example.com", mixed.clone()).expect("one public"),
            [addr("93.184.216.34:0")]
        );
        assert!(public_addresses("evil.example.com", vec![addr("127.0.0.1:0")]).is_err());
        assert_eq!(
            public_addresses("localhost", mixed.clone()).expect("all"),
            mixed
        );
    }
}
