//! Fork from a dedicated thread, scrub inherited fds, and own child processes through
//! pidfds — the lowest layer of plough.
//!
//! ```
//! use plough_fork_prims::{ForkOptions, fork_blocking};
//!
//! // The closure runs in the child, after the prelude (signals reset, own process
//! // group, parent-death signal, every inherited fd but stdio closed).
//! let child = fork_blocking(&ForkOptions::default(), || {
//!     eprintln!("hello from the child");
//!     7
//! })?;
//! let status = child.wait_blocking()?;
//! assert_eq!(status.code(), Some(7));
//! assert_eq!(status.to_string(), "exited with code 7");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What is here
//!
//! * [`fork`] / [`fork_blocking`]: every fork of the process goes through one
//!   process-lifetime *forkserver* thread that never runs an async runtime and blocks all
//!   signals; [`register_fork_hooks`] is our `pthread_atfork`.
//! * The child prelude ([`ForkOptions`], [`exit_code`]): in order, reset signals, own
//!   process group, parent-death signal with a `getppid()` re-check, fd scrub, child
//!   hooks; the child's closure runs under `catch_unwind` and the child ends with `_exit`.
//! * [`close_inherited_fds`]: `close_range` over the gaps of a keep-set, `/proc/self/fd`,
//!   then an `RLIMIT_NOFILE` loop.
//! * [`ChildHandle`]: pid + pidfd, `try_wait`, cancel-safe async `wait`, `signal` via
//!   `pidfd_send_signal`, `kill_group`, cached [`ExitStatus`]; dropping it never leaves a
//!   zombie.
//! * [`sync::LockExt`]: `Mutex::locked()`, which takes a lock a panicking thread
//!   poisoned, and why plough's bookkeeping wants that.
//!
//! # Caveats: what a forked child must not touch
//!
//! A forked child is a copy of the parent with one thread. The forkserver designs out the
//! hazards it can (see `forkserver` and `prelude`); these remain the caller's:
//!
//! * **The parent's async runtime is dead in the child.** Never use a tokio `Runtime`,
//!   `Handle`, or any I/O object of the parent there: their reactor fds are closed by the
//!   scrub and their worker threads do not exist. Build a new *current-thread* runtime in
//!   the child (a multi-thread one can park forever in state inherited from the parent's
//!   parking queues; plough's workspace never enables tokio's `parking_lot` feature).
//! * **tokio's signal driver keeps process-global state** (a self-pipe registered once per
//!   process). The child inherits it initialised but with its fds closed, so
//!   `tokio::signal` does not work in a forked child; handle signals with a `signalfd` or
//!   a self-pipe created in the child.
//! * Locks held by other parent threads at the instant of the fork stay locked in the
//!   child, except those the forkserver takes on purpose (stdout, stderr, the hook list)
//!   and those your own [`ForkHooks`] take. `std::env::set_var` racing a fork can leave
//!   std's environment lock held (which is why `set_var` is `unsafe` in edition 2024).
//! * Globals that name threads (a logging worker, a connection pool) must be reset in a
//!   child hook; this crate's own (forkserver, reaper) are keyed by pid and re-created.
//!
//! # Module order
//!
//! Imports between the modules point one way, from the top of this list down: a module
//! uses only modules below it (`tests/module_order.rs` holds the crate to this list).
//!
//! * `drain` ([`drain_reaper`]): waits until `forkserver` and `reap_queue` are idle.
//! * `startup`: the pre-`main` hook ([`take_delivery`]); runs the zygote's server, and
//!   `init` in a process that is PID 1.
//! * `zygote` ([`Zygote`]): the fork-server process, both sides; started on the
//!   forkserver thread.
//! * `forkserver`: the forking thread; builds [`ChildHandle`]s, runs `prelude` in the
//!   child, takes the `hooks` lock.
//! * `child` ([`ChildHandle`]): its `Drop` hands a running child to `reap_queue`.
//! * `reap_queue`: the background reaper thread.
//! * `prelude` (uses `scrub`, `signals`, `hooks`), then the leaves, which import no other
//!   module of the crate but `sync`: `hooks`, `scrub`, `signals`, `signalfd`, `signal_pipe`,
//!   `init` (PID 1's init, [`INIT_ENV`]), `status`, `fds` (fd counts and limits,
//!   [`is_out_of_fds`]),
//!   `marker`, `handoff` (messages with fds), `per_process`, `proctitle` (a forked
//!   child's command line, [`set_cmdline_title`]), and last `sync`.
//!
//! # Unsafe
//!
//! The crate denies `unsafe_code` except in the modules that fork, close fds, touch signal
//! masks, publish per-process globals, or rewrite the command line; each block there
//! carries a `// SAFETY:` comment.

mod child;
mod drain;
mod fds;
mod forkserver;
mod handoff;
mod hooks;
mod init;
pub mod marker;
mod per_process;
mod prelude;
mod proctitle;
mod reap_queue;
mod scrub;
#[cfg(feature = "async")]
mod signal_pipe;
#[cfg(feature = "async")]
mod signalfd;
mod signals;
mod startup;
mod status;
pub mod sync;
mod zygote;

pub use child::{ChildHandle, KillTarget};
pub use drain::drain_reaper;
pub use fds::{fd_headroom, fd_table_size, is_out_of_fds, nofile_soft_limit, open_fd_count};
#[cfg(feature = "async")]
pub use forkserver::fork;
pub use forkserver::{FORKSERVER_THREAD_NAME, fork_blocking, forkserver_started};
pub use handoff::{BOOT_ENV, EXEC_MODE, boot_socket};
pub use hooks::{ForkHooks, register_fork_hooks};
pub use init::{FORWARDED_SIGNALS, INIT_ENV};
pub use prelude::{ForkOptions, exit_code};
pub use proctitle::{TitleError, set_cmdline_title};
pub use reap_queue::pending_reaps;
pub use rustix::process::Signal;
pub use scrub::{ScrubMethod, ScrubReport, close_inherited_fds, list_open_fds, validate_keep_set};
#[cfg(feature = "async")]
pub use signal_pipe::SignalPipe;
#[cfg(feature = "async")]
pub use signalfd::SignalFd;
pub use startup::{
    DeliveredBy, Delivery, has_delivery, peek_delivery, startup_hook_ran, take_delivery,
};
pub use status::{ExitStatus, SignalName};
pub use zygote::{ZYGOTE_MARKER_NAME, ZYGOTE_PROCESS_NAME, Zygote, ZygoteRequest};
