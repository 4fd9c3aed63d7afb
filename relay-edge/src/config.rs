//! The relay's configuration: a TOML file, overridden by environment variables and flags
//! (the binary applies those), with the defaults documented on each field.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub mod env;
pub mod oidc;

/// Everything `relay-edge serve` needs. Unknown keys in the file are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// UDP address for QUIC (desktops) and WebTransport (browsers). Default `0.0.0.0:4433`.
    pub quic_listen: SocketAddr,
    /// TCP address for the web app and HTTP API. Default `127.0.0.1:8080`.
    pub http_listen: SocketAddr,
    /// Host name or address browsers and desktops use to reach `quic_listen`; it goes into
    /// the WebTransport URL handed to the page. Default `127.0.0.1`.
    pub public_host: String,
    /// Where the relay keeps its database, development certificate and secrets.
    /// Default: `$XDG_DATA_HOME/aisuperapp/relay` (`~/.local/share/aisuperapp/relay`).
    pub data_dir: PathBuf,
    /// `sqlite://…` URL. Default: `relay.db` in `data_dir`.
    pub database_url: Option<String>,
    /// Folder with the built web app (`browser-client/dist`). Default: none (API only).
    pub web_root: Option<PathBuf>,
    /// Folder of desktop-node release files served under `/releases/` (the signed
    /// manifests `{channel}/{platform}.json` that `aisapp release` writes, and the
    /// binaries they point to), the default `manifest_url` of `desktop-node update`
    /// (`docs/desktop.md`, "Updates"). Default: none (`/releases/` is not served).
    pub releases_dir: Option<PathBuf>,
    /// PEM certificate chain for production. Without it a self-signed development
    /// certificate (ECDSA P-256, 14 days, renewed near expiry) is used.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How often, in seconds, the relay looks at `tls_cert` and `tls_key` and, when
    /// either changed, loads them for new connections (open ones keep theirs). `SIGHUP`
    /// reloads them at once too. 0: only on `SIGHUP`. Default 10.
    pub tls_reload_secs: u64,
    /// The QUIC address browsers and desktops are told to use, `host:port`, when it is
    /// not the bound `quic_listen` (a load balancer or NAT in front: `relay.example.net:443`
    /// while the relay binds `0.0.0.0:4433`). `/api/session` and device enrollment hand it
    /// out. Default: `public_host` and the bound port.
    pub public_quic_addr: Option<String>,
    /// Secret for signing access tokens, at least 32 bytes (the relay refuses to start
    /// with a shorter one). Default: random, kept in `data_dir/jwt-secret`.
    pub jwt_secret: Option<String>,
    /// A file holding `jwt_secret` (surrounding white space ignored), for secrets handed
    /// over as files: systemd's `LoadCredential=` (`%d/jwt-secret`), a Kubernetes secret
    /// volume. `jwt_secret` wins when both are set. Default: none.
    pub jwt_secret_file: Option<PathBuf>,
    /// TCP address for Prometheus metrics (`GET /metrics`), kept off the public API.
    /// Default: none (metrics are not served); e.g. `"127.0.0.1:9464"`.
    pub metrics_addr: Option<SocketAddr>,
    /// How often, in seconds, the relay looks for users whose tokens were revoked
    /// elsewhere (disabled by the CLI, signed out through another node) and closes their
    /// open sessions. Default 2.
    pub revocation_check_secs: u64,
    /// How often, in milliseconds, the actions counted in memory are written to the
    /// store (`actions::ActionCounter`); a relay that dies without stopping loses at
    /// most this much of the count. Default 1000.
    pub action_flush_ms: u64,
    /// Lifetime of an access token in seconds. Default 900 (15 minutes).
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token in seconds. Default 2592000 (30 days).
    pub refresh_token_ttl_secs: u64,
    /// Whether anyone may create an account with `POST /api/auth/signup`. Default true.
    pub allow_signup: bool,
    /// Seconds a device registered by `desktop-node login` waits for the desktop to
    /// finish the login (store its token and say so, or connect); until then it is not
    /// listed, and after it is deleted and its token refused. Default 900.
    pub pending_device_ttl_secs: u64,
    /// Failed sign-ins allowed per email and per client address within
    /// `login_window_secs` before further attempts are refused. Default 10.
    pub login_max_failures: usize,
    /// The sign-in rate-limit window in seconds. Default 900.
    pub login_window_secs: u64,
    /// Reverse proxies (addresses or CIDR networks, e.g. `"10.0.0.0/8"`) whose
    /// `Forwarded` / `X-Forwarded-For` headers are believed for the client's address.
    /// From any other peer those headers are ignored. Default: none.
    pub trusted_proxies: Vec<String>,
    /// Password hashes (argon2id, ~19 MiB each) computed at once. Default 0: twice the
    /// number of cores.
    pub hash_concurrency: usize,
    /// How long a sign-in, sign-up or enrollment waits for a hashing place before it is
    /// answered 503 with `Retry-After`, in milliseconds. Default 2000.
    pub hash_queue_timeout_ms: u64,
    /// Seconds an HTTP client has to send a request's headers before its connection is
    /// closed. Default 10.
    pub http_header_timeout_secs: u64,
    /// Seconds an HTTP client has to send a request's whole body, counted from its
    /// headers; later, the request is answered 408 and the connection closed. Default
    /// 120 (a 16 MiB upload at about 1.1 Mbit/s).
    pub http_body_timeout_secs: u64,
    /// How often desktops ping, in seconds. Default 15.
    pub heartbeat_secs: u32,
    /// Largest frame accepted, in bytes. Default 1 MiB. (Stream headers have their own,
    /// smaller cap: `aisa_tunnel::MAX_HEADER_LEN`, 4 KiB.)
    pub max_frame_len: u32,
    /// QUIC connections (browser sessions and desktops) one client address may have open
    /// at once; more are refused during the handshake. Default 64.
    pub max_connections_per_ip: usize,
    /// Status-event streams (`Control` streams with no device) one user may have open at
    /// once on this node; more are refused with `limit_exceeded`. Default 8.
    pub max_event_streams_per_user: usize,
    /// Deprecated spelling of `[cluster] node_name` (which wins when both are set).
    /// Default: empty, meaning "not set"; the name in use is
    /// [`crate::cluster::NodeName::resolve`]'s.
    pub node_name: String,
    /// Several relays as one service (`[cluster]`): Redis, node name, forwarding.
    pub cluster: ClusterConfig,
    /// The database connection pool and TLS (`[database]`).
    pub database: DatabaseConfig,
    /// Log output (`[log]`).
    pub log: LogConfig,
    /// Where published mini-app bundles are kept (`[bundles]`).
    pub bundles: BundlesConfig,
    /// The platform key that signs published bundles (`[signing]`).
    pub signing: SigningConfig,
    /// Certificates from an ACME CA (`[acme]`, `crate::acme`). Off by default.
    pub acme: crate::acme::AcmeConfig,
    /// Sign-in with OpenID Connect providers (`[oidc]`).
    pub oidc: oidc::OidcConfig,
    /// Which desktop nodes this relay accepts (`[compat]`, `docs/compatibility.md`).
    pub compat: crate::compat::CompatConfig,
    /// Crash reports desktops upload (`[crash_reports]`): where, how big, how many.
    pub crash_reports: crate::http::crash_reports::CrashReportsConfig,
}

