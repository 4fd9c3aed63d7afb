//! Talking to one OpenID provider: discovery (`/.well-known/openid-configuration`), its
//! keys (JWKS), the code exchange (with the PKCE verifier), the ID token's checks
//! (signature by a provider key, `iss`, `aud`, `exp`, `nonce`, `azp`) and, when the ID
//! token leaves the email out, the userinfo endpoint.
//!
//! Discovery and keys are fetched when first needed and kept: discovery for an hour,
//! keys until a token names one that is not among them (the provider rotated its keys),
//! when they are fetched again, at most once a minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::link::{ProviderAccount, verified};
use crate::config::oidc::{OidcProviderConfig, secure_or_loopback};

/// How long discovery is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The shortest time between two fetches of a provider's keys.
const JWKS_REFETCH: Duration = Duration::from_secs(60);
/// Leeway on `exp` for clocks that disagree.
const LEEWAY_SECS: u64 = 60;
/// The signature algorithms an ID token may use: asymmetric only (never `none`, never
/// an HMAC keyed by the client secret).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a step with the provider failed. The person sees one sentence for all of these;
/// the operator's log gets this.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcError {
    /// The provider could not be reached, or answered with an error status.
    #[error("provider request failed: {0}")]
    Http(String),
    /// The discovery document is not usable.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The token endpoint refused the code.
    #[error("token endpoint: {0}")]
    Token(String),
    /// The ID token failed a check.
    #[error("ID token refused: {0}")]
    IdToken(String),
    /// The userinfo answer is not usable.
    #[error("userinfo: {0}")]
    Userinfo(String),
    /// The client secret file could not be read.
    #[error("client secret file: {0}")]
    Secret(String),
}

/// The parts of the discovery document the relay uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    /// Must equal the configured issuer exactly.
    pub(crate) issuer: String,
    /// Where the browser is sent.
    pub(crate) authorization_endpoint: String,
    /// Where the code is exchanged.
    pub(crate) token_endpoint: String,
    /// The provider's public keys.
    pub(crate) jwks_uri: String,
    /// Where the email is asked for when the ID token has none.
    #[serde(default)]
    pub(crate) userinfo_endpoint: Option<String>,
    /// How the client authenticates at the token endpoint; absent means
    /// `client_secret_basic`.
    #[serde(default)]
    pub(crate) token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// A provider as the relay knows it: its settings, and what was fetched from it.
pub(crate) struct Provider {
    /// The settings from `[[oidc.providers]]`.
    pub(crate) config: OidcProviderConfig,
    metadata: Mutex<Option<(Instant, Arc<Metadata>)>>,
    keys: Mutex<Option<(Instant, Arc<Vec<Jwk>>)>>,
}

/// What the token endpoint answers.
#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// The ID token claims the relay reads (the library checks `iss`, `aud` and `exp`).
#[derive(Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    /// When the person authenticated at the provider (seconds since the epoch); sent
    /// when the request asked for `max_age`, and by many providers anyway.
    #[serde(default)]
    auth_time: Option<serde_json::Value>,
}

/// A person the provider signed in: who (`issuer`, `subject`), and what it says of their
/// email.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedIdentity {
    /// The ID token's `iss`.
    pub(crate) issuer: String,
    /// The ID token's `sub`.
    pub(crate) subject: String,
    /// The email and whether the provider vouched for it.
    pub(crate) account: ProviderAccount,
    /// When the person authenticated at the provider (the ID token's `auth_time`), if
    /// it said.
    pub(crate) auth_time: Option<i64>,
}

fn http_err(e: reqwest::Error) -> OidcError {
    OidcError::Http(e.without_url().to_string())
}

impl Provider {
    /// A provider from its settings; nothing is fetched yet.
    pub(crate) fn new(config: OidcProviderConfig) -> Self {
        Provider {
            config,
            metadata: Mutex::new(None),
            keys: Mutex::new(None),
        }
    }

