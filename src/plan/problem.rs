//! Validation problems: each names the mapping file, the line, the table and the column,
//! and says how to fix it. They are collected, not thrown, so a reviewer sees every
//! problem of a mapping in one run.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with the mapping against the two catalogs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// 1-based line in the mapping file.
    pub line: usize,
    /// The table the problem is about, in mapping notation.
    pub table: Option<String>,
    /// The column the problem is about.
    pub column: Option<String>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Problem {
    /// A problem about a whole table (or the mapping header when `table` is `None`).
    pub fn table(line: usize, table: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            line,
            table: table.map(str::to_string),
            column: None,
            message: message.into(),
        }
    }

    /// A problem about one column of a table.
    pub fn column(line: usize, table: &str, column: &str, message: impl Into<String>) -> Self {
        Self {
            line,
            table: Some(table.to_string()),
            column: Some(column.to_string()),
            message: message.into(),
        }
    }
}

/// Every problem found in one mapping, sorted by line; the error of plan validation.
#[derive(Debug, Clone)]
pub struct Problems {
    /// The mapping file the lines refer to.
    pub path: PathBuf,
    /// The problems, sorted and without duplicates.
    pub list: Vec<Problem>,
}

impl Problems {
    /// Sorts and de-duplicates the problems.
    pub fn new(path: PathBuf, mut list: Vec<Problem>) -> Self {
        list.sort();
        list.dedup();
        Self { path, list }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.table, &self.column) {
            (Some(t), Some(c)) => write!(f, "{t}.{c}: {}", self.message),
            (Some(t), None) => write!(f, "{t}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the mapping is invalid ({} problem{}); nothing was written:",
            self.list.len(),
            if self.list.len() == 1 { "" } else { "s" }
        )?;
        // One line per problem: names from a catalog cannot add or forge lines.
        for p in &self.list {
            let line = crate::ident::escape_controls(&p.to_string());
            write!(f, "\n  {}:{}: {line}", self.path.display(), p.line)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
