//! The full path: a batch read in full from the source, compared with the target's rows
//! of its range and written with its new checkpoint; and the split, at the end of a run,
//! of batches grown past twice the batch size.

use bytes::Bytes;

use super::apply::{self, SourceRows};
use super::{together, Deferred, Done, Worker};
use crate::connect::Endpoint;
use crate::digest::Accumulator;
use crate::error::Error;
use crate::plan::{Plan, TablePlan};
use crate::source::batch::{self, Batch};
use crate::source::snapshot::{bind, Session, Snapshot};
use crate::source::stretch::StretchRows;
use crate::target::lock::TargetLock;
use crate::target::state::{self, Checkpoint, RunStamps, Stamp};

impl Worker {
    /// Syncs one batch by reading it in full; `stored` is its checkpoint's digest, and
    /// `has_prints` whether that checkpoint has its row prints (stored now if not).
    pub(super) async fn sync_batch(
        &mut self,
        table: &TablePlan,
        batch: &Batch,
        stored: Option<Accumulator>,
        has_prints: bool,
        stamp: Stamp<'_>,
    ) -> Result<Done, Error> {
        self.session.bind_batch(batch).await?;
        if table.source_is_view() {
            // Every night, clean batch or not: a new overlap can leave the projection as
            // it was and still make ownership ambiguous.
            crate::key::check_view_key(self.session.client(), table, batch.shape()).await?;
        }
        if !self.last_dirty && stored.is_some() {
            // Likely clean: digest the source without holding it or reading the target.
            let (digest, hashes, bytes) = crate::copy::fold(
                self.session.client(),
                &table.source_copy(batch.shape()),
                || format!("reading {} {}", table.source, batch.describe()),
                (Accumulator::default(), Vec::new(), 0usize),
                |(acc, hashes, bytes), tuple| {
                    hashes.push(acc.add_row_hashed(tuple));
                    *bytes += tuple.len();
                },
            )
            .await?;
            crate::metrics::count_bytes(&table.target, "read", bytes);
            if stored == Some(digest) {
                let checkpoint = Checkpoint::of(digest, &hashes);
                return self
                    .clean(table, batch, checkpoint, has_prints, stamp, bytes)
                    .await;
            }
        }
        // The target is read only for a batch that may have changed.
        let (rows, held, bytes) = self.read_both(table, batch, stored, true).await?;
        self.settle(table, batch, stored, has_prints, stamp, rows, held, bytes)
            .await
    }

    /// Syncs one batch whose source rows were read in a stretch ([`StretchRows`]): done
    /// if they equal the checkpoint, otherwise compared with the target's and written.
    async fn sync_read(
        &mut self,
        table: &TablePlan,
        batch: &Batch,
        stored: Option<Accumulator>,
        has_prints: bool,
        stamp: Stamp<'_>,
        rows: SourceRows,
    ) -> Result<Done, Error> {
        let mut bytes = 0;
        rows.for_each_tuple(|t| bytes += t.len());
        crate::metrics::count_bytes(&table.target, "read", bytes);
        rows.check_view_key(table)?;
        if stored == Some(rows.digest) {
            return self
                .clean(table, batch, rows.checkpoint(), has_prints, stamp, bytes)
                .await;
        }
        let expected = rows.digest.rows as usize;
        let held = apply::begin_and_read(&self.client, table, batch, expected).await?;
        self.settle(table, batch, stored, has_prints, stamp, rows, held, bytes)
            .await
    }

    /// A batch whose source rows equal its checkpoint: done without reading the target.
    async fn clean(
        &self,
        table: &TablePlan,
        batch: &Batch,
        checkpoint: Checkpoint,
        has_prints: bool,
        stamp: Stamp<'_>,
        bytes: usize,
    ) -> Result<Done, Error> {
        if !has_prints {
            // A checkpoint by an older shadan: add the prints the changes path needs.
            state::store_digest(&**self.client, &table.target, batch, &checkpoint, stamp).await?;
        }
        let rows = checkpoint.digest.rows;
        Ok(Done {
            rows,
            checkpoint,
            clean: true,
            source_rows: rows,
            source_bytes: bytes as u64,
            ..Done::default()
        })
    }

    /// Compares a batch's source rows with its target rows, read in the open target
    /// transaction, and writes the difference with the batch's new checkpoint.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &mut self,
        table: &TablePlan,
        batch: &Batch,
        stored: Option<Accumulator>,
        has_prints: bool,
        stamp: Stamp<'_>,
        rows: SourceRows,
        held: apply::TargetRows,
        bytes: usize,
    ) -> Result<Done, Error> {
        let mut done = Done {
            rows: rows.digest.rows,
            checkpoint: rows.checkpoint(),
            source_rows: rows.digest.rows,
            source_bytes: bytes as u64,
            ..Done::default()
        };
        self.last_dirty = stored != Some(rows.digest);
        if !self.last_dirty {
            apply::abandon(&self.client).await?;
            if !has_prints {
                state::store_digest(
                    &**self.client,
                    &table.target,
                    batch,
                    &done.checkpoint,
                    stamp,
                )
                .await?;
            }
            done.clean = true;
            return Ok(done);
        }
        let (written, gone) = match apply::write(
            &self.client,
            table,
            batch,
            &rows,
            held,
            &done.checkpoint,
            stamp,
            table.has_children(),
        )
        .await
        {
            Ok(written) => written,
            Err(e) if together::refusal(&e) => {
                // A value moving to or from another batch's row: written together with
                // the table's other batches set aside, once its level's are done.
                let _ = self.client.batch_execute("ROLLBACK").await;
                tracing::info!(table = %table.target, batch = %batch.describe(), error = %e, "a target constraint refused the batch alone; setting it aside");
                return Ok(Done {
                    set_aside: vec![(batch.clone(), stored)],
                    source_rows: done.source_rows,
                    source_bytes: done.source_bytes,
                    ..Done::default()
                });
            }
            Err(e) => return Err(e),
        };
        done.written = written;
        done.later.extend(gone.map(|gone| Deferred {
            batch: batch.clone(),
            gone,
            checkpoint: done.checkpoint.clone(),
        }));
        Ok(done)
    }
}

