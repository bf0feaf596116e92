//! `shadan verify`: an independent proof that the target equals the permitted projection
//! of the source and holds nothing else.
//!
//! It trusts no state written by earlier runs: batches are cut afresh on the source, and
//! both sides are read on snapshots of their own and digested from the data itself
//! ([`compare`]). The leak audit reports target columns no mapping produces, `own`
//! values in rows not owned, rows outside the scope, and with `--deep` non-public values
//! hidden in any text column ([`deep`]). The [`report`] names tables, columns, counts and
//! keys, never values.

pub mod compare;
pub mod deep;
pub mod report;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::batch::{self, Batch};
use crate::connect::Endpoint;
use crate::digest::Accumulator;
use crate::error::Error;
use crate::key;
use crate::plan::Plan;
use crate::progress::{self, Progress};
use crate::shutdown::Shutdown;
use crate::snapshot::{Session, Snapshot};
use compare::{BatchCheck, Found};
use report::{Leak, LeakKind, Report, TableReport};

/// What the user asked of a verify run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parallel workers (each one source and one target connection).
    pub jobs: usize,
    /// Rows per comparison batch.
    pub batch_rows: u64,
    /// Also search target text columns for non-public values.
    pub deep: bool,
    /// How progress is shown.
    pub progress: progress::Style,
}

/// Runs verify; the report's [`Report::exit_code`] is the process exit code.
pub async fn run(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    opts: &Options,
    shutdown: &Shutdown,
) -> Result<Report, Error> {
    let (src_snap, tgt_snap) =
        tokio::try_join!(Snapshot::export(source), Snapshot::export(target))?;
    let (src_snap, tgt_snap) = (Arc::new(src_snap), Arc::new(tgt_snap));

    let layout_session = Session::open(source, &src_snap, plan).await?;
    let mut queue = VecDeque::new();
    let mut shown = Vec::new();
    for table in &plan.tables {
        let (batches, rows) =
            batch::layout(layout_session.client(), table, opts.batch_rows).await?;
        shown.push((table.target.to_string(), rows, 0));
        queue.extend(batches);
    }
    drop(layout_session);

    let progress = Progress::start("verify", opts.progress, shown);
    let results: Arc<Mutex<Vec<(Batch, BatchCheck)>>> = Arc::default();
    let queue = Arc::new(Mutex::new(queue));
    let mut set = tokio::task::JoinSet::new();
    let plan_shared = Arc::new(plan.clone());
    for _ in 0..opts.jobs.max(1) {
        let (plan, queue, results) = (plan_shared.clone(), queue.clone(), results.clone());
        let (source, target) = (source.clone(), target.clone());
        let (src_snap, tgt_snap, shutdown) = (src_snap.clone(), tgt_snap.clone(), shutdown.clone());
        let counters: Vec<_> = (0..plan.tables.len())
            .map(|i| progress.counter(i))
            .collect();
        set.spawn(async move {
            let src = Session::open(&source, &src_snap, &plan).await?;
            let tgt = Session::open(&target, &tgt_snap, &plan).await?;
            loop {
                if shutdown.requested() {
                    return Err(Error::Interrupted);
                }
                let Some(batch) = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None) else {
                    return Ok(());
                };
                let table = &plan.tables[batch.table];
                tokio::try_join!(src.bind_batch(&batch), tgt.bind_batch(&batch))?;
                let check = compare::check_batch(src.client(), tgt.client(), table, &batch).await?;
                counters[batch.table]
                    .done
                    .fetch_add(check.source.rows, std::sync::atomic::Ordering::Relaxed);
                results
                    .lock()
                    .map_err(|_| Error::Runtime("a verify worker panicked".into()))?
                    .push((batch, check));
            }
        });
    }
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        if let Err(e) =
            joined.unwrap_or_else(|e| Err(Error::Runtime(format!("a verify worker stopped: {e}"))))
        {
            shutdown.request();
            first_error.get_or_insert(e);
        }
    }
    progress.finish().await;
    if let Some(e) = first_error {
        return Err(e);
    }

    let mut results = std::mem::take(
        &mut *results
            .lock()
            .map_err(|_| Error::Runtime("a verify worker panicked".into()))?,
    );
    results.sort_by_key(|(b, _)| (b.table, b.no));
    let render = target.connect().await?;
    let mut tables = Vec::new();
    let mut leaks: Vec<Leak> = plan
        .unexpected_target_columns
        .iter()
        .map(|u| Leak {
            kind: LeakKind::Column,
            table: u.table.to_string(),
            column: Some(u.column.clone()),
            count: 1,
            sample_keys: Vec::new(),
        })
        .collect();
    for table in &plan.tables {
        let mut source = Accumulator::default();
        let mut target_acc = Accumulator::default();
        let (mut missing, mut extra, mut changed, mut out_of_scope) = Default::default();
        let mut own_values: BTreeMap<String, Found> = BTreeMap::new();
        for (_, check) in results.iter().filter(|(b, _)| b.table == table.index) {
            source.merge(&check.source);
            target_acc.merge(&check.target);
            Found::merge(&mut missing, &check.rows.missing);
            Found::merge(&mut extra, &check.rows.extra);
            Found::merge(&mut changed, &check.rows.changed);
            Found::merge(&mut out_of_scope, &check.rows.out_of_scope);
            for (col, found) in &check.rows.own_values {
                own_values.entry(col.clone()).or_default().merge(found);
            }
        }
        let mut sample = Vec::new();
        for f in [&missing, &extra, &changed] {
            sample.extend(f.keys.iter().cloned());
        }
        sample.truncate(compare::SAMPLE_KEYS);
        tables.push(TableReport {
            target: table.target.to_string(),
            source_rows: source.rows,
            target_rows: target_acc.rows,
            missing: missing.count,
            extra: extra.count,
            changed: changed.count,
            sample_keys: key::render(&render, table, &sample).await?,
            source_digest: source.hex(),
            target_digest: target_acc.hex(),
        });
        for (column, found) in own_values {
            leaks.push(Leak {
                kind: LeakKind::OwnValue,
                table: table.target.to_string(),
                column: Some(column),
                count: found.count,
                sample_keys: key::render(&render, table, &found.keys).await?,
            });
        }
        if out_of_scope.count > 0 {
            leaks.push(Leak {
                kind: LeakKind::OutOfScope,
                table: table.target.to_string(),
                column: None,
                count: out_of_scope.count,
                sample_keys: key::render(&render, table, &out_of_scope.keys).await?,
            });
        }
    }
    if opts.deep {
        leaks.extend(deep::scan(plan, &src_snap, &tgt_snap, source, target).await?);
    }
    Ok(Report::new(tables, leaks))
}
