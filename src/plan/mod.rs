//! Step 3 of the data path: the validated plan, the single source of truth.
//!
//! [`Plan::build`] checks a parsed [`Mapping`] against the source and target catalogs
//! and returns either every problem at once or a [`Plan`]. A `Plan` exists only if every
//! source column is classified, every target column is produced exactly once with the
//! identical type, and the key is public and unique on both sides. Every command takes a
//! `Plan` and nothing else; the source query it runs is generated from it ([`query`]).

pub mod bound;
pub mod changes_sql;
mod check;
mod export_view;
mod keys;
mod order;
pub use keys::key_column_problem;
pub mod problem;
pub mod query;
pub mod show;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::mapping::name::QualifiedName;
use crate::mapping::Mapping;
pub use problem::{Problem, Problems};

/// Which rows of a table are in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every row (subject to `only`).
    All,
    /// Only rows whose owner column equals `own_retailer`.
    Own,
}

/// How a copied column is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Copied for every row in scope.
    Public,
    /// Copied where the row is owned by `own_retailer`, NULL in every other row.
    Own,
}

/// Where the tool reads source rows from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceAccess {
    /// The mapped tables themselves, through the projection query.
    Tables,
    /// The `shadan_export` views made by `grants --views`.
    Views,
}

/// What a plan is built for. A writing command needs a target it can write exactly;
/// `verify` only reads, and a target whose schema drifted from the mapping (a key
/// dropped, a column retyped or dropped by the retail side) must still be audited: its
/// leaks exit 4, not hide behind a plan error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// cutover, sync, plan, grants: every problem stops the command.
    Write,
    /// verify: target-side problems are reported as warnings; a retyped column is read
    /// cast to the source's type, a missing one as NULL.
    Verify,
}

/// The schema of the export views made by `grants --views`.
pub const EXPORT_SCHEMA: &str = "shadan_export";

/// A checked mapping: what crosses from source to target, table by table.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `[mapping] name`.
    pub mapping_name: String,
    /// The mapping file, for messages.
    pub mapping_path: PathBuf,
    /// blake3 of the mapping file.
    pub mapping_digest: String,
    /// Retailer code of the company that owns the target.
    pub own_retailer: String,
    /// Line of `own_retailer` in the mapping, for problems with its value.
    pub own_retailer_line: usize,
    /// Tables or export views.
    pub source_access: SourceAccess,
    /// The source's `server_encoding` (what `--deep` may write in SQL depends on it).
    pub source_encoding: String,
    /// The mapped tables, in mapping order.
    pub tables: Vec<TablePlan>,
    /// Source tables that no mapping entry names: never replicated.
    pub unmapped_source_tables: Vec<QualifiedName>,
    /// Target-side problems a [`Purpose::Verify`] plan tolerates, for warnings.
    pub target_drift: Vec<Problem>,
    /// Target columns that no mapping entry produces. Writing commands refuse to run with
    /// any (see [`Plan::require_exact_targets`]); `verify` reports them as `column` leaks.
    pub unexpected_target_columns: Vec<UnexpectedColumn>,
}

/// A target column no mapping entry produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnexpectedColumn {
    /// Line of the `[[table]]` entry.
    #[serde(skip)]
    pub line: usize,
    /// The target table.
    pub table: QualifiedName,
    /// The column.
    pub column: String,
}

/// A foreign key of a mapped table's target that references another mapped table's.
#[derive(Debug, Clone)]
pub struct ChildReference {
    /// The referencing table.
    pub child: QualifiedName,
    /// (its column, the referenced column), in the constraint's order.
    pub pairs: Vec<(String, String)>,
}

