//! `shadan cutover`: the first bulk copy, from one consistent source snapshot.
//!
//! Tables are cut into key-range batches on the snapshot and the layout is saved in the
//! target's state; `--jobs` workers, each with a source session on the shared snapshot
//! and a target connection, take batches from one queue. A batch streams
//! `COPY (projection) TO STDOUT (FORMAT binary)` into `COPY target FROM STDIN (FORMAT
//! binary)`, hashing each tuple on the way, and commits together with its checkpoint, so
//! `--resume` copies exactly the batches that never committed. A table whose key ranges
//! no source index serves is read a stretch of batches at a time ([`stretch`]). Target
//! indexes are built after the load unless `--keep-indexes` ([`crate::target::indexes`]).

mod stretch;

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_postgres::Client;

use crate::connect::{Conn, Endpoint};
use crate::copy::tuple::TupleSplitter;
use crate::digest::Accumulator;
use crate::error::Error;
use crate::key::KeyCheck;
use crate::manifest;
use crate::plan::{Plan, TablePlan};
use crate::progress::{self, Progress, TableCounter};
use crate::shutdown::Shutdown;
use crate::source::batch::{self, Batch};
use crate::source::snapshot::{Session, Snapshot};
use crate::target::lock::TargetLock;
use crate::target::state;
use crate::target::{foreign_keys, indexes};
use crate::workers;

/// What the user asked of a cutover.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parallel workers (each one source and one target connection).
    pub jobs: usize,
    /// Rows per batch.
    pub batch_rows: u64,
    /// Tables to copy (source or target names); all when empty.
    pub tables: Vec<String>,
    /// Continue an interrupted cutover from its checkpoints.
    pub resume: bool,
    /// Load with the target's indexes in place instead of building them after the load.
    pub keep_indexes: bool,
    /// How progress is shown.
    pub progress: progress::Style,
}

/// What to do for one table.
struct TableWork<'p> {
    table: &'p TablePlan,
    /// Rows of the batches already written (resume).
    done_rows: u64,
    /// Batches already written.
    done_batches: u64,
    /// Stored pending batches, or `None` when the layout must be computed.
    pending: Option<Vec<Batch>>,
}

/// Runs a cutover; returns the manifest recorded in the target.
pub async fn run(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    opts: &Options,
    shutdown: &Shutdown,
) -> Result<Value, Error> {
    plan.require_exact_targets()?;
    let selected = plan.select_tables(&opts.tables).map_err(Error::Usage)?;
    let lock = TargetLock::acquire(target, "cutover").await?;
    state::ensure_schema(lock.client()).await?;

    let mut work = Vec::new();
    for table in selected {
        work.push(decide(lock.client(), table, &plan.own_retailer, opts.resume).await?);
    }
    let resumed = work.iter().any(|w| w.pending.is_some());
    // Batches of all tables interleave, so a child may arrive before its parent: the
    // loaded tables' foreign keys wait until every table is in (recorded for --resume).
    let loading: Vec<&crate::mapping::name::QualifiedName> =
        work.iter().map(|w| &w.table.target).collect();
    let set_aside = foreign_keys::set_aside(lock.client(), &loading).await?;
    if set_aside > 0 {
        tracing::info!(
            foreign_keys = set_aside,
            "foreign keys set aside for the load"
        );
    }

    let snapshot = Arc::new(Snapshot::export(source, &plan.source_relations()).await?);
    plan.require_unchanged_source(&snapshot.catalog().await?)?;
    let mut stamps = state::RunStamps::read(&snapshot, plan).await?;
    let run_id = state::start_run(lock.client(), "cutover", plan, &snapshot.id).await?;
    stamps.run_id = run_id;
    let stamps = Arc::new(stamps);
    let mut outcome = copy_all(
        plan, source, target, opts, shutdown, &snapshot, &stamps, &lock, work,
    )
    .await;
    if outcome.is_ok() {
        outcome = foreign_keys::restore_all(lock.client())
            .await
            .map(|restored| {
                if restored > 0 {
                    tracing::info!(
                        foreign_keys = restored,
                        "foreign keys put back and validated"
                    );
                }
            });
    }

    let header = manifest::header(run_id, "cutover", plan, &snapshot, resumed);
    let selected = plan.select_tables(&opts.tables).map_err(Error::Usage)?;
    let tables = futures_util::future::try_join_all(
        selected
            .into_iter()
            .map(|t| manifest::table_entry(lock.client(), t, run_id, None)),
    )
    .await?;
    manifest::finish_run(lock.client(), run_id, header, tables, outcome).await
}

