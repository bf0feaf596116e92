//! Finding the rows a table lost (deleted, or moved out of scope) without shipping keys:
//! both sides sum their keys into hash buckets, and only buckets that disagree are looked
//! into.
//!
//! Each key hashes, under a seed drawn for the run, to a bucket and a second value (by its
//! type's own extended hash function, or `hash_record_extended` of a key of several
//! columns or another type). Per bucket, the source sends its row count and the
//! sum of second values; the target computes the same over its table, which after this
//! run's writes holds the source's rows plus the lost ones. A bucket one row over holds
//! one lost row, whose second value is the difference of the sums: the target's key with
//! that value is the candidate. The keys of any other disagreeing bucket are all
//! candidates. The source then says which candidates it still has in scope (positions
//! only), and the rest are deleted, batch by batch with their checkpoints. At eight
//! buckets per lost row, a few hundred bytes per lost row cross, against a whole batch's
//! keys. Whatever does not add up (a hash that differs between the servers, say) leaves
//! the counts disagreeing, and the caller then falls back to counting batch by batch.

use std::collections::{HashMap, HashSet};

use tokio_postgres::types::ToSql;

use super::{Done, Worker};
use crate::copy::tuple::split_int4;

use crate::digest::Accumulator;
use crate::error::Error;
use crate::key::{key_fields, RawValue};
use crate::plan::changes_sql::{KeyBuckets, Reach};
use crate::plan::query::SessionSetting;
use crate::plan::TablePlan;
use crate::source::batch::Batch;
use crate::source::snapshot::bind;
use crate::target::state::{self, Checkpoint, Stamp};

/// Keys asked about per existence query (bound parameters are limited to 65,535).
const KEYS_PER_QUERY: usize = 1000;

