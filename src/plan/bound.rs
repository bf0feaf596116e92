//! Bound values against their columns: `own_retailer` and each `only` value must be a
//! value of its column's type as declared, typmod included, or the plan is refused
//! (exit 2). The queries cast bound values to the type without typmod, so a value that
//! does not fit can never be cut down to one that does (`'R0001-TEST'::varchar(5)` is
//! `R0001`); this check makes the mistake visible before anything runs.

use tokio_postgres::Client;

use super::query::op;
use super::{Plan, Problem, Problems};
use crate::error::DbError;

/// One bound value and where it is used.
struct Bound<'a> {
    line: usize,
    table: String,
    column: &'a str,
    type_name: &'a str,
    base_type_name: &'a str,
    value: &'a str,
    /// What the value is, for messages (which never repeat it).
    what: String,
}

/// Checks every bound value of `plan` on the source server, which knows the column types;
/// returns every problem at once.
pub async fn check(plan: &Plan, source: &Client) -> Result<(), crate::error::Error> {
    let mut bounds = Vec::new();
    for t in &plan.tables {
        if let Some(owner) = &t.owner {
            bounds.push(Bound {
                line: plan.own_retailer_line,
                table: t.source.to_string(),
                column: &owner.name,
                type_name: &owner.type_name,
                base_type_name: &owner.base_type_name,
                value: &plan.own_retailer,
                what: "own_retailer".into(),
            });
        }
        for f in &t.only {
            for (i, v) in f.values.iter().enumerate() {
                bounds.push(Bound {
                    line: f.line,
                    table: t.source.to_string(),
                    column: &f.column.name,
                    type_name: &f.column.type_name,
                    base_type_name: &f.column.base_type_name,
                    value: v,
                    what: format!("`only` value number {} of {}", i + 1, f.values.len()),
                });
            }
        }
    }
    // Equal only when the typmod cast changed nothing (for char(n), padding aside).
    let sqls: Vec<String> = bounds
        .iter()
        .map(|b| {
            format!(
                "SELECT ($1::pg_catalog.text::{base}) {eq} ($1::pg_catalog.text::{full})",
                base = b.base_type_name,
                full = b.type_name,
                eq = op("="),
            )
        })
        .collect();
    // All at once: the driver pipelines them, one round trip for every value.
    let answers = futures_util::future::join_all(bounds.iter().zip(&sqls).map(|(b, sql)| async {
        let value: &(dyn tokio_postgres::types::ToSql + Sync) = &b.value;
        source
            .query_typed_one(sql, &[(value, tokio_postgres::types::Type::TEXT)])
            .await
    }))
    .await;
    let mut problems = Vec::new();
    for (b, answer) in bounds.iter().zip(answers) {
        let message = match answer {
            Ok(row) if row.get::<_, Option<bool>>(0) == Some(true) => continue,
            Ok(_) => format!(
                "{} does not fit the column's type {} (a cast would change it, for example cut it \
                 to the declared length, and could make it another retailer's value); fix the value",
                b.what, b.type_name
            ),
            Err(e) => format!(
                "{} is not a value of the column's type {} ({}); fix the value",
                b.what,
                b.type_name,
                DbError::from(e)
            ),
        };
        problems.push(Problem::column(b.line, &b.table, b.column, message));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problems::new(plan.mapping_path.clone(), problems).into())
    }
}
