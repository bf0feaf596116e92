//! Stretches: runs of consecutive batches of one table read by a single source query.
//!
//! When the two servers' key collations differ, batch ranges compare bytes, which no key
//! index on the source serves ([`crate::plan::TablePlan::source_ranges_scan`]): a range
//! query per batch would scan the whole table, so reading N batches would read the table
//! N times. Such a table is read a stretch at a time instead: one scan of the stretch's
//! range, each row carrying the position of its batch (computed inside the source with
//! the same operators and collations as the range predicates), sorted by that position.
//! The rows then arrive batch after batch, exactly the rows each batch's own range query
//! would have returned, and are cut into batches as they arrive.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::StreamExt;
use tokio_postgres::CopyOutStream;

use crate::copy::tuple::{push_without_int4, TupleSplitter};
use crate::error::Error;
use crate::plan::changes_sql::cut_settings;
use crate::plan::TablePlan;
use crate::source::batch::Batch;
use crate::source::snapshot::Session;

/// Groups one table's batches (best in key order) into work items: each batch alone when
/// its range is served by an index, otherwise runs of adjacent batches (each one's lower
/// bound the previous one's upper), cut into about `jobs` stretches so that the workers
/// share the table. `batch` gives an item's batch.
pub fn group<T>(
    table: &TablePlan,
    items: impl IntoIterator<Item = T>,
    jobs: usize,
    batch: impl Fn(&T) -> &Batch,
) -> VecDeque<Vec<T>> {
    let items: Vec<T> = items.into_iter().collect();
    if !table.source_ranges_scan() {
        return items.into_iter().map(|b| vec![b]).collect();
    }
    let longest = items.len().div_ceil(jobs.max(1)).max(1);
    let mut stretches: VecDeque<Vec<T>> = VecDeque::new();
    for item in items {
        match stretches.back_mut() {
            Some(run)
                if run.len() < longest
                    && run.last().is_some_and(|last| {
                        let (before, after) = (batch(last), batch(&item));
                        before.upper.is_some() && before.upper == after.lower
                    }) =>
            {
                run.push(item)
            }
            _ => stretches.push_back(vec![item]),
        }
    }
    stretches
}

/// The rows of a stretch as they arrive: each with the position of its batch among the
/// stretch's, in order of position.
pub struct StretchRows {
    stream: Pin<Box<CopyOutStream>>,
    split: TupleSplitter,
    /// The current chunk's tuples, without their position, back to back.
    rows: Vec<u8>,
    /// Where each of them ends, and its position.
    ends: Vec<(usize, usize)>,
    /// The next of them to hand out.
    next: usize,
    /// Batches in the stretch.
    batches: usize,
    /// The position of the last row seen.
    last: usize,
    /// The position of the next batch [`Self::next_batch`] gathers.
    batch: usize,
    /// Whether the stream has ended.
    ended: bool,
    /// Bytes received.
    pub bytes: usize,
    context: String,
}

impl StretchRows {
    /// Starts reading `batches` (consecutive, in key order) of `table` on `session`,
    /// after checking a view's key over the whole stretch.
    pub async fn open(
        session: &Session,
        table: &TablePlan,
        batches: &[Batch],
    ) -> Result<Self, Error> {
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return Err(Error::Runtime("an empty stretch of batches".into()));
        };
        let range = Batch {
            table: first.table,
            no: first.no,
            lower: first.lower.clone(),
            upper: last.upper.clone(),
        };
        let context = format!(
            "reading {} {} in one stretch",
            table.source,
            range.describe()
        );
        let uppers: Vec<&[String]> = batches[..batches.len() - 1]
            .iter()
            .filter_map(|b| b.upper.as_deref())
            .collect();
        if uppers.len() + 1 != batches.len() {
            return Err(Error::Runtime(format!(
                "{context}: a batch inside the stretch has no upper bound"
            )));
        }
        let mut settings = range.settings();
        settings.extend(cut_settings(&uppers));
        session.bind(&settings).await?;
        if table.source_is_view() {
            crate::key::check_view_key(session.client(), table, range.shape()).await?;
        }
        let stream = session
            .client()
            .copy_out(&table.source_stretch_copy(uppers.len(), range.shape()))
            .await
            .map_err(Error::db(context.clone()))?;
        Ok(Self {
            stream: Box::pin(stream),
            split: TupleSplitter::new(),
            rows: Vec::new(),
            ends: Vec::new(),
            next: 0,
            batches: batches.len(),
            last: 0,
            batch: 0,
            ended: false,
            bytes: 0,
            context,
        })
    }

    /// The position of the next row's batch in the stretch, once the row has arrived,
    /// without taking the row; `None` at the end. Fails on a row out of order, which a
    /// correct source never sends.
    async fn peek(&mut self) -> Result<Option<usize>, Error> {
        while self.next == self.ends.len() {
            if self.ended {
                return Ok(None);
            }
            self.rows.clear();
            self.ends.clear();
            self.next = 0;
            let Some(chunk) = self.stream.next().await else {
                // The stream is never polled again: batches after the last row's are empty.
                self.ended = true;
                self.split
                    .finish()
                    .map_err(|e| Error::Runtime(format!("{}: {e}", self.context)))?;
                return Ok(None);
            };
            let chunk = chunk.map_err(Error::db(self.context.clone()))?;
            self.bytes += chunk.len();
            let (rows, ends) = (&mut self.rows, &mut self.ends);
            let mut malformed = false;
            self.split
                .feed(&chunk, &mut |tuple| match push_without_int4(rows, tuple)
                    .and_then(|p| usize::try_from(p).ok())
                {
                    Some(position) => ends.push((rows.len(), position)),
                    None => malformed = true,
                })
                .map_err(|e| Error::Runtime(format!("{}: {e}", self.context)))?;
            if malformed {
                return Err(Error::Runtime(format!(
                    "{}: a row arrived without its batch position",
                    self.context
                )));
            }
        }
        let position = self.ends[self.next].1;
        if position < self.last || position >= self.batches {
            return Err(Error::Runtime(format!(
                "{}: a row arrived out of its batch's order",
                self.context
            )));
        }
        self.last = position;
        Ok(Some(position))
    }

    /// Takes the row [`Self::peek`] found.
    fn take(&mut self) -> &[u8] {
        let start = match self.next {
            0 => 0,
            i => self.ends[i - 1].0,
        };
        let end = self.ends[self.next].0;
        self.next += 1;
        &self.rows[start..end]
    }

    /// The next row (without its position) and the position of its batch in the
    /// stretch; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<(usize, &[u8])>, Error> {
        Ok(match self.peek().await? {
            Some(position) => Some((position, self.take())),
            None => None,
        })
    }

    /// The next batch of the stretch, every one in turn (those without rows too): its
    /// position and its rows, gathered by `push` into an `R`; `None` after the last.
    pub async fn next_batch<R: Default>(
        &mut self,
        mut push: impl FnMut(&mut R, &[u8]),
    ) -> Result<Option<(usize, R)>, Error> {
        if self.batch == self.batches {
            return Ok(None);
        }
        let at = self.batch;
        self.batch += 1;
        let mut rows = R::default();
        while self.peek().await? == Some(at) {
            push(&mut rows, self.take());
        }
        Ok(Some((at, rows)))
    }
}
