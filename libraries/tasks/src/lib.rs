//! `adora-tasks`: every task of a service (the coordinator, a daemon) is owned. It is spawned
//! through one [`Tasks`] (a `TaskTracker` plus a `CancellationToken`) inside a tracing span
//! naming what it serves. Shutting down cancels the token, waits for the tasks with a grace
//! period and names the ones that did not finish.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// How long a service's shutdown waits for its tasks once they were cancelled, before it reports
/// the stragglers and returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The owner of a service's tasks. Cheap to clone: clones share the tracker and the token.
#[derive(Clone, Default)]
pub struct Tasks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// What every unfinished task serves, by a spawn counter: the straggler report.
    running: Mutex<BTreeMap<u64, String>>,
    next_id: AtomicU64,
}

impl Inner {
    fn running(&self) -> MutexGuard<'_, BTreeMap<u64, String>> {
        // Every mutation is a single insert or remove: a panic elsewhere leaves it consistent.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a task from the running set when its future ends (or is dropped by an abort).
struct Running {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.running().remove(&self.id);
    }
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("running", &self.inner.running().len())
            .field("cancelled", &self.inner.cancel.is_cancelled())
            .finish()
    }
}

impl Tasks {
    /// Tasks that stop when `cancel` is cancelled (a child token of the caller's, say).
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                cancel,
                ..Inner::default()
            }),
        }
    }

    /// Cancelled when the service shuts down; tasks stop on it (or on a child token of it).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    fn register(&self, what: String) -> Running {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.running().insert(id, what);
        Running {
            inner: self.inner.clone(),
            id,
        }
    }

    /// Spawns `future` on the runtime, owned by this tracker, inside a span named `what`.
    pub fn spawn<F>(&self, what: impl Into<String>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let what = what.into();
        let span = tracing::info_span!("task", serves = %what);
        let running = self.register(what);
        self.inner.tracker.spawn(
            async move {
                let _running = running;
                future.await
            }
            .instrument(span),
        )
    }

    /// Like [`Tasks::spawn`], but the future is dropped when the tasks are cancelled (for work
    /// nobody waits for after shutdown: builds, log pipes a grandchild holds open).
    pub fn spawn_until_cancelled<F>(&self, what: impl Into<String>, future: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        self.spawn(what, async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                () = future => {}
            }
        })
    }

    /// Runs blocking `work` on the blocking pool, owned by this tracker, inside a span named
    /// `what`.
    pub fn spawn_blocking<F, T>(&self, what: impl Into<String>, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let what = what.into();
        let span = tracing::info_span!("task", serves = %what);
        let running = self.register(what);
        self.inner.tracker.spawn_blocking(move || {
            let _running = running;
            span.in_scope(work)
        })
    }

    /// Owns a future that something else drives (a WebSocket served after axum's upgrade):
    /// shutdown waits for it like for a spawned task.
    pub fn track<F>(
        &self,
        what: impl Into<String>,
        future: F,
    ) -> impl Future<Output = F::Output> + Send + 'static
    where
        F: Future + Send + 'static,
    {
        let what = what.into();
        let span = tracing::info_span!("task", serves = %what);
        let running = self.register(what);
        self.inner.tracker.track_future(
            async move {
                let _running = running;
                future.await
            }
            .instrument(span),
        )
    }

    /// Cancels every task and waits up to `grace` for them to finish; returns (and logs) what
    /// the ones still running serve.
    pub async fn shutdown(&self, grace: Duration) -> Vec<String> {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok()
        {
            return Vec::new();
        }
        let stragglers: Vec<String> = self.inner.running().values().cloned().collect();
        tracing::warn!(
            "{} task(s) did not stop within {grace:?}: {}",
            stragglers.len(),
            stragglers.join(", ")
        );
        stragglers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_cancelled_tasks_and_names_the_stragglers() {
        let tasks = Tasks::default();
        let cancel = tasks.cancel_token().clone();
        tasks.spawn("a polite task", async move { cancel.cancelled().await });
        tasks.spawn("a stubborn task", std::future::pending::<()>());
        let stragglers = tokio::time::timeout(
            Duration::from_secs(60),
            tasks.shutdown(Duration::from_secs(1)),
        )
        .await
        .expect("shutdown is bounded by its grace");
        assert_eq!(stragglers, vec!["a stubborn task".to_owned()]);
    }

    #[tokio::test]
    async fn cancellable_tasks_end_with_the_cancellation() {
        let tasks = Tasks::default();
        let handle = tasks.spawn_until_cancelled("a build", std::future::pending());
        let stragglers = tokio::time::timeout(
            Duration::from_secs(5),
            tasks.shutdown(Duration::from_secs(5)),
        )
        .await
        .expect("in time");
        assert!(stragglers.is_empty(), "{stragglers:?}");
        assert!(handle.is_finished());
    }

    #[tokio::test]
    async fn finished_and_tracked_tasks_leave_nothing_to_report() {
        let tasks = Tasks::new(CancellationToken::new());
        let value = tokio::time::timeout(Duration::from_secs(5), tasks.spawn("quick", async { 7 }))
            .await
            .expect("in time")
            .expect("no panic");
        assert_eq!(value, 7);
        let cancel = tasks.cancel_token().clone();
        let tracked = tasks.track("tracked", async move { cancel.cancelled().await });
        let driver = tokio::spawn(tracked);
        let stragglers = tokio::time::timeout(
            Duration::from_secs(5),
            tasks.shutdown(Duration::from_secs(1)),
        )
        .await
        .expect("in time");
        assert!(stragglers.is_empty(), "{stragglers:?}");
        driver.await.expect("the tracked future ended");
    }
}
