//! The node's folders and configuration file.
//!
//! Where things are ([`Home`]), by the platform's conventions (the `directories` crate):
//!
//! | | Linux (XDG) | macOS | Windows |
//! | --- | --- | --- | --- |
//! | `node.toml` | `$XDG_CONFIG_HOME/aisuperapp/desktop/` | `~/Library/Application Support/app.aisuperapp.desktop/` | `%APPDATA%\aisuperapp\desktop\config\` |
//! | the node's own folder: secrets index and vault, paired browsers, `miniapps/`, `data/`, `runtimes/` | `$XDG_DATA_HOME/aisuperapp/desktop/` | same as above | `%LOCALAPPDATA%\aisuperapp\desktop\data\` |
//! | compiled-module cache | `$XDG_CACHE_HOME/aisuperapp/desktop/` | `~/Library/Caches/app.aisuperapp.desktop/` | `%LOCALAPPDATA%\aisuperapp\desktop\cache\` |
//! | logs (`run`) | `$XDG_STATE_HOME/aisuperapp/desktop/logs/` | `~/Library/Logs/app.aisuperapp.desktop/` | `%LOCALAPPDATA%\aisuperapp\desktop\logs\` |
//!
//! `--home DIR` / `AISA_NODE_HOME` puts everything in one folder, as before: `DIR/node.toml`,
//! `DIR/miniapps/`, `DIR/cache/`, `DIR/logs/` (tests and portable installs use it). A
//! Linux install from before these folders (everything under
//! `$XDG_CONFIG_HOME/aisuperapp/desktop/`) keeps working where it is: when that folder
//! holds the node's own files (`secrets.json`, `miniapps/`) and the new data folder
//! does not, it stays the one folder for everything ([`Home::resolve`]); nothing is
//! moved behind the user's back (the keychain entries are bound to that folder's
//! `secrets.json`).
//!
//! The node's own folder is the one no mini-app grant reaches ([`crate::permissions`]);
//! the config folder holds only `node.toml` (no secret).

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
    /// The desktop face, a page on loopback (`[face]`, docs/desktop.md).
    #[serde(default)]
    pub face: FaceConfig,
    /// Native notifications when an install waits for approval (`[notify]`,
    /// docs/desktop.md).
    #[serde(default)]
    pub notify: NotifyConfig,
    /// The run history kept for the web app (`[history]`, see [`crate::history`]).
    #[serde(default)]
    pub history: crate::history::HistoryConfig,
    /// Form file fields: browsing granted folders, uploads (`[files]`, see [`crate::files`]).
    #[serde(default)]
    pub files: crate::files::FilesConfig,
    /// Whether crash reports go to the relay (`[crash_reports] upload = true`; off by
    /// default, see [`crate::crash`]).
    #[serde(default)]
    pub crash_reports: crate::crash::CrashReportsConfig,
}

/// `[face]` in `node.toml`: the desktop face, a page the running node serves on
/// 127.0.0.1 for the person at the desktop (status, install approvals, keys, pairing,
/// logs). `desktop-node run --face` turns it on too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FaceConfig {
    /// Serve the face beside the node at `run`. Default off.
    pub enabled: bool,
    /// Open it in the default browser when the node starts. Default off.
    pub open_at_start: bool,
    /// The loopback port; 0 (the default) takes a free one at each start.
    pub port: u16,
}

/// `[notify]` in `node.toml`: a native desktop notification when an install request
/// from the browser waits for the person's approval (Linux: the desktop's notification
/// service over D-Bus; macOS: Notification Center; Windows: a toast). Where there is
/// none (a server without a D-Bus session) the node says so once in its log and
/// carries on; a notification never changes what happens to the request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Show notifications. Default on.
    pub enabled: bool,
    /// Show a tray icon (Linux: a StatusNotifierItem; Windows: a notification-area
    /// icon) with the node's state, **Open**
    /// (the desktop face) and **Quit**. Default on; a desktop without a tray host is
    /// logged once.
    pub tray: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            tray: true,
        }
    }
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
    /// More models of the same provider a run may choose in the web app, besides
    /// `model` (the default), e.g. `models = ["gpt-4o"]`. Default none: the web app
    /// offers no choice. DEVICE_STATUS lists them (names only).
    pub models: Vec<String>,
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

