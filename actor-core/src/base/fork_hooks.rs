//! The fork hooks of the process-level state: a forking backend registers
//! [`fork_hooks`] once, so that no lock of the runtime vars or the task table is held by
//! another thread at the instant of a fork, and the child starts with neither the
//! parent's settings nor its task table.
//!
//! A forked child must not take a lock that another thread of its parent may have held at
//! the fork — the environment's included (`std::env::set_var` on another thread): so
//! everything the child's runtime reads from the environment is read in the parent,
//! before the fork, and inherited as a value ([`capture_environment`]).

use super::{dump, runtime_vars};
use plough_fork_prims::ForkHooks;

/// The hooks to register with `plough_fork_prims::register_fork_hooks` (once per
/// process) before forking children that run an actor.
pub fn fork_hooks() -> ForkHooks {
    ForkHooks::new()
        .prepare(|| {
            capture_environment();
            runtime_vars::fork_prepare();
            dump::fork_prepare();
        })
        .parent(|| {
            dump::fork_parent();
            runtime_vars::fork_parent();
        })
        .child(|| {
            // The child's settings come from its SpawnSpec and its task table starts
            // empty: nothing of the parent's carries over.
            dump::fork_child();
            runtime_vars::fork_child();
            let _ = runtime_vars::get(true);
        })
}

/// Reads, in the parent, what a child's runtime would otherwise read from the environment
/// (each is read once per process and inherited by a fork): the runtime directories and
/// the task-dump switch.
pub(crate) fn capture_environment() {
    let _ = plough_fork_prims::marker::default_runtime_dir();
    let _ = plough_ipc_wire::runtime_dir::default_dir();
    let _ = dump::enabled_by_env();
}