/// One mapped table, checked.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Position in the mapping, used to name per-table session settings.
    pub index: usize,
    /// The source table.
    pub source: QualifiedName,
    /// Its `relkind`: `r` is read `FROM ONLY` (an inheritance child is a table of its
    /// own, replicated only when mapped); `p`, a partitioned table, with its partitions.
    pub source_kind: char,
    /// The target table.
    pub target: QualifiedName,
    /// Row scope.
    pub scope: Scope,
    /// Owner column and its exact type, when the table has one.
    pub owner: Option<TypedColumn>,
    /// Line of the `[[table]]` entry.
    pub line: usize,
    /// `only` filters, evaluated inside the source.
    pub only: Vec<OnlyFilter>,
    /// Copied columns in projection order: the key columns first (in unique-index order),
    /// then the others in target column order.
    pub columns: Vec<PlannedColumn>,
    /// How many leading entries of `columns` form the key.
    pub key_len: usize,
    /// Positions of the key columns whose equal values can differ in form (unconstrained
    /// numeric): rows are matched by [`crate::key::matching`], and sync writes the form
    /// the source holds into the key too.
    pub key_forms: Vec<usize>,
    /// Source columns never copied (`non_public`), with their types.
    pub non_public: Vec<TypedColumn>,
    /// Whether rows are read from the table or from its export view.
    pub access: SourceAccess,
    /// Every column of the target table that can hold text, mapped or not: where
    /// `verify --deep` looks for non-public values.
    pub target_search: Vec<SearchColumn>,
    /// Mapped tables this table's target references by foreign key (plan indexes).
    pub target_parents: Vec<usize>,
    /// The foreign keys of other mapped tables' targets that reference this one.
    pub target_children: Vec<ChildReference>,
    /// Write order: every parent's level is lower than its children's.
    pub level: usize,
    /// The target's enabled user triggers and non-SELECT rules: when there are any, sync
    /// re-reads each batch it wrote and commits only if the target holds exactly the
    /// source's rows (a trigger can rewrite or remove a row and still count as written).
    pub target_write_hooks: Vec<String>,
    /// Whether sync replaces the target rows it changes (deletes them and inserts them
    /// again, within the statement that writes the batch) rather than updating them: the
    /// target has a unique index or exclusion constraint besides the key, checked row by
    /// row, through which values may move between rows; every foreign key that
    /// references the table (or one of its partitions) is NO ACTION, and no trigger or rule
    /// acts on its writes, so nothing else notices.
    pub replace_rows: bool,
    /// Every column of the source table (name, type) as the plan was checked against: a
    /// run compares it with the catalog once it holds the table against DDL.
    pub source_columns: Vec<(String, String)>,
}

impl TablePlan {
    /// Whether another mapped table's target references this one.
    pub fn has_children(&self) -> bool {
        !self.target_children.is_empty()
    }

    /// The key of a tuple of this table's projection, as rows are matched by (see
    /// [`crate::key::matching`]).
    pub fn match_key<'t>(&self, tuple: &'t [u8]) -> std::borrow::Cow<'t, [u8]> {
        crate::key::matching(
            crate::copy::tuple::key_bytes(tuple, self.key_len),
            &self.key_forms,
        )
    }

    /// blake3 of what this table's projection is (own_retailer, scope, owner, `only`, and
    /// every copied column with class and type): an export view records it, and `plan`
    /// refuses a view whose projection differs from the mapping's.
    pub fn projection_digest(&self, own_retailer: &str) -> String {
        let canonical = serde_json::json!({
            "own_retailer": own_retailer,
            "source": self.source,
            "scope": self.scope,
            "owner": self.owner,
            "only": self.only,
            "columns": self.columns,
        });
        blake3::hash(canonical.to_string().as_bytes())
            .to_hex()
            .to_string()
    }
}

/// A target column `verify --deep` searches, and how it is read as text.
#[derive(Debug, Clone)]
pub struct SearchColumn {
    /// The column name.
    pub name: String,
    /// The SQL that reads it: the column for string types and `bytea` (its bytes are
    /// read as UTF-8, lossily), `column::text` for `json`, `jsonb`, `xml` and arrays.
    pub read: String,
}

impl SearchColumn {
    /// How `col` is searched, if it can hold text at all.
    pub fn of(col: &crate::catalog::ColumnInfo) -> Option<Self> {
        const BYTEA: u32 = 17;
        const AS_TEXT: &[u32] = &[114, 142, 3802]; // json, xml, jsonb
        let name = crate::ident::quote_ident(&col.name);
        let read = if col.is_text() || col.representation_oid == BYTEA {
            name
        } else if AS_TEXT.contains(&col.representation_oid) || col.type_category == 'A' {
            format!("{name}::pg_catalog.text")
        } else {
            return None;
        };
        Some(Self {
            name: col.name.clone(),
            read,
        })
    }
}

