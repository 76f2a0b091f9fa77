//! plough's spawn backends: how a child actor process comes to exist.
//!
//! * [`ZygoteBackend`] (`zygote`, the default): fork from the program's zygote, a small
//!   single-threaded fork-server process that never runs `main`; the child runs `main`
//!   from its start in a pristine process.
//! * [`ExecBackend`] (`exec`): execute the program anew; its boot arrives on an inherited
//!   socket, never on argv.
//! * [`ForkserverBackend`] (`main_thread_forkserver`): fork this process from its
//!   dedicated forkserver thread; the child runs the actor in-process on a fresh
//!   current-thread runtime, without running `main` again.
//! * [`SubintForkserverBackend`] (`subint_forkserver`): reserved; refuses with a
//!   `NotImplemented` error naming `zygote`.
//!
//! Every backend hands actor-core a [`plough_fork_prims::ChildHandle`] for a child of
//! this process in its own process group; the child connects back and handshakes the same
//! way whatever started it. `zygote` and `exec` children run the program's `main` from
//! its start (with [`ChildCommand`]'s argv: by default the root's own), so whatever the
//! program does before `Runtime::run` runs again in every child.

mod command;
mod exec;
mod forkserver;
mod zygote;

pub use command::ChildCommand;
pub use exec::ExecBackend;
pub use forkserver::{ForkserverBackend, SubintForkserverBackend};
pub use zygote::ZygoteBackend;

use plough_actor_core::backend::{SpawnBackend, SpawnMethod};
use std::sync::Arc;

/// The backend for a spawn-method key; `command` is what `zygote` and `exec` children run.
pub fn backend_for(method: SpawnMethod, command: ChildCommand) -> Arc<dyn SpawnBackend> {
    match method {
        SpawnMethod::Zygote => Arc::new(ZygoteBackend::with_command(command)),
        SpawnMethod::Exec => Arc::new(ExecBackend::with_command(command)),
        SpawnMethod::MainThreadForkserver => Arc::new(ForkserverBackend::new()),
        SpawnMethod::SubintForkserver => Arc::new(SubintForkserverBackend),
    }
}
