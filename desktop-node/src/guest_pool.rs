//! The threads mini-app code runs on, kept apart from the node's own.
//!
//! The node's async runtime serves the relay connection: heartbeats, new streams,
//! GET_STATUS, cancels, the bytes of every answer. Guest code runs on a second runtime
//! with its own worker threads, so a guest that computes for its whole time limit (or
//! several of them) cannot take a thread the connection needs. Guests also yield to
//! their runtime at every epoch tick (see [`crate::sandbox`]), so guests share this
//! pool's threads fairly and a cancelled guest stops within a tick.
//!
//! What it does not do: decide how many actions run at once (that is
//! [`crate::scheduler`]) or bound a guest's time (the sandbox's deadline does).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A runtime for guest code. Dropping it stops its threads without waiting for them.
pub struct GuestPool {
    runtime: Option<tokio::runtime::Runtime>,
    threads: usize,
}

impl GuestPool {
    /// A pool of `threads` worker threads named `wasm-guest` (at least one).
    pub fn new(threads: usize) -> std::io::Result<GuestPool> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-guest")
            .on_thread_start(lower_priority)
            // A guest that computes is polled for a whole epoch tick (2 ms) before it
            // yields, so the usual 61 polls between looks at the queue of new actions
            // would leave a new action waiting ~0.1 s behind busy guests: look at it on
            // every poll. Sockets and timers (model answers) are looked at every 8th
            // poll, at most ~16 ms behind busy guests, without a system call per poll.
            .global_queue_interval(1)
            .event_interval(8)
            .enable_all()
            .build()?;
        Ok(GuestPool {
            runtime: Some(runtime),
            threads,
        })
    }

    /// How many worker threads the pool has.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `future` on the pool. The returned task is aborted when it is dropped, so a
    /// caller that stops waiting (a cancelled action) also stops the guest.
    pub fn spawn<F>(&self, future: F) -> GuestTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime is only taken on drop");
        GuestTask(runtime.spawn(future))
    }
}

/// Makes the calling thread yield the CPU to the node's own threads (and the person's
/// other programs) when both want it: guest code is background work. Linux keeps a nice
/// value per thread; elsewhere this does nothing yet.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its integer arguments; `who = 0` names the
        // calling thread on Linux, so this changes no other thread.
        #[allow(unsafe_code)]
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, GUEST_NICE) };
        if result != 0 {
            tracing::debug!(err = %std::io::Error::last_os_error(), "could not lower the guest threads' priority");
        }
    }
}

/// The nice value of guest threads on Linux (0 is normal, 19 the lowest priority).
#[cfg(target_os = "linux")]
const GUEST_NICE: libc::c_int = 10;

impl Drop for GuestPool {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks stop, which is not allowed inside
        // another runtime (the node drops its sandbox there).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A guest future running on the [`GuestPool`]; aborted when dropped.
pub struct GuestTask<T>(tokio::task::JoinHandle<T>);

impl<T> Future for GuestTask<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for GuestTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn spawned_work_runs_on_the_pool_threads() {
        let pool = GuestPool::new(1).expect("pool");
        let name = pool
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("joined");
        assert_eq!(name.as_deref(), Some("wasm-guest"));
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpriority only reads its integer arguments.
            #[allow(unsafe_code)]
            let nice = pool
                .spawn(async { unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } })
                .await
                .expect("joined");
            assert_eq!(nice, GUEST_NICE, "guest threads run at a lower priority");
        }
        // Dropping the pool inside a runtime does not panic.
        drop(pool);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_task_is_aborted() {
        let pool = GuestPool::new(1).expect("pool");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = pool.spawn(async move {
            let _keep = tx;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        drop(task);
        // The sender is dropped with the aborted future.
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("aborted in time")
            .expect_err("the task never sent");
    }
}
