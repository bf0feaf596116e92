//! Batches: each mapped table is cut into primary-key ranges `(lower, upper]`, computed on
//! the source snapshot so that each holds about `--batch-rows` rows of the projection.
//! A batch is the unit of work, of commit and of comparison: it is copied and committed
//! with its checkpoint in one target transaction, and digested on both sides by `verify`
//! and `sync`. Bounds travel as the key's text form and are bound as parameters.

use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

use crate::connect::Endpoint;
use crate::error::Error;
use crate::ident::quote_ident;
use crate::plan::query::{key_bound_settings, Bound, RangeShape, SessionSetting};
use crate::plan::{Plan, TablePlan};
use crate::shutdown::Shutdown;
use crate::source::snapshot::{Session, Snapshot};
use crate::workers;

/// Default rows per batch: large enough that per-batch overhead (one query on each side,
/// one commit) is noise, small enough that a lost batch costs seconds, not minutes.
pub const DEFAULT_BATCH_ROWS: u64 = 50_000;

/// One key range of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Index of the table in the plan.
    pub table: usize,
    /// Position of the batch in key order, from 0.
    pub no: i32,
    /// Exclusive lower bound (text form of each key column); `None` = unbounded.
    pub lower: Option<Vec<String>>,
    /// Inclusive upper bound; `None` = unbounded.
    pub upper: Option<Vec<String>>,
}

impl Batch {
    /// Which bounds the batch's queries apply.
    pub fn shape(&self) -> RangeShape {
        RangeShape {
            lower: self.lower.is_some(),
            upper: self.upper.is_some(),
        }
    }

    /// The settings carrying the bounds' values.
    pub fn settings(&self) -> Vec<SessionSetting> {
        let mut s = Vec::new();
        if let Some(lower) = &self.lower {
            s.extend(key_bound_settings(Bound::Lower, lower));
        }
        if let Some(upper) = &self.upper {
            s.extend(key_bound_settings(Bound::Upper, upper));
        }
        s
    }

    /// The range for messages: `(lower, upper]` with keys, which are public.
    pub fn describe(&self) -> String {
        let side = |b: &Option<Vec<String>>, none: &str| match b {
            Some(v) => v.join(", "),
            None => none.to_string(),
        };
        format!(
            "batch {} ({} .. {}]",
            self.no,
            side(&self.lower, "start"),
            side(&self.upper, "end")
        )
    }
}

/// Rows sampled per batch when cut points come from a sample: enough that batch sizes
/// stay within a few tens of percent of `--batch-rows`.
const SAMPLE_ROWS_PER_BATCH: f64 = 200.0;

/// Tables smaller than this many batches are cut exactly (one pass over their keys is
/// cheap); larger ones from a block sample.
const EXACT_BELOW_BATCHES: f64 = 10.0;

/// Cuts `table` (or only the range of `within`) into batches of about `batch_rows`
/// projected rows, reading keys on the session `client` (which has the plan's settings
/// bound). Returns the batches, numbered from 0, and the (estimated) rows in scope.
///
/// Batches are key ranges; their sizes need not be exact, only their bounds. A large
/// table's cut points are quantiles of a `TABLESAMPLE SYSTEM` block sample, which costs
/// milliseconds instead of a pass over every key before the copy can start.
pub async fn layout(
    client: &Client,
    table: &TablePlan,
    batch_rows: u64,
    within: Option<&Batch>,
) -> Result<(Vec<Batch>, u64), Error> {
    let sampled = match within {
        None => sample_fraction(client, table, batch_rows).await?,
        Some(_) => None,
    };
    let (cuts, total) = match sampled {
        Some(percent) => sampled_cuts(client, table, batch_rows, percent).await?,
        None => exact_cuts(client, table, batch_rows, within).await?,
    };
    let mut batches = Vec::with_capacity(cuts.len() + 1);
    let mut lower = within.and_then(|w| w.lower.clone());
    for (no, upper) in cuts.into_iter().enumerate() {
        batches.push(Batch {
            table: table.index,
            no: no as i32,
            lower: lower.take(),
            upper: Some(upper.clone()),
        });
        lower = Some(upper);
    }
    let upper = within.and_then(|w| w.upper.clone());
    if upper.is_some() && upper == lower {
        // The range ends exactly on a cut: no empty trailing part.
        return Ok((batches, total));
    }
    batches.push(Batch {
        table: table.index,
        no: batches.len() as i32,
        lower,
        upper,
    });
    Ok((batches, total))
}

/// The sample percentage for a table worth sampling, or `None` to cut it exactly (small
/// or never analysed tables, views).
async fn sample_fraction(
    client: &Client,
    table: &TablePlan,
    batch_rows: u64,
) -> Result<Option<f32>, Error> {
    if table.access != crate::plan::SourceAccess::Tables {
        return Ok(None);
    }
    // A partitioned table's size is its leaf partitions' (the parent keeps none): it is
    // sampled like a table, never cut by a scan of every key.
    let row = client
        .query_one(
            "SELECT c.relkind::text, \
                    CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'p' THEN \
                      (SELECT coalesce(pg_catalog.sum(GREATEST(l.reltuples, 0)), 0)::float8 \
                       FROM pg_catalog.pg_partition_tree(c.oid) t \
                       JOIN pg_catalog.pg_class l ON l.oid OPERATOR(pg_catalog.=) t.relid WHERE t.isleaf) \
                    ELSE c.reltuples::float8 END \
             FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.regclass",
            &[&table.source.sql()],
        )
        .await
        .map_err(Error::db(format!("sizing {}", table.source)))?;
    let (kind, tuples): (String, f64) = (row.get(0), row.get(1));
    let batch_rows = batch_rows.max(1) as f64;
    if !matches!(kind.as_str(), "r" | "p") || tuples < EXACT_BELOW_BATCHES * batch_rows {
        return Ok(None);
    }
    Ok(Some(
        (100.0 * SAMPLE_ROWS_PER_BATCH / batch_rows).clamp(0.01, 100.0) as f32,
    ))
}

