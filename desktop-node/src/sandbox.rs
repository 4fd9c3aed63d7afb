//! The mini-app sandbox: each action runs in a fresh wasmtime instance with a memory cap,
//! a wall-clock deadline (epoch interruption), an output cap, and no imports but the
//! host API (`aisapp_v1`, documented in `docs/guest-abi.md`).
//!
//! A guest exports `memory`, `aisapp_alloc(len) -> ptr` and `aisapp_run(ptr, len) ->
//! status`; its input is the JSON `{"action": …, "payload": …}`. It streams output with
//! `emit`, asks the model with `ai_generate` / `ai_next` (only with the `ai` grant), logs
//! with `log`, and explains a failure with `fail` before returning a non-zero status.
//! The permissioned host API ([`crate::host`]: `fs`, `http`, `clipboard`, `tool`,
//! `storage`, `env`, and `result` to fetch an answer) is checked against the
//! [`Grants`] in the action's [`ActionContext`].

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};

use crate::guest_pool::GuestPool;

use crate::ai::{AiProvider, GenerateRequest, TextStream};
use crate::host::{self, CallContext, Capability, HostShared};
use crate::permissions::{Grants, UserDirs};

/// The host API namespace this node provides.
pub const ABI_NAMESPACE: &str = "aisapp_v1";

/// How often the epoch advances while a guest runs: a computing guest checks its deadline
/// and yields its thread at every tick, so this is the longest a guest holds a guest
/// thread while others wait. With no guest running the ticker sleeps.
const EPOCH_TICK: Duration = Duration::from_millis(2);

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

/// How the sandbox engine is set up, once per node.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Actions that may run at once (pooling allocator slots); more wait their turn.
    /// Default 128.
    pub max_concurrent_actions: u32,
    /// The largest memory any action may have; per-action limits are clamped to it.
    /// Default 256 MiB.
    pub max_memory_bytes: usize,
    /// Where compiled modules are kept, keyed by a hash of the module and the engine;
    /// `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// The key that authenticates cache entries (HMAC-SHA-256 over the compiled code):
    /// an entry whose tag does not verify is never loaded. The node derives it from its
    /// identity secret, so a file planted in the cache folder cannot become code. `None`
    /// still checks a SHA-256 of the content (damage, not tampering).
    pub cache_key: Option<[u8; 32]>,
    /// Threads that run guest code, apart from the node's connection threads. Default:
    /// the number of CPUs.
    pub guest_threads: usize,
    /// Per-app disk quotas of the host API (`storage`, `$APP_DATA`).
    pub host_quotas: crate::host::Quotas,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            max_concurrent_actions: 128,
            max_memory_bytes: 256 << 20,
            cache_dir: None,
            cache_key: None,
            guest_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            host_quotas: crate::host::Quotas::default(),
        }
    }
}

/// Compiles modules and runs actions. One per node; cheap to share.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    config: Arc<SandboxConfig>,
    /// One permit per pool slot: an action waits for one before it instantiates.
    slots: Arc<tokio::sync::Semaphore>,
    /// The host API's shared HTTP client and storage locks.
    host: Arc<HostShared>,
    /// The threads guest code runs on.
    pool: Arc<GuestPool>,
    /// Advances the epoch while guests run.
    ticker: Arc<EpochTicker>,
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] while at least one
/// guest runs, and sleeps otherwise (an idle node does not wake 500 times a second). It
/// ends when the engine is dropped.
struct EpochTicker {
    running: std::sync::atomic::AtomicUsize,
    thread: std::thread::Thread,
}

