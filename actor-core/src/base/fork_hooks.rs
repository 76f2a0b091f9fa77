//! The fork hooks of the process-level state: a forking backend registers
//! [`fork_hooks`] once, so that no lock of the runtime vars or the task table is held by
//! another thread at the instant of a fork, and the child starts with neither the
//! parent's settings nor its task table.

use super::{dump, runtime_vars};
use plough_fork_prims::ForkHooks;

/// The hooks to register with `plough_fork_prims::register_fork_hooks` (once per
/// process) before forking children that run an actor.
pub fn fork_hooks() -> ForkHooks {
    ForkHooks::new()
        .prepare(|| {
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
