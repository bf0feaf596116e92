//! Step 8 of the data path: the manifest each cutover or sync run records in the target's
//! `shadan.runs`: mapping digest, tool version, source snapshot, and per table the rows
//! and the blake3 digest of what the target holds. `--json` prints it.

use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::digest::Accumulator;
use crate::error::Error;
use crate::plan::{Plan, TablePlan};
use crate::source::snapshot::Snapshot;
use crate::target::state;

/// Per-table write counts of a sync run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Changes {
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Rows whose `own` columns were cleared (the customer left the own retailer).
    pub purged: u64,
}

impl Changes {
    /// Adds another count (of another batch, or of a whole table).
    pub fn add(&mut self, other: &Changes) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.purged += other.purged;
    }
}

/// How a sync read one table, and what that cost on the source side.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TableSync {
    /// `changes` (only rows written since the recorded horizon) or `full`.
    pub path: String,
    /// Why the table was read in full, when it was.
    pub reason: Option<String>,
    /// Batches in the table's layout.
    pub batches: u64,
    /// Batches neither read in full from the source nor written in the target.
    pub batches_skipped: u64,
    /// Rows of the projection received from the source: the changed rows, or every row
    /// of a batch read in full. Like the two below, printed for the operator but never
    /// stored in the target: it counts rows re-read because a non-public column changed.
    #[serde(skip)]
    pub source_rows: u64,
    /// Keys received from the source, of batches whose row counts disagreed with their
    /// checkpoints (rows deleted or moved out of scope).
    #[serde(skip)]
    pub source_keys: u64,
    /// Bytes received from the source: rows, keys and counts.
    #[serde(skip)]
    pub source_bytes: u64,
}

impl TableSync {
    /// Adds what was received from the source to a table's `sync` entry of the manifest
    /// as printed (after it was stored without them).
    pub fn add_received(&self, entry: &mut Value) {
        entry["source_rows"] = json!(self.source_rows);
        entry["source_keys"] = json!(self.source_keys);
        entry["source_bytes"] = json!(self.source_bytes);
    }
}

/// The manifest header: everything but the tables.
pub fn header(
    run_id: i64,
    command: &str,
    plan: &Plan,
    snapshot: &Snapshot,
    resumed: bool,
) -> Value {
    json!({
        "run_id": run_id,
        "command": command,
        "mapping": {
            "name": plan.mapping_name,
            "file": plan.mapping_path.display().to_string(),
            "blake3": plan.mapping_digest,
        },
        "tool_version": env!("CARGO_PKG_VERSION"),
        "source_snapshot": {
            "id": snapshot.id,
            "visible": snapshot.visible,
            "taken_at": snapshot.taken_at,
        },
        "resumed": resumed,
    })
}

/// One table's manifest entry from its stored checkpoints: rows and digest of every
/// written batch (the table digest is independent of how the table was batched).
pub async fn table_entry(
    client: &Client,
    table: &TablePlan,
    run_id: i64,
    sync: Option<(Changes, &TableSync)>,
) -> Result<Value, Error> {
    let name = table.target.to_string();
    // Both at once, and every table's at once where the caller joins them: the driver
    // pipelines the queries.
    let (stored, this_run) = futures_util::future::try_join(
        state::batches(client, table.index, &table.target),
        async {
            client
                .query_typed_one(
                    "SELECT count(*) FROM shadan.batches WHERE target_table OPERATOR(pg_catalog.=) $1 \
                     AND run_id OPERATOR(pg_catalog.=) $2 AND rows IS NOT NULL",
                    &[(&name, Type::TEXT), (&run_id, Type::INT8)],
                )
                .await
                .map_err(Error::db("reading checkpoints for the manifest"))
        },
    )
    .await?;
    let this_run = this_run.get::<_, i64>(0);
    let mut total = Accumulator::default();
    let mut written = 0;
    for b in &stored {
        if let Some(acc) = &b.written {
            total.merge(acc);
            written += 1;
        }
    }
    let mut entry = json!({
        "source": table.source,
        "target": table.target,
        "rows": total.rows,
        "blake3": total.hex(),
        "batches": stored.len(),
        "batches_written": written,
        "batches_written_this_run": this_run,
    });
    if let Some((c, how)) = sync {
        entry["changes"] = json!(c);
        entry["sync"] = json!(how);
    }
    Ok(entry)
}

/// Records the end of a run: its status (from `outcome`) and its manifest with `tables`.
/// Returns the stored manifest, or the run's own error, which wins over a failure to
/// record it (a lost target connection usually causes both).
pub async fn finish_run(
    client: &Client,
    run_id: i64,
    mut manifest: Value,
    tables: Vec<Value>,
    outcome: Result<(), Error>,
) -> Result<Value, Error> {
    manifest["tables"] = Value::Array(tables);
    let status = match &outcome {
        Ok(()) => "done",
        Err(Error::Interrupted) => "interrupted",
        Err(_) => "failed",
    };
    let stored = crate::target::history::close_run(client, run_id, status, manifest).await;
    outcome?;
    stored
}

/// A manifest for a person: one line per table and a closing line.
pub fn summary(manifest: &Value) -> String {
    let mut out = String::new();
    let tables = manifest["tables"].as_array().cloned().unwrap_or_default();
    for t in &tables {
        let mut line = format!(
            "  {:<32} {:>12} rows  blake3 {}",
            t["target"].as_str().unwrap_or("?"),
            t["rows"],
            t["blake3"].as_str().unwrap_or("?")
        );
        if let Some(c) = t.get("changes") {
            line.push_str(&format!(
                "  (+{} ~{} -{} purged {})",
                c["inserted"], c["updated"], c["deleted"], c["purged"]
            ));
        }
        if let Some(how) = t.get("sync") {
            line.push_str(&format!(
                "\n  {:<32} {} path: {} rows, {} keys, {} bytes from the source; {} of {} batches skipped",
                "",
                how["path"].as_str().unwrap_or("?"),
                how["source_rows"],
                how["source_keys"],
                how["source_bytes"],
                how["batches_skipped"],
                how["batches"],
            ));
            if let Some(reason) = how["reason"].as_str() {
                line.push_str(&format!(" ({})", crate::ident::escape_controls(reason)));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "{} run {} done: {} table(s), mapping {} (blake3 {}), source snapshot {} taken {}\n",
        manifest["command"].as_str().unwrap_or("?"),
        manifest["run_id"],
        tables.len(),
        manifest["mapping"]["name"].as_str().unwrap_or("?"),
        &manifest["mapping"]["blake3"].as_str().unwrap_or("?")[..16],
        manifest["source_snapshot"]["id"].as_str().unwrap_or("?"),
        manifest["source_snapshot"]["taken_at"]
            .as_str()
            .unwrap_or("?"),
    ));
    out
}
