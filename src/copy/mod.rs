//! Step 5 of the data path: the binary COPY stream between the two servers.
//!
//! Tuple bytes pass from the source's `COPY ... TO STDOUT (FORMAT binary)` to the
//! target's `COPY ... FROM STDIN (FORMAT binary)` unchanged (exact type equality, checked
//! by the plan, makes that valid). [`tuple`] splits the stream into tuples only to hash
//! each row and to read its key.

pub mod tuple;
