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
use crate::snapshot::{Session, Snapshot};
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

/// Cuts `table` (or only the range of `within`) into batches of about `batch_rows`
/// projected rows, reading keys on the session `client` (which has the plan's settings
/// bound). Returns the batches, numbered from 0, and the number of rows in scope.
pub async fn layout(
    client: &Client,
    table: &TablePlan,
    batch_rows: u64,
    within: Option<&Batch>,
) -> Result<(Vec<Batch>, u64), Error> {
    let shape = within.map(Batch::shape).unwrap_or(RangeShape::ALL);
    if let Some(w) = within {
        crate::snapshot::bind(client, &w.settings()).await?;
    }
    let keys = table.source_key_list();
    let texts: Vec<String> = table
        .key()
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.source)))
        .collect();
    let base = table.source_select(shape);
    // Row numbers over the projection's keys; every batch_rows-th key closes a batch.
    let sql = format!(
        "SELECT {texts} FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS shadan_rn \
         FROM ({base}) AS projection) AS numbered WHERE shadan_rn % $1 = 0 ORDER BY shadan_rn",
        texts = texts.join(", "),
    );
    let context = || format!("cutting {} into batches", table.source);
    let step = i64::try_from(batch_rows.max(1)).unwrap_or(i64::MAX);
    let rows = client
        .query(&sql, &[&step])
        .await
        .map_err(Error::db(&context))?;
    let total: i64 = client
        .query_one(&format!("SELECT count(*) FROM ({base}) AS projection"), &[])
        .await
        .map_err(Error::db(&context))?
        .get(0);
    let mut batches = Vec::with_capacity(rows.len() + 1);
    let mut lower = within.and_then(|w| w.lower.clone());
    for (no, row) in rows.iter().enumerate() {
        let upper: Vec<String> = (0..table.key_len).map(|i| row.get(i)).collect();
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
        return Ok((batches, total.max(0) as u64));
    }
    batches.push(Batch {
        table: table.index,
        no: batches.len() as i32,
        lower,
        upper,
    });
    Ok((batches, total.max(0) as u64))
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
