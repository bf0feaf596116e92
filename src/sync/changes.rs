//! The changes path of sync (see [`crate::source::changes`] for why it is complete): one
//! query per table reads the projection of the rows written since the recorded horizon,
//! ordered by batch; the batches with changes are written as their rows come in, up to
//! [`group::ROWS_PER_TRANSACTION`] rows to a transaction, each with its checkpoint
//! updated by the rows it lost and gained ([`group`]). A count of the rows in scope,
//! taken in the same snapshot, then shows whether the target holds rows the source no
//! longer has, found by hash buckets of keys ([`super::lost`]); only if those do not add
//! up are the batches counted one by one, and only batches whose counts disagree fetch
//! their keys to find the rows to delete.

use std::collections::HashSet;
use std::pin::pin;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_postgres::Client;

use super::apply::{self, SourceRows};
use super::group::{self, write_group, Member, Sink};
use super::{Deferred, Done, Worker};
use crate::copy::tuple::{key_bytes, TupleSplitter};

use crate::digest::Accumulator;
use crate::error::Error;
use crate::plan::changes_sql::{cut_settings, Reach, HORIZON_SETTING};
use crate::plan::query::{SessionSetting, SettingValue};
use crate::plan::TablePlan;
use crate::source::batch::Batch;
use crate::source::changes::horizon_xid;
use crate::target::state::{self, Checkpoint, Stamp, StoredBatch};

/// What a table read by changes starts from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Since {
    /// The horizon of its last run: rows written after it are read.
    pub horizon: i64,
    /// The column carrying `xmin` (see [`crate::source::changes::ReadFacts`]).
    pub column: &'static str,
    /// How statements that visit all its rows in scope reach them.
    pub reach: Reach,
    /// Its rows in scope at this run's snapshot, counted with every table's
    /// ([`super::quiet`]).
    pub in_scope: u64,
}

