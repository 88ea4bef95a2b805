//! How the daemon stops: one cancellation signal that every task watches, and one drain that
//! every task is spawned on: request tasks, the background loops (tracking, balances, backlog,
//! readiness probe), the listeners and each of their HTTP connections.
//!
//! [`run`](crate::run) calls [`Shutdown::begin`] when its shutdown future resolves: intake stops
//! taking requests, the background loops stop after their current round, the listeners stop
//! accepting and close each connection once its request in flight (if any) is answered. Requests
//! in flight finish normally (ledger written, events stored, then acked). [`Shutdown::drained`]
//! waits for all of it, bounded by `shutdown.grace`; whatever is still running then is abandoned
//! (JetStream redelivers unfinished requests after `ack_wait`).
//!
//! The signal is tokio-util's `CancellationToken`; the drain is a count of running tasks, each
//! holding a guard that counts it down when the task ends (the shape of linkerd2-proxy's drain
//! and mini-redis's `Shutdown` + `shutdown_complete_tx`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The daemon's shutdown: its signal and its drain. Cloning shares both.
#[derive(Clone, Default)]
pub struct Shutdown {
    signal: CancellationToken,
    tasks: Arc<Tasks>,
}

/// The tasks spawned on the drain that have not ended yet.
#[derive(Default)]
struct Tasks {
    running: AtomicUsize,
    /// Told when `running` drops to 0.
    idle: Notify,
}

/// Held by each task on the drain: counts it as running until the task ends (or panics).
struct Running(Arc<Tasks>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Spawns `task` on the drain: [`Shutdown::drained`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.tasks.clone());
        tokio::spawn(async move {
            let _running = running;
            task.await
        })
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub async fn signalled(&self) {
        self.signal.cancelled().await
    }

    /// Whether shutdown has begun.
    pub fn is_signalled(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Begins the shutdown: every task sees the signal.
    pub fn begin(&self) {
        self.signal.cancel();
    }

    /// Waits until every task spawned on the drain has ended, or `grace` has passed. Returns
    /// whether all ended. Call after [`Shutdown::begin`].
    pub async fn drained(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.idle()).await.is_ok()
    }

    /// Resolves when no task on the drain is running.
    async fn idle(&self) {
        loop {
            let idle = self.tasks.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so a task ending in between is not missed.
            idle.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Tasks on the drain that have not ended yet.
    pub fn running(&self) -> usize {
        self.tasks.running.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_for_every_task_within_the_grace() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        // A loop that stops at the signal, and a request that finishes its work.
        shutdown.spawn(async move { watcher.signalled().await });
        shutdown.spawn(tokio::time::sleep(Duration::from_secs(3)));
        let started = tokio::time::Instant::now();
        shutdown.begin();
        assert!(shutdown.drained(Duration::from_secs(5)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(3), "waited for the request, no longer");
        assert_eq!(shutdown.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_grace_bounds_the_drain() {
        let shutdown = Shutdown::new();
        shutdown.spawn(tokio::time::sleep(Duration::from_secs(60)));
        shutdown.begin();
        assert!(!shutdown.drained(Duration::from_secs(5)).await, "a task outlasting the grace is abandoned");
        assert_eq!(shutdown.running(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_still_leaves_the_drain() {
        let shutdown = Shutdown::new();
        let task = shutdown.spawn(async { panic!("a bug") });
        assert!(task.await.is_err());
        shutdown.begin();
        assert!(shutdown.drained(Duration::from_secs(1)).await);
    }
}
