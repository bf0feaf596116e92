//! Pass 2 of verify: row by row, only in the buckets whose digests differ. The target's
//! rows of those buckets are held as key -> row hash; the source's rows of those buckets
//! stream past them. Memory is bounded by the rows of differing buckets, not the table.

use std::collections::HashSet;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::buckets::bucket_of;
use crate::copy::tuple::{fields, non_null_among};
use crate::digest::{row_hash, row_hash_of_prefix};
use crate::error::Error;
use crate::key::{has_null_field, key_fields, KeyMap, RawValue};
use crate::plan::{SourceAccess, TablePlan};

/// Extra target keys checked against the source in one query: few queries for many
/// extra rows, well under PostgreSQL's 65,535 parameters for any key.
const KEYS_PER_PROBE: usize = 1000;

/// Keys kept per finding for reports (counts are always complete).
pub const SAMPLE_KEYS: usize = 10;

/// Row-level differences of one table: counts, and up to [`SAMPLE_KEYS`] keys each.
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
    /// Up to [`SAMPLE_KEYS`] encoded keys, in the order found.
    pub keys: Vec<Vec<u8>>,
}

impl Found {
    fn add(&mut self, key: &[u8]) {
        self.count += 1;
        if self.keys.len() < SAMPLE_KEYS {
            self.keys.push(key.to_vec());
        }
    }
}

/// A target row as held during the comparison.
struct TargetRow {
    hash: [u8; 32],
    /// Positions of `own` columns that are not NULL in this row.
    own_set: Vec<usize>,
}

/// Compares the rows of `table` whose key falls in one of `buckets`. `source` and
/// `target` are sessions on the run's snapshots.
pub async fn diff_table(
    source: &Client,
    target: &Client,
    table: &TablePlan,
    buckets: &HashSet<usize>,
) -> Result<RowDiff, Error> {
    let own_positions = table.own_positions();
    // A target key can occur more than once (a nullable unique index, or none while a
    // cutover has set its indexes aside): the first row is held for comparison, every
    // further one is an extra row of its own, never silently overwritten.
    let (held, duplicates) = crate::copy::fold(
        target,
        &table.target_copy_chunk(None),
        || format!("reading {} for a row comparison", table.target),
        (KeyMap::default(), Vec::new()),
        |(rows, duplicates): &mut (KeyMap<TargetRow>, Vec<(Vec<u8>, TargetRow)>), tuple| {
            let key = table.match_key(tuple);
            let key = key.as_ref();
            if !buckets.contains(&bucket_of(key)) {
                return;
            }
            let row = TargetRow {
                hash: row_hash(tuple),
                own_set: non_null_among(tuple, &own_positions).collect(),
            };
            if rows.contains_key(key) {
                duplicates.push((key.to_vec(), row));
            } else {
                rows.insert(key.to_vec(), row);
            }
        },
    )
    .await?;
    let duplicate_keys: HashSet<&[u8]> = duplicates.iter().map(|(k, _)| k.as_slice()).collect();
    // Whether the source row of each duplicated key is owned (absent: not in the source).
    let mut duplicate_owned: KeyMap<bool> = KeyMap::default();

    let flagged = table.needs_owned_flag();
    let n = table.columns.len();
    let mut own_values: Vec<Found> = vec![Found::default(); n];
    let (mut diff, held) = crate::copy::fold(
        source,
        &table.source_copy_chunk(None, flagged),
        || format!("reading {} for a row comparison", table.source),
        (RowDiff::default(), held),
        |(diff, held), tuple| {
            let key = table.match_key(tuple);
            let key = key.as_ref();
            if !buckets.contains(&bucket_of(key)) {
                return;
            }
            let (hash, owned) = if flagged {
                let owned = fields(tuple).nth(n).flatten() == Some(&[1u8][..]);
                (row_hash_of_prefix(tuple, n), owned)
            } else {
                (row_hash(tuple), true)
            };
            if duplicate_keys.contains(key) {
                duplicate_owned.insert(key.to_vec(), owned);
            }
            match held.remove(key) {
                None => diff.missing.add(key),
                Some(row) if row.hash != hash => {
                    diff.changed.add(key);
                    for &i in &row.own_set {
                        // Not owned, or (through export views, which mask `own` columns)
                        // NULL in the permitted projection: a value retail may not hold.
                        let masked = table.access == SourceAccess::Views
                            && fields(tuple).nth(i).flatten().is_none();
                        if !owned || masked {
                            own_values[i].add(key);
                        }
                    }
                }
                Some(_) => {}
            }
        },
    )
    .await?;
    diff.own_values = own_values
        .into_iter()
        .enumerate()
        .filter(|(_, f)| f.count > 0)
        .map(|(i, f)| (table.columns[i].target.clone(), f))
        .collect();

    // What is left in the target is extra, and so is every duplicated key's further row;
    // an extra key that exists in the source table is a row outside the scope (another
    // retailer's, a last-resort or FIT customer).
    let mut extra: Vec<Vec<u8>> = held.into_keys().collect();
    for (key, row) in &duplicates {
        extra.push(key.clone());
        if let Some(&owned) = duplicate_owned.get(key) {
            if !owned {
                for &i in &row.own_set {
                    own_values_late(&mut diff, table, i, key);
                }
            }
        }
    }
    extra.sort();
    let context = || format!("checking extra rows of {} against the source", table.target);
    let mut probe = Vec::new();
    for key in &extra {
        diff.extra.add(key);
        // Never a source key (NULL), or a duplicate of a row the source has; through
        // export views the tool cannot see rows outside the scope at all.
        if !has_null_field(key)
            && !duplicate_owned.contains_key(key)
            && table.access == SourceAccess::Tables
        {
            probe.push(key);
        }
    }
    let per_query = (60_000 / table.key_len.max(1)).clamp(1, KEYS_PER_PROBE);
    for chunk in probe.chunks(per_query) {
        let sql = table.source_keys_existing(chunk.len());
        let values: Vec<RawValue> = chunk
            .iter()
            .flat_map(|key| key_fields(key).into_iter().map(RawValue))
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        for row in source
            .query(&sql, &params)
            .await
            .map_err(Error::db(&context))?
        {
            let position: i32 = row.get(0);
            if let Some(key) = usize::try_from(position - 1)
                .ok()
                .and_then(|i| chunk.get(i))
            {
                diff.out_of_scope.add(key);
            }
        }
    }
    Ok(diff)
}

/// Records an `own` value found in a duplicated target row of a key the source does not
/// own.
fn own_values_late(diff: &mut RowDiff, table: &TablePlan, position: usize, key: &[u8]) {
    let column = &table.columns[position].target;
    match diff.own_values.iter_mut().find(|(c, _)| c == column) {
        Some((_, found)) => found.add(key),
        None => {
            let mut found = Found::default();
            found.add(key);
            diff.own_values.push((column.clone(), found));
        }
    }
}
