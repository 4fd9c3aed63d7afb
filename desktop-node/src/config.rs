//! The node's home folder and configuration file.
//!
//! Home (default `$XDG_CONFIG_HOME/aisuperapp/desktop`, or `--home`): `node.toml` (the
//! settings below), `secrets.json` (which secret store holds the node's secrets, see
//! [`crate::secrets`]; older versions kept `device-token` and `identity.key` as files,
//! moved into the store on first use), and
//! `miniapps/<id>/<version>/` (installed apps).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ai::ProviderKind;

/// `node.toml`. Unknown keys are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The relay's HTTP base URL, e.g. `http://127.0.0.1:8080`.
    pub relay_url: String,
    /// The relay's QUIC address, `host:port`.
    pub quic_addr: String,
    /// The TLS server name to expect from the relay.
    pub server_name: String,
    /// SHA-256 (hex) of the relay's certificate, pinned; `None` verifies with web PKI.
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// Fetch the pin from the relay's `/api/session` before each connection (development
    /// relays renew their short-lived self-signed certificate).
    #[serde(default)]
    pub cert_pin_from_relay: bool,
    /// This device's id at the relay.
    pub device_id: String,
    /// The AI provider.
    #[serde(default)]
    pub ai: AiConfig,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where secrets are kept (`[secrets] backend = "auto"`, see [`crate::secrets`]).
    #[serde(default)]
    pub secrets: crate::secrets::SecretsConfig,
    /// End-to-end encryption (`[e2e] required = true` refuses plain actions).
    #[serde(default)]
    pub e2e: crate::e2e::E2eConfig,
    /// The platform keys whose signatures on marketplace bundles this node accepts
    /// (fetched from the relay at login; several allow key rotation).
    #[serde(default)]
    pub trusted_keys: Vec<crate::installer::market::PlatformKey>,
    /// Self-update from signed release manifests (`[update]`, see [`crate::update`]).
    #[serde(default)]
    pub update: crate::update::UpdateConfig,
}

/// Which model to call, and where.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    /// `openai` (default), `anthropic`, `google`, or `local` (an OpenAI-compatible
    /// server such as Ollama, llama.cpp or vLLM).
    pub provider: ProviderKind,
    /// API base URL. Default: the provider's public API (`local`: Ollama on
    /// `http://127.0.0.1:11434/v1`).
    pub base_url: Option<String>,
    /// Model name. Default: a small current model of the provider.
    pub model: Option<String>,
    /// Environment variable holding the API key. Default `OPENAI_API_KEY`,
    /// `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, none for `local`.
    pub api_key_env: Option<String>,
}

impl AiConfig {
    /// The base URL in effect.
    pub fn base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| self.provider.default_base_url().to_owned())
    }

    /// The model in effect.
    pub fn model(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| self.provider.default_model().to_owned())
    }

    /// The environment variable the key is read from, if any.
    pub fn api_key_env(&self) -> Option<String> {
        self.api_key_env.clone().or_else(|| {
            match self.provider {
                ProviderKind::OpenAi => Some("OPENAI_API_KEY"),
                ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
                ProviderKind::Google => Some("GEMINI_API_KEY"),
                ProviderKind::Local => None,
            }
            .map(str::to_owned)
        })
    }
}

/// Per-action sandbox limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Wall-clock seconds per action. Default 120.
    pub timeout_secs: u64,
    /// Memory per action, MiB. Default 64.
    pub memory_mib: usize,
    /// Output per action, KiB. Default 1024.
    pub output_kib: usize,
    /// Actions running at once on this node. Default: 4 × the number of CPUs (actions
    /// mostly wait for the model). One browser session, and one app, may hold half.
    pub max_running_actions: Option<usize>,
    /// Actions waiting for a slot before new ones get `busy`. Default: 4 ×
    /// `max_running_actions`; one browser session may hold half.
    pub max_queued_actions: Option<usize>,
    /// Threads that run mini-app code, apart from the connection's. Default: the number
    /// of CPUs.
    pub guest_threads: Option<usize>,
    /// Files each app may keep in its `$APP_DATA`, MiB. Default 256.
    pub app_data_mib: u64,
    /// Each app's `storage` store, KiB. Default 1024.
    pub storage_kib: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            timeout_secs: 120,
            memory_mib: 64,
            output_kib: 1024,
            max_running_actions: None,
            max_queued_actions: None,
            guest_threads: None,
            app_data_mib: 256,
            storage_kib: 1024,
        }
    }
}

impl LimitsConfig {
    /// The host API's per-app disk quotas.
    pub fn host_quotas(&self) -> crate::host::Quotas {
        crate::host::Quotas {
            app_data_bytes: self.app_data_mib << 20,
            storage_bytes: self.storage_kib << 10,
            ..crate::host::Quotas::default()
        }
    }

    /// As sandbox limits.
    pub fn to_limits(&self) -> crate::sandbox::Limits {
        crate::sandbox::Limits {
            memory_bytes: self.memory_mib << 20,
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            output_bytes: self.output_kib << 10,
        }
    }

    /// The admission bounds these settings give on a machine with `cpus` processors.
    pub fn admission(&self, cpus: usize) -> crate::scheduler::AdmissionConfig {
        let mut config = match self.max_running_actions {
            Some(n) => crate::scheduler::AdmissionConfig::with_running(n),
            None => crate::scheduler::AdmissionConfig::for_cpus(cpus),
        };
        if let Some(queued) = self.max_queued_actions {
            config.max_queued = queued;
            config.max_queued_per_browser = queued.div_ceil(2);
        }
        config
    }
}

/// The node's home folder.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The given folder, or the platform default.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.unwrap_or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .unwrap_or_else(|| PathBuf::from("."))
                .join("aisuperapp/desktop")
        });
        Home { dir }
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `node.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    /// Installed apps.
    pub fn apps_dir(&self) -> PathBuf {
        self.dir.join("miniapps")
    }

    /// Compiled mini-app code, reused across runs.
    pub fn module_cache_dir(&self) -> PathBuf {
        self.dir.join("cache/modules")
    }

    /// Reads `node.toml`.
    pub fn load_config(&self) -> Result<NodeConfig, String> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}; run `desktop-node login` first", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes `node.toml`.
    pub fn save_config(&self, config: &NodeConfig) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let text = toml::to_string_pretty(config).map_err(std::io::Error::other)?;
        std::fs::write(self.config_path(), text)
    }

    /// Reads a secret file.
    pub fn read_secret(&self, name: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(name))
    }

    /// Writes a secret file readable only by this user.
    pub fn write_secret(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(name);
        #[cfg(unix)]
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(bytes)
        }
        #[cfg(not(unix))]
        std::fs::write(path, bytes)
    }
}