/// `[cluster]`: relays sharing state through Redis, and forwarding streams between them.
///
/// Without `redis_url` the relay is a single node with its state in memory (the
/// embedded default); everything else here then only names the node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Redis holding the shared state (device map, presence, revocations, counters).
    /// `redis://[user:pass@]host:port[/db]` for one server (`rediss://` for TLS),
    /// `redis-cluster://host:port?node=host2:port2` for Redis Cluster,
    /// `redis-sentinel://host:port?sentinelServiceName=NAME` for Sentinel (fred's URL
    /// forms). Default: none (single node).
    pub redis_url: Option<String>,
    /// This node's name, unique in the cluster. Default: `<hostname>-<8 hex digits>`,
    /// made once and kept in `data_dir/node-name` (see `docs/relay.md`, "Cluster").
    pub node_name: Option<String>,
    /// UDP address for relay-to-relay forwarding (QUIC, ALPN `aisa-relay-forward/1`).
    /// Default: none (this node does not accept forwarded streams).
    pub forward_listen: Option<SocketAddr>,
    /// Address other nodes reach `forward_listen` at, as written in the device map.
    /// Default: the bound `forward_listen` address.
    pub forward_advertise: Option<SocketAddr>,
    /// Forwarding's mutual TLS, from the operator's files (PEM): the cluster CA's
    /// certificate, and this node's certificate (for the DNS name `aisa-relay-forward`,
    /// issued by that CA) and key. Peers must present a certificate from the same CA.
    /// All three together, or none and `forward_secret`.
    pub forward_ca: Option<PathBuf>,
    /// See `forward_ca`.
    pub forward_cert: Option<PathBuf>,
    /// See `forward_ca`.
    pub forward_key: Option<PathBuf>,
    /// Instead of the files: a secret shared by every node (at least 32 bytes, e.g. the
    /// output of `openssl rand -hex 32`), from which each node derives the same cluster
    /// CA and issues itself a certificate at start.
    pub forward_secret: Option<String>,
    /// Milliseconds a forward connection may go unanswered (a dead peer, a partition)
    /// before it is dropped and the streams on it end (keep-alives go every third of
    /// it). Default 5000.
    pub forward_idle_timeout_ms: Option<u64>,
    /// Milliseconds between two writes of this node's counts (each user's actions
    /// counted here since the last write, and open streams) to Redis, whose replies
    /// bring back the totals of every node. Limits are checked against those totals in
    /// memory, so a shorter interval lets fewer actions past a limit across nodes and
    /// costs more Redis commands (see `docs/relay.md`, "Cluster"). Default 250.
    pub count_sync_ms: Option<u64>,
}

