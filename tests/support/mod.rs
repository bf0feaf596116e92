//! Test support: real clusters ([`cluster`]), a fresh pair of databases per test
//! ([`TestDb`]), and running the `shadan` binary the way a user does.

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use cluster::{clusters, Cluster};

static NEXT_DB: AtomicUsize = AtomicUsize::new(1);

/// A fresh source database and a fresh target database for one test, dropped afterwards.
pub struct TestDb {
    /// Database name, the same on both clusters.
    pub name: String,
    /// The source cluster.
    pub source_cluster: &'static Cluster,
    /// The target cluster.
    pub target_cluster: &'static Cluster,
}

/// The repository root (for schema/ and mappings/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl TestDb {
    /// Creates empty databases with a unique name on both clusters.
    pub fn new() -> Self {
        let c = clusters();
        let name = format!(
            "t{}_{}",
            NEXT_DB.fetch_add(1, Ordering::SeqCst),
            std::process::id()
        );
        for cluster in [&c.source, &c.target] {
            cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
        }
        Self {
            name,
            source_cluster: &c.source,
            target_cluster: &c.target,
        }
    }

    /// Creates databases and loads `schema/joint.sql` and `schema/retail.sql`.
    pub fn with_reference_schema() -> Self {
        let db = Self::new();
        db.source_sql(&std::fs::read_to_string(repo().join("schema/joint.sql")).unwrap());
        db.target_sql(&std::fs::read_to_string(repo().join("schema/retail.sql")).unwrap());
        db
    }

    /// Source connection URL.
    pub fn source_url(&self) -> String {
        self.source_cluster.url(&self.name)
    }

    /// Target connection URL.
    pub fn target_url(&self) -> String {
        self.target_cluster.url(&self.name)
    }

    /// Runs SQL on the source database; returns psql's unaligned output.
    pub fn source_sql(&self, sql: &str) -> String {
        self.source_cluster.psql(&self.name, sql)
    }

    /// Runs SQL on the target database; returns psql's unaligned output.
    pub fn target_sql(&self, sql: &str) -> String {
        self.target_cluster.psql(&self.name, sql)
    }

    /// The `shadan` command with this test's databases in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shadan"));
        c.args(args)
            .env("SHADAN_SOURCE", self.source_url())
            .env("SHADAN_TARGET", self.target_url())
            .env_remove("RUST_LOG")
            .current_dir(repo());
        c
    }

    /// Runs `shadan` to completion.
    pub fn shadan(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("running shadan"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        for cluster in [self.source_cluster, self.target_cluster] {
            let _ = Command::new(cluster::pg_bin().join("psql"))
                .args(["-X", "-q", "-d"])
                .arg(cluster.url("postgres"))
                .args([
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                ])
                .output();
        }
    }
}

/// A finished `shadan` run.
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Both streams, for checks that something appears nowhere.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Writes a mapping file into a temporary place and returns its path.
pub fn write_mapping(db: &TestDb, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shadan-mappings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", db.name));
    std::fs::write(&path, text).unwrap();
    path
}

/// The reference mapping's text.
pub fn reference_mapping() -> String {
    std::fs::read_to_string(repo().join("mappings/retail.toml")).unwrap()
}

/// A path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
