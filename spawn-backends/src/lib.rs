//! plough's spawn backends: how a child actor process comes to exist.
//!
//! * [`ExecBackend`] (`exec`): re-execute the program in a hidden child mode.
//! * [`ForkserverBackend`] (`main_thread_forkserver`): fork from the dedicated
//!   forkserver thread; the child builds a fresh current-thread runtime.
//! * [`SubintForkserverBackend`] (`subint_forkserver`): reserved; refuses with a
//!   `NotImplemented` error naming `main_thread_forkserver`.
//!
//! Every backend hands actor-core a [`plough_fork_prims::ChildHandle`] for a process in
//! its own process group; the child connects back and handshakes the same way whatever
//! started it.

mod exec;
mod forkserver;

pub use exec::ExecBackend;
pub use forkserver::{ForkserverBackend, SubintForkserverBackend};

use plough_actor_core::backend::{SpawnBackend, SpawnMethod};
use std::sync::Arc;

/// The backend for a spawn-method key (`program`: what `exec` runs; default this one).
pub fn backend_for(
    method: SpawnMethod,
    program: Option<std::path::PathBuf>,
) -> Arc<dyn SpawnBackend> {
    match method {
        SpawnMethod::Exec => Arc::new(match program {
            Some(p) => ExecBackend::with_program(p),
            None => ExecBackend::new(),
        }),
        SpawnMethod::MainThreadForkserver => Arc::new(ForkserverBackend::new()),
        SpawnMethod::SubintForkserver => Arc::new(SubintForkserverBackend),
    }
}
