//! Staging writes in the target and applying them in one statement.
//!
//! Rows to insert or update, and keys to delete, cross with binary COPY into session-local
//! temporary tables (emptied at commit). One statement then applies them: the deletes,
//! the replaced rows' deletes ([`TablePlan::replace_rows`]) and `INSERT ... ON CONFLICT
//! (key) DO UPDATE`, in that order. Within one statement a value of a unique column can
//! move between rows (a swap, a value a deleted row freed), and a foreign key that
//! references the table (NO ACTION) is checked when all of it is done. Several batches
//! staged in one transaction are applied together the same way.

use std::pin::pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::apply::Piece;
use crate::copy::tuple::{encode_tuple, EMPTY_STREAM_HEADER};
use crate::error::Error;
use crate::ident::quote_ident;
use crate::plan::TablePlan;

/// Bytes sent per COPY message when staging rows.
const STAGE_MESSAGE_BYTES: usize = 1 << 20;

/// What is staged in the open transaction, by count.
#[derive(Debug, Default, Clone, Copy)]
pub struct Staged {
    /// Rows to insert or update.
    pub rows: usize,
    /// Keys to delete.
    pub gone: usize,
}

/// The name of one of a table's session-local staging tables: `stage` (rows to insert or
/// update), `gone` (keys to delete) or `keys` (keys to read).
pub fn stage_name(table: &TablePlan, kind: &str) -> String {
    format!("shadan_{kind}_{}", table.index + 1)
}

/// Where a table's staged rows are, quoted.
fn rows_stage(table: &TablePlan) -> String {
    quote_ident(&stage_name(table, "stage"))
}

/// Where a table's staged keys to delete are, quoted.
fn gone_stage(table: &TablePlan) -> String {
    quote_ident(&stage_name(table, "gone"))
}

/// Stages rows to insert or update; returns how many.
pub async fn stage_rows(
    client: &Client,
    table: &TablePlan,
    rows: &[Piece<'_>],
    context: impl Fn() -> String,
) -> Result<usize, Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let stage = rows_stage(table);
    let create = format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {}) ON COMMIT DELETE ROWS",
        table.target.sql()
    );
    let copy = format!(
        "COPY {stage} ({}) FROM STDIN (FORMAT binary)",
        table.target_column_list()
    );
    let bytes = rows.iter().map(|p| p.bytes().len()).sum();
    crate::metrics::count_bytes(&table.target, "written", bytes);
    send(client, (&create, &copy), rows.iter().copied(), &context).await?;
    Ok(rows.len())
}

/// Stages encoded keys to delete; returns how many.
pub async fn stage_gone(
    client: &Client,
    table: &TablePlan,
    gone: &[Vec<u8>],
    context: impl Fn() -> String,
) -> Result<usize, Error> {
    if gone.is_empty() {
        return Ok(0);
    }
    stage_keys(
        client,
        table,
        &stage_name(table, "gone"),
        gone.iter().map(Vec::as_slice),
        false,
        &context,
    )
    .await?;
    Ok(gone.len())
}

/// Stages encoded keys with binary COPY into the session's temporary table `stage` (the
/// target's key columns, emptied at commit), after those staged before in the transaction
/// or, with `alone`, instead of them.
pub async fn stage_keys<'k>(
    client: &Client,
    table: &TablePlan,
    stage: &str,
    keys: impl Iterator<Item = &'k [u8]>,
    alone: bool,
    context: impl Fn() -> String,
) -> Result<(), Error> {
    let columns = key_columns(table).join(", ");
    let stage = quote_ident(stage);
    let empty = if alone {
        format!("; DELETE FROM {stage}")
    } else {
        String::new()
    };
    let create = format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {columns} FROM {} WITH NO DATA{empty}",
        table.target.sql()
    );
    let key_tuples: Vec<Vec<u8>> = keys
        .map(|key| {
            let mut t = Vec::with_capacity(key.len() + 2);
            encode_tuple(&mut t, crate::key::key_fields(key).into_iter());
            t
        })
        .collect();
    let copy = format!("COPY {stage} ({columns}) FROM STDIN (FORMAT binary)");
    send(
        client,
        (&create, &copy),
        key_tuples.iter().map(|t| Piece::Slice(t)),
        &context,
    )
    .await
}