impl Worker {
    /// Syncs a table by its changes `since` its last run; `stored` is its layout in key
    /// order, every batch with a checkpoint.
    pub(super) async fn sync_changes(
        &mut self,
        table: &TablePlan,
        stored: Vec<StoredBatch>,
        prints: state::PrintsReader,
        since: Since,
        stamp: Stamp<'_>,
        batch_rows: u64,
    ) -> Result<Done, Error> {
        let Since {
            horizon,
            column,
            reach,
            in_scope,
        } = since;
        let batches: Vec<Batch> = stored.iter().map(|s| s.batch.clone()).collect();
        let mut checkpoints: Vec<Accumulator> = stored
            .iter()
            .map(|s| s.written.unwrap_or_default())
            .collect();
        let cuts = batches.len() - 1;
        let uppers: Vec<&[String]> = batches[..cuts]
            .iter()
            .map(|b| b.upper.as_deref().unwrap_or_default())
            .collect();
        let cuts_bound = cut_settings(&uppers);
        let mut settings = cuts_bound.clone();
        settings.push(SessionSetting {
            name: HORIZON_SETTING.into(),
            value: SettingValue::Text(horizon_xid(horizon)),
        });
        // The prints were read with every table's, whatever changed ([`super::quiet`]):
        // which batches or tables had changes is not the target's to see. The bounds and
        // the two source statements go out together: neither waits for the other.
        // Both source statements are unnamed ([`crate::copy::select_as_copy`]): a busy
        // table must not shift the names of the target's prepared statements.
        let source = self.session.client();
        let changes_sql = table.source_changes_select(cuts, column, reach);
        self.session.bind(&settings).await?;

        let mut done = Done::default();
        let mut touched = vec![false; batches.len()];
        let mut redo = Vec::new();
        read_changes(
            source,
            &changes_sql,
            &self.client,
            table,
            &batches,
            prints,
            &mut checkpoints,
            &mut touched,
            &mut done,
            &mut redo,
            stamp,
        )
        .await?;
        done.source_bytes += super::quiet::PROBE_BYTES;
        let held: u64 = checkpoints.iter().map(|c| c.rows).sum();
        if in_scope < held && redo.is_empty() {
            // The target holds rows the source lost: find them by hash buckets of keys.
            self.gone_by_buckets(
                table,
                &batches,
                &mut checkpoints,
                &mut touched,
                held - in_scope,
                &cuts_bound,
                reach,
                stamp,
                &mut done,
            )
            .await?;
        }
        let held: u64 = checkpoints.iter().map(|c| c.rows).sum();
        if in_scope != held || !redo.is_empty() {
            // Lost rows the buckets could not place (an older server, a hash that differs
            // between the servers), a batch a constraint sent back, or a target changed
            // behind the tool's back: find the batches that disagree.
            let counts = self
                .session
                .client()
                .query(&table.source_counts_by_batch(cuts, reach), &[])
                .await
                .map_err(Error::db(format!(
                    "counting the rows of {} by batch",
                    table.source
                )))?;
            done.source_bytes += 12 * counts.len() as u64;
            let mut by_batch = vec![0u64; batches.len()];
            for r in &counts {
                let (pos, n): (i32, i64) = (r.get(0), r.get(1));
                if let Some(slot) = by_batch.get_mut(pos as usize) {
                    *slot = n as u64;
                }
            }
            for (pos, batch) in batches.iter().enumerate() {
                if by_batch[pos] == checkpoints[pos].rows || redo.contains(&pos) {
                    continue;
                }
                touched[pos] = true;
                let fixed = if by_batch[pos] < checkpoints[pos].rows {
                    self.find_gone(
                        table,
                        batch,
                        &mut checkpoints[pos],
                        by_batch[pos],
                        stamp,
                        &mut done,
                    )
                    .await?
                } else {
                    false
                };
                if !fixed {
                    // Keys did not account for the difference (a target changed behind the
                    // tool's back): compare the batch in full, which writes it exact.
                    tracing::warn!(table = %table.target, batch = %batch.describe(), "the batch's rows disagree with its checkpoint; reading it in full");
                    let one = self
                        .sync_batch(table, batch, Some(checkpoints[pos]), true, stamp)
                        .await?;
                    if one.set_aside.is_empty() {
                        checkpoints[pos] = one.checkpoint.digest;
                    }
                    add(&mut done, one);
                }
            }
        }
        // Batches whose changes a target constraint refused: now that other batches'
        // deletes are in, compare them in full (deletes first).
        for pos in redo {
            let one = self
                .sync_batch(table, &batches[pos], Some(checkpoints[pos]), true, stamp)
                .await?;
            if one.set_aside.is_empty() {
                checkpoints[pos] = one.checkpoint.digest;
            }
            add(&mut done, one);
        }
        let untouched: Vec<i32> = batches
            .iter()
            .zip(&touched)
            .filter(|(_, t)| !**t)
            .map(|(b, _)| b.no)
            .collect();
        done.skipped += untouched.len() as u64;
        // Exact at this run's snapshot: confirmed with every table's at the end.
        done.confirmed = untouched;
        done.rows = checkpoints.iter().map(|c| c.rows).sum();
        done.grown = batches
            .iter()
            .zip(&checkpoints)
            .filter(|(_, c)| c.rows > 2 * batch_rows)
            .map(|(b, _)| b.clone())
            .collect();
        Ok(done)
    }

