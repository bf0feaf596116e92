//! `sync --dry-run`: what a sync would write, read the way sync's full path reads (one
//! source snapshot, every stored batch in full against its checkpoint, the same
//! comparison; never by changes), with nothing written at all: no data, no checkpoint, no
//! run record, not even the state schema. The writer lock is still taken, so a dry run
//! never races a real sync. Batches are read one after another (adjacent ones whose
//! ranges no index serves by one query, as sync does); speed is not the point of a
//! preview.

use bytes::Bytes;
use serde_json::{json, Value};
use tokio_postgres::Client;

use super::apply::{self, SourceRows};
use super::full::read_source;
use crate::connect::Endpoint;
use crate::digest::Accumulator;
use crate::error::Error;
use crate::manifest::Changes;
use crate::plan::{Plan, TablePlan};
use crate::shutdown::Shutdown;
use crate::source::batch::{self, Batch};
use crate::source::snapshot::{Session, Snapshot};
use crate::source::stretch::StretchRows;
use crate::target::lock::TargetLock;
use crate::target::state;

/// Reads both sides like sync and returns, per table, the changes it would make with up
/// to [`apply::SAMPLE_KEYS`] keys of each kind.
pub async fn run(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    batch_rows: u64,
    shutdown: &Shutdown,
) -> Result<Value, Error> {
    plan.require_exact_targets()?;
    let lock = TargetLock::acquire(target, "sync --dry-run").await?;
    let has_state =
        crate::target::trust::existing(lock.client(), crate::target::trust::Whose::Mine).await?;
    if has_state {
        super::require_finished_cutover(lock.client(), plan).await?;
    }
    let snapshot = Snapshot::export(source, &plan.source_relations()).await?;
    plan.require_unchanged_source(&snapshot.catalog().await?)?;
    let session = Session::open(source, &snapshot, plan).await?;
    let client = target.connect().await?;
    let mut tables = Vec::new();
    for table in &plan.tables {
        let mut stored: Vec<(Batch, Option<Accumulator>)> = Vec::new();
        if has_state && state::layout_order_holds(lock.client(), table).await? {
            stored = state::batches(lock.client(), table.index, &table.target)
                .await?
                .into_iter()
                .map(|s| (s.batch, s.written))
                .collect();
        }
        if stored.is_empty() {
            let (batches, _) = batch::layout(session.client(), table, batch_rows, None).await?;
            stored = batches.into_iter().map(|b| (b, None)).collect();
        }
        let mut found = Found::default();
        for mut run in crate::source::stretch::group(table, stored, 1, |(b, _)| b) {
            if shutdown.requested() {
                return Err(Error::Interrupted);
            }
            if let [(batch, written)] = run.as_slice() {
                session.bind_batch(batch).await?;
                if table.source_is_view() {
                    crate::key::check_view_key(session.client(), table, batch.shape()).await?;
                }
                let expected = written.map_or(0, |w| w.rows as usize);
                let rows = read_source(&session, table, batch, expected).await?;
                found
                    .compare(&client, table, batch, *written, &rows)
                    .await?;
                continue;
            }
            // Adjacent batches no index serves: one source query for all of them.
            let ranges: Vec<Batch> = run.iter().map(|(b, _)| b.clone()).collect();
            let mut stream = StretchRows::open(&session, table, &ranges).await?;
            for (batch, written) in run.drain(..) {
                let Some((_, rows)) = stream
                    .next_batch(|rows: &mut SourceRows, tuple| rows.push(tuple, &Bytes::new()))
                    .await?
                else {
                    break;
                };
                rows.check_view_key(table)?;
                found
                    .compare(&client, table, &batch, written, &rows)
                    .await?;
            }
        }
        let Found { changes, samples } = found;
        let [inserted, updated, deleted, purged] = samples;
        let render = |keys| crate::key::render(lock.client(), table, keys);
        tables.push(json!({
            "target": table.target.to_string(),
            "changes": changes,
            "sample_keys": {
                "inserted": render(&inserted).await?,
                "updated": render(&updated).await?,
                "deleted": render(&deleted).await?,
                "purged": render(&purged).await?,
            },
        }));
    }
    Ok(json!({
        "command": "sync",
        "dry_run": true,
        "mapping": {"name": plan.mapping_name, "blake3": plan.mapping_digest},
        "source_snapshot": {"id": snapshot.id, "taken_at": snapshot.taken_at},
        "tables": tables,
    }))
}

/// What a dry run found a table's batches would change, with sample keys of each kind.
#[derive(Default)]
struct Found {
    changes: Changes,
    samples: [Vec<Vec<u8>>; 4],
}

impl Found {
    /// Compares one batch's source rows with its target rows (read in a transaction
    /// that is then abandoned) unless they equal its checkpoint.
    async fn compare(
        &mut self,
        client: &Client,
        table: &TablePlan,
        batch: &Batch,
        written: Option<Accumulator>,
        rows: &SourceRows,
    ) -> Result<(), Error> {
        if written == Some(rows.digest) {
            return Ok(());
        }
        let held = apply::begin_and_read(client, table, batch, rows.digest.rows as usize).await?;
        apply::abandon(client).await?;
        let diff = apply::diff(table, rows, held);
        self.changes.add(&diff.changes);
        for (all, found) in self.samples.iter_mut().zip(diff.samples) {
            all.extend(found);
            all.truncate(apply::SAMPLE_KEYS);
        }
        Ok(())
    }
}

/// The dry run's report for a person: one line per table, then what was not done.
pub fn summary(report: &Value) -> String {
    let mut out = String::new();
    for t in report["tables"].as_array().into_iter().flatten() {
        let c = &t["changes"];
        out.push_str(&format!(
            "  {:<32} would insert {} update {} delete {} purge {}\n",
            crate::ident::escape_controls(t["target"].as_str().unwrap_or("?")),
            c["inserted"],
            c["updated"],
            c["deleted"],
            c["purged"]
        ));
        for kind in ["inserted", "updated", "deleted", "purged"] {
            let keys: Vec<&str> = t["sample_keys"][kind]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !keys.is_empty() {
                out.push_str(&format!("    {kind:<9} {}\n", keys.join(" ")));
            }
        }
    }
    out.push_str("dry run: nothing was written (no data, no checkpoint, no run record)\n");
    out
}
