//! `shadan sync`: the nightly refresh. Makes the target equal to the current permitted
//! projection, reading only what changed and writing only what differs.
//!
//! Each table is read one of two ways ([`crate::source::changes::decide`]):
//! - **By changes** (`changes.rs`): only the rows written since the table's recorded
//!   horizon cross, each batch with changes is written with its updated checkpoint, and
//!   the rows the source lost are found by a count and hash buckets of keys (`lost.rs`).
//! - **In full** (`full.rs`): every batch of the stored layout is read from the source
//!   (one snapshot for the run) and digested; a batch whose digest equals its checkpoint
//!   is done without touching the target. Otherwise the batch's target rows are compared
//!   row by row and the differences written with the new checkpoint in one transaction
//!   ([`apply`], by one statement: `stage.rs`).
//!
//! The changed batches of a table are written several to a transaction, each with its
//! checkpoint (`group.rs`); batches a target constraint refuses one by one are written
//! together with the rows they wait for (`together.rs`).
//!
//! Either way every write commits with its checkpoint, so a killed sync leaves every
//! batch either old-and-checkpointed or new-and-checkpointed, and the next sync (or
//! verify) finds the truth. Batches that grew past twice `--batch-rows` are split at the
//! end of the run.

pub mod apply;
mod changes;
mod full;
mod group;
mod lost;
pub mod preview;
mod quiet;
mod stage;
mod together;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio_postgres::Client;

use crate::connect::{Conn, Endpoint};
use crate::digest::Accumulator;
use crate::error::Error;
use crate::manifest::TableSync;
use crate::manifest::{self, Changes};
use crate::plan::changes_sql::Reach;
use crate::plan::Plan;
use crate::progress::{self, Progress};
use crate::shutdown::Shutdown;
use crate::source::batch::{self, Batch};
use crate::source::changes::{self as change_detection, Path};
use crate::source::snapshot::{Session, Snapshot};
use crate::target::indexes;
use crate::target::lock::TargetLock;
use crate::target::state::{self, Checkpoint, RunStamps, StoredBatch};
use crate::workers;

/// What the user asked of a sync.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parallel workers (each one source and one target connection).
    pub jobs: usize,
    /// Target rows per batch; a batch grown past twice this is split.
    pub batch_rows: u64,
    /// How progress is shown.
    pub progress: progress::Style,
    /// Read every table in full, whatever its recorded horizon.
    pub full: bool,
}

/// Per-table results of a run, filled in by the workers.
#[derive(Debug, Default)]
struct Tally {
    changes: Vec<Changes>,
    how: Vec<TableSync>,
    /// Batches found equal to their checkpoints (full path) or untouched (changes path):
    /// their horizon moves on.
    confirmed: Vec<Vec<i32>>,
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
    // Once the lock is held, the target's checks and the source's snapshot go on at once:
    // they are independent, on two servers.
    let ((snapshot, mut stamps), ()) = tokio::try_join!(
        async {
            let snapshot = Snapshot::export(source, &plan.source_relations()).await?;
            // The stamps are read with the catalog's check, and dropped if it fails.
            let (catalog, stamps) =
                tokio::try_join!(snapshot.catalog(), RunStamps::read(&snapshot, plan))?;
            plan.require_unchanged_source(&catalog)?;
            Ok::<_, Error>((Arc::new(snapshot), stamps))
        },
        state::ensure_schema_then(lock.client(), require_finished_cutover(lock.client(), plan))
    )?;
    // The run's record and every table's stored layout, in one flight.
    let (run_id, layouts) = tokio::try_join!(
        state::start_run(lock.client(), "sync", plan, &snapshot.id),
        stored_layouts(plan, &lock)
    )?;
    stamps.run_id = run_id;
    let n = plan.tables.len();
    let tally = Arc::new(Mutex::new(Tally {
        changes: vec![Changes::default(); n],
        how: vec![TableSync::default(); n],
        confirmed: vec![Vec::new(); n],
    }));
    let stamps = Arc::new(stamps);
    let outcome = sync_all(
        plan, source, target, opts, shutdown, &snapshot, &stamps, &lock, layouts, &tally,
    )
    .await;

