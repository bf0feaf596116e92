//! Writing one batch's changes to the target, in one transaction with its checkpoint.
//!
//! The source rows of the batch are held (bounded by the batch size) while the target's
//! rows of the same key range are read as key -> row hash, in the write transaction. Only
//! rows that differ are written: staged and applied by one statement ([`super::stage`]).

use std::ops::Range;

use bytes::Bytes;
use tokio_postgres::Client;

use super::stage::{self, Staged};
use crate::copy::tuple::{key_bytes, non_null_among};
use crate::digest::{row_hash, Accumulator};
use crate::error::Error;
use crate::key::KeyMap;
use crate::manifest::Changes;
use crate::plan::TablePlan;
use crate::source::batch::Batch;
use crate::source::snapshot::bind;
use crate::target::state::{self, Checkpoint, Stamp};

/// Tuples at least this long are held as a slice of the message they arrived in and sent
/// on as their own message, never copied: one 200 MB value must not cost 200 MB per copy.
const SHARED_TUPLE_BYTES: usize = 1 << 20;

/// Where a held tuple's bytes are.
#[derive(Debug)]
enum Held {
    /// In [`SourceRows::bytes`].
    Inline(Range<usize>),
    /// A slice of the received message (large tuples).
    Shared(Bytes),
}

/// The source rows of one batch, small ones held contiguously, large ones as slices of
/// the messages they arrived in, with each row's hash.
#[derive(Debug, Default)]
pub struct SourceRows {
    bytes: Vec<u8>,
    tuples: Vec<(Held, [u8; 32])>,
    /// Digest of the rows.
    pub digest: Accumulator,
}

impl SourceRows {
    /// Room for about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            tuples: Vec::with_capacity(rows),
            ..Self::default()
        }
    }

    /// Adds one tuple that arrived in `message`.
    pub fn push(&mut self, tuple: &[u8], message: &Bytes) {
        let hash = self.digest.add_row_hashed(tuple);
        let inside = message.as_ptr_range();
        let held = if tuple.len() >= SHARED_TUPLE_BYTES
            && inside.contains(&tuple.as_ptr())
            && tuple.as_ptr_range().end <= inside.end
        {
            Held::Shared(message.slice_ref(tuple))
        } else {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(tuple);
            Held::Inline(start..self.bytes.len())
        };
        self.tuples.push((held, hash));
    }

    /// The rows' hashes ([`crate::digest::row_hash`]), in order.
    pub fn hashes(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.tuples.iter().map(|(_, hash)| hash)
    }

    /// The checkpoint of exactly these rows.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::of(self.digest, self.hashes())
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.tuples.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.tuples.is_empty()
    }

    /// The rows whose hash `keep` accepts, as rows of their own.
    pub fn filtered(&self, keep: impl Fn(&[u8; 32]) -> bool) -> SourceRows {
        let mut kept = SourceRows::default();
        for (piece, hash) in self.iter() {
            if keep(hash) {
                match piece {
                    Piece::Shared(b) => kept.push(b, b),
                    Piece::Slice(t) => kept.push(t, &Bytes::new()),
                }
            }
        }
        kept
    }

    /// For a view source, fails if these rows give a key twice or a NULL key
    /// ([`crate::key::KeyCheck`]); a table's key the server keeps unique itself.
    pub fn check_view_key(&self, table: &crate::plan::TablePlan) -> Result<(), Error> {
        if !table.source_is_view() {
            return Ok(());
        }
        let mut keys = crate::key::KeyCheck::new(table);
        self.for_each_tuple(|t| keys.add(t));
        keys.error(table).map_or(Ok(()), Err)
    }

    /// Calls `f` with every tuple, in order.
    pub fn for_each_tuple(&self, mut f: impl FnMut(&[u8])) {
        for (piece, _) in self.iter() {
            f(piece.bytes());
        }
    }

    fn iter(&self) -> impl Iterator<Item = (Piece<'_>, &[u8; 32])> {
        self.tuples.iter().map(|(held, h)| {
            let piece = match held {
                Held::Inline(r) => Piece::Slice(&self.bytes[r.clone()]),
                Held::Shared(b) => Piece::Shared(b),
            };
            (piece, h)
        })
    }
}