/// Applies what is staged, in the open transaction; returns how many rows were deleted.
/// With `hold_referenced` (a table other mapped tables reference), a row a child still
/// references is not deleted: it waits for the children's deletes, and the caller finds
/// it still there.
pub async fn apply(
    client: &Client,
    table: &TablePlan,
    batch: &str,
    staged: Staged,
    hold_referenced: bool,
) -> Result<usize, Error> {
    if staged.rows == 0 && staged.gone == 0 {
        return Ok(0);
    }
    let context = || format!("syncing {} {batch}", table.target);
    if table.replace_rows && staged.rows > 0 {
        still_replaceable(client, table, batch).await?;
    }
    let (deleted, written) = if table.target_write_hooks.is_empty() {
        let messages = client
            .simple_query(&apply_sql(table, staged, hold_referenced))
            .await
            .map_err(Error::db(&context))?;
        let counts = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((
                row.get(0).and_then(|n| n.parse::<usize>().ok()),
                row.get(1).and_then(|n| n.parse::<usize>().ok()),
            )),
            _ => None,
        });
        let Some((Some(deleted), Some(written))) = counts else {
            return Err(Error::Runtime(format!(
                "syncing {} {batch}: the server did not report what the write did",
                table.target
            )));
        };
        (deleted, written)
    } else {
        // A rule refuses to act on a statement inside WITH, and a trigger's own writes
        // are checked by reading the batch back: the deletes, then the inserts and
        // updates, each a statement of its own (rows are never replaced here).
        let (deletes, upserts) = statements(table, staged, hold_referenced);
        let upserts = upserts.map(|[select, conflict]| format!("{select} {conflict}"));
        let mut counts = [0; 2];
        for (sql, count) in [deletes, upserts].into_iter().zip(&mut counts) {
            if let Some(sql) = sql {
                *count = client
                    .execute(&sql, &[])
                    .await
                    .map_err(Error::db(&context))? as usize;
            }
        }
        (counts[0], counts[1])
    };
    if !(hold_referenced && deleted < staged.gone) {
        affected(table, batch, "deleted", deleted, staged.gone)?;
    }
    affected(table, batch, "inserted or updated", written, staged.rows)?;
    Ok(deleted)
}

/// Checks, in the open transaction and once it holds the table against DDL (ROW EXCLUSIVE
/// conflicts with adding a foreign key, a trigger or a rule), that the target still lets
/// its rows be replaced ([`TablePlan::replace_rows`]): the plan read the catalog when the
/// run began, and the retail side may have added one since.
async fn still_replaceable(client: &Client, table: &TablePlan, batch: &str) -> Result<(), Error> {
    use tokio_postgres::types::Type;
    let context = || format!("syncing {} {batch}", table.target);
    let lock = format!("LOCK TABLE {} IN ROW EXCLUSIVE MODE", table.target.sql());
    let (schema, name) = (&table.target.schema, &table.target.name);
    let ((), row) = tokio::try_join!(
        async {
            client
                .batch_execute(&lock)
                .await
                .map_err(Error::db(&context))
        },
        async {
            client
                .query_typed_one(
                    include_str!("still_replaceable.sql"),
                    &[(schema, Type::TEXT), (name, Type::TEXT)],
                )
                .await
                .map_err(Error::db(&context))
        }
    )?;
    if row.get::<_, bool>(0) {
        return Ok(());
    }
    Err(Error::Runtime(format!(
        "syncing {} {batch}: since the run began, the target table got a foreign key with an action \
         other than NO ACTION, a trigger or a rule, which replacing its rows would fire; nothing of the \
         batch was written: run sync again (it then updates the rows in place)",
        table.target
    )))
}

/// Fails the batch (its transaction is never committed) when a statement touched another
/// number of rows than was staged: a trigger that skips rows, a rule that rewrites them,
/// or a policy would otherwise leave a checkpoint that claims rows the target lacks.
fn affected(
    table: &TablePlan,
    batch: &str,
    what: &str,
    done: usize,
    staged: usize,
) -> Result<(), Error> {
    if done == staged {
        return Ok(());
    }
    Err(Error::Runtime(format!(
        "syncing {} {batch}: {staged} row(s) staged to be {what}, but the target {what} {done}; \
         nothing of the batch was kept: look for triggers or rules on the table that skip or \
         rewrite rows (shadan must write it exactly)",
        table.target,
    )))
}

/// The table's key columns in the target, quoted.
fn key_columns(table: &TablePlan) -> Vec<String> {
    table.key().iter().map(|c| quote_ident(&c.target)).collect()
}

/// One statement that applies `staged` and returns (rows deleted, rows written):
///
/// ```sql
/// WITH gone AS (DELETE FROM target t USING gone_stage g WHERE <key match>
///               [AND NOT EXISTS (<a child's row referencing t>)...] RETURNING 1),
///      replaced AS (DELETE FROM target t USING stage s WHERE <key match> RETURNING 1),
///      written AS (INSERT INTO target (cols) OVERRIDING SYSTEM VALUE
///                  SELECT cols FROM stage WHERE <the deletes' counts> >= 0
///                  ON CONFLICT (key) DO UPDATE SET ... RETURNING 1)
/// SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM written)
/// ```
///
/// The insert's condition reads the deletes' results before its first row, so every
/// delete is done before any row is written: a row deleted by this transaction holds no
/// value of a unique index any more. The override lets a key that is an identity column
/// `GENERATED ALWAYS` take the source's values, as COPY does in cutover.
fn apply_sql(table: &TablePlan, staged: Staged, hold_referenced: bool) -> String {
    let (deletes, upserts) = statements(table, staged, hold_referenced);
    let count = |cte: &str| format!("(SELECT pg_catalog.count(*) FROM {cte})");
    let mut ctes = Vec::new();
    let mut first = Vec::new();
    if let Some(deletes) = deletes {
        ctes.push(format!("gone AS ({deletes} RETURNING 1)"));
        first.push(count("gone"));
    }
    if let Some(upserts) = upserts {
        if table.replace_rows {
            ctes.push(format!(
                "replaced AS (DELETE FROM {} AS t USING {} AS s WHERE {} RETURNING 1)",
                table.target.sql(),
                rows_stage(table),
                matching(table, "s")
            ));
            first.push(count("replaced"));
        }
        let after = if first.is_empty() {
            String::new()
        } else {
            format!(
                " WHERE {} OPERATOR(pg_catalog.>=) 0",
                first.join(" OPERATOR(pg_catalog.+) ")
            )
        };
        // The condition goes between the SELECT and its ON CONFLICT clause.
        let [select, conflict] = upserts;
        ctes.push(format!(
            "written AS ({select}{after} {conflict} RETURNING 1)"
        ));
    }
    let reported = |cte: &str, present: bool| if present { count(cte) } else { "0".into() };
    format!(
        "WITH {} SELECT {}, {}",
        ctes.join(", "),
        reported("gone", staged.gone > 0),
        reported("written", staged.rows > 0)
    )
}

