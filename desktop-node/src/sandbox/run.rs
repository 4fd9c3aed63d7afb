//! One action: its context and limits, why it fails, and running it in a fresh instance
//! on the guest threads.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aisa_abi::imports::{EXPORT_ALLOC, EXPORT_MEMORY, EXPORT_RUN};
use tokio::sync::mpsc;
use wasmtime::{InstancePre, Store, StoreLimitsBuilder, UpdateDeadline};

use super::{HostState, Sandbox};
use crate::ai::AiProvider;
use crate::host::CallContext;
use crate::permissions::{Grants, UserDirs};

/// Per-action limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time for the whole action, model time included.
    pub timeout: Duration,
    /// Total output bytes an action may emit.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(120),
            output_bytes: 1 << 20,
        }
    }
}

/// Why an action did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The module could not be compiled or imports something outside the host API.
    #[error("the mini-app cannot be loaded: {0}")]
    Load(String),
    /// The guest trapped, broke a limit, or reported a failure.
    #[error("the mini-app failed: {0}")]
    Failed(String),
    /// The wall-clock deadline passed (the limit it had).
    #[error("the mini-app ran out of time after {} and was stopped", seconds(*.0))]
    Timeout(Duration),
    /// The AI provider failed.
    #[error(transparent)]
    Ai(#[from] crate::ai::AiError),
}

/// A duration for people: `10 s`, `1.5 s`, `250 ms`.
pub fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Everything about one action besides its input: which app runs, what the person
/// granted it, where its data lives, its limits and its model.
#[derive(Clone)]
pub struct ActionContext {
    /// The app's id (`[a-z0-9-]`, 1–64, not starting with `-`); it names the app's data
    /// folder.
    pub app_id: String,
    /// The app's version, as `env` reports it.
    pub app_version: String,
    /// What the person approved. `ai_generate` needs `ai`; files, hosts and the clipboard
    /// need their grants; `$APP_DATA` is always available.
    pub grants: Arc<Grants>,
    /// The node's home folder; the app's data is in `<node_home>/data/<app_id>/`
    /// (`storage.json`, and `files/`, which is `$APP_DATA`).
    pub node_home: PathBuf,
    /// How `$HOME`, `$DOCUMENTS`, `$DOWNLOADS` and `$DESKTOP` resolve.
    pub user_dirs: Arc<UserDirs>,
    /// Memory, time and output limits.
    pub limits: Limits,
    /// The model behind `ai_generate`.
    pub ai: Arc<dyn AiProvider>,
    /// When the action must be over: set when the request was accepted, so time spent
    /// waiting for a free slot counts. `None`: `limits.timeout` from when it starts.
    pub deadline: Option<Instant>,
}

impl ActionContext {
    /// An action of `app_id` at `app_version` with no grants (only its own `$APP_DATA`),
    /// default limits, and the person's folders as the environment names them.
    pub fn new(
        app_id: impl Into<String>,
        app_version: impl Into<String>,
        node_home: impl Into<PathBuf>,
        ai: Arc<dyn AiProvider>,
    ) -> Self {
        ActionContext {
            app_id: app_id.into(),
            app_version: app_version.into(),
            grants: Arc::new(Grants::default()),
            node_home: node_home.into(),
            user_dirs: user_dirs_from_env(),
            limits: Limits::default(),
            ai,
            deadline: None,
        }
    }

    /// The same context with a deadline fixed in advance.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The same context with `grants`.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = Arc::new(grants);
        self
    }

    /// The same context with `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// `<node_home>/data/<app_id>`: the app's store and its `files` folder.
    pub fn app_dir(&self) -> PathBuf {
        app_dir(&self.node_home, &self.app_id)
    }

    /// `$APP_DATA`: `<node_home>/data/<app_id>/files`.
    pub fn app_data_dir(&self) -> PathBuf {
        self.app_dir().join("files")
    }
}

/// `<node_home>/data/<app_id>`.
pub fn app_dir(node_home: &std::path::Path, app_id: &str) -> PathBuf {
    node_home.join("data").join(app_id)
}

/// [`UserDirs::from_env`], read once per process.
pub fn user_dirs_from_env() -> Arc<UserDirs> {
    static DIRS: OnceLock<Arc<UserDirs>> = OnceLock::new();
    DIRS.get_or_init(|| Arc::new(UserDirs::from_env())).clone()
}

/// A compiled, linked mini-app, ready to instantiate per action.
#[derive(Clone)]
pub struct LoadedModule {
    pub(super) pre: InstancePre<HostState>,
    /// SHA-256 of the module's wasm.
    pub(super) sha256: [u8; 32],
}

impl LoadedModule {
    /// SHA-256 of the wasm it was loaded from (what artifacts made by running it, such
    /// as a JS app's bytecode, are keyed by).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

impl Sandbox {
    /// Runs one action of the app `ctx` describes in a fresh instance, with `ctx`'s
    /// grants and limits, on the guest threads (never on the caller's). Output chunks go
    /// to `output` as they are emitted; a full channel makes the guest wait
    /// (backpressure). Dropping the returned future stops the guest within an epoch tick.
    pub async fn run(
        &self,
        module: &LoadedModule,
        ctx: &ActionContext,
        input_json: &str,
        output: mpsc::Sender<String>,
    ) -> Result<(), ActionError> {
        if let Err(err) = aisa_miniapp::AppId::parse(&ctx.app_id) {
            return Err(ActionError::Load(err.to_string()));
        }
        let limit = ctx.limits.timeout;
        let deadline = ctx.deadline.unwrap_or_else(|| Instant::now() + limit);
        let task = self.pool.spawn({
            let (sandbox, module, ctx) = (self.clone(), module.clone(), ctx.clone());
            let input = input_json.to_owned();
            async move {
                sandbox
                    .run_here(&module, &ctx, &input, output, deadline)
                    .await
            }
        });
        // The guest's own deadline check stops a computing guest; this one stops a guest
        // waiting in a host call (a slow model) or for a pool slot.
        match tokio::time::timeout_at(deadline.into(), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(ActionError::Failed(format!(
                "the sandbox stopped unexpectedly: {join}"
            ))),
            Err(_) => Err(ActionError::Timeout(limit)),
        }
    }