/// Cut points from a block sample of `percent` percent.
async fn sampled_cuts(
    client: &Client,
    table: &TablePlan,
    batch_rows: u64,
    percent: f32,
) -> Result<(Vec<Vec<String>>, u64), Error> {
    let rows = client
        .query(&table.source_sample_keys(), &[&percent])
        .await
        .map_err(Error::db(format!(
            "sampling {} to cut it into batches",
            table.source
        )))?;
    let estimate = (rows.len() as f64 * 100.0 / f64::from(percent)) as u64;
    let batches = estimate.div_ceil(batch_rows.max(1)).max(1) as usize;
    let step = (rows.len() / batches).max(1);
    let cuts = rows
        .iter()
        .skip(step - 1)
        .step_by(step)
        .take(batches.saturating_sub(1))
        .map(|r| (0..table.key_len).map(|i| r.get(i)).collect())
        .collect();
    Ok((cuts, estimate))
}

/// Exact cut points: every `batch_rows`-th key of the projection (within a range).
async fn exact_cuts(
    client: &Client,
    table: &TablePlan,
    batch_rows: u64,
    within: Option<&Batch>,
) -> Result<(Vec<Vec<String>>, u64), Error> {
    let shape = within.map(Batch::shape).unwrap_or(RangeShape::ALL);
    if let Some(w) = within {
        crate::source::snapshot::bind(client, &w.settings()).await?;
    }
    let keys = table.source_key_list();
    let order = table.source_key_ordered().join(", ");
    let texts: Vec<String> = table
        .key()
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.source)))
        .collect();
    let base = table.source_select(shape);
    // Row numbers over the projection's keys; every batch_rows-th key closes a batch.
    let sql = format!(
        "SELECT {texts} FROM (SELECT {keys}, pg_catalog.row_number() OVER (ORDER BY {order}) AS shadan_rn \
         FROM ({base}) AS projection) AS numbered \
         WHERE shadan_rn OPERATOR(pg_catalog.%) $1 OPERATOR(pg_catalog.=) 0 ORDER BY shadan_rn",
        texts = texts.join(", "),
    );
    let context = || format!("cutting {} into batches", table.source);
    let step = i64::try_from(batch_rows.max(1)).unwrap_or(i64::MAX);
    let rows = client
        .query(&sql, &[&step])
        .await
        .map_err(Error::db(&context))?;
    let total: i64 = client
        .query_one(
            &format!("SELECT pg_catalog.count(*) FROM ({base}) AS projection"),
            &[],
        )
        .await
        .map_err(Error::db(&context))?
        .get(0);
    let cuts = rows
        .iter()
        .map(|r| (0..table.key_len).map(|i| r.get(i)).collect())
        .collect();
    Ok((cuts, total.max(0) as u64))
}

/// One table's batch layout.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// Index of the table in the plan.
    pub table: usize,
    /// Its batches, in key order.
    pub batches: Vec<Batch>,
    /// Rows of the projection when it was laid out.
    pub rows: u64,
}

/// Lays out several tables of `plan` at once (indexes in `tables`), with up to `jobs`
/// sessions on the shared snapshot.
pub async fn layout_all(
    plan: &Arc<Plan>,
    source: &Endpoint,
    snapshot: &Arc<Snapshot>,
    tables: Vec<usize>,
    batch_rows: u64,
    jobs: usize,
    shutdown: &Shutdown,
) -> Result<Vec<TableLayout>, Error> {
    let done: Arc<Mutex<Vec<TableLayout>>> = Arc::default();
    let open = {
        let (plan, source, snapshot) = (plan.clone(), source.clone(), snapshot.clone());
        move || {
            let (plan, source, snapshot) = (plan.clone(), source.clone(), snapshot.clone());
            async move { Session::open(&source, &snapshot, &plan).await }
        }
    };
    let work = {
        let (plan, done) = (plan.clone(), done.clone());
        move |session: Session, table: usize| {
            let (plan, done) = (plan.clone(), done.clone());
            async move {
                let (batches, rows) =
                    layout(session.client(), &plan.tables[table], batch_rows, None).await?;
                if let Ok(mut d) = done.lock() {
                    d.push(TableLayout {
                        table,
                        batches,
                        rows,
                    });
                }
                Ok(session)
            }
        }
    };
    workers::for_each(jobs, tables.into_iter().collect(), shutdown, open, work).await?;
    let done = std::mem::take(
        &mut *done
            .lock()
            .map_err(|_| Error::Runtime("a layout worker panicked".into()))?,
    );
    Ok(done)
}
