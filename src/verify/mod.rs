//! `shadan verify`: an independent proof that the target equals the permitted projection
//! of the source, with the leak audit's checks.
//!
//! It trusts no state written by earlier runs. Both sides are read on snapshots of their
//! own, as parallel sequential scans, and every row is digested into a bucket chosen by
//! a hash of its key ([`buckets`]); only buckets whose digests differ are compared row by
//! row ([`compare`]). The leak audit reports target columns no mapping produces, `own`
//! values in rows not owned, rows outside the scope, and with `--deep` non-public values
//! hidden in text columns ([`deep`]). The [`report`] names tables, columns, counts and
//! keys, never values.

pub mod buckets;
pub mod compare;
pub mod deep;
pub mod privileges;
pub mod report;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::connect::Endpoint;
use crate::error::Error;
use crate::key;
use crate::plan::query::Chunk;
use crate::plan::{Plan, SourceAccess};
use crate::progress::{self, Progress};
use crate::shutdown::Shutdown;
use crate::source::snapshot::{Session, Snapshot};
use crate::workers;
use buckets::{Buckets, Side};
use report::{Leak, LeakKind, Report, TableReport};

/// What the user asked of a verify run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parallel readers per side (each one connection).
    pub jobs: usize,
    /// Also search target text columns for non-public values.
    pub deep: bool,
    /// How progress is shown.
    pub progress: progress::Style,
}

/// One chunk of one table, on one side, to digest.
struct Task {
    table: usize,
    chunk: Option<Chunk>,
}

/// Whole small tables read together by one reader (see [`group_small`]).
const SMALL_TABLES_TOGETHER: usize = 32;

/// Work items of one side: a chunk of a large table alone (the readers share the table),
/// whole tables (one chunk, `None`) in groups of up to [`SMALL_TABLES_TOGETHER`], whose
/// reads a reader sends at once: round trips then do not grow with the number of tables.
fn group_small(tasks: impl Iterator<Item = Task>) -> VecDeque<Vec<Task>> {
    let mut items: VecDeque<Vec<Task>> = VecDeque::new();
    for task in tasks {
        match items.back_mut() {
            Some(group)
                if task.chunk.is_none()
                    && group.len() < SMALL_TABLES_TOGETHER
                    && group.iter().all(|t| t.chunk.is_none()) =>
            {
                group.push(task)
            }
            _ => items.push_back(vec![task]),
        }
    }
    items
}

/// Per table, the chunks one side is read in ([`buckets::chunks`]).
type Chunks = Vec<Vec<Option<Chunk>>>;

/// Per table: bucket digests of the source and of the target.
type Sums = Vec<(Buckets, Buckets)>;

