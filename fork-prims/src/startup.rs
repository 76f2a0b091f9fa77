//! Life before `main`: how a process learns that it is a plough child or a zygote, without
//! anything on its argv.
//!
//! Every program that links this crate runs [`startup`] as a module constructor, before
//! `main` and before any thread of the program exists. It does nothing unless
//! [`BOOT_ENV`](crate::BOOT_ENV) is set (or the process is PID 1: then the program runs
//! behind an init of its own, see [`INIT_ENV`](crate::INIT_ENV)); then it removes the variable at once (so neither the program nor
//! anything it starts sees it; it is safe to change the environment here, with one thread)
//! and:
//!
//! * `exec`: the parent started this program as a child. Fd 0 is a socket carrying one
//!   message, the boot payload and its fds, written before the process started; it is
//!   taken, `/dev/null` goes onto fd 0, and `main` runs. The runtime's entry point finds
//!   the [`Delivery`] ([`take_delivery`]) and becomes the child: the program's own
//!   argument parser (clap, libtest) never sees anything of plough's.
//! * `zygote`: fd 0 is the zygote's socket; the process becomes a zygote (see `zygote`) and
//!   never reaches `main` — only the children it forks do, each with its delivery.
//!
//! The variable carries no secret and no identity, only which of the two it is: what the
//! child is and whom it answers to arrive on the inherited socket. A process that finds the
//! variable but no usable socket stops with a message (exit code 125) rather than run
//! `main` as a second root.
//!
//! # Safety
//!
//! The constructor itself (what `ctor` emits) and the environment change before `main`.
#![allow(unsafe_code)]

use crate::handoff::{BOOT_ENV, EXEC_MODE, ZYGOTE_MODE};
use crate::sync::LockExt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who handed this process its boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveredBy {
    /// The parent started this program (`exec`).
    Exec,
    /// A zygote forked this process.
    Zygote,
}

/// What the parent handed this process before `main`: the boot payload and its fds, in
/// the order the parent sent them.
#[derive(Debug)]
pub struct Delivery {
    /// How it came.
    pub by: DeliveredBy,
    /// The parent's bytes (the runtime's boot spec).
    pub payload: Vec<u8>,
    /// The parent's fds (close-on-exec).
    pub fds: Vec<OwnedFd>,
}

static DELIVERY: Mutex<Option<Delivery>> = Mutex::new(None);
static HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// The boot this process was started with, once (`None` for an ordinary start, and on
/// every later call).
pub fn take_delivery() -> Option<Delivery> {
    DELIVERY.locked().take()
}

/// Whether this process was started with a boot that is still waiting to be taken (a
/// plough child whose runtime entry point has not run yet).
pub fn has_delivery() -> bool {
    DELIVERY.locked().is_some()
}

/// Looks at the boot waiting to be taken, if any, without taking it (e.g. a program that
/// hands some of its children a payload of its own, as the benchmarks' floor does).
pub fn peek_delivery<R>(f: impl FnOnce(Option<&Delivery>) -> R) -> R {
    f(DELIVERY.locked().as_ref())
}

/// Whether the startup hook ran in this process. A process that finds [`BOOT_ENV`](crate::BOOT_ENV) set
/// and this `false` was started as a child but lost the hook (see the crate docs): it must
/// not run as a root.
pub fn startup_hook_ran() -> bool {
    HOOK_RAN.load(Ordering::SeqCst)
}

#[ctor::ctor(unsafe)]
fn plough_startup() {
    startup();
}

/// The hook's body; see the module docs.
fn startup() {
    HOOK_RAN.store(true, Ordering::SeqCst);
    let Some(mode) = std::env::var_os(BOOT_ENV) else {
        // An ordinary start; as PID 1, behind an init of its own (see `init`).
        crate::init::split();
        return;
    };
    // SAFETY: before `main`, in a process whose only thread is this one: nothing can read
    // the environment concurrently.
    unsafe { std::env::remove_var(BOOT_ENV) };
    let taken = match mode.to_str() {
        Some(EXEC_MODE) => take_exec_boot(),
        Some(ZYGOTE_MODE) => crate::zygote::serve_from_stdin().map(|c| Delivery {
            by: DeliveredBy::Zygote,
            payload: c.payload,
            fds: c.fds,
        }),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{BOOT_ENV}={mode:?} is neither `{EXEC_MODE}` nor `{ZYGOTE_MODE}`"),
        )),
    };
    match taken {
        Ok(delivery) => *DELIVERY.locked() = Some(delivery),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(
                io::stderr(),
                "plough: process {} was started as a plough child but cannot boot: {e}",
                std::process::id()
            );
            crate::prelude::exit(crate::prelude::exit_code::PRELUDE_FAILED);
        }
    }
}

fn take_exec_boot() -> io::Result<Delivery> {
    // The parent wrote the message before starting us: it is there, or never will be.
    let got = crate::handoff::recv(io::stdin().as_fd(), true)
        .map_err(|e| io::Error::new(e.kind(), format!("reading the boot message on fd 0: {e}")))?;
    let (payload, fds) =
        got.ok_or_else(|| io::Error::other("fd 0 closed before a boot message arrived"))?;
    crate::handoff::null_stdin()?;
    Ok(Delivery { by: DeliveredBy::Exec, payload, fds })
}
