//! Certificates from an ACME certificate authority (RFC 8555: Let's Encrypt, ZeroSSL, a
//! private CA such as step-ca; `[acme]` in the configuration), obtained at start,
//! renewed before they expire, and handed to the relay's QUIC endpoint (desktops and
//! WebTransport) through the same reload path as operator files (`crate::cert::TlsFiles`):
//! no restart.
//!
//! The challenge is HTTP-01 on the relay's HTTP port: the CA fetches
//! `http://<name>/.well-known/acme-challenge/<token>` on port 80, which reaches the relay's
//! `http_listen` directly or through the reverse proxy in front of it ([`Challenges`]
//! answers it). TLS-ALPN-01 would need a TLS listener on TCP 443 in the relay itself, and
//! the relay's TCP port is plain HTTP (TLS for it ends in the proxy), so it is not offered;
//! DNS-01 (wildcards) needs a DNS provider's API and is left to an external client writing
//! `tls_cert` / `tls_key`.
//!
//! Kept in `cache_dir` (default `data_dir/acme`): the account's credentials
//! (`account-<directory hash>.json`, so a changed directory gets its own account), and the
//! certificate chain and key (`cert.pem`, `key.pem`, mode 0600; a proxy in front may serve
//! the same files). A restarted relay serves the cached certificate at once and orders a
//! new one only when fewer than `renew_before_days` remain.
//!
//! What is not here: the TLS endpoint itself (`crate::quic`), the file reload and its
//! checks (`crate::cert::TlsFiles`, `crate::server`), and the HTTP server (`crate::http`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

/// Let's Encrypt's production directory, `[acme] directory_url`'s default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The first wait after a failed order; it doubles with each failure, up to
/// `check_secs`.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);

/// How long one order may take (challenges validated, certificate issued) before it is
/// given up and retried.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// `[acme]`: certificates from an ACME CA. Off unless `domains` names something.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The names the certificate is for: DNS names (`relay.example.com`) or IP addresses
    /// (if the CA issues for them). Each must reach this relay's HTTP port on port 80 for
    /// the challenge. Default: none (ACME off). Cannot be combined with `tls_cert`.
    pub domains: Vec<String>,
    /// The CA's directory URL. Default: Let's Encrypt's production directory
    /// ([`LETS_ENCRYPT`]); its staging directory is
    /// `https://acme-staging-v02.api.letsencrypt.org/directory`.
    pub directory_url: String,
    /// Contact URLs for the account, e.g. `["mailto:ops@example.com"]` (the CA writes
    /// about expiry and problems there). Default: none.
    pub contact: Vec<String>,
    /// Folder for the account key and the certificate. Default: `acme` in `data_dir`.
    pub cache_dir: Option<PathBuf>,
    /// The challenge: `"http-01"` (the only one; see the module's documentation).
    pub challenge: AcmeChallenge,
    /// A new certificate is ordered when fewer than this many days of the current one
    /// remain. Default 30 (Let's Encrypt's certificates last 90 days).
    pub renew_before_days: u32,
    /// How often, in seconds, the certificate's expiry is looked at (also the longest wait
    /// between retries after a failed order). Default 3600.
    pub check_secs: u64,
    /// A PEM file of the CA certificate(s) the directory's HTTPS is checked against, for a
    /// private ACME CA. Default: none (the system's trusted roots).
    pub directory_ca_file: Option<PathBuf>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            domains: Vec::new(),
            directory_url: LETS_ENCRYPT.into(),
            contact: Vec::new(),
            cache_dir: None,
            challenge: AcmeChallenge::Http01,
            renew_before_days: 30,
            check_secs: 3600,
            directory_ca_file: None,
        }
    }
}

/// The ACME challenge the relay answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AcmeChallenge {
    /// HTTP-01, on the relay's HTTP port.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
}

/// Why ACME could not be set up or a certificate obtained.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The `[acme]` section is not usable (the message names the key).
    #[error("[acme] {0}")]
    Config(String),
    /// The ACME CA refused or failed (its problem document, or the HTTP failure).
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// An order did not reach the state it should have.
    #[error("ACME order: {0}")]
    Order(String),
    /// Reading or writing the cache failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The issued certificate or the key could not be read or made.
    #[error("certificate: {0}")]
    Certificate(String),
}

/// The HTTP-01 answers being served: token → key authorization. Shared between the task
/// that orders certificates and the HTTP route that answers the CA.
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<Mutex<HashMap<String, String>>>);

