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

use super::apply::{self, Piece};
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

impl Worker {
    /// Syncs `batches` of `table` together (see the module's documentation).
    pub(super) async fn sync_together(
        &mut self,
        table: &TablePlan,
        batches: &[SetAside],
        pending: Vec<Deferred>,
        stamp: Stamp<'_>,
    ) -> Result<Done, Error> {
        let what = format!("({} batches written together)", batches.len());
        tracing::info!(table = %table.target, batches = batches.len(), "writing batches a target constraint refused one by one together");
        self.client
            .batch_execute("BEGIN; SET CONSTRAINTS ALL DEFERRED")
            .await
            .map_err(Error::db(format!("syncing {} {what}", table.target)))?;
        match self.together(table, batches, pending, &what, stamp).await {
            Ok(done) => Ok(done),
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(match e.is_constraint() {
                    true => refused(table, e),
                    false => e,
                })
            }
        }
    }

    /// Writes `batches` and the `pending` deletes in the transaction just opened.
    async fn together(
        &mut self,
        table: &TablePlan,
        batches: &[SetAside],
        pending: Vec<Deferred>,
        what: &str,
        stamp: Stamp<'_>,
    ) -> Result<Done, Error> {
        let context = || format!("syncing {} {what}", table.target);
        let mut done = Done::default();
        let mut staged = Staged::default();
        let mut parts = Vec::with_capacity(batches.len());
        // A referenced table's deletes wait for its children's unless it replaces rows
        // (see `apply::write`).
        let now = !table.has_children || table.replace_rows;
        for (batch, stored) in batches {
            self.session.bind_batch(batch).await?;
            let (rows, held, bytes) = self.read_both(table, batch, *stored, false).await?;
            done.rows += rows.digest.rows;
            done.source_rows += rows.digest.rows;
            done.source_bytes += bytes as u64;
            let diff = apply::diff(table, &rows, held);
            done.written.add(&diff.changes);
            let upserts: Vec<Piece<'_>> = diff.upserts;
            staged.rows +=
                stage::stage_rows(&self.client, table, upserts.into_iter(), &context).await?;
            if now {
                staged.gone += stage::stage_gone(&self.client, table, &diff.gone, &context).await?;
            }
            parts.push((batch.clone(), rows.checkpoint(), diff.gone));
        }
        // The deletes the table's other batches left, tried again here.
        for d in pending {
            if now {
                staged.gone += stage::stage_gone(&self.client, table, &d.gone, &context).await?;
            }
            parts.push((d.batch, d.checkpoint, d.gone));
        }
        let deleted = stage::apply(&self.client, table, what, staged, table.has_children).await?;
        for (batch, next, gone) in parts {
            bind(&self.client, &batch.settings()).await?;
            let left = if !gone.is_empty() && (deleted < staged.gone || !now) {
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

/// The error for batches a constraint refuses even written together, saying why.
fn refused(table: &TablePlan, e: Error) -> Error {
    let why = if table.replace_rows {
        "the source's rows break a constraint of the target's"
    } else {
        "either the source's rows break a constraint of the target's, or a value of a unique \
         column or exclusion constraint moves between rows: sync can move one only by replacing \
         the rows within one statement, and it updates this table in place because a foreign key \
         that references it has ON DELETE or ON UPDATE other than NO ACTION (replacing a row \
         would fire it)"
    };
    Error::Runtime(format!("{e}; nothing of these batches was written: {why}"))
}
