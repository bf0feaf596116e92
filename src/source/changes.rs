//! Change detection for sync, by tuple `xmin`, with no change log, trigger or
//! replication privilege: SELECT on the table's `xmin` column is enough.
//!
//! # Why it cannot miss a change
//!
//! A batch's checkpoint records the *horizon* of the snapshot it was made exact at: that
//! snapshot's xmin, as a 64-bit transaction id. Every transaction below the horizon had
//! ended then, so a tuple visible now whose `xmin` is below the horizon was committed and
//! visible then too, with the same values (a tuple version never changes; `VACUUM FREEZE`,
//! `VACUUM FULL` and `CLUSTER` keep its `xmin`). Its projection is therefore in the
//! target already. Everything else, rows of transactions that were still in flight at the
//! previous snapshot (subtransactions and prepared transactions included, whose xids are
//! at or above the horizon too) and rows written since, has an `xmin` at or above the
//! horizon, and sync reads exactly those. The target thus holds every row of the new
//! projection once they are written; what it may hold in excess (rows deleted or moved
//! out of scope, old keys of changed keys) shows as more rows than the source counts in
//! scope, and only batches whose counts disagree fetch their keys to find them.
//!
//! That argument needs the projection of an untouched tuple to stay the same, which the
//! *basis* checks: the mapping's projection of the table, the physical definition of its
//! columns and their types (a column dropped and added again, two columns renamed into
//! each other's places, an enum label renamed), and the source cluster's identity and
//! timeline (a restore from backup or a failover reuses transaction ids). A checkpoint
//! made under another basis, a missing horizon, a horizon too far behind for 32-bit xid
//! arithmetic, a source view (a join's rows change when another table does) or `--full`
//! make sync read the whole table instead, and say why.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::Error;
use crate::plan::TablePlan;
use crate::target::state::StoredBatch;

/// The cluster, the database and the server's start: a restore from a backup or a
/// storage snapshot (which needs a restart), a failover (a new timeline) or a database
/// recreated from a copy all bring back transaction ids an older horizon already counted
/// as seen, so they are part of every table's basis.
const CLUSTER_IDENTITY: &str =
    "SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system())::pg_catalog.text, \
            (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::pg_catalog.text, \
            (SELECT d.oid FROM pg_catalog.pg_database d \
             WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())::pg_catalog.text, \
            pg_catalog.pg_postmaster_start_time()::pg_catalog.text";

/// How far (in transactions) a horizon may lag the snapshot for a sync by changes: far
/// inside 2^31, beyond which `age()`'s 32-bit arithmetic stops being exact, leaving room
/// for the transactions that start while the run reads.
pub const MAX_XID_DISTANCE: i64 = 1 << 30;

/// How sync reads a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Only rows written at or after `horizon` (the oldest of the table's checkpoints).
    Changes {
        /// The 64-bit transaction id rows are read from.
        horizon: i64,
        /// The column carrying each row's `xmin`.
        column: &'static str,
    },
    /// Every batch in full, for the reason given.
    Full(String),
}

impl Path {
    /// `changes` or `full`, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Path::Changes { .. } => "changes",
            Path::Full(_) => "full",
        }
    }

    /// Why the table is read in full, if it is.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Path::Changes { .. } => None,
            Path::Full(reason) => Some(reason),
        }
    }
}