/// A held tuple, to read or to send on.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Bytes held inline.
    Slice(&'a [u8]),
    /// A large tuple: a slice of the message it arrived in, sent on as it is.
    Shared(&'a Bytes),
}

impl Piece<'_> {
    /// The tuple's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Piece::Slice(s) => s,
            Piece::Shared(b) => b,
        }
    }
}

/// The target's rows of one batch: key -> (row hash, whether any `own` column is set).
pub type TargetRows = KeyMap<([u8; 32], bool)>;

/// Whether any `own` column of the tuple holds a value.
pub(super) fn has_own_value(tuple: &[u8], positions: &[usize]) -> bool {
    non_null_among(tuple, positions).next().is_some()
}

/// Binds the batch's key bounds on `client` and begins its write transaction, in one
/// flight (the bounds are session settings: their order against BEGIN is no matter).
pub(super) async fn begin(
    client: &Client,
    batch: &Batch,
    context: impl Fn() -> String,
) -> Result<(), Error> {
    let bounds = batch.settings();
    tokio::try_join!(bind(client, &bounds), async {
        client
            .batch_execute("BEGIN; SET CONSTRAINTS ALL DEFERRED")
            .await
            .map_err(Error::db(&context))
    })?;
    Ok(())
}

/// Binds the batch's key bounds, opens its write transaction ([`begin`]) and reads the
/// target's rows of the batch (about `expected` of them).
pub async fn begin_and_read(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    expected: usize,
) -> Result<TargetRows, Error> {
    let context = || format!("syncing {} {}", table.target, batch.describe());
    begin(client, batch, context).await?;
    read_batch(client, table, batch, expected).await
}

/// Reads the target's rows of the batch (about `expected` of them) in the open
/// transaction. `client` has the batch's key bounds bound.
pub async fn read_batch(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    expected: usize,
) -> Result<TargetRows, Error> {
    let context = || format!("syncing {} {}", table.target, batch.describe());
    let positions = table.own_positions();
    crate::copy::fold(
        client,
        &table.target_copy_out(batch.shape()),
        context,
        TargetRows::with_capacity_and_hasher(expected, Default::default()),
        |held, tuple| {
            held.insert(
                table.match_key(tuple).into_owned(),
                (row_hash(tuple), has_own_value(tuple, &positions)),
            );
        },
    )
    .await
}

/// Ends a transaction opened by [`begin_and_read`] without writing (the batch was clean).
pub async fn abandon(client: &Client) -> Result<(), Error> {
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(Error::db("ending a sync transaction"))
}

/// Makes the target's rows in `batch` equal to `rows`, stores the batch's checkpoint and
/// commits, in the transaction opened by [`begin_and_read`]. Returns what was written.
/// Up to this many keys of each kind of change are kept for a dry run's report.
pub const SAMPLE_KEYS: usize = 10;

/// What a batch needs: the rows to insert or update, the keys to delete, the counts,
/// and up to [`SAMPLE_KEYS`] keys of each kind (inserted, updated, deleted, purged).
pub struct Diff<'a> {
    /// Counts by kind.
    pub changes: Changes,
    /// The rows to insert or update.
    pub upserts: Vec<Piece<'a>>,
    /// The encoded keys to delete, in order.
    pub gone: Vec<Vec<u8>>,
    /// Sample keys: inserted, updated, deleted, purged.
    pub samples: [Vec<Vec<u8>>; 4],
}

/// Compares the source rows of a batch with the target's (`held`, key -> row hash).
pub fn diff<'a>(table: &TablePlan, rows: &'a SourceRows, mut held: TargetRows) -> Diff<'a> {
    let positions = table.own_positions();
    let mut changes = Changes::default();
    let mut upserts = Vec::new();
    let mut samples: [Vec<Vec<u8>>; 4] = Default::default();
    let mut sample = |kind: usize, key: &[u8]| {
        if samples[kind].len() < SAMPLE_KEYS {
            samples[kind].push(key.to_vec());
        }
    };
    for (piece, hash) in rows.iter() {
        let tuple = piece.bytes();
        let key = table.match_key(tuple);
        let key = key.as_ref();
        match held.remove(key) {
            None => {
                changes.inserted += 1;
                sample(0, key);
                upserts.push(piece);
            }
            Some((old, owned_before)) if old != *hash => {
                if owned_before && !has_own_value(tuple, &positions) {
                    changes.purged += 1;
                    sample(3, key);
                } else {
                    changes.updated += 1;
                    sample(1, key);
                }
                upserts.push(piece);
            }
            Some(_) => {}
        }
    }
    let mut gone: Vec<Vec<u8>> = held.into_keys().collect();
    gone.sort();
    changes.deleted = gone.len() as u64;
    for key in gone.iter().take(SAMPLE_KEYS) {
        samples[2].push(key.clone());
    }
    Diff {
        changes,
        upserts,
        gone,
        samples,
    }
}

