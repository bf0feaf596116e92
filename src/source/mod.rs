//! The source side of the data path: the run's snapshot and the workers' sessions on it
//! ([`snapshot`]), the key-range batches every table is cut into ([`batch`]), and change
//! detection by tuple `xmin` for sync ([`changes`]), and the reading of a run of batches
//! by one query where no index serves their ranges ([`stretch`]).

pub mod batch;
pub mod changes;
pub mod snapshot;
pub mod stretch;