    /// The discovery document, fetched when not kept or older than an hour. Its issuer
    /// must be the configured one, and its endpoints `https://` (or loopback `http://`).
    pub(crate) async fn metadata(
        &self,
        http: &reqwest::Client,
    ) -> Result<Arc<Metadata>, OidcError> {
        let mut kept = self.metadata.lock().await;
        if let Some((at, meta)) = kept.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(meta.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let meta: Metadata = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(http_err)?
            .json()
            .await
            .map_err(|e| OidcError::Discovery(e.without_url().to_string()))?;
        if meta.issuer != self.config.issuer {
            return Err(OidcError::Discovery(format!(
                "the document names issuer {:?}, not the configured {:?}",
                meta.issuer, self.config.issuer
            )));
        }
        for endpoint in [
            Some(&meta.authorization_endpoint),
            Some(&meta.token_endpoint),
            Some(&meta.jwks_uri),
            meta.userinfo_endpoint.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !secure_or_loopback(endpoint) {
                return Err(OidcError::Discovery(format!(
                    "endpoint {endpoint:?} is not https://"
                )));
            }
        }
        let meta = Arc::new(meta);
        *kept = Some((Instant::now(), meta.clone()));
        Ok(meta)
    }

    /// The provider's signing keys: the kept ones, or fetched when none are kept or when
    /// `refresh` asks (a token named a key not among them) and the last fetch is a
    /// minute old. Keys that do not parse, or are not for signatures, are left out.
    async fn keys(
        &self,
        http: &reqwest::Client,
        meta: &Metadata,
        refresh: bool,
    ) -> Result<Arc<Vec<Jwk>>, OidcError> {
        let mut kept = self.keys.lock().await;
        if let Some((at, keys)) = kept.as_ref()
            && (!refresh || at.elapsed() < JWKS_REFETCH)
        {
            return Ok(keys.clone());
        }
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = http
            .get(&meta.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(http_err)?
            .json()
            .await
            .map_err(|e| OidcError::IdToken(format!("JWKS: {}", e.without_url())))?;
        let keys: Vec<Jwk> = set
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter(|k| {
                matches!(
                    k.common.public_key_use,
                    None | Some(PublicKeyUse::Signature)
                )
            })
            .collect();
        let keys = Arc::new(keys);
        *kept = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The client secret: the configured one, or read from its file now (so that a
    /// rotated secret needs no restart). `None` for a public client.
    fn client_secret(&self) -> Result<Option<String>, OidcError> {
        if let Some(secret) = &self.config.client_secret {
            return Ok(Some(secret.clone()));
        }
        match &self.config.client_secret_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|e| OidcError::Secret(format!("{}: {e}", path.display()))),
            None => Ok(None),
        }
    }

    /// Exchanges the code (with the PKCE verifier) for tokens, checks the ID token
    /// against `nonce`, and returns who signed in. The email comes from the ID token, or
    /// from the userinfo endpoint when the token has none (its `sub` must match).
    pub(crate) async fn finish(
        &self,
        http: &reqwest::Client,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<VerifiedIdentity, OidcError> {
        let meta = self.metadata(http).await?;
        let secret = self.client_secret()?;
        let client_id = self.config.client_id.as_str();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let basic = meta
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_none_or(|m| m.iter().any(|m| m == "client_secret_basic"));
        let mut request = http.post(&meta.token_endpoint);
        match &secret {
            // RFC 6749 2.3.1: both parts form-encoded before the Basic encoding.
            Some(secret) if basic => {
                request = request.basic_auth(form_encode(client_id), Some(form_encode(secret)));
            }
            Some(secret) => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret));
            }
            None => form.push(("client_id", client_id)),
        }
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(http_err)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(OidcError::Token(format!(
                "{status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        let tokens: TokenResponse = response
            .json()
            .await
            .map_err(|e| OidcError::Token(e.without_url().to_string()))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| OidcError::Token("the answer has no id_token".into()))?;
        let claims = self.verify_id_token(http, &meta, &id_token, nonce).await?;
        let mut account = ProviderAccount {
            email: claims.email.clone(),
            email_verified: verified(claims.email_verified.as_ref()),
        };
        if account.email.is_none()
            && let (Some(endpoint), Some(access)) = (&meta.userinfo_endpoint, &tokens.access_token)
        {
            account = userinfo(http, endpoint, access, &claims.sub).await?;
        }
        // A number, as OpenID Connect Core says; some providers send a float.
        let auth_time = claims
            .auth_time
            .as_ref()
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
        Ok(VerifiedIdentity {
            auth_time,
            issuer: claims.iss,
            subject: claims.sub,
            account,
        })
    }

    /// Checks the ID token: signed by one of the provider's keys with an asymmetric
    /// algorithm, `iss` the configured issuer, `aud` containing the client id, `exp` not
    /// past, `nonce` this sign-in's, `azp` (when present) the client id.
    async fn verify_id_token(
        &self,
        http: &reqwest::Client,
        meta: &Metadata,
        token: &str,
        nonce: &str,
    ) -> Result<IdClaims, OidcError> {
        let bad = |m: String| OidcError::IdToken(m);
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(bad(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let mut keys = self.keys(http, meta, false).await?;
        if header
            .kid
            .as_ref()
            .is_some_and(|kid| !keys.iter().any(|k| k.common.key_id.as_ref() == Some(kid)))
        {
            keys = self.keys(http, meta, true).await?;
        }
        let candidates = keys.iter().filter(|k| match &header.kid {
            Some(kid) => k.common.key_id.as_ref() == Some(kid),
            None => true,
        });
        let mut last = "no provider key matches the token's key id".to_owned();
        let mut claims = None;
        for key in candidates {
            if let Some(alg) = key.common.key_algorithm
                && alg.to_string() != format!("{:?}", header.alg)
            {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(key) else {
                continue;
            };
            match jsonwebtoken::decode::<IdClaims>(token, &decoding, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let claims = claims.ok_or_else(|| bad(last))?;
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(bad("the nonce is not this sign-in's".into()));
        }
        if let Some(azp) = &claims.azp
            && azp != &self.config.client_id
        {
            return Err(bad(format!("azp {azp:?} is not this client")));
        }
        Ok(claims)
    }
}

/// The email from the userinfo endpoint, whose `sub` must be the ID token's.
async fn userinfo(
    http: &reqwest::Client,
    endpoint: &str,
    access_token: &str,
    subject: &str,
) -> Result<ProviderAccount, OidcError> {
    #[derive(Deserialize)]
    struct Info {
        sub: String,
        #[serde(default)]
        email: Option<String>,
        #[serde(default)]
        email_verified: Option<serde_json::Value>,
    }
    let info: Info = http
        .get(endpoint)
        .bearer_auth(access_token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(http_err)?
        .json()
        .await
        .map_err(|e| OidcError::Userinfo(e.without_url().to_string()))?;
    if info.sub != subject {
        return Err(OidcError::Userinfo("its sub is not the ID token's".into()));
    }
    Ok(ProviderAccount {
        email: info.email,
        email_verified: verified(info.email_verified.as_ref()),
    })
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The HTTP client for providers: TLS with the Mozilla roots (ring), 10 s timeouts, and
/// no redirects followed (a token endpoint that redirects is refused).
pub(crate) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aisa-relay/", env!("CARGO_PKG_VERSION")));
    if let Ok(mut tls) = tls {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_are_form_encoded_for_basic() {
        assert_eq!(form_encode("abc-1.2_3"), "abc-1.2_3");
        assert_eq!(form_encode("a b:c/d"), "a+b%3Ac%2Fd");
    }
}
