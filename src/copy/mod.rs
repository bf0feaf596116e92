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
