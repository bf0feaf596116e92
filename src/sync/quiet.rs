//! Quiet tables: those a sync by changes has nothing to do for, found before any worker
//! starts, at a cost that does not grow with the number of tables.
//!
//! One statement per source session counts, for each of its tables, the rows in scope and
//! those written since the table's horizon (`jobs` sessions at once, each scanning its
//! share). A table with no row written since its horizon and as many rows in scope as
//! its checkpoints hold is exact at this run's snapshot: nothing of it crosses, and its
//! batches are confirmed with every table's at the end of the run.
//!
//! The retail side must not see which tables had changes that the projection does not
//! show ([`crate::target::prints`]): every table's row prints are read in full, quiet or
//! not, by the same statement, on one connection, in plan order, before any worker
//! starts; a busy table's are held for its worker.

use futures_util::{StreamExt, TryStreamExt};

use crate::connect::Endpoint;
use crate::error::Error;
use crate::plan::changes_sql::{table_horizon_setting, Reach};
use crate::plan::query::{SessionSetting, SettingValue};
use crate::plan::Plan;
use crate::source::changes::horizon_xid;
use crate::source::snapshot::{Session, Snapshot};
use crate::target::state::{PrintsReader, StoredBatch};

/// Bytes a table's counts take from the source: an `int4` and two `int8`.
pub(super) const PROBE_BYTES: u64 = 20;

/// A table read by changes, before its rows are counted.
#[derive(Debug)]
pub(super) struct ByChanges {
    /// Its index in the plan.
    pub index: usize,
    /// The horizon of its last run.
    pub horizon: i64,
    /// The column carrying `xmin`.
    pub column: &'static str,
    /// How statements that visit all its rows in scope reach them.
    pub reach: Reach,
    /// Its stored batches in key order.
    pub stored: Vec<StoredBatch>,
}

impl ByChanges {
    /// The rows its checkpoints hold.
    pub fn held(&self) -> u64 {
        self.stored
            .iter()
            .filter_map(|b| b.written.map(|w| w.rows))
            .sum()
    }
}

/// Splits `tables` into those with something to do, each with its rows in scope at the
/// snapshot (the changes path needs no count of its own), and the quiet ones (see the
/// module documentation), by one statement on each of up to `jobs` sessions on the
/// snapshot.
pub(super) async fn set_apart(
    plan: &Plan,
    source: &Endpoint,
    snapshot: &Snapshot,
    tables: Vec<ByChanges>,
    jobs: usize,
) -> Result<(Vec<(ByChanges, u64)>, Vec<ByChanges>), Error> {
    if tables.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let sessions = jobs.clamp(1, tables.len());
    let shares: Vec<Vec<&ByChanges>> = (0..sessions)
        .map(|i| tables.iter().skip(i).step_by(sessions).collect())
        .collect();
    let counted = futures_util::future::try_join_all(
        shares
            .iter()
            .map(|share| probe(plan, source, snapshot, share)),
    )
    .await?;
    let mut counts = vec![None; plan.tables.len()];
    for (index, in_scope, changed) in counted.into_iter().flatten() {
        if let Some(slot) = counts.get_mut(index) {
            *slot = Some((in_scope, changed));
        }
    }
    let (mut busy, mut quiet) = (Vec::new(), Vec::new());
    for table in tables {
        let held = table.held();
        match counts[table.index] {
            Some((in_scope, 0)) if in_scope == held => quiet.push(table),
            Some((in_scope, _)) => busy.push((table, in_scope)),
            None => {
                return Err(Error::Runtime(format!(
                    "the source returned no count of {}",
                    plan.tables[table.index].source
                )))
            }
        }
    }
    Ok((busy, quiet))
}

/// Counts one share of the tables on a session of its own: `(index, in scope, written
/// since the horizon)` per table.
async fn probe(
    plan: &Plan,
    source: &Endpoint,
    snapshot: &Snapshot,
    share: &[&ByChanges],
) -> Result<Vec<(usize, u64, u64)>, Error> {
    let settings: Vec<SessionSetting> = share
        .iter()
        .map(|t| SessionSetting {
            name: table_horizon_setting(t.index),
            value: SettingValue::Text(horizon_xid(t.horizon)),
        })
        .collect();
    let sql: Vec<String> = share
        .iter()
        .map(|t| plan.tables[t.index].source_probe(t.column, t.reach))
        .collect();
    let names: Vec<String> = share
        .iter()
        .map(|t| plan.tables[t.index].source.to_string())
        .collect();
    let context = format!(
        "counting the rows of {} written since the last run",
        names.join(", ")
    );
    // Joining the snapshot, the settings and the counts that read them: one flight.
    let (_session, rows) = Session::open_and_query(
        source,
        snapshot,
        plan,
        &settings,
        Some((&sql.join(" UNION ALL "), context)),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (index, in_scope, changed): (i32, i64, i64) = (r.get(0), r.get(1), r.get(2));
            if let Some(table) = plan.tables.get(index as usize) {
                crate::metrics::count_bytes(&table.target, "read", PROBE_BYTES as usize);
            }
            (index as usize, in_scope as u64, changed as u64)
        })
        .collect())
}

/// Reads the row prints of every table by changes, busy or quiet, in plan order on one
/// target connection, every statement sent at once: the retail server sees the same
/// statements, on the same session and in the same order, whichever tables had changes
/// (see the module documentation). A quiet table's are read and dropped; a busy
/// table's are held (8 bytes a row) for the worker that syncs it, by table index.
pub(super) async fn read_prints(
    plan: &Plan,
    target: &Endpoint,
    busy: &[(ByChanges, u64)],
    quiet: &[ByChanges],
) -> Result<Vec<(usize, PrintsReader)>, Error> {
    let mut all: Vec<(&ByChanges, bool)> = busy
        .iter()
        .map(|(t, _)| (t, true))
        .chain(quiet.iter().map(|t| (t, false)))
        .collect();
    all.sort_by_key(|(t, _)| t.index);
    let client = target.connect().await?;
    let client = &client;
    let held = futures_util::stream::iter(&all)
        .map(|(t, keep)| async move {
            let nos: Vec<i32> = t.stored.iter().map(|b| b.batch.no).collect();
            let reader = PrintsReader::open(client, &plan.tables[t.index].target, &nos).await?;
            if *keep {
                Ok(Some((t.index, reader.hold().await?)))
            } else {
                reader.finish().await.map(|()| None)
            }
        })
        .buffered(all.len().max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(held.into_iter().flatten().collect())
}