/// The node's folders: configuration, its own data, cache, logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    config: PathBuf,
    data: PathBuf,
    cache: PathBuf,
    logs: PathBuf,
}

/// The folders the platform's conventions give, before [`Home::resolve`] looks for an
/// older install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformDirs {
    /// Where `node.toml` goes.
    pub config: PathBuf,
    /// The node's own folder.
    pub data: PathBuf,
    /// Caches.
    pub cache: PathBuf,
    /// Logs.
    pub logs: PathBuf,
}

impl PlatformDirs {
    /// This user's folders on this OS; `None` when the OS names no home folder.
    pub fn detect() -> Option<PlatformDirs> {
        #[cfg(target_os = "linux")]
        let project = directories::ProjectDirs::from_path(PathBuf::from("aisuperapp/desktop"))?;
        #[cfg(not(target_os = "linux"))]
        let project = directories::ProjectDirs::from("app", "aisuperapp", "desktop")?;
        let logs = if cfg!(target_os = "macos") {
            directories::BaseDirs::new()?
                .home_dir()
                .join("Library/Logs")
                .join(project.project_path())
        } else if cfg!(windows) {
            project
                .data_local_dir()
                .parent()
                .map_or_else(|| project.data_local_dir().join("logs"), |p| p.join("logs"))
        } else {
            project
                .state_dir()
                .map_or_else(|| project.data_local_dir().join("logs"), |s| s.join("logs"))
        };
        Some(PlatformDirs {
            config: project.config_dir().to_owned(),
            data: project.data_local_dir().to_owned(),
            cache: project.cache_dir().to_owned(),
            logs,
        })
    }
}