    /// Finds and deletes the target rows of `batch` whose keys the source no longer has
    /// in scope (it has `in_scope` rows there), updating `checkpoint`. A referenced
    /// table's deletes are left for after its children's. Returns false, with nothing
    /// written, when the batch still disagrees after them.
    async fn find_gone(
        &mut self,
        table: &TablePlan,
        batch: &Batch,
        checkpoint: &mut Accumulator,
        in_scope: u64,
        stamp: Stamp<'_>,
        done: &mut Done,
    ) -> Result<bool, Error> {
        let context = || format!("syncing {} {}", table.target, batch.describe());
        self.session.bind_batch(batch).await?;
        let (keys, bytes) = crate::copy::fold(
            self.session.client(),
            &table.source_keys_copy(batch.shape()),
            || format!("reading the keys of {} {}", table.source, batch.describe()),
            (HashSet::new(), 0u64),
            |(keys, bytes), tuple| {
                *bytes += tuple.len() as u64;
                keys.insert(table.match_key(tuple).into_owned());
            },
        )
        .await?;
        done.source_keys += keys.len() as u64;
        done.source_bytes += bytes;
        crate::metrics::count_bytes(&table.target, "read", bytes as usize);
        apply::begin(&self.client, batch, &context).await?;
        // The target's keys only, then the rows of those the source lacks.
        let gone = crate::copy::fold(
            &self.client,
            &table.target_keys_copy(batch.shape()),
            &context,
            Vec::new(),
            |gone, tuple| {
                if !keys.contains(table.match_key(tuple).as_ref()) {
                    gone.push(key_bytes(tuple, table.key_len).to_vec());
                }
            },
        )
        .await?;
        if gone.is_empty() || checkpoint.rows.saturating_sub(gone.len() as u64) != in_scope {
            apply::abandon(&self.client).await?;
            return Ok(false);
        }
        self.remove_gone(table, batch, checkpoint, gone, stamp, done)
            .await?;
        Ok(true)
    }

    /// Deletes the target rows of `batch` with the `gone` keys, in the transaction open on
    /// the target (the batch's bounds bound), and commits them with the checkpoint less
    /// their digest; a referenced table's deletes are left for after its children's.
    pub(super) async fn remove_gone(
        &mut self,
        table: &TablePlan,
        batch: &Batch,
        checkpoint: &mut Accumulator,
        gone: Vec<Vec<u8>>,
        stamp: Stamp<'_>,
        done: &mut Done,
    ) -> Result<(), Error> {
        let context = || format!("syncing {} {}", table.target, batch.describe());
        // Both reads in one flight.
        let ((lost_rows, lost), prints) = tokio::try_join!(
            apply::read_keys(&self.client, table, batch, &gone),
            state::batch_prints(&**self.client, &table.target, batch.no)
        )?;
        let mut next = Checkpoint {
            digest: *checkpoint,
            prints,
        };
        next.digest.remove(&lost);
        next.prints = next
            .prints
            .replaced(lost_rows.values().map(|(hash, _)| hash), std::iter::empty());
        done.written.deleted += gone.len() as u64;
        if table.has_children() {
            apply::abandon(&self.client).await?;
            done.later.push(Deferred {
                batch: batch.clone(),
                gone,
                checkpoint: next.clone(),
            });
        } else {
            apply::delete_keys(&self.client, table, batch, &gone, &context).await?;
            apply::checkpoint(&self.client, table, batch, &next, stamp).await?;
            self.client
                .batch_execute("COMMIT")
                .await
                .map_err(Error::db(&context))?;
        }
        *checkpoint = next.digest;
        Ok(())
    }
}

/// Adds what a batch read in full did to a table's total.
fn add(total: &mut Done, one: Done) {
    total.written.add(&one.written);
    total.later.extend(one.later);
    total.set_aside.extend(one.set_aside);
    total.source_rows += one.source_rows;
    total.source_keys += one.source_keys;
    total.source_bytes += one.source_bytes;
}

