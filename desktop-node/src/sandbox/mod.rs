//! The mini-app sandbox: each action runs in a fresh wasmtime instance with a memory cap,
//! a wall-clock deadline (epoch interruption), an output cap, and no imports but the
//! host API (`aisapp_v1`, documented in `docs/guest-abi.md`; its imports and signatures
//! are `aisa_abi::imports`).
//!
//! A guest exports `memory`, `aisapp_alloc(len) -> ptr` and `aisapp_run(ptr, len) ->
//! status`; its input is the JSON `{"action": …, "payload": …}`. It streams output with
//! `emit`, asks the model with `ai_generate` / `ai_next` (only with the `ai` grant), logs
//! with `log`, and explains a failure with `fail` before returning a non-zero status.
//! The permissioned host API ([`crate::host`]: `fs`, `http`, `clipboard`, `tool`,
//! `storage`, `env`, and `result` to fetch an answer) is checked against the
//! [`Grants`](crate::permissions::Grants) in the action's [`ActionContext`].
//!
//! | module | its one job |
//! | --- | --- |
//! | `engine` | the wasmtime engine (pooling allocator, epoch interruption) and the thread that advances the epoch |
//! | `cache` | the compiled-module cache on disk, each entry authenticated (HMAC-SHA-256) |
//! | `linker` | the host functions, linked from the `aisa_abi` import table and checked against it |
//! | `run` | one action: [`ActionContext`], [`Limits`], [`ActionError`], instantiation and the call |
//! | `snapshot` | pre-initialized modules: an instance's memory after an init call, written back into the module as its initial image |

mod cache;
mod engine;
mod linker;
mod run;
mod snapshot;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::{Engine, Linker};

use crate::guest_pool::GuestPool;
use crate::host::HostShared;

pub use linker::HostState;
pub use run::{
    ActionContext, ActionError, Limits, LoadedModule, app_dir, seconds, user_dirs_from_env,
};
pub use snapshot::with_memory_image;

/// The host API namespace this node provides ([`aisa_abi::MODULE`]).
pub const ABI_NAMESPACE: &str = aisa_abi::MODULE;

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
    ticker: Arc<engine::EpochTicker>,
}

impl Sandbox {
    /// The per-app disk quotas of the host API (uploads are held to `$APP_DATA`'s too).
    pub fn host_quotas(&self) -> crate::host::Quotas {
        self.config.host_quotas
    }

    /// A sandbox with the default configuration.
    pub fn new() -> Result<Self, ActionError> {
        Self::with_config(SandboxConfig::default())
    }

    /// A sandbox engine with epoch interruption and the pooling allocator (instances are
    /// taken from preallocated slots, so starting an action allocates next to nothing),
    /// and a thread that advances the epoch.
    pub fn with_config(sandbox: SandboxConfig) -> Result<Self, ActionError> {
        let engine = engine::new_engine(&sandbox)?;
        let ticker =
            engine::EpochTicker::start(&engine).map_err(|e| ActionError::Load(e.to_string()))?;
        let linker = linker::build(&engine)?;
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
    /// The directory compiled modules (and the artifacts kept beside them) are cached
    /// in, if any.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.config.cache_dir.as_deref()
    }

    /// Compiles and links a module. Imports outside the host API are refused here, with
    /// the name of the first one.
    pub fn load(&self, wasm: &[u8]) -> Result<LoadedModule, ActionError> {
        let sha256: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(wasm).into();
        let module = self.compile(wasm, &sha256)?;
        for import in module.imports() {
            if import.module() != ABI_NAMESPACE || aisa_abi::import(import.name()).is_none() {
                return Err(ActionError::Load(format!(
                    "imports {}::{}, which is not part of the host API {ABI_NAMESPACE} (it offers {})",
                    import.module(),
                    import.name(),
                    aisa_abi::imports::import_names().join(", ")
                )));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ActionError::Load(format!("{e:#}")))?;
        Ok(LoadedModule { pre, sha256 })
    }
}
