//! The `exec` backend: the child is a fresh process running the program's own binary
//! (`/proc/self/exe`, or a configured program) with the hidden child-mode argument.
//!
//! The process is started with `posix_spawn` (std's `Command`, no `pre_exec` hook, so
//! glibc can use `vfork`): its cost does not grow with the parent's memory. It gets its
//! own process group, `/dev/null` for stdin, the parent's stdout/stderr (during boot its
//! stderr is a pipe the parent reads and its real stderr waits on fd 0: see
//! `plough_actor_core::backend::dup_stderr`; a program must call `Runtime::run` before it reads
//! stdin, as child mode is dispatched there), and on argv only
//! what it needs to connect back (no secret: the parent recognises it by the uuid it
//! chose, and authentication is a later layer). Every other fd of the parent is
//! close-on-exec (Rust opens everything with `O_CLOEXEC`).

use futures::FutureExt;
use futures::future::BoxFuture;
use plough_actor_core::backend::{SpawnBackend, SpawnError, SpawnMethod, SpawnRequest};
use plough_fork_prims::ChildHandle;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Spawns children by re-executing a program in child mode.
#[derive(Debug, Clone, Default)]
pub struct ExecBackend {
    program: Option<PathBuf>,
}

impl ExecBackend {
    /// Re-executes this program (`/proc/self/exe`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Executes `program` instead (it must dispatch child mode through
    /// `Runtime::run` with the same registry).
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        ExecBackend { program: Some(program.into()) }
    }
}

impl SpawnBackend for ExecBackend {
    fn method(&self) -> SpawnMethod {
        SpawnMethod::Exec
    }

    fn spawn(&self, req: SpawnRequest) -> BoxFuture<'_, Result<ChildHandle, SpawnError>> {
        async move {
            let program = self.program.clone().unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
            let SpawnRequest { mut boot, boot_stderr, .. } = req;
            let name = boot.name.clone();
            let mut cmd = Command::new(&program);
            cmd.process_group(0);
            // Boot stderr capture: fd 2 is the boot pipe from the first byte the program
            // (or its dynamic loader) writes, and the real stderr waits on fd 0 until
            // child-mode dispatch moves it back and puts /dev/null there.
            match (boot_stderr, plough_actor_core::backend::dup_stderr()) {
                (Some(pipe), Some(real)) => {
                    boot.real_stderr_on_stdin = true;
                    cmd.stdin(Stdio::from(real)).stderr(Stdio::from(pipe));
                }
                _ => {
                    cmd.stdin(Stdio::null());
                }
            }
            cmd.args(boot.to_args());
            // argv[0] names the actor in `ps` until the runtime sets its title.
            cmd.arg0(format!("plough:{name}"));
            let child = cmd.spawn().map_err(|e| SpawnError::Os {
                name: name.clone(),
                message: format!("cannot execute {}: {e}", program.display()),
            })?;
            let handle = ChildHandle::from_std(child).map_err(|e| SpawnError::Os {
                name,
                message: format!("cannot own the child process: {e}"),
            })?;
            handle.set_kill_on_drop(true);
            Ok(handle)
        }
        .boxed()
    }
}
