//! `shadan plan`: shows what crosses the firewall, by class, and the exact source query.

use std::fmt::Write as _;

use crate::ident::escape_controls;

use serde_json::{json, Value};

use super::query::RangeShape;
use super::{Class, Plan, Scope, TablePlan};

/// The plan as the JSON document `plan --json` prints.
pub fn to_json(plan: &Plan) -> Value {
    json!({
        "mapping": {
            "name": plan.mapping_name,
            "file": plan.mapping_path.display().to_string(),
            "blake3": plan.mapping_digest,
            "own_retailer": plan.own_retailer,
            "source_access": plan.source_access,
        },
        "tables": plan.tables.iter().map(table_json).collect::<Vec<_>>(),
        "not_replicated": plan.unmapped_source_tables,
        "unexpected_target_columns": plan.unexpected_target_columns,
    })
}

fn table_json(t: &TablePlan) -> Value {
    let names = |class: Class| {
        t.columns
            .iter()
            .filter(|c| c.class == class)
            .map(|c| json!({"source": c.source, "target": c.target, "type": c.type_name}))
            .collect::<Vec<_>>()
    };
    json!({
        "source": t.source,
        "target": t.target,
        "read_from": t.source_relation(),
        "scope": t.scope,
        "owner": t.owner.as_ref().map(|o| &o.name),
        "only": t.only,
        "key": t.key().iter().map(|c| &c.source).collect::<Vec<_>>(),
        "key_order": t.key().iter().map(|c| json!({
            "column": c.source,
            "source_collation": c.source_order.label,
            "target_collation": c.target_order.label,
            "ranges_compare": match (&c.source_order.shared, c.source_order.collate.is_empty()) {
                (Some(_), _) => "in the collation both sides share (each side's key index serves)",
                (None, true) => "by value",
                (None, false) => "by bytes (COLLATE \"C\" semantics)",
            },
        })).collect::<Vec<_>>(),
        "public": names(Class::Public),
        "own": names(Class::Own),
        "non_public": t.non_public,
        "query": t.source_select(RangeShape::ALL),
        "copy_in": t.target_copy_in(),
        "settings": t.session_settings(),
    })
}

/// The plan for a person: one block per table, then what is not replicated.
///
/// Names come from catalogs other roles write: each is printed with its control
/// characters escaped, so a table named `x<newline>VERIFIED …` or one holding terminal
/// escapes cannot forge or erase a line a reviewer reads.
pub fn to_text(plan: &Plan) -> String {
    let e = escape_controls;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mapping {} ({}, blake3 {}), own retailer {}",
        e(&plan.mapping_name),
        e(&plan.mapping_path.display().to_string()),
        &plan.mapping_digest[..16.min(plan.mapping_digest.len())],
        e(&plan.own_retailer)
    );
    for t in &plan.tables {
        let _ = writeln!(
            out,
            "\n{} -> {}",
            e(&t.source.to_string()),
            e(&t.target.to_string())
        );
        let scope = match (t.scope, &t.owner) {
            (Scope::Own, Some(o)) => format!("own: rows where {} = own_retailer", e(&o.name)),
            _ => "all rows".to_string(),
        };
        let _ = writeln!(out, "  scope       {scope}");
        for f in &t.only {
            let _ = writeln!(
                out,
                "  only        {} in ({})",
                e(&f.column.name),
                e(&f.values.join(", "))
            );
        }
        let key: Vec<String> = t.key().iter().map(|c| e(&c.source)).collect();
        let _ = writeln!(out, "  key         {}", key.join(", "));
        for c in t.key() {
            if let (Some(src), Some(tgt)) = (&c.source_order.label, &c.target_order.label) {
                let how = if c.source_order.shared.is_some() {
                    "both order alike (the same provider, locale and library version, or the same libc C.* locale): \
                     batch ranges use each side's own collation and key index"
                } else {
                    "batch ranges compare bytes on both"
                };
                let _ = writeln!(
                    out,
                    "  key order   {}: source collation {}, target collation {}; {how}",
                    e(&c.source),
                    e(src),
                    e(tgt)
                );
                for (side, order, what) in [
                    (
                        "source",
                        &c.source_order,
                        "runs of batches are read by one scan and a sort per worker, not one scan per batch",
                    ),
                    (
                        "target",
                        &c.target_order,
                        "a batch whose target rows must be read scans the table",
                    ),
                ] {
                    if !order.served_by_index() {
                        let _ = writeln!(
                            out,
                            "              the {side}'s key index cannot serve byte ranges: {what}"
                        );
                    }
                }
            }
        }
        for (label, class) in [("public", Class::Public), ("own", Class::Own)] {
            let cols: Vec<String> = t
                .columns
                .iter()
                .filter(|c| c.class == class)
                .map(|c| {
                    if c.source == c.target {
                        e(&c.source)
                    } else {
                        format!("{} -> {}", e(&c.source), e(&c.target))
                    }
                })
                .collect();
            let _ = writeln!(out, "  {label:<11} {}", none_or(&cols));
        }
        let np: Vec<String> = t.non_public.iter().map(|c| e(&c.name)).collect();
        let _ = writeln!(
            out,
            "  non_public  {}  (never read into the tool)",
            none_or(&np)
        );
        let _ = writeln!(
            out,
            "  query       {}",
            e(&t.source_select(RangeShape::ALL))
        );
        for s in t.session_settings() {
            let _ = writeln!(
                out,
                "  bound       {} = {}",
                s.name,
                serde_json::to_string(&s.value).unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        out,
        "\nbound everywhere: shadan.own_retailer = {:?}",
        plan.own_retailer
    );
    let unmapped: Vec<String> = plan
        .unmapped_source_tables
        .iter()
        .map(|t| e(&t.to_string()))
        .collect();
    let _ = writeln!(
        out,
        "not replicated (no mapping entry): {}",
        none_or(&unmapped)
    );
    out
}

fn none_or(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}
