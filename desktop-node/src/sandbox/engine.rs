//! The wasmtime engine a node runs every guest on, and the thread that advances its
//! epoch (the guests' deadline and fair-share clock).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::{ActionError, SandboxConfig};

/// How often the epoch advances while a guest runs: a computing guest checks its deadline
/// and yields its thread at every tick, so this is the longest a guest holds a guest
/// thread while others wait. With no guest running the ticker sleeps.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// An engine with epoch interruption and the pooling allocator (instances are taken from
/// preallocated slots, so starting an action allocates next to nothing).
pub(super) fn new_engine(sandbox: &SandboxConfig) -> Result<Engine, ActionError> {
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
    Engine::new(&config).map_err(|e| ActionError::Load(e.to_string()))
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] while at least one
/// guest runs, and sleeps otherwise (an idle node does not wake 500 times a second). It
/// ends when the engine is dropped.
pub(super) struct EpochTicker {
    running: std::sync::atomic::AtomicUsize,
    thread: std::thread::Thread,
}

impl EpochTicker {
    pub(super) fn start(engine: &Engine) -> std::io::Result<Arc<EpochTicker>> {
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
    pub(super) fn guest_running(self: &Arc<Self>) -> RunningGuest {
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
pub(super) struct RunningGuest(Arc<EpochTicker>);

impl Drop for RunningGuest {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
