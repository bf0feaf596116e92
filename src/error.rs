//! The tool's top-level error and the exit-code policy of the contract:
//! `0` success, `1` runtime error, `2` usage error or invalid mapping (nothing written),
//! `3` verify found content differences (and `history --check` a broken chain), `4` verify
//! found a leak.

use std::fmt;
use std::process::ExitCode;

use crate::connect::ConnectError;
use crate::mapping::MappingError;
use crate::plan::Problems;

/// Exit code: success, or verified.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime error (server unreachable, connection lost, lock held, ...).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: a usage error or an invalid mapping; nothing was written.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: verify found content differences, or `history --check` a broken chain.
pub const EXIT_DIFFERENCES: u8 = 3;
/// Exit code: verify found a leak (wins over differences).
pub const EXIT_LEAK: u8 = 4;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mapping file could not be read or parsed.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The mapping does not fit the catalogs.
    #[error(transparent)]
    Invalid(#[from] Problems),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A database could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A statement failed on one of the databases.
    #[error("{context}: {cause}")]
    Database {
        /// What the tool was doing, naming table and batch where it applies.
        context: String,
        /// The server's message, without row values.
        cause: DbError,
    },
    /// The run could not go on (lock held, data malformed, ...).
    #[error("{0}")]
    Runtime(String),
    /// Stopped by a signal between batches; committed batches are kept.
    #[error("interrupted; every committed batch is kept: run the same command again to continue (cutover with --resume)")]
    Interrupted,
}

impl Error {
    /// The exit code the contract assigns to this error.
    pub fn code(&self) -> u8 {
        match self {
            Error::Mapping(_) | Error::Invalid(_) | Error::Usage(_) => EXIT_USAGE,
            Error::Connect(_) | Error::Database { .. } | Error::Runtime(_) | Error::Interrupted => {
                EXIT_RUNTIME
            }
        }
    }

    /// Whether running the command again may succeed: a connection lost or refused, a
    /// server restarting, a serialization failure ([`DbError::transient`]). Never a usage
    /// error, an invalid mapping, a stop asked for, or a run that could not go on for a
    /// reason of its own.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database { cause, .. } => cause.transient(),
            Error::Connect(ConnectError::Unreachable { cause, .. }) => cause.transient(),
            _ => false,
        }
    }

    /// Whether the server refused a write for an integrity constraint (SQLSTATE class 23:
    /// unique, exclusion, foreign key, check, not null).
    pub fn is_constraint(&self) -> bool {
        self.sqlstate().is_some_and(|c| c.starts_with("23"))
    }

    /// The SQLSTATE the server sent, when this is a server's error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database { cause, .. } => cause.code.as_deref(),
            _ => None,
        }
    }

    /// [`Error::code`] as a process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// Wraps a database error with what the tool was doing. Pass a closure by reference
    /// (`Error::db(&reading)`) in loops: it is only called when an error happens.
    pub fn db(context: impl Context) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |e| Error::Database {
            context: context.describe(),
            cause: DbError::from(e),
        }
    }
}

/// What a statement was doing, for an error message; described only when needed.
pub trait Context {
    /// The description.
    fn describe(self) -> String;
}

impl Context for &str {
    fn describe(self) -> String {
        self.to_string()
    }
}

impl Context for String {
    fn describe(self) -> String {
        self
    }
}

impl<F: Fn() -> String> Context for &F {
    fn describe(self) -> String {
        self()
    }
}

/// A database error reduced to what is safe to print: severity, message and SQLSTATE.
/// PostgreSQL's DETAIL and CONTEXT fields can quote row values (a failing COPY line,
/// a failing row), so they are dropped here, before any message is formed. Messages of
/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation) can quote
/// values too (`invalid input syntax for type integer: "..."`, a character that has no
/// equivalent in the client encoding): for those only the condition's name is kept.
#[derive(Debug, Clone)]
pub struct DbError {
    text: String,
    /// The SQLSTATE, when the server sent one.
    pub code: Option<String>,
    /// Whether the failure may pass by itself (see [`DbError::transient`]).
    transient: bool,
}