impl EpochTicker {
    fn start(engine: &Engine) -> std::io::Result<Arc<EpochTicker>> {
        let weak = engine.weak();
        let (tx, rx) = std::sync::mpsc::channel::<Arc<EpochTicker>>();
        let handle = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                let Ok(ticker) = rx.recv() else { return };
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    if ticker.running.load(std::sync::atomic::Ordering::Acquire) > 0 {
                        std::thread::sleep(EPOCH_TICK);
                    } else {
                        // Woken by the next guest (or, once a second, to notice the
                        // engine is gone).
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                }
            })?;
        let ticker = Arc::new(EpochTicker {
            running: std::sync::atomic::AtomicUsize::new(0),
            thread: handle.thread().clone(),
        });
        // The thread only starts ticking once it has its handle.
        let _ = tx.send(ticker.clone());
        Ok(ticker)
    }

    /// Counts a running guest until the guard is dropped; the first one wakes the ticker.
    fn guest_running(self: &Arc<Self>) -> RunningGuest {
        if self
            .running
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            == 0
        {
            self.thread.unpark();
        }
        RunningGuest(self.clone())
    }
}

/// A guest counted by the [`EpochTicker`].
struct RunningGuest(Arc<EpochTicker>);

impl Drop for RunningGuest {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
    pre: InstancePre<HostState>,
}

/// What the host keeps per action.
pub struct HostState {
    limits: StoreLimits,
    output: mpsc::Sender<String>,
    output_left: usize,
    ai: Arc<dyn AiProvider>,
    ai_streams: Vec<Option<TextStream>>,
    /// Text received from the model but not yet handed to the guest.
    ai_pending: Vec<u8>,
    /// The first failure seen: the guest's own message or a host-side error.
    failure: Option<ActionError>,
    /// What host API calls know about this action.
    call: CallContext,
    /// The answer of the last host API call, until the next call.
    answer: Option<Vec<u8>>,
}

impl Sandbox {
    /// A sandbox with the default configuration.
    pub fn new() -> Result<Self, ActionError> {
        Self::with_config(SandboxConfig::default())
    }