/// Runs verify; the report's [`Report::exit_code`] is the process exit code.
pub async fn run(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    opts: &Options,
    shutdown: &Shutdown,
) -> Result<Report, Error> {
    let views = plan.source_access == SourceAccess::Views;
    // The rows of both sides, and meanwhile (independent of them) where the run stands:
    // the mapping, both servers, the target's chain head, the source's privileges.
    let rows = async {
        let (source_relations, target_relations) =
            (plan.source_relations(), plan.target_relations());
        // Each table's chunks are sized (from the catalog: no snapshot needed) while the
        // snapshots are taken.
        let (src_snap, tgt_snap, source_chunks, target_chunks) = tokio::try_join!(
            Snapshot::export(source, &source_relations),
            Snapshot::export(target, &target_relations),
            all_chunks(plan, Side::Source, source, opts.jobs.max(1)),
            all_chunks(plan, Side::Target, target, opts.jobs.max(1)),
        )?;
        plan.require_unchanged_source(&src_snap.catalog().await?)?;
        let (src_snap, tgt_snap) = (Arc::new(src_snap), Arc::new(tgt_snap));
        let chunks = (source_chunks, target_chunks);
        let sums = digest_both_sides(
            plan, source, target, &src_snap, &tgt_snap, chunks, opts, shutdown,
        )
        .await?;

        // Sessions to compare rows in, opened only when some table differs.
        let differs = sums.iter().any(|(s, t)| !s.differing(t).is_empty());
        let compare_sessions = || async {
            tokio::try_join!(
                Session::open(source, &src_snap, plan),
                Session::open(target, &tgt_snap, plan)
            )
        };
        let mut opened = None;
        if differs {
            opened = Some(compare_sessions().await?);
        }
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
        let mut to_search = Vec::new();
        for (table, (source_sums, target_sums)) in plan.tables.iter().zip(&sums) {
            let differing = source_sums.differing(target_sums);
            let diff = if differing.is_empty() {
                compare::RowDiff::default()
            } else {
                let (src, tgt) = opened
                    .as_ref()
                    .ok_or_else(|| Error::Runtime("no session to compare rows in".into()))?;
                compare::diff_table(src.client(), tgt.client(), table, &differing).await?
            };
            let (source_total, target_total) = (source_sums.total(), target_sums.total());
            let mut sample = Vec::new();
            for f in [&diff.missing, &diff.extra, &diff.changed] {
                sample.extend(f.keys.iter().cloned());
            }
            sample.truncate(compare::SAMPLE_KEYS);
            tables.push(TableReport {
                target: table.target.to_string(),
                source_rows: source_total.rows,
                target_rows: target_total.rows,
                missing: diff.missing.count,
                extra: diff.extra.count,
                changed: diff.changed.count,
                sample_keys: render_keys(&opened, table, &sample).await?,
                source_digest: source_total.hex(),
                target_digest: target_total.hex(),
            });
            for (column, found) in &diff.own_values {
                leaks.push(Leak {
                    kind: LeakKind::OwnValue,
                    table: table.target.to_string(),
                    column: Some(column.clone()),
                    count: found.count,
                    sample_keys: render_keys(&opened, table, &found.keys).await?,
                });
            }
            if diff.out_of_scope.count > 0 {
                leaks.push(Leak {
                    kind: LeakKind::OutOfScope,
                    table: table.target.to_string(),
                    column: None,
                    count: diff.out_of_scope.count,
                    sample_keys: render_keys(&opened, table, &diff.out_of_scope.keys).await?,
                });
            }
            // A table whose mapped columns equal the projection holds only permitted values
            // there; only a differing table or one with unmapped columns can hide secrets.
            let unmapped = plan
                .unexpected_target_columns
                .iter()
                .any(|u| u.table == table.target);
            let drifted = table.columns.iter().any(|c| c.target_read.is_some());
            if !differing.is_empty() || unmapped || drifted {
                to_search.push(table.index);
            }
        }
        drop(opened);
        if opts.deep && !to_search.is_empty() && !views {
            leaks.extend(deep::scan(plan, &to_search, &src_snap, &tgt_snap, source, target).await?);
        }
        Ok::<_, Error>((tables, leaks))
    };
    let standing = async {
        tokio::try_join!(provenance(plan, source, target), async {
            privileges::audit(&*source.connect().await?, plan).await
        })
    };
    let ((tables, leaks), (provenance, excess)) = tokio::try_join!(rows, standing)?;
    let mut report = Report::new(tables, leaks);
    report.deep = opts.deep && !views;
    report.provenance = provenance;
    report.excess_privileges = excess;
    if !plan.target_drift.is_empty() {
        // Read around, the target is still audited; but a retyped column is compared
        // through a cast (one the retail side may define), which can drop what it holds:
        // such a target is never signed off.
        report.mark_incomplete(format!(
            "the target's schema differs from the mapping ({}); it was compared through casts and \
             cannot be signed off: restore the mapped definition",
            crate::ident::escape_controls(
                &plan
                    .target_drift
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        ));
    }
    if opts.deep && views {
        // Every other check ran; a leak they found still exits 4.
        report.mark_incomplete(deep::VIEWS_CANNOT_DEEP.to_string());
    }
    Ok(report)
}

/// Keys as text, read on the target's compare session ([`key::render`]); none to render
/// needs no session.
async fn render_keys(
    opened: &Option<(Session, Session)>,
    table: &crate::plan::TablePlan,
    keys: &[Vec<u8>],
) -> Result<Vec<String>, Error> {
    match opened {
        _ if keys.is_empty() => Ok(Vec::new()),
        Some((_, target)) => key::render(target.client(), table, keys).await,
        None => Err(Error::Runtime("no session to render keys in".into())),
    }
}

/// The mapping, the tool, the target's chain head, both servers and the time.
async fn provenance(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let identity = |endpoint: &Endpoint| {
        let endpoint = endpoint.clone();
        async move {
            let client = endpoint.connect().await?;
            // Both at once (the driver pipelines them); the cluster's system identifier
            // where the role may read it.
            let (row, system) = futures_util::future::join(
                client.query_typed_one(
                    "SELECT pg_catalog.current_setting('server_version'), pg_catalog.current_database()::pg_catalog.text, \
                            CURRENT_USER::pg_catalog.text, \
                            pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                    &[],
                ),
                client.query_typed_one(
                    "SELECT system_identifier::pg_catalog.text FROM pg_catalog.pg_control_system()",
                    &[],
                ),
            )
            .await;
            let row = row.map_err(Error::db("reading the server's identity"))?;
            let system: Option<String> = system.ok().map(|r| r.get(0));
            Ok::<_, Error>((
                serde_json::json!({
                    "system_identifier": system,
                    "server_version": row.get::<_, String>(0),
                    "database": row.get::<_, String>(1),
                    "role": row.get::<_, String>(2),
                }),
                row.get::<_, String>(3),
                client,
            ))
        }
    };
    let ((src, _, _), (tgt, now, client)) = tokio::try_join!(identity(source), identity(target))?;
    // A state schema of another role is not read from (verify trusts none of it).
    let head = if crate::target::trust::existing(&client, crate::target::trust::Whose::Writers)
        .await
        .unwrap_or(false)
    {
        crate::target::history::check(&client).await?.1
    } else {
        None
    };
    let mut out = serde_json::Map::new();
    out.insert("mapping_blake3".into(), plan.mapping_digest.clone().into());
    out.insert("tool_version".into(), env!("CARGO_PKG_VERSION").into());
    out.insert("chain_head".into(), head.into());
    out.insert(
        "servers".into(),
        serde_json::json!({"source": src, "target": tgt}),
    );
    out.insert("verified_at".into(), now.into());
    Ok(out)
}

/// Every table's chunks on one side ([`buckets::chunks`]), on a connection of its own,
/// the queries sent together.
async fn all_chunks(
    plan: &Plan,
    side: Side,
    endpoint: &Endpoint,
    jobs: usize,
) -> Result<Chunks, Error> {
    let client = endpoint.connect().await?;
    let client = &client;
    futures_util::future::try_join_all(plan.tables.iter().map(|table| async move {
        let relation = buckets::relation_sql(table, side);
        buckets::chunks(client, &relation, jobs).await
    }))
    .await
}

/// Pass 1: every row of both sides into per-table bucket digests, `jobs` readers per side.
#[allow(clippy::too_many_arguments)]
async fn digest_both_sides(
    plan: &Plan,
    source: &Endpoint,
    target: &Endpoint,
    src_snap: &Arc<Snapshot>,
    tgt_snap: &Arc<Snapshot>,
    chunks: (Chunks, Chunks),
    opts: &Options,
    shutdown: &Shutdown,
) -> Result<Sums, Error> {
    let jobs = opts.jobs.max(1);
    let (source_chunks, target_chunks) = chunks;
    let tasks = |chunks: Vec<Vec<_>>| -> VecDeque<Vec<Task>> {
        group_small(plan.tables.iter().zip(chunks).flat_map(|(table, chunks)| {
            chunks.into_iter().map(|chunk| Task {
                table: table.index,
                chunk,
            })
        }))
    };
    let (source_tasks, target_tasks) = (tasks(source_chunks), tasks(target_chunks));
    let shown = plan
        .tables
        .iter()
        .map(|table| (table.target.to_string(), 0, 0))
        .collect();

    let progress = Progress::start("verify", opts.progress, shown);
    let run_key = Arc::new(
        crate::digest::RunKey::random()
            .map_err(|e| Error::Runtime(format!("drawing verify's random key: {e}")))?,
    );
    let sums: Arc<Mutex<Sums>> = Arc::new(Mutex::new(vec![Default::default(); plan.tables.len()]));
    let plan_shared = Arc::new(plan.clone());
    // One pool of readers per side, both at once.
    let pool = |side: Side, tasks: VecDeque<Vec<Task>>| {
        let (endpoint, snapshot) = match side {
            Side::Source => (source.clone(), src_snap.clone()),
            Side::Target => (target.clone(), tgt_snap.clone()),
        };
        let open = {
            let plan = plan_shared.clone();
            move || {
                let (plan, endpoint, snapshot) = (plan.clone(), endpoint.clone(), snapshot.clone());
                async move { Session::open(&endpoint, &snapshot, &plan).await }
            }
        };
        let counters: Vec<_> = (0..plan.tables.len())
            .map(|i| progress.counter(i))
            .collect();
        let (plan, sums, run_key) = (plan_shared.clone(), sums.clone(), run_key.clone());
        let work = move |session: Session, group: Vec<Task>| {
            let (plan, sums, run_key) = (plan.clone(), sums.clone(), run_key.clone());
            let counters = counters.clone();
            async move {
                // The group's reads all sent at once on the session: the driver pipelines
                // them, and each drains its own stream.
                let reads = group.iter().map(|task| {
                    let table = &plan.tables[task.table];
                    // Progress counts source rows only, so a table reaches its total once.
                    let counter = (side == Side::Source).then(|| counters[task.table].clone());
                    let (session, run_key) = (&session, &run_key);
                    async move {
                        let (sql, name) = match side {
                            Side::Source => (
                                table.source_copy_chunk(task.chunk, false),
                                table.source.to_string(),
                            ),
                            Side::Target => (
                                table.target_copy_chunk(task.chunk),
                                table.target.to_string(),
                            ),
                        };
                        let unused = AtomicU64::new(0);
                        let rows_read = counter.as_ref().map_or(&unused, |c| &c.done);
                        buckets::digest_chunk(
                            session.client(),
                            &sql,
                            table,
                            run_key,
                            || format!("reading {name}"),
                            rows_read,
                        )
                        .await
                    }
                });
                let found = futures_util::future::try_join_all(reads).await?;
                let mut all = sums
                    .lock()
                    .map_err(|_| Error::Runtime("a verify reader panicked".into()))?;
                for (task, found) in group.iter().zip(found) {
                    match side {
                        Side::Source => all[task.table].0.merge(&found),
                        Side::Target => all[task.table].1.merge(&found),
                    }
                }
                drop(all);
                Ok(session)
            }
        };
        workers::for_each(jobs, tasks, shutdown, open, work)
    };
    let outcome = tokio::try_join!(
        pool(Side::Source, source_tasks),
        pool(Side::Target, target_tasks)
    );
    progress.finish().await;
    outcome?;
    let sums = std::mem::take(
        &mut *sums
            .lock()
            .map_err(|_| Error::Runtime("a verify reader panicked".into()))?,
    );
    Ok(sums)
}
