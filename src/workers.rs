//! A bounded pool of workers draining one queue: each worker opens its own state
//! (connections, sessions) once, then takes items until the queue is empty, a stop is
//! requested (signal), or another worker failed. Items are never half-done by the pool:
//! a stop is only observed between items.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::shutdown::Shutdown;

/// Runs `work` on every item with `jobs` workers, each with state made by `open`. Returns
/// the first error, or [`Error::Interrupted`] if a stop was requested before the queue
/// was drained.
pub async fn for_each<T, S, Open, OpenFut, Work, WorkFut>(
    jobs: usize,
    items: VecDeque<T>,
    shutdown: &Shutdown,
    open: Open,
    work: Work,
) -> Result<(), Error>
where
    T: Send + 'static,
    S: Send + 'static,
    Open: Fn() -> OpenFut + Send + Sync + 'static,
    OpenFut: Future<Output = Result<S, Error>> + Send,
    Work: Fn(S, T) -> WorkFut + Send + Sync + 'static,
    WorkFut: Future<Output = Result<S, Error>> + Send,
{
    let jobs = jobs.clamp(1, items.len().max(1));
    let queue = Arc::new(Mutex::new(items));
    let failed = Arc::new(AtomicBool::new(false));
    let (open, work) = (Arc::new(open), Arc::new(work));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..jobs {
        let (queue, failed, shutdown) = (queue.clone(), failed.clone(), shutdown.clone());
        let (open, work) = (open.clone(), work.clone());
        set.spawn(async move {
            let result = async {
                let mut state = open().await?;
                loop {
                    if shutdown.requested() || failed.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    let Some(item) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                        return Ok(());
                    };
                    state = work(state, item).await?;
                }
            }
            .await;
            if result.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            result
        });
    }
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let result =
            joined.unwrap_or_else(|e| Err(Error::Runtime(format!("a worker stopped: {e}"))));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None if shutdown.requested() => Err(Error::Interrupted),
        None => Ok(()),
    }
}
