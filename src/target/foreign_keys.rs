//! Foreign keys of the target tables a cutover loads are set aside for the load and put
//! back after it, as indexes are (see [`super::indexes`]): batches of all tables are
//! interleaved across workers, so a child's rows may arrive before its parent's. Their
//! definitions are saved in `shadan.deferred_foreign_keys` in the transaction that drops
//! them, and recreated (which validates every row) in one transaction once every table
//! is loaded, so a crash in between leaves them recorded for `--resume`; sync refuses to
//! run while any is set aside.

use tokio_postgres::Client;

use crate::error::Error;
use crate::ident::quote_ident;
use crate::mapping::name::QualifiedName;

/// Sets aside the foreign keys of `tables` (the tables that reference others); returns
/// how many. Only constraints of their own count: the clones PostgreSQL makes for each
/// partition of a referenced (or referencing) partitioned table go with them.
pub async fn set_aside(client: &Client, tables: &[&QualifiedName]) -> Result<usize, Error> {
    let context = "setting aside the target's foreign keys for the load";
    client
        .batch_execute("BEGIN")
        .await
        .map_err(Error::db(context))?;
    let mut count = 0;
    for table in tables {
        let name = table.sql();
        let keys = client
            .query(
                "SELECT k.conname::text, pg_catalog.pg_get_constraintdef(k.oid) FROM pg_catalog.pg_constraint k \
                 WHERE k.conrelid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.regclass \
                   AND k.contype OPERATOR(pg_catalog.=) 'f' \
                   AND k.conparentid OPERATOR(pg_catalog.=) 0 ORDER BY 1",
                &[&name],
            )
            .await
            .map_err(Error::db(context))?;
        for k in &keys {
            let (constraint, definition): (String, String) = (k.get(0), k.get(1));
            client
                .execute(
                    "INSERT INTO shadan.deferred_foreign_keys (target_table, name, create_sql) VALUES ($1, $2, $3)",
                    &[
                        &table.to_string(),
                        &constraint,
                        &format!(
                            "ALTER TABLE {name} ADD CONSTRAINT {} {definition}",
                            quote_ident(&constraint)
                        ),
                    ],
                )
                .await
                .map_err(Error::db(context))?;
            client
                .batch_execute(&format!(
                    "ALTER TABLE {name} DROP CONSTRAINT {}",
                    quote_ident(&constraint)
                ))
                .await
                .map_err(Error::db(context))?;
            count += 1;
        }
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(context))?;
    Ok(count)
}

/// Recreates every foreign key set aside (validating every row) and forgets them, in one
/// transaction; returns how many.
pub async fn restore_all(client: &Client) -> Result<usize, Error> {
    let context = "putting back the target's foreign keys after the load";
    client
        .batch_execute("BEGIN")
        .await
        .map_err(Error::db(context))?;
    let rows = client
        .query(
            "SELECT create_sql FROM shadan.deferred_foreign_keys ORDER BY target_table, name",
            &[],
        )
        .await
        .map_err(Error::db(context))?;
    for r in &rows {
        let create: String = r.get(0);
        client
            .batch_execute(&create)
            .await
            .map_err(Error::db(context))?;
    }
    client
        .batch_execute("DELETE FROM shadan.deferred_foreign_keys; COMMIT")
        .await
        .map_err(Error::db(context))?;
    Ok(rows.len())
}

/// Target tables whose foreign keys a cutover has set aside and not yet put back.
pub async fn unfinished(client: &Client) -> Result<Vec<String>, Error> {
    let rows = client
        .query_typed(
            "SELECT DISTINCT target_table FROM shadan.deferred_foreign_keys ORDER BY 1",
            &[],
        )
        .await
        .map_err(Error::db("reading the foreign keys set aside"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
