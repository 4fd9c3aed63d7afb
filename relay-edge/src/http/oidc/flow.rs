//! The pure parts of one sign-in: the random values (state, nonce, PKCE code verifier),
//! the S256 code challenge, the authorization request's URL, the cookie that ties the
//! callback to the browser that started it, and the check of the state that comes back.
//!
//! No I/O here: where these values are kept (the store) and sent (the HTTP handlers) is
//! `super`'s business.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The cookie holding the state of the sign-in this browser started. `SameSite=Lax`, not
/// `Strict`: the callback is a top-level navigation from the provider's site, and a
/// `Strict` cookie would not come with it.
pub(crate) const FLOW_COOKIE: &str = "aisa_oidc";

/// Where [`FLOW_COOKIE`] is sent: the sign-in routes only.
const FLOW_COOKIE_PATH: &str = "/api/auth/oidc";

/// The secrets of one sign-in, made fresh for each.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct FlowSecrets {
    /// Sent to the provider and back, and kept in the browser's [`FLOW_COOKIE`]: a
    /// callback whose state is not this browser's is refused (login CSRF).
    pub(crate) state: String,
    /// Sent to the provider, which puts it in the ID token; kept on the relay.
    pub(crate) nonce: String,
    /// The PKCE code verifier (RFC 7636), kept on the relay; the provider gets its
    /// S256 challenge.
    pub(crate) verifier: String,
}

impl std::fmt::Debug for FlowSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowSecrets { .. }")
    }
}

/// 32 random bytes, base64url without padding (43 characters, all of them allowed in a
/// PKCE verifier: `[A-Za-z0-9-_]`).
fn random_value() -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails where the OS has no randomness; nothing can run safely then.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

impl FlowSecrets {
    /// Fresh random secrets, 256 bits each.
    pub(crate) fn new() -> Self {
        FlowSecrets {
            state: random_value(),
            nonce: random_value(),
            verifier: random_value(),
        }
    }

    /// The PKCE code challenge of the verifier.
    pub(crate) fn challenge(&self) -> String {
        pkce_challenge(&self.verifier)
    }
}

/// The S256 code challenge of a verifier: base64url (no padding) of its SHA-256
/// (RFC 7636, section 4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// What the authorization request carries besides the secrets.
pub(crate) struct AuthRequest<'a> {
    /// The provider's `authorization_endpoint`.
    pub(crate) endpoint: &'a str,
    /// The relay's client id there.
    pub(crate) client_id: &'a str,
    /// The registered redirect URI.
    pub(crate) redirect_uri: &'a str,
    /// Space-separated scopes, `openid` among them.
    pub(crate) scope: &'a str,
    /// Ask the provider to authenticate the person again now, whatever session it
    /// holds (`prompt=login`, `max_age=0`; the ID token then carries `auth_time`): a
    /// signed-in person confirming who they are before a sensitive change.
    pub(crate) reauth: bool,
}

impl AuthRequest<'_> {
    /// The URL to send the browser to: the code flow with the state, the nonce and the
    /// S256 challenge added to the endpoint's own query.
    pub(crate) fn url(&self, secrets: &FlowSecrets) -> Result<reqwest::Url, url_error::Error> {
        let mut url = reqwest::Url::parse(self.endpoint)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", self.client_id)
            .append_pair("redirect_uri", self.redirect_uri)
            .append_pair("scope", self.scope)
            .append_pair("state", &secrets.state)
            .append_pair("nonce", &secrets.nonce)
            .append_pair("code_challenge", &secrets.challenge())
            .append_pair("code_challenge_method", "S256");
        if self.reauth {
            url.query_pairs_mut()
                .append_pair("prompt", "login")
                .append_pair("max_age", "0");
        }
        Ok(url)
    }
}

/// The URL parser's error, named here so that `super` need not depend on `url`.
pub(crate) mod url_error {
    /// A URL that does not parse.
    pub(crate) type Error = <reqwest::Url as std::str::FromStr>::Err;
}

/// The `Set-Cookie` value keeping `state` for `max_age_secs` (or, with `None`, deleting
/// the cookie).
pub(crate) fn flow_cookie(state: Option<&str>, max_age_secs: u64) -> String {
    let (value, max_age) = match state {
        Some(state) => (state, max_age_secs),
        None => ("", 0),
    };
    format!(
        "{FLOW_COOKIE}={value}; Path={FLOW_COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"
    )
}

