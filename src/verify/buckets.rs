//! Pass 1 of verify: every row of both sides, digested into buckets by a hash of its key.
//!
//! Bucketing by key hash (not by key range) makes the comparison independent of how each
//! server orders keys (collations may differ) and lets each side be read as plain
//! sequential scans, sliced into physical chunks ([`Chunk`]) read in parallel. Bucket
//! digests are order-independent sums, so chunks can finish in any order.

use std::collections::HashSet;

use tokio_postgres::Client;

use crate::digest::{KeyedSum, RunKey};
use crate::error::Error;
use crate::plan::query::Chunk;
use crate::plan::TablePlan;

/// Buckets per table: enough that a few differences leave most buckets clean, few
/// enough that a table's bucket digests (each 40 bytes) stay small.
pub const BUCKETS: usize = 4096;

/// The bucket of an encoded key (FNV-1a; only spreads keys, proves nothing).
pub fn bucket_of(key: &[u8]) -> usize {
    let mut h = crate::key::Fnv::default();
    std::hash::Hasher::write(&mut h, key);
    (std::hash::Hasher::finish(&h) % BUCKETS as u64) as usize
}

/// One side of one table, digested per bucket.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// One keyed sum per bucket (see [`crate::digest`] for why a per-run key).
    pub sums: Vec<KeyedSum>,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            sums: vec![KeyedSum::default(); BUCKETS],
        }
    }
}

impl Buckets {
    /// Adds another chunk's buckets.
    pub fn merge(&mut self, other: &Buckets) {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            a.merge(b);
        }
    }

    /// The whole side's digest, under this run's key.
    pub fn total(&self) -> KeyedSum {
        let mut t = KeyedSum::default();
        self.sums.iter().for_each(|s| t.merge(s));
        t
    }

    /// Buckets whose digests differ between two sides.
    pub fn differing(&self, other: &Buckets) -> HashSet<usize> {
        (0..BUCKETS)
            .filter(|&i| self.sums[i] != other.sums[i])
            .collect()
    }
}

/// Cuts a relation into about `parts` physical chunks by heap pages; a single unbounded
/// read when the relation has no heap of its own (views, partitioned tables), is small,
/// or the role may read only some of its columns.
pub async fn chunks(
    client: &Client,
    relation_sql: &str,
    parts: usize,
) -> Result<Vec<Option<Chunk>>, Error> {
    let row = client
        .query_typed_one(
            "SELECT c.relkind::text, pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int8, \
                    pg_catalog.has_table_privilege(c.oid, 'SELECT') \
             FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.regclass",
            &[(&relation_sql, tokio_postgres::types::Type::TEXT)],
        )
        .await
        .map_err(Error::db(format!("sizing {relation_sql}")))?;
    let kind: String = row.get(0);
    let pages: i64 = row.get(1);
    // Reading `ctid` needs SELECT on the whole table; a role granted only some columns
    // (see `shadan grants`) reads the relation as one stream.
    let whole_table: bool = row.get(2);
    let pages = pages.max(0) as u64;
    if kind != "r" || !whole_table || parts <= 1 || pages < 64 {
        return Ok(vec![None]);
    }
    let step = pages.div_ceil(parts as u64);
    let mut out = Vec::new();
    let mut first = 0;
    while first + step < pages {
        out.push(Some(Chunk {
            first,
            end: Some(first + step),
        }));
        first += step;
    }
    // The last chunk is open-ended: pages added since sizing are still read.
    out.push(Some(Chunk { first, end: None }));
    Ok(out)
}

/// Reads one chunk of one side into fresh buckets, hashing rows under `run_key`; adds
/// the rows read to `rows_read`.
pub async fn digest_chunk(
    client: &Client,
    sql: &str,
    table: &crate::plan::TablePlan,
    run_key: &RunKey,
    context: impl Fn() -> String,
    rows_read: &std::sync::atomic::AtomicU64,
) -> Result<Buckets, Error> {
    let mut seen = 0u64;
    let buckets = crate::copy::fold(client, sql, context, Buckets::default(), |b, tuple| {
        // Keys as rows are matched (one bucket for 5 and 5.00), rows as they are.
        b.sums[bucket_of(&table.match_key(tuple))].add(&run_key.hash(tuple));
        seen += 1;
        if seen % 8192 == 0 {
            rows_read.fetch_add(8192, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .await?;
    rows_read.fetch_add(seen % 8192, std::sync::atomic::Ordering::Relaxed);
    Ok(buckets)
}

/// Which side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source projection.
    Source,
    /// The target table.
    Target,
}

/// The relation a side of `table` reads, as SQL text (for sizing).
pub fn relation_sql(table: &TablePlan, side: Side) -> String {
    match side {
        Side::Source => table.source_relation().sql(),
        Side::Target => table.target.sql(),
    }
}
