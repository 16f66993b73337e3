//! Every task of one coordinator, owned: spawned through one [`TaskTracker`], cancelled through
//! one [`CancellationToken`], each inside a `tracing` span naming what it serves.
//!
//! Shutdown = cancel, wait for the tasks with a grace timeout, and report by name the ones that
//! did not stop ([`Tasks::shutdown`]).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// How long [`crate::run`] waits for its tasks after the server stopped; the ones still running
/// then are reported by name and left to the runtime.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Names of the tasks alive now, by a serial number.
type LiveTasks = Arc<Mutex<BTreeMap<u64, String>>>;

/// The tasks of one coordinator. Cheap to clone: clones share the tracker and the token.
#[derive(Clone, Debug)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    live: LiveTasks,
    next: Arc<AtomicU64>,
}

/// Removes its task's name from the live set when the task ends (or is dropped).
struct Alive {
    live: LiveTasks,
    id: u64,
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Tasks {
    /// Tasks cancelled by `cancel`.
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            cancel,
            live: Arc::default(),
            next: Arc::default(),
        }
    }

    /// The token every task watches; cancelling it stops the coordinator.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    fn alive(&self, name: &str) -> Alive {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, name.to_owned());
        Alive {
            live: self.live.clone(),
            id,
        }
    }

    /// Spawns `task` in a span named after what it serves.
    pub fn spawn<F>(&self, name: &str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let alive = self.alive(name);
        let span = tracing::info_span!("task", serves = %name);
        self.tracker.spawn(
            async move {
                let _alive = alive;
                task.await;
            }
            .instrument(span),
        );
    }

    /// Owns a future that another runtime task drives (a WebSocket served after axum's upgrade):
    /// shutdown waits for it like for a spawned task.
    pub fn track<F>(&self, name: &str, task: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let alive = self.alive(name);
        let span = tracing::info_span!("task", serves = %name);
        self.tracker.track_future(
            async move {
                let _alive = alive;
                task.await;
            }
            .instrument(span),
        )
    }

    /// Cancels every task and waits up to `grace` for them; returns the names of those still
    /// running then (empty when all stopped), after logging them.
    pub async fn shutdown(&self, grace: Duration) -> Vec<String> {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return Vec::new();
        }
        let stragglers: Vec<String> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        tracing::warn!(
            "{} coordinator task(s) still running {grace:?} after shutdown: {}",
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
    async fn shutdown_waits_for_tasks_and_names_the_stragglers() {
        let tasks = Tasks::new(CancellationToken::new());
        let cancel = tasks.cancel_token().clone();
        tasks.spawn("polite", async move { cancel.cancelled().await });
        tasks.spawn("stubborn", std::future::pending());
        let stragglers = tasks.shutdown(SHUTDOWN_GRACE).await;
        assert_eq!(stragglers, vec!["stubborn".to_owned()]);

        let tasks = Tasks::new(CancellationToken::new());
        let cancel = tasks.cancel_token().clone();
        let tracked = tasks.track("tracked", async move { cancel.cancelled().await });
        let driver = tokio::spawn(tracked);
        assert_eq!(tasks.shutdown(SHUTDOWN_GRACE).await, Vec::<String>::new());
        driver.await.expect("the tracked future ended");
    }

    /// Every task goes through [`Tasks`]: no bare `tokio::spawn` in the crate's code (tests
    /// aside: `tests.rs`, `testkit.rs` and the `mod tests` at the bottom of a file).
    #[test]
    fn no_bare_spawn_outside_tests() {
        let needle = ["tokio", "::spawn("].concat();
        let mut offenders = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("readable source directory") {
                let path = entry.expect("directory entry").path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if path.is_dir() {
                    dirs.push(path);
                } else if name.ends_with(".rs") && name != "tests.rs" && name != "testkit.rs" {
                    let text = std::fs::read_to_string(&path).expect("readable source");
                    let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
                    if code.contains(&needle) {
                        offenders.push(path.display().to_string());
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "bare tokio::spawn in {offenders:?}");
    }
}