/// `next` is the checkpoint the batch then has: that of `rows` when they are the whole
/// batch, or the stored one updated by what changed when they are its changed rows.
/// With `defer_deletes` (a table other mapped tables reference), a batch that has rows to
/// delete only inserts and updates here and returns the keys to delete: they go after
/// the children's deletes, with the checkpoint ([`finish_deferred`]). Until then the
/// batch's checkpoint is the digest of what it then holds: the source's rows and the rows
/// still to delete.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    rows: &SourceRows,
    held: TargetRows,
    next: &Checkpoint,
    stamp: Stamp<'_>,
    defer_deletes: bool,
) -> Result<(Changes, Option<Vec<Vec<u8>>>), Error> {
    let context = || format!("syncing {} {}", table.target, batch.describe());
    let Diff {
        changes,
        upserts,
        gone,
        ..
    } = diff(table, rows, held);

    // A referenced table's deletes wait for its children's, unless the table replaces
    // rows: then a value a deleted row frees may be taken by another row, and the rows
    // no child references are deleted within the statement that writes the batch.
    let now = !defer_deletes || table.replace_rows;
    let staged = Staged {
        rows: stage::stage_rows(client, table, &upserts, &context).await?,
        gone: match now {
            true => stage::stage_gone(client, table, &gone, &context).await?,
            false => 0,
        },
    };
    let deleted = stage::apply(client, table, &batch.describe(), staged, defer_deletes).await?;
    let left = if deleted < gone.len() {
        checkpoint_leaving(client, table, batch, next, &gone, stamp).await?
    } else {
        checkpoint(client, table, batch, next, stamp).await?;
        Vec::new()
    };
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(&context))?;
    Ok((changes, (!left.is_empty()).then_some(left)))
}

/// Stores, in the open transaction, the checkpoint of a batch some of whose `gone` rows
/// are still there, and returns their keys: they stay until the children's deletes are
/// done ([`finish_deferred`]). Until then the batch holds the source's rows (`next`) and
/// those; a run that ends before then leaves a checkpoint that counts the rows still to
/// delete, which the next sync finds (more rows than the source has) on either path.
pub(super) async fn checkpoint_leaving(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    next: &Checkpoint,
    gone: &[Vec<u8>],
    stamp: Stamp<'_>,
) -> Result<Vec<Vec<u8>>, Error> {
    let (kept_rows, kept) = read_keys(client, table, batch, gone).await?;
    if kept_rows.is_empty() {
        checkpoint(client, table, batch, next, stamp).await?;
        return Ok(Vec::new());
    }
    let mut interim = next.clone();
    interim.digest.merge(&kept);
    interim.prints = interim
        .prints
        .replaced(std::iter::empty(), kept_rows.values().map(|(hash, _)| hash));
    checkpoint(client, table, batch, &interim, stamp).await?;
    let mut left: Vec<Vec<u8>> = kept_rows.into_keys().collect();
    left.sort();
    Ok(left)
}

/// The second half of a batch whose deletes were deferred ([`write()`]): binds the
/// batch's key bounds, then deletes `gone` and stores the checkpoint `next`, in one
/// transaction.
pub async fn finish_deferred(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    gone: &[Vec<u8>],
    next: &Checkpoint,
    stamp: Stamp<'_>,
) -> Result<(), Error> {
    let context = || format!("syncing {} {}", table.target, batch.describe());
    begin(client, batch, context).await?;
    let done = async {
        delete_keys(client, table, batch, gone, &context).await?;
        checkpoint(client, table, batch, next, stamp).await?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::db(&context))
    }
    .await;
    if done.is_err() {
        // `client` is the lock's session, used for the run's record afterwards: leave
        // it usable, so the real error is the one reported.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    done
}