    let header = manifest::header(run_id, "sync", plan, &snapshot, false);
    let (changes, how, confirmed) = tally
        .lock()
        .map(|t| (t.changes.clone(), t.how.clone(), t.confirmed.clone()))
        .unwrap_or_default();
    // Batches found equal (read in full) or untouched (by changes): exact at this run's
    // snapshot too, once the run got this far. Sent before the manifest's reads on the
    // same connection, in one flight: the server runs them in that order.
    let stamps = &stamps;
    let confirm = futures_util::future::try_join_all(
        plan.tables
            .iter()
            .zip(&confirmed)
            .filter(|_| outcome.is_ok())
            .map(|(table, nos)| {
                state::confirm_batches(lock.client(), &table.target, nos, stamps.of(table.index))
            }),
    );
    let entries = futures_util::future::try_join_all(plan.tables.iter().map(|t| {
        let sync = changes.get(t.index).copied().zip(how.get(t.index));
        manifest::table_entry(lock.client(), t, run_id, sync)
    }));
    let (confirmed, tables) = tokio::join!(confirm, entries);
    let outcome = outcome.and(confirmed.map(drop));
    let tables = tables?;
    let tally = (changes, how);
    let mut stored = manifest::finish_run(lock.client(), run_id, header, tables, outcome).await?;
    // What crossed from the source is for the operator's eyes: the retail side's copy of
    // the manifest would otherwise count the rows whose non-public columns changed.
    if let Some(entries) = stored["tables"].as_array_mut() {
        for (entry, how) in entries.iter_mut().zip(&tally.1) {
            how.add_received(&mut entry["sync"]);
        }
    }
    Ok(stored)
}

