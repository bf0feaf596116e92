//! The verify report: per table counts, sample keys and both digests; leaks by kind. It
//! names tables, columns, counts and keys, never a value. Printed as the contract's JSON
//! object, or for a person as one line per table and a verdict.

use std::fmt::Write as _;

use serde::Serialize;

use crate::error::{EXIT_DIFFERENCES, EXIT_LEAK, EXIT_OK, EXIT_USAGE};
use crate::ident::escape_controls;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No difference and no leak.
    pub verified: bool,
    /// One entry per mapped table.
    pub tables: Vec<TableReport>,
    /// Every leak found, by kind.
    pub leaks: Vec<Leak>,
    /// Set when a check that was asked for could not run (why); the report is then not
    /// a proof, and exits 2 unless it found a leak or a difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// Whether the `--deep` value search ran (the verdict says what was checked).
    #[serde(skip)]
    pub deep: bool,
    /// What the report was made from, so that it can be filed and checked later: the
    /// mapping's blake3, the tool's version, the head of the target's run chain, each
    /// server's identity (never a password) and the time.
    #[serde(flatten)]
    pub provenance: serde_json::Map<String, serde_json::Value>,
    /// Source columns the role could read that the mapping does not need (they do not
    /// change the exit code; see [`super::privileges`]).
    pub excess_privileges: Vec<super::privileges::ExcessPrivilege>,
}

/// Content comparison of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// The target table.
    pub target: String,
    /// Rows in the source projection.
    pub source_rows: u64,
    /// Rows in the target table.
    pub target_rows: u64,
    /// Projection rows missing from the target.
    pub missing: u64,
    /// Target rows not in the projection.
    pub extra: u64,
    /// Rows on both sides with different values.
    pub changed: u64,
    /// Up to 10 keys of differing rows, as JSON arrays.
    pub sample_keys: Vec<String>,
    /// Digest of the source projection, under this run's random key: equal to
    /// `target_digest` when the sides agree, different on every run.
    pub source_digest: String,
    /// Digest of the target table's mapped columns, under the same key.
    pub target_digest: String,
}

/// What kind of leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// A target column the mapping does not produce.
    Column,
    /// An `own` column holding a value in a row the source does not own.
    OwnValue,
    /// A target row whose source row is outside the scope or `only` filter.
    OutOfScope,
    /// A value of a non-public source field found in a target text column (`--deep`).
    Value,
}

/// One leak finding.
#[derive(Debug, Clone, Serialize)]
pub struct Leak {
    /// Kind.
    pub kind: LeakKind,
    /// The target table.
    pub table: String,
    /// The target column, where the leak is in one.
    pub column: Option<String>,
    /// Rows (or values) found.
    pub count: u64,
    /// Up to 10 keys, as JSON arrays.
    pub sample_keys: Vec<String>,
}

impl TableReport {
    /// Whether this table differs from the projection.
    pub fn differs(&self) -> bool {
        self.missing + self.extra + self.changed > 0 || self.source_digest != self.target_digest
    }
}

impl Report {
    /// Builds a report; `verified` follows from the contents.
    pub fn new(tables: Vec<TableReport>, leaks: Vec<Leak>) -> Self {
        let verified = leaks.is_empty() && !tables.iter().any(TableReport::differs);
        Self {
            verified,
            tables,
            leaks,
            incomplete: None,
            deep: false,
            provenance: serde_json::Map::new(),
            excess_privileges: Vec::new(),
        }
    }

    /// Marks the report as not a proof: a requested check could not run.
    pub fn mark_incomplete(&mut self, why: String) {
        self.verified = false;
        self.incomplete = Some(match self.incomplete.take() {
            Some(earlier) => format!("{earlier}; {why}"),
            None => why,
        });
    }

    /// 0 verified, 3 content differs, 4 leak (wins over 3, in every mode), 2 when a
    /// requested check could not run and nothing else was found.
    pub fn exit_code(&self) -> u8 {
        if !self.leaks.is_empty() {
            EXIT_LEAK
        } else if self.tables.iter().any(TableReport::differs) {
            EXIT_DIFFERENCES
        } else if self.incomplete.is_some() {
            EXIT_USAGE
        } else {
            EXIT_OK
        }
    }

