//! Foreign keys between mapped target tables, and the order writes must follow so that
//! they hold after every commit: parents' inserts before children's, children's deletes
//! before parents'. Each table gets a level (a parent's is lower than its children's);
//! `plan` refuses what no order can satisfy.

use std::collections::BTreeMap;

use super::{ChildReference, Problem, Scope, TablePlan};
use crate::catalog::Catalog;
use crate::mapping::name::QualifiedName;

/// Fills `target_parents`, `target_children` and `level` of every table; records a problem
/// for a cycle (a table referencing itself included) and for a parent that keeps fewer
/// rows than its child.
pub(super) fn order(tables: &mut [TablePlan], target: &Catalog, problems: &mut Vec<Problem>) {
    let index: BTreeMap<&QualifiedName, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (&t.target, i))
        .collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); tables.len()];
    let mut children: Vec<Vec<ChildReference>> = vec![Vec::new(); tables.len()];
    for (i, t) in tables.iter().enumerate() {
        for fk in target
            .table(&t.target)
            .map(|info| &info.foreign_keys[..])
            .unwrap_or(&[])
        {
            let Some(&p) = index.get(&fk.parent) else {
                continue;
            };
            let parent_key: std::collections::BTreeSet<&str> =
                tables[p].key().iter().map(|c| c.target.as_str()).collect();
            let referenced: std::collections::BTreeSet<&str> =
                fk.parent_columns.iter().map(String::as_str).collect();
            if referenced != parent_key {
                problems.push(Problem::table(
                    tables[i].line,
                    Some(&tables[i].target.to_string()),
                    format!(
                        "its foreign key {} references columns of {} other than its mapped key: sync commits \
                         a parent's batch before its children's, so a change of those columns would break it; \
                         reference the parent's key",
                        crate::ident::escape_controls(&crate::ident::quote_ident(&fk.name)),
                        tables[p].target
                    ),
                ));
            }
            if fk.acts {
                problems.push(Problem::table(
                    tables[i].line,
                    Some(&tables[i].target.to_string()),
                    format!(
                        "its foreign key {} has ON DELETE/ON UPDATE CASCADE, SET NULL or SET DEFAULT: it would \
                         change rows of this table that sync counted, behind its back; make it NO ACTION \
                         (sync deletes children itself, before their parents)",
                        crate::ident::escape_controls(&crate::ident::quote_ident(&fk.name))
                    ),
                ));
            }
            if !parents[i].contains(&p) {
                parents[i].push(p);
            }
            children[p].push(ChildReference {
                child: tables[i].target.clone(),
                pairs: fk
                    .columns
                    .iter()
                    .cloned()
                    .zip(fk.parent_columns.iter().cloned())
                    .collect(),
            });
            let (child, parent) = (&tables[i], &tables[p]);
            if child.scope == Scope::All && (parent.scope == Scope::Own || !parent.only.is_empty())
                || child.only.is_empty() && !parent.only.is_empty()
            {
                problems.push(Problem::table(
                    child.line,
                    Some(&child.target.to_string()),
                    format!(
                        "its foreign key {} references {}, which keeps fewer rows (scope or `only`) than this \
                         table: rows here would reference rows that never cross; give both the same scope and \
                         filters, or drop the foreign key",
                        crate::ident::escape_controls(&crate::ident::quote_ident(&fk.name)),
                        parent.target
                    ),
                ));
            }
        }
    }
    // Levels by repeated relaxation; a table still unsettled after n rounds is in a cycle.
    let n = tables.len();
    let mut level = vec![0usize; n];
    let mut settled = vec![false; n];
    for _ in 0..=n {
        for i in 0..n {
            if settled[i] {
                continue;
            }
            if parents[i].iter().all(|&p| settled[p] && p != i) {
                level[i] = parents[i].iter().map(|&p| level[p] + 1).max().unwrap_or(0);
                settled[i] = true;
            }
        }
    }
    for (i, t) in tables.iter_mut().enumerate() {
        if !settled[i] {
            problems.push(Problem::table(
                t.line,
                Some(&t.target.to_string()),
                "the target's foreign keys between mapped tables form a cycle through this table (a \
                 table referencing itself included): no order of writes keeps them; drop one of the \
                 foreign keys",
            ));
        }
        t.level = level[i];
        t.target_parents = parents[i].clone();
    }
    for (t, children) in tables.iter_mut().zip(children) {
        t.target_children = children;
    }
}