impl DbError {
    /// Whether running again may succeed: the connection was lost (closed, reset, refused
    /// while a server restarts) or the server ended the session or transaction for a
    /// reason of its own (SQLSTATE class 08, 57P01-57P03 shutdown or start-up, 40001
    /// serialization failure, 40P01 deadlock). Not a refused login, a missing privilege or
    /// bad data.
    pub fn transient(&self) -> bool {
        self.transient
    }

    /// A failure that is not the server's (the connection pool's own), from its text.
    pub fn other(text: &str) -> Self {
        Self {
            text: text.to_string(),
            code: None,
            transient: false,
        }
    }
}

#[cfg(test)]
impl DbError {
    /// A lost connection, for tests of the retry policy.
    pub fn test_transient() -> Self {
        Self {
            text: "connection closed".into(),
            code: None,
            transient: true,
        }
    }
}

/// Whether a SQLSTATE names a condition that may pass by itself.
fn transient_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let text = match value_bearing_condition(code) {
                Some(condition) => format!("{}: {condition} (message withheld: it may quote a value)", db.severity()),
                None if code == "42501" && db.message().contains("row-level security") => format!(
                    "{}: {}; row security is off for shadan's sessions so that no policy can hide rows: \
                     give the role BYPASSRLS, or connect as the table's owner",
                    db.severity(),
                    db.message()
                ),
                None => format!("{}: {}", db.severity(), db.message()),
            };
            return Self {
                text,
                code: Some(code.to_string()),
                transient: transient_code(code),
            };
        }
        let mut text = e.to_string();
        let mut transient = e.is_closed();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            transient |= s.is::<std::io::Error>();
            source = s.source();
        }
        Self {
            text,
            code: None,
            transient,
        }
    }
}

/// The condition name of a SQLSTATE whose message may quote a value (classes 22 and 23),
/// or `None` for other classes, whose messages are safe to print.
fn value_bearing_condition(code: &str) -> Option<&'static str> {
    const NAMED: &[(&str, &str)] = &[
        ("22001", "string_data_right_truncation"),
        ("22003", "numeric_value_out_of_range"),
        ("22007", "invalid_datetime_format"),
        ("22008", "datetime_field_overflow"),
        ("22012", "division_by_zero"),
        ("22021", "character_not_in_repertoire"),
        ("22P02", "invalid_text_representation"),
        ("22P05", "untranslatable_character"),
        ("22023", "invalid_parameter_value"),
        ("23502", "not_null_violation"),
        ("23503", "foreign_key_violation"),
        ("23505", "unique_violation"),
        ("23514", "check_violation"),
        ("23P01", "exclusion_violation"),
    ];
    if let Some((_, name)) = NAMED.iter().find(|(c, _)| *c == code) {
        return Some(name);
    }
    if code.starts_with("22") {
        Some("data_exception")
    } else if code.starts_with("23") {
        Some("integrity_constraint_violation")
    } else {
        None
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} (SQLSTATE {code})", self.text),
            None => f.write_str(&self.text),
        }
    }
}

impl std::error::Error for DbError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_constraint_errors_keep_only_the_condition_name() {
        assert_eq!(
            value_bearing_condition("22P02"),
            Some("invalid_text_representation")
        );
        assert_eq!(value_bearing_condition("22999"), Some("data_exception"));
        assert_eq!(value_bearing_condition("23505"), Some("unique_violation"));
        assert_eq!(value_bearing_condition("42501"), None);
    }

    #[test]
    fn lost_connections_restarts_and_serialization_failures_may_pass_the_rest_does_not() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01",
        ] {
            assert!(transient_code(code), "{code}");
        }
        for code in [
            "28P01", "42501", "23505", "22P02", "42P01", "55P03", "57014",
        ] {
            assert!(!transient_code(code), "{code}");
        }
    }

    #[test]
    fn invalid_mapping_and_usage_exit_2_runtime_exits_1() {
        let usage = Error::Usage("x".into()).exit_code();
        assert_eq!(usage, ExitCode::from(EXIT_USAGE));
        assert_eq!(
            Error::Runtime("x".into()).exit_code(),
            ExitCode::from(EXIT_RUNTIME)
        );
        assert_eq!(Error::Interrupted.exit_code(), ExitCode::from(EXIT_RUNTIME));
    }
}
