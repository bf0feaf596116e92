//! The checks of one `[[table]]` entry against both catalogs, collecting every problem.
//! [`super::Plan::build`] runs them; only it builds a [`TablePlan`].

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Class, KeyOrder, OnlyFilter, PlannedColumn, Problem, Scope, SearchColumn, SourceAccess,
    TablePlan, TypedColumn, UnexpectedColumn,
};
use crate::catalog::{Catalog, ColumnInfo, TableInfo};
use crate::mapping::name::QualifiedName;
use crate::mapping::MappedTable;

/// The checks of one `[[table]]` entry.
pub(super) struct TableCheck<'a> {
    /// The entry being checked.
    pub(super) mapped: &'a MappedTable,
    /// Its position in the mapping.
    pub(super) index: usize,
    /// The source catalog.
    pub(super) source: &'a Catalog,
    /// The target catalog.
    pub(super) target: &'a Catalog,
    /// Tables or export views.
    pub(super) source_access: SourceAccess,
    /// What the plan is for.
    pub(super) purpose: super::Purpose,
    /// Where problems are collected.
    pub(super) problems: &'a mut Vec<Problem>,
    /// Where target-side problems go when the purpose tolerates them.
    pub(super) tolerated: &'a mut Vec<Problem>,
}

impl<'a> TableCheck<'a> {
    /// Records a problem of the target's schema: fatal for writing, a warning for
    /// verify, which reads around it (see [`super::Purpose`]).
    fn target_problem(&mut self, problem: Problem) {
        match self.purpose {
            super::Purpose::Write => self.problems.push(problem),
            super::Purpose::Verify => self.tolerated.push(problem),
        }
    }

    /// Checks one table entry; returns the table plan and its unexpected target columns
    /// when the entry could be resolved far enough to build one.
    pub(super) fn run(mut self) -> Option<(TablePlan, Vec<UnexpectedColumn>)> {
        let m = self.mapped;
        let source_name = self.resolve(&m.source.value, m.source.line, "source", self.source);
        let target_name = self.resolve(&m.target.value, m.target.line, "target", self.target);
        let label = source_name
            .as_ref()
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| m.source.value.clone());
        let scope = match m.scope.value.as_str() {
            "all" => Some(Scope::All),
            "own" => Some(Scope::Own),
            other => {
                self.problems.push(Problem::table(
                    m.scope.line,
                    Some(&label),
                    format!("unknown scope `{other}`; use \"all\" (every row) or \"own\" (only rows owned by own_retailer)"),
                ));
                None
            }
        };
        let classes = self.classify(&label);
        let (Some((source_name, src)), Some((target_name, tgt)), Some(scope)) =
            (source_name, target_name, scope)
        else {
            return None;
        };
        let target_label = target_name.to_string();

        // Every source column classified, every classified column present.
        for col in &src.columns {
            if !m.columns.iter().any(|e| e.source == col.name) {
                self.problems.push(Problem::column(
                    m.line,
                    &label,
                    &col.name,
                    format!(
                        "the source column is not classified (fail closed: nothing is copied until it is); add `{} = \"non_public\"` to [table.columns], or \"public\"/\"own\" after review",
                        crate::mapping::name::toml_key(&col.name)
                    ),
                ));
            }
        }
        for entry in &m.columns {
            if src.column(&entry.source).is_none() {
                self.problems.push(Problem::column(
                    entry.line,
                    &label,
                    &entry.source,
                    "the mapping classifies a column the source table does not have; fix the name (names are case-sensitive) or remove the entry",
                ));
            }
        }

        // Owner column.
        let needs_owner = scope == Scope::Own || classes.values().any(|c| c.class == "own");
        let owner = match &m.owner {
            Some(owner) => match src.column(&owner.value) {
                Some(col) => {
                    // Which retailer a customer chose is never retail's to hold.
                    if let Some(c) = classes.get(owner.value.as_str()) {
                        if c.class != "non_public" {
                            self.problems.push(Problem::column(
                                owner.line,
                                &label,
                                &owner.value,
                                format!(
                                    "the owner column is classified \"{}\", so every row's retailer would cross; \
                                     which retailer a customer chose is never retail's: classify it \"non_public\"",
                                    c.class
                                ),
                            ));
                        }
                    }
                    Some(typed(col))
                }
                None => {
                    self.problems.push(Problem::column(
                        owner.line,
                        &label,
                        &owner.value,
                        "the owner column does not exist in the source table; name the column that holds the retailer code",
                    ));
                    None
                }
            },
            None => {
                if needs_owner {
                    self.problems.push(Problem::table(
                        m.line,
                        Some(&label),
                        "`scope = \"own\"` or an \"own\" column needs `owner = \"<column holding the retailer code>\"`",
                    ));
                }
                None
            }
        };