impl Worker {
    /// Syncs a stretch of consecutive batches of `table` (each with its checkpoint's
    /// digest and whether it has prints) read by one source query on the worker's second
    /// session ([`StretchRows`]): each batch is settled as soon as its rows are in, one
    /// batch's rows in memory at a time. Returns each batch with what was done.
    pub(super) async fn sync_stretch(
        &mut self,
        table: &TablePlan,
        batches: Vec<(Batch, Option<Accumulator>, bool)>,
        stamp: Stamp<'_>,
    ) -> Result<Vec<(Batch, Done)>, Error> {
        let ranges: Vec<Batch> = batches.iter().map(|(b, ..)| b.clone()).collect();
        let mut stream = StretchRows::open(&self.counter, table, &ranges).await?;
        let mut done = Vec::with_capacity(batches.len());
        for (batch, stored, has_prints) in batches {
            let Some((_, rows)) = stream
                .next_batch(|rows: &mut SourceRows, tuple| rows.push(tuple, &Bytes::new()))
                .await?
            else {
                break;
            };
            let one = self
                .sync_read(table, &batch, stored, has_prints, stamp, rows)
                .await?;
            done.push((batch, one));
        }
        Ok(done)
    }
}

impl Worker {
    /// Reads a batch's source rows and, in the transaction open on the target (with
    /// `begin`, one opened now), its target rows, about `stored`'s count of each; checks a
    /// view's key. Returns the rows and the bytes received from the source.
    pub(super) async fn read_both(
        &self,
        table: &TablePlan,
        batch: &Batch,
        stored: Option<Accumulator>,
        begin: bool,
    ) -> Result<(SourceRows, apply::TargetRows, usize), Error> {
        // Room for the rows the checkpoint counted, and some growth.
        let expected = stored.map_or(0, |s| s.rows as usize + s.rows as usize / 8);
        let target = async {
            if begin {
                apply::begin_and_read(&self.client, table, batch, expected).await
            } else {
                bind(&self.client, &batch.settings()).await?;
                apply::read_batch(&self.client, table, batch, expected).await
            }
        };
        let (rows, held) =
            tokio::try_join!(read_source(&self.session, table, batch, expected), target)?;
        let mut bytes = 0;
        rows.for_each_tuple(|t| bytes += t.len());
        crate::metrics::count_bytes(&table.target, "read", bytes);
        if let Err(e) = rows.check_view_key(table) {
            if begin {
                apply::abandon(&self.client).await?;
            }
            return Err(e);
        }
        Ok((rows, held, bytes))
    }
}

/// Reads the source rows of one batch into memory (bounded by the batch size); the
/// batch's bounds must be bound on the session.
pub(super) async fn read_source(
    session: &Session,
    table: &TablePlan,
    batch: &Batch,
    expected: usize,
) -> Result<SourceRows, Error> {
    crate::copy::fold_chunks(
        session.client(),
        &table.source_copy(batch.shape()),
        || format!("reading {} {}", table.source, batch.describe()),
        SourceRows::with_capacity(expected),
        |rows, tuple, message| rows.push(tuple, message),
    )
    .await
}

/// Splits batches that grew past twice `batch_rows` into parts of about `batch_rows`,
/// each checkpointed with the digest of its source rows (which the target now equals).
pub(super) async fn split_grown(
    plan: &Plan,
    source: &Endpoint,
    snapshot: &Snapshot,
    lock: &TargetLock,
    stamps: &RunStamps,
    batch_rows: u64,
    grown: Vec<Batch>,
) -> Result<(), Error> {
    if grown.is_empty() {
        return Ok(());
    }
    let session = Session::open(source, snapshot, plan).await?;
    for batch in grown {
        let table = &plan.tables[batch.table];
        let (mut parts, _) =
            batch::layout(session.client(), table, batch_rows, Some(&batch)).await?;
        let next: i32 = lock
            .client()
            .query_one(
                "SELECT coalesce(max(batch_no), 0) + 1 FROM shadan.batches WHERE target_table = $1",
                &[&table.target.to_string()],
            )
            .await
            .map_err(Error::db(format!("splitting a batch of {}", table.target)))?
            .get(0);
        parts[0].no = batch.no;
        for (i, part) in parts.iter_mut().enumerate().skip(1) {
            part.no = next + i as i32 - 1;
        }
        let mut checkpoints = Vec::new();
        for part in &parts {
            session.bind_batch(part).await?;
            checkpoints.push(read_source(&session, table, part, 0).await?.checkpoint());
        }
        lock.client()
            .batch_execute("BEGIN")
            .await
            .map_err(Error::db("splitting a batch"))?;
        state::narrow_batch(lock.client(), &table.target, &parts[0]).await?;
        let cut = state::LayoutCut::of(table, &plan.own_retailer);
        state::add_batches(
            lock.client(),
            &table.target,
            &parts[1..],
            stamps.run_id,
            &cut,
        )
        .await?;
        for (part, checkpoint) in parts.iter().zip(&checkpoints) {
            state::store_digest(
                lock.client(),
                &table.target,
                part,
                checkpoint,
                stamps.of(table.index),
            )
            .await?;
        }
        lock.client()
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db("splitting a batch"))?;
        tracing::info!(table = %table.target, batch = batch.no, parts = parts.len(), "split a grown batch");
    }
    Ok(())
}
