//! Process-global state that a forked child must not inherit.
//!
//! A forked child gets a copy of every global of its parent, but only the one thread that
//! called `fork`. A global that names a thread (the forkserver's request channel, the
//! reaper's queue) is a lie in the child: the thread is not there, and the global's locks
//! may have been held by a parent thread at the instant of the fork. So such globals are
//! tagged with the pid that created them; a process that finds a foreign tag builds its
//! own and never touches (not even drops) the inherited value.
//!
//! # Safety
//!
//! The values are published as leaked boxes through an `AtomicPtr`; a published pointer
//! is never freed, so `&'static` references to it are sound. A box that lost the
//! publication race was never seen by another thread and is reclaimed.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicPtr, Ordering};

/// A lazily created value owned by the current process; a forked child sees it as absent
/// and creates its own. The inherited value is leaked on purpose: dropping it could touch
/// state (locks, channels, fds) that belongs to the parent's threads.
#[derive(Debug)]
pub(crate) struct PerProcess<T: 'static> {
    ptr: AtomicPtr<Tagged<T>>,
}

#[derive(Debug)]
struct Tagged<T> {
    pid: rustix::process::Pid,
    value: T,
}

impl<T: Send + Sync + 'static> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        PerProcess { ptr: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// The current process's value, if it created one.
    pub(crate) fn get(&self) -> Option<&'static T> {
        let me = rustix::process::getpid();
        leaked(self.ptr.load(Ordering::Acquire)).filter(|t| t.pid == me).map(|t| &t.value)
    }

    /// The current process's value, created with `init` on first use. Concurrent first
    /// uses may both run `init`; one value wins and each loser is handed to `discard`
    /// (e.g. to stop a thread it started).
    pub(crate) fn get_or_init(
        &self,
        mut init: impl FnMut() -> T,
        discard: impl FnMut(T),
    ) -> &'static T {
        match self.try_get_or_init(|| Ok::<T, std::convert::Infallible>(init()), discard) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// [`PerProcess::get_or_init`] with a fallible `init`; an error stores nothing.
    pub(crate) fn try_get_or_init<E>(
        &self,
        mut init: impl FnMut() -> Result<T, E>,
        mut discard: impl FnMut(T),
    ) -> Result<&'static T, E> {
        let me = rustix::process::getpid();
        loop {
            let current = self.ptr.load(Ordering::Acquire);
            if let Some(t) = leaked(current).filter(|t| t.pid == me) {
                return Ok(&t.value);
            }
            let fresh = Box::into_raw(Box::new(Tagged { pid: me, value: init()? }));
            match self.ptr.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
                // `current`, if any, belonged to an ancestor process: leaked on purpose.
                Ok(_) => return Ok(&leaked(fresh).expect("just stored").value),
                // Another thread of this process won the race: drop ours, use theirs.
                Err(_) => discard(unbox(fresh).value),
            }
        }
    }
}

fn leaked<T>(ptr: *mut Tagged<T>) -> Option<&'static Tagged<T>> {
    // SAFETY: every non-null pointer stored in a `PerProcess` comes from `Box::into_raw` and
    // is never freed once published, so it is valid for 'static; it is only read through
    // shared references.
    unsafe { ptr.as_ref() }
}

fn unbox<T>(ptr: *mut Tagged<T>) -> Tagged<T> {
    // SAFETY: only called on a pointer from `Box::into_raw` that failed to be published,
    // so no other reference to it exists.
    let b = unsafe { Box::from_raw(ptr) };
    *b
}