/// Streams the table's changed rows (the horizon and cuts bound on `source`), writing
/// each batch's as soon as the next batch's begin. Batches whose writes a target
/// constraint refused go to `redo` (see [`write_changed`]).
#[allow(clippy::too_many_arguments)]
async fn read_changes(
    source: &Client,
    select: &str,
    target: &Client,
    table: &TablePlan,
    batches: &[Batch],
    mut prints: state::PrintsReader,
    checkpoints: &mut [Accumulator],
    touched: &mut [bool],
    done: &mut Done,
    redo: &mut Vec<usize>,
    stamp: Stamp<'_>,
) -> Result<(), Error> {
    let reading = || format!("reading the changed rows of {}", table.source);
    let copy = crate::copy::select_as_copy(source, select)
        .await
        .map_err(Error::db(&reading))?;
    let mut copy = pin!(copy);
    let mut split = TupleSplitter::new();
    let mut current: Option<(usize, SourceRows)> = None;
    let mut seen = vec![false; batches.len()];
    let mut complete: Vec<(usize, SourceRows)> = Vec::new();
    let mut bad = None;
    // Batches with changes are written several to a transaction, unless the table's
    // triggers or rules make each batch be read back by its range ([`group`]).
    let together = table.target_write_hooks.is_empty();
    let mut group: Vec<Member> = Vec::new();
    let mut pending = 0;
    let mut sink = Sink {
        checkpoints,
        touched,
        done,
        redo,
    };
    loop {
        let chunk = match copy.next().await {
            Some(chunk) => Some(chunk.map_err(Error::db(&reading))?),
            None => None,
        };
        if let Some(chunk) = &chunk {
            split
                .feed(chunk, &mut |tuple| {
                    sink.done.source_rows += 1;
                    sink.done.source_bytes += tuple.len() as u64;
                    let Some((row, pos)) = without_position(tuple) else {
                        bad.get_or_insert_with(|| {
                            "a changed row without its batch position".to_string()
                        });
                        return;
                    };
                    if pos >= batches.len() {
                        bad.get_or_insert_with(|| format!("a changed row in batch position {pos}"));
                        return;
                    }
                    match &mut current {
                        Some((at, rows)) if *at == pos => rows.push(&row, &row),
                        _ => {
                            complete.extend(current.take());
                            let mut rows = SourceRows::default();
                            rows.push(&row, &row);
                            current = Some((pos, rows));
                        }
                    }
                })
                .map_err(|e| Error::Runtime(format!("{}: {e}", reading())))?;
        } else {
            split
                .finish()
                .map_err(|e| Error::Runtime(format!("{}: {e}", reading())))?;
            complete.extend(current.take());
        }
        if let Some(what) = bad.take() {
            return Err(Error::Runtime(format!("{}: {what}", reading())));
        }
        for (pos, rows) in complete.drain(..) {
            if seen[pos] {
                return Err(Error::Runtime(format!(
                    "{}: the rows of one batch arrived apart",
                    reading()
                )));
            }
            seen[pos] = true;
            let held = prints.take(batches[pos].no).await?;
            // Rows the prints show the target holds already are dropped without asking
            // the target (a change to non-public columns only): a batch left with none
            // is not even named to the retail side.
            let rows = rows.filtered(|hash| !held.contains(hash));
            if rows.is_empty() {
                continue;
            }
            pending += rows.len();
            group.push(Member {
                pos,
                rows,
                prints: held,
            });
            if pending >= group::ROWS_PER_TRANSACTION || !together {
                let members = std::mem::take(&mut group);
                write_group(target, table, batches, members, stamp, &mut sink).await?;
                pending = 0;
            }
        }
        if chunk.is_none() {
            break;
        }
    }
    if !group.is_empty() {
        write_group(target, table, batches, group, stamp, &mut sink).await?;
    }
    prints.finish().await?;
    crate::metrics::count_bytes(&table.target, "read", sink.done.source_bytes as usize);
    Ok(())
}

/// Splits the batch position (a non-NULL int4, the last column) off a changed row: the
/// row as the projection's tuple, and the position.
fn without_position(tuple: &[u8]) -> Option<(Bytes, usize)> {
    let (row, pos) = crate::copy::tuple::split_int4(tuple)?;
    Some((Bytes::from(row), usize::try_from(pos).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::tuple::encode_tuple;

    #[test]
    fn the_position_comes_off_as_a_tuple_one_field_shorter() {
        let mut long = Vec::new();
        let pos = 7i32.to_be_bytes();
        encode_tuple(
            &mut long,
            [Some(&b"k"[..]), None, Some(&pos[..])].into_iter(),
        );
        let mut short = Vec::new();
        encode_tuple(&mut short, [Some(&b"k"[..]), None].into_iter());
        let (row, at) = without_position(&long).unwrap();
        assert_eq!((&row[..], at), (&short[..], 7));
        assert!(without_position(&short).is_none());
    }
}
