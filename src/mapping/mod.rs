//! Step 1 of the data path: the mapping file, parsed but not yet trusted.
//!
//! This module turns TOML into located values (every item keeps its line) and checks only
//! the file's shape. Whether the mapping makes sense against the two databases is decided
//! in [`crate::plan`], which is the only consumer of [`Mapping`]: nothing past the plan
//! sees a raw mapping.

pub mod name;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// A value from the mapping file with the line it was written on, so that every problem
/// can point the reviewer at the exact place to fix.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The value as written.
    pub value: T,
    /// 1-based line in the mapping file.
    pub line: usize,
}

/// A parsed mapping file, still unchecked against any catalog.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Where the file was read from, for messages.
    pub path: PathBuf,
    /// blake3 of the file's bytes, recorded in every manifest so a run names the exact
    /// reviewed mapping it applied.
    pub digest: String,
    /// `[mapping] name`.
    pub name: String,
    /// Retailer code of the company that owns the target database.
    pub own_retailer: Located<String>,
    /// How the tool reads the source: raw tables or `shadan_export` views.
    pub source_access: Option<Located<String>>,
    /// The `[[table]]` entries in file order.
    pub tables: Vec<MappedTable>,
}

/// One `[[table]]` entry.
#[derive(Debug, Clone)]
pub struct MappedTable {
    /// Line of the `[[table]]` header.
    pub line: usize,
    /// `source = "schema.table"` as written.
    pub source: Located<String>,
    /// `target = "schema.table"` as written.
    pub target: Located<String>,
    /// Primary key columns, in key order.
    pub key: Vec<Located<String>>,
    /// `scope = "all" | "own"` as written.
    pub scope: Located<String>,
    /// Owner column, when given.
    pub owner: Option<Located<String>>,
    /// `only` filters: column -> allowed values (as text; bound as parameters later).
    pub only: Vec<(Located<String>, Vec<String>)>,
    /// Column classifications keyed by source column name, sorted by name.
    pub columns: Vec<MappedColumn>,
}

/// One entry of `[table.columns]`.
#[derive(Debug, Clone)]
pub struct MappedColumn {
    /// The line the entry is written on.
    pub line: usize,
    /// Source column name, exactly as in the catalog.
    pub source: String,
    /// Class as written (`public`, `own`, `non_public`); checked by the plan.
    pub class: String,
    /// `to = "..."` rename in the target, when given.
    pub to: Option<String>,
    /// Shape problems of this entry (for example an unknown key in the inline table).
    pub shape_problems: Vec<String>,
}