/// Decides whether a table starts fresh or continues from its checkpoints.
async fn decide<'p>(
    client: &Client,
    table: &'p TablePlan,
    own_retailer: &str,
    resume: bool,
) -> Result<TableWork<'p>, Error> {
    let stored = state::batches(client, table.index, &table.target).await?;
    let has_rows: bool = client
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {})", table.target.sql()),
            &[],
        )
        .await
        .map_err(Error::db(format!(
            "checking whether {} is empty",
            table.target
        )))?
        .get(0);
    let written: Vec<&state::StoredBatch> = stored.iter().filter(|b| b.written.is_some()).collect();
    let done_rows = written
        .iter()
        .filter_map(|b| b.written.map(|a| a.rows))
        .sum();
    if written.is_empty() {
        if has_rows {
            return Err(Error::Usage(format!(
                "target table {} is not empty and no cutover checkpoint covers its rows; cutover \
                 fills empty tables: empty it, or use `shadan sync` to refresh it",
                table.target
            )));
        }
        return Ok(TableWork {
            table,
            done_rows: 0,
            done_batches: 0,
            pending: None,
        });
    }
    if !state::layout_order_holds(client, table).await? {
        return Err(Error::Usage(format!(
            "the cutover of {} was started with batches cut in another key order (by an older \
             shadan, or in a collation the two servers no longer share); those bounds cannot be \
             resumed safely: empty the table and its checkpoints (DELETE FROM shadan.batches \
             WHERE target_table = {}) and run cutover again",
            table.target,
            crate::ident::escape_controls(&crate::ident::quote_literal(&table.target.to_string()))
        )));
    }
    if resume
        && !state::layout_projection_is(
            client,
            &table.target,
            &table.projection_digest(own_retailer),
        )
        .await?
    {
        return Err(Error::Usage(format!(
            "the cutover of {} was started for another projection (own_retailer, scope, owner, \
             `only` or columns differ from this mapping's): resuming would mix two projections in one \
             table; resume with the mapping it began with, or empty the table and its checkpoints and start over",
            table.target
        )));
    }
    if !resume {
        return Err(Error::Usage(format!(
            "target table {} already holds a cutover ({} of {} batches written); continue it with \
             --resume, or use `shadan sync` to refresh it",
            table.target,
            written.len(),
            stored.len()
        )));
    }
    let done_batches = written.len() as u64;
    let pending = stored
        .into_iter()
        .filter(|b| b.written.is_none())
        .map(|b| b.batch)
        .collect();
    Ok(TableWork {
        table,
        done_rows,
        done_batches,
        pending: Some(pending),
    })
}