    /// The report for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let width = self
            .tables
            .iter()
            .map(|t| t.target.len())
            .max()
            .unwrap_or(0)
            .max(5);
        for t in &self.tables {
            let state = if t.differs() {
                format!(
                    "DIFFERS missing {} extra {} changed {}  keys {}",
                    t.missing,
                    t.extra,
                    t.changed,
                    t.sample_keys.join(" ")
                )
            } else {
                format!("equal  blake3 {}", &t.target_digest[..16])
            };
            let _ = writeln!(
                out,
                "{:<width$}  source {:>10}  target {:>10}  {state}",
                escape_controls(&t.target),
                t.source_rows,
                t.target_rows
            );
        }
        for l in &self.leaks {
            let place = escape_controls(&match &l.column {
                Some(c) => format!("{}.{c}", l.table),
                None => l.table.clone(),
            });
            let what = match l.kind {
                LeakKind::Column => {
                    "the target has a column the mapping does not produce".to_string()
                }
                LeakKind::OwnValue => format!(
                    "{} row(s) not owned by the own retailer hold a value",
                    l.count
                ),
                LeakKind::OutOfScope => {
                    format!("{} row(s) whose source row is outside the scope", l.count)
                }
                LeakKind::Value => {
                    format!("{} value(s) of non-public source fields found", l.count)
                }
            };
            let kind = serde_json::to_value(l.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let keys = if l.sample_keys.is_empty() {
                String::new()
            } else {
                format!("; keys {}", l.sample_keys.join(" "))
            };
            let _ = writeln!(out, "LEAK {kind:<12} {place}: {what}{keys}");
        }
        let verdict = match self.exit_code() {
            EXIT_LEAK => "LEAK: non-public data reached the target (exit 4)",
            EXIT_DIFFERENCES => {
                "DIFFERENT: the target does not equal the permitted projection (exit 3)"
            }
            EXIT_USAGE => "INCOMPLETE: a requested check could not run (exit 2)",
            _ if self.deep => "VERIFIED: every mapped table equals the permitted projection (blake3 of every row); \
                 no unmapped column, no own value in a row not owned, no row outside the scope, and no \
                 non-public text value (6+ characters, whole or as a token) in any text, json, array or bytea column",
            _ => "VERIFIED: every mapped table equals the permitted projection (blake3 of every row); \
                 no unmapped column, no own value in a row not owned, no row outside the scope \
                 (non-public values copied into other columns: run with --deep)",
        };
        for p in &self.excess_privileges {
            let place = if p.table.is_empty() {
                "everything".to_string()
            } else {
                format!("{}.{}", p.table, crate::ident::quote_ident(&p.column))
            };
            let _ = writeln!(
                out,
                "PRIVILEGE role {} can read {}: {}",
                escape_controls(&p.role),
                escape_controls(&place),
                p.fix
            );
        }
        if let Some(why) = &self.incomplete {
            let _ = writeln!(out, "not checked: {why}");
        }
        let _ = writeln!(out, "{verdict}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(missing: u64) -> TableReport {
        TableReport {
            target: "r.t".into(),
            source_rows: 10,
            target_rows: 10 - missing,
            missing,
            extra: 0,
            changed: 0,
            sample_keys: Vec::new(),
            source_digest: "a".into(),
            target_digest: if missing == 0 { "a" } else { "b" }.into(),
        }
    }

    fn leak() -> Leak {
        Leak {
            kind: LeakKind::Column,
            table: "r.t".into(),
            column: Some("secret".into()),
            count: 1,
            sample_keys: Vec::new(),
        }
    }

    #[test]
    fn a_leak_outranks_differences_and_an_unfinished_check_speaks_only_alone() {
        let code = |tables: Vec<TableReport>, leaks: Vec<Leak>, incomplete: bool| {
            let mut report = Report::new(tables, leaks);
            if incomplete {
                report.mark_incomplete("--deep could not run".into());
            }
            report.exit_code()
        };
        assert_eq!(code(vec![table(0)], vec![], false), EXIT_OK);
        assert_eq!(code(vec![table(1)], vec![], false), EXIT_DIFFERENCES);
        assert_eq!(code(vec![table(0)], vec![leak()], false), EXIT_LEAK);
        assert_eq!(code(vec![table(1)], vec![leak()], false), EXIT_LEAK);
        assert_eq!(code(vec![table(1)], vec![leak()], true), EXIT_LEAK);
        assert_eq!(code(vec![table(1)], vec![], true), EXIT_DIFFERENCES);
        assert_eq!(code(vec![table(0)], vec![], true), EXIT_USAGE);
        let report = Report::new(vec![table(0)], vec![]);
        assert!(report.verified);
    }
}