/// `[database]`: the connection pool and TLS to PostgreSQL (the URL is `database_url`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connections this node keeps open at most. Default 16. With several nodes, keep
    /// their sum under the server's `max_connections`.
    pub max_connections: u32,
    /// Connections kept open even when idle. Default 0.
    pub min_connections: u32,
    /// Seconds a query waits for a free connection before failing. Default 10.
    pub acquire_timeout_secs: u64,
    /// A PEM file of the certificate authorities that may sign the server's certificate
    /// (a managed database's CA bundle). Setting it makes the connection
    /// `sslmode=verify-full` (TLS, the CA checked, the host name matched) unless
    /// `sslmode` says otherwise. Default: none (the URL's own `sslmode`, if any).
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`), overriding the URL's. Default: none.
    pub sslmode: Option<String>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            max_connections: 16,
            min_connections: 0,
            acquire_timeout_secs: 10,
            ca_file: None,
            sslmode: None,
        }
    }
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people. The default.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log
    /// collectors.
    Json,
}

/// `[log]`: log output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `"text"` (default) or `"json"`.
    pub format: LogFormat,
    /// Which lines are written, as `RUST_LOG` says it (`RUST_LOG` wins when set).
    /// Default: `info,quinn=warn,wtransport=warn`.
    pub filter: Option<String>,
}

/// Which object store holds bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleStoreKind {
    /// A local directory (`dir`). The default.
    #[default]
    Local,
    /// An S3-compatible object store (`bucket`, `endpoint`, `region`).
    S3,
}

/// `[bundles]`: where published mini-app bundles are stored.
///
/// With `store = "s3"` the access keys come from the environment, as the AWS tools read
/// them: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optionally)
/// `AWS_SESSION_TOKEN`; the other `AWS_*` variables (`AWS_ENDPOINT`, `AWS_REGION`, …) are
/// read too, and the keys below override them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundlesConfig {
    /// `"local"` (default) or `"s3"`.
    pub store: BundleStoreKind,
    /// Folder for `store = "local"`. Default: `bundles` in `data_dir`.
    pub dir: Option<PathBuf>,
    /// Bucket for `store = "s3"` (required there).
    pub bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible services (MinIO, Ceph, R2, …). Default: AWS.
    pub endpoint: Option<String>,
    /// Region. Default: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint (a MinIO on the same host). Default false.
    pub allow_http: bool,
    /// Prefix for every object key, e.g. `"relay/"`. Default: none.
    pub prefix: String,
}

impl Default for BundlesConfig {
    fn default() -> Self {
        BundlesConfig {
            store: BundleStoreKind::Local,
            dir: None,
            bucket: None,
            endpoint: None,
            region: None,
            allow_http: false,
            prefix: String::new(),
        }
    }
}

/// `[signing]`: the platform's Ed25519 bundle-signing key and the keys it trusts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// The signing key file. Default: `platform-signing.key` in `data_dir`, generated at
    /// first start (mode 0600). A configured file must exist.
    pub key_file: Option<PathBuf>,
    /// Further public keys (base64 of the 32-byte Ed25519 key) that bundles may be signed
    /// with, for rotation: the configured key signs, these and it verify. Default: none.
    pub trusted_public_keys: Vec<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            quic_listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_host: "127.0.0.1".into(),
            data_dir: default_data_dir(),
            database_url: None,
            web_root: None,
            releases_dir: None,
            tls_cert: None,
            tls_key: None,
            tls_reload_secs: 10,
            public_quic_addr: None,
            jwt_secret: None,
            jwt_secret_file: None,
            metrics_addr: None,
            revocation_check_secs: 2,
            action_flush_ms: crate::actions::FLUSH_INTERVAL.as_millis() as u64,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            allow_signup: true,
            pending_device_ttl_secs: 900,
            login_max_failures: 10,
            login_window_secs: 900,
            trusted_proxies: Vec::new(),
            hash_concurrency: 0,
            hash_queue_timeout_ms: 2000,
            http_header_timeout_secs: 10,
            http_body_timeout_secs: 120,
            heartbeat_secs: 15,
            max_frame_len: aisa_tunnel::MAX_FRAME_LEN,
            max_connections_per_ip: 64,
            max_event_streams_per_user: 8,
            node_name: String::new(),
            cluster: ClusterConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            bundles: BundlesConfig::default(),
            signing: SigningConfig::default(),
            acme: crate::acme::AcmeConfig::default(),
            oidc: oidc::OidcConfig::default(),
            compat: crate::compat::CompatConfig::default(),
            crash_reports: crate::http::crash_reports::CrashReportsConfig::default(),
        }
    }
}

impl RelayConfig {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are an error.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads a TOML file (`text`, empty for none) with every `AISA_RELAY_*` variable of
    /// `vars` applied on top ([`env`]). Returns the configuration and what the
    /// environment set (to log).
    pub fn from_toml_and_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, env::Applied), ConfigError> {
        let mut table: toml::Table = toml::from_str(text)?;
        let applied = env::apply(&env::schema::<RelayConfig>(), &mut table, vars)?;
        let config = toml::Value::Table(table).try_into()?;
        Ok((config, applied))
    }

    /// The QUIC address handed to browsers and desktops, `(host, port)`:
    /// `public_quic_addr` when set, else `public_host` and the `bound` port.
    pub fn advertised_quic(&self, bound: SocketAddr) -> (String, u16) {
        if let Some(addr) = &self.public_quic_addr
            && let Some((host, port)) = split_host_port(addr)
        {
            return (host, port);
        }
        (self.public_host.clone(), bound.port())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("relay.db").display()
            )
        })
    }
}

impl RelayConfig {
    /// The folder for local bundle storage: `[bundles] dir`, else `bundles` in `data_dir`.
    pub fn bundles_dir(&self) -> PathBuf {
        self.bundles
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("bundles"))
    }

    /// The platform signing key file: `[signing] key_file`, else
    /// `platform-signing.key` in `data_dir`.
    pub fn signing_key_file(&self) -> PathBuf {
        self.signing
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("platform-signing.key"))
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML, or a key or value is wrong.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// An `AISA_RELAY_*` variable's value is wrong.
    #[error(transparent)]
    Env(#[from] env::EnvError),
    /// A setting's value is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// `host:port` split in two: a DNS name, an IPv4 address or a bracketed IPv6 address
/// (`[2001:db8::1]:443`, returned without the brackets), and a port. `None` when it is
/// not of that form.
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

impl RelayConfig {
    /// Checks the values serde cannot: `public_quic_addr`'s form, `[oidc]` and
    /// `[compat] min_node_version`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = &self.public_quic_addr
            && split_host_port(addr).is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "public_quic_addr {addr:?} is not host:port (an IPv6 address in brackets: [2001:db8::1]:443)"
            )));
        }
        self.compat
            .minimum()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.oidc.validate()?;
        Ok(())
    }
}

/// The relay's environment variables, each with the name it had before the `AISA_RELAY_*`
/// scheme: (name, old name). The binary reads them (flags override them); an old name
/// still works, with a deprecation warning.
pub const RENAMED_ENV: [(&str, &str); 13] = [
    ("AISA_RELAY_CONFIG", "RELAY_CONFIG"),
    ("AISA_RELAY_DATA_DIR", "RELAY_DATA_DIR"),
    ("AISA_RELAY_DATABASE_URL", "RELAY_DATABASE_URL"),
    ("AISA_RELAY_QUIC_LISTEN", "RELAY_QUIC_LISTEN"),
    ("AISA_RELAY_HTTP_LISTEN", "RELAY_HTTP_LISTEN"),
    ("AISA_RELAY_PUBLIC_HOST", "RELAY_PUBLIC_HOST"),
    ("AISA_RELAY_WEB_ROOT", "RELAY_WEB_ROOT"),
    ("AISA_RELAY_TLS_CERT", "RELAY_TLS_CERT"),
    ("AISA_RELAY_TLS_KEY", "RELAY_TLS_KEY"),
    ("AISA_RELAY_NODE_NAME", "RELAY_NODE_NAME"),
    (
        "AISA_RELAY_MAX_CONNECTIONS_PER_IP",
        "RELAY_MAX_CONNECTIONS_PER_IP",
    ),
    ("AISA_RELAY_METRICS_ADDR", "RELAY_METRICS_ADDR"),
    ("AISA_RELAY_JWT_SECRET", "RELAY_JWT_SECRET"),
];

/// A variable found under its old name (see [`RENAMED_ENV`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldEnvName {
    /// The value to use: the old variable's, or `None` when the new one is set too (it
    /// wins).
    pub value: Option<String>,
    /// The one-line deprecation warning to log, naming the new variable.
    pub warning: String,
}

/// Looks up the old name of the variable `name` with `lookup` (the process environment,
/// or a map in tests). `None` when the old name is not set (or `name` was never
/// renamed).
pub fn old_env_name(name: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<OldEnvName> {
    let (_, old) = RENAMED_ENV.iter().find(|(new, _)| *new == name)?;
    let value = lookup(old)?;
    Some(if lookup(name).is_some() {
        OldEnvName {
            value: None,
            warning: format!("{old} is deprecated and ignored: {name} is set"),
        }
    } else {
        OldEnvName {
            value: Some(value),
            warning: format!("{old} is deprecated; set {name} instead"),
        }
    })
}

fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("aisuperapp/relay")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_env_names_still_work_with_a_warning() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        // Only the old name: its value is used, and the warning names the new one.
        let old = old_env_name(
            "AISA_RELAY_DATA_DIR",
            env(&[("RELAY_DATA_DIR", "/srv/relay")]),
        )
        .expect("found under the old name");
        assert_eq!(old.value.as_deref(), Some("/srv/relay"));
        assert_eq!(
            old.warning,
            "RELAY_DATA_DIR is deprecated; set AISA_RELAY_DATA_DIR instead"
        );
        // Both names: the new one wins, the old one is reported as ignored.
        let both = old_env_name(
            "AISA_RELAY_DATA_DIR",
            env(&[("RELAY_DATA_DIR", "/old"), ("AISA_RELAY_DATA_DIR", "/new")]),
        )
        .expect("the old name is still reported");
        assert_eq!(both.value, None);
        assert!(both.warning.contains("ignored"), "{}", both.warning);
        // Only the new name, or a variable that was never renamed: nothing to say.
        assert_eq!(
            old_env_name(
                "AISA_RELAY_DATA_DIR",
                env(&[("AISA_RELAY_DATA_DIR", "/new")])
            ),
            None
        );
        assert_eq!(
            old_env_name("AISA_RELAY_OTHER", env(&[("RELAY_OTHER", "x")])),
            None
        );
        // Every variable has the new prefix and its old name is the same without it.
        for (new, old) in RENAMED_ENV {
            assert_eq!(new.strip_prefix("AISA_"), Some(old), "{new}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = RelayConfig::from_toml("quic_listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn missing_keys_take_defaults() {
        let cfg = RelayConfig::from_toml("heartbeat_secs = 5").unwrap();
        assert_eq!(cfg.heartbeat_secs, 5);
        assert_eq!(cfg.access_token_ttl_secs, 900);
        assert_eq!(cfg.bundles.store, BundleStoreKind::Local);
        assert_eq!(cfg.bundles_dir(), cfg.data_dir.join("bundles"));
    }

    #[test]
    fn the_example_file_parses_and_states_the_defaults() {
        let example = RelayConfig::from_toml(include_str!("../../deploy/relay.example.toml"))
            .expect("deploy/relay.example.toml is valid");
        let defaults = RelayConfig::default();
        assert_eq!(
            example.access_token_ttl_secs,
            defaults.access_token_ttl_secs
        );
        assert_eq!(example.bundles.store, defaults.bundles.store);
        assert_eq!(
            example.max_connections_per_ip,
            defaults.max_connections_per_ip
        );
        assert_eq!(
            example.max_event_streams_per_user,
            defaults.max_event_streams_per_user
        );
        assert_eq!(example.trusted_proxies, defaults.trusted_proxies);
        assert_eq!(example.hash_concurrency, defaults.hash_concurrency);
        assert_eq!(
            example.hash_queue_timeout_ms,
            defaults.hash_queue_timeout_ms
        );
        assert_eq!(
            example.http_header_timeout_secs,
            defaults.http_header_timeout_secs
        );
        assert_eq!(
            example.http_body_timeout_secs,
            defaults.http_body_timeout_secs
        );
        assert_eq!(
            example.revocation_check_secs,
            defaults.revocation_check_secs
        );
        assert_eq!(example.metrics_addr, None, "metrics are off by default");
        assert_eq!(example.tls_reload_secs, defaults.tls_reload_secs);
        assert_eq!(example.public_quic_addr, None);
        assert_eq!(
            example.database.max_connections,
            defaults.database.max_connections
        );
        assert_eq!(
            example.database.acquire_timeout_secs,
            defaults.database.acquire_timeout_secs
        );
        assert_eq!(example.log.format, defaults.log.format);
        assert_eq!(example.bundles.allow_http, defaults.bundles.allow_http);
        assert!(example.signing.trusted_public_keys.is_empty());
        assert_eq!(
            example.oidc.login_timeout_secs,
            defaults.oidc.login_timeout_secs
        );
        assert_eq!(
            example.oidc.reauth_max_age_secs,
            defaults.oidc.reauth_max_age_secs
        );
        assert_eq!(
            example.pending_device_ttl_secs,
            defaults.pending_device_ttl_secs
        );
        assert!(example.oidc.providers.is_empty());
    }

    #[test]
    fn bundle_and_signing_sections_parse_and_refuse_unknown_keys() {
        let cfg = RelayConfig::from_toml(
            "[bundles]\nstore = \"s3\"\nbucket = \"apps\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\n\
             [signing]\nkey_file = \"/etc/k\"\ntrusted_public_keys = [\"AAAA\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.bundles.store, BundleStoreKind::S3);
        assert_eq!(cfg.bundles.bucket.as_deref(), Some("apps"));
        assert_eq!(cfg.signing_key_file(), PathBuf::from("/etc/k"));
        assert_eq!(cfg.signing.trusted_public_keys.len(), 1);
        let err = RelayConfig::from_toml("[bundles]\nstore = \"ftp\"\n").unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
        let err = RelayConfig::from_toml("[signing]\nkey = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `key`"), "{err}");
    }
}
