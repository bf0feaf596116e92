//! Step 2 of the data path: what the two databases really contain.
//!
//! One catalog read per database gives every user table with its columns in order, exact
//! types with typmod, nullability, and its primary key and unique indexes. The plan checks
//! the mapping against these facts. Elsewhere `pg_catalog` is read for what each step
//! needs of its own: the state schema's owner and the indexes and foreign keys a cutover
//! sets aside (`target/`), the snapshot's checks and the change horizon (`source/`), a
//! replacing batch's recheck (`sync/still_replaceable.sql`), table sizes (verify's
//! chunks, batch sampling) and the privilege audits (`grants/`, `verify/privileges.rs`).

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::mapping::name::QualifiedName;

/// The user tables of one database, by qualified name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every table and view the connected role can see, outside the tool's own schema.
    pub tables: BTreeMap<QualifiedName, TableInfo>,
    /// `server_encoding`: text keys compare byte by byte, so both sides must encode alike.
    pub encoding: String,
    /// The role the catalog was read as (`current_user`).
    pub current_user: String,
}

/// Whether [`Catalog::read`] may take key definitions from the tool's own state schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Add the keys a cutover set aside (`shadan.deferred_indexes`), when the schema is
    /// owned by the connected role: writing commands continue what a cutover started.
    Trusted,
    /// Read only the catalog: `verify` takes nothing from state an earlier run (or
    /// anyone else) wrote.
    Ignored,
}

/// One table (or view) as the catalog describes it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// `r` ordinary table, `p` partitioned table, `v` view.
    pub kind: char,
    /// Columns in attribute order.
    pub columns: Vec<ColumnInfo>,
    /// Unique keys: the primary key first (if any), then plain unique indexes.
    pub unique_keys: Vec<UniqueKey>,
    /// `COMMENT ON` text, if any (export views carry their mapping's digest there).
    pub comment: Option<String>,
    /// The role that owns the table or view.
    pub owner: String,
    /// The role that owns its schema.
    pub schema_owner: String,
    /// Its inheritance descendants (not partitions): a query on this table reads their
    /// rows too, and they may have columns of their own.
    pub inheritance_children: Vec<QualifiedName>,
    /// Enabled user triggers and non-SELECT rules (`trigger x`, `rule y`): they can
    /// change what a write does.
    pub write_hooks: Vec<String>,
    /// Its foreign keys (this table referencing another).
    pub foreign_keys: Vec<ForeignKey>,
    /// Whether every foreign key that references this table, from any table, is NO ACTION
    /// on delete and on update: then a row deleted and inserted again within one statement
    /// is, to them, a row updated.
    pub replaceable: bool,
    /// For a view of the export schema: the relations it reads.
    pub view_reads: Vec<QualifiedName>,
}

/// A foreign key of a table.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    /// The constraint's name.
    pub name: String,
    /// The referenced table.
    pub parent: QualifiedName,
    /// `pg_get_constraintdef`: how to recreate it (`FOREIGN KEY (...) REFERENCES ...`).
    pub definition: String,
    /// The parent's columns it references, in order.
    pub parent_columns: Vec<String>,
    /// Its own columns, in the same order.
    pub columns: Vec<String>,
    /// Whether it acts on its own when a parent row is deleted or its key updated
    /// (CASCADE, SET NULL, SET DEFAULT): then it changes rows sync does not write.
    pub acts: bool,
}

/// A primary key or unique index (valid and ready).
#[derive(Debug, Clone)]
pub struct UniqueKey {
    /// Whether this is the primary key.
    pub primary: bool,
    /// Column names in index order (empty names for expression columns).
    pub columns: Vec<String>,
    /// Checked immediately (not DEFERRABLE): only such an index can serve ON CONFLICT.
    pub immediate: bool,
    /// No expression and no predicate.
    pub plain: bool,
    /// Every column compared under a deterministic collation.
    pub exact: bool,
    /// An exclusion constraint rather than a unique index.
    pub exclusion: bool,
}

impl UniqueKey {
    /// Whether a mapping key may be this index: a plain, immediate, exact unique index.
    pub fn can_be_key(&self) -> bool {
        self.plain && self.immediate && self.exact && !self.exclusion
    }
}

