//! Test rigs (feature `testing`, not part of the shipped API): a sync server in memory,
//! a transport that calls it directly, and a wrapper that makes any transport fail the
//! ways networks do. The crate's own tests, the simulation and the browser tests use them.
pub mod faults;
pub mod in_process;
pub mod memory_server;
