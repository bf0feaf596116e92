//! Test support: real clusters ([`cluster`]), a fresh pair of databases per test
//! ([`TestDb`]), and running the `shadan` binary the way a user does.

pub mod cluster;
pub mod held;
pub mod proxy;

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

    /// Creates empty databases with a unique name: the source on `source`, the target
    /// on the shared target cluster.
    pub fn on(source: &'static Cluster) -> Self {
        let c = clusters();
        let name = format!(
            "t{}_{}",
            NEXT_DB.fetch_add(1, Ordering::SeqCst),
            std::process::id()
        );
        for cluster in [source, &c.target] {
            cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
        }
        Self {
            name,
            source_cluster: source,
            target_cluster: &c.target,
        }
    }

    /// Creates empty databases with a unique name on the given clusters.
    pub fn between(source: &'static Cluster, target: &'static Cluster) -> Self {
        let name = format!(
            "t{}_{}",
            NEXT_DB.fetch_add(1, Ordering::SeqCst),
            std::process::id()
        );
        for cluster in [source, target] {
            cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
        }
        Self {
            name,
            source_cluster: source,
            target_cluster: target,
        }
    }

    /// Creates databases and loads `schema/joint.sql` and `schema/retail.sql`.
    pub fn with_reference_schema() -> Self {
        Self::new().reference_schema()
    }

    /// Loads `schema/joint.sql` into the source and `schema/retail.sql` into the target.
    pub fn reference_schema(self) -> Self {
        self.source_sql(&std::fs::read_to_string(repo().join("schema/joint.sql")).unwrap());
        self.target_sql(&std::fs::read_to_string(repo().join("schema/retail.sql")).unwrap());
        self
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

    /// Whether exactly one session on this test's target database waits on a lock in a
    /// statement that begins with `prefix`.
    pub fn target_waits_in(&self, prefix: &str) -> bool {
        self.target_sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock' \
             AND query LIKE '{prefix}%'",
            self.name
        )) == "1"
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

    /// Starts `shadan` in the background with its output discarded (to be killed or
    /// waited for by the test).
    pub fn spawn_quiet(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting shadan")
    }

    /// Starts `shadan cutover --mapping mappings/retail.toml` with `args`, waits until
    /// `batches` batches are written, and kills it (SIGKILL).
    pub fn cutover_killed_after(&self, batches: usize, args: &[&str]) {
        let mut all = vec!["cutover", "--mapping", "mappings/retail.toml"];
        all.extend_from_slice(args);
        let mut child = self.spawn_quiet(&all);
        self.wait_for_batches(&mut child, batches);
        child.kill().expect("killing shadan");
        child.wait().expect("waiting for shadan");
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

    /// Asserts the exit code and that stderr says `needle` (showing stderr when not).
    pub fn expect_stderr(&self, code: i32, needle: &str) -> &Self {
        self.expect_code(code);
        assert!(self.stderr.contains(needle), "{}", self.stderr);
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

/// Applies what `shadan grants --views --role <role>` prints for the mapping text
/// `mapping` on the source, as its DBA would, and returns a mapping file with the same
/// tables that reads through those export views.
pub fn through_export_views(db: &TestDb, mapping: &str, role: &str) -> PathBuf {
    let direct = write_mapping(db, mapping);
    let script = db.shadan(&["grants", "--mapping", s(&direct), "--role", role, "--views"]);
    script.expect_code(0);
    db.source_sql(&script.stdout);
    write_mapping(
        db,
        &mapping.replacen("[mapping]\n", "[mapping]\nsource_access = \"views\"\n", 1),
    )
}

/// The reference mapping's text.
pub fn reference_mapping() -> String {
    std::fs::read_to_string(repo().join("mappings/retail.toml")).unwrap()
}

/// A path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Fills the reference joint schema with `n` supply points and contracts
/// (scripts/gen-data.sh, the same generator the benchmark uses).
pub fn reference_data(db: &TestDb, n: usize) {
    let out = Command::new(repo().join("scripts/gen-data.sh"))
        .arg(n.to_string())
        .arg(db.source_url())
        .env("PSQL", cluster::pg_bin().join("psql"))
        .output()
        .expect("running gen-data.sh");
    assert!(
        out.status.success(),
        "gen-data.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The permitted projection of joint.contracts, computed independently of shadan in
/// plain SQL: own retailer's retail contracts only, every copied column.
pub const CONTRACTS_EXPECTED: &str = "SELECT contract_id, supply_point_id, holder_name, holder_name_kana, phone, \
    contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, start_date, end_date \
    FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' ORDER BY contract_id";
/// retail.contracts in the same column order.
pub const CONTRACTS_ACTUAL: &str = "SELECT contract_id, supply_point_id, holder_name, holder_name_kana, phone_number, \
    contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment, start_date, end_date \
    FROM retail.contracts ORDER BY contract_id";
/// The permitted projection of joint.supply_points: every row, public columns.
pub const SUPPLY_POINTS_EXPECTED: &str =
    "SELECT supply_point_id, address, postal_code, voltage_class, area FROM joint.supply_points ORDER BY 1";
/// retail.supply_points in the same column order.
pub const SUPPLY_POINTS_ACTUAL: &str =
    "SELECT supply_point_id, address, postal_code, voltage_class, area FROM retail.supply_points ORDER BY 1";

impl TestDb {
    /// Rows of a source query in COPY text form, one line per row.
    pub fn source_rows(&self, select: &str) -> String {
        self.source_sql(&format!("COPY ({select}) TO STDOUT"))
    }

    /// Rows of a target query in COPY text form, one line per row.
    pub fn target_rows(&self, select: &str) -> String {
        self.target_sql(&format!("COPY ({select}) TO STDOUT"))
    }

    /// Asserts that the target query `actual` returns exactly the rows of the source
    /// query `expected` (an independent SQL projection); on failure prints `what` and
    /// counts only, never row values.
    pub fn assert_same_rows(&self, expected: &str, actual: &str, what: &str) {
        let (e, a) = (self.source_rows(expected), self.target_rows(actual));
        // Two empty sides prove nothing about the copy: a test of an empty projection
        // says so with its own count.
        assert!(!e.is_empty(), "{what}: the expected projection is empty");
        assert!(
            e == a,
            "{what}: {} expected rows, {} target rows",
            e.lines().count(),
            a.lines().count()
        );
    }

    /// Asserts that the target holds exactly the independently computed projection of the
    /// reference tables. On failure only counts are printed, never row values.
    pub fn assert_reference_copy_exact(&self) {
        for (what, expected, actual) in [
            ("contracts", CONTRACTS_EXPECTED, CONTRACTS_ACTUAL),
            (
                "supply points",
                SUPPLY_POINTS_EXPECTED,
                SUPPLY_POINTS_ACTUAL,
            ),
        ] {
            let e = self.source_rows(expected);
            let a = self.target_rows(actual);
            let (el, al) = (e.lines().count(), a.lines().count());
            let differing = e.lines().zip(a.lines()).filter(|(x, y)| x != y).count();
            assert!(
                e == a,
                "{what}: target differs from the projection: {el} expected rows, {al} target rows, {differing} differing lines"
            );
            assert!(el > 0, "{what}: the test data is empty");
        }
    }

    /// Runs SQL on the target, returning `None` when it fails (for polling).
    pub fn try_target_sql(&self, sql: &str) -> Option<String> {
        let out = Command::new(cluster::pg_bin().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-d"])
            .arg(self.target_url())
            .args(["-c", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Batches written so far (0 before the state schema exists).
    pub fn written_batches(&self) -> usize {
        self.try_target_sql("SELECT count(*) FROM shadan.batches WHERE rows IS NOT NULL")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Waits (at most 60 s) until at least `n` batches are written while `child` runs.
    pub fn wait_for_batches(&self, child: &mut std::process::Child, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.written_batches() < n {
            assert!(
                child.try_wait().unwrap().is_none(),
                "shadan finished before {n} batches were written; the test needs more data"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "no progress within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl TestDb {
    /// The source URL for logging in as `role` (the test clusters trust local logins).
    pub fn source_url_as(&self, role: &str) -> String {
        format!(
            "postgres://{role}@127.0.0.1:{}/{}",
            self.source_cluster.port, self.name
        )
    }

    /// The target URL for logging in as `role`.
    pub fn target_url_as(&self, role: &str) -> String {
        format!(
            "postgres://{role}@127.0.0.1:{}/{}",
            self.target_cluster.port, self.name
        )
    }

    /// Runs `shadan` with the source and/or target reached as other roles.
    pub fn shadan_as(
        &self,
        source_role: Option<&str>,
        target_role: Option<&str>,
        args: &[&str],
    ) -> Run {
        let mut c = self.command(args);
        if let Some(r) = source_role {
            c.env("SHADAN_SOURCE", self.source_url_as(r));
        }
        if let Some(r) = target_role {
            c.env("SHADAN_TARGET", self.target_url_as(r));
        }
        Run::from(c.output().expect("running shadan"))
    }

    /// Runs SQL on the source as the superuser; returns stdout, or stderr when it fails.
    pub fn source_sql_result(&self, sql: &str) -> Result<String, String> {
        self.source_sql_as("postgres", sql)
    }

    /// Runs SQL on the source as `role`; returns stdout, or stderr when it fails.
    pub fn source_sql_as(&self, role: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(cluster::pg_bin().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.source_url_as(role))
            .args(["-c", sql])
            .output()
            .expect("running psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

/// Another team's mapping in the documented format: a composite text key, scope "all" with
/// own columns, an integer `only` filter and renames (schema `nw` -> `rt`).
pub const OTHER_TEAM_MAPPING: &str = r#"
[mapping]
name = "gas-and-power"
own_retailer = "17"

[[table]]
source = "nw.meter_reading"
target = "rt.readings"
key = ["area_code", "spid"]
scope = "all"
owner = "retailer"
only = { tariff_class = [1, 2, 3] }

[table.columns]
area_code     = { class = "public", to = "area" }
spid          = "public"
read_on       = "public"
kwh           = "own"
customer_name = { class = "own", to = "name" }
retailer      = "non_public"
tariff_class  = "non_public"
meter_serial  = "non_public"
"#;
