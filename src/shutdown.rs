//! The one cancellation signal, owned by `main`'s run: SIGINT or SIGTERM ask every
//! worker to stop between batches. A batch in flight either commits with its checkpoint
//! or is rolled back; nothing half-written remains. A second signal stops at once (exit
//! 1): every statement in flight is cancelled on both servers
//! ([`crate::connect::cancel_all`]), so its transaction rolls back even when it waits on
//! a lock or the server has not read all of a COPY's data yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared stop flag; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag that is set when the process receives SIGINT or SIGTERM.
    pub fn on_signals() -> Self {
        let shutdown = Self::default();
        let flag = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::warn!("stop requested: finishing the batches in flight, then stopping (signal again to stop at once)");
            flag.request();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            crate::connect::cancel_all().await;
            eprintln!("shadan: stopped at once; batches in flight are rolled back, committed ones are kept");
            std::process::exit(i32::from(crate::error::EXIT_RUNTIME));
        });
        shutdown
    }

    /// Asks everything to stop between batches (also used when a worker fails).
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
