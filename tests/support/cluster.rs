//! Two real PostgreSQL clusters per test binary: `source` (the joint database's server)
//! and `target` (the retail database's server), started once on free ports in temporary
//! directories. A watchdog process per cluster stops it and removes its directory as soon
//! as the test binary exits, whether the tests passed, panicked or the binary was killed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A running cluster.
pub struct Cluster {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed the server certificate, when the cluster serves TLS.
    pub ca_cert: Option<PathBuf>,
    /// The cluster's directory (data, log, socket).
    dir: PathBuf,
    /// The server options it was started with.
    options: String,
}

/// A role of the TLS cluster that may only log in over TLS.
pub const TLS_ONLY_ROLE: &str = "shadan_tls_only";
/// A role of the TLS cluster that logs in with a password (SCRAM).
pub const PASSWORD_ROLE: &str = "shadan_pw_user";

/// The two clusters of this test binary.
pub struct Clusters {
    /// Server of the joint (grid) database.
    pub source: Cluster,
    /// Server of the retail database.
    pub target: Cluster,
}

static CLUSTERS: OnceLock<Clusters> = OnceLock::new();

/// The clusters of this test binary, started on first use.
pub fn clusters() -> &'static Clusters {
    CLUSTERS.get_or_init(|| {
        // The source serves TLS (as a grid company's server would); the target does not,
        // so both `sslmode=require` succeeding and being refused can be tested.
        let source = std::thread::spawn(|| Cluster::start("source", true));
        let target = Cluster::start("target", false);
        Clusters {
            source: source.join().expect("starting the source cluster"),
            target,
        }
    })
}

/// Directory of the PostgreSQL server binaries (PG_BIN, else the newest Debian one).
pub fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server found under /usr/lib/postgresql; install the postgresql package or set PG_BIN")
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A command for a PostgreSQL server binary, run as the `postgres` OS user when we are
/// root (initdb and postgres refuse to run as root).
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn start(name: &str, tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("shadan-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the cluster directory");
        if running_as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(&dir);
                    c
                },
                "chown cluster directory",
            );
        }
        let data = dir.join("data");
        let mut initdb = pg_command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb");
        let port = free_port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300 -c shared_buffers=128MB \
             -c max_prepared_transactions=10",
            dir.display()
        );
        let ca_cert = tls.then(|| {
            let (ca, cert, key) = make_certificates(&dir);
            options.push_str(&format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display()));
            let hba = data.join("pg_hba.conf");
            let rules = format!(
                "hostssl all {TLS_ONLY_ROLE} 127.0.0.1/32 trust\nhost all {TLS_ONLY_ROLE} 127.0.0.1/32 reject\n\
                 host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n{}",
                std::fs::read_to_string(&hba).expect("reading pg_hba.conf")
            );
            std::fs::write(&hba, rules).expect("writing pg_hba.conf");
            ca
        });
        let mut ctl = pg_command("pg_ctl");
        ctl.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-o", &options, "-w", "start"]);
        run(ctl, "pg_ctl start");
        spawn_watchdog(&data, &dir);
        Cluster {
            port,
            ca_cert,
            dir,
            options,
        }
    }

    /// A cluster of one test's own (for tests that stop or reset it), started now and
    /// stopped when the test binary exits.
    pub fn private(name: &str) -> &'static Cluster {
        Box::leak(Box::new(Cluster::start(name, false)))
    }

    /// Stops the cluster, moves its next transaction id to `xid` with `pg_resetwal -x`
    /// and starts it again. `xid` must start a pg_xact page (a multiple of 32768), so
    /// that the server creates the page when it first assigns it.
    pub fn restart_at_xid(&self, xid: u32) {
        assert_eq!(xid % 32768, 0, "the next xid must start a pg_xact page");
        self.stop("fast");
        let mut reset = pg_command("pg_resetwal");
        reset
            .args(["-x", &xid.to_string()])
            .arg("-D")
            .arg(self.dir.join("data"));
        run(reset, "pg_resetwal -x");
        self.start_again();
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: no shutdown checkpoint,
    /// every session cut, crash recovery at the next start) and starts it again.
    pub fn restart_immediately(&self) {
        self.stop("immediate");
        self.start_again();
    }

    fn stop(&self, mode: &str) {
        let mut stop = pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "stop"]);
        run(stop, "pg_ctl stop");
    }

    fn start_again(&self) {
        let mut start = pg_command("pg_ctl");
        start
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.log())
            .args(["-o", &self.options, "-w", "start"]);
        run(start, "pg_ctl start");
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// A connection URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `psql` against database `db`, panicking on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(db))
            .args(["-c", sql])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Cluster {
    /// Runs one statement in database `db`; returns stderr when psql fails.
    pub fn psql_status(&self, db: &str, sql: &str) -> Result<(), String> {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(db))
            .args(["-c", sql])
            .output()
            .expect("running psql");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// A throwaway CA and a server certificate for localhost and 127.0.0.1 signed by it, the
/// key readable only by the server. Returns (CA certificate, server certificate, key).
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let path = |f: &str| dir.join(f);
    let openssl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.args(args).current_dir(dir);
        run(c, "openssl");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3",
        "-subj",
        "/CN=shadan test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        path("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("writing san.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path("server.key"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod server.key");
    if running_as_root() {
        let mut c = Command::new("chown");
        c.arg("postgres:")
            .arg(path("server.key"))
            .arg(path("server.crt"));
        run(c, "chown server key");
    }
    (path("ca.crt"), path("server.crt"), path("server.key"))
}

/// Stops the cluster and removes its directory once this test process is gone.
fn spawn_watchdog(data: &Path, dir: &Path) {
    let pg_ctl = pg_bin().join("pg_ctl");
    let stop = if running_as_root() {
        format!(
            "runuser -u postgres -- {} -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "{} -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    // `setsid -f` forks the watchdog into its own session and returns at once.
    let status = Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("starting the cluster watchdog");
    assert!(status.success(), "starting the cluster watchdog failed");
}