/// `t.k = alias.k AND ...` over the key columns.
fn matching(table: &TablePlan, alias: &str) -> String {
    key_columns(table)
        .iter()
        .map(|k| format!("t.{k} OPERATOR(pg_catalog.=) {alias}.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The plain statements that apply `staged`: the deletes (of the rows no mapped child
/// references, with `hold_referenced`), and the inserts and updates as their `INSERT ...
/// SELECT ...` and their `ON CONFLICT ...` clause.
fn statements(
    table: &TablePlan,
    staged: Staged,
    hold_referenced: bool,
) -> (Option<String>, Option<[String; 2]>) {
    let target = table.target.sql();
    let deletes = (staged.gone > 0).then(|| {
        let mut held = String::new();
        for child in table.target_children.iter().filter(|_| hold_referenced) {
            let refs: Vec<String> = child
                .pairs
                .iter()
                .map(|(c, p)| {
                    format!(
                        "c.{} OPERATOR(pg_catalog.=) t.{}",
                        quote_ident(c),
                        quote_ident(p)
                    )
                })
                .collect();
            held.push_str(&format!(
                " AND NOT EXISTS (SELECT 1 FROM {} AS c WHERE {})",
                child.child.sql(),
                refs.join(" AND ")
            ));
        }
        format!(
            "DELETE FROM {target} AS t USING {} AS g WHERE {}{held}",
            gone_stage(table),
            matching(table, "g")
        )
    });
    let upserts = (staged.rows > 0).then(|| {
        let cols = table.target_column_list();
        // A key column whose values have forms takes the source's form too.
        let forms = table.key_forms.iter().map(|&i| &table.columns[i]);
        let sets: Vec<String> = forms
            .chain(&table.columns[table.key_len..])
            .map(|c| {
                let col = quote_ident(&c.target);
                format!("{col} = EXCLUDED.{col}")
            })
            .collect();
        let action = if sets.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", sets.join(", "))
        };
        [
            format!(
                "INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {}",
                rows_stage(table)
            ),
            format!("ON CONFLICT ({}) {action}", key_columns(table).join(", ")),
        ]
    });
    (deletes, upserts)
}

/// Creates a stage (`create`) and sends tuples into it as one binary COPY stream
/// (`copy`): small ones gathered into messages of about [`STAGE_MESSAGE_BYTES`], a shared
/// (large) one as a message of its own, uncopied.
async fn send<'a>(
    client: &Client,
    (create, copy): (&str, &str),
    tuples: impl Iterator<Item = Piece<'a>>,
    context: impl Fn() -> String,
) -> Result<(), Error> {
    // The stage's creation and the COPY's preparation in one flight: the server runs
    // them in order, so the COPY is prepared against the stage just made.
    let (_, copy) = tokio::try_join!(
        async {
            client
                .batch_execute(create)
                .await
                .map_err(Error::db(&context))
        },
        async { client.prepare(copy).await.map_err(Error::db(&context)) }
    )?;
    let sink = client
        .copy_in::<_, Bytes>(&copy)
        .await
        .map_err(Error::db(&context))?;
    let mut sink = pin!(sink);
    let mut buf = EMPTY_STREAM_HEADER.to_vec();
    for piece in tuples {
        if let Piece::Shared(large) = piece {
            if !buf.is_empty() {
                sink.feed(Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .map_err(Error::db(&context))?;
            }
            sink.feed(large.clone())
                .await
                .map_err(Error::db(&context))?;
            continue;
        }
        buf.extend_from_slice(piece.bytes());
        if buf.len() >= STAGE_MESSAGE_BYTES {
            sink.feed(Bytes::from(std::mem::take(&mut buf)))
                .await
                .map_err(Error::db(&context))?;
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    sink.feed(Bytes::from(buf))
        .await
        .map_err(Error::db(&context))?;
    sink.as_mut().finish().await.map_err(Error::db(&context))?;
    Ok(())
}
