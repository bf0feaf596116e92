//! Connections to the two databases.
//!
//! A connection string comes from `--source`/`--target`, else `SHADAN_SOURCE`/
//! `SHADAN_TARGET`; parts it leaves out are filled from the standard `PG*` variables like
//! libpq does; TLS options follow libpq too ([`crate::tls`]). What is shown of an
//! endpoint in messages is `user@host:port/dbname`: the password is never printed or
//! logged.
//!
//! Each endpoint has one deadpool-postgres pool, made anew for each attempt of a command
//! (a `--retry` starts from a new pool). A command opens the connections its run needs
//! at once, in parallel ([`Endpoint::warm`]); every session then comes from the pool, so
//! the catalog's connection becomes the lock's, and a worker of one level hands its
//! connections to the next, without a new login.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config};

use crate::error::DbError;
use crate::tls::LazyTls;

/// A connection from an endpoint's pool; it derefs to a [`tokio_postgres::Client`] and
/// goes back to the pool when dropped.
pub type Conn = deadpool_postgres::Object;

/// Connections a pool may hold beyond what [`Endpoint::warm`] opens for a run.
const POOL_SIZE: usize = 16;

/// Settings every session gets, on both servers, before any other statement:
/// - `search_path` pinned to `pg_catalog, pg_temp`: a neighbour who can create objects in
///   `public` (or any schema a role's default path names) cannot shadow an operator or a
///   function the tool's SQL uses; functions and operators are never looked up in
///   `pg_temp`. Generated SQL qualifies them too; this covers every other statement.
/// - `row_security = off`: a table that row-level security would filter for the tool's
///   role raises an error instead of returning a silent subset (see
///   [`crate::error::DbError`] for the message).
/// - `client_connection_check_interval`: a statement of a shadan that was stopped at once
///   (or killed) is aborted by the server within a second, not left running or waiting.
/// - fixed text forms (key bounds are exchanged as text), and no timeouts that would cut
///   a long snapshot transaction off.
const SESSION_SETUP: &str = "SET search_path = pg_catalog, pg_temp; SET row_security = off; \
    SET client_connection_check_interval = '1s'; \
    SET DateStyle = ISO, YMD; SET IntervalStyle = postgres; \
    SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = hex; SET statement_timeout = 0; \
    SET idle_in_transaction_session_timeout = 0; SET lock_timeout = 0";

/// The cancel token of every connection opened, for a stop at once ([`cancel_all`]).
static OPEN: std::sync::Mutex<Vec<(tokio_postgres::CancelToken, LazyTls)>> =
    std::sync::Mutex::new(Vec::new());

/// Asks both servers to cancel whatever statement each of this process's connections is
/// running (a separate cancel request per connection, as `pg_cancel_backend` does), and
/// waits at most 3 s for the requests to be delivered. A stop at once cannot rely on the
/// connection closing: a COPY whose data the server has not read yet, or one waiting on
/// a lock, would keep running until the server next reads from the socket.
pub async fn cancel_all() {
    let open = OPEN
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    let requests = open.into_iter().map(|(token, tls)| async move {
        let _ = token.cancel_query(tls).await;
    });
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        futures_util::future::join_all(requests),
    )
    .await;
}

/// Which of the two databases an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The grid company's joint database (read only).
    Source,
    /// The retail company's database (written).
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// A database to connect to; `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct Endpoint {
    /// Source or target.
    pub side: Side,
    config: Config,
    pool: Pool,
}

/// How the pool opens a connection: the session settings every connection gets, a
/// driver task that drops the server's notices, and its cancel token registered for a
/// stop at once.
struct Connector {
    tls: LazyTls,
}

impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        config: &Config,
    ) -> Pin<
        Box<
            dyn Future<
                    Output = Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
                > + Send
                + '_,
        >,
    > {
        let (config, tls) = (config.clone(), self.tls.clone());
        Box::pin(async move {
            let (client, connection) = config.connect(tls.clone()).await?;
            // Server NOTICEs are dropped unread: any function on the server can raise
            // one with any text, row values included.
            let driver = tokio::spawn(async move {
                let mut connection = connection;
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                    if let Err(e) = message {
                        tracing::debug!(error = %DbError::from(e), "connection closed with an error");
                        break;
                    }
                }
            });
            client.batch_execute(SESSION_SETUP).await?;
            if let Ok(mut open) = OPEN.lock() {
                open.push((client.cancel_token(), tls));
            }
            Ok((client, driver))
        })
    }
}

/// Connecting failed or the connection settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No connection string was given.
    #[error("no {side} database given: pass --{side} URL or set {var}")]
    Missing {
        /// Source or target.
        side: Side,
        /// The environment variable that would have supplied it.
        var: &'static str,
    },
    /// The connection string does not parse.
    #[error("the {side} connection string is invalid: {message}; use a postgres:// URL or key=value pairs")]
    Invalid {
        /// Source or target.
        side: Side,
        /// What is wrong (the string itself is not repeated: it may hold a password).
        message: String,
    },
    /// The server could not be reached or refused the login.
    #[error("cannot connect to the {side} database {endpoint}: {cause}; check the connection string, that the server is up and that the role may log in")]
    Unreachable {
        /// Source or target.
        side: Side,
        /// `user@host:port/dbname`.
        endpoint: String,
        /// Why (no password, no row values).
        cause: DbError,
    },
}

