//! Sessions a test keeps open to hold locks while shadan runs, and waiting for the
//! servers or a process to reach a state.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::pg_bin;

/// A psql session whose statements run as they are written: a transaction left open in
/// it holds its locks until [`Held::end`].
pub struct Held {
    child: Child,
    stdin: ChildStdin,
}

impl Held {
    /// Opens a session on `url` and runs `sql` in it (typically `BEGIN; …;`).
    pub fn open(url: &str, sql: &str) -> Self {
        let mut child = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting psql");
        let mut stdin = child.stdin.take().expect("psql's stdin");
        writeln!(stdin, "{sql}").expect("writing to psql");
        stdin.flush().expect("writing to psql");
        Self { child, stdin }
    }

    /// Runs `sql` (typically `COMMIT;` or `ROLLBACK;`) and closes the session; true
    /// when psql succeeded.
    pub fn end(mut self, sql: &str) -> bool {
        let _ = writeln!(self.stdin, "{sql}");
        drop(self.stdin);
        self.child.wait().is_ok_and(|s| s.success())
    }
}

/// Polls `done` every 20 ms; panics with `what` when it is still false after `secs`.
pub fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (`INT`, `TERM`) to `child` `times` times, 300 ms apart.
pub fn signal(child: &Child, signal: &str, times: usize) {
    for _ in 0..times {
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("running kill");
        std::thread::sleep(Duration::from_millis(300));
    }
}
