//! Changed batches written together: the batches of one table whose changed rows arrive
//! in one stream ([`super::changes`]) are written in one transaction, each with its own
//! checkpoint, instead of one transaction and about nine round trips a batch. One flight
//! opens the transaction, stages every batch's keys and reads the target's rows with
//! them; the rows that differ are staged at once and written by one statement, sent with
//! every batch's checkpoint; the commit follows once every count is as staged.
//!
//! A target constraint that refuses the group (a value that moves between rows of two
//! batches, say) rolls it back, and its batches are written one by one as before, which
//! may send some to be compared in full ([`super::changes`]). Tables with triggers or
//! rules read each batch back by its key range before its checkpoint, and are written
//! batch by batch.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::apply::{self, Piece, SourceRows, TargetRows};
use super::stage::{self, Staged};
use super::Done;
use crate::copy::tuple::key_bytes;
use crate::digest::Accumulator;
use crate::error::Error;
use crate::manifest::Changes;
use crate::plan::TablePlan;
use crate::source::batch::Batch;
use crate::target::prints::RowPrints;
use crate::target::state::{self, Checkpoint, Stamp};

/// Changed rows held for one transaction before it is written: bounds what a worker
/// holds of a night with many changes.
pub(super) const ROWS_PER_TRANSACTION: usize = 20_000;

/// One batch of a group: its position in the table's layout, its changed rows that the
/// target does not hold as projected (by their prints), and its prints.
pub(super) struct Member {
    /// Position of the batch among the table's batches.
    pub pos: usize,
    /// The rows to make the target hold.
    pub rows: SourceRows,
    /// The batch's row prints before this run.
    pub prints: RowPrints,
}

/// Writes `members` (batches of `table` in key order) and their checkpoints in one
/// transaction; returns what each wrote and its new digest, in order, or `None` when a
/// target constraint refused the group (rolled back: nothing of it was kept).
pub(super) async fn write(
    target: &Client,
    table: &TablePlan,
    batches: &[Batch],
    checkpoints: &[Accumulator],
    members: &[Member],
    stamp: Stamp<'_>,
) -> Result<Option<Vec<(Changes, Accumulator)>>, Error> {
    let context = || {
        let at = |m: Option<&Member>| m.map(|m| batches[m.pos].describe()).unwrap_or_default();
        let (first, last) = (at(members.first()), at(members.last()));
        format!("syncing {} {first} to {last}", table.target)
    };
    let outcome: Result<Vec<(Changes, Accumulator)>, Error> = async {
        let diffs = begin_and_diff(target, table, checkpoints, members, &context).await?;
        let staged = Staged {
            rows: stage::stage_rows(target, table, &diffs.upserts, &context).await?,
            gone: 0,
        };
        // The checkpoints go with the write; COMMIT waits for every count to be checked.
        let described = context();
        tokio::try_join!(
            stage::apply(target, table, &described, staged, false),
            futures_util::future::try_join_all(members.iter().zip(&diffs.next).map(|(m, n)| {
                state::store_digest(target, &table.target, &batches[m.pos], n, stamp)
            }))
        )?;
        target
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db(&context))?;
        Ok(diffs.changes)
    }
    .await;
    match outcome {
        Ok(written) => Ok(Some(written)),
        Err(e) => {
            // Whatever failed, the transaction ends here: not left open on a pooled
            // session. A deferred constraint fails the COMMIT itself.
            let _ = target.batch_execute("ROLLBACK").await;
            if super::together::refusal(&e) {
                tracing::info!(table = %table.target, "a target constraint refused changed batches written together; writing them one by one");
                return Ok(None);
            }
            Err(e)
        }
    }
}

/// What a group's batches need written: each one's next checkpoint and what it changes
/// (with its new digest), and the rows that differ from the target's, all batches'.
struct Diffs<'m> {
    next: Vec<Checkpoint>,
    changes: Vec<(Changes, Accumulator)>,
    upserts: Vec<Piece<'m>>,
}