#[allow(clippy::too_many_arguments)]
async fn copy_all(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    opts: &Options,
    shutdown: &Shutdown,
    snapshot: &Arc<Snapshot>,
    stamps: &Arc<state::RunStamps>,
    lock: &TargetLock,
    work: Vec<TableWork<'_>>,
) -> Result<(), Error> {
    // Cut fresh tables into batches on the snapshot (in parallel) and save the layouts
    // first, so an interruption from here on is resumable.
    let plan_shared = Arc::new(plan.clone());
    let fresh: Vec<usize> = work
        .iter()
        .filter(|w| w.pending.is_none())
        .map(|w| w.table.index)
        .collect();
    let mut laid_out = batch::layout_all(
        &plan_shared,
        source,
        snapshot,
        fresh,
        opts.batch_rows,
        opts.jobs,
        shutdown,
    )
    .await?
    .into_iter()
    .map(|l| (l.table, (l.batches, l.rows)))
    .collect::<std::collections::HashMap<_, _>>();
    let mut per_table = Vec::new();
    let mut shown = Vec::new();
    for w in work {
        let (pending, total) = match w.pending {
            Some(pending) => {
                // The written batches' mean size: the layout was cut with the first run's
                // --batch-rows, not necessarily this run's.
                let mean = w
                    .done_rows
                    .checked_div(w.done_batches)
                    .unwrap_or(opts.batch_rows);
                let left = pending.len() as u64 * mean;
                (pending, w.done_rows + left)
            }
            None => {
                let (batches, total) = laid_out.remove(&w.table.index).ok_or_else(|| {
                    Error::Runtime(format!("no batch layout for {}", w.table.target))
                })?;
                let cut = state::LayoutCut::of(w.table, &plan.own_retailer);
                state::save_layout(
                    lock.client(),
                    &w.table.target,
                    &batches,
                    stamps.run_id,
                    &cut,
                )
                .await?;
                if !opts.keep_indexes {
                    let deferred = indexes::defer(lock.client(), &w.table.target).await?;
                    tracing::info!(table = %w.table.target, indexes = deferred, "indexes set aside for the load");
                }
                (batches, total)
            }
        };
        tracing::info!(table = %w.table.target, batches = pending.len(), rows = total, "cutover planned");
        shown.push((
            w.table.index,
            (w.table.target.to_string(), total, w.done_rows),
        ));
        per_table.push(crate::source::stretch::group(
            w.table,
            pending,
            opts.jobs,
            |b| b,
        ));
    }
    let queue = interleave(per_table);

    let progress = Progress::start(
        "cutover",
        opts.progress,
        shown.iter().map(|(_, s)| s.clone()).collect(),
    );
    let mut counters = vec![None; plan.tables.len()];
    for (i, (table_index, _)) in shown.iter().enumerate() {
        counters[*table_index] = Some(progress.counter(i));
    }
    let open = crate::source::snapshot::reader_and_writer(
        plan_shared.clone(),
        source.clone(),
        target.clone(),
        snapshot.clone(),
    );
    let stamps_shared = stamps.clone();
    let work = move |(session, client): (Session, Conn), batches: Vec<Batch>| {
        let index = batches.first().map_or(0, |b| b.table);
        let (plan, counter, stamps) = (
            plan_shared.clone(),
            counters[index].clone(),
            stamps_shared.clone(),
        );
        async move {
            let table = &plan.tables[index];
            let stamp = stamps.of(index);
            match batches.as_slice() {
                [batch] => {
                    copy_batch(&session, &client, table, batch, stamp, counter.as_deref()).await?;
                }
                run => {
                    stretch::copy(&session, &client, table, run, stamp, counter.as_deref()).await?
                }
            }
            Ok((session, client))
        }
    };
    let outcome = workers::for_each(opts.jobs, queue, shutdown, open, work).await;
    progress.finish().await;
    outcome?;
    // Every batch of every table is written: build what was set aside for the load, each
    // table on its own connection so that the builds run side by side.
    let builds = shown.iter().map(|(table_index, _)| {
        let table = plan.tables[*table_index].target.clone();
        let target = target.clone();
        async move {
            let client = target.connect().await?;
            client
                .batch_execute(INDEX_BUILD_SETTINGS)
                .await
                .map_err(Error::db("preparing an index build"))?;
            let built = indexes::restore(&client, &table).await?;
            if built > 0 {
                tracing::info!(table = %table, indexes = built, "indexes built after the load");
            }
            Ok::<_, Error>(())
        }
    });
    futures_util::future::try_join_all(builds).await?;
    Ok(())
}