        // `only` filters.
        let mut only = Vec::new();
        for (column, values) in &m.only {
            match src.column(&column.value) {
                Some(col) if col.type_category == 'A' || !matches!(col.type_kind, 'b' | 'd' | 'e') => {
                    self.problems.push(Problem::column(
                        column.line,
                        &label,
                        &column.value,
                        format!(
                            "an `only` filter on a column of type {} is not supported; filter on a column of a scalar base type",
                            col.type_name
                        ),
                    ))
                }
                Some(col) if !values.is_empty() => only.push(OnlyFilter {
                    column: typed(col),
                    values: values.clone(),
                    line: column.line,
                }),
                Some(_) => self.problems.push(Problem::column(
                    column.line,
                    &label,
                    &column.value,
                    "the `only` list is empty, which would copy no row; list the values to keep",
                )),
                None => self.problems.push(Problem::column(
                    column.line,
                    &label,
                    &column.value,
                    "the `only` filter names a column the source table does not have; fix the name",
                )),
            }
        }

        // Copied columns and what they produce in the target.
        let mut produced: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut columns = Vec::new();
        let mut non_public = Vec::new();
        for entry in &m.columns {
            let Some(src_col) = src.column(&entry.source) else {
                continue;
            };
            let Some(class) = classes.get(entry.source.as_str()) else {
                continue;
            };
            let class = match class.class {
                "public" => Class::Public,
                "own" => Class::Own,
                _ => {
                    non_public.push(typed(src_col));
                    continue;
                }
            };
            let target_col_name = entry.to.as_deref().unwrap_or(&entry.source);
            produced
                .entry(target_col_name)
                .or_default()
                .push(&entry.source);
            let Some(tgt_col) = tgt.column(target_col_name) else {
                self.target_problem(Problem::column(
                    entry.line,
                    &target_label,
                    target_col_name,
                    format!(
                        "the target table has no such column (produced by source column `{}`); add it to the target or fix `to`",
                        entry.source
                    ),
                ));
                if self.purpose == super::Purpose::Verify {
                    let null = format!("NULL::{}", src_col.type_name);
                    columns.push(planned(
                        entry,
                        target_col_name,
                        class,
                        src_col,
                        src_col,
                        Some(null),
                    ));
                }
                continue;
            };
            let mut target_read = None;
            // A domain's name is not its type: two databases' domains of one name may
            // hold different types (numeric(12,0) here, numeric(14,2) there).
            if src_col.type_name != tgt_col.type_name
                || src_col.representation_name != tgt_col.representation_name
            {
                let shown = |c: &ColumnInfo| {
                    if c.type_name == c.representation_name {
                        c.type_name.clone()
                    } else {
                        format!("{} (over {})", c.type_name, c.representation_name)
                    }
                };
                target_read = Some(format!(
                    "{}::{}",
                    crate::ident::quote_ident(&tgt_col.name),
                    src_col.type_name
                ));
                self.target_problem(Problem::column(
                    entry.line,
                    &label,
                    &entry.source,
                    format!(
                        "type mismatch: source is {}, target {}.{} is {}; make the types identical (typmod included, \
                         and for a domain the type it is over)",
                        shown(src_col), target_label, tgt_col.name, shown(tgt_col)
                    ),
                ));
            }
            if let Some(why) = src_col.pass_through_problem() {
                self.problems
                    .push(Problem::column(entry.line, &label, &entry.source, why));
            }
            let is_key = m.key.iter().any(|k| k.value == entry.source);
            if tgt_col.identity_always && !is_key {
                self.target_problem(Problem::column(
                    entry.line,
                    &target_label,
                    &tgt_col.name,
                    "the target column is GENERATED ALWAYS AS IDENTITY, which sync cannot update; \
                     make it GENERATED BY DEFAULT (ALTER TABLE ... ALTER COLUMN ... SET GENERATED BY DEFAULT)",
                ));
            }
            if tgt_col.generated {
                self.target_problem(Problem::column(
                    entry.line,
                    &target_label,
                    &tgt_col.name,
                    "the target column is generated and cannot be written; map to a plain column",
                ));
            }
            if class == Class::Own && scope == Scope::All && tgt_col.not_null {
                self.target_problem(Problem::column(
                    entry.line,
                    &target_label,
                    &tgt_col.name,
                    "an \"own\" column is NULL in rows not owned, but the target column is NOT NULL; drop the constraint or use scope = \"own\"",
                ));
            }
            columns.push(planned(
                entry,
                target_col_name,
                class,
                src_col,
                tgt_col,
                target_read,
            ));
        }
        for (target_col, sources) in &produced {
            if sources.len() > 1 {
                self.problems.push(Problem::column(
                    m.line,
                    &target_label,
                    target_col,
                    format!(
                        "the target column is produced by {} entries ({}); each target column must come from exactly one source column",
                        sources.len(),
                        sources.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let mut unexpected: Vec<UnexpectedColumn> = tgt
            .columns
            .iter()
            .filter(|c| !produced.contains_key(c.name.as_str()))
            .map(|c| UnexpectedColumn {
                line: m.line,
                table: target_name.clone(),
                column: c.name.clone(),
            })
            .collect();
        // Inheritance children of the target: their rows are read as the table's (verify
        // compares them like any row), and their own columns are columns the mapping does
        // not produce. A writing command refuses them: rows there would escape its writes.
        for child in &tgt.inheritance_children {
            self.target_problem(Problem::table(
                m.line,
                Some(&target_label),
                format!(
                    "the target table has an inheritance child {}, whose rows are read as this table's but \
                     are not written by shadan; detach it (ALTER TABLE ... NO INHERIT)",
                    crate::ident::escape_controls(&child.sql())
                ),
            ));
            if let Some(info) = self.target.table(child) {
                unexpected.extend(
                    info.columns
                        .iter()
                        .filter(|c| tgt.column(&c.name).is_none())
                        .map(|c| UnexpectedColumn {
                            line: m.line,
                            table: child.clone(),
                            column: c.name.clone(),
                        }),
                );
            }
        }

        // Key: public, unique on both sides; ordered like the unique index.
        let (key_len, held_apart) =
            self.check_key(&label, &target_label, src, tgt, &classes, &mut columns);
        let key_forms: Vec<usize> = columns[..key_len]
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                src.columns
                    .iter()
                    .any(|s| s.name == c.source && super::keys::has_forms(s))
            })
            .map(|(i, _)| i)
            .collect();
        if !key_forms.is_empty() && !tgt.replaceable {
            // A key that changes only its form (5 to 5.0) is a key update to a foreign key
            // (PostgreSQL compares a referenced key byte for byte): its action would fire.
            self.target_problem(Problem::table(
                m.line,
                Some(&target_label),
                "its key is an unconstrained numeric, whose form (5, 5.0, 5.00) sync writes as the \
                 source holds it, and a foreign key references the table (or a partition of it) with \
                 ON UPDATE or ON DELETE other than NO ACTION, which a change of form alone would fire: \
                 declare the key's scale on both sides (numeric(p, s)) or make the foreign key NO ACTION",
            ));
        }

        // Remaining columns in target column order.
        let key_cols: Vec<PlannedColumn> = columns.drain(..key_len).collect();
        columns.sort_by_key(|c| tgt.columns.iter().position(|t| t.name == c.target));
        let columns = key_cols.into_iter().chain(columns).collect();
        Some((
            TablePlan {
                index: self.index,
                source_kind: src.kind,
                source: source_name,
                target: target_name,
                scope,
                owner,
                line: m.line,
                only,
                columns,
                key_len,
                key_forms,
                non_public,
                access: self.source_access,
                target_search: tgt.columns.iter().filter_map(SearchColumn::of).collect(),
                target_write_hooks: tgt.write_hooks.clone(),
                replace_rows: held_apart && tgt.replaceable && tgt.write_hooks.is_empty(),
                target_parents: Vec::new(),
                target_children: Vec::new(),
                level: 0,
                source_columns: src
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.type_name.clone()))
                    .collect(),
            },
            unexpected,
        ))
    }