/// Stores the batch's checkpoint, after checking, on a table with triggers or rules, that
/// the target now holds exactly the source's rows.
pub(super) async fn checkpoint(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    next: &Checkpoint,
    stamp: Stamp<'_>,
) -> Result<(), Error> {
    let context = || format!("syncing {} {}", table.target, batch.describe());
    if !table.target_write_hooks.is_empty() {
        // A trigger or rule may have rewritten or removed what was written while the
        // statements still counted it: read the batch back before committing it.
        let now = crate::copy::fold(
            client,
            &table.target_copy_out(batch.shape()),
            &context,
            Accumulator::default(),
            |acc, tuple| acc.add_row(tuple),
        )
        .await?;
        if now != next.digest {
            return Err(Error::Runtime(format!(
                "syncing {} {}: after the writes the target's rows differ from the source's ({} on the \
                 table change what is written); nothing of the batch was kept: disable or drop them",
                table.target,
                batch.describe(),
                crate::ident::escape_controls(&table.target_write_hooks.join(", "))
            )));
        }
    }
    state::store_digest(client, &table.target, batch, next, stamp).await
}

/// Reads, in the open transaction, the target's rows with the keys of `rows` (a batch's
/// changed rows): key -> row hash as [`begin_and_read`] gives for a whole batch, and the
/// digest of those rows, which the batch's checkpoint loses when they are replaced.
pub async fn read_keyed(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    rows: &SourceRows,
) -> Result<(TargetRows, Accumulator), Error> {
    let mut keys = Vec::with_capacity(rows.tuples.len());
    rows.for_each_tuple(|t| keys.push(key_bytes(t, table.key_len).to_vec()));
    read_keys(client, table, batch, &keys).await
}

/// Reads, in the open transaction, the target's rows with the given encoded keys: key ->
/// row hash, and the digest of those rows.
pub async fn read_keys(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    keys: &[Vec<u8>],
) -> Result<(TargetRows, Accumulator), Error> {
    let context = || format!("syncing {} {}", table.target, batch.describe());
    let positions = table.own_positions();
    let init = (
        TargetRows::with_capacity_and_hasher(keys.len(), Default::default()),
        Accumulator::default(),
    );
    fold_keys(client, table, keys, context, init, |(held, old), tuple| {
        let hash = old.add_row_hashed(tuple);
        held.insert(
            table.match_key(tuple).into_owned(),
            (hash, has_own_value(tuple, &positions)),
        );
    })
    .await
}

/// Stages `keys` (encoded) to be read and folds the target's rows with those keys into
/// `init` by `f`, in the open transaction.
pub(super) async fn fold_keys<T>(
    client: &Client,
    table: &TablePlan,
    keys: &[Vec<u8>],
    context: impl Fn() -> String,
    init: T,
    f: impl FnMut(&mut T, &[u8]),
) -> Result<T, Error> {
    let name = stage::stage_name(table, "keys");
    let keys = keys.iter().map(Vec::as_slice);
    stage::stage_keys(client, table, &name, keys, true, &context).await?;
    fold_staged(client, table, &name, context, init, f).await
}

/// Stages `gone` (encoded keys) to be deleted ([`stage::stage_gone`]) and folds the
/// target's rows with those keys into `init` by `f`, in the open transaction; a
/// [`stage::apply`] then deletes them.
pub(super) async fn fold_gone<T>(
    client: &Client,
    table: &TablePlan,
    gone: &[Vec<u8>],
    context: impl Fn() -> String,
    init: T,
    f: impl FnMut(&mut T, &[u8]),
) -> Result<T, Error> {
    stage::stage_gone(client, table, gone, &context).await?;
    let name = stage::stage_name(table, "gone");
    fold_staged(client, table, &name, context, init, f).await
}

/// Folds the target's rows whose keys are in the stage `name`.
async fn fold_staged<T>(
    client: &Client,
    table: &TablePlan,
    name: &str,
    context: impl Fn() -> String,
    init: T,
    f: impl FnMut(&mut T, &[u8]),
) -> Result<T, Error> {
    let sql = table.target_rows_of_staged_keys(name);
    crate::copy::fold(client, &sql, context, init, f).await
}

/// Deletes the target rows with the given encoded keys, in the open transaction.
pub(super) async fn delete_keys(
    client: &Client,
    table: &TablePlan,
    batch: &Batch,
    gone: &[Vec<u8>],
    context: impl Fn() -> String,
) -> Result<(), Error> {
    let gone = stage::stage_gone(client, table, gone, context).await?;
    let staged = Staged { rows: 0, gone };
    stage::apply(client, table, &batch.describe(), staged, false).await?;
    Ok(())
}
