//! The `exec` backend: the child is a fresh process running the program's own binary
//! (`/proc/self/exe`, or a configured program) with the program's own argv.
//!
//! The process is started with `posix_spawn` (std's `Command`, no `pre_exec` hook, so
//! glibc can use `vfork`): its cost does not grow with the parent's memory. It gets its
//! own process group, the boot pipe as stderr, `/dev/null` as stdout until its runtime
//! starts (see `plough_actor_core::backend::ChildStdio`), and on fd 0 a socket holding
//! its boot — name, ids, where to connect back — and its real stdout and stderr, written
//! before it starts. `PLOUGH_BOOT=exec` in its environment tells plough's startup hook to
//! take it before `main` and to remove the variable. Nothing of plough's is on its argv,
//! so the program's own argument parser (clap, a test harness) is not disturbed, and no
//! identity can be read from `/proc/<pid>/cmdline`. Every other fd of the parent is
//! close-on-exec (Rust opens everything with `O_CLOEXEC`).

use crate::command::ChildCommand;
use futures::FutureExt;
use futures::future::BoxFuture;
use plough_actor_core::backend::{ChildStdio, SpawnBackend, SpawnError, SpawnMethod, SpawnRequest};
use plough_fork_prims::ChildHandle;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Spawns children by executing the program anew.
#[derive(Debug, Clone, Default)]
pub struct ExecBackend {
    command: ChildCommand,
}

impl ExecBackend {
    /// Executes this program with this process's argv.
    pub fn new() -> Self {
        Self::default()
    }

    /// Executes `command` instead (its program must build the same registry and call
    /// `Runtime::run` or `run_async`).
    pub fn with_command(command: ChildCommand) -> Self {
        ExecBackend { command }
    }
}

impl SpawnBackend for ExecBackend {
    fn method(&self) -> SpawnMethod {
        SpawnMethod::Exec
    }

    fn spawn(&self, req: SpawnRequest) -> BoxFuture<'_, Result<ChildHandle, SpawnError>> {
        async move {
            let SpawnRequest { boot, boot_stderr, .. } = req;
            let name = boot.name.clone();
            // Out of fds at any step is `SpawnError::OutOfFds`, naming the step.
            let os = |what: &str, e: std::io::Error| SpawnError::from_io(&name, what, &e);
            let stdio =
                ChildStdio::new(boot_stderr).map_err(|e| os("cannot set up its stdio", e))?;
            let [out, err] = &stdio.deliver;
            let boot_socket =
                plough_fork_prims::boot_socket(&boot.encode(), &[out.as_fd(), err.as_fd()])
                    .map_err(|e| os("cannot write its boot", e))?;
            let ChildCommand { program, argv0, args } = &self.command;
            let mut cmd = Command::new(program);
            cmd.arg0(argv0)
                .args(args)
                .env(plough_fork_prims::BOOT_ENV, plough_fork_prims::EXEC_MODE)
                .process_group(0)
                .stdin(Stdio::from(boot_socket))
                .stdout(Stdio::from(stdio.stdout))
                .stderr(Stdio::from(stdio.stderr));
            let child =
                cmd.spawn().map_err(|e| os(&format!("cannot execute {}", program.display()), e))?;
            let handle =
                ChildHandle::from_std(child).map_err(|e| os("cannot own the child process", e))?;
            handle.set_kill_on_drop(true);
            Ok(handle)
        }
        .boxed()
    }
}
