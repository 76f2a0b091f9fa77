//! The `zygote` backend (the default): children are forked by the program's zygote, a
//! small single-threaded fork-server process (see `plough_fork_prims::Zygote`).
//!
//! The zygote is started at the first spawn from a fresh image of the program
//! ([`ChildCommand`]: `/proc/self/exe` with this process's argv), becomes a fork server
//! before `main`, and lives as long as this backend (the runtime that owns it): it never
//! runs `main`, builds no runtime, starts no thread and holds no lock, so whatever this
//! process's threads hold at spawn time (the allocator, stdio, a logger, `std::env`)
//! cannot reach a child. Each child is cloned with `CLONE_PARENT`, so it is a child of this
//! process — a real child handle, as with the other backends — and runs the program's
//! `main` from its start until `Runtime::run`, where it finds its boot. The zygote goes
//! when the actor that owns the backend shuts down (`SpawnBackend::shutdown`). A zygote that died
//! is started again at the next spawn (a spawn that finds it dead retries once with a new
//! one); one that does not answer within [`Budgets::fork_reply`] is killed.
//!
//! A child starts with the zygote's working directory, environment and resource limits:
//! this process's when the zygote started (its first spawn). A `chdir` or `set_var` of
//! this process after that is not seen by later children (with `exec`, it is).
//!
//! [`Budgets::fork_reply`]: plough_actor_core::Budgets::fork_reply

use crate::command::ChildCommand;
use futures::FutureExt;
use futures::future::BoxFuture;
use plough_actor_core::backend::{ChildStdio, SpawnBackend, SpawnError, SpawnMethod, SpawnRequest};
use plough_fork_prims::{ChildHandle, Zygote, ZygoteRequest};
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

/// Spawns children through a zygote process.
#[derive(Debug, Default)]
pub struct ZygoteBackend {
    command: ChildCommand,
    zygote: tokio::sync::Mutex<Option<Arc<Zygote>>>,
}

impl ZygoteBackend {
    /// A backend whose zygote is this program with this process's argv.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend whose zygote (and so every child's `main`) runs `command`.
    pub fn with_command(command: ChildCommand) -> Self {
        ZygoteBackend { command, zygote: tokio::sync::Mutex::new(None) }
    }

    /// The pid of the running zygote, if one runs.
    pub async fn zygote_pid(&self) -> Option<u32> {
        self.zygote.lock().await.as_ref().filter(|z| z.is_alive()).map(|z| z.pid())
    }

    /// The live zygote, started if there is none (or it died).
    async fn zygote(&self) -> io::Result<Arc<Zygote>> {
        let mut slot = self.zygote.lock().await;
        if let Some(z) = slot.as_ref().filter(|z| z.is_alive()) {
            return Ok(Arc::clone(z));
        }
        if let Some(dead) = slot.take() {
            tracing::warn!(pid = dead.pid(), "the zygote died: starting a new one");
        }
        let ChildCommand { program, argv0, args } = self.command.clone();
        let z = tokio::task::spawn_blocking(move || Zygote::start(program, argv0, args))
            .await
            .map_err(io::Error::other)??;
        tracing::debug!(pid = z.pid(), "zygote started");
        let z = Arc::new(z);
        *slot = Some(Arc::clone(&z));
        Ok(z)
    }

    /// Forgets `z` if it is still the current zygote (it failed a request).
    async fn discard(&self, z: &Arc<Zygote>) {
        let mut slot = self.zygote.lock().await;
        if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, z)) {
            *slot = None;
        }
    }
}

impl SpawnBackend for ZygoteBackend {
    fn method(&self) -> SpawnMethod {
        SpawnMethod::Zygote
    }

    fn spawn(&self, req: SpawnRequest) -> BoxFuture<'_, Result<ChildHandle, SpawnError>> {
        async move {
            let SpawnRequest { boot, boot_stderr, budgets, .. } = req;
            let name = boot.name.clone();
            // Out of fds at any step is `SpawnError::OutOfFds`, naming the step.
            let os = |what: &str, e: std::io::Error| SpawnError::from_io(&name, what, &e);
            let stdio = ChildStdio::new(boot_stderr).map_err(|e| os("cannot set up its stdio", e))?;
            let payload = boot.encode();
            let [out, err] = &stdio.deliver;
            let deliver = [out.as_fd(), err.as_fd()];
            let request = ZygoteRequest {
                payload: &payload,
                stdio: [stdio.stdin.as_fd(), stdio.stdout.as_fd(), stdio.stderr.as_fd()],
                deliver: &deliver,
                kill_on_drop: true,
            };
            let mut retried = false;
            loop {
                let z = self.zygote().await.map_err(|e| os("cannot start the zygote", e))?;
                match z.spawn(&request, budgets.fork_reply).await {
                    Ok(handle) => return Ok(handle),
                    // Gone or hung: once more with a new zygote.
                    Err(e)
                        if !retried
                            && matches!(
                                e.kind(),
                                io::ErrorKind::BrokenPipe | io::ErrorKind::TimedOut
                            ) =>
                    {
                        tracing::warn!(error = %e, "zygote request failed: retrying with a new zygote");
                        self.discard(&z).await;
                        retried = true;
                    }
                    Err(e) => return Err(os("the zygote could not fork it", e)),
                }
            }
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            let zygote = self.zygote.lock().await.take();
            if let Some(z) = zygote {
                // Its drop waits (bounded) for the zygote's last replies and its exit.
                let _ = tokio::task::spawn_blocking(move || drop(z)).await;
            }
        }
        .boxed()
    }
}
