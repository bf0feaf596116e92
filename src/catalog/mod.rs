//! Step 2 of the data path: what the two databases really contain.
//!
//! One catalog read per database gives every user table with its columns in order, exact
//! types with typmod, nullability, and its primary key and unique indexes. The plan checks
//! the mapping against these facts; nothing else in the tool reads `pg_catalog`.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::mapping::name::QualifiedName;

/// The user tables of one database, by qualified name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every table and view the connected role can see, outside the tool's own schema.
    pub tables: BTreeMap<QualifiedName, TableInfo>,
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
}

/// A primary key or plain unique index.
#[derive(Debug, Clone)]
pub struct UniqueKey {
    /// Whether this is the primary key.
    pub primary: bool,
    /// Column names in index order.
    pub columns: Vec<String>,
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
    /// `pg_type.typtype`: b base, c composite, d domain, e enum, p pseudo, r range, m multirange.
    pub type_kind: char,
    /// `pg_type.typcategory`: `S` string, `A` array, ...
    pub type_category: char,
    /// An array whose element type is user-defined (its binary form carries a local OID).
    pub element_user_defined: bool,
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
    pub async fn read(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let mut tables: BTreeMap<QualifiedName, TableInfo> = BTreeMap::new();
        for row in client.query(include_str!("columns.sql"), &[]).await? {
            let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let kind: String = row.get(2);
            let table = tables.entry(name).or_insert_with(|| TableInfo {
                kind: kind.chars().next().unwrap_or('r'),
                columns: Vec::new(),
                unique_keys: Vec::new(),
                comment: row.get(11),
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
            });
        }
        // Keys a cutover set aside while loading (see target::indexes) still define the
        // table: they are rebuilt before the cutover counts as done.
        let deferred_exists: bool = client
            .query_one(
                "SELECT pg_catalog.to_regclass('shadan.deferred_indexes') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        if deferred_exists {
            let deferred = client
                .query(
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
                    });
                }
            }
        }
        for row in client.query(include_str!("unique_keys.sql"), &[]).await? {
            let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            if let Some(table) = tables.get_mut(&name) {
                table.unique_keys.push(UniqueKey {
                    primary: row.get(2),
                    columns: row.get(3),
                });
            }
        }
        Ok(Self { tables })
    }

    /// Looks a table up by name.
    pub fn table(&self, name: &QualifiedName) -> Option<&TableInfo> {
        self.tables.get(name)
    }
}
