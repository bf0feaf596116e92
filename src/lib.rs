//! shadan (遮断, "information firewall"): a one-way, field-level, checksummed copy of
//! the retail-permissible subset of a joint PostgreSQL customer database into a separate
//! retail-owned database.
//!
//! # Layout: the data path
//!
//! ```text
//! mapping  ->  catalog  ->  plan  ->  source query  ->  ...
//! (TOML,       (both DBs'   (checked,   (projection
//!  located)     columns,     the only    pushed into
//!               types,       thing       the source)
//!               keys)        commands
//!                            take)
//! ```
//!
//! - [`mapping`]: the file, parsed with line numbers, not yet trusted.
//! - [`catalog`]: what each database really has.
//! - [`plan`]: the validated plan; [`plan::query`] generates the source SQL.
//! - [`connect`]: endpoints, with passwords kept out of every message.
//! - [`error`]: the top-level error and the exit-code policy.
//! - [`cli`]: arguments and dispatch; `main.rs` only parses, runs and exits.

pub mod catalog;
pub mod cli;
pub mod connect;
pub mod error;
pub mod ident;
pub mod mapping;
pub mod plan;
