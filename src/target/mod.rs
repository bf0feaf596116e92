//! The target side: the retail database and the tool's state in its `shadan` schema.
//!
//! - [`lock`]: one cutover or sync at a time per target (advisory lock).
//! - [`state`]: batches with their checkpoints, and run manifests.

pub mod lock;
pub mod state;