/// A column name with its exact type.
#[derive(Debug, Clone, Serialize)]
pub struct TypedColumn {
    /// Column name.
    pub name: String,
    /// Exact type (`format_type`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether the type is a string type (fingerprinted by `verify --deep`).
    #[serde(skip)]
    pub is_text: bool,
    /// The type without typmod: bound values are cast to it, so that a value too long
    /// for the column matches nothing instead of being cut down to one that does.
    #[serde(skip)]
    pub base_type_name: String,
}

/// An `only` filter: keep rows whose column value is in the list.
#[derive(Debug, Clone, Serialize)]
pub struct OnlyFilter {
    /// The source column, with its type.
    pub column: TypedColumn,
    /// Allowed values as text, bound as a parameter and cast to the column type.
    pub values: Vec<String>,
    /// Line of the filter in the mapping.
    #[serde(skip)]
    pub line: usize,
}

/// A column that crosses to the target.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedColumn {
    /// Source column name.
    pub source: String,
    /// Target column name (differs when the mapping renames with `to`).
    pub target: String,
    /// Public or own.
    pub class: Class,
    /// Exact type, identical on both sides.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether the type is a string type (searched by `verify --deep`).
    #[serde(skip)]
    pub is_text: bool,
    /// How the source column takes part in key ranges and key order.
    #[serde(skip)]
    pub source_order: KeyOrder,
    /// How the target column takes part in key ranges and key order.
    #[serde(skip)]
    pub target_order: KeyOrder,
    /// What verify reads for this column when the target drifted from the mapping: the
    /// column cast to the source's type, or a typed NULL for a missing column. `None`:
    /// the column itself (always, in a plan for writing).
    #[serde(skip)]
    pub target_read: Option<String>,
}

/// How a key column is compared in range predicates and ORDER BY, on one side. Batches
/// are key ranges evaluated on both servers, so both must order keys identically. When
/// the two columns' collations provably order alike (the same provider, locale and
/// library version: what PostgreSQL itself trusts an index to), each side ranges in its
/// own collation and its key index serves the batches. Otherwise text keys compare byte
/// by byte (`COLLATE "C"`) whatever the servers' collations; a column whose own collation
/// already orders by bytes keeps it, so its index still serves the range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOrder {
    /// ` COLLATE <collation>` to put after the column, or empty for types without one
    /// and for ranges in the column's own collation.
    pub collate: String,
    /// Whether the column's own ordering already is the byte order (no collation, or a
    /// C/POSIX one): layouts cut by shadan before ranges compared bytes are valid then.
    pub bytewise_own: bool,
    /// The collation both sides share and range in (see [`KeyOrder::pair`]), by its
    /// identity (provider, locale, version); `None` when ranges compare bytes or values.
    pub shared: Option<String>,
    /// The column's own collation, for `plan` to show.
    pub label: Option<String>,
}

impl KeyOrder {
    /// The orders of a key column on the source and on the target.
    pub fn pair(
        src: &crate::catalog::ColumnInfo,
        tgt: &crate::catalog::ColumnInfo,
    ) -> (Self, Self) {
        let shared = match (&src.collation_identity, &tgt.collation_identity) {
            (Some(a), Some(b)) if a == b && orders_provably(a) => Some(a.clone()),
            _ => None,
        };
        (Self::of(src, shared.clone()), Self::of(tgt, shared))
    }

    /// Whether a key index in the column's own collation serves its range predicates: its
    /// ranges compare in that collation (shared by both sides), or it orders by bytes.
    pub fn served_by_index(&self) -> bool {
        self.bytewise_own || self.shared.is_some()
    }

    /// The order of one column; `shared` when both sides range in the same collation.
    fn of(col: &crate::catalog::ColumnInfo, shared: Option<String>) -> Self {
        let bytewise_own = col.collation_sql.is_none() || col.collation_bytewise;
        let collate = match (&col.collation_sql, col.collation_bytewise, &shared) {
            (None, ..) => String::new(),
            (Some(own), true, _) => format!(" COLLATE {own}"),
            (Some(_), false, Some(_)) => String::new(),
            (Some(_), false, None) => " COLLATE pg_catalog.\"C\"".to_string(),
        };
        Self {
            bytewise_own,
            collate,
            shared: shared.filter(|_| !bytewise_own),
            label: col.collation_label.clone(),
        }
    }
}

