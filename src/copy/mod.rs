//! Step 5 of the data path: the binary COPY stream between the two servers.
//!
//! Tuple bytes pass from the source's `COPY ... TO STDOUT (FORMAT binary)` to the
//! target's `COPY ... FROM STDIN (FORMAT binary)` unchanged (exact type equality, checked
//! by the plan, makes that valid). [`mod@tuple`] splits the stream into tuples only to hash
//! each row and to read its key; [`fold`] reads a whole COPY into some state.

pub mod tuple;

use std::pin::pin;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_postgres::Client;

use crate::error::Error;
use tuple::TupleSplitter;

/// A field's bytes as the server sent them, whatever its type: `None` for NULL.
struct RawField<'a>(Option<&'a [u8]>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawField<'a> {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawField(Some(raw)))
    }

    fn from_sql_null(
        _: &tokio_postgres::types::Type,
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawField(None))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// Runs `select` as an unnamed statement and yields its rows as a binary COPY stream
/// (header, tuples, trailer): a row in binary result format has the layout and the
/// field bytes of a binary COPY tuple. Where a named prepared statement would do, the
/// driver numbers it from one counter shared by every connection of the process, so a
/// source statement prepared only on some nights would shift the names the target's
/// log shows for the target's own statements.
pub async fn select_as_copy(
    client: &Client,
    select: &str,
) -> Result<
    impl futures_util::Stream<Item = Result<Bytes, tokio_postgres::Error>>,
    tokio_postgres::Error,
> {
    let no_params: [(
        &(dyn tokio_postgres::types::ToSql + Sync),
        tokio_postgres::types::Type,
    ); 0] = [];
    let rows = client.query_typed_raw(select, no_params).await?;
    let tuples = rows.map(|row| {
        let row = row?;
        let mut tuple = Vec::with_capacity(64);
        tuple.extend_from_slice(&(row.len() as i16).to_be_bytes());
        for i in 0..row.len() {
            match row.try_get::<_, RawField>(i)?.0 {
                Some(bytes) => {
                    tuple.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    tuple.extend_from_slice(bytes);
                }
                None => tuple.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        Ok(Bytes::from(tuple))
    });
    let header =
        futures_util::stream::once(async { Ok(Bytes::from_static(&tuple::EMPTY_STREAM_HEADER)) });
    let trailer = futures_util::stream::once(async { Ok(Bytes::from_static(&[0xff, 0xff])) });
    Ok(header.chain(tuples).chain(trailer))
}

/// Runs a `COPY ... TO STDOUT (FORMAT binary)` and folds each tuple into `state`.
/// `context` names what is read (table and range) for error messages.
pub async fn fold<S>(
    client: &Client,
    sql: &str,
    context: impl Fn() -> String,
    state: S,
    mut on_tuple: impl FnMut(&mut S, &[u8]),
) -> Result<S, Error> {
    fold_chunks(client, sql, context, state, move |s, tuple, _| {
        on_tuple(s, tuple)
    })
    .await
}

/// [`fold`], also handing over the received message a tuple came in, so that a large
/// tuple can be kept as a slice of it ([`Bytes::slice_ref`]) instead of a copy. The
/// server sends each row as a message of its own, so a tuple usually lies inside one;
/// one that spans messages is handed over from a copy, with the message it ends in.
pub async fn fold_chunks<S>(
    client: &Client,
    sql: &str,
    context: impl Fn() -> String,
    mut state: S,
    mut on_tuple: impl FnMut(&mut S, &[u8], &Bytes),
) -> Result<S, Error> {
    let copy = client.copy_out(sql).await.map_err(Error::db(&context))?;
    let mut copy = pin!(copy);
    let mut split = TupleSplitter::new();
    while let Some(chunk) = copy.next().await {
        let chunk = chunk.map_err(Error::db(&context))?;
        split
            .feed(&chunk, &mut |tuple| on_tuple(&mut state, tuple, &chunk))
            .map_err(|e| Error::Runtime(format!("{}: {e}", context())))?;
    }
    split
        .finish()
        .map_err(|e| Error::Runtime(format!("{}: {e}", context())))?;
    Ok(state)
}
