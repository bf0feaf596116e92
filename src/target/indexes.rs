//! Building a table's indexes after loading it (as pgcopydb does): loading an empty table
//! without its primary key and indexes, then building them once, is faster than
//! maintaining them row by row.
//!
//! The definitions are saved in `shadan.deferred_indexes` in the same transaction that
//! drops them, and recreated (and forgotten) in one transaction after the table's last
//! batch, so a crash in between leaves them recorded for `--resume`. Loading stays safe
//! without the primary key: a batch can be written only once (its checkpoint says so).
//! A table referenced by foreign keys, with exclusion constraints, or not owned by the
//! tool's role is loaded with its indexes in place.

use tokio_postgres::Client;

use crate::error::Error;
use crate::ident::quote_ident;
use crate::mapping::name::QualifiedName;

/// Sets aside the indexes and key constraints of an empty target table; returns how many
/// (0 when the table is not eligible).
pub async fn defer(client: &Client, table: &QualifiedName) -> Result<usize, Error> {
    let context = || format!("setting aside the indexes of {table} for the load");
    let name = table.sql();
    let eligible: bool = client
        .query_one(
            "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') AND c.relkind = 'r' \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.confrelid = c.oid) \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'x') \
             FROM pg_catalog.pg_class c WHERE c.oid = $1::text::regclass",
            &[&name],
        )
        .await
        .map_err(Error::db(&context))?
        .get(0);
    if !eligible {
        return Ok(0);
    }
    client
        .batch_execute("BEGIN")
        .await
        .map_err(Error::db(&context))?;
    // Key constraints first (their indexes go with them), then the other indexes.
    let constraints = client
        .query(
            "SELECT k.conname::text, pg_catalog.pg_get_constraintdef(k.oid), \
                    ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY c(attnum, ord) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.attnum \
                          ORDER BY c.ord) \
             FROM pg_catalog.pg_constraint k \
             WHERE k.conrelid = $1::text::regclass AND k.contype IN ('p', 'u') ORDER BY k.contype, k.conname",
            &[&name],
        )
        .await
        .map_err(Error::db(&context))?;
    let indexes = client
        .query(
            "SELECT n.nspname::text, c.relname::text, pg_catalog.pg_get_indexdef(i.indexrelid), \
                    CASE WHEN i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL THEN \
                      ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, ord) \
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                            ORDER BY k.ord) END \
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.indrelid = $1::text::regclass \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid) \
             ORDER BY c.relname",
            &[&name],
        )
        .await
        .map_err(Error::db(&context))?;
    // (statement that recreates it, key columns if it is a key constraint)
    let mut creates: Vec<(String, Option<Vec<String>>)> = Vec::new();
    let mut drops = Vec::new();
    for r in &constraints {
        let (constraint, definition, columns): (String, String, Vec<String>) =
            (r.get(0), r.get(1), r.get(2));
        creates.push((
            format!(
                "ALTER TABLE {name} ADD CONSTRAINT {} {definition}",
                quote_ident(&constraint)
            ),
            Some(columns),
        ));
        drops.push(format!(
            "ALTER TABLE {name} DROP CONSTRAINT {}",
            quote_ident(&constraint)
        ));
    }
    for r in &indexes {
        let (schema, index, definition): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        // A plain unique index can be the table's key: record its columns like a
        // constraint's, so resume and sync still find the key while it is set aside.
        let unique_columns: Option<Vec<String>> = r.get(3);
        creates.push((definition, unique_columns));
        drops.push(format!(
            "DROP INDEX {}",
            QualifiedName::new(schema, index).sql()
        ));
    }
    for (position, (create, columns)) in creates.iter().enumerate() {
        client
            .execute(
                "INSERT INTO shadan.deferred_indexes (target_table, position, create_sql, unique_columns) \
                 VALUES ($1, $2, $3, $4)",
                &[&table.to_string(), &(position as i32), create, columns],
            )
            .await
            .map_err(Error::db(&context))?;
    }
    for drop in &drops {
        client
            .batch_execute(drop)
            .await
            .map_err(Error::db(&context))?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(&context))?;
    Ok(creates.len())
}

/// Recreates whatever [`defer`] set aside for `table`; returns how many.
pub async fn restore(client: &Client, table: &QualifiedName) -> Result<usize, Error> {
    let context = || format!("building the indexes of {table} after the load");
    client
        .batch_execute("BEGIN")
        .await
        .map_err(Error::db(&context))?;
    let rows = client
        .query(
            "SELECT create_sql FROM shadan.deferred_indexes WHERE target_table = $1 ORDER BY position",
            &[&table.to_string()],
        )
        .await
        .map_err(Error::db(&context))?;
    for r in &rows {
        let create: String = r.get(0);
        client
            .batch_execute(&create)
            .await
            .map_err(Error::db(&context))?;
    }
    client
        .execute(
            "DELETE FROM shadan.deferred_indexes WHERE target_table = $1",
            &[&table.to_string()],
        )
        .await
        .map_err(Error::db(&context))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(Error::db(&context))?;
    Ok(rows.len())
}

/// Target tables whose cutover has not finished building their indexes.
pub async fn unfinished(client: &Client) -> Result<Vec<String>, Error> {
    let rows = client
        .query_typed(
            "SELECT DISTINCT target_table FROM shadan.deferred_indexes ORDER BY 1",
            &[],
        )
        .await
        .map_err(Error::db("reading deferred indexes"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
