//! Consistent reads: one exported snapshot per database and run, shared by all workers.
//!
//! A [`Snapshot`] is exported once from a control session that keeps its transaction
//! open; every [`Session`] (one per worker) joins it with `SET TRANSACTION SNAPSHOT`, so
//! all tables and all batches reflect the same instant. Cutover and sync read the source
//! this way; verify reads both sides this way. Sessions are read-only transactions; they
//! bind the plan's values (own_retailer, `only` lists) as parameters of `set_config`
//! before any query runs.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio_postgres::Client;

use crate::catalog::Catalog;
use crate::connect::{Conn, Endpoint};
use crate::error::Error;
use crate::mapping::name::QualifiedName;
use crate::plan::query::{SessionSetting, SettingValue, OWN_RETAILER_SETTING};
use crate::plan::Plan;
use crate::source::batch::Batch;
use deadpool_postgres::ClientWrapper;

/// An exported snapshot, valid while this value (its control session) lives.
pub struct Snapshot {
    /// Keeps the exporting transaction open. (Taken out of the pool: it closes with the
    /// snapshot rather than going back in a transaction.)
    control: ClientWrapper,
    /// Holds ACCESS SHARE locks on the run's relations from before the snapshot was taken
    /// until the run ends (as pg_dump does), so no DDL can change them under the run.
    _guard: ClientWrapper,
    /// The identifier workers pass to `SET TRANSACTION SNAPSHOT`.
    pub id: String,
    /// `pg_current_snapshot()` of the exporting transaction (xmin:xmax:xip), for manifests.
    pub visible: String,
    /// When the snapshot was taken, per the source server's clock.
    pub taken_at: String,
    /// `pg_snapshot_xmin` as a 64-bit transaction id: every transaction below it had
    /// ended when the snapshot was taken (the horizon a sync reads changes from next).
    pub horizon: i64,
    /// `pg_snapshot_xmax` as a 64-bit transaction id: no transaction at or above it had
    /// started.
    pub xmax: i64,
}

impl Snapshot {
    /// Locks `relations` against DDL, then opens a repeatable-read, read-only transaction
    /// and exports its snapshot. The locks come first, in a session of their own, so the
    /// snapshot sees every definition change committed before them and none can follow.
    /// A zero-column `SELECT ... LIMIT 0` takes the lock: it needs only the column-level
    /// privileges the tool's role has, where `LOCK TABLE` would need table-level SELECT.
    pub async fn export(endpoint: &Endpoint, relations: &[QualifiedName]) -> Result<Self, Error> {
        let (guard, client) = tokio::try_join!(endpoint.connect(), endpoint.connect())?;
        // The statements are sent together (the driver pipelines them) and run in order.
        let holds = relations.iter().map(|relation| {
            let sql = format!("SELECT FROM {} LIMIT 0", relation.sql());
            let guard = &guard;
            async move {
                guard.batch_execute(&sql).await.map_err(Error::db(format!(
                    "holding {relation} against DDL for the run"
                )))
            }
        });
        tokio::try_join!(
            async {
                guard
                    .batch_execute("BEGIN READ ONLY")
                    .await
                    .map_err(Error::db(
                        "starting the transaction that holds the run's tables",
                    ))
            },
            futures_util::future::try_join_all(holds)
        )?;
        // Sent together: the transaction starts, then exports its snapshot.
        let (_, row) = tokio::try_join!(
            async {
                client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(Error::db("starting the snapshot transaction"))
            },
            async {
                client
                    .query_typed_one(
                        "SELECT pg_catalog.pg_export_snapshot(), pg_catalog.pg_current_snapshot()::pg_catalog.text, \
                         pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                         pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::pg_catalog.text::pg_catalog.int8, \
                         pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::pg_catalog.text::pg_catalog.int8",
                        &[],
                    )
                    .await
                    .map_err(Error::db("exporting the snapshot"))
            }
        )?;
        Ok(Self {
            control: Conn::take(client),
            _guard: Conn::take(guard),
            id: row.get(0),
            visible: row.get(1),
            taken_at: row.get(2),
            horizon: row.get(3),
            xmax: row.get(4),
        })
    }

    /// The exporting session, inside the snapshot (for catalog reads).
    pub fn client(&self) -> &Client {
        &self.control
    }

    /// The catalog as the snapshot sees it (for [`Plan::require_unchanged_source`]).
    pub async fn catalog(&self) -> Result<Catalog, Error> {
        Catalog::read(&self.control, crate::catalog::State::Ignored)
            .await
            .map_err(Error::db("reading the catalog in the snapshot"))
    }
}

/// One worker's read-only session on a shared snapshot.
pub struct Session {
    client: Conn,
}

impl Session {
    /// Connects, joins `snapshot` and binds the plan's values.
    pub async fn open(
        endpoint: &Endpoint,
        snapshot: &Snapshot,
        plan: &Plan,
    ) -> Result<Self, Error> {
        let (session, _) = Self::open_and_query(endpoint, snapshot, plan, &[], None).await?;
        Ok(session)
    }

