//! Comparing one batch: digests of both sides first (streamed, constant memory), and only
//! when they differ, row by row: the target's rows of the batch are held as
//! key -> row hash (bounded by the batch size), the source's rows stream past them.

use std::collections::HashMap;
use std::pin::pin;

use futures_util::StreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::batch::Batch;
use crate::copy::tuple::{fields, key_bytes, TupleSplitter};
use crate::digest::{row_hash, row_hash_of_prefix, Accumulator};
use crate::error::Error;
use crate::key::{key_fields, RawValue};
use crate::plan::{Class, TablePlan};

/// Keys kept per category and batch for reports (counts are always complete).
pub const SAMPLE_KEYS: usize = 10;

/// The outcome of comparing one batch.
#[derive(Debug, Default)]
pub struct BatchCheck {
    /// Digest of the source projection's rows in the batch.
    pub source: Accumulator,
    /// Digest of the target's rows in the batch.
    pub target: Accumulator,
    /// Row-level differences, found only when the digests differ.
    pub rows: RowDiff,
}

/// Row-level differences of one batch: counts, and up to [`SAMPLE_KEYS`] keys each.
#[derive(Debug, Default)]
pub struct RowDiff {
    /// Rows of the projection missing from the target.
    pub missing: Found,
    /// Target rows the projection does not have.
    pub extra: Found,
    /// Rows present on both sides with different values.
    pub changed: Found,
    /// Extra rows whose key exists in the source outside the scope or `only` filter.
    pub out_of_scope: Found,
    /// Per `own` column (target name): rows not owned that hold a value in the target.
    pub own_values: Vec<(String, Found)>,
}

/// A count with sample keys (encoded keys, rendered later).
#[derive(Debug, Default, Clone)]
pub struct Found {
    /// How many.
    pub count: u64,
    /// Up to [`SAMPLE_KEYS`] encoded keys.
    pub keys: Vec<Vec<u8>>,
}

impl Found {
    fn add(&mut self, key: &[u8]) {
        self.count += 1;
        if self.keys.len() < SAMPLE_KEYS {
            self.keys.push(key.to_vec());
        }
    }

    /// Adds another batch's findings.
    pub fn merge(&mut self, other: &Found) {
        self.count += other.count;
        let room = SAMPLE_KEYS.saturating_sub(self.keys.len());
        self.keys.extend(other.keys.iter().take(room).cloned());
    }
}

/// Compares one batch of `table` on two sessions that have the batch's bounds bound.
pub async fn check_batch(
    source: &Client,
    target: &Client,
    table: &TablePlan,
    batch: &Batch,
) -> Result<BatchCheck, Error> {
    let shape = batch.shape();
    let reading_source = || format!("reading {} {}", table.source, batch.describe());
    let reading_target = || format!("reading {} {}", table.target, batch.describe());
    let source_sql = table.source_copy(shape);
    let target_sql = table.target_copy_out(shape);
    let (s, t) = tokio::join!(
        stream(
            source,
            &source_sql,
            reading_source,
            |acc: &mut Accumulator, tuple| acc.add_row(tuple),
            Accumulator::default()
        ),
        stream(
            target,
            &target_sql,
            reading_target,
            |acc: &mut Accumulator, tuple| acc.add_row(tuple),
            Accumulator::default()
        ),
    );
    let mut check = BatchCheck {
        source: s?,
        target: t?,
        rows: RowDiff::default(),
    };
    if check.source != check.target {
        check.rows = diff_rows(source, target, table, batch).await?;
    }
    Ok(check)
}

/// A target row as held during a row-level comparison.
struct TargetRow {
    hash: [u8; 32],
    /// Target names of `own` columns that are not NULL in this row.
    own_set: Vec<usize>,
}

