//! plough: structured-concurrency actors that are OS processes.
//!
//! The facade re-exports the layered crates of the workspace.

pub use plough_fork_prims as fork_prims;
pub use plough_ipc_wire as ipc_wire;
