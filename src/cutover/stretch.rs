//! A cutover of a stretch of batches read by one source query
//! ([`crate::source::stretch`]): each batch is written and committed with its checkpoint
//! exactly as a batch copied alone is, with the same rows, digest and resume.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use crate::copy::tuple::EMPTY_STREAM_HEADER;
use crate::digest::Accumulator;
use crate::error::Error;
use crate::key::KeyCheck;
use crate::plan::TablePlan;
use crate::progress::TableCounter;
use crate::source::batch::Batch;
use crate::source::snapshot::Session;
use crate::source::stretch::StretchRows;
use crate::target::state::{self, Checkpoint, Stamp};

/// One batch of the stretch being written: its open COPY into the target and what was
/// counted of it so far.
struct Open<'a> {
    batch: &'a Batch,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    digest: Accumulator,
    hashes: Vec<[u8; 32]>,
    keys: Option<KeyCheck>,
    /// Tuples read but not yet sent, behind the COPY header for the first message.
    out: Vec<u8>,
}

/// Copies a stretch of consecutive batches of `table` read by one source query
/// ([`StretchRows`]); each batch commits with its checkpoint, as a batch copied alone
/// does, as soon as its last row has arrived.
pub async fn copy(
    source: &Session,
    target: &Client,
    table: &TablePlan,
    batches: &[Batch],
    stamp: Stamp<'_>,
    counter: Option<&TableCounter>,
) -> Result<(), Error> {
    let mut rows = StretchRows::open(source, table, batches).await?;
    let mut next = 0usize;
    let mut open: Option<Open> = None;
    while let Some((at, tuple)) = rows.next().await? {
        while next <= at {
            if let Some(done) = open.take() {
                finish(target, table, done, stamp, counter).await?;
            }
            open = Some(begin(target, table, &batches[next]).await?);
            next += 1;
        }
        let Some(current) = open.as_mut() else {
            continue;
        };
        current.hashes.push(current.digest.add_row_hashed(tuple));
        if let Some(k) = current.keys.as_mut() {
            k.add(tuple);
        }
        current.out.extend_from_slice(tuple);
        if current.out.len() >= MESSAGE_BYTES {
            send(table, current).await?;
        }
    }
    crate::metrics::count_bytes(&table.target, "read", rows.bytes);
    if let Some(done) = open.take() {
        finish(target, table, done, stamp, counter).await?;
    }
    // Batches after the last row's hold no rows: they are written empty.
    for batch in &batches[next..] {
        let done = begin(target, table, batch).await?;
        finish(target, table, done, stamp, counter).await?;
    }
    Ok(())
}

/// Bytes gathered before they are sent to the target as one COPY message.
const MESSAGE_BYTES: usize = 1 << 18;

/// Opens the target transaction and COPY of one batch.
async fn begin<'a>(
    target: &Client,
    table: &TablePlan,
    batch: &'a Batch,
) -> Result<Open<'a>, Error> {
    Ok(Open {
        batch,
        sink: Box::pin(super::begin_copy(target, table, batch).await?),
        digest: Accumulator::default(),
        hashes: Vec::new(),
        keys: table.source_is_view().then(|| KeyCheck::new(table)),
        out: EMPTY_STREAM_HEADER.to_vec(),
    })
}

/// Sends the tuples gathered for the open batch, after checking a view's key: a batch
/// with a NULL or repeated key never reaches the target (its transaction rolls back).
async fn send(table: &TablePlan, open: &mut Open<'_>) -> Result<(), Error> {
    if let Some(e) = open.keys.as_ref().and_then(|k| k.error(table)) {
        return Err(e);
    }
    if open.out.is_empty() {
        return Ok(());
    }
    let bytes = open.out.len();
    open.sink
        .feed(Bytes::from(std::mem::take(&mut open.out)))
        .await
        .map_err(Error::db(format!(
            "writing {} {}",
            table.target,
            open.batch.describe()
        )))?;
    crate::metrics::count_bytes(&table.target, "written", bytes);
    Ok(())
}

/// Ends the COPY of a batch and commits it with its checkpoint.
async fn finish(
    target: &Client,
    table: &TablePlan,
    mut open: Open<'_>,
    stamp: Stamp<'_>,
    counter: Option<&TableCounter>,
) -> Result<(), Error> {
    let writing = || format!("writing {} {}", table.target, open.batch.describe());
    open.out.extend_from_slice(&(-1i16).to_be_bytes());
    send(table, &mut open).await?;
    let written = open
        .sink
        .as_mut()
        .finish()
        .await
        .map_err(Error::db(&writing))?;
    if written != open.digest.rows {
        return Err(Error::Runtime(format!(
            "{}: the target took {written} rows but {} were read; nothing of this batch was kept",
            writing(),
            open.digest.rows
        )));
    }
    let checkpoint = Checkpoint::of(open.digest, &open.hashes);
    state::mark_written(target, &table.target, open.batch, &checkpoint, stamp).await?;
    target
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(&writing))?;
    if let Some(c) = counter {
        c.done
            .fetch_add(open.digest.rows, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}
