//! The source side of the data path: the run's snapshot and the workers' sessions on it
//! ([`snapshot`]), the key-range batches every table is cut into ([`batch`]), and change
//! detection by tuple `xmin` for sync ([`changes`]).

pub mod batch;
pub mod changes;
pub mod snapshot;
