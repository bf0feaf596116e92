//! Step 4 of the data path: the SQL a plan runs.
//!
//! The projection is pushed into the source: `own` columns become
//! `CASE WHEN owner = <own_retailer> THEN col END`, scope and `only` become WHERE
//! predicates, and non-public columns never appear in the select list. COPY cannot take
//! bind parameters, so values (own_retailer, `only` lists, batch key bounds) are bound as
//! parameters of `set_config(...)` and read back in the query as
//! `(SELECT current_setting('shadan.…')::type)`: an InitPlan evaluated once per query,
//! never text spliced into SQL. Identifiers are always quoted by [`quote_ident`].

use serde::Serialize;

use super::{Class, Scope, SourceAccess, TablePlan, EXPORT_SCHEMA};
use crate::ident::quote_ident;
use crate::mapping::name::QualifiedName;

/// Session setting holding `own_retailer`.
pub const OWN_RETAILER_SETTING: &str = "shadan.own_retailer";

/// A value bound into a session setting before the queries of a plan run.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSetting {
    /// The setting name (`shadan.…`).
    pub name: String,
    /// The value, bound as a query parameter.
    pub value: SettingValue,
}

/// The value of a [`SessionSetting`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SettingValue {
    /// A single text value.
    Text(String),
    /// A list, stored as the server's text form of a `text[]`.
    List(Vec<String>),
}

/// Which key bounds a batch query applies: `key > lower` and/or `key <= upper`. The bound
/// values themselves are bound into session settings (see [`key_bound_settings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeShape {
    /// Apply `key > lower`.
    pub lower: bool,
    /// Apply `key <= upper`.
    pub upper: bool,
}

impl RangeShape {
    /// The whole table.
    pub const ALL: RangeShape = RangeShape {
        lower: false,
        upper: false,
    };
}

/// The session settings carrying one bound of a key range, one per key column.
pub fn key_bound_settings(which: Bound, values: &[String]) -> Vec<SessionSetting> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| SessionSetting {
            name: which.setting(i),
            value: SettingValue::Text(v.clone()),
        })
        .collect()
}

/// The lower or the upper bound of a key range.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// Exclusive lower bound.
    Lower,
    /// Inclusive upper bound.
    Upper,
}

impl Bound {
    fn setting(self, i: usize) -> String {
        match self {
            Bound::Lower => format!("shadan.lo_{}", i + 1),
            Bound::Upper => format!("shadan.hi_{}", i + 1),
        }
    }
}

/// Reads a session setting as a value of `type_name`, evaluated once per query.
pub(super) fn setting_as(name: &str, type_name: &str) -> String {
    format!("(SELECT pg_catalog.current_setting('{name}')::{type_name})")
}

/// `=`, `>`, `<=` and friends, qualified so that no operator a neighbour creates in a
/// schema on some search path can stand in for pg_catalog's.
pub fn op(symbol: &str) -> String {
    format!("OPERATOR(pg_catalog.{symbol})")
}

fn only_setting(table: usize, filter: usize) -> String {
    format!("shadan.only_{}_{}", table + 1, filter + 1)
}

impl TablePlan {
    /// The settings this table's source queries read (besides `own_retailer`).
    pub fn session_settings(&self) -> Vec<SessionSetting> {
        match self.access {
            SourceAccess::Views => Vec::new(),
            SourceAccess::Tables => self
                .only
                .iter()
                .enumerate()
                .map(|(i, f)| SessionSetting {
                    name: only_setting(self.index, i),
                    value: SettingValue::List(f.values.clone()),
                })
                .collect(),
        }
    }

    /// The relation source rows are read from: the table, or its export view.
    pub fn source_relation(&self) -> QualifiedName {
        match self.access {
            SourceAccess::Tables => self.source.clone(),
            SourceAccess::Views => export_view(&self.source),
        }
    }

    /// The source table as a FROM item: `ONLY` for an ordinary table, so that rows of an
    /// inheritance child (a table of its own, listed as not replicated) never cross.
    pub fn source_table_from(&self) -> String {
        match self.source_kind {
            'r' => format!("ONLY {}", self.source.sql()),
            _ => self.source.sql(),
        }
    }

