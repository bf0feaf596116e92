//! One writer at a time: a cutover or sync holds a session-level advisory lock on the
//! target for its whole run. The lock dies with the session, so a killed process never
//! leaves it behind.

use tokio_postgres::Client;

use crate::connect::{Conn, Endpoint};
use crate::error::Error;
use crate::target::trust;
use deadpool_postgres::ClientWrapper;

/// Advisory lock key (two int4 halves): "SH" and 1, the same for every shadan version.
const LOCK_KEY: (i32, i32) = (0x5348, 1);

/// Holds the target's writer lock while alive.
pub struct TargetLock {
    client: ClientWrapper,
}

impl TargetLock {
    /// Takes the lock or fails at once, naming the session that holds it. With the lock
    /// comes the check that the target's state schema, if there is one, is the tool's
    /// alone ([`trust::check`]): both are sent in one flight.
    pub async fn acquire(endpoint: &Endpoint, command: &str) -> Result<Self, Error> {
        let client = endpoint.connect().await?;
        let (got, owned) = tokio::join!(
            client.query_typed_one(
                "SELECT pg_catalog.pg_try_advisory_lock($1, $2)",
                &[
                    (&LOCK_KEY.0, tokio_postgres::types::Type::INT4),
                    (&LOCK_KEY.1, tokio_postgres::types::Type::INT4),
                ],
            ),
            trust::check(&client)
        );
        let got: bool = got
            .map_err(Error::db("taking the target's writer lock"))?
            .get(0);
        if got {
            // Out of the pool: the lock ends with this value, its session closed (also
            // when the state schema is refused).
            let lock = Self {
                client: Conn::take(client),
            };
            owned?;
            return Ok(lock);
        }
        let holder = client
            .query_opt(
                "SELECT a.pid, coalesce(a.client_addr::text, 'local'), \
                        to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
                 FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid AND l.objid = $2::int::oid \
                   AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d \
                                     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())",
                &[&LOCK_KEY.0, &LOCK_KEY.1],
            )
            .await
            .ok()
            .flatten()
            .map(|r| {
                format!(
                    " (server pid {}, from {}, connected since {} UTC)",
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2)
                )
            })
            .unwrap_or_default();
        Err(Error::Runtime(format!(
            "another shadan cutover or sync is running against the target {endpoint}{holder}; \
             {command} refused: wait for it to finish, or stop it first"
        )))
    }

    /// The lock's session, usable for the run's own state writes.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