/// Whether a collation identity pins its order: a library version, or a libc `C.*`
/// locale, which orders by code point and which PostgreSQL therefore does not version.
fn orders_provably(identity: &str) -> bool {
    if !identity.ends_with(" version none") {
        return true;
    }
    let mut words = identity.split(' ');
    words.next() == Some("libc") && words.next().is_some_and(|l| l.starts_with("C."))
}

impl TablePlan {
    /// The key columns.
    pub fn key(&self) -> &[PlannedColumn] {
        &self.columns[..self.key_len]
    }

    /// How this table's batch bounds order keys, as recorded with its layout: `bytes`,
    /// or `native` with the shared collation of each key column (see [`KeyOrder`]). A
    /// stored layout of another order selects other keys and is cut again.
    pub fn key_order(&self) -> String {
        if self.key().iter().all(|c| c.source_order.shared.is_none()) {
            return "bytes".to_string();
        }
        let columns: Vec<&str> = self
            .key()
            .iter()
            .map(|c| c.source_order.shared.as_deref().unwrap_or("bytes"))
            .collect();
        format!("native {}", columns.join("; "))
    }

    /// Whether batch bounds cut under each server's own key ordering (as shadan did before
    /// ranges compared bytes) select the same keys as byte-order ranges: true when every
    /// key column orders by bytes on both sides already.
    pub fn keys_order_by_bytes_natively(&self) -> bool {
        self.key()
            .iter()
            .all(|c| c.source_order.bytewise_own && c.target_order.bytewise_own)
    }

    /// Whether the source's key ranges compare in an order no index of the key serves
    /// (the two sides' collations differ, see [`KeyOrder`]): a range query then scans
    /// the table, so batches are read a stretch at a time, by one scan and a sort, not
    /// one scan each.
    pub fn source_ranges_scan(&self) -> bool {
        self.key().iter().any(|c| !c.source_order.served_by_index())
    }

    /// Whether the source is a view (or materialized view), whose key shadan checks as it
    /// reads ([`crate::key::KeyCheck`]).
    pub fn source_is_view(&self) -> bool {
        matches!(self.source_kind, 'v' | 'm')
    }

    /// Whether any column is copied only for owned rows.
    pub fn has_own_columns(&self) -> bool {
        self.columns.iter().any(|c| c.class == Class::Own)
    }

    /// Positions of the `own` columns in the projection (and in every tuple of it).
    pub fn own_positions(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.class == Class::Own)
            .map(|(i, _)| i)
            .collect()
    }
}