/// Opens the group's transaction, reads the target's rows with the changed rows' keys
/// (one flight) and compares them batch by batch.
async fn begin_and_diff<'m>(
    target: &Client,
    table: &TablePlan,
    checkpoints: &[Accumulator],
    members: &'m [Member],
    context: impl Fn() -> String,
) -> Result<Diffs<'m>, Error> {
    let mut of_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut keys = Vec::new();
    for (i, m) in members.iter().enumerate() {
        m.rows.for_each_tuple(|t| {
            of_key.insert(table.match_key(t).into_owned(), i);
            keys.push(key_bytes(t, table.key_len).to_vec());
        });
    }
    let positions = table.own_positions();
    let empty = || {
        (
            TargetRows::with_capacity_and_hasher(0, Default::default()),
            Accumulator::default(),
        )
    };
    let ((), held) = tokio::try_join!(
        async {
            target
                .batch_execute("BEGIN; SET CONSTRAINTS ALL DEFERRED")
                .await
                .map_err(Error::db(&context))
        },
        apply::fold_keys(
            target,
            table,
            &keys,
            &context,
            (0..members.len()).map(|_| empty()).collect::<Vec<_>>(),
            |held: &mut Vec<(TargetRows, Accumulator)>, tuple| {
                let key = table.match_key(tuple);
                if let Some(&i) = of_key.get(key.as_ref()) {
                    let hash = held[i].1.add_row_hashed(tuple);
                    let own = apply::has_own_value(tuple, &positions);
                    held[i].0.insert(key.into_owned(), (hash, own));
                }
            }
        )
    )?;
    let mut diffs = Diffs {
        next: Vec::with_capacity(members.len()),
        changes: Vec::with_capacity(members.len()),
        upserts: Vec::new(),
    };
    for (m, (rows_held, old)) in members.iter().zip(held) {
        let mut checkpoint = Checkpoint {
            digest: checkpoints[m.pos],
            prints: m
                .prints
                .replaced(rows_held.values().map(|(hash, _)| hash), m.rows.hashes()),
        };
        checkpoint.digest.remove(&old);
        checkpoint.digest.merge(&m.rows.digest);
        let diff = apply::diff(table, &m.rows, rows_held);
        if !diff.gone.is_empty() {
            return Err(Error::Runtime(format!(
                "{}: the target holds rows the changed rows do not key",
                context()
            )));
        }
        diffs.upserts.extend(diff.upserts);
        diffs.changes.push((diff.changes, checkpoint.digest));
        diffs.next.push(checkpoint);
    }
    Ok(diffs)
}

/// Where the outcome of a table's changed batches goes.
pub(super) struct Sink<'a> {
    /// Each batch's digest.
    pub checkpoints: &'a mut [Accumulator],
    /// Which batches were written or sent back.
    pub touched: &'a mut [bool],
    /// What the table's sync did.
    pub done: &'a mut Done,
    /// Batches a constraint sent back, to compare in full.
    pub redo: &'a mut Vec<usize>,
}

/// Writes changed batches in one transaction ([`group::write`]), or, should a target
/// constraint refuse them together, one by one ([`write_changed`]).
pub(super) async fn write_group(
    target: &Client,
    table: &TablePlan,
    batches: &[Batch],
    members: Vec<Member>,
    stamp: Stamp<'_>,
    sink: &mut Sink<'_>,
) -> Result<(), Error> {
    let together = match members.len() {
        1 => None,
        _ => write(target, table, batches, sink.checkpoints, &members, stamp).await?,
    };
    if let Some(written) = together {
        for (m, (changes, digest)) in members.iter().zip(written) {
            sink.touched[m.pos] = true;
            sink.done.written.add(&changes);
            sink.checkpoints[m.pos] = digest;
        }
        return Ok(());
    }
    for Member { pos, rows, prints } in members {
        let checkpoint = (&mut sink.checkpoints[pos], prints);
        match write_changed(target, table, &batches[pos], checkpoint, rows, stamp).await? {
            Written::Rows(written) => {
                sink.touched[pos] = true;
                sink.done.written.add(&written);
            }
            Written::Redo => {
                sink.touched[pos] = true;
                sink.redo.push(pos);
            }
        }
    }
    Ok(())
}

/// What [`write_changed`] did with a batch's changed rows.
enum Written {
    /// Wrote these, with the batch's new checkpoint.
    Rows(crate::manifest::Changes),
    /// Nothing: a target constraint refused them alone (see the match below).
    Redo,
}

/// Writes one batch's changed rows (none of which its prints hold) with its updated
/// checkpoint, in one transaction: the target's rows with the rows' keys are read, only
/// those that differ are written, and the checkpoint loses the replaced rows and gains
/// the new ones.
async fn write_changed(
    target: &Client,
    table: &TablePlan,
    batch: &Batch,
    (digest, prints): (&mut Accumulator, RowPrints),
    rows: SourceRows,
    stamp: Stamp<'_>,
) -> Result<Written, Error> {
    let context = || format!("syncing {} {}", table.target, batch.describe());
    apply::begin(target, batch, &context).await?;
    let (held, old) = apply::read_keyed(target, table, batch, &rows).await?;
    let mut next = Checkpoint {
        digest: *digest,
        prints: prints.replaced(held.values().map(|(hash, _)| hash), rows.hashes()),
    };
    next.digest.remove(&old);
    next.digest.merge(&rows.digest);
    match apply::write(target, table, batch, &rows, held, &next, stamp, false).await {
        Ok((written, _)) => {
            *digest = next.digest;
            Ok(Written::Rows(written))
        }
        Err(e) if super::together::refusal(&e) => {
            // A deferrable unique or exclusion constraint (checked at commit) may need
            // a row this run has yet to find deleted out of the way: the caller syncs
            // the batch in full, deletes first, once the changed rows are read.
            let _ = target.batch_execute("ROLLBACK").await;
            tracing::info!(table = %table.target, batch = %batch.describe(), "a target constraint refused the batch's changes alone; comparing it in full");
            Ok(Written::Redo)
        }
        Err(e) => Err(e),
    }
}