/// Refuses a sync (or its dry run) while a cutover of this mapping's tables has not
/// finished: their indexes or foreign keys are still set aside. Another mapping's
/// unfinished cutover is not this sync's concern.
pub(crate) async fn require_finished_cutover(client: &Client, plan: &Plan) -> Result<(), Error> {
    // Only this mapping's tables: another mapping's unfinished cutover is not ours.
    let targets: Vec<String> = plan.tables.iter().map(|t| t.target.to_string()).collect();
    let (indexes, foreign_keys) = futures_util::future::try_join(
        indexes::unfinished(client),
        crate::target::foreign_keys::unfinished(client),
    )
    .await?;
    let mut unfinished: Vec<String> = indexes
        .into_iter()
        .chain(foreign_keys)
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

/// Opens workers: each a source session on the snapshot that knows the projection's
/// types, a target writer and a second source session, all at once (each connection
/// costs round trips to its server). Workers opened ahead ([`Opener::warm`]) are handed
/// out first.
#[derive(Clone)]
struct Opener {
    source: Endpoint,
    target: Endpoint,
    snapshot: Arc<Snapshot>,
    plan: Arc<Plan>,
    ready: Arc<Mutex<Vec<Worker>>>,
}

impl Opener {
    /// A worker: one opened ahead, else a new one.
    async fn open(&self) -> Result<Worker, Error> {
        if let Some(worker) = self.ready.lock().ok().and_then(|mut r| r.pop()) {
            return Ok(worker);
        }
        let (session, client, counter) = tokio::try_join!(
            Session::open_knowing_types(&self.source, &self.snapshot, &self.plan),
            async { Ok(self.target.connect_writer().await?) },
            Session::open(&self.source, &self.snapshot, &self.plan)
        )?;
        Ok(Worker {
            session,
            counter,
            client,
            last_dirty: false,
        })
    }

    /// Opens `workers` ahead, while the run does something else.
    async fn warm(&self, workers: usize) -> Result<(), Error> {
        let opened = futures_util::future::try_join_all((0..workers).map(|_| self.open())).await?;
        if let Ok(mut ready) = self.ready.lock() {
            ready.extend(opened);
        }
        Ok(())
    }
}

/// One unit of a worker's work (a queue holds a few hundred: their size is no matter).
#[allow(clippy::large_enum_variant)]
enum Item {
    /// One batch read in full, with its checkpoint's digest if written, and whether that
    /// checkpoint has its row prints.
    Batch(Batch, Option<Accumulator>, bool),
    /// A table read by changes that has none ([`quiet`]), with its stored batches: each
    /// is confirmed, and nothing else is done.
    Quiet(usize, Vec<StoredBatch>),
    /// Adjacent batches, each as in [`Item::Batch`], read in full by one source query
    /// because no index serves their ranges ([`crate::source::stretch`]).
    Stretch(Vec<(Batch, Option<Accumulator>, bool)>),
    /// A table read by changes, with its stored batches in key order and its row prints.
    Changes(usize, Vec<StoredBatch>, changes::Since, state::PrintsReader),
    /// A table's batches set aside by a constraint, written together ([`together`]),
    /// with the deletes its batches left for after the children's.
    Together(usize, Vec<together::SetAside>, Vec<Deferred>),
}

impl Item {
    fn table(&self) -> usize {
        match self {
            Item::Batch(b, ..) => b.table,
            Item::Stretch(batches) => batches.first().map_or(0, |(b, ..)| b.table),
            Item::Changes(t, ..) | Item::Together(t, ..) | Item::Quiet(t, _) => *t,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn sync_all(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    opts: &Options,
    shutdown: &Shutdown,
    snapshot: &Arc<Snapshot>,
    stamps: &Arc<RunStamps>,
    lock: &TargetLock,
    layouts: Vec<(Vec<StoredBatch>, bool)>,
    tally: &Arc<Mutex<Tally>>,
) -> Result<(), Error> {
    // The stored layout of each table and how it is read; a table never copied gets a
    // layout now.
    // Opened only for a table that has none yet.
    let mut layout_session: Option<Session> = None;
    let mut queue = Vec::new();
    let mut by_changes = Vec::new();
    let mut shown = Vec::new();
    for (table, (mut stored, order_holds)) in plan.tables.iter().zip(layouts) {
        if !stored.is_empty() && !order_holds {
            // Bounds cut in another key order select other keys under this one: lay the
            // table out anew (every batch is then compared in full once).
            tracing::warn!(table = %table.target, order = %table.key_order(), "batch layout cut in another key order; laying it out again");
            stored.clear();
        }
        let rows: u64 = stored
            .iter()
            .filter_map(|b| b.written.map(|a| a.rows))
            .sum();
        let path = match change_detection::in_key_order(stored.clone()) {
            _ if stored.is_empty() => Path::Full("no batch layout yet".into()),
            Some(ordered) => match change_detection::decide(
                table,
                &ordered,
                &stamps.bases[table.index],
                stamps.facts[table.index].change_column,
                snapshot.xmax,
                opts.full,
            ) {
                Path::Changes { horizon, column } => {
                    by_changes.push(quiet::ByChanges {
                        index: table.index,
                        horizon,
                        column,
                        reach: Reach::of(rows, stamps.facts[table.index].rows_estimate),
                        stored: ordered,
                    });
                    Path::Changes { horizon, column }
                }
                full => full,
            },
            None => {
                Path::Full("the stored batch bounds do not cover the key space in order".into())
            }
        };
        match &path {
            Path::Changes { horizon, .. } => {
                tracing::info!(table = %table.target, horizon, "reading only rows written since the recorded horizon");
            }
            Path::Full(reason) => {
                tracing::info!(table = %table.target, reason = %reason, "reading every row");
            }
        }
        if let Ok(mut t) = tally.lock() {
            t.how[table.index].path = path.name().into();
            t.how[table.index].reason = path.reason().map(String::from);
        }
        if matches!(path, Path::Changes { .. }) {
            shown.push((table.target.to_string(), rows, 0));
        } else if stored.is_empty() {
            let (batches, total) = batch::layout(
                match &mut layout_session {
                    Some(session) => session,
                    empty => empty.insert(Session::open(source, snapshot, plan).await?),
                }
                .client(),
                table,
                opts.batch_rows,
                None,
            )
            .await?;
            let cut = state::LayoutCut::of(table, &plan.own_retailer);
            state::save_layout(lock.client(), &table.target, &batches, stamps.run_id, &cut).await?;
            queue.extend(full_items(
                table,
                batches.into_iter().map(|b| (b, None, false)),
                opts.jobs,
            ));
            shown.push((table.target.to_string(), total, 0));
        } else {
            let stored = change_detection::in_key_order(stored.clone()).unwrap_or(stored);
            queue.extend(full_items(
                table,
                stored
                    .into_iter()
                    .map(|s| (s.batch, s.written, s.has_prints)),
                opts.jobs,
            ));
            shown.push((table.target.to_string(), rows, 0));
        }
    }
    drop(layout_session);
    // Tables by changes with nothing to do are found by one statement per session, and
    // their workers have nothing to do. Meanwhile the first level's workers open.
    let plan_shared = Arc::new(plan.clone());
    let opener = Opener {
        source: source.clone(),
        target: target.clone(),
        snapshot: snapshot.clone(),
        plan: plan_shared.clone(),
        ready: Arc::default(),
    };
    let levels: Vec<usize> = queue
        .iter()
        .map(Item::table)
        .chain(by_changes.iter().map(|t| t.index))
        .map(|t| plan.tables[t].level)
        .collect();
    let lowest = levels.iter().min().copied();
    let first_workers = levels
        .iter()
        .filter(|l| Some(**l) == lowest)
        .count()
        .min(opts.jobs);
    let ((busy, quiet_tables, mut prints), ()) = tokio::try_join!(
        async {
            let (busy, quiet_tables) =
                quiet::set_apart(plan, source, snapshot, by_changes, opts.jobs).await?;
            let prints = quiet::read_prints(plan, target, &busy, &quiet_tables).await?;
            Ok::<_, Error>((busy, quiet_tables, prints))
        },
        opener.warm(first_workers)
    )?;
    // A quiet table stays an item of its own, done without a word to either server: the
    // workers the retail side sees connect do not depend on which tables had changes.
    queue.extend(
        busy.into_iter()
            .filter_map(|(table, in_scope)| {
                let at = prints.iter().position(|(t, _)| *t == table.index)?;
                let (_, reader) = prints.swap_remove(at);
                let since = changes::Since {
                    horizon: table.horizon,
                    column: table.column,
                    reach: table.reach,
                    in_scope,
                };
                Some(Item::Changes(table.index, table.stored, since, reader))
            })
            .chain(
                quiet_tables
                    .into_iter()
                    .map(|t| Item::Quiet(t.index, t.stored)),
            ),
    );
    if let Ok(mut t) = tally.lock() {
        for item in &queue {
            let how = &mut t.how[item.table()];
            how.batches += match item {
                Item::Batch(..) => 1,
                Item::Stretch(batches) => batches.len() as u64,
                Item::Changes(_, stored, ..) | Item::Quiet(_, stored) => stored.len() as u64,
                Item::Together(..) => 0,
            };
        }
    }

    let progress = Progress::start("sync", opts.progress, shown);
    let counters: Vec<_> = (0..plan.tables.len())
        .map(|i| progress.counter(i))
        .collect();
    let grown: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let open = move || {
        let opener = opener.clone();
        async move { opener.open().await }
    };
    let deferred: Arc<Mutex<Vec<Deferred>>> = Arc::default();
    let set_aside: Arc<Mutex<Vec<(usize, together::SetAside)>>> = Arc::default();
    let stuck: Arc<Mutex<Vec<together::Stuck>>> = Arc::default();
    let work = {
        let (tally, grown, batch_rows) = (tally.clone(), grown.clone(), opts.batch_rows);
        let (plan_shared, deferred, stamps, set_aside, stuck) = (
            plan_shared.clone(),
            deferred.clone(),
            stamps.clone(),
            set_aside.clone(),
            stuck.clone(),
        );
        move |mut w: Worker, item: Item| {
            let (plan, tally, grown, counter, deferred, stamps, set_aside, stuck) = (
                plan_shared.clone(),
                tally.clone(),
                grown.clone(),
                counters[item.table()].clone(),
                deferred.clone(),
                stamps.clone(),
                set_aside.clone(),
                stuck.clone(),
            );
            async move {
                let table = &plan.tables[item.table()];
                let stamp = stamps.of(table.index);
                let done = match item {
                    Item::Batch(batch, stored, has_prints) => {
                        let one = w
                            .sync_batch(table, &batch, stored, has_prints, stamp)
                            .await?;
                        if one.clean {
                            if let Ok(mut t) = tally.lock() {
                                t.confirmed[table.index].push(batch.no);
                            }
                        }
                        if one.rows > 2 * batch_rows {
                            if let Ok(mut g) = grown.lock() {
                                g.push(batch);
                            }
                        }
                        one
                    }
                    Item::Stretch(batches) => {
                        let mut all = Done::default();
                        for (batch, one) in w.sync_stretch(table, batches, stamp).await? {
                            if one.clean {
                                all.confirmed.push(batch.no);
                            }
                            if one.rows > 2 * batch_rows {
                                all.grown.push(batch);
                            }
                            all.absorb(one);
                        }
                        if let Ok(mut g) = grown.lock() {
                            g.extend(all.grown.iter().cloned());
                        }
                        all
                    }
                    Item::Quiet(_, stored) => {
                        if let Ok(mut g) = grown.lock() {
                            g.extend(
                                stored
                                    .iter()
                                    .filter(|b| b.written.is_some_and(|w| w.rows > 2 * batch_rows))
                                    .map(|b| b.batch.clone()),
                            );
                        }
                        Done {
                            rows: stored
                                .iter()
                                .filter_map(|b| b.written.map(|w| w.rows))
                                .sum(),
                            skipped: stored.len() as u64,
                            confirmed: stored.iter().map(|b| b.batch.no).collect(),
                            source_bytes: quiet::PROBE_BYTES,
                            ..Done::default()
                        }
                    }
                    Item::Changes(_, stored, since, prints) => {
                        let all = w
                            .sync_changes(table, stored, prints, since, stamp, batch_rows)
                            .await?;
                        if let Ok(mut g) = grown.lock() {
                            g.extend(all.grown.iter().cloned());
                        }
                        all
                    }
                    Item::Together(_, batches, pending) => {
                        match w.sync_together(table, &batches, &pending, stamp).await {
                            Ok(done) => done,
                            Err(e) if together::refusal(&e) => {
                                // Nothing of them was written: they wait for another
                                // round, after the other tables' writes.
                                if let Ok(mut d) = deferred.lock() {
                                    d.extend(pending);
                                }
                                if let Ok(mut s) = stuck.lock() {
                                    s.push((table.index, batches, e));
                                }
                                Done::default()
                            }
                            Err(e) => return Err(e),
                        }
                    }
                };
                if let Ok(mut s) = set_aside.lock() {
                    s.extend(done.set_aside.iter().map(|b| (table.index, b.clone())));
                }
                counter
                    .done
                    .fetch_add(done.rows, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut d) = deferred.lock() {
                    d.extend(done.later);
                }
                if let Ok(mut t) = tally.lock() {
                    t.confirmed[table.index].extend(&done.confirmed);
                    t.changes[table.index].add(&done.written);
                    let how = &mut t.how[table.index];
                    how.source_rows += done.source_rows;
                    how.source_keys += done.source_keys;
                    how.source_bytes += done.source_bytes;
                    how.batches_skipped += done.skipped;
                }
                Ok(w)
            }
        }
    };
    // Tables by foreign-key level: every parent's inserts and updates commit before its
    // children's batches start.
    let mut levels: std::collections::BTreeMap<usize, VecDeque<Item>> = Default::default();
    for item in queue {
        levels
            .entry(plan.tables[item.table()].level)
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
        // Batches a constraint refused one by one: each table's together, before the
        // next level's.
        let waiting = set_aside
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if waiting.is_empty() {
            continue;
        }
        let mut by_table: std::collections::BTreeMap<usize, Vec<together::SetAside>> =
            Default::default();
        for (table, batch) in waiting {
            by_table.entry(table).or_default().push(batch);
        }
        let (o, w) = (open.clone(), work.clone());
        let items = together_items(by_table.into_iter().collect(), &deferred)?;
        outcome =
            workers::for_each(opts.jobs, items, shutdown, move || o(), move |s, t| w(s, t)).await;
        if outcome.is_err() {
            break;
        }
    }
    // Tables whose batches a constraint still refused written together: again, now that
    // every other batch is in (a child moved away from a row, whose delete then goes
    // through), in level order, round after round while a round writes some.
    while outcome.is_ok() {
        let mut groups = stuck
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if groups.is_empty() {
            break;
        }
        groups.sort_by_key(|(table, ..)| plan.tables[*table].level);
        let before = groups.len();
        let groups: Vec<_> = groups
            .into_iter()
            .map(|(t, batches, _)| (t, batches))
            .collect();
        let (o, w) = (open.clone(), work.clone());
        let items = together_items(groups, &deferred)?;
        outcome = workers::for_each(1, items, shutdown, move || o(), move |s, t| w(s, t)).await;
        let mut left = stuck.lock().map(|s| s.len()).unwrap_or(before);
        if outcome.is_ok() && left >= before {
            // A round wrote none: no order of writes can give what they need.
            if let Some((table, _, e)) = stuck.lock().ok().and_then(|mut s| s.pop()) {
                outcome = Err(together::refused(&plan.tables[table], e));
            }
            left = 0;
        }
        if left == 0 {
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
        apply::finish_deferred(
            lock.client(),
            table,
            &d.batch,
            &d.gone,
            &d.checkpoint,
            stamps.of(table.index),
        )
        .await?;
    }
    // The batches found equal or untouched are confirmed by the caller, in the flight
    // that reads the manifest's entries (a split batch's parts carry their own stamps).
    let grown = grown.lock().map(|g| g.clone()).unwrap_or_default();
    full::split_grown(plan, source, snapshot, lock, stamps, opts.batch_rows, grown).await
}

/// Items that write each table's set-aside batches together, each with the deletes its
/// batches left for after the children's (taken out of `deferred`).
fn together_items(
    groups: Vec<(usize, Vec<together::SetAside>)>,
    deferred: &Mutex<Vec<Deferred>>,
) -> Result<VecDeque<Item>, Error> {
    let mut pending = deferred
        .lock()
        .map_err(|_| Error::Runtime("a sync worker panicked".into()))?;
    Ok(groups
        .into_iter()
        .map(|(table, batches)| {
            let (mine, others) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|p| p.batch.table == table);
            *pending = others;
            Item::Together(table, batches, mine)
        })
        .collect())
}

/// Every table's stored layout, and whether its key order still holds, all at once (the
/// driver pipelines the queries).
async fn stored_layouts(
    plan: &Plan,
    lock: &TargetLock,
) -> Result<Vec<(Vec<StoredBatch>, bool)>, Error> {
    futures_util::future::try_join_all(plan.tables.iter().map(|table| {
        futures_util::future::try_join(
            state::batches(lock.client(), table.index, &table.target),
            state::layout_order_holds(lock.client(), table),
        )
    }))
    .await
}

/// A batch of a referenced table whose deletes wait for the children's.
#[derive(Clone)]
struct Deferred {
    /// The batch.
    batch: Batch,
    /// Encoded keys to delete.
    gone: Vec<Vec<u8>>,
    /// The batch's checkpoint once the deletes are done.
    checkpoint: Checkpoint,
}

/// What a worker did with one item.
#[derive(Default)]
struct Done {
    /// Source rows in the batch (or table) now.
    rows: u64,
    /// The checkpoint of a batch read in full (once any deferred deletes are done).
    checkpoint: Checkpoint,
    /// What was written.
    written: Changes,
    /// Deletes left for after the children's.
    later: Vec<Deferred>,
    /// Whether a batch read in full equalled its checkpoint.
    clean: bool,
    /// Rows, keys and bytes received from the source.
    source_rows: u64,
    source_keys: u64,
    source_bytes: u64,
    /// Batches neither read in full from the source nor touched in the target.
    skipped: u64,
    /// Batches grown past twice the batch size (changes path).
    grown: Vec<Batch>,
    /// Batches neither read nor written, exact at this run's snapshot (changes path).
    confirmed: Vec<i32>,
    /// Batches whose write a target constraint refused, to be written together with the
    /// table's others ([`together`]); nothing of them was written.
    set_aside: Vec<together::SetAside>,
}

impl Done {
    /// Adds what was done with another batch of the same table.
    fn absorb(&mut self, other: Done) {
        self.rows += other.rows;
        self.written.add(&other.written);
        self.later.extend(other.later);
        self.source_rows += other.source_rows;
        self.source_keys += other.source_keys;
        self.source_bytes += other.source_bytes;
        self.skipped += other.skipped;
        self.grown.extend(other.grown);
        self.confirmed.extend(other.confirmed);
        self.set_aside.extend(other.set_aside);
    }
}

/// The work items of a table read in full: its batches (best in key order), one by one
/// or in stretches ([`crate::source::stretch::group`]).
fn full_items(
    table: &crate::plan::TablePlan,
    batches: impl IntoIterator<Item = (Batch, Option<Accumulator>, bool)>,
    jobs: usize,
) -> impl Iterator<Item = Item> {
    crate::source::stretch::group(table, batches, jobs, |(b, ..)| b)
        .into_iter()
        .map(|mut run| match run.len() {
            1 => {
                let (batch, stored, has_prints) = run.remove(0);
                Item::Batch(batch, stored, has_prints)
            }
            _ => Item::Stretch(run),
        })
}

/// One sync worker: a source session on the run's snapshot and a target connection.
struct Worker {
    session: Session,
    /// A second session on the snapshot: a table's count runs there while its changed
    /// rows stream on the first, so that the source scans both at once.
    counter: Session,
    client: Conn,
    /// Whether this worker's previous batch had changes: then the next one likely has too
    /// (changes spread over the table), and both sides are read at once.
    last_dirty: bool,
}
