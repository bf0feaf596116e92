//! shadan (遮断, "information firewall"): a one-way, field-level, checksummed copy of
//! the retail-permissible subset of a joint PostgreSQL customer database into a separate
//! retail-owned database.
//!
//! # Layout: the data path
//!
//! ```text
//! mapping -> catalog -> plan -> source query -> stream -> digest -> target write -> manifest
//! (TOML)     (both DBs) (checked) (projection   (binary  (blake3   (COPY + checkpoint
//!                                  in source)    COPY)    per row)  in one transaction)
//! ```
//!
//! - [`mapping`]: the file, parsed with line numbers, not yet trusted.
//! - [`catalog`]: what each database really has.
//! - [`plan`]: the validated plan; [`plan::query`] generates the source SQL.
//! - [`source`]: the source side: [`source::snapshot`] (one shared snapshot per run and
//!   the workers' sessions on it), [`source::batch`] (key-range batches, the unit of
//!   commit and comparison) and [`source::changes`] (what changed since a horizon).
//! - [`copy`]: the binary COPY stream, split into tuples.
//! - [`key`]: binary keys bound back as parameters and rendered for reports.
//! - [`digest`]: row hashes and order-independent batch and table digests.
//! - [`target`]: the writer lock and the state (checkpoints, runs) in the `shadan` schema.
//! - [`manifest`]: what each run records and prints.
//! - [`cutover`]: the first bulk copy.
//! - [`sync`]: the nightly refresh, writing only what changed.
//! - [`grants`]: least-privilege SQL (and export views) for the source DBA.
//! - [`init`]: a mapping skeleton from the source catalog, and retail DDL from a mapping.
//! - [`verify`]: the independent proof, with the leak audit.
//! - [`workers`]: the bounded worker pool every parallel step uses.
//! - [`progress`], [`shutdown`]: what the operator sees, and the one stop signal;
//!   [`retry`]: running a failed run again when the failure may pass;
//!   [`metrics`]: the file a monitoring system reads.
//! - [`connect`]: endpoints, with passwords kept out of every message; [`tls`]: libpq's
//!   sslmode and sslrootcert.
//! - [`error`]: the top-level error and the exit-code policy.
//! - [`cli`]: arguments and dispatch; `main.rs` only parses, runs and exits.

// Every public item says what it is for (clippy runs with -D warnings).
#![warn(missing_docs)]

pub mod catalog;
pub mod cli;
pub mod connect;
pub mod copy;
pub mod cutover;
pub mod digest;
pub mod error;
pub mod grants;
pub mod ident;
pub mod init;
pub mod key;
pub mod manifest;
pub mod mapping;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod retry;
pub mod shutdown;
pub mod source;
pub mod sync;
pub mod target;
pub mod tls;
pub mod verify;
pub mod workers;
