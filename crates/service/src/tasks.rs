//! Background tasks owned by an app: aborted when the owner is dropped.

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinHandle;

/// A set of spawned tasks, every one aborted when the set is dropped.
#[derive(Debug, Default)]
pub struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    /// An empty set.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns `fut` on the current runtime and keeps its handle.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.push(tokio::spawn(fut));
    }

    /// Keeps an already spawned task.
    pub fn push(&self, handle: JoinHandle<()>) {
        match self.0.lock() {
            Ok(mut tasks) => tasks.push(handle),
            Err(poisoned) => poisoned.into_inner().push(handle),
        }
    }

    /// How many tasks the set holds (finished ones included).
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .map_or_else(|p| p.into_inner().len(), |t| t.len())
    }

    /// True when the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let tasks = match self.0.get_mut() {
            Ok(tasks) => tasks,
            Err(poisoned) => poisoned.into_inner(),
        };
        for t in tasks.iter() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_set_aborts_its_tasks() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        assert_eq!(tasks.len(), 1);
        drop(tasks);
        // The task's sender is dropped by the abort.
        assert!(rx.await.is_err());
    }
}
