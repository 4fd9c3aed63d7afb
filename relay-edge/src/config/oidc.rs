//! `[oidc]`: sign-in with OpenID Connect providers, any number of them
//! (`[[oidc.providers]]`), each registered by the operator at the provider with the
//! redirect URI `{public_url}/api/auth/oidc/{name}/callback`. `docs/relay.md`, "Sign-in
//! with an identity provider", has an example.
//!
//! This module only reads and checks the settings; the flow is `crate::http::oidc`.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// `[oidc]`: the relay's public URL and the providers people may sign in with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The URL people open the web app at, `https://relay.example.net` (no path): the
    /// redirect URIs are built from it, and after signing in the browser returns to it.
    /// Required when a provider is configured.
    pub public_url: Option<String>,
    /// Seconds a person has to finish signing in at the provider. Default 600.
    pub login_timeout_secs: u64,
    /// How recent (seconds) a sign-in at the provider must be for an account without a
    /// password to set one or to delete itself: the person confirms who they are at
    /// the provider first (`?reauth=1`, which asks for `prompt=login` and `max_age=0`).
    /// Default 300.
    pub reauth_max_age_secs: u64,
    /// The providers, shown on the sign-in page in this order. Default: none.
    pub providers: Vec<OidcProviderConfig>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            public_url: None,
            login_timeout_secs: 600,
            reauth_max_age_secs: 300,
            providers: Vec::new(),
        }
    }
}

/// `[[oidc.providers]]`: one OpenID provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// A short name in the redirect URI and the API (`a-z`, `0-9`, `-`, `_`), e.g.
    /// `"google"`. Unique.
    pub name: String,
    /// The name on the sign-in button ("Sign in with …"). Default: `name`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The issuer URL; its `/.well-known/openid-configuration` is read for the
    /// endpoints, and ID tokens must name it as `iss`. `https://`, or `http://` to a
    /// loopback address (tests, a provider on the same host).
    pub issuer: String,
    /// The client id the provider gave this relay.
    pub client_id: String,
    /// The client secret. Default: none (`client_secret_file`, or a public client).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file holding the client secret (surrounding white space ignored), read at each
    /// sign-in so that a rotated secret needs no restart. Not together with
    /// `client_secret`.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The scopes asked for. `openid` is always asked for; `email` is needed for
    /// linking accounts. Default `["openid", "email", "profile"]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

impl OidcProviderConfig {
    /// The name on the sign-in button.
    pub fn display_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }

    /// The scopes to ask for, `openid` first and once.
    pub fn scope(&self) -> String {
        let mut scopes = vec!["openid"];
        scopes.extend(
            self.scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid" && !s.is_empty()),
        );
        scopes.join(" ")
    }
}

/// Whether `url` may be used for a provider or the public URL: `https://`, or
/// `http://` to a loopback host (`127.0.0.0/8`, `[::1]`, `localhost`).
pub fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OidcConfig {
    /// Checks what serde cannot: names, URLs, one secret at most, and `public_url` when
    /// there are providers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("[oidc] {m}")));
        if self.providers.is_empty() {
            return Ok(());
        }
        match &self.public_url {
            None => return invalid("public_url is required when a provider is configured".into()),
            Some(url) if !secure_or_loopback(url) => {
                return invalid(format!(
                    "public_url {url:?} must be https:// (or http:// to a loopback address)"
                ));
            }
            Some(url) if url.trim_end_matches('/').matches('/').count() > 2 => {
                return invalid(format!("public_url {url:?} must have no path"));
            }
            Some(_) => {}
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.providers {
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return invalid(format!(
                    "provider name {:?} must be 1 to 64 of a-z, 0-9, '-' and '_'",
                    p.name
                ));
            }
            if !seen.insert(p.name.as_str()) {
                return invalid(format!("provider name {:?} is used twice", p.name));
            }
            if !secure_or_loopback(&p.issuer) {
                return invalid(format!(
                    "provider {:?}: issuer {:?} must be https:// (or http:// to a loopback address)",
                    p.name, p.issuer
                ));
            }
            if p.client_id.is_empty() {
                return invalid(format!("provider {:?}: client_id is empty", p.name));
            }
            if p.client_secret.is_some() && p.client_secret_file.is_some() {
                return invalid(format!(
                    "provider {:?}: set client_secret or client_secret_file, not both",
                    p.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OidcConfig, String> {
        let cfg: OidcConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    const ONE: &str = "public_url = \"https://relay.example.net\"\n\
        [[providers]]\nname = \"google\"\nissuer = \"https://accounts.google.com\"\nclient_id = \"abc\"\n";

    #[test]
    fn a_provider_parses_with_its_defaults() {
        let cfg = parse(ONE).unwrap();
        let p = &cfg.providers[0];
        assert_eq!(p.display_name(), "google");
        assert_eq!(p.scope(), "openid email profile");
        assert_eq!(cfg.login_timeout_secs, 600);
    }

    #[test]
    fn openid_is_always_asked_for_first_and_once() {
        let cfg = parse(&format!("{ONE}scopes = [\"email\", \"openid\"]\n")).unwrap();
        assert_eq!(cfg.providers[0].scope(), "openid email");
    }

    #[test]
    fn wrong_settings_are_refused_with_the_reason() {
        let cases = [
            (
                "[[providers]]\nname = \"g\"\nissuer = \"https://i\"\nclient_id = \"c\"\n",
                "public_url is required",
            ),
            (
                &ONE.replace("https://accounts", "http://accounts"),
                "must be https://",
            ),
            (
                &ONE.replace("https://relay", "http://relay"),
                "must be https://",
            ),
            (&ONE.replace("\"google\"", "\"Google!\""), "must be 1 to 64"),
            (
                &format!("{ONE}client_secret = \"s\"\nclient_secret_file = \"/f\"\n"),
                "not both",
            ),
            (
                &format!(
                    "{ONE}[[providers]]\nname = \"google\"\nissuer = \"https://x\"\nclient_id = \"d\"\n"
                ),
                "used twice",
            ),
            (&format!("{ONE}secret = \"s\"\n"), "unknown field `secret`"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn the_whole_section_can_come_from_the_environment() {
        let vars = [
            ("AISA_RELAY_OIDC_PUBLIC_URL", "https://relay.example.net"),
            (
                "AISA_RELAY_OIDC_PROVIDERS",
                r#"[{ name = "corp", issuer = "https://id.example.com", client_id = "c", client_secret_file = "/run/s" }]"#,
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (cfg, _) = crate::config::RelayConfig::from_toml_and_env("", vars).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.oidc.providers.len(), 1);
        assert_eq!(cfg.oidc.providers[0].name, "corp");
        assert_eq!(
            cfg.oidc.providers[0].client_secret_file,
            Some(PathBuf::from("/run/s"))
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(secure_or_loopback("https://id.example.com"));
        assert!(secure_or_loopback("http://127.0.0.1:9000/"));
        assert!(secure_or_loopback("http://[::1]:9000"));
        assert!(secure_or_loopback("http://localhost:9000"));
        assert!(!secure_or_loopback("http://10.0.0.1"));
        assert!(!secure_or_loopback("http://127.0.0.1.evil.example"));
        assert!(!secure_or_loopback("http://localhost.evil.example"));
        assert!(!secure_or_loopback("ftp://127.0.0.1"));
        assert!(!secure_or_loopback("http://127.0.0.1:80@evil.example/"));
    }
}
