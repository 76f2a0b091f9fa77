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
//!
//! A program compiled with tokio's `signal` or `process` feature (`features = ["full"]`)
//! cannot fork this way: tokio's signal driver keeps process-global state (a socket pair
//! made once per process) that a forked child inherits with its fds closed, so the child
//! cannot build a runtime. Before its first fork of an actor, the backend forks a probe
//! that only builds a runtime; if the probe fails, every spawn is refused with
//! [`SpawnError::Unsupported`], naming the cause and `zygote` / `exec`, before anything
//! else is forked.

use futures::FutureExt;
use futures::future::BoxFuture;
use plough_actor_core::backend::{
    ChildRuntime, SpawnBackend, SpawnError, SpawnMethod, SpawnRequest,
};
use plough_fork_prims::{ChildHandle, ForkOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Once;

/// Whether a child forked from this process can build a tokio runtime: `Err(why)` when
/// it cannot. Probed once per process (a forked child inherits the answer, which holds for
/// it too: same program, same tokio).
static FORKABLE: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();

/// Forks a child that builds a current-thread runtime the way an actor does, and tells
/// whether it could: `Ok(Err(why))` when it could not. `Err` when the probe itself could
/// not run (e.g. out of fds), or its child was killed by a signal every time (e.g. a
/// SIGINT to the parent's process group in the instant before the child had left it):
/// that answer is not kept, the next spawn probes again.
async fn probe() -> std::io::Result<Result<(), String>> {
    const TRIES: usize = 3;
    let mut killed = None;
    for _ in 0..TRIES {
        match probe_once().await? {
            Probe::Killed(status) => killed = Some(status),
            Probe::Answered(answer) => return Ok(answer),
        }
    }
    let status = killed.map(|s| s.to_string()).unwrap_or_default();
    Err(std::io::Error::other(format!("its child was {status} before it answered, {TRIES} times")))
}

/// One probe's outcome.
enum Probe {
    /// The child said whether it could build a runtime.
    Answered(Result<(), String>),
    /// A signal killed it first: no verdict about the program.
    Killed(plough_fork_prims::ExitStatus),
}

async fn probe_once() -> std::io::Result<Probe> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let opts = ForkOptions::default().keep_fd(write.as_raw_fd());
    // Made here, as for an actor: making a builder reads the environment.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    let child = plough_fork_prims::fork(&opts, move || match builder.build() {
        Ok(rt) => {
            drop(rt);
            0
        }
        Err(e) => {
            let _ = rustix::io::write(&write, e.to_string().as_bytes());
            1
        }
    })
    .await?;
    let status = child.wait().await?;
    if status.success() {
        return Ok(Probe::Answered(Ok(())));
    }
    if status.signal().is_some() {
        return Ok(Probe::Killed(status));
    }
    let mut buf = vec![0u8; 512];
    let n = rustix::io::read(read.as_fd(), &mut buf).unwrap_or(0);
    let err = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    Ok(Probe::Answered(Err(format!(
        "a child forked from it cannot build its tokio runtime ({}): tokio's `signal` or \
         `process` feature is compiled into this program (e.g. tokio = {{ features = [\"full\"] \
         }}), and tokio's signal driver keeps process-global state that does not survive a fork",
        if err.is_empty() { status.to_string() } else { err }
    ))))
}

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
            let forkable = FORKABLE
                .get_or_try_init(probe)
                .await
                .map_err(|e| SpawnError::from_io(&name, "the fork probe", &e))?;
            if let Err(why) = forkable {
                return Err(SpawnError::Unsupported {
                    method: SpawnMethod::MainThreadForkserver.key().to_owned(),
                    why: why.clone(),
                    instead: format!(
                        "`{}` (the default) or `{}`",
                        SpawnMethod::Zygote.key(),
                        SpawnMethod::Exec.key()
                    ),
                });
            }
            let SpawnRequest { boot, child_main, boot_stderr, .. } = req;
            let mut opts = ForkOptions::default();
            if let Some(fd) = &boot_stderr {
                opts = opts.keep_fd(fd.as_raw_fd());
            }
            // Prepared here: making it reads the environment, which the child must not.
            let runtime = ChildRuntime::prepare();
            // The body (and with it this process's copy of the boot pipe) is dropped in
            // the parent as soon as the fork is done.
            plough_fork_prims::fork(&opts, move || {
                if let Some(fd) = boot_stderr {
                    plough_actor_core::backend::capture_in_forked_child(fd);
                }
                child_main(boot, runtime)
            })
            .await
            // A child forked but not owned (no pidfd) was killed and reaped by the fork.
            .map_err(|e| SpawnError::from_io(&name, "fork", &e))
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
