//! The target side: the retail database and the tool's state in its `shadan` schema.
//!
//! - [`lock`]: one cutover or sync at a time per target (advisory lock).
//! - [`indexes`]: indexes set aside during a cutover load and built after it.
//! - [`foreign_keys`]: foreign keys set aside during a cutover load and validated after it.
//! - [`state`]: batches with their checkpoints, and run manifests.
//! - [`prints`]: the row prints beside each checkpoint, which keep sync's questions to
//!   the target independent of non-public changes.
//! - [`history`]: past runs, chained by their manifests' blake3.
//! - [`trust`]: the state schema must be the tool's alone.

pub mod foreign_keys;
pub mod history;
pub mod indexes;
pub mod lock;
pub mod prints;
pub mod state;
pub mod trust;