/// The state in the request's [`FLOW_COOKIE`], if any.
pub(crate) fn cookie_state(cookie_headers: &[&str]) -> Option<String> {
    cookie_headers
        .iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == FLOW_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// Whether the state the provider sent back is the one this browser's cookie holds,
/// compared in constant time. Both must be present and non-empty.
pub(crate) fn state_matches(cookie: Option<&str>, returned: Option<&str>) -> bool {
    match (cookie, returned) {
        (Some(a), Some(b)) if !a.is_empty() && a.len() == b.len() => {
            a.bytes()
                .zip(b.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        }
        _ => false,
    }
}

/// The name the store keeps a state under: its SHA-256, hex (a leaked table lists no
/// state a callback would accept).
pub(crate) fn state_key(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn secrets_are_fresh_long_and_verifier_safe() {
        let a = FlowSecrets::new();
        let b = FlowSecrets::new();
        for s in [&a.state, &a.nonce, &a.verifier] {
            assert_eq!(s.len(), 43, "256 bits, base64url: {s}");
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "{s}"
            );
        }
        assert_ne!(a.state, b.state);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.verifier, b.verifier);
        assert_ne!(a.state, a.nonce);
        assert_ne!(a.nonce, a.verifier);
        assert!(
            !format!("{a:?}").contains(&a.verifier),
            "no secret in Debug"
        );
    }

    #[test]
    fn the_authorization_url_carries_the_code_flow_with_pkce() {
        let secrets = FlowSecrets::new();
        let url = AuthRequest {
            endpoint: "https://id.example.com/auth?prompt=login",
            client_id: "relay client",
            redirect_uri: "https://relay.example.net/api/auth/oidc/id/callback",
            scope: "openid email",
            reauth: false,
        }
        .url(&secrets)
        .unwrap();
        let pairs: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(pairs["prompt"], "login", "the endpoint's own query is kept");
        assert_eq!(pairs["response_type"], "code");
        assert_eq!(pairs["client_id"], "relay client");
        assert_eq!(
            pairs["redirect_uri"],
            "https://relay.example.net/api/auth/oidc/id/callback"
        );
        assert_eq!(pairs["scope"], "openid email");
        assert_eq!(pairs["state"], secrets.state);
        assert_eq!(pairs["nonce"], secrets.nonce);
        assert_eq!(pairs["code_challenge"], pkce_challenge(&secrets.verifier));
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert!(
            !url.as_str().contains(&secrets.verifier),
            "the verifier never leaves the relay"
        );
        assert!(
            !pairs.contains_key("max_age"),
            "no max_age on a plain sign-in"
        );
    }

    #[test]
    fn a_reauthentication_asks_the_provider_to_sign_the_person_in_again() {
        let secrets = FlowSecrets::new();
        let url = AuthRequest {
            endpoint: "https://id.example.com/auth",
            client_id: "relay",
            redirect_uri: "https://relay.example.net/api/auth/oidc/id/callback",
            scope: "openid email",
            reauth: true,
        }
        .url(&secrets)
        .unwrap();
        let pairs: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(pairs["prompt"], "login");
        assert_eq!(pairs["max_age"], "0");
        assert_eq!(pairs["code_challenge_method"], "S256");
    }

    #[test]
    fn the_state_must_be_this_browsers() {
        let state = FlowSecrets::new().state;
        let cookie = flow_cookie(Some(&state), 600);
        assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"));
        assert!(cookie.contains("SameSite=Lax") && cookie.contains("Path=/api/auth/oidc"));
        // The browser sends back name=value only.
        let sent = format!("aisa_refresh=x; {FLOW_COOKIE}={state}; other=1");
        let held = cookie_state(&[sent.as_str()]);
        assert_eq!(held.as_deref(), Some(state.as_str()));
        assert!(state_matches(held.as_deref(), Some(&state)));
        // Another browser's state, a truncated one, none at all: refused.
        let other = FlowSecrets::new().state;
        assert!(!state_matches(held.as_deref(), Some(&other)));
        assert!(!state_matches(held.as_deref(), Some(&state[..42])));
        assert!(!state_matches(None, Some(&state)));
        assert!(!state_matches(held.as_deref(), None));
        assert!(!state_matches(Some(""), Some("")));
        // A deleted cookie holds nothing.
        assert_eq!(cookie_state(&[&format!("{FLOW_COOKIE}=")]), None);
        assert!(flow_cookie(None, 600).contains("Max-Age=0"));
    }

    #[test]
    fn the_store_never_sees_the_state_itself() {
        let state = FlowSecrets::new().state;
        let key = state_key(&state);
        assert_eq!(key.len(), 64);
        assert!(!key.contains(&state));
        assert_eq!(key, state_key(&state));
    }
}
