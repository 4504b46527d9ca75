//! Test rigs (feature `testing`, not part of the shipped API): a sync server in memory,
//! a transport that calls it directly, and a wrapper that makes any transport fail the
//! ways networks do, and a writer lock handed between handles by hand. The crate's own
//! tests, the simulation and the browser tests use them.
pub mod faults;
pub mod handed_lock;
pub mod in_process;
pub mod memory_server;
