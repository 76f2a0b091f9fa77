//! The `main_thread_forkserver` backend: fork from the dedicated forkserver thread.
//!
//! The parent asks `plough-fork-prims`' forkserver thread (which never ran the async
//! runtime) for a fork. The child runs the prelude (signals reset, own process group,
//! parent-death signal with a `getppid()` re-check, every inherited fd closed: it keeps
//! only stdio and its boot-stderr pipe), points fd 2 at that pipe until it has connected
//! back (its parent keeps the tail for a boot-death error), resets the process-global runtime vars it inherited, builds a **new
//! current-thread** tokio runtime in `child_main`, connects back and handshakes exactly
//! like an exec child. It never touches the parent's runtime or handles; its signals
//! arrive through a `signalfd` it creates itself.

use futures::FutureExt;
use futures::future::BoxFuture;
use plough_actor_core::backend::{SpawnBackend, SpawnError, SpawnMethod, SpawnRequest};
use plough_fork_prims::{ChildHandle, ForkOptions};
use std::os::fd::AsRawFd;
use std::sync::Once;

/// Spawns children by forking from the forkserver thread.
#[derive(Debug, Clone, Default)]
pub struct ForkserverBackend {
    _private: (),
}

impl ForkserverBackend {
    /// The backend (registers the runtime's fork hooks once per process).
    pub fn new() -> Self {
        static HOOKS: Once = Once::new();
        HOOKS.call_once(|| {
            plough_fork_prims::register_fork_hooks(plough_actor_core::backend::fork_hooks());
        });
        ForkserverBackend { _private: () }
    }
}

impl SpawnBackend for ForkserverBackend {
    fn method(&self) -> SpawnMethod {
        SpawnMethod::MainThreadForkserver
    }

    fn spawn(&self, req: SpawnRequest) -> BoxFuture<'_, Result<ChildHandle, SpawnError>> {
        async move {
            let name = req.boot.name.clone();
            let SpawnRequest { boot, child_main, boot_stderr, .. } = req;
            let mut opts = ForkOptions::default();
            if let Some(fd) = &boot_stderr {
                opts = opts.keep_fd(fd.as_raw_fd());
            }
            // The body (and with it this process's copy of the boot pipe) is dropped in
            // the parent as soon as the fork is done.
            plough_fork_prims::fork(&opts, move || {
                if let Some(fd) = boot_stderr {
                    plough_actor_core::backend::capture_in_forked_child(fd);
                }
                child_main(boot)
            })
            .await
            .map_err(|e| SpawnError::Os { name, message: e.to_string() })
        }
        .boxed()
    }
}

/// The reserved `subint_forkserver` key: refuses every spawn with a `NotImplemented`
/// error naming `zygote`. It never falls back to another backend.
#[derive(Debug, Clone, Default)]
pub struct SubintForkserverBackend;

impl SpawnBackend for SubintForkserverBackend {
    fn method(&self) -> SpawnMethod {
        SpawnMethod::SubintForkserver
    }

    fn spawn(&self, _req: SpawnRequest) -> BoxFuture<'_, Result<ChildHandle, SpawnError>> {
        async move {
            Err(SpawnMethod::SubintForkserver
                .ensure_implemented()
                .expect_err("subint_forkserver is reserved"))
        }
        .boxed()
    }
}
