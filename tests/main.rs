//! Integration tests: one binary, so the two PostgreSQL clusters start once. Each test
//! gets its own pair of databases and runs the real `shadan` binary.

mod support;

mod attacks;

mod changes;
mod connect;
mod cutover;
mod dry_run;
mod edges;
mod foreign_keys;
mod grants;
mod history;
mod init;
mod keys;
mod observer;
mod operations;
mod partitions;
mod plan;
mod repair;
mod retry;
mod scale;
mod sync;
mod unique;
mod verify;
mod views;
