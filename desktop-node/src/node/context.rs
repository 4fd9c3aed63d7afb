//! [`NodeContext`]: what every handler of the node shares (identity, sandbox, apps, AI
//! provider, limits, installer, end-to-end state, admission, run history) and the
//! DEVICE_STATUS it reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aisa_tunnel::message::{AppStatus, UnloadableApp};
use aisa_tunnel::{Body, Envelope};
use tokio::sync::watch;

use crate::ai::{AiModels, AiProvider};
use crate::apps::App;
use crate::installer::Installer;
use crate::sandbox::{Limits, LoadedModule, Sandbox};
use crate::scheduler::{Admission, AdmissionConfig};

/// Everything the node's handlers share.
pub struct NodeContext {
    /// This device's id.
    pub device_id: String,
    /// The device token.
    pub device_token: String,
    /// The X25519 identity public key.
    pub identity_public: [u8; 32],
    /// The node's software version.
    pub node_version: String,
    /// The wasm sandbox.
    pub sandbox: Sandbox,
    /// Installed apps by id; replaced whole when something is installed or changed.
    apps: std::sync::RwLock<HashMap<String, Arc<App>>>,
    /// The AI provider (the default model's adapter).
    pub ai: Arc<dyn AiProvider>,
    /// The models a run may choose, as DEVICE_STATUS reports them (`None`: not reported,
    /// and a run may not name a model).
    ai_models: Option<AiModels>,
    /// Installed apps that did not load, with why (DEVICE_STATUS `unloadable`).
    unloadable: std::sync::RwLock<Vec<UnloadableApp>>,
    /// Per-action limits.
    pub limits: Limits,
    /// The node's home folder; apps keep their data in `data/<app-id>/` under it.
    pub home: std::path::PathBuf,
    pub(super) online: watch::Sender<bool>,
    installer: Option<Installer>,
    js_runtime: Option<LoadedModule>,
    /// The JS runtime to load when a JavaScript app first needs it (`desktop-node run`).
    lazy_js_runtime: Option<crate::js_apps::LazyRuntime>,
    /// Apps given at construction (tests, embedders); kept when apps are reloaded.
    builtin: HashMap<String, Arc<App>>,
    /// End-to-end encryption (paired browsers, the identity secret), if enabled.
    e2e: Option<Arc<crate::e2e::E2eState>>,
    /// How many actions run and wait at once, and who goes next.
    admission: Admission,
    /// The round trip of the latest PING on the control stream.
    pub(super) heartbeat_rtt: watch::Sender<Option<Duration>>,
    /// Which transport carries the current link (`None` while offline).
    pub(super) transport: watch::Sender<Option<super::Transport>>,
    /// The run history (`None`: not kept).
    history: Option<Arc<crate::history::History>>,
    /// Browsing and uploads for form file fields (`[files]`).
    files: crate::files::FilesConfig,
}

