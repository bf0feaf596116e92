//! `shadan sync`: the nightly refresh. Makes the target equal to the current permitted
//! projection, writing only what changed.
//!
//! Every batch of the stored layout is read from the source (one snapshot for the run)
//! and digested; a batch whose digest equals its checkpoint is done without touching the
//! target. Otherwise the batch's target rows are compared row by row and the differences
//! written with the new checkpoint in one transaction ([`apply`]): inserts, updates,
//! deletes, and rows that left the scope (deleted, or their `own` columns cleared). A
//! killed sync leaves every batch either old-and-checkpointed or new-and-checkpointed, so
//! the next sync (or verify) finds the truth. Batches that grew past twice `--batch-rows`
//! are split at the end of the run.

pub mod apply;
pub mod preview;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio_postgres::Client;

use crate::batch::{self, Batch};
use crate::connect::Endpoint;
use crate::digest::Accumulator;
use crate::error::Error;
use crate::manifest::{self, Changes};
use crate::plan::{Plan, TablePlan};
use crate::progress::{self, Progress};
use crate::shutdown::Shutdown;
use crate::snapshot::{bind, Session, Snapshot};
use crate::target::indexes;
use crate::target::lock::TargetLock;
use crate::target::state;
use crate::workers;
use apply::SourceRows;

/// What the user asked of a sync.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parallel workers (each one source and one target connection).
    pub jobs: usize,
    /// Target rows per batch; a batch grown past twice this is split.
    pub batch_rows: u64,
    /// How progress is shown.
    pub progress: progress::Style,
}

/// Runs a sync; returns the manifest recorded in the target.
pub async fn run(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    opts: &Options,
    shutdown: &Shutdown,
) -> Result<Value, Error> {
    plan.require_exact_targets()?;
    let lock = TargetLock::acquire(target, "sync").await?;
    state::ensure_schema(lock.client()).await?;
    require_finished_cutover(lock.client(), plan).await?;
    let snapshot = Arc::new(Snapshot::export(source, &plan.source_relations()).await?);
    plan.require_unchanged_source(&snapshot.catalog().await?)?;
    let run_id = state::start_run(lock.client(), "sync", plan, &snapshot.id).await?;
    let changes: Arc<Mutex<Vec<Changes>>> =
        Arc::new(Mutex::new(vec![Changes::default(); plan.tables.len()]));
    let outcome = sync_all(
        plan, source, target, opts, shutdown, &snapshot, run_id, &lock, &changes,
    )
    .await;

    let header = manifest::header(run_id, "sync", plan, &snapshot, false);
    let changes = changes.lock().map(|c| c.clone()).unwrap_or_default();
    let mut tables = Vec::new();
    for t in &plan.tables {
        tables.push(manifest::table_entry(lock.client(), t, run_id, Some(changes[t.index])).await?);
    }
    manifest::finish_run(lock.client(), run_id, header, tables, outcome).await
}

