//! `shadan init`: where a mapping starts. Mapping 300 tables by hand, with nothing to
//! start from, is the biggest barrier to a real split, so the catalog writes the first
//! draft: every table with its key, every column `non_public` (fail closed: nothing
//! crosses until a reviewer classifies it), its type and comment beside it. Then
//! [`target_ddl`] writes the retail tables that exactly fit the classified projection.

pub mod target_ddl;

use std::fmt::Write as _;

use crate::catalog::{Catalog, TableInfo};
use crate::ident::escape_controls;
use crate::mapping::name::{toml_key, toml_string, QualifiedName};

/// Which source tables go into the skeleton.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these schemas (all user schemas when empty).
    pub schemas: Vec<String>,
    /// Only tables whose `schema.table` or `table` matches one of these patterns (`*`
    /// any run of characters, `?` one character); all when empty.
    pub tables: Vec<String>,
}

impl Selection {
    fn wants(&self, name: &QualifiedName) -> bool {
        let schema_ok = self.schemas.is_empty() || self.schemas.contains(&name.schema);
        let full = format!("{}.{}", name.schema, name.name);
        let table_ok = self.tables.is_empty()
            || self
                .tables
                .iter()
                .any(|p| glob(p, &full) || glob(p, &name.name));
        schema_ok && table_ok && name.schema != crate::plan::EXPORT_SCHEMA
    }
}

/// `*` and `?` matching over characters.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The key a mapping would name for `table`: its primary key, else a unique index on NOT
/// NULL columns, usable as a key; or why there is none.
fn usable_key(table: &TableInfo) -> Result<Vec<String>, String> {
    let candidates = table.unique_keys.iter().filter(|u| {
        u.can_be_key()
            && u.columns
                .iter()
                .all(|c| table.column(c).is_some_and(|c| c.not_null))
    });
    let Some(key) = candidates
        .clone()
        .find(|u| u.primary)
        .or_else(|| candidates.clone().next())
    else {
        return Err("no primary key or unique index on NOT NULL columns; add one to map it".into());
    };
    for name in &key.columns {
        if let Some(why) = table
            .column(name)
            .and_then(|c| crate::plan::key_column_problem(c, "source"))
        {
            return Err(why);
        }
    }
    Ok(key.columns.clone())
}

/// The mapping skeleton for the selected tables of `catalog` (a database named
/// `database`), as TOML text.
pub fn skeleton(catalog: &Catalog, database: &str, selection: &Selection) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# shadan mapping skeleton for the database {}, written by `shadan init`.\n\
         # Every column is \"non_public\": nothing crosses until a reviewer classifies it.\n\
         # Review it table by table: the target, the scope (with owner = \"<column holding the\n\
         # retailer code>\" for scope = \"own\" or \"own\" columns), and each column's class.\n\
         # Key columns must become \"public\". Then `shadan init --target-ddl --mapping FILE`\n\
         # writes the retail tables, and `shadan plan` checks the whole.\n\n\
         [mapping]\nname = {}\nown_retailer = \"CHANGE-ME\"   # the retail company's retailer code",
        escape_controls(database),
        toml_string(&format!("{database}-split")),
    );
    for (name, table) in catalog
        .tables
        .iter()
        .filter(|(n, t)| matches!(t.kind, 'r' | 'p') && selection.wants(n))
    {
        let key = match usable_key(table) {
            Ok(key) => key,
            Err(why) => {
                let _ = writeln!(
                    out,
                    "\n# {}: not mapped: {}",
                    escape_controls(&name.to_string()),
                    escape_controls(&why)
                );
                continue;
            }
        };
        let quoted = toml_string(&name.to_string());
        let keys: Vec<String> = key.iter().map(|k| toml_string(k)).collect();
        let _ = writeln!(
            out,
            "\n[[table]]\nsource = {quoted}\ntarget = {quoted}   # the retail table it fills\nkey = [{}]\n\
             scope = \"all\"   # or \"own\", with owner = \"<column holding the retailer code>\"\n\n[table.columns]",
            keys.join(", ")
        );
        let width = table
            .columns
            .iter()
            .map(|c| toml_key(&c.name).chars().count())
            .max()
            .unwrap_or(0);
        for col in &table.columns {
            let mut note = col.type_name.clone();
            if key.contains(&col.name) {
                note.push_str(", key");
            }
            if let Some(comment) = &col.comment {
                note.push_str("; ");
                note.push_str(comment);
            }
            let _ = writeln!(
                out,
                "{:<width$} = \"non_public\"   # {}",
                toml_key(&col.name),
                escape_controls(&note)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob("contract*", "contracts"));
        assert!(glob("joint.*", "joint.contracts"));
        assert!(glob("c?ntracts", "contracts"));
        assert!(glob("*", ""));
        assert!(!glob("contract", "contracts"));
        assert!(!glob("*.logs", "joint.contracts"));
        assert!(glob("*a*b*", "xxaxxbxx"));
    }
}