/// One column as the catalog describes it.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// Column name exactly as stored.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`: the exact type, typmod included, as valid SQL.
    pub type_name: String,
    /// The type's OID in this database.
    pub type_oid: u32,
    /// `NOT NULL` constraint.
    pub not_null: bool,
    /// A generated column (cannot be written by COPY).
    pub generated: bool,
    /// `GENERATED ALWAYS AS IDENTITY`: an upsert cannot update it.
    pub identity_always: bool,
    /// `COMMENT ON COLUMN` text, for `shadan init` to show a reviewer.
    pub comment: Option<String>,
    /// `pg_type.typtype`: b base, c composite, d domain, e enum, p pseudo, r range, m multirange.
    pub type_kind: char,
    /// `pg_type.typcategory`: `S` string, `A` array, ...
    pub type_category: char,
    /// An array whose element type is user-defined (its binary form carries a local OID).
    pub element_user_defined: bool,
    /// The type's qualified name without typmod (`pg_catalog.bpchar`), for casting bound
    /// values: a typmod cast would silently cut an over-long value down to a real one.
    /// (`format_type(oid, NULL)` would not do: it says `character`, which is char(1).)
    pub base_type_name: String,
    /// The OID of the type that holds the value: the domain's base type for a domain.
    pub representation_oid: u32,
    /// The typmod of that type (`-1` when none).
    pub representation_typmod: i32,
    /// The column's collation as qualified SQL (`pg_catalog."C"`), for collatable types.
    pub collation_sql: Option<String>,
    /// The collation for people: `default (libc C)`, `de (icu de-DE)`.
    pub collation_label: Option<String>,
    /// Whether equality under the collation is byte equality.
    pub collation_deterministic: bool,
    /// Whether the collation orders by bytes (C or POSIX), so ranges under it mean the
    /// same on every server.
    pub collation_bytewise: bool,
    /// Provider, locale and actual library version of a deterministic collation
    /// (`icu ja-JP version 153.120.42`, `libc C.UTF-8 version none`): columns with the same
    /// identity on two servers order text alike.
    pub collation_identity: Option<String>,
    /// The type that holds the value, typmod included (`numeric(12,0)` for a domain
    /// over it): what a domain of the same name must hold on the other side too.
    pub representation_name: String,
}

impl ColumnInfo {
    /// Why this column's binary COPY form cannot be moved between two databases unchanged,
    /// if it cannot: composite values and arrays of user-defined types embed type OIDs that
    /// differ from one database to the other.
    pub fn pass_through_problem(&self) -> Option<&'static str> {
        if self.type_kind == 'c' {
            Some("composite types embed database-local type OIDs in their binary form; expose the fields as separate columns")
        } else if self.element_user_defined {
            Some("arrays of user-defined types embed database-local type OIDs in their binary form; use an array of a built-in type")
        } else {
            None
        }
    }

    /// Whether the column holds text that a leaked value could be hidden in.
    pub fn is_text(&self) -> bool {
        self.type_category == 'S'
    }
}