    /// Runs one action to its end from synchronous code and returns its output, joined:
    /// for the node's own short calls into a guest (compiling a JS app). It blocks the
    /// calling thread, so it must not be called on the guest threads or from async code.
    pub fn run_to_end(
        &self,
        module: &LoadedModule,
        ctx: &ActionContext,
        input_json: &str,
    ) -> Result<String, ActionError> {
        let deadline = ctx
            .deadline
            .unwrap_or_else(|| Instant::now() + ctx.limits.timeout);
        let (done, result) = std::sync::mpsc::channel();
        let task = self.pool.spawn({
            let (sandbox, module, ctx) = (self.clone(), module.clone(), ctx.clone());
            let input = input_json.to_owned();
            async move {
                let (tx, mut rx) = mpsc::channel(16);
                let run = sandbox.run_here(&module, &ctx, &input, tx, deadline);
                let collect = async {
                    let mut text = String::new();
                    while let Some(chunk) = rx.recv().await {
                        text.push_str(&chunk);
                    }
                    text
                };
                let (run, text) = tokio::join!(run, collect);
                let _ = done.send(run.map(|()| text));
            }
        });
        let result = result.recv().unwrap_or_else(|_| {
            Err(ActionError::Failed(
                "the sandbox stopped unexpectedly".into(),
            ))
        });
        drop(task);
        result
    }

    /// A store for one action of `ctx`: its limits, its host state, and an epoch
    /// callback that stops it at `deadline` and otherwise yields at every tick.
    pub(super) fn new_store(
        &self,
        ctx: &ActionContext,
        output: mpsc::Sender<String>,
        deadline: Instant,
    ) -> Store<HostState> {
        let limits = ctx.limits;
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes.min(self.config.max_memory_bytes))
                .instances(1)
                .tables(4)
                .memories(1)
                .trap_on_grow_failure(true)
                .build(),
            output,
            output_left: limits.output_bytes,
            ai: ctx.ai.clone(),
            ai_streams: Vec::new(),
            ai_pending: Vec::new(),
            failure: None,
            call: CallContext {
                app_id: ctx.app_id.clone(),
                app_version: ctx.app_version.clone(),
                grants: ctx.grants.clone(),
                dirs: ctx.user_dirs.clone(),
                app_dir: ctx.app_dir(),
                shared: self.host.clone(),
            },
            answer: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // At every epoch tick a running guest checks its deadline and otherwise yields to
        // the guest threads' executor, so guests share those threads fairly and a
        // cancelled one stops within a tick (start functions included).
        store.set_epoch_deadline(1);
        let limit = limits.timeout;
        store.epoch_deadline_callback(move |mut store| {
            if Instant::now() >= deadline {
                store
                    .data_mut()
                    .failure
                    .get_or_insert(ActionError::Timeout(limit));
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// [`Sandbox::run`]'s body, on the guest threads.
    async fn run_here(
        &self,
        module: &LoadedModule,
        ctx: &ActionContext,
        input_json: &str,
        output: mpsc::Sender<String>,
        deadline: Instant,
    ) -> Result<(), ActionError> {
        let _running = self.ticker.guest_running();
        let mut store = self.new_store(ctx, output, deadline);
        // Wait for a pool slot (counted in the action's time) rather than fail.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ActionError::Failed("the sandbox is shutting down".into()))?;
        let instance = module
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| trap(&mut store, e))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, EXPORT_ALLOC)
            .map_err(|e| ActionError::Load(format!("missing export aisapp_alloc: {e}")))?;
        let entry = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, EXPORT_RUN)
            .map_err(|e| ActionError::Load(format!("missing export aisapp_run: {e}")))?;
        let memory = instance
            .get_memory(&mut store, EXPORT_MEMORY)
            .ok_or_else(|| ActionError::Load("missing export memory".into()))?;
        let input = input_json.as_bytes();
        let len = i32::try_from(input.len())
            .map_err(|_| ActionError::Failed("input too large".into()))?;
        let ptr = alloc
            .call_async(&mut store, len)
            .await
            .map_err(|e| trap(&mut store, e))?;
        memory
            .write(&mut store, ptr as u32 as usize, input)
            .map_err(|_| {
                ActionError::Failed("aisapp_alloc returned memory out of bounds".into())
            })?;
        let status = entry
            .call_async(&mut store, (ptr, len))
            .await
            .map_err(|e| trap(&mut store, e))?;
        if status != 0 {
            return Err(store.data_mut().failure.take().unwrap_or_else(|| {
                ActionError::Failed(format!("aisapp_run returned status {status}"))
            }));
        }
        Ok(())
    }
}

/// The error for a trap: a host-side failure recorded during the call wins (it says
/// what really happened), then deadline and limit traps, then the trap itself.
pub(super) fn trap(store: &mut Store<HostState>, err: wasmtime::Error) -> ActionError {
    if let Some(failure) = store.data_mut().failure.take() {
        return failure;
    }
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return ActionError::Failed("the mini-app was interrupted".into());
        }
        return ActionError::Failed(format!("trap: {trap}"));
    }
    ActionError::Failed(format!("{err:#}"))
}