    /// A sandbox engine with epoch interruption and the pooling allocator (instances are
    /// taken from preallocated slots, so starting an action allocates next to nothing),
    /// and a thread that advances the epoch.
    pub fn with_config(sandbox: SandboxConfig) -> Result<Self, ActionError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(sandbox.max_concurrent_actions)
            .total_memories(sandbox.max_concurrent_actions)
            .total_tables(sandbox.max_concurrent_actions)
            .total_stacks(sandbox.max_concurrent_actions)
            .max_memory_size(sandbox.max_memory_bytes);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(512 * 1024)
            // Reserve only what a memory may grow to (explicit bounds checks instead of
            // 4 GiB guard regions), so the pool's address space stays modest.
            .memory_reservation(sandbox.max_memory_bytes as u64)
            .memory_guard_size(64 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| ActionError::Load(e.to_string()))?;
        let ticker = EpochTicker::start(&engine).map_err(|e| ActionError::Load(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        define_host_api(&mut linker).map_err(|e| ActionError::Load(e.to_string()))?;
        let host = HostShared::with_quotas(sandbox.host_quotas).map_err(ActionError::Load)?;
        let pool = GuestPool::new(sandbox.guest_threads)
            .map_err(|e| ActionError::Load(format!("cannot start the guest threads: {e}")))?;
        Ok(Sandbox {
            ticker,
            pool: Arc::new(pool),
            host: Arc::new(host),
            engine,
            linker: Arc::new(linker),
            slots: Arc::new(tokio::sync::Semaphore::new(
                sandbox.max_concurrent_actions as usize,
            )),
            config: Arc::new(sandbox),
        })
    }

    /// Compiles `wasm`, or loads the compiled code from the cache directory.
    fn compile(&self, wasm: &[u8]) -> Result<Module, ActionError> {
        let compile =
            || Module::new(&self.engine, wasm).map_err(|e| ActionError::Load(format!("{e:#}")));
        let Some(dir) = &self.config.cache_dir else {
            return compile();
        };
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(
            &self.engine.precompile_compatibility_hash(),
            &mut engine_hash,
        );
        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(wasm)),
            std::hash::Hasher::finish(&engine_hash)
        );
        let path = dir.join(key);
        if let Ok(entry) = std::fs::read(&path) {
            match self.open_cache_entry(&entry) {
                Some(code) => {
                    // SAFETY: `code` is what this node serialized: its tag was checked
                    // against the node's cache key (or at least its content hash) just
                    // above, and wasmtime checks that it was compiled by a compatible
                    // engine.
                    #[allow(unsafe_code)]
                    let cached = unsafe { Module::deserialize(&self.engine, code) };
                    match cached {
                        Ok(module) => return Ok(module),
                        Err(err) => {
                            tracing::warn!(%err, path = %path.display(), "compiled module cache entry unusable; recompiling")
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "compiled module cache entry fails its integrity check; recompiling")
                }
            }
        }
        let module = compile()?;
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| module.serialize().map_err(std::io::Error::other))
            .and_then(|code| {
                let temp = path.with_extension("tmp");
                std::fs::write(&temp, self.seal_cache_entry(code))?;
                std::fs::rename(&temp, &path)
            });
        if let Err(err) = written {
            tracing::warn!(%err, "could not cache the compiled module");
        }
        Ok(module)
    }

    /// A cache entry: a 32-byte tag (HMAC-SHA-256 under the cache key, or SHA-256 without
    /// one) followed by the compiled code.
    fn seal_cache_entry(&self, code: Vec<u8>) -> Vec<u8> {
        let mut entry = self.cache_tag(&code).to_vec();
        entry.extend_from_slice(&code);
        entry
    }

    /// The compiled code of a cache entry whose tag verifies.
    fn open_cache_entry<'a>(&self, entry: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, code) = entry.split_at_checked(32)?;
        let expected = self.cache_tag(code);
        // Constant-time comparison: the tag is a MAC under a secret key.
        let same = tag
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then_some(code)
    }

    fn cache_tag(&self, code: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        match &self.config.cache_key {
            Some(key) => {
                let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key)
                    .expect("HMAC takes any key length");
                mac.update(code);
                mac.finalize().into_bytes().into()
            }
            None => Sha256::digest(code).into(),
        }
    }

    /// Compiles and links a module. Imports outside the host API are refused here, with
    /// the name of the first one.
    pub fn load(&self, wasm: &[u8]) -> Result<LoadedModule, ActionError> {
        let module = self.compile(wasm)?;
        for import in module.imports() {
            if import.module() != ABI_NAMESPACE || !HOST_FUNCTIONS.contains(&import.name()) {
                return Err(ActionError::Load(format!(
                    "imports {}::{}, which is not part of the host API {ABI_NAMESPACE} (it offers {})",
                    import.module(),
                    import.name(),
                    HOST_FUNCTIONS.join(", ")
                )));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ActionError::Load(format!("{e:#}")))?;
        Ok(LoadedModule { pre })
    }

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
            .get_typed_func::<i32, i32>(&mut store, "aisapp_alloc")
            .map_err(|e| ActionError::Load(format!("missing export aisapp_alloc: {e}")))?;
        let entry = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "aisapp_run")
            .map_err(|e| ActionError::Load(format!("missing export aisapp_run: {e}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
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
fn trap(store: &mut Store<HostState>, err: wasmtime::Error) -> ActionError {
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

/// Every import of `aisapp_v1`; a module importing anything else is refused at load.
pub const HOST_FUNCTIONS: [&str; 12] = [
    "emit",
    "ai_generate",
    "ai_next",
    "log",
    "fail",
    "fs",
    "http",
    "clipboard",
    "tool",
    "storage",
    "env",
    "result",
];

fn guest_bytes(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("guest exports no memory"))?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("guest pointer out of bounds"))
}

fn guest_string(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<String> {
    String::from_utf8(guest_bytes(caller, ptr, len)?)
        .map_err(|_| wasmtime::Error::msg("guest string is not UTF-8"))
}

/// Records a host-side failure and returns the trap that ends the guest.
fn fail_with(caller: &mut Caller<'_, HostState>, err: ActionError) -> wasmtime::Error {
    let message = err.to_string();
    caller.data_mut().failure.get_or_insert(err);
    wasmtime::Error::msg(message)
}

fn define_host_api(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        ABI_NAMESPACE,
        "emit",
        |mut caller: Caller<'_, HostState>, (ptr, len): (i32, i32)| {
            Box::new(async move {
                let text = guest_string(&mut caller, ptr, len)?;
                let state = caller.data_mut();
                if text.len() > state.output_left {
                    return Err(fail_with(
                        &mut caller,
                        ActionError::Failed("output limit exceeded".into()),
                    ));
                }
                state.output_left -= text.len();
                let output = state.output.clone();
                if output.send(text).await.is_err() {
                    return Err(fail_with(
                        &mut caller,
                        ActionError::Failed("output closed: the requester went away".into()),
                    ));
                }
                Ok(())
            })
        },
    )?;
    linker.func_wrap_async(
        ABI_NAMESPACE,
        "ai_generate",
        |mut caller: Caller<'_, HostState>, (ptr, len): (i32, i32)| {
            Box::new(async move {
                if !caller.data().call.grants.ai {
                    return Err(fail_with(
                        &mut caller,
                        ActionError::Failed("permission denied: ai".into()),
                    ));
                }
                let request: GenerateRequest =
                    match serde_json::from_slice(&guest_bytes(&mut caller, ptr, len)?) {
                        Ok(r) => r,
                        Err(e) => {
                            return Err(fail_with(
                                &mut caller,
                                ActionError::Failed(format!("bad ai_generate request: {e}")),
                            ));
                        }
                    };
                let ai = caller.data().ai.clone();
                match ai.generate(request).await {
                    Ok(stream) => {
                        let streams = &mut caller.data_mut().ai_streams;
                        streams.push(Some(stream));
                        Ok((streams.len() - 1) as i32)
                    }
                    Err(e) => Err(fail_with(&mut caller, ActionError::Ai(e))),
                }
            })
        },
    )?;
    linker.func_wrap_async(
        ABI_NAMESPACE,
        "ai_next",
        |mut caller: Caller<'_, HostState>, (handle, buf, cap): (i32, i32, i32)| {
            Box::new(async move {
                let cap = cap.max(0) as usize;
                if caller.data().ai_pending.is_empty() {
                    let Some(Some(stream)) = caller.data_mut().ai_streams.get_mut(handle as usize)
                    else {
                        return Err(fail_with(
                            &mut caller,
                            ActionError::Failed(format!("ai_next: no stream {handle}")),
                        ));
                    };
                    match stream.next().await {
                        None => {
                            caller.data_mut().ai_streams[handle as usize] = None;
                            return Ok(0);
                        }
                        Some(Err(e)) => return Err(fail_with(&mut caller, ActionError::Ai(e))),
                        Some(Ok(text)) => caller.data_mut().ai_pending = text.into_bytes(),
                    }
                }
                let pending = std::mem::take(&mut caller.data_mut().ai_pending);
                let take = utf8_prefix_len(&pending, cap);
                if take == 0 {
                    caller.data_mut().ai_pending = pending;
                    return Err(fail_with(
                        &mut caller,
                        ActionError::Failed("ai_next: buffer too small".into()),
                    ));
                }
                let memory = caller
                    .get_export("memory")
                    .and_then(|e| e.into_memory())
                    .ok_or_else(|| wasmtime::Error::msg("guest exports no memory"))?;
                memory
                    .write(&mut caller, buf as u32 as usize, &pending[..take])
                    .map_err(|_| wasmtime::Error::msg("guest pointer out of bounds"))?;
                caller.data_mut().ai_pending = pending[take..].to_vec();
                Ok(take as i32)
            })
        },
    )?;
    linker.func_wrap(
        ABI_NAMESPACE,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            let text = guest_string(&mut caller, ptr, len)?;
            let app = caller.data().call.app_id.as_str();
            match level {
                0 => tracing::debug!(app, "{text}"),
                1 => tracing::info!(app, "{text}"),
                2 => tracing::warn!(app, "{text}"),
                _ => tracing::error!(app, "{text}"),
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        ABI_NAMESPACE,
        "fail",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let text = guest_string(&mut caller, ptr, len)?;
            caller
                .data_mut()
                .failure
                .get_or_insert(ActionError::Failed(text));
            Ok(())
        },
    )?;
    for capability in Capability::ALL {
        let name = capability.import_name();
        linker.func_wrap_async(
            ABI_NAMESPACE,
            name,
            move |mut caller: Caller<'_, HostState>, (ptr, len): (i32, i32)| {
                Box::new(async move {
                    caller.data_mut().answer = None;
                    // The input cap, before a byte is copied or parsed.
                    if len > 0 && len as usize > host::MAX_REQUEST_BYTES {
                        let bytes = host::answer_bytes(Err(host::HostError::too_large(format!(
                            "a request of {len} bytes; requests are limited to {}",
                            host::MAX_REQUEST_BYTES
                        ))));
                        let n = bytes.len() as i32;
                        caller.data_mut().answer = Some(bytes);
                        return Ok(n);
                    }
                    let request = guest_string(&mut caller, ptr, len)?;
                    let request: serde_json::Value = serde_json::from_str(&request)
                        .map_err(|e| wasmtime::Error::msg(format!("{name}: the request is not JSON: {e}")))?;
                    let ctx = caller.data().call.clone();
                    let op = request
                        .get("op")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let answer = host::call(capability, &ctx, request).await;
                    match &answer {
                        Ok(_) => tracing::debug!(app = %ctx.app_id, import = name, op, "host call"),
                        Err(err) => tracing::info!(app = %ctx.app_id, import = name, op, code = err.code.as_str(), message = %err.message, "host call refused or failed"),
                    }
                    let bytes = host::answer_bytes(answer);
                    let len = bytes.len() as i32;
                    caller.data_mut().answer = Some(bytes);
                    Ok(len)
                })
            },
        )?;
    }
    linker.func_wrap(
        ABI_NAMESPACE,
        "result",
        |mut caller: Caller<'_, HostState>, buf: i32, cap: i32| -> wasmtime::Result<i32> {
            let Some(answer) = caller.data_mut().answer.take() else {
                return Ok(-1);
            };
            let fits = cap >= 0 && cap as usize >= answer.len();
            let written = if fits {
                let memory = caller
                    .get_export("memory")
                    .and_then(|e| e.into_memory())
                    .ok_or_else(|| wasmtime::Error::msg("guest exports no memory"))?;
                memory
                    .write(&mut caller, buf as u32 as usize, &answer)
                    .map_err(|_| wasmtime::Error::msg("result: guest pointer out of bounds"))?;
                answer.len() as i32
            } else {
                -1
            };
            // Kept until the next call, so a guest may ask again with a larger buffer.
            caller.data_mut().answer = Some(answer);
            Ok(written)
        },
    )?;
    Ok(())
}