/// The basis of a table's checkpoints now: blake3 of the projection and of what decides
/// the bytes an untouched tuple projects to (see the module documentation). Read on the
/// snapshot's own session, so it describes the snapshot.
pub async fn basis(
    client: &Client,
    table: &TablePlan,
    own_retailer: &str,
) -> Result<String, Error> {
    let context = || format!("reading the definition of {}", table.source);
    // The definition and the cluster's identity together (the driver pipelines them).
    let (lines, cluster) = futures_util::future::try_join(
        async {
            client
                .query_typed(
                    include_str!("fingerprint.sql"),
                    &[
                        (&table.source.schema, Type::NAME),
                        (&table.source.name, Type::NAME),
                    ],
                )
                .await
                .map_err(Error::db(&context))
        },
        async {
            client
                .query_typed_one(CLUSTER_IDENTITY, &[])
                .await
                .map_err(Error::db(&context))
        },
    )
    .await?;
    let mut lines: Vec<String> = lines
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    lines.sort();
    let mut hasher = blake3::Hasher::new_derive_key("shadan 2026-12 change basis v1");
    let mut parts = vec![table.projection_digest(own_retailer)];
    parts.extend((0..4).map(|i| cluster.get::<_, Option<String>>(i).unwrap_or_default()));
    for part in parts.iter().chain(lines.iter()) {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// What a sync must know of how to read a table, besides its basis.
#[derive(Debug, Clone, Copy)]
pub struct ReadFacts {
    /// The column of the source relation that carries each row's `xmin` for the role,
    /// if there is one it may read: the table's own `xmin`, or the `shadan_xmin` column
    /// of an export view made by this version's grants script.
    pub change_column: Option<&'static str>,
    /// The server's estimate of the relation's rows (`pg_class.reltuples`; negative
    /// when never counted), for [`crate::plan::changes_sql::Reach::of`].
    pub rows_estimate: f64,
}

/// Reads a table's [`ReadFacts`] on the run's snapshot session.
pub async fn read_facts(client: &Client, table: &TablePlan) -> Result<ReadFacts, Error> {
    let none = ReadFacts {
        change_column: None,
        rows_estimate: -1.0,
    };
    if !matches!(table.source_kind, 'r' | 'p') {
        // A view's rows have no xmin of their own; a foreign table's xmin is meaningless.
        return Ok(none);
    }
    let (relation, column) = match table.access {
        crate::plan::SourceAccess::Tables => (table.source.clone(), "xmin"),
        crate::plan::SourceAccess::Views => (table.source_relation(), CHANGE_COLUMN),
    };
    let row = client
        .query_typed_opt(
            "SELECT pg_catalog.has_column_privilege(c.oid, $2::pg_catalog.text, 'SELECT') \
                AND ($2::pg_catalog.text OPERATOR(pg_catalog.=) 'xmin' OR EXISTS ( \
                    SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid \
                    AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.text AND NOT a.attisdropped \
                    AND a.atttypid OPERATOR(pg_catalog.=) 'pg_catalog.xid'::pg_catalog.regtype)), \
                c.reltuples::pg_catalog.float8 \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
             WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $3",
            &[
                (&relation.schema, Type::NAME),
                (&column, Type::TEXT),
                (&relation.name, Type::NAME),
            ],
        )
        .await
        .map_err(Error::db(format!("checking whether the role may read the row xmin of {relation}")))?;
    Ok(match row {
        Some(r) => ReadFacts {
            change_column: (r.get::<_, Option<bool>>(0) == Some(true)).then_some(column),
            rows_estimate: r.get::<_, Option<f64>>(1).unwrap_or(-1.0),
        },
        None => none,
    })
}

/// The column an export view made by `shadan grants --views` carries its table's row
/// `xmin` in.
pub const CHANGE_COLUMN: &str = "shadan_xmin";

/// Decides how a table with a stored layout is read, given its checkpoints, its basis
/// now, the column carrying `xmin` if the role can read one, the snapshot's xmax and
/// whether `--full` was given.
pub fn decide(
    table: &TablePlan,
    stored: &[StoredBatch],
    basis: &str,
    change_column: Option<&'static str>,
    snapshot_xmax: i64,
    full: bool,
) -> Path {
    let full_because = |why: &str| Path::Full(why.to_string());
    if full {
        return full_because("--full was given");
    }
    if table.source_is_view() {
        return full_because(
            "the source is a view: a row's xmin does not show changes that reach it through a join",
        );
    }
    let Some(column) = change_column else {
        return full_because(match table.access {
            crate::plan::SourceAccess::Tables => {
                "the role may not read the table's xmin: apply the script `shadan grants` prints now"
            }
            crate::plan::SourceAccess::Views => {
                "the export view has no shadan_xmin column: apply the script `shadan grants --views` prints now"
            }
        });
    };
    if stored.is_empty() || stored.iter().any(|b| b.written.is_none()) {
        return full_because("not every batch has a checkpoint yet");
    }
    if stored.iter().any(|b| !b.has_prints) {
        return full_because(
            "the checkpoints have no row prints yet (written by an older shadan); this run adds them",
        );
    }
    let horizons: Option<Vec<i64>> = stored.iter().map(|b| b.horizon).collect();
    let Some(horizon) = horizons.and_then(|h| h.into_iter().min()) else {
        return full_because("no recorded horizon (the checkpoints predate change tracking)");
    };
    if horizon > snapshot_xmax {
        return full_because("the recorded horizon is ahead of the source's transaction counter");
    }
    let distance = snapshot_xmax - horizon;
    if distance > MAX_XID_DISTANCE {
        return Path::Full(format!(
            "{distance} transactions since the recorded horizon: too close to the 32-bit xid wraparound window"
        ));
    }
    if stored.iter().any(|b| b.basis.as_deref() != Some(basis)) {
        return full_because(
            "the projection, the source columns' definitions, the source database or its server \
             (restarted, restored, failed over) changed since the last run",
        );
    }
    Path::Changes { horizon, column }
}

/// The stored batches in key order, following each batch's lower bound to the batch
/// whose upper bound it is (split batches are numbered after the others). `None` if the
/// bounds do not chain from the start of the key space to its end.
pub fn in_key_order(mut stored: Vec<StoredBatch>) -> Option<Vec<StoredBatch>> {
    let mut ordered = Vec::with_capacity(stored.len());
    let mut lower: Option<Vec<String>> = None;
    while !stored.is_empty() {
        let next = stored.iter().position(|b| b.batch.lower == lower)?;
        let b = stored.swap_remove(next);
        lower = b.batch.upper.clone();
        let last = lower.is_none();
        ordered.push(b);
        if last {
            break;
        }
    }
    (stored.is_empty() && lower.is_none()).then_some(ordered)
}

/// The horizon as the 32-bit transaction id the change query compares with.
pub fn horizon_xid(horizon: i64) -> String {
    (horizon as u64 & 0xffff_ffff).to_string()
}