    /// The FROM item source rows are read from: the table ([`Self::source_table_from`])
    /// or its export view.
    pub fn source_from(&self) -> String {
        match self.access {
            SourceAccess::Tables => self.source_table_from(),
            SourceAccess::Views => export_view(&self.source).sql(),
        }
    }

    /// `owner = own_retailer` as SQL, when the table has an owner column. The bound value
    /// is cast to the owner's type without typmod: `'R0001-TEST'::varchar(5)` would be
    /// `R0001`, another company.
    pub fn owned_predicate(&self) -> Option<String> {
        self.owner.as_ref().map(|o| {
            format!(
                "{} {} {}",
                quote_ident(&o.name),
                op("="),
                setting_as(OWN_RETAILER_SETTING, &o.base_type_name)
            )
        })
    }

    /// The select list of the projection, in projection order. `own` columns are masked
    /// inside the source with `CASE WHEN owner = own_retailer`, unless the scope already
    /// admits only owned rows or the export view has masked them.
    pub fn projection(&self) -> Vec<String> {
        let mask = match (self.scope, self.access) {
            (Scope::All, SourceAccess::Tables) => self.owned_predicate(),
            _ => None,
        };
        self.columns
            .iter()
            .map(|c| match (c.class, &mask) {
                (Class::Own, Some(pred)) => {
                    let col = quote_ident(&c.source);
                    format!("CASE WHEN {pred} THEN {col} END AS {col}")
                }
                _ => quote_ident(&c.source),
            })
            .collect()
    }

    /// Scope and `only` predicates, evaluated inside the source.
    pub fn scope_predicates(&self) -> Vec<String> {
        if self.access == SourceAccess::Views {
            return Vec::new();
        }
        let mut preds = Vec::new();
        if self.scope == Scope::Own {
            preds.extend(self.owned_predicate());
        }
        for (i, f) in self.only.iter().enumerate() {
            preds.push(format!(
                "{} {} ANY (ARRAY(SELECT pg_catalog.unnest(pg_catalog.current_setting('{}')::pg_catalog.text[]::{}[])))",
                quote_ident(&f.column.name),
                op("="),
                only_setting(self.index, i),
                f.column.base_type_name
            ));
        }
        preds
    }

    /// Key range predicates over `columns` (source or target key columns, each with its
    /// `COLLATE` clause), with qualified operators.
    fn range_predicates(&self, names: &[String], range: RangeShape) -> Vec<String> {
        let key = self.key();
        let row = |cols: Vec<String>| {
            if cols.len() == 1 {
                cols.into_iter().next().unwrap_or_default()
            } else {
                format!("ROW({})", cols.join(", "))
            }
        };
        let lhs = row(names.to_vec());
        let bound = |b: Bound| {
            row(key
                .iter()
                .enumerate()
                .map(|(i, k)| setting_as(&b.setting(i), &k.type_name))
                .collect())
        };
        let mut preds = Vec::new();
        if range.lower {
            preds.push(format!("{lhs} {} {}", op(">"), bound(Bound::Lower)));
        }
        if range.upper {
            preds.push(format!("{lhs} {} {}", op("<="), bound(Bound::Upper)));
        }
        preds
    }

    /// The projection query over one key range of the source.
    pub fn source_select(&self, range: RangeShape) -> String {
        let mut preds = self.scope_predicates();
        preds.extend(self.range_predicates(&self.source_key_ordered(), range));
        select(&self.projection(), &self.source_from(), &preds)
    }