impl TableInfo {
    /// Looks a column up by its exact name.
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

impl Catalog {
    /// Reads the catalog of the database `client` is connected to.
    pub async fn read(client: &Client, state: State) -> Result<Self, tokio_postgres::Error> {
        // Every query at once: the driver pipelines them on the one connection, so the
        // catalog costs about one round trip, not one (or two) per query.
        let (columns, deferred_exists, unique_keys, inheritance, view_reads, hooks, fks, session) = tokio::try_join!(
            client.query_typed(include_str!("columns.sql"), &[]),
            client.query_typed_one(
                "SELECT pg_catalog.to_regclass('shadan.deferred_indexes') IS NOT NULL \
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n \
                                WHERE n.nspname OPERATOR(pg_catalog.=) 'shadan' \
                                  AND n.nspowner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r \
                                      WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER))",
                &[],
            ),
            client.query_typed(include_str!("unique_keys.sql"), &[]),
            client.query_typed(include_str!("inheritance.sql"), &[]),
            client.query_typed(include_str!("view_reads.sql"), &[]),
            client.query_typed(include_str!("write_hooks.sql"), &[]),
            client.query_typed(include_str!("foreign_keys.sql"), &[]),
            client.query_typed_one(
                "SELECT pg_catalog.current_setting('server_encoding'), CURRENT_USER::pg_catalog.text",
                &[],
            ),
        )?;
        let deferred_exists: bool = deferred_exists.get(0);
        let mut tables: BTreeMap<QualifiedName, TableInfo> = BTreeMap::new();
        for row in columns {
            let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let kind: String = row.get(2);
            let table = tables.entry(name).or_insert_with(|| TableInfo {
                kind: kind.chars().next().unwrap_or('r'),
                columns: Vec::new(),
                unique_keys: Vec::new(),
                comment: row.get(11),
                owner: row.get(19),
                schema_owner: row.get(20),
                inheritance_children: Vec::new(),
                view_reads: Vec::new(),
                write_hooks: Vec::new(),
                foreign_keys: Vec::new(),
                replaceable: true,
            });
            let type_kind: String = row.get(8);
            let type_category: String = row.get(9);
            table.columns.push(ColumnInfo {
                name: row.get(3),
                type_name: row.get(4),
                type_oid: row.get(5),
                not_null: row.get(6),
                generated: row.get(7),
                type_kind: type_kind.chars().next().unwrap_or('b'),
                type_category: type_category.chars().next().unwrap_or('U'),
                element_user_defined: row.get(10),
                base_type_name: row.get(12),
                representation_oid: row.get(13),
                representation_typmod: row.get(14),
                collation_sql: row.get(15),
                collation_label: row.get(16),
                collation_deterministic: row.get(17),
                collation_bytewise: row.get(18),
                identity_always: row.get(21),
                comment: row.get(22),
                collation_identity: row.get(23),
                representation_name: row.get(24),
            });
        }
        // Keys a cutover set aside while loading (see target::indexes) still define the
        // table: they are rebuilt before the cutover counts as done. Taken only from a
        // state schema the role owns, and never for verify.
        if deferred_exists && state == State::Trusted {
            let deferred = client
                .query_typed(
                    "SELECT target_table, unique_columns FROM shadan.deferred_indexes WHERE unique_columns IS NOT NULL",
                    &[],
                )
                .await?;
            for row in deferred {
                let (name, columns): (String, Vec<String>) = (row.get(0), row.get(1));
                if let Some(table) = QualifiedName::parse(&name)
                    .ok()
                    .and_then(|n| tables.get_mut(&n))
                {
                    table.unique_keys.push(UniqueKey {
                        primary: false,
                        columns,
                        immediate: true,
                        plain: true,
                        exact: true,
                        exclusion: false,
                    });
                }
            }
        }
        for row in unique_keys {
            let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let columns: Vec<Option<String>> = row.get(3);
            let key = UniqueKey {
                primary: row.get(2),
                columns: columns.into_iter().map(Option::unwrap_or_default).collect(),
                immediate: row.get(4),
                plain: row.get(5),
                exact: row.get(6),
                exclusion: row.get(7),
            };
            // An index of one partition alone holds on the partitioned table like a
            // partial index: never its key, but one sync must keep.
            let root: (Option<String>, Option<String>) = (row.get(8), row.get(9));
            if let (Some(schema), Some(root)) = root {
                if let Some(table) = tables.get_mut(&QualifiedName::new(schema, root)) {
                    table.unique_keys.push(UniqueKey {
                        primary: false,
                        plain: false,
                        ..key.clone()
                    });
                }
            }
            if let Some(table) = tables.get_mut(&name) {
                table.unique_keys.push(key);
            }
        }
        for row in inheritance {
            let parent = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let child = QualifiedName::new(row.get::<_, String>(2), row.get::<_, String>(3));
            if let Some(table) = tables.get_mut(&parent) {
                table.inheritance_children.push(child);
            }
        }
        for row in view_reads {
            let view = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let reads = QualifiedName::new(row.get::<_, String>(2), row.get::<_, String>(3));
            if let Some(v) = tables.get_mut(&view) {
                v.view_reads.push(reads);
            }
        }
        for row in hooks {
            let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            if let Some(table) = tables.get_mut(&name) {
                table.write_hooks.push(row.get(2));
            }
        }
        for row in fks {
            let child = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let actions = [row.get::<_, String>(6), row.get::<_, String>(7)];
            let fk = ForeignKey {
                parent: QualifiedName::new(row.get::<_, String>(2), row.get::<_, String>(3)),
                name: row.get(4),
                definition: row.get(5),
                acts: actions
                    .iter()
                    .any(|a| matches!(a.as_str(), "c" | "n" | "d")),
                parent_columns: row.get(8),
                columns: row.get(9),
            };
            // NO ACTION is checked once a statement is done: a parent row deleted and
            // inserted again within one keeps it. (The referencing table need not be
            // one the role can see, and it may reference one partition of a mapped table:
            // the partition's ancestors are written through too.)
            let no_action = actions.iter().all(|a| a == "a");
            let (schemas, names): (Vec<String>, Vec<String>) = (row.get(10), row.get(11));
            let ancestors = schemas
                .into_iter()
                .zip(names)
                .map(|(schema, name)| QualifiedName::new(schema, name));
            for referenced in std::iter::once(fk.parent.clone()).chain(ancestors) {
                if let Some(referenced) = tables.get_mut(&referenced) {
                    referenced.replaceable &= no_action;
                }
            }
            if let Some(table) = tables.get_mut(&child) {
                table.foreign_keys.push(fk);
            }
        }
        Ok(Self {
            tables,
            encoding: session.get(0),
            current_user: session.get(1),
        })
    }

    /// Looks a table up by name.
    pub fn table(&self, name: &QualifiedName) -> Option<&TableInfo> {
        self.tables.get(name)
    }
}
