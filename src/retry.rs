//! `--retry N`: a run that fails for a reason that may pass by itself (a lost
//! connection, a server restarting, a serialization failure: [`Error::is_transient`]) is
//! run again from the start, after a wait that doubles each time. Every run commits
//! each batch with its checkpoint, so a new attempt continues from what the failed one
//! committed and ends as a clean run would. A usage error, an invalid mapping, a finding
//! or a stop asked for is never retried.

use std::future::Future;
use std::time::Duration;

use crate::error::Error;
use crate::shutdown::Shutdown;

/// The longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// How often a run is retried, and the first wait.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts after the first.
    pub retries: u32,
    /// The wait before the first retry; each later one waits twice as long, up to 5 min.
    pub first_wait: Duration,
}

/// Runs `attempt` (given the attempt's number, 0 first) until it succeeds, fails for a
/// reason that does not pass, or `policy.retries` retries are spent; each retry is
/// logged with the error that caused it.
pub async fn run<T, F, Fut>(
    policy: Policy,
    command: &str,
    shutdown: &Shutdown,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut wait = policy.first_wait;
    let mut number = 0;
    loop {
        match attempt(number).await {
            Err(e) if number < policy.retries && e.is_transient() && !shutdown.requested() => {
                number += 1;
                tracing::warn!(
                    command,
                    retry = number,
                    of = policy.retries,
                    wait_s = wait.as_secs_f64(),
                    error = %e,
                    "the run failed for a reason that may pass; running it again"
                );
                if !sleep_unless_stopped(wait, shutdown).await {
                    return Err(Error::Interrupted);
                }
                wait = (wait * 2).min(MAX_WAIT);
            }
            outcome => return outcome,
        }
    }
}

/// Waits `wait`, or less when a stop is asked for; false then.
async fn sleep_unless_stopped(wait: Duration, shutdown: &Shutdown) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if shutdown.requested() {
            return false;
        }
        let left = deadline - tokio::time::Instant::now();
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
    !shutdown.requested()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn lost() -> Error {
        Error::Database {
            context: "reading".into(),
            cause: crate::error::DbError::test_transient(),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_with_doubling_waits_and_nothing_else_is() {
        let policy = Policy {
            retries: 3,
            first_wait: Duration::from_millis(10),
        };
        let stop = Shutdown::default();
        let calls = Cell::new(0);
        let started = tokio::time::Instant::now();
        let out = run(policy, "sync", &stop, |n| {
            calls.set(calls.get() + 1);
            async move {
                if n < 2 {
                    Err(lost())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(out.unwrap(), 2);
        assert_eq!(calls.get(), 3);
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "10 + 20 ms waited"
        );

        // Spent: the last error is returned.
        calls.set(0);
        let out: Result<(), Error> = run(policy, "sync", &stop, |_| {
            calls.set(calls.get() + 1);
            async { Err(lost()) }
        })
        .await;
        assert!(out.unwrap_err().is_transient());
        assert_eq!(calls.get(), 4);

        // Never for a usage error, a runtime error of the run's own, or a stop.
        for e in [
            Error::Usage("x".into()),
            Error::Runtime("x".into()),
            Error::Interrupted,
        ] {
            let code = e.code();
            let once = Cell::new(Some(e));
            calls.set(0);
            let out: Result<(), Error> = run(policy, "sync", &stop, |_| {
                calls.set(calls.get() + 1);
                let e = once.take().unwrap_or(Error::Interrupted);
                async move { Err(e) }
            })
            .await;
            assert_eq!(out.unwrap_err().code(), code);
            assert_eq!(calls.get(), 1);
        }
        stop.request();
        calls.set(0);
        let out: Result<(), Error> = run(policy, "sync", &stop, |_| {
            calls.set(calls.get() + 1);
            async { Err(lost()) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.get(), 1, "a stop asked for is not retried");
    }
}