impl Plan {
    /// Checks `mapping` against both catalogs. Returns every problem at once, sorted, when
    /// anything is wrong; unexpected target columns alone do not fail the build (see
    /// [`Plan::require_exact_targets`]).
    pub fn build(
        mapping: &Mapping,
        source: &Catalog,
        target: &Catalog,
        purpose: Purpose,
    ) -> Result<Self, Problems> {
        let mut problems = Vec::new();
        let mut target_drift = Vec::new();
        let own_retailer = mapping.own_retailer.value.clone();
        if own_retailer.trim().is_empty() {
            problems.push(Problem::table(
                mapping.own_retailer.line,
                None,
                "`own_retailer` is empty; set it to the retailer code of the company that owns the target",
            ));
        }
        let source_access = match mapping
            .source_access
            .as_ref()
            .map(|l| (l.value.as_str(), l.line))
        {
            None | Some(("tables", _)) => SourceAccess::Tables,
            Some(("views", _)) => SourceAccess::Views,
            Some((other, line)) => {
                problems.push(Problem::table(
                    line,
                    None,
                    format!("unknown source_access `{other}`; use \"tables\" or \"views\""),
                ));
                SourceAccess::Tables
            }
        };

        let mut tables = Vec::new();
        let mut unexpected = Vec::new();
        let mut seen_sources: BTreeMap<QualifiedName, usize> = BTreeMap::new();
        let mut seen_targets: BTreeMap<QualifiedName, usize> = BTreeMap::new();
        for (index, mapped) in mapping.tables.iter().enumerate() {
            let checked = check::TableCheck {
                mapped,
                index,
                source,
                target,
                source_access,
                purpose,
                problems: &mut problems,
                tolerated: &mut target_drift,
            }
            .run();
            let Some((table, extra)) = checked else {
                continue;
            };
            if source_access == SourceAccess::Views {
                export_view::check(&table, &own_retailer, source, mapped.line, &mut problems);
            }
            if let Some(first) = seen_sources.insert(table.source.clone(), mapped.line) {
                problems.push(Problem::table(
                    mapped.source.line,
                    Some(&table.source.to_string()),
                    format!("the source table is mapped twice (first at line {first}); merge the entries"),
                ));
            }
            if let Some(first) = seen_targets.insert(table.target.clone(), mapped.line) {
                problems.push(Problem::table(
                    mapped.target.line,
                    Some(&table.target.to_string()),
                    format!("the target table is written by two entries (first at line {first}); map each target table once"),
                ));
            }
            unexpected.extend(extra);
            tables.push(table);
        }
        // What no order of writes can keep stops a writing command; verify only reads.
        let order_problems = match purpose {
            Purpose::Write => &mut problems,
            Purpose::Verify => &mut target_drift,
        };
        order::order(&mut tables, target, order_problems);
        if !problems.is_empty() {
            return Err(Problems::new(mapping.path.clone(), problems));
        }
        let mapped: BTreeSet<&QualifiedName> = tables.iter().map(|t| &t.source).collect();
        let unmapped_source_tables = source
            .tables
            .iter()
            .filter(|(name, info)| {
                !matches!(info.kind, 'v' | 'm')
                    && name.schema != EXPORT_SCHEMA
                    && !mapped.contains(name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Self {
            mapping_name: mapping.name.clone(),
            mapping_path: mapping.path.clone(),
            mapping_digest: mapping.digest.clone(),
            own_retailer,
            own_retailer_line: mapping.own_retailer.line,
            source_access,
            source_encoding: source.encoding.clone(),
            tables,
            unmapped_source_tables,
            target_drift,
            unexpected_target_columns: unexpected,
        })
    }

    /// Fails when a target table has a column the mapping does not produce: a command
    /// that writes must know every column it fills.
    pub fn require_exact_targets(&self) -> Result<(), Problems> {
        if self.unexpected_target_columns.is_empty() {
            return Ok(());
        }
        let list = self
            .unexpected_target_columns
            .iter()
            .map(|u| {
                Problem::column(
                    u.line,
                    &u.table.to_string(),
                    &u.column,
                    "the target column is not produced by any mapping entry; map a source column to it or drop it from the target",
                )
            })
            .collect();
        Err(Problems::new(self.mapping_path.clone(), list))
    }

    /// The relations the source queries read (tables or export views).
    pub fn source_relations(&self) -> Vec<QualifiedName> {
        self.tables.iter().map(TablePlan::source_relation).collect()
    }

    /// The mapped target tables.
    pub fn target_relations(&self) -> Vec<QualifiedName> {
        self.tables.iter().map(|t| t.target.clone()).collect()
    }

    /// Fails when a source table's columns (names, types, order) are no longer those the
    /// plan was checked against: a column renamed between `plan` and the run (a public
    /// and a non-public name swapped, say) must not be read under its old meaning.
    /// `catalog` is read inside the run's snapshot, after the tables were locked.
    pub fn require_unchanged_source(&self, catalog: &Catalog) -> Result<(), crate::error::Error> {
        for t in &self.tables {
            let now: Vec<(String, String)> = catalog
                .table(&t.source)
                .map(|info| {
                    info.columns
                        .iter()
                        .map(|c| (c.name.clone(), c.type_name.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if now != t.source_columns {
                return Err(crate::error::Error::Runtime(format!(
                    "the columns of the source table {} changed after the mapping was checked \
                     (a column was added, dropped, renamed or retyped); nothing was read: run \
                     `shadan plan` to review the mapping against the new definition",
                    t.source
                )));
            }
        }
        Ok(())
    }

    /// Selects the tables named with `--table` (by source or target name); all when empty.
    pub fn select_tables(&self, names: &[String]) -> Result<Vec<&TablePlan>, String> {
        if names.is_empty() {
            return Ok(self.tables.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.tables
                    .iter()
                    .find(|t| t.source.to_string() == *n || t.target.to_string() == *n)
                    .ok_or_else(|| {
                        format!("--table {n}: no mapped table has this source or target name")
                    })
            })
            .collect()
    }
}