/// Session settings for building indexes after a load: sorts in memory where possible.
const INDEX_BUILD_SETTINGS: &str = "SET maintenance_work_mem = '256MB'";

/// Orders work items (batches, or stretches of them) round-robin across tables, so that
/// concurrent workers mostly write to different tables: bulk loads into one table
/// serialize on its relation-extension lock.
fn interleave(mut per_table: Vec<VecDeque<Vec<Batch>>>) -> VecDeque<Vec<Batch>> {
    let mut queue = VecDeque::new();
    while per_table.iter().any(|q| !q.is_empty()) {
        for q in per_table.iter_mut() {
            queue.extend(q.pop_front());
        }
    }
    queue
}

/// Opens the target transaction of one batch and its COPY into the table.
async fn begin_copy(
    target: &Client,
    table: &TablePlan,
    batch: &Batch,
) -> Result<tokio_postgres::CopyInSink<Bytes>, Error> {
    let writing = || format!("writing {} {}", table.target, batch.describe());
    target
        .batch_execute("BEGIN")
        .await
        .map_err(Error::db(&writing))?;
    target
        .copy_in::<_, Bytes>(&table.target_copy_in())
        .await
        .map_err(Error::db(&writing))
}

/// Copies one batch and commits it with its checkpoint; returns its digest.
pub async fn copy_batch(
    source: &Session,
    target: &Client,
    table: &TablePlan,
    batch: &Batch,
    stamp: state::Stamp<'_>,
    counter: Option<&TableCounter>,
) -> Result<Accumulator, Error> {
    let writing = || format!("writing {} {}", table.target, batch.describe());
    let reading = || format!("reading {} {}", table.source, batch.describe());
    source.bind_batch(batch).await?;
    if table.source_is_view() {
        crate::key::check_view_key(source.client(), table, batch.shape()).await?;
    }
    let sink = begin_copy(target, table, batch).await?;
    let stream = source
        .client()
        .copy_out(&table.source_copy(batch.shape()))
        .await
        .map_err(Error::db(&reading))?;
    let mut sink = pin!(sink);
    let mut stream = pin!(stream);
    let mut split = TupleSplitter::new();
    let mut digest = Accumulator::default();
    let mut hashes = Vec::new();
    let mut keys = table.source_is_view().then(|| KeyCheck::new(table));
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Error::db(&reading))?;
        let before = digest.rows;
        split
            .feed(&chunk, &mut |tuple| {
                hashes.push(digest.add_row_hashed(tuple));
                if let Some(k) = keys.as_mut() {
                    k.add(tuple);
                }
            })
            .map_err(|e| Error::Runtime(format!("{}: {e}", reading())))?;
        // Stop before the chunk reaches the target; the open transaction rolls back.
        if let Some(e) = keys.as_ref().and_then(|k| k.error(table)) {
            return Err(e);
        }
        bytes += chunk.len();
        sink.feed(chunk).await.map_err(Error::db(&writing))?;
        if let Some(c) = counter {
            c.done
                .fetch_add(digest.rows - before, std::sync::atomic::Ordering::Relaxed);
        }
    }
    split
        .finish()
        .map_err(|e| Error::Runtime(format!("{}: {e}", reading())))?;
    let written = sink.as_mut().finish().await.map_err(Error::db(&writing))?;
    // Counted once per batch: the stream's messages are one per row.
    crate::metrics::count_bytes(&table.target, "read", bytes);
    crate::metrics::count_bytes(&table.target, "written", bytes);
    if written != digest.rows {
        return Err(Error::Runtime(format!(
            "{}: the target took {written} rows but {} were read; nothing of this batch was kept",
            writing(),
            digest.rows
        )));
    }
    let checkpoint = state::Checkpoint::of(digest, &hashes);
    state::mark_written(target, &table.target, batch, &checkpoint, stamp).await?;
    target
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(&writing))?;
    Ok(digest)
}