/// Refuses a sync (or its dry run) while a cutover of this mapping's tables has not
/// finished: their indexes or foreign keys are still set aside. Another mapping's
/// unfinished cutover is not this sync's concern.
pub(crate) async fn require_finished_cutover(client: &Client, plan: &Plan) -> Result<(), Error> {
    // Only this mapping's tables: another mapping's unfinished cutover is not ours.
    let targets: Vec<String> = plan.tables.iter().map(|t| t.target.to_string()).collect();
    let mut unfinished: Vec<String> = indexes::unfinished(client)
        .await?
        .into_iter()
        .chain(crate::target::foreign_keys::unfinished(client).await?)
        .filter(|t| targets.contains(t))
        .collect();
    unfinished.dedup();
    if !unfinished.is_empty() {
        return Err(Error::Usage(format!(
            "the cutover of {} has not finished (its indexes or foreign keys are set aside until it does); \
             finish it with `shadan cutover --resume` before syncing",
            unfinished.join(", ")
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn sync_all(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    opts: &Options,
    shutdown: &Shutdown,
    snapshot: &Arc<Snapshot>,
    run_id: i64,
    lock: &TargetLock,
    changes: &Arc<Mutex<Vec<Changes>>>,
) -> Result<(), Error> {
    // The stored layout of each table; a table never copied gets one now.
    let layout_session = Session::open(source, snapshot, plan).await?;
    let mut queue = VecDeque::new();
    let mut shown = Vec::new();
    for table in &plan.tables {
        let mut stored = state::batches(lock.client(), table.index, &table.target).await?;
        if !stored.is_empty()
            && !table.keys_order_by_bytes_natively()
            && state::legacy_layout(lock.client(), &table.target).await?
        {
            // Bounds cut under the servers' own collations select other keys as byte
            // ranges: lay the table out anew (every batch is then compared in full once).
            tracing::warn!(table = %table.target, "batch layout from an older shadan cut under a collation; laying it out again");
            stored.clear();
        }
        let rows: u64 = stored
            .iter()
            .filter_map(|b| b.written.map(|a| a.rows))
            .sum();
        if stored.is_empty() {
            let (batches, total) =
                batch::layout(layout_session.client(), table, opts.batch_rows, None).await?;
            state::save_layout(
                lock.client(),
                &table.target,
                &batches,
                run_id,
                &table.projection_digest(&plan.own_retailer),
            )
            .await?;
            queue.extend(batches.into_iter().map(|b| (b, None)));
            shown.push((table.target.to_string(), total, 0));
        } else {
            queue.extend(stored.into_iter().map(|s| (s.batch, s.written)));
            shown.push((table.target.to_string(), rows, 0));
        }
    }
    drop(layout_session);

    let progress = Progress::start("sync", opts.progress, shown);
    let counters: Vec<_> = (0..plan.tables.len())
        .map(|i| progress.counter(i))
        .collect();
    let grown: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let plan_shared = Arc::new(plan.clone());
    let open = {
        let open_pair = crate::snapshot::reader_and_writer(
            plan_shared.clone(),
            source.clone(),
            target.clone(),
            snapshot.clone(),
        );
        move || {
            let pair = open_pair();
            async move {
                let (session, client) = pair.await?;
                Ok(Worker {
                    session,
                    client,
                    last_dirty: false,
                })
            }
        }
    };
    let deferred: Arc<Mutex<Vec<Deferred>>> = Arc::default();
    let work = {
        let (changes, grown, batch_rows) = (changes.clone(), grown.clone(), opts.batch_rows);
        let (plan_shared, deferred) = (plan_shared.clone(), deferred.clone());
        move |mut w: Worker, (batch, stored): (Batch, Option<Accumulator>)| {
            let (plan, changes, grown, counter, deferred) = (
                plan_shared.clone(),
                changes.clone(),
                grown.clone(),
                counters[batch.table].clone(),
                deferred.clone(),
            );
            async move {
                let table = &plan.tables[batch.table];
                let (rows, written, later) = w.sync_batch(table, &batch, stored, run_id).await?;
                if let (Some(later), Ok(mut d)) = (later, deferred.lock()) {
                    d.push(later);
                }
                counter
                    .done
                    .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
                if let (Some(written), Ok(mut all)) = (written, changes.lock()) {
                    let c = &mut all[batch.table];
                    c.inserted += written.inserted;
                    c.updated += written.updated;
                    c.deleted += written.deleted;
                    c.purged += written.purged;
                }
                if rows > 2 * batch_rows {
                    if let Ok(mut g) = grown.lock() {
                        g.push(batch);
                    }
                }
                Ok(w)
            }
        }
    };
    // Tables by foreign-key level: every parent's inserts and updates commit before its
    // children's batches start.
    let mut levels: std::collections::BTreeMap<usize, VecDeque<(Batch, Option<Accumulator>)>> =
        Default::default();
    for item in queue {
        levels
            .entry(plan.tables[item.0.table].level)
            .or_default()
            .push_back(item);
    }
    let (open, work) = (Arc::new(open), Arc::new(work));
    let mut outcome = Ok(());
    for (_, items) in levels {
        let (o, w) = (open.clone(), work.clone());
        outcome =
            workers::for_each(opts.jobs, items, shutdown, move || o(), move |s, t| w(s, t)).await;
        if outcome.is_err() {
            break;
        }
    }
    progress.finish().await;
    outcome?;
    // Then parents' deletes, children's levels first, each with its checkpoint.
    let mut later = std::mem::take(
        &mut *deferred
            .lock()
            .map_err(|_| Error::Runtime("a sync worker panicked".into()))?,
    );
    later.sort_by_key(|d| std::cmp::Reverse(plan.tables[d.batch.table].level));
    for d in later {
        let table = &plan.tables[d.batch.table];
        bind(lock.client(), &d.batch.settings()).await?;
        apply::finish_deferred(lock.client(), table, &d.batch, &d.gone, d.digest, run_id).await?;
    }
    let grown = grown.lock().map(|g| g.clone()).unwrap_or_default();
    split_grown(plan, source, snapshot, lock, run_id, opts.batch_rows, grown).await
}

/// A batch of a referenced table whose deletes wait for the children's.
struct Deferred {
    /// The batch.
    batch: Batch,
    /// Encoded keys to delete.
    gone: Vec<Vec<u8>>,
    /// The source rows' digest: the checkpoint once the deletes are done.
    digest: Accumulator,
}

/// One sync worker: a source session on the run's snapshot and a target connection.
struct Worker {
    session: Session,
    client: Client,
    /// Whether this worker's previous batch had changes: then the next one likely has too
    /// (changes spread over the table), and both sides are read at once.
    last_dirty: bool,
}

impl Worker {
    /// Syncs one batch; returns the source rows in it, what was written if the batch
    /// changed, and the deletes left for later (a referenced table's).
    async fn sync_batch(
        &mut self,
        table: &TablePlan,
        batch: &Batch,
        stored: Option<Accumulator>,
        run_id: i64,
    ) -> Result<(u64, Option<Changes>, Option<Deferred>), Error> {
        self.session.bind_batch(batch).await?;
        if table.source_is_view() {
            // Every night, clean batch or not: a new overlap can leave the projection as
            // it was and still make ownership ambiguous.
            crate::key::check_view_key(self.session.client(), table, batch.shape()).await?;
        }
        if !self.last_dirty && stored.is_some() {
            // Likely clean: digest the source without holding it or reading the target.
            let (digest, bytes) = crate::copy::fold(
                self.session.client(),
                &table.source_copy(batch.shape()),
                || format!("reading {} {}", table.source, batch.describe()),
                (Accumulator::default(), 0usize),
                |(acc, bytes), tuple| {
                    acc.add_row(tuple);
                    *bytes += tuple.len();
                },
            )
            .await?;
            crate::metrics::count_bytes(&table.target, "read", bytes);
            if stored == Some(digest) {
                return Ok((digest.rows, None, None));
            }
        }
        // The target is read only for a batch that may have changed.
        bind(&self.client, &batch.settings()).await?;
        // Room for the rows the checkpoint counted, and some growth.
        let expected = stored.map_or(0, |s| s.rows as usize + s.rows as usize / 8);
        let (rows, held) = tokio::try_join!(
            read_source(&self.session, table, batch, expected),
            apply::begin_and_read(&self.client, table, batch, expected)
        )?;
        let mut bytes = 0;
        rows.for_each_tuple(|t| bytes += t.len());
        crate::metrics::count_bytes(&table.target, "read", bytes);
        if table.source_is_view() {
            let mut keys = crate::key::KeyCheck::new(table.key_len);
            rows.for_each_tuple(|t| keys.add(t));
            if let Some(e) = keys.error(table) {
                apply::abandon(&self.client).await?;
                return Err(e);
            }
        }
        self.last_dirty = stored != Some(rows.digest);
        if !self.last_dirty {
            apply::abandon(&self.client).await?;
            return Ok((rows.digest.rows, None, None));
        }
        let (written, gone) = apply::write(
            &self.client,
            table,
            batch,
            &rows,
            held,
            run_id,
            table.has_children,
        )
        .await?;
        let later = gone.map(|gone| Deferred {
            batch: batch.clone(),
            gone,
            digest: rows.digest,
        });
        Ok((rows.digest.rows, Some(written), later))
    }
}

/// Reads the source rows of one batch into memory (bounded by the batch size); the
/// batch's bounds must be bound on the session.
pub(super) async fn read_source(
    session: &Session,
    table: &TablePlan,
    batch: &Batch,
    expected: usize,
) -> Result<SourceRows, Error> {
    crate::copy::fold_chunks(
        session.client(),
        &table.source_copy(batch.shape()),
        || format!("reading {} {}", table.source, batch.describe()),
        SourceRows::with_capacity(expected),
        |rows, tuple, message| rows.push(tuple, message),
    )
    .await
}

/// Splits batches that grew past twice `batch_rows` into parts of about `batch_rows`,
/// each checkpointed with the digest of its source rows (which the target now equals).
async fn split_grown(
    plan: &Plan,
    source: &Endpoint,
    snapshot: &Snapshot,
    lock: &TargetLock,
    run_id: i64,
    batch_rows: u64,
    grown: Vec<Batch>,
) -> Result<(), Error> {
    if grown.is_empty() {
        return Ok(());
    }
    let session = Session::open(source, snapshot, plan).await?;
    for batch in grown {
        let table = &plan.tables[batch.table];
        let (mut parts, _) =
            batch::layout(session.client(), table, batch_rows, Some(&batch)).await?;
        let next: i32 = lock
            .client()
            .query_one(
                "SELECT coalesce(max(batch_no), 0) + 1 FROM shadan.batches WHERE target_table = $1",
                &[&table.target.to_string()],
            )
            .await
            .map_err(Error::db(format!("splitting a batch of {}", table.target)))?
            .get(0);
        parts[0].no = batch.no;
        for (i, part) in parts.iter_mut().enumerate().skip(1) {
            part.no = next + i as i32 - 1;
        }
        let mut digests = Vec::new();
        for part in &parts {
            session.bind_batch(part).await?;
            digests.push(read_source(&session, table, part, 0).await?.digest);
        }
        lock.client()
            .batch_execute("BEGIN")
            .await
            .map_err(Error::db("splitting a batch"))?;
        state::narrow_batch(lock.client(), &table.target, &parts[0]).await?;
        state::add_batches(
            lock.client(),
            &table.target,
            &parts[1..],
            run_id,
            &table.projection_digest(&plan.own_retailer),
        )
        .await?;
        for (part, digest) in parts.iter().zip(&digests) {
            state::store_digest(lock.client(), &table.target, part, digest, run_id).await?;
        }
        lock.client()
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db("splitting a batch"))?;
        tracing::info!(table = %table.target, batch = batch.no, parts = parts.len(), "split a grown batch");
    }
    Ok(())
}
