//! Batches written together, in one transaction and one statement.
//!
//! A value can move between rows of two batches within a night: a unique column's value
//! freed in one batch and taken in another, two rows of different batches that swap, a
//! value a foreign key of the retail side's own references. Written batch by batch, the
//! first write would break the constraint the second repairs. A batch whose write a
//! target constraint refused is set aside; once the other batches of its level are
//! written, the table's set-aside batches are compared in full again and all their
//! changes applied by one statement ([`super::stage`]), with every checkpoint, in one
//! transaction. The deletes the table's other batches left for after the children's are
//! tried in that statement too: a value they free may be what a set-aside row takes.

use super::apply;
use super::stage::{self, Staged};
use super::{Deferred, Done, Worker};
use crate::digest::Accumulator;
use crate::error::Error;
use crate::plan::TablePlan;
use crate::source::batch::Batch;
use crate::source::snapshot::bind;
use crate::target::state::Stamp;

/// A batch set aside, with its stored checkpoint's digest (if it has one).
pub(super) type SetAside = (Batch, Option<Accumulator>);

/// A table whose set-aside batches a constraint refused even together, with why: they
/// wait for a later round.
pub(super) type Stuck = (usize, Vec<SetAside>, Error);

/// Whether `e` is a refusal another round may lift: a constraint of the target's, or a
/// deadlock with another batch's writes.
pub(super) fn refusal(e: &Error) -> bool {
    e.is_constraint() || e.sqlstate() == Some("40P01")
}

impl Worker {
    /// Syncs `batches` of `table` together (see the module's documentation).
    pub(super) async fn sync_together(
        &mut self,
        table: &TablePlan,
        batches: &[SetAside],
        pending: &[Deferred],
        stamp: Stamp<'_>,
    ) -> Result<Done, Error> {
        let what = format!("({} batches written together)", batches.len());
        tracing::info!(table = %table.target, batches = batches.len(), "writing batches a target constraint refused one by one together");
        self.client
            .batch_execute("BEGIN; SET CONSTRAINTS ALL DEFERRED")
            .await
            .map_err(Error::db(format!("syncing {} {what}", table.target)))?;
        let done = self.together(table, batches, pending, &what, stamp).await;
        if done.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        done
    }

    /// Writes `batches` and the `pending` deletes in the transaction just opened.
    async fn together(
        &mut self,
        table: &TablePlan,
        batches: &[SetAside],
        pending: &[Deferred],
        what: &str,
        stamp: Stamp<'_>,
    ) -> Result<Done, Error> {
        let context = || format!("syncing {} {what}", table.target);
        let mut done = Done::default();
        let mut staged = Staged::default();
        let mut parts = Vec::with_capacity(batches.len());
        // Every row to delete is tried here (a value it frees may be what a set-aside row
        // takes); in a referenced table, one a child still references waits.
        for (batch, stored) in batches {
            self.session.bind_batch(batch).await?;
            let (rows, held, bytes) = self.read_both(table, batch, *stored, false).await?;
            done.rows += rows.digest.rows;
            done.source_rows += rows.digest.rows;
            done.source_bytes += bytes as u64;
            let diff = apply::diff(table, &rows, held);
            done.written.add(&diff.changes);
            staged.rows += stage::stage_rows(&self.client, table, &diff.upserts, &context).await?;
            staged.gone += stage::stage_gone(&self.client, table, &diff.gone, &context).await?;
            parts.push((batch.clone(), rows.checkpoint(), diff.gone));
        }
        // The deletes the table's other batches left, tried again here.
        for d in pending {
            staged.gone += stage::stage_gone(&self.client, table, &d.gone, &context).await?;
            parts.push((d.batch.clone(), d.checkpoint.clone(), d.gone.clone()));
        }
        let deleted = stage::apply(&self.client, table, what, staged, table.has_children()).await?;
        for (batch, next, gone) in parts {
            bind(&self.client, &batch.settings()).await?;
            let left = if !gone.is_empty() && deleted < staged.gone {
                apply::checkpoint_leaving(&self.client, table, &batch, &next, &gone, stamp).await?
            } else {
                apply::checkpoint(&self.client, table, &batch, &next, stamp).await?;
                Vec::new()
            };
            if !left.is_empty() {
                done.later.push(Deferred {
                    batch,
                    gone: left,
                    checkpoint: next,
                });
            }
        }
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db(&context))?;
        Ok(done)
    }
}

/// The error for batches a constraint refuses even written together, after every other
/// batch of the run, saying why.
pub(super) fn refused(table: &TablePlan, e: Error) -> Error {
    let mut why = String::from(
        "a constraint of the target's refuses the source's rows of this table even written together, \
         after every other batch of the run: either the source's rows break it, or the night's changes \
         need an order of writes no order gives (a unique value freed by a row a mapped child still \
         references, taken by another row)",
    );
    if !table.replace_rows {
        why.push_str(
            "; or a value of a unique index or exclusion constraint moves between two rows: sync moves \
             one by replacing the rows within one statement, and it updates this table in place instead \
             because a foreign key that references it (or a partition of it) has ON DELETE or ON UPDATE \
             other than NO ACTION, or a trigger or rule acts on its writes, which replacing a row would \
             fire",
        );
    }
    Error::Runtime(format!("{e}; nothing of these batches was written: {why}"))
}