impl Home {
    /// The given folder for everything (`--home`, `AISA_NODE_HOME`), or the platform's
    /// folders ([`PlatformDirs::detect`], then [`Home::resolve`]); the current folder when
    /// the OS names no home folder.
    pub fn new(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(dir) => Home::single(dir),
            None => match PlatformDirs::detect() {
                Some(dirs) => Home::resolve(dirs),
                None => Home::single(PathBuf::from("aisuperapp-desktop")),
            },
        }
    }

    /// Everything in one folder: `node.toml` and the node's files in it, `cache/` and
    /// `logs/` below it.
    pub fn single(dir: PathBuf) -> Self {
        Home {
            config: dir.clone(),
            cache: dir.join("cache"),
            logs: dir.join("logs"),
            data: dir,
        }
    }

    /// The platform's folders, unless an install from before them is in the config
    /// folder (it holds the node's own files, `secrets.json` or `miniapps/`, and the data
    /// folder holds no `secrets.json`): then that folder stays the one for everything.
    pub fn resolve(dirs: PlatformDirs) -> Self {
        let legacy = dirs.config != dirs.data
            && (dirs.config.join("secrets.json").exists() || dirs.config.join("miniapps").is_dir())
            && !dirs.data.join("secrets.json").exists();
        if legacy {
            tracing::info!(home = %dirs.config.display(), "an install from before the platform folders: everything stays in its one folder");
            return Home::single(dirs.config);
        }
        Home {
            config: dirs.config,
            data: dirs.data,
            cache: dirs.cache,
            logs: dirs.logs,
        }
    }

    /// The node's own folder: the secrets index and vault, paired browsers, pending
    /// approvals, installed apps (`miniapps/`), their data (`data/`), `runtimes/`. No
    /// mini-app grant reaches it.
    pub fn dir(&self) -> &Path {
        &self.data
    }

    /// The folder of `node.toml`.
    pub fn config_dir(&self) -> &Path {
        &self.config
    }

    /// The cache folder.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Where `run` writes its daily log files.
    pub fn log_dir(&self) -> &Path {
        &self.logs
    }

    /// `node.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.config.join("node.toml")
    }

    /// Installed apps.
    pub fn apps_dir(&self) -> PathBuf {
        self.data.join("miniapps")
    }

    /// Compiled mini-app code, reused across runs.
    pub fn module_cache_dir(&self) -> PathBuf {
        self.cache.join("modules")
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
        std::fs::create_dir_all(&self.config)?;
        let text = toml::to_string_pretty(config).map_err(std::io::Error::other)?;
        std::fs::write(self.config_path(), text)
    }

    /// Reads a secret file.
    pub fn read_secret(&self, name: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.data.join(name))
    }

    /// Writes a secret file readable only by this user.
    pub fn write_secret(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.data)?;
        let path = self.data.join(name);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dirs(root: &Path) -> PlatformDirs {
        PlatformDirs {
            config: root.join("config/aisuperapp/desktop"),
            data: root.join("share/aisuperapp/desktop"),
            cache: root.join("cache/aisuperapp/desktop"),
            logs: root.join("state/aisuperapp/desktop/logs"),
        }
    }

    #[test]
    fn a_fresh_install_uses_the_platform_folders() {
        let root = tempfile::tempdir().unwrap();
        let home = Home::resolve(dirs(root.path()));
        assert_eq!(
            home.config_path(),
            root.path().join("config/aisuperapp/desktop/node.toml")
        );
        assert_eq!(
            home.apps_dir(),
            root.path().join("share/aisuperapp/desktop/miniapps")
        );
        assert_eq!(
            home.module_cache_dir(),
            root.path().join("cache/aisuperapp/desktop/modules")
        );
        assert_eq!(
            home.log_dir(),
            root.path().join("state/aisuperapp/desktop/logs")
        );
    }

    /// A Linux install from before: node.toml, secrets.json and miniapps/ all in the
    /// config folder. It keeps that one folder, so its secrets and apps are found.
    #[test]
    fn an_older_single_folder_install_keeps_working_where_it_is() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path());
        std::fs::create_dir_all(d.config.join("miniapps")).unwrap();
        std::fs::write(d.config.join("node.toml"), "").unwrap();
        std::fs::write(d.config.join("secrets.json"), "{}").unwrap();
        let home = Home::resolve(d.clone());
        assert_eq!(home, Home::single(d.config.clone()));
        assert_eq!(home.dir(), d.config);
        assert_eq!(home.apps_dir(), d.config.join("miniapps"));
        // Only node.toml there (a login that never stored a secret): the new layout.
        std::fs::remove_dir_all(d.config.join("miniapps")).unwrap();
        std::fs::remove_file(d.config.join("secrets.json")).unwrap();
        assert_eq!(Home::resolve(d.clone()).dir(), d.data);
        // Once the data folder has its own store, an old copy left behind is ignored.
        std::fs::write(d.config.join("secrets.json"), "{}").unwrap();
        std::fs::create_dir_all(&d.data).unwrap();
        std::fs::write(d.data.join("secrets.json"), "{}").unwrap();
        assert_eq!(Home::resolve(d.clone()).dir(), d.data);
    }

    #[test]
    fn one_given_folder_holds_everything_as_before() {
        let home = Home::new(Some(PathBuf::from("/x/home")));
        assert_eq!(home.config_path(), Path::new("/x/home/node.toml"));
        assert_eq!(home.dir(), Path::new("/x/home"));
        assert_eq!(home.module_cache_dir(), Path::new("/x/home/cache/modules"));
        assert_eq!(home.log_dir(), Path::new("/x/home/logs"));
    }

    /// The platform folders on this OS are where the docs say.
    #[test]
    fn the_platform_folders_follow_the_os() {
        let Some(d) = PlatformDirs::detect() else {
            return;
        };
        let tail = if cfg!(target_os = "linux") {
            Path::new("aisuperapp/desktop")
        } else if cfg!(target_os = "macos") {
            Path::new("app.aisuperapp.desktop")
        } else {
            Path::new("aisuperapp\\desktop")
        };
        let text = |p: &Path| p.display().to_string();
        for dir in [&d.config, &d.data, &d.cache] {
            assert!(text(dir).contains(&text(tail)), "{}", dir.display());
        }
        assert_ne!(d.config, d.cache);
        assert!(
            d.logs.ends_with("logs") || cfg!(target_os = "macos"),
            "{}",
            d.logs.display()
        );
        if cfg!(windows) {
            assert!(
                text(&d.config).ends_with("config"),
                "{}",
                d.config.display()
            );
            assert!(text(&d.data).ends_with("data"), "{}", d.data.display());
        }
    }
}