    /// Whether the source view has, within one key range and counting rows outside the
    /// scope and `only` filters too, a key that is NULL or not unique: one boolean,
    /// computed inside the source.
    pub fn source_view_key_ambiguous(&self, range: RangeShape) -> String {
        let keys = self.source_key_ordered();
        let ranges = self.range_predicates(&keys, range);
        let within = if ranges.is_empty() {
            "true".to_string()
        } else {
            ranges.join(" AND ")
        };
        let nulls: Vec<String> = self
            .key()
            .iter()
            .map(|c| format!("{} IS NULL", quote_ident(&c.source)))
            .collect();
        let from = self.source_table_from();
        // A NULL key is in no range: the batch without a lower bound (every table has
        // exactly one) looks for it in the whole view.
        let nulls_where = if range.lower {
            "false".to_string()
        } else {
            nulls.join(" OR ")
        };
        format!(
            "SELECT EXISTS (SELECT 1 FROM {from} WHERE {within} GROUP BY {} \
                 HAVING pg_catalog.count(*) {} 1) \
             OR EXISTS (SELECT 1 FROM {from} WHERE {nulls_where})",
            keys.join(", "),
            op(">"),
        )
    }

    /// `COPY (projection) TO STDOUT (FORMAT binary)` for one key range of the source.
    pub fn source_copy(&self, range: RangeShape) -> String {
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            self.source_select(range)
        )
    }

    /// Whether the leak audit needs each source row's ownership: a scope-"all" table with
    /// `own` columns, read from the table itself.
    pub fn needs_owned_flag(&self) -> bool {
        self.scope == Scope::All && self.has_own_columns() && self.access == SourceAccess::Tables
    }

    /// `COPY (projection) TO STDOUT (FORMAT binary)` over one physical chunk of the source
    /// (all rows when `chunk` is `None`), optionally with the audit-only `owned` flag as
    /// the last column (`(owner = own_retailer) IS TRUE`, evaluated in the source and used only to classify
    /// a difference, never written or reported).
    pub fn source_copy_chunk(&self, chunk: Option<Chunk>, owned_flag: bool) -> String {
        let mut preds = self.scope_predicates();
        preds.extend(chunk.map(Chunk::predicate));
        let mut cols = self.projection();
        if owned_flag {
            cols.push(format!(
                "({}) IS TRUE",
                self.owned_predicate().unwrap_or_else(|| "false".into())
            ));
        }
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            select(&cols, &self.source_from(), &preds)
        )
    }

    /// What is read of each target column, in projection order: the column, or what a
    /// verify plan reads for a drifted one (see [`super::PlannedColumn::target_read`]).
    pub fn target_reads(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| {
                c.target_read
                    .clone()
                    .unwrap_or_else(|| quote_ident(&c.target))
            })
            .collect()
    }

    /// The target's rows of one physical chunk, in projection column order.
    pub fn target_copy_chunk(&self, chunk: Option<Chunk>) -> String {
        let cols = self.target_reads();
        let preds: Vec<String> = chunk.map(Chunk::predicate).into_iter().collect();
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            select(&cols, &self.target.sql(), &preds)
        )
    }

    /// Which of `count` keys (bound as `$1..`, key column by key column, each typed as
    /// its column) exist in the source table at all, in scope or not: returns the
    /// 1-based positions of those that do. One query checks many keys.
    pub fn source_keys_existing(&self, count: usize) -> String {
        let (values, names) = self.bound_keys(count);
        let matches: Vec<String> = self
            .key()
            .iter()
            .zip(&names)
            .map(|(c, k)| format!("s.{} {} v.{k}", quote_ident(&c.source), op("=")))
            .collect();
        format!(
            "SELECT v.shadan_i FROM {values} WHERE EXISTS (SELECT 1 FROM {} AS s WHERE {})",
            self.source_table_from(),
            matches.join(" AND ")
        )
    }

    /// `(VALUES (1, $1::t1, $2::t2), (2, ...)) AS v(shadan_i, shadan_k1, shadan_k2)`: `count`
    /// keys bound as parameters, key column by key column, each typed as its column and
    /// numbered from 1; and the names of the key columns in it.
    pub(super) fn bound_keys(&self, count: usize) -> (String, Vec<String>) {
        let n = self.key_len;
        let rows: Vec<String> = (0..count)
            .map(|r| {
                let fields: Vec<String> = self
                    .key()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("${}::{}", r * n + i + 1, c.type_name))
                    .collect();
                format!("({}, {})", r + 1, fields.join(", "))
            })
            .collect();
        let names: Vec<String> = (1..=n).map(|i| format!("shadan_k{i}")).collect();
        let values = format!(
            "(VALUES {}) AS v(shadan_i, {})",
            rows.join(", "),
            names.join(", ")
        );
        (values, names)
    }

    /// The target columns in projection order, quoted, for COPY column lists.
    pub fn target_column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.target))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `COPY target (cols) FROM STDIN (FORMAT binary)`: rows arrive in projection order.
    pub fn target_copy_in(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.target.sql(),
            self.target_column_list()
        )
    }

    /// `COPY (SELECT cols FROM target WHERE range) TO STDOUT (FORMAT binary)`, the target's
    /// rows in the same column order as the source projection, for comparison.
    pub fn target_copy_out(&self, range: RangeShape) -> String {
        let key_names = self.target_key_ordered();
        let cols = self.target_reads();
        let preds = self.range_predicates(&key_names, range);
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            select(&cols, &self.target.sql(), &preds)
        )
    }

    /// The keys (as text, in key order) of a `TABLESAMPLE SYSTEM ($1)` block sample of
    /// the source table's rows in scope; `$1` is the percentage. The text columns get
    /// their own names so that ORDER BY sorts by the typed key, not by its text.
    pub fn source_sample_keys(&self) -> String {
        let texts: Vec<String> = self
            .key()
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}::text AS shadan_key_{}", quote_ident(&c.source), i + 1))
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {} TABLESAMPLE SYSTEM ($1)",
            texts.join(", "),
            self.source_table_from()
        );
        let preds = self.scope_predicates();
        if !preds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&preds.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY {}",
            self.source_key_ordered().join(", ")
        ));
        sql
    }

    /// The source key columns with the `COLLATE` clause every range and ORDER BY over
    /// them uses (see [`super::KeyOrder`]).
    pub fn source_key_ordered(&self) -> Vec<String> {
        self.key()
            .iter()
            .map(|c| format!("{}{}", quote_ident(&c.source), c.source_order.collate))
            .collect()
    }

    /// The target key columns with their `COLLATE` clause, like
    /// [`TablePlan::source_key_ordered`].
    pub fn target_key_ordered(&self) -> Vec<String> {
        self.key()
            .iter()
            .map(|c| format!("{}{}", quote_ident(&c.target), c.target_order.collate))
            .collect()
    }

    /// The key columns of the source, quoted and comma-separated, in key order.
    pub fn source_key_list(&self) -> String {
        self.key()
            .iter()
            .map(|c| quote_ident(&c.source))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A physical slice of a table, `[first, end)` in heap pages, read with a TID range scan.
/// Any slicing works for comparisons that do not depend on row order; the numbers are
/// generated by the tool, never taken from data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First heap page.
    pub first: u64,
    /// Page after the last, or `None` for "to the end of the table".
    pub end: Option<u64>,
}

impl Chunk {
    fn predicate(self) -> String {
        let mut p = format!("ctid >= '({},0)'::tid", self.first);
        if let Some(end) = self.end {
            p.push_str(&format!(" AND ctid < '({end},0)'::tid"));
        }
        p
    }
}

/// The export view `grants --views` creates for a source table: one view per table in
/// [`EXPORT_SCHEMA`], named `schema.table` (a single identifier with a dot).
pub fn export_view(source: &QualifiedName) -> QualifiedName {
    QualifiedName::new(EXPORT_SCHEMA, format!("{}.{}", source.schema, source.name))
}

pub(super) fn select(cols: &[String], from: &str, preds: &[String]) -> String {
    let mut sql = format!("SELECT {} FROM {from}", cols.join(", "));
    if !preds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&preds.join(" AND "));
    }
    sql
}

/// [`TablePlan`]'s key range predicates over `names`, for the other SQL builders of
/// the plan.
pub(super) fn range_predicates_for(
    table: &TablePlan,
    names: &[String],
    range: RangeShape,
) -> Vec<String> {
    table.range_predicates(names, range)
}