    /// [`Session::open`], binding `extra` settings too, and running `first` (a query
    /// without parameters) on the snapshot in the same flight: one round trip for all.
    pub async fn open_and_query(
        endpoint: &Endpoint,
        snapshot: &Snapshot,
        plan: &Plan,
        extra: &[SessionSetting],
        first: Option<(&str, String)>,
    ) -> Result<(Self, Vec<tokio_postgres::Row>), Error> {
        let client = endpoint.connect().await?;
        // A snapshot id is server-generated hex and dashes; anything else is refused
        // rather than spliced (SET TRANSACTION SNAPSHOT takes no parameter).
        if snapshot.id.is_empty()
            || !snapshot
                .id
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(Error::Runtime(format!(
                "the source returned an unexpected snapshot id {:?}",
                snapshot.id
            )));
        }
        // A pooled connection may come back from an earlier session's transaction: that
        // one ends first (outside a transaction, ROLLBACK only warns). The plan's values
        // are bound, and the first query sent, in the same flight: the driver sends them
        // in this order before reading any answer, and the server runs them in it (a
        // failed join aborts the transaction, and what follows fails with it).
        let join = format!(
            "ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            snapshot.id
        );
        let mut settings = plan_settings(plan);
        settings.extend_from_slice(extra);
        let (_, _, rows) = tokio::try_join!(
            async {
                client
                    .batch_execute(&join)
                    .await
                    .map_err(Error::db("joining the source snapshot"))
            },
            bind(&client, &settings),
            async {
                match &first {
                    Some((sql, context)) => client
                        .query_typed(sql, &[])
                        .await
                        .map_err(Error::db(context.clone())),
                    None => Ok(Vec::new()),
                }
            }
        )?;
        Ok((Self { client }, rows))
    }

    /// [`Session::open`] for reading rows by unnamed statements
    /// ([`crate::copy::select_as_copy`]): the driver looks up a type it does not know
    /// while that statement's rows arrive on the same connection, and a few hundred rows
    /// ahead of the answer stall both. So every type the plan's projections return is
    /// learnt first, by one statement of typed NULLs (no row) sent with the snapshot
    /// join; the same every night, so the lookups' statement numbers do not depend on
    /// what changed.
    pub async fn open_knowing_types(
        endpoint: &Endpoint,
        snapshot: &Snapshot,
        plan: &Plan,
    ) -> Result<Self, Error> {
        let mut types: Vec<&str> = plan
            .tables
            .iter()
            .flat_map(|t| t.columns.iter().map(|c| c.type_name.as_str()))
            .collect();
        types.sort_unstable();
        types.dedup();
        let nulls: Vec<String> = types.iter().map(|t| format!("NULL::{t}")).collect();
        let learn = (!nulls.is_empty()).then(|| {
            (
                format!("SELECT {} LIMIT 0", nulls.join(", ")),
                "learning the types of the projection".to_string(),
            )
        });
        let first = learn.as_ref().map(|(sql, why)| (sql.as_str(), why.clone()));
        let (session, _) = Self::open_and_query(endpoint, snapshot, plan, &[], first).await?;
        Ok(session)
    }

    /// The connection, for running the plan's queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Binds settings as query parameters of `set_config`.
    pub async fn bind(&self, settings: &[SessionSetting]) -> Result<(), Error> {
        bind(&self.client, settings).await
    }

    /// Binds the key bounds of `batch`.
    pub async fn bind_batch(&self, batch: &Batch) -> Result<(), Error> {
        self.bind(&batch.settings()).await
    }
}

/// Binds settings on any session (the target uses this for key bounds too), all in one
/// typed statement: one round trip however many there are.
pub async fn bind(client: &Client, settings: &[SessionSetting]) -> Result<(), Error> {
    use tokio_postgres::types::Type;
    if settings.is_empty() {
        return Ok(());
    }
    let mut calls = Vec::with_capacity(settings.len());
    let mut params: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> = Vec::new();
    for s in settings {
        let (name, value) = (params.len() + 1, params.len() + 2);
        params.push((&s.name, Type::TEXT));
        match &s.value {
            SettingValue::Text(v) => {
                calls.push(format!("pg_catalog.set_config(${name}, ${value}, false)"));
                params.push((v, Type::TEXT));
            }
            SettingValue::List(values) => {
                calls.push(format!(
                    "pg_catalog.set_config(${name}, ${value}::pg_catalog.text[]::pg_catalog.text, false)"
                ));
                params.push((values, Type::TEXT_ARRAY));
            }
        }
    }
    let names: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
    client
        .execute_typed(&format!("SELECT {}", calls.join(", ")), &params)
        .await
        .map_err(Error::db(format!(
            "binding the session settings {}",
            names.join(", ")
        )))?;
    Ok(())
}

/// Every value the plan's source queries read: own_retailer and each table's `only` lists.
fn plan_settings(plan: &Plan) -> Vec<SessionSetting> {
    let mut settings = vec![SessionSetting {
        name: OWN_RETAILER_SETTING.to_string(),
        value: SettingValue::Text(plan.own_retailer.clone()),
    }];
    for t in &plan.tables {
        settings.extend(t.session_settings());
    }
    settings
}

/// What a copying worker opens: a session on the run's source snapshot and a writer
/// connection to the target ([`Endpoint::connect_writer`]). Returns the opener that
/// [`crate::workers::for_each`] calls once per worker.
pub fn reader_and_writer(
    plan: Arc<Plan>,
    source: Endpoint,
    target: Endpoint,
    snapshot: Arc<Snapshot>,
) -> impl Fn() -> BoxFuture<'static, Result<(Session, Conn), Error>> + Send + Sync + 'static {
    move || {
        let (plan, source, target, snapshot) = (
            plan.clone(),
            source.clone(),
            target.clone(),
            snapshot.clone(),
        );
        Box::pin(async move {
            // Both at once: each connection costs round trips to its server.
            tokio::try_join!(Session::open(&source, &snapshot, &plan), async {
                Ok(target.connect_writer().await?)
            })
        })
    }
}