    /// Parses a table name and looks it up; records a problem when either fails.
    fn resolve<'c>(
        &mut self,
        text: &str,
        line: usize,
        side: &str,
        catalog: &'c Catalog,
    ) -> Option<(QualifiedName, &'c TableInfo)> {
        let name = match QualifiedName::parse(text) {
            Ok(name) => name,
            Err(e) => {
                self.problems.push(Problem::table(
                    line,
                    Some(text),
                    format!("bad {side} table name: {e}"),
                ));
                return None;
            }
        };
        let views = side == "source" && self.source_access == SourceAccess::Views;
        match catalog.table(&name) {
            // A view (or materialized view) may be a mapped source: its key is checked
            // unique and not NULL as rows are read. Not a target, and not in views mode.
            Some(info) if info.kind != 'v' && info.kind != 'm' => Some((name, info)),
            Some(info) if side == "source" && !views => Some((name, info)),
            _ => {
                let hint = if views {
                    "the source database has no such table; with source_access = \"views\" the catalog must still show the table (names are case-sensitive)"
                } else {
                    "no such table in the database (names are case-sensitive, written without SQL quotes), or the role cannot see it"
                };
                self.problems.push(Problem::table(
                    line,
                    Some(&name.to_string()),
                    format!("{side} table not found: {hint}"),
                ));
                None
            }
        }
    }

    /// Checks each column entry's shape and class; returns the valid classes by column.
    fn classify(&mut self, label: &str) -> BTreeMap<&'a str, ClassEntry> {
        let mut out = BTreeMap::new();
        let mapped: &'a MappedTable = self.mapped;
        for entry in &mapped.columns {
            for p in &entry.shape_problems {
                self.problems
                    .push(Problem::column(entry.line, label, &entry.source, p.clone()));
            }
            let class = match entry.class.as_str() {
                "public" => "public",
                "own" => "own",
                "non_public" => "non_public",
                "" => continue,
                other => {
                    self.problems.push(Problem::column(
                        entry.line,
                        label,
                        &entry.source,
                        format!(
                            "unknown class `{other}`; use \"public\", \"own\" or \"non_public\""
                        ),
                    ));
                    continue;
                }
            };
            if class == "non_public" && entry.to.is_some() {
                self.problems.push(Problem::column(
                    entry.line,
                    label,
                    &entry.source,
                    "`to` on a non_public column: a non_public column is never copied, so it has no target name; remove `to`",
                ));
            }
            out.insert(entry.source.as_str(), ClassEntry { class });
        }
        out
    }

    /// Checks the key and moves the key columns to the front of `columns`, in the order of
    /// the source unique index. Returns the key length, and whether the target has another
    /// unique index or exclusion constraint, checked row by row, that values may move
    /// through (see [`super::TablePlan::replace_rows`]).
    fn check_key(
        &mut self,
        label: &str,
        target_label: &str,
        src: &TableInfo,
        tgt: &TableInfo,
        classes: &BTreeMap<&str, ClassEntry>,
        columns: &mut Vec<PlannedColumn>,
    ) -> (usize, bool) {
        let m = self.mapped;
        if m.key.is_empty() {
            self.problems.push(Problem::table(
                m.line,
                Some(label),
                "`key` is empty; list the primary key columns",
            ));
            return (0, false);
        }
        let mut ok = true;
        for k in &m.key {
            match classes.get(k.value.as_str()) {
                Some(c) if c.class == "public" => {}
                Some(c) => {
                    ok = false;
                    self.problems.push(Problem::column(
                        k.line,
                        label,
                        &k.value,
                        format!("key columns must be \"public\" (this one is \"{}\"): keys identify rows in the target and in reports", c.class),
                    ));
                }
                None => {
                    ok = false;
                    if src.column(&k.value).is_none() {
                        self.problems.push(Problem::column(
                            k.line,
                            label,
                            &k.value,
                            "the key column does not exist in the source table; list the primary key columns",
                        ));
                    }
                }
            }
        }
        if !ok {
            return (0, false);
        }
        let key_set: BTreeSet<&str> = m.key.iter().map(|k| k.value.as_str()).collect();
        // A view has no index: the mapping names its key, in that order, and every read
        // checks it (see `key::KeyCheck`).
        let view_key: Option<Vec<String>> =
            matches!(src.kind, 'v' | 'm').then(|| m.key.iter().map(|k| k.value.clone()).collect());
        let index_key = src.unique_keys.iter().find(|u| {
            u.can_be_key()
                && u.columns
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>()
                    == key_set
                && u.columns
                    .iter()
                    .all(|c| src.column(c).is_some_and(|c| c.not_null))
        });
        let key_columns: Vec<String> = if let Some(k) = view_key {
            k
        } else if let Some(index) = index_key {
            index.columns.clone()
        } else {
            let same_columns = src.unique_keys.iter().find(|u| {
                u.columns
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>()
                    == key_set
            });
            let why = match same_columns {
                Some(u) if !u.exact => "`key`'s unique index compares under a nondeterministic collation, so \
                    different keys can be equal; give the key a deterministic collation",
                Some(u) if !u.immediate => "`key`'s unique index is DEFERRABLE, so it cannot match rows by key; \
                    make the constraint NOT DEFERRABLE",
                _ => "`key` is not the primary key (or a unique index on NOT NULL columns) of the source table; \
                    name the primary key columns",
            };
            self.problems
                .push(Problem::table(m.key[0].line, Some(label), why));
            return (0, false);
        };
        let ordered: Vec<PlannedColumn> = key_columns
            .iter()
            .filter_map(|name| columns.iter().find(|c| &c.source == name).cloned())
            .collect();
        if ordered.len() != key_columns.len() {
            return (0, false); // a key column failed an earlier check, already reported
        }
        for key_col in &ordered {
            let sides = [
                (src.column(&key_col.source), "source", label),
                (tgt.column(&key_col.target), "target", target_label),
            ];
            for (col, side, table) in sides {
                let Some(col) = col else { continue };
                if let Some(why) = super::keys::key_column_problem(col, side) {
                    let problem = Problem::column(m.key[0].line, table, &col.name, why);
                    if side == "target" {
                        self.target_problem(problem);
                    } else {
                        self.problems.push(problem);
                    }
                    continue;
                }
                if col.collation_sql.is_some() && side == "source" {
                    if let Some(why) =
                        super::keys::encoding_problem(&self.source.encoding, &self.target.encoding)
                    {
                        self.problems
                            .push(Problem::column(m.key[0].line, table, &col.name, why));
                    }
                }
            }
        }
        let target_set: BTreeSet<&str> = ordered.iter().map(|c| c.target.as_str()).collect();
        let key_index = |u: &&crate::catalog::UniqueKey| {
            u.can_be_key()
                && u.columns
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>()
                    == target_set
        };
        if !tgt.unique_keys.iter().any(|u| key_index(&u)) {
            self.target_problem(Problem::table(
                m.key[0].line,
                Some(target_label),
                format!(
                    "the target table has no primary key or unique index on ({}) (a DEFERRABLE, partial, \
                     expression or nondeterministically collated one does not count: ON CONFLICT cannot match \
                     keys exactly with it); add one so rows can be matched by key",
                    ordered.iter().map(|c| c.target.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        // Another unique index or exclusion constraint checked row by row would refuse a
        // value moving between rows (a swap, or a value freed and taken within a night)
        // if rows were updated one by one: sync then replaces the changed rows within one
        // statement, deleting and inserting them. One that contains the key cannot
        // conflict. (A case-insensitive one on the key would even serve ON CONFLICT and
        // merge two source rows; an exclusion constraint's operators are not known here.)
        let held_apart = tgt
            .unique_keys
            .iter()
            .filter(|u| !key_index(u) && u.immediate)
            .any(|other| {
                !(other.plain
                    && other.exact
                    && !other.exclusion
                    && target_set
                        .iter()
                        .all(|k| other.columns.iter().any(|c| c == k)))
            });
        columns.retain(|c| !key_columns.contains(&c.source));
        let len = ordered.len();
        columns.splice(0..0, ordered);
        (len, held_apart)
    }
}

/// A column entry's class, once checked.
struct ClassEntry {
    class: &'static str,
}

/// A copied column: `entry` read from `src`, written to (or verified in) `tgt`.
fn planned(
    entry: &crate::mapping::MappedColumn,
    target: &str,
    class: Class,
    src: &ColumnInfo,
    tgt: &ColumnInfo,
    target_read: Option<String>,
) -> PlannedColumn {
    let (source_order, target_order) = KeyOrder::pair(src, tgt);
    PlannedColumn {
        source: entry.source.clone(),
        target: target.to_string(),
        class,
        type_name: src.type_name.clone(),
        is_text: src.is_text(),
        source_order,
        target_order,
        target_read,
    }
}

fn typed(col: &ColumnInfo) -> TypedColumn {
    TypedColumn {
        name: col.name.clone(),
        type_name: col.type_name.clone(),
        is_text: col.is_text(),
        base_type_name: col.base_type_name.clone(),
    }
}