/// The longest prefix of `bytes` no longer than `cap` that ends on a UTF-8 boundary.
fn utf8_prefix_len(bytes: &[u8], cap: usize) -> usize {
    if bytes.len() <= cap {
        return bytes.len();
    }
    let mut end = cap;
    while end > 0 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: &str = r#"(module
      (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "cached")
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32)
        (call $emit (i32.const 0) (i32.const 6)) i32.const 0))"#;

    struct NoAi;
    impl AiProvider for NoAi {
        fn generate(
            &self,
            _: GenerateRequest,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<TextStream, crate::ai::AiError>>
                    + Send
                    + '_,
            >,
        > {
            Box::pin(async { Err(crate::ai::AiError::NoKey("test".into())) })
        }
    }

    async fn run_once(sandbox: &Sandbox) -> String {
        let module = sandbox.load(GUEST.as_bytes()).expect("load");
        let (tx, mut rx) = mpsc::channel(4);
        let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi));
        sandbox.run(&module, &ctx, "{}", tx).await.expect("run");
        rx.recv().await.expect("output")
    }

    #[tokio::test]
    async fn compiled_modules_are_cached_and_a_bad_entry_is_replaced() {
        let dir = std::env::temp_dir().join(format!(
            "aisa-cache-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let config = SandboxConfig {
            cache_dir: Some(dir.clone()),
            ..SandboxConfig::default()
        };
        let sandbox = Sandbox::with_config(config.clone()).expect("sandbox");
        assert_eq!(run_once(&sandbox).await, "cached");
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("cache dir")
            .flatten()
            .collect();
        assert_eq!(entries.len(), 1, "one compiled module cached");
        let cached = entries[0].path();
        assert!(cached.extension().is_some_and(|e| e == "cwasm"));

        // A second node process (a new engine) uses the cached code.
        let modified = std::fs::metadata(&cached)
            .expect("meta")
            .modified()
            .expect("mtime");
        let again = Sandbox::with_config(config.clone()).expect("sandbox");
        assert_eq!(run_once(&again).await, "cached");
        assert_eq!(
            std::fs::metadata(&cached)
                .expect("meta")
                .modified()
                .expect("mtime"),
            modified,
            "not rewritten"
        );

        // A damaged entry is recompiled and replaced, not trusted.
        std::fs::write(&cached, b"garbage").expect("damage");
        let fresh = Sandbox::with_config(config).expect("sandbox");
        assert_eq!(run_once(&fresh).await, "cached");
        assert_ne!(std::fs::read(&cached).expect("entry"), b"garbage");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A model that answers "x" after 30 ms, so that each action holds its instance.
    struct SlowAi;
    impl AiProvider for SlowAi {
        fn generate(
            &self,
            _: GenerateRequest,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<TextStream, crate::ai::AiError>>
                    + Send
                    + '_,
            >,
        > {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let stream: TextStream = Box::pin(futures_util::stream::iter([Ok("x".to_owned())]));
                Ok(stream)
            })
        }
    }

    const ASKS_THE_MODEL: &str = r#"(module
      (import "aisapp_v1" "ai_generate" (func $gen (param i32 i32) (result i32)))
      (import "aisapp_v1" "ai_next" (func $next (param i32 i32 i32) (result i32)))
      (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{\"prompt\":\"p\"}")
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32) (local $h i32) (local $n i32)
        (local.set $h (call $gen (i32.const 0) (i32.const 14)))
        (local.set $n (call $next (local.get $h) (i32.const 512) (i32.const 64)))
        (call $emit (i32.const 512) (local.get $n))
        i32.const 0))"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_actions_than_pool_slots_wait_their_turn() {
        let sandbox = Sandbox::with_config(SandboxConfig {
            max_concurrent_actions: 2,
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let module = sandbox.load(ASKS_THE_MODEL.as_bytes()).expect("load");
        let started = std::time::Instant::now();
        let mut runs = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (sandbox, module) = (sandbox.clone(), module.clone());
            runs.spawn(async move {
                let (tx, mut rx) = mpsc::channel(4);
                let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(SlowAi))
                    .with_grants(Grants {
                        ai: true,
                        ..Grants::default()
                    });
                sandbox.run(&module, &ctx, "{}", tx).await?;
                Ok::<_, ActionError>(rx.recv().await)
            });
        }
        while let Some(output) = runs.join_next().await {
            assert_eq!(
                output.expect("join").expect("every action runs").as_deref(),
                Some("x")
            );
        }
        // Six 30 ms actions through two slots take at least three rounds.
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn per_action_memory_is_clamped_to_the_node_maximum() {
        let sandbox = Sandbox::with_config(SandboxConfig {
            max_memory_bytes: 1 << 20,
            ..SandboxConfig::default()
        })
        .expect("sandbox");
        let grow = r#"(module
          (memory (export "memory") 1)
          (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
          (func (export "aisapp_run") (param i32 i32) (result i32)
            (drop (memory.grow (i32.const 32))) i32.const 0))"#;
        let module = sandbox.load(grow.as_bytes()).expect("load");
        let (tx, _rx) = mpsc::channel(1);
        let limits = Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        };
        let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi))
            .with_limits(limits);
        let err = sandbox
            .run(&module, &ctx, "{}", tx)
            .await
            .expect_err("2 MiB is over the 1 MiB node maximum");
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[tokio::test]
    async fn a_loop_in_a_start_function_ends_with_the_time_limit() {
        let sandbox = Sandbox::new().expect("sandbox");
        let looping_start = r#"(module
          (memory (export "memory") 1)
          (func $forever (loop $l (br $l)))
          (start $forever)
          (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
          (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#;
        let module = sandbox.load(looping_start.as_bytes()).expect("load");
        let (tx, _rx) = mpsc::channel(1);
        let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi))
            .with_limits(Limits {
                timeout: Duration::from_millis(300),
                ..Limits::default()
            });
        let started = Instant::now();
        let err = sandbox
            .run(&module, &ctx, "{}", tx)
            .await
            .expect_err("stopped");
        assert!(matches!(err, ActionError::Timeout(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the mini-app ran out of time after 300 ms and was stopped"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_looping_guest_never_blocks_the_callers_thread() {
        // The caller's runtime has one thread; the guest loops on the guest pool, so a
        // timer on the caller's thread still fires on time.
        let sandbox = Sandbox::new().expect("sandbox");
        let module = sandbox
            .load(
                br#"(module (memory (export "memory") 1)
                  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
                  (func (export "aisapp_run") (param i32 i32) (result i32) (loop $l (br $l)) i32.const 0))"#,
            )
            .expect("load");
        let (tx, _rx) = mpsc::channel(1);
        let ctx = ActionContext::new("t", "0.1.0", std::env::temp_dir(), Arc::new(NoAi))
            .with_limits(Limits {
                timeout: Duration::from_secs(2),
                ..Limits::default()
            });
        let run = sandbox.run(&module, &ctx, "{}", tx);
        tokio::pin!(run);
        let started = Instant::now();
        tokio::select! {
            _ = &mut run => panic!("the loop cannot finish first"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "the caller's timer fired while the guest looped: {:?}",
            started.elapsed()
        );
        // Leaving the test drops the run, which stops the guest within a tick.
    }

    #[test]
    fn a_planted_cache_entry_is_never_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyed = |key| {
            Sandbox::with_config(SandboxConfig {
                cache_dir: Some(dir.path().to_owned()),
                cache_key: Some(key),
                ..SandboxConfig::default()
            })
            .expect("sandbox")
        };
        let mine = keyed([1; 32]);
        mine.load(GUEST.as_bytes()).expect("compiles and caches");
        let entry = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .next()
            .expect("an entry")
            .path();
        let sealed = std::fs::read(&entry).expect("entry");
        let code = mine
            .open_cache_entry(&sealed)
            .expect("my own entry verifies");
        // Someone else's key (or no key) does not verify it, and a changed byte fails.
        let other = keyed([2; 32]);
        assert!(other.open_cache_entry(&sealed).is_none());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(mine.open_cache_entry(&tampered).is_none());
        assert!(mine.open_cache_entry(&sealed[..10]).is_none());
        // A planted file of bare compiled code (no valid tag) is replaced, not loaded.
        std::fs::write(&entry, code).expect("plant");
        mine.load(GUEST.as_bytes()).expect("recompiled");
        let replaced = std::fs::read(&entry).expect("entry");
        assert!(
            mine.open_cache_entry(&replaced).is_some(),
            "the planted entry was replaced by a sealed one"
        );
    }

    #[test]
    fn utf8_prefix_never_splits_a_character() {
        let s = "aé☃".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(utf8_prefix_len(s, 100), 6);
        assert_eq!(utf8_prefix_len(s, 2), 1);
        assert_eq!(utf8_prefix_len(s, 3), 3);
        assert_eq!(utf8_prefix_len(s, 5), 3);
        assert_eq!(utf8_prefix_len(s, 0), 0);
    }
}