async fn diff_rows(
    source: &Client,
    target: &Client,
    table: &TablePlan,
    batch: &Batch,
) -> Result<RowDiff, Error> {
    let shape = batch.shape();
    let key_len = table.key_len;
    let own_positions: Vec<usize> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.class == Class::Own)
        .map(|(i, _)| i)
        .collect();
    let held = stream(
        target,
        &table.target_copy_out(shape),
        || format!("reading {} {}", table.target, batch.describe()),
        |rows: &mut HashMap<Vec<u8>, TargetRow>, tuple| {
            let values: Vec<Option<&[u8]>> = fields(tuple).collect();
            let own_set = own_positions
                .iter()
                .copied()
                .filter(|&i| values[i].is_some())
                .collect();
            rows.insert(
                key_bytes(tuple, key_len).to_vec(),
                TargetRow {
                    hash: row_hash(tuple),
                    own_set,
                },
            );
        },
        HashMap::new(),
    )
    .await?;

    let flagged = table.needs_owned_flag();
    let source_sql = if flagged {
        table.source_copy_with_owned_flag(shape)
    } else {
        table.source_copy(shape)
    };
    let n = table.columns.len();
    let mut own_values: Vec<Found> = vec![Found::default(); table.columns.len()];
    let (mut diff, held) = stream(
        source,
        &source_sql,
        || format!("reading {} {}", table.source, batch.describe()),
        |(diff, held): &mut (RowDiff, HashMap<Vec<u8>, TargetRow>), tuple| {
            let key = key_bytes(tuple, key_len);
            let (hash, owned) = if flagged {
                let owned = fields(tuple).nth(n).flatten() == Some(&[1u8][..]);
                (row_hash_of_prefix(tuple, n), owned)
            } else {
                (row_hash(tuple), true)
            };
            match held.remove(key) {
                None => diff.missing.add(key),
                Some(row) if row.hash != hash => {
                    diff.changed.add(key);
                    if !owned {
                        for &i in &row.own_set {
                            own_values[i].add(key);
                        }
                    }
                }
                Some(_) => {}
            }
        },
        (RowDiff::default(), held),
    )
    .await?;
    diff.own_values = own_values
        .into_iter()
        .enumerate()
        .filter(|(_, f)| f.count > 0)
        .map(|(i, f)| (table.columns[i].target.clone(), f))
        .collect();

    // What is left in the target is extra; an extra key that exists in the source table is
    // a row outside the scope (another retailer's, a last-resort or FIT customer).
    let mut extra: Vec<Vec<u8>> = held.into_keys().collect();
    extra.sort();
    let probe = match table.access {
        crate::plan::SourceAccess::Tables => Some(
            source
                .prepare(&table.source_key_exists())
                .await
                .map_err(Error::db(format!(
                    "checking extra rows of {} against the source",
                    table.target
                )))?,
        ),
        // Through export views the tool cannot see rows outside the scope at all.
        crate::plan::SourceAccess::Views => None,
    };
    for key in &extra {
        diff.extra.add(key);
        if let Some(probe) = &probe {
            let values: Vec<RawValue> = key_fields(key).into_iter().map(RawValue).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let exists: bool = source
                .query_one(probe, &params)
                .await
                .map_err(Error::db(format!(
                    "checking extra rows of {} against the source",
                    table.target
                )))?
                .get(0);
            if exists {
                diff.out_of_scope.add(key);
            }
        }
    }
    Ok(diff)
}

/// Streams a binary COPY and folds its tuples into `state`.
async fn stream<S>(
    client: &Client,
    sql: &str,
    context: impl Fn() -> String,
    mut fold: impl FnMut(&mut S, &[u8]),
    mut state: S,
) -> Result<S, Error> {
    let copy = client.copy_out(sql).await.map_err(Error::db(context()))?;
    let mut copy = pin!(copy);
    let mut split = TupleSplitter::new();
    while let Some(chunk) = copy.next().await {
        let chunk = chunk.map_err(Error::db(context()))?;
        split
            .feed(&chunk, &mut |tuple| fold(&mut state, tuple))
            .map_err(|e| Error::Runtime(format!("{}: {e}", context())))?;
    }
    split
        .finish()
        .map_err(|e| Error::Runtime(format!("{}: {e}", context())))?;
    Ok(state)
}