/// Reading or parsing the mapping file failed before any semantic check could run.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("cannot read mapping file {path}: {source}; check the --mapping path")]
    Read {
        /// The path given with `--mapping`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the mapping's shape.
    #[error("{path}:{line}: {message}; see the mapping format in the README")]
    Syntax {
        /// The path given with `--mapping`.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What the TOML parser reported.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    mapping: RawHeader,
    #[serde(default)]
    table: Vec<Spanned<RawTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    own_retailer: Spanned<String>,
    #[serde(default)]
    source_access: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    source: Spanned<String>,
    target: Spanned<String>,
    key: Vec<Spanned<String>>,
    scope: Spanned<String>,
    #[serde(default)]
    owner: Option<Spanned<String>>,
    #[serde(default)]
    only: BTreeMap<Spanned<String>, Vec<toml::Value>>,
    columns: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

impl Mapping {
    /// Reads and parses a mapping file.
    pub fn load(path: &Path) -> Result<Self, MappingError> {
        let bytes = std::fs::read(path).map_err(|source| MappingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes.clone()).map_err(|_| MappingError::Syntax {
            path: path.to_path_buf(),
            line: 1,
            message: "the file is not UTF-8".into(),
        })?;
        let mut mapping = Self::parse(&text, path)?;
        mapping.digest = blake3::hash(&bytes).to_hex().to_string();
        Ok(mapping)
    }

    /// Parses mapping text; `path` is used only in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, MappingError> {
        let lines = LineIndex::new(text);
        let raw: RawFile = toml::from_str(text).map_err(|e| MappingError::Syntax {
            path: path.to_path_buf(),
            line: e.span().map(|s| lines.line(s.start)).unwrap_or(1),
            message: e.message().trim().to_string(),
        })?;
        let at = |s: Spanned<String>| Located {
            line: lines.line(s.span().start),
            value: s.into_inner(),
        };
        let tables = raw
            .table
            .into_iter()
            .map(|spanned| {
                let line = lines.line(spanned.span().start);
                let t = spanned.into_inner();
                MappedTable {
                    line,
                    source: at(t.source),
                    target: at(t.target),
                    key: t.key.into_iter().map(at).collect(),
                    scope: at(t.scope),
                    owner: t.owner.map(at),
                    only: t
                        .only
                        .into_iter()
                        .map(|(col, values)| (at(col), values.iter().map(value_text).collect()))
                        .collect(),
                    columns: t
                        .columns
                        .into_iter()
                        .map(|(name, spec)| column(&lines, name, spec))
                        .collect(),
                }
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
            name: raw.mapping.name,
            own_retailer: at(raw.mapping.own_retailer),
            source_access: raw.mapping.source_access.map(at),
            tables,
        })
    }
}

/// Interprets one `[table.columns]` entry: either `"class"` or `{ class = "...", to = "..." }`.
fn column(lines: &LineIndex, name: Spanned<String>, spec: Spanned<toml::Value>) -> MappedColumn {
    let line = lines.line(name.span().start);
    let source = name.into_inner();
    let mut shape_problems = Vec::new();
    let (class, to) = match spec.into_inner() {
        toml::Value::String(class) => (class, None),
        toml::Value::Table(table) => {
            let mut class = String::new();
            let mut to = None;
            for (key, value) in table {
                match (key.as_str(), value) {
                    ("class", toml::Value::String(c)) => class = c,
                    ("to", toml::Value::String(t)) => to = Some(t),
                    ("class" | "to", _) => shape_problems.push(format!("`{key}` must be a string")),
                    (other, _) => shape_problems.push(format!(
                        "unknown key `{other}` in the column entry; allowed: `class`, `to`"
                    )),
                }
            }
            if class.is_empty() && shape_problems.is_empty() {
                shape_problems.push("the entry has no `class`".into());
            }
            (class, to)
        }
        _ => {
            shape_problems.push(
                "write a class string (\"public\") or { class = \"...\", to = \"...\" }".into(),
            );
            (String::new(), None)
        }
    };
    MappedColumn {
        line,
        source,
        class,
        to,
        shape_problems,
    }
}

/// The text a TOML scalar is bound as in an `only` filter.
fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[mapping]
name = "t"
own_retailer = "R0001"

[[table]]
source = "joint.contracts"
target = "retail.contracts"
key = ["contract_id"]
scope = "own"
owner = "retailer_code"
only = { supply_kind = ["retail"], n = [1] }

[table.columns]
contract_id = "public"
phone = { class = "own", to = "phone_number" }
odd = { class = "own", colour = "red" }
"#;

    #[test]
    fn entries_keep_their_lines() {
        let m = Mapping::parse(GOOD, Path::new("m.toml")).unwrap();
        let t = &m.tables[0];
        assert_eq!(t.line, 6);
        assert_eq!(t.source.line, 7);
        assert_eq!(t.owner.as_ref().unwrap().line, 11);
        let phone = t.columns.iter().find(|c| c.source == "phone").unwrap();
        assert_eq!(phone.line, 16);
        assert_eq!(phone.to.as_deref(), Some("phone_number"));
        assert_eq!(t.only[0].1, vec!["1".to_string()]);
        let odd = t.columns.iter().find(|c| c.source == "odd").unwrap();
        assert_eq!(odd.shape_problems.len(), 1);
    }

    #[test]
    fn unknown_table_key_names_line_and_key() {
        let text = GOOD.replace("scope = \"own\"", "scope = \"own\"\nkee = 1");
        let err = Mapping::parse(&text, Path::new("m.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("m.toml:11"), "{msg}");
        assert!(msg.contains("kee"), "{msg}");
    }
}