impl Endpoint {
    /// Builds an endpoint from a flag or environment value (`None` when neither was given).
    pub fn new(side: Side, value: Option<&str>) -> Result<Self, ConnectError> {
        let var = match side {
            Side::Source => "SHADAN_SOURCE",
            Side::Target => "SHADAN_TARGET",
        };
        let value = value.ok_or(ConnectError::Missing { side, var })?;
        let invalid = |message: String| ConnectError::Invalid { side, message };
        let (rest, tls) = crate::tls::split_options(value).map_err(invalid)?;
        let mut config: Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| invalid(parse_error(&e)))?;
        config.ssl_mode(tls.mode.negotiation());
        fill_from_environment(&mut config);
        let tls = crate::tls::connector(&tls).map_err(invalid)?;
        // A connection is handed out again as it was left: whoever takes one begins its
        // own transaction, and no session setting outlives a use but those every
        // connection gets (see `SESSION_SETUP`) and key bounds, bound before each read.
        let manager = Manager::from_connect(
            config.clone(),
            Connector { tls },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // A run never waits for a connection (its pool is sized to it): a wait that long
        // is a miscount, reported rather than hung on.
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(60)))
            .build()
            .map_err(|e| invalid(format!("cannot set up a connection pool: {e}")))?;
        Ok(Self { side, config, pool })
    }

    /// The error for a connection that failed or broke while being set up.
    fn unreachable(&self, cause: DbError) -> ConnectError {
        ConnectError::Unreachable {
            side: self.side,
            endpoint: self.to_string(),
            cause,
        }
    }

    /// A connection for a worker that writes batches. Its commits do not wait for the WAL
    /// flush (`synchronous_commit = off`): each batch still commits atomically with its
    /// checkpoint and WAL stays ordered, so a server crash can only rewind to an earlier
    /// consistent state that `--resume` or the next sync continues from. The run's
    /// closing commit on the lock session, the first connection a run takes, is
    /// synchronous and flushes all of them.
    pub async fn connect_writer(&self) -> Result<Conn, ConnectError> {
        let client = self.connect().await?;
        client
            .batch_execute("SET synchronous_commit = off")
            .await
            .map_err(|e| self.unreachable(DbError::from(e)))?;
        Ok(client)
    }

    /// A connection from the pool: an idle one, else a new one.
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        self.pool.get().await.map_err(|e| {
            self.unreachable(match e {
                deadpool_postgres::PoolError::Backend(e) => DbError::from(e),
                deadpool_postgres::PoolError::Timeout(_) => DbError::other(
                    "every connection of shadan's pool stayed in use for a minute (a miscount of \
                     the run's connections; please report it)",
                ),
                other => DbError::other(&other.to_string()),
            })
        })
    }

    /// Sizes the pool to a run that holds up to `connections` at once, and opens them all
    /// now, in parallel: a run then never waits for a login in the middle.
    pub async fn warm(&self, connections: usize) -> Result<(), ConnectError> {
        let status = self.pool.status();
        if status.max_size < connections + POOL_SIZE {
            self.pool.resize(connections + POOL_SIZE);
        }
        let missing = connections.saturating_sub(status.size);
        let opened =
            futures_util::future::try_join_all((0..missing).map(|_| self.connect())).await?;
        drop(opened);
        Ok(())
    }
}

/// tokio-postgres's parse error, when it names only an option (`invalid value for option
/// `port``); otherwise a fixed text, since other errors can repeat a piece of the string.
fn parse_error(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    const OPTIONS: &[&str] = &[
        "host",
        "hostaddr",
        "port",
        "user",
        "password",
        "dbname",
        "options",
        "application_name",
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "target_session_attrs",
        "channel_binding",
        "load_balance_hosts",
    ];
    match text
        .strip_prefix("invalid value for option `")
        .and_then(|r| r.strip_suffix('`'))
    {
        Some(option) if OPTIONS.contains(&option) => format!("invalid value for option `{option}`"),
        _ => "it does not parse (the string is not repeated here: it may hold a password)".into(),
    }
}

/// Fills what the connection string left out from the standard libpq variables.
fn fill_from_environment(config: &mut Config) {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        let host = env("PGHOST").unwrap_or_else(|| "/var/run/postgresql".into());
        for h in host.split(',') {
            config.host(h);
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            config.password(pw);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("shadan");
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("?");
        let db = self.config.get_dbname().unwrap_or(user);
        write!(f, "{user}@{host}:{port}/{db}")
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({} {self}, password <redacted>)", self.side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_display_and_debug_hide_the_password() {
        let e = Endpoint::new(
            Side::Source,
            Some("postgres://alice:s3cret-pw@db.example:6543/joint"),
        )
        .unwrap();
        assert_eq!(e.to_string(), "alice@db.example:6543/joint");
        assert!(!format!("{e:?}").contains("s3cret-pw"));
        let kv = Endpoint::new(
            Side::Target,
            Some("host=h user=u password=pw123456 dbname=d"),
        )
        .unwrap();
        assert!(!format!("{kv} {kv:?}").contains("pw123456"));
    }

    #[test]
    fn unparsable_strings_never_repeat_a_value() {
        for conn in [
            "postgres://u@h/db?password=pw%E6%BC%A2x%漢字",
            "host=h password=my secret",
            "postgres://u@h/db?s3cretpart=1",
            "host=h port=s3cretpart",
        ] {
            match Endpoint::new(Side::Source, Some(conn)) {
                Ok(e) => assert!(!format!("{e} {e:?}").contains("s3cret"), "{conn}"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        !text.contains("secret")
                            && !text.contains("s3cret")
                            && !text.contains('漢'),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn missing_endpoint_says_which_flag_and_variable() {
        let err = Endpoint::new(Side::Target, None).unwrap_err().to_string();
        assert!(
            err.contains("--target") && err.contains("SHADAN_TARGET"),
            "{err}"
        );
    }
}
