//! `shadan init --target-ddl`: the retail tables that exactly fit a classified mapping's
//! projection, so the retail DBA starts from a schema `plan` accepts: the copied columns
//! only (key first, then source order), renamed by `to`, with the source's exact types,
//! the key as primary key, and NOT NULL wherever the projection guarantees a value. Text
//! key columns get `COLLATE "C"`, so that their index serves shadan's byte-order batch
//! ranges whatever the source collates by.

use std::fmt::Write as _;

use crate::catalog::Catalog;
use crate::ident::{escape_controls, quote_ident};
use crate::mapping::name::QualifiedName;
use crate::mapping::Mapping;

/// The `CREATE TABLE` script for `mapping`, or every reason it cannot be written (names
/// the mapping uses that the source does not have).
pub fn script(mapping: &Mapping, source: &Catalog) -> Result<String, Vec<String>> {
    let mut out = String::new();
    let mut problems = Vec::new();
    let _ = writeln!(
        out,
        "-- Retail tables for the mapping {} (blake3 {}), written by `shadan init --target-ddl`.\n\
         -- Apply on the retail database, then run `shadan plan`.\n\nBEGIN;",
        escape_controls(&format!("{:?}", mapping.name)),
        mapping.digest
    );
    let mut schemas = std::collections::BTreeSet::new();
    let mut user_types = std::collections::BTreeSet::new();
    let mut tables = Vec::new();
    for m in &mapping.tables {
        let at = |what: String| format!("line {}: {what}", m.line);
        let (Ok(src_name), Ok(tgt_name)) = (
            QualifiedName::parse(&m.source.value),
            QualifiedName::parse(&m.target.value),
        ) else {
            problems.push(at("a table name does not parse".into()));
            continue;
        };
        let Some(src) = source.table(&src_name) else {
            problems.push(at(format!(
                "the source has no table {}",
                escape_controls(&src_name.to_string())
            )));
            continue;
        };
        let key: Vec<&str> = m.key.iter().map(|k| k.value.as_str()).collect();
        let own_scope = m.scope.value == "own";
        let mut lines = Vec::new();
        let mut key_targets = vec![String::new(); key.len()];
        // Key columns first, in key order; then the others in source column order.
        let mut order: Vec<&crate::catalog::ColumnInfo> = Vec::new();
        for k in &key {
            match src.column(k) {
                Some(c) => order.push(c),
                None => problems.push(at(format!(
                    "the key column {} is not in the source",
                    escape_controls(k)
                ))),
            }
        }
        order.extend(
            src.columns
                .iter()
                .filter(|c| !key.contains(&c.name.as_str())),
        );
        for col in order {
            let Some(entry) = m.columns.iter().find(|e| e.source == col.name) else {
                continue;
            };
            let class = entry.class.as_str();
            if class != "public" && class != "own" {
                continue;
            }
            let target = entry.to.clone().unwrap_or_else(|| col.name.clone());
            let is_key = key.contains(&col.name.as_str());
            let not_null = is_key || (col.not_null && (class == "public" || own_scope));
            let collate = if is_key && col.collation_sql.is_some() {
                " COLLATE pg_catalog.\"C\""
            } else {
                ""
            };
            if col.type_kind != 'b' || !col.base_type_name.starts_with("pg_catalog.") {
                user_types.insert(col.type_name.clone());
            }
            if let Some(i) = key.iter().position(|k| *k == col.name) {
                key_targets[i] = quote_ident(&target);
            }
            lines.push(format!(
                "    {} {}{collate}{}",
                quote_ident(&target),
                col.type_name,
                if not_null { " NOT NULL" } else { "" }
            ));
        }
        if key_targets.iter().any(String::is_empty) {
            problems.push(at("every key column must be classified \"public\"".into()));
            continue;
        }
        lines.push(format!("    PRIMARY KEY ({})", key_targets.join(", ")));
        schemas.insert(tgt_name.schema.clone());
        tables.push(format!(
            "CREATE TABLE {} (\n{}\n);",
            tgt_name.sql(),
            lines.join(",\n")
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if !user_types.is_empty() {
        let _ = writeln!(
            out,
            "-- These types are the source's own: create them here first, as they are there:\n--   {}",
            escape_controls(&user_types.into_iter().collect::<Vec<_>>().join(", "))
        );
    }
    for schema in schemas {
        let _ = writeln!(out, "CREATE SCHEMA IF NOT EXISTS {};", quote_ident(&schema));
    }
    for table in tables {
        let _ = writeln!(out, "\n{table}");
    }
    let _ = writeln!(out, "\nCOMMIT;");
    Ok(out)
}
