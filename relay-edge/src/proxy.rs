//! The client's address behind reverse proxies.
//!
//! The relay's HTTP API often sits behind a load balancer or reverse proxy, so the TCP
//! peer is the proxy, not the client. A proxy says who its client was in a `Forwarded`
//! (RFC 7239) or `X-Forwarded-For` header, but anyone can send those headers, so they
//! are believed only when the TCP peer is one of the configured `trusted_proxies`. Then
//! the client is the right-most address in the chain that is not itself a trusted proxy
//! (each proxy appends the address it saw, so everything left of that is what the client
//! claimed and worth nothing).
//!
//! This module does not limit anything itself: the sign-in limiter keys on what it
//! returns.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// One `trusted_proxies` entry: an address, or a network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Result<Network, String> {
        let bad = || format!("{text:?} is not an IP address or CIDR network (e.g. 10.0.0.0/8)");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (
                addr.parse::<IpAddr>().map_err(|_| bad())?,
                Some(prefix.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (text.trim().parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(bad());
        }
        Ok(Network { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The configured `trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

impl TrustedProxies {
    /// Parses the config entries (`"10.0.0.5"`, `"10.0.0.0/8"`, `"::1"`, `"fd00::/8"`).
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        Ok(TrustedProxies {
            networks: entries
                .iter()
                .map(|e| Network::parse(e))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy and says
    /// who its client was (`Forwarded` first, else `X-Forwarded-For`).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = unmap(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        // Right to left: skip our own proxies; the first other address is the client.
        // An unreadable entry ends the walk: nothing left of it can be trusted.
        let mut client = peer;
        for entry in chain.iter().rev() {
            match entry {
                Some(ip) if self.trusts(*ip) => client = *ip,
                Some(ip) => return *ip,
                None => break,
            }
        }
        client
    }
}

/// The addresses a request passed through, client first, from `Forwarded` (every
/// `for=`) or, without it, `X-Forwarded-For`. `None` marks an entry that is not an IP
/// address (`unknown`, an obfuscated name).
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .collect()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(value.trim().trim_matches('"')))
                })
            })
            .collect();
    }
    values("x-forwarded-for")
        .iter()
        .map(|v| parse_node(v))
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(unmap(ip));
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok().map(unmap);
    }
    let (host, _port) = text.rsplit_once(':')?;
    host.parse().ok().map(unmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let t =
            TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into(), "fd00::/8".into()]).unwrap();
        assert!(t.trusts(ip("10.1.2.3")));
        assert!(t.trusts(ip("::ffff:10.1.2.3")), "v4-mapped counts as v4");
        assert!(!t.trusts(ip("11.0.0.1")));
        assert!(t.trusts(ip("::1")));
        assert!(t.trusts(ip("fd12::5")));
        assert!(!t.trusts(ip("fe80::1")));
        assert!(
            TrustedProxies::parse(&["0.0.0.0/0".into()])
                .unwrap()
                .trusts(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::1/129"] {
            assert!(TrustedProxies::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarding_headers_are_ignored_from_an_untrusted_peer() {
        let t = TrustedProxies::parse(&["10.0.0.1".into()]).unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        assert_eq!(t.client_ip(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        // The client claims 6.6.6.6; the edge proxy saw 198.51.100.7; an inner proxy
        // (10.0.0.2) passed it on to the relay's peer 10.0.0.1.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        // Forwarded (RFC 7239) wins over X-Forwarded-For, with ports, quotes and IPv6.
        let h = headers(&[
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#,
            ),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=192.0.2.43:8080;by=10.0.0.1")]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("192.0.2.43"));
        // No header, or nothing usable: the proxy itself.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }
}