impl Challenges {
    /// The key authorization for `token`, while its challenge is open.
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn put(&self, token: &str, key_authorization: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    fn remove(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    /// `GET /.well-known/acme-challenge/{token}`: the key authorization as text, or 404.
    /// Merged into the relay's HTTP router when ACME is on.
    pub fn router(&self) -> axum::Router {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        async fn answer(
            State(challenges): State<Challenges>,
            UrlPath(token): UrlPath<String>,
        ) -> axum::response::Response {
            match challenges.get(&token) {
                Some(key_authorization) => (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    key_authorization,
                )
                    .into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        axum::Router::new()
            .route(
                "/.well-known/acme-challenge/{token}",
                axum::routing::get(answer),
            )
            .with_state(self.clone())
    }
}

/// Whether a certificate valid until `not_after` (Unix seconds) is to be renewed at `now`.
pub fn needs_renewal(not_after: i64, now: i64, renew_before: Duration) -> bool {
    not_after.saturating_sub(now) < renew_before.as_secs() as i64
}

/// When the end-entity certificate of a PEM chain expires (Unix seconds).
pub fn not_after(chain_pem: &[u8]) -> Result<i64, AcmeError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .ok_or_else(|| AcmeError::Certificate("no certificate in the chain".into()))?
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref())
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// A relay's ACME client: its configuration, cache folder and open challenges.
#[derive(Debug, Clone)]
pub struct Acme {
    config: AcmeConfig,
    cache_dir: PathBuf,
    challenges: Challenges,
}

impl Acme {
    /// The ACME client `[acme]` configures, or `None` when `domains` is empty.
    pub fn from_config(config: &crate::config::RelayConfig) -> Result<Option<Acme>, AcmeError> {
        let acme = &config.acme;
        if acme.domains.is_empty() {
            return Ok(None);
        }
        if config.tls_cert.is_some() || config.tls_key.is_some() {
            return Err(AcmeError::Config(
                "domains and tls_cert/tls_key are two sources for one certificate: set one".into(),
            ));
        }
        for name in &acme.domains {
            if name.starts_with("*.") {
                return Err(AcmeError::Config(format!(
                    "domains: {name:?} is a wildcard, which needs DNS-01; HTTP-01 cannot prove it"
                )));
            }
            let ip = name.parse::<std::net::IpAddr>().is_ok();
            if name.is_empty() || (!ip && name.contains(['/', ':', ' '])) {
                return Err(AcmeError::Config(format!(
                    "domains: {name:?} is not a host name or an IP address"
                )));
            }
        }
        if acme.check_secs == 0 {
            return Err(AcmeError::Config("check_secs must be at least 1".into()));
        }
        let cache_dir = acme
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("acme"));
        Ok(Some(Acme {
            config: acme.clone(),
            cache_dir,
            challenges: Challenges::default(),
        }))
    }

    /// The certificate chain file (PEM) the relay serves.
    pub fn cert_path(&self) -> PathBuf {
        self.cache_dir.join("cert.pem")
    }

    /// The key file (PEM, PKCS#8) matching [`Acme::cert_path`].
    pub fn key_path(&self) -> PathBuf {
        self.cache_dir.join("key.pem")
    }

    /// The open HTTP-01 challenges, for the HTTP route ([`Challenges::router`]).
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// How long until the cached certificate is due for renewal: `Some(ZERO)` when due
    /// now, `None` when there is no readable certificate (one is to be ordered).
    pub fn until_renewal(&self, now: i64) -> Option<Duration> {
        let pem = std::fs::read(self.cert_path()).ok()?;
        let not_after = not_after(&pem).ok()?;
        if !self.cached_pair_matches() {
            // A key without its chain (a crash between the two writes): order anew.
            return None;
        }
        let renew_before = Duration::from_secs(u64::from(self.config.renew_before_days) * 86_400);
        if needs_renewal(not_after, now, renew_before) {
            return Some(Duration::ZERO);
        }
        let at = not_after - renew_before.as_secs() as i64;
        Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
    }

    /// Whether the cached key is the cached certificate's.
    fn cached_pair_matches(&self) -> bool {
        let Ok(identity) = crate::cert::load_pem(&self.cert_path(), &self.key_path()) else {
            return false;
        };
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(identity.chain, identity.key, &provider).is_ok()
    }

    fn account_path(&self) -> PathBuf {
        let hash = Sha256::digest(self.config.directory_url.as_bytes());
        self.cache_dir
            .join(format!("account-{}.json", hex::encode(&hash[..8])))
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        Ok(match &self.config.directory_ca_file {
            Some(ca) => Account::builder_with_root(ca)?,
            None => Account::builder()?,
        })
    }

    /// The account kept in the cache, or a new one (then kept).
    async fn account(&self, fresh: bool) -> Result<Account, AcmeError> {
        let path = self.account_path();
        if !fresh
            && let Ok(bytes) = std::fs::read(&path)
            && let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&bytes)
        {
            return Ok(self.builder()?.from_credentials(credentials).await?);
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory_url.clone(),
                None,
            )
            .await?;
        let json = serde_json::to_vec(&credentials)
            .map_err(|e| AcmeError::Certificate(format!("account credentials: {e}")))?;
        write_private(&path, &json)?;
        info!(directory = %self.config.directory_url, account = account.id(), "ACME account created");
        Ok(account)
    }

    /// Orders a certificate for `domains`, answers its HTTP-01 challenges, and writes the
    /// chain and its new key to the cache (`cert.pem`, `key.pem`). The caller loads them.
    pub async fn obtain(&self) -> Result<(), AcmeError> {
        tokio::time::timeout(ORDER_TIMEOUT, self.obtain_inner())
            .await
            .map_err(|_| AcmeError::Order(format!("not finished within {ORDER_TIMEOUT:?}")))?
    }

    async fn obtain_inner(&self) -> Result<(), AcmeError> {
        std::fs::create_dir_all(&self.cache_dir).map_err(|source| AcmeError::Io {
            path: self.cache_dir.display().to_string(),
            source,
        })?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::Dns(name.clone()),
            })
            .collect();
        let account = self.account(false).await?;
        let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(order) => order,
            // The CA forgot the cached account (a test CA restarted, an account
            // deactivated): a new one.
            Err(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref().is_some_and(|t| {
                    t.ends_with(":accountDoesNotExist") || t.ends_with(":unauthorized")
                }) =>
            {
                warn!(%problem, "the cached ACME account is refused; creating a new one");
                self.account(true)
                    .await?
                    .new_order(&NewOrder::new(&identifiers))
                    .await?
            }
            Err(err) => return Err(err.into()),
        };
        let mut tokens = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization?;
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(AcmeError::Order(format!(
                            "authorization for {} is {other:?}",
                            authorization.identifier()
                        )));
                    }
                }
                let name = authorization.identifier().to_string();
                let mut challenge = authorization
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| AcmeError::Order(format!("the CA offers no HTTP-01 challenge for {name}")))?;
                let key_authorization = challenge.key_authorization();
                self.challenges
                    .put(&challenge.token, key_authorization.as_str());
                tokens.push(challenge.token.clone());
                challenge.set_ready().await?;
            }
            let retries = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .backoff(1.5)
                .timeout(ORDER_TIMEOUT);
            let status = order.poll_ready(&retries).await?;
            if status != OrderStatus::Ready {
                return Err(AcmeError::Order(format!(
                    "the order is {status:?} after its challenges (is port 80 of every name reaching this relay's HTTP port?)"
                )));
            }
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| AcmeError::Certificate(e.to_string()))?;
            let mut params = rcgen::CertificateParams::new(self.config.domains.clone())
                .map_err(|e| AcmeError::Certificate(e.to_string()))?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            let csr = params
                .serialize_request(&key)
                .map_err(|e| AcmeError::Certificate(e.to_string()))?;
            order.finalize_csr(csr.der()).await?;
            let chain = order.poll_certificate(&retries).await?;
            Ok((chain, key.serialize_pem()))
        }
        .await;
        for token in &tokens {
            self.challenges.remove(token);
        }
        let (chain, key) = result?;
        let expires = not_after(chain.as_bytes())?;
        // The key first, then the chain: a reload between the two sees a pair rustls
        // refuses, and keeps the current certificate until the chain is there too.
        write_private(&self.key_path(), key.as_bytes())?;
        write_private(&self.cert_path(), chain.as_bytes())?;
        info!(domains = ?self.config.domains, expires, "ACME certificate issued");
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (so a reader never
/// sees half a file), readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    let io = |source| AcmeError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Keeps the certificate current until `stopped`: orders one when there is none or it is
/// due ([`Acme::until_renewal`]), then calls `install` (which loads the cache's files for
/// new connections, `crate::server`'s reload path). A failed order is retried after
/// [`FIRST_RETRY`], doubling up to `check_secs`; the current certificate stays meanwhile.
pub async fn run(
    acme: Acme,
    install: impl Fn() -> Result<bool, String> + Send,
    mut stopped: watch::Receiver<bool>,
) {
    let check = Duration::from_secs(acme.config.check_secs.max(1));
    let mut failures = 0u32;
    loop {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let wait = match acme.until_renewal(now) {
            Some(left) if !left.is_zero() => left.min(check),
            due => {
                let why = if due.is_some() {
                    "renewal"
                } else {
                    "first certificate"
                };
                info!(why, domains = ?acme.config.domains, "ordering an ACME certificate");
                match acme.obtain().await {
                    Ok(()) => {
                        failures = 0;
                        match install() {
                            Ok(_) => {}
                            Err(err) => warn!(%err, "the ACME certificate was not loaded"),
                        }
                        check
                    }
                    Err(err) => {
                        let retry = FIRST_RETRY
                            .saturating_mul(1 << failures.min(16))
                            .min(check.max(FIRST_RETRY));
                        failures += 1;
                        warn!(%err, ?retry, "ACME order failed; the current certificate stays");
                        retry
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_within_renew_before_of_expiry() {
        let day = 86_400;
        let thirty = Duration::from_secs(30 * day as u64);
        let now = 1_700_000_000;
        assert!(!needs_renewal(now + 31 * day, now, thirty));
        assert!(needs_renewal(now + 29 * day, now, thirty));
        assert!(needs_renewal(now - 1, now, thirty), "expired");
    }

    #[test]
    fn a_certificates_expiry_is_read_and_the_wait_until_renewal_follows() {
        let dir = std::env::temp_dir().join(format!("relay-acme-test-{}", uuid::Uuid::new_v4()));
        let config = crate::config::RelayConfig {
            data_dir: dir.clone(),
            acme: AcmeConfig {
                domains: vec!["relay.example.com".into()],
                ..AcmeConfig::default()
            },
            ..crate::config::RelayConfig::default()
        };
        let acme = Acme::from_config(&config).unwrap().expect("on");
        assert_eq!(acme.cert_path(), dir.join("acme/cert.pem"));
        let now = time::OffsetDateTime::now_utc();
        assert_eq!(acme.until_renewal(now.unix_timestamp()), None, "none yet");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["relay.example.com".into()]).unwrap();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(90);
        let pem = params.self_signed(&key).unwrap().pem();
        std::fs::create_dir_all(dir.join("acme")).unwrap();
        std::fs::write(acme.cert_path(), &pem).unwrap();
        assert_eq!(acme.until_renewal(now.unix_timestamp()), None, "no key yet");
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(acme.key_path(), other.serialize_pem()).unwrap();
        assert_eq!(
            acme.until_renewal(now.unix_timestamp()),
            None,
            "another certificate's key (a crash between the two writes): ordered anew"
        );
        std::fs::write(acme.key_path(), key.serialize_pem()).unwrap();
        let expires = not_after(pem.as_bytes()).unwrap();
        assert!((expires - (now + time::Duration::days(90)).unix_timestamp()).abs() <= 1);
        // 90 days left, renewed at 30: in 60 days.
        let wait = acme.until_renewal(now.unix_timestamp()).unwrap();
        assert!(wait.as_secs().abs_diff(60 * 86_400) <= 2, "{wait:?}");
        // 20 days later than that: due now.
        let later = now + time::Duration::days(70);
        assert_eq!(
            acme.until_renewal(later.unix_timestamp()),
            Some(Duration::ZERO)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_sections_are_refused_with_the_key_named() {
        let with = |acme: AcmeConfig, cert: bool| crate::config::RelayConfig {
            acme,
            tls_cert: cert.then(|| "/etc/c.pem".into()),
            tls_key: cert.then(|| "/etc/k.pem".into()),
            ..crate::config::RelayConfig::default()
        };
        let off = with(AcmeConfig::default(), false);
        assert!(
            Acme::from_config(&off).unwrap().is_none(),
            "off without domains"
        );
        let named = |d: &str| AcmeConfig {
            domains: vec![d.into()],
            ..AcmeConfig::default()
        };
        let err = Acme::from_config(&with(named("relay.example.com"), true)).unwrap_err();
        assert!(err.to_string().contains("tls_cert"), "{err}");
        let err = Acme::from_config(&with(named("*.example.com"), false)).unwrap_err();
        assert!(err.to_string().contains("wildcard"), "{err}");
        let err = Acme::from_config(&with(named("https://x"), false)).unwrap_err();
        assert!(err.to_string().contains("not a host name"), "{err}");
        assert!(
            Acme::from_config(&with(named("127.0.0.1"), false))
                .unwrap()
                .is_some()
        );
        let err = crate::config::RelayConfig::from_toml("[acme]\nchallenge = \"tls-alpn-01\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("http-01"), "{err}");
    }

    #[tokio::test]
    async fn the_challenge_route_answers_open_tokens_only() {
        let challenges = Challenges::default();
        challenges.put("tok", "tok.thumb");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/acme-challenge/tok",
            listener.local_addr().unwrap()
        );
        tokio::spawn(axum::serve(listener, challenges.router()).into_future());
        let answer = reqwest::get(&url).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "tok.thumb");
        challenges.remove("tok");
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);
    }
}