impl NodeContext {
    /// A context; the node starts offline.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device_id: String,
        device_token: String,
        identity_public: [u8; 32],
        sandbox: Sandbox,
        apps: HashMap<String, Arc<App>>,
        ai: Arc<dyn AiProvider>,
        limits: Limits,
        home: std::path::PathBuf,
    ) -> Self {
        NodeContext {
            device_id,
            device_token,
            identity_public,
            node_version: env!("CARGO_PKG_VERSION").to_owned(),
            sandbox,
            builtin: apps.clone(),
            apps: std::sync::RwLock::new(apps),
            ai,
            ai_models: None,
            unloadable: std::sync::RwLock::new(Vec::new()),
            limits,
            home,
            online: watch::channel(false).0,
            installer: None,
            js_runtime: None,
            lazy_js_runtime: None,
            e2e: None,
            admission: Admission::new(AdmissionConfig::default()),
            heartbeat_rtt: watch::channel(None).0,
            transport: watch::channel(None).0,
            history: None,
            files: crate::files::FilesConfig::default(),
        }
    }

    /// Serves file listings and uploads with `config` (`[files]`; default: 8 MiB uploads).
    pub fn with_files(mut self, config: crate::files::FilesConfig) -> Self {
        self.files = config;
        self
    }

    /// The `[files]` settings.
    pub fn files(&self) -> &crate::files::FilesConfig {
        &self.files
    }

    /// Offers `models` to runs (EXECUTE_ACTION's `model`) and reports them in
    /// DEVICE_STATUS; their default becomes [`NodeContext::ai`].
    pub fn with_ai_models(mut self, models: AiModels) -> Self {
        if let Some(default) = models.default_adapter() {
            self.ai = default;
        }
        self.ai_models = Some(models);
        self
    }

    /// The adapter a run uses: the default for `None`, else the named model if this node
    /// offers it, or a sentence saying it does not.
    pub fn ai_for(&self, model: Option<&str>) -> Result<Arc<dyn AiProvider>, String> {
        match (model, &self.ai_models) {
            (None, _) => Ok(self.ai.clone()),
            (Some(model), Some(models)) => models.choose(model),
            (Some(_), None) => {
                Err("This desktop does not offer a choice of model; run without one.".into())
            }
        }
    }

    /// Records every run in `history` and answers the history requests from it (`None`:
    /// no history is kept, and those requests are answered `unsupported`).
    pub fn with_history(mut self, history: Option<crate::history::History>) -> Self {
        self.history = history.map(Arc::new);
        self
    }

    /// The run history, if this node keeps one.
    pub fn history(&self) -> Option<&Arc<crate::history::History>> {
        self.history.as_ref()
    }

    /// Watches the round trip of each PING to the relay (`None` until the first PONG):
    /// how promptly the connection is served.
    pub fn heartbeat_rtt(&self) -> watch::Receiver<Option<Duration>> {
        self.heartbeat_rtt.subscribe()
    }

    /// Watches which transport the node's current link to the relay is on (`None` while
    /// offline): QUIC, or TCP where UDP is blocked.
    pub fn transport(&self) -> watch::Receiver<Option<super::Transport>> {
        self.transport.subscribe()
    }

    /// Runs and queues actions within `config` (default: [`AdmissionConfig::default`]).
    pub fn with_admission(mut self, config: AdmissionConfig) -> Self {
        self.admission = Admission::new(config);
        self
    }

    /// The node's action admission.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Serves end-to-end encrypted streams (and, with `required`, only those).
    pub fn with_e2e(mut self, e2e: crate::e2e::E2eState) -> Self {
        self.e2e = Some(Arc::new(e2e));
        self
    }

    /// The end-to-end state, if this node serves encrypted streams.
    pub fn e2e(&self) -> Option<&Arc<crate::e2e::E2eState>> {
        self.e2e.as_ref()
    }

    /// Lets browsers request installs and removals (INSTALL_APP, UNINSTALL_APP), and
    /// reloads apps from the installer's folder; `js_runtime` runs JavaScript apps.
    pub fn with_installer(
        mut self,
        installer: Installer,
        js_runtime: Option<LoadedModule>,
    ) -> Self {
        self.installer = Some(installer);
        self.js_runtime = js_runtime;
        self
    }

    /// Loads the JS runtime only when an installed JavaScript app needs it (instead of a
    /// runtime loaded up front, [`NodeContext::with_installer`]).
    pub fn with_lazy_js_runtime(mut self, runtime: crate::js_apps::LazyRuntime) -> Self {
        self.lazy_js_runtime = Some(runtime);
        self
    }

    /// The mini-app manager, if this node installs apps.
    pub fn installer(&self) -> Option<&Installer> {
        self.installer.as_ref()
    }

    /// Loads the installed apps again from disk (after an install, or a change made by
    /// the CLI) and makes them the ones actions use. Apps whose active version did not
    /// change keep their compiled code. Compiling is CPU work: it runs off the async
    /// threads.
    pub async fn reload_apps(self: &Arc<Self>) {
        let ctx = self.clone();
        let reload = tokio::task::spawn_blocking(move || ctx.reload_apps_blocking());
        if let Err(err) = reload.await {
            tracing::error!(%err, "reloading apps failed");
        }
    }

    fn reload_apps_blocking(&self) {
        let Some(installer) = &self.installer else {
            return;
        };
        let previous = self.apps.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (apps, problems) = crate::apps::load_all_reusing(
            installer.apps.root(),
            &self.sandbox,
            self.js_runtime.as_ref().or_else(|| {
                self.lazy_js_runtime
                    .as_ref()
                    .and_then(|lazy| lazy.for_apps(installer.apps.root(), &self.sandbox))
            }),
            &previous,
        );
        let mut unloadable: Vec<UnloadableApp> = problems
            .iter()
            .map(|problem| {
                tracing::warn!(%problem, "app not loaded");
                UnloadableApp {
                    id: problem.id.clone(),
                    version: problem.version.clone(),
                    reason: problem.error.for_person(),
                }
            })
            .collect();
        unloadable.sort_by(|a, b| a.id.cmp(&b.id));
        *self.unloadable.write().unwrap_or_else(|e| e.into_inner()) = unloadable;
        let mut all = self.builtin.clone();
        all.extend(apps);
        tracing::info!(apps = ?all.keys().collect::<Vec<_>>(), "apps loaded");
        self.set_apps(all);
    }

    /// Reloads the apps whenever the apps folder's generation marker changes (the CLI
    /// changed something), until `stop` turns true.
    pub async fn watch_apps(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(installer) = &self.installer else {
            return;
        };
        let mut seen = installer.apps.generation();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let now = installer.apps.generation();
            if now != seen {
                seen = now;
                self.reload_apps().await;
            }
        }
    }

    /// Watches whether the node is connected to the relay.
    pub fn online(&self) -> watch::Receiver<bool> {
        self.online.subscribe()
    }

    /// The installed app `id`, if any.
    pub fn app(&self, id: &str) -> Option<Arc<App>> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Replaces the installed apps (after an install or a change on disk).
    pub fn set_apps(&self, apps: HashMap<String, Arc<App>>) {
        *self.apps.write().unwrap_or_else(|e| e.into_inner()) = apps;
    }

    /// A DEVICE_STATUS answer: the apps that run, the AI provider and its models (names
    /// only), and the installed apps that cannot run, with why.
    pub fn status(&self, request_id: u64) -> Envelope {
        let mut apps: Vec<AppStatus> = self
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|a| AppStatus {
                id: a.manifest.id.clone(),
                version: a.manifest.version.clone(),
                enabled: a.manifest.enabled,
            })
            .collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        Envelope {
            request_id,
            device_id: self.device_id.clone(),
            body: Body::DeviceStatus {
                online: true,
                node_version: self.node_version.clone(),
                apps,
                providers: self.ai_models.iter().map(AiModels::status).collect(),
                unloadable: self
                    .unloadable
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            },
        }
    }
}