impl Worker {
    /// Finds and deletes the `lost` target rows of `table` that the source no longer has
    /// in scope (see the module documentation), updating `checkpoints`; `cuts` are the
    /// table's cut settings, `reach` how its buckets are read. Leaves the counts
    /// disagreeing when it cannot account for every lost row.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn gone_by_buckets(
        &mut self,
        table: &TablePlan,
        batches: &[Batch],
        checkpoints: &mut [Accumulator],
        touched: &mut [bool],
        lost: u64,
        cuts: &[SessionSetting],
        reach: Reach,
        stamp: Stamp<'_>,
        done: &mut Done,
    ) -> Result<(), Error> {
        let buckets = KeyBuckets {
            count: lost
                .saturating_mul(8)
                .clamp(1024, 1 << 22)
                .next_power_of_two() as u32,
            seed: random_seed()?,
        };
        let context = || format!("finding the rows {} lost", table.source);
        // hash_record_extended came with PostgreSQL 14; with an older server the caller
        // counts batch by batch instead.
        let (recent_source, recent_target) =
            tokio::try_join!(recent(self.session.client()), recent(&self.client))?;
        if !(recent_source && recent_target) {
            return Ok(());
        }
        let (source, target) = tokio::try_join!(
            async {
                self.session
                    .client()
                    .query(&table.source_key_buckets(&buckets, reach), &[])
                    .await
                    .map_err(Error::db(&context))
            },
            async {
                self.client
                    .query(&table.target_key_buckets(&buckets), &[])
                    .await
                    .map_err(Error::db(&context))
            }
        )?;
        done.source_bytes += 20 * source.len() as u64;
        // Target minus source, per bucket: rows and second-value sums.
        let mut diff: HashMap<i32, (i64, i64)> = HashMap::new();
        for (rows, sign) in [(&target, 1), (&source, -1)] {
            for r in rows {
                let (b, n, s): (i32, i64, Option<i64>) = (r.get(0), r.get(1), r.get(2));
                let d = diff.entry(b).or_default();
                d.0 += sign * n;
                d.1 += sign * s.unwrap_or(0);
            }
        }
        diff.retain(|_, d| *d != (0, 0));
        if diff.is_empty() || diff.values().any(|d| d.0 < 0) {
            return Ok(());
        }
        // The target's keys in those buckets, with their batch positions.
        bind(&self.client, cuts).await?;
        let wanted: Vec<i32> = diff.keys().copied().collect();
        let found = crate::copy::fold(
            &self.client,
            &table.target_keys_in_buckets(&buckets, &wanted, batches.len() - 1),
            &context,
            Vec::new(),
            |found: &mut Vec<(Vec<u8>, i32, i32, i32)>, tuple| {
                let parts = split_int4(tuple).and_then(|(rest, pos)| {
                    let (rest, v) = split_int4(&rest)?;
                    let (key, b) = split_int4(&rest)?;
                    Some((key, b, v, pos))
                });
                if let Some((key, b, v, pos)) = parts {
                    let key = crate::copy::tuple::key_bytes(&key, table.key_len).to_vec();
                    found.push((key, b, v, pos));
                }
            },
        )
        .await?;
        // A bucket one row over names its lost key by the second value; in any other
        // disagreeing bucket every key is a candidate.
        let mut matched: HashMap<i32, usize> = HashMap::new();
        for (_, b, v, _) in &found {
            if diff
                .get(b)
                .is_some_and(|d| d.0 == 1 && d.1 == i64::from(*v))
            {
                *matched.entry(*b).or_default() += 1;
            }
        }
        let candidates: Vec<&(Vec<u8>, i32, i32, i32)> = found
            .iter()
            .filter(|(_, b, v, _)| match (diff.get(b), matched.get(b)) {
                (Some(d), Some(1)) => d.0 == 1 && d.1 == i64::from(*v),
                (Some(_), _) => true,
                (None, _) => false,
            })
            .collect();
        // Which candidates the source still has in scope (positions come back, no keys).
        let mut kept = HashSet::new();
        for (chunk_no, chunk) in candidates.chunks(KEYS_PER_QUERY).enumerate() {
            let values: Vec<RawValue> = chunk
                .iter()
                .flat_map(|(key, ..)| key_fields(key).into_iter().map(RawValue))
                .collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            for row in self
                .session
                .client()
                .query(&table.source_keys_in_scope(chunk.len(), reach), &params)
                .await
                .map_err(Error::db(&context))?
            {
                let position: i32 = row.get(0);
                kept.insert(chunk_no * KEYS_PER_QUERY + position as usize - 1);
                done.source_bytes += 4;
            }
        }
        let mut by_batch: HashMap<usize, Vec<Vec<u8>>> = HashMap::new();
        for (i, (key, _, _, pos)) in candidates.iter().enumerate() {
            if !kept.contains(&i) {
                by_batch.entry(*pos as usize).or_default().push(key.clone());
            }
        }
        if by_batch.values().map(|g| g.len() as u64).sum::<u64>() != lost
            || by_batch.keys().any(|&pos| pos >= batches.len())
        {
            return Ok(());
        }
        let mut groups: Vec<(usize, Vec<Vec<u8>>)> = by_batch.into_iter().collect();
        groups.sort_unstable_by_key(|(pos, _)| *pos);
        for &(pos, _) in &groups {
            touched[pos] = true;
        }
        if table.has_children() || !table.target_write_hooks.is_empty() {
            // Deletes a child must see first, or read back batch by batch: one at a time.
            for (pos, gone) in groups {
                let batch = &batches[pos];
                super::apply::begin(&self.client, batch, &context).await?;
                self.remove_gone(table, batch, &mut checkpoints[pos], gone, stamp, done)
                    .await?;
            }
            return Ok(());
        }
        let mut group = Vec::new();
        let mut keys = 0;
        for (pos, gone) in groups {
            keys += gone.len();
            group.push((pos, gone));
            if keys >= KEYS_PER_TRANSACTION {
                let full = std::mem::take(&mut group);
                self.remove_lost_together(table, batches, checkpoints, full, stamp, done)
                    .await?;
                keys = 0;
            }
        }
        if !group.is_empty() {
            self.remove_lost_together(table, batches, checkpoints, group, stamp, done)
                .await?;
        }
        Ok(())
    }

    /// Deletes the lost rows of several batches (position, keys) of a table with no
    /// children and no triggers or rules, with every batch's checkpoint, in one
    /// transaction: one flight opens it, stages the keys and asks for each batch's row
    /// prints, the rows are read back for their hashes, a second flight deletes them and
    /// stores the checkpoints, and the commit follows once every count is as staged. A
    /// night that lost rows all over a table waits for a few round trips, not several a
    /// batch.
    async fn remove_lost_together(
        &mut self,
        table: &TablePlan,
        batches: &[Batch],
        checkpoints: &mut [Accumulator],
        group: Vec<(usize, Vec<Vec<u8>>)>,
        stamp: Stamp<'_>,
        done: &mut Done,
    ) -> Result<(), Error> {
        let client: &tokio_postgres::Client = &self.client;
        let next = match remove_or_fail(client, table, batches, checkpoints, &group, stamp).await {
            Ok(next) => next,
            Err(e) => {
                // The transaction ends here, not left open on a pooled session.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        };
        for ((pos, gone), digest) in group.iter().zip(next) {
            checkpoints[*pos] = digest;
            done.written.deleted += gone.len() as u64;
        }
        Ok(())
    }
}

/// [`Worker::remove_lost_together`]'s transaction; returns each batch's new digest.
async fn remove_or_fail(
    client: &tokio_postgres::Client,
    table: &TablePlan,
    batches: &[Batch],
    checkpoints: &[Accumulator],
    group: &[(usize, Vec<Vec<u8>>)],
    stamp: Stamp<'_>,
) -> Result<Vec<Accumulator>, Error> {
    let context = || {
        let first = group.first().map(|(p, _)| batches[*p].describe());
        let last = group.last().map(|(p, _)| batches[*p].describe());
        format!(
            "deleting rows of {} from {} to {}",
            table.target,
            first.unwrap_or_default(),
            last.unwrap_or_default()
        )
    };
    let mut of_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, (_, gone)) in group.iter().enumerate() {
        for key in gone {
            of_key.insert(crate::key::matching(key, &table.key_forms).into_owned(), i);
        }
    }
    let all: Vec<Vec<u8>> = group.iter().flat_map(|(_, g)| g.iter().cloned()).collect();
    let ((), lost, prints) = tokio::try_join!(
        async {
            client
                .batch_execute("BEGIN; SET CONSTRAINTS ALL DEFERRED")
                .await
                .map_err(Error::db(&context))
        },
        super::apply::fold_gone(
            client,
            table,
            &all,
            &context,
            vec![(Vec::new(), Accumulator::default()); group.len()],
            |lost: &mut Vec<(Vec<[u8; 32]>, Accumulator)>, tuple| {
                if let Some(&i) = of_key.get(table.match_key(tuple).as_ref()) {
                    let hash = lost[i].1.add_row_hashed(tuple);
                    lost[i].0.push(hash);
                }
            }
        ),
        futures_util::future::try_join_all(group.iter().map(|(pos, _)| state::batch_prints(
            client,
            &table.target,
            batches[*pos].no
        )))
    )?;
    let mut next = Vec::with_capacity(group.len());
    for (((pos, _), (hashes, removed)), prints) in group.iter().zip(&lost).zip(prints) {
        let mut digest = checkpoints[*pos];
        digest.remove(removed);
        next.push(Checkpoint {
            digest,
            prints: prints.replaced(hashes, std::iter::empty()),
        });
    }
    let staged = super::stage::Staged {
        rows: 0,
        gone: all.len(),
    };
    tokio::try_join!(
        async {
            super::stage::apply(client, table, &context(), staged, false)
                .await
                .map(|_| ())
        },
        futures_util::future::try_join_all(group.iter().zip(&next).map(|((pos, _), n)| {
            state::store_digest(client, &table.target, &batches[*pos], n, stamp)
        }))
    )?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(&context))?;
    Ok(next.into_iter().map(|n| n.digest).collect())
}

/// Keys deleted in one transaction when rows were lost all over a table: bounds the keys
/// and row hashes held at once.
const KEYS_PER_TRANSACTION: usize = 50_000;

/// Whether the server has `hash_record_extended` (PostgreSQL 14 or later).
async fn recent(client: &tokio_postgres::Client) -> Result<bool, Error> {
    client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::pg_catalog.int4 \
             OPERATOR(pg_catalog.>=) 140000",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .map_err(Error::db("reading the server's version"))
}

/// A seed for the key hashes, drawn for the run.
fn random_seed() -> Result<i64, Error> {
    crate::digest::random_bytes()
        .map(i64::from_le_bytes)
        .map_err(|e| Error::Runtime(format!("drawing a hash seed: {e}")))
}
