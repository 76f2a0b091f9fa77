//! The one process-global struct of runtime settings.
//!
//! A forked child inherits its parent's memory, globals included; an exec'd child starts
//! empty. Either way the child's settings must come from its `SpawnSpec`, not from what it
//! happened to inherit. So all of them live in one struct with a pure [`get`] (optionally
//! clearing) and an explicit [`set`]: a forked child resets what it inherited in one line,
//! `set(spec_vars)` after `get(true)`.

//!
//! Fork safety: the lock must not be held by another thread at the instant of a fork, or
//! the child could never read its vars. [`fork_prepare`], [`fork_parent`] and
//! [`fork_child`] are the three fork hooks (prepare takes the lock on the forking thread,
//! parent and child release it); the forkserver backend registers them.

use super::sync::LockExt;
use plough_ipc_wire::msg::RuntimeVars;
use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard};

static VARS: Mutex<Option<RuntimeVars>> = Mutex::new(None);

thread_local! {
    /// The guard held across a fork, on the forking thread only.
    static HELD: RefCell<Option<MutexGuard<'static, Option<RuntimeVars>>>> = const { RefCell::new(None) };
}

/// Fork hook, before `fork`: holds the vars lock on the forking thread.
pub(crate) fn fork_prepare() {
    let guard = VARS.locked();
    HELD.with(|h| *h.borrow_mut() = Some(guard));
}

/// Fork hook, in the parent after `fork`: releases the lock.
pub(crate) fn fork_parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

/// Fork hook, in the child: releases the lock (the child then resets the vars from its
/// `SpawnSpec` with `get(true)` + `set`).
pub(crate) fn fork_child() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

/// This process's runtime vars (defaults if never set). With `clear`, they are also reset
/// to "never set".
pub(crate) fn get(clear: bool) -> RuntimeVars {
    let mut guard = VARS.locked();
    if clear { guard.take().unwrap_or_default() } else { guard.clone().unwrap_or_default() }
}

/// Replaces this process's runtime vars.
pub(crate) fn set(vars: RuntimeVars) {
    *VARS.locked() = Some(vars);
}

#[cfg(test)]
/// Whether [`set`] was called since the last clearing [`get`].
pub(crate) fn is_set() -> bool {
    VARS.locked().is_some()
}

/// This process's actor label for log lines, e.g. `worker-1@4242 (main_thread_forkserver)`;
/// empty before the actor is up. Lock-free (a leaked string swapped atomically), so a
/// forked child never inherits a held lock through it; the child sets its own label.
pub fn actor_label() -> &'static str {
    let p = LABEL.load(std::sync::atomic::Ordering::Acquire);
    if p.is_null() {
        return "";
    }
    leaked_label(p)
}

/// Sets this process's actor label (done by the runtime when the actor is up).
pub(crate) fn set_actor_label(label: String) {
    let p: &'static mut String = Box::leak(Box::new(label));
    // The previous label (if any) is leaked on purpose: readers may still hold it.
    LABEL.store(p, std::sync::atomic::Ordering::Release);
}

/// Back to "no actor here" (the root's runtime ended): the vars to their defaults, the
/// label empty.
pub(crate) fn reset() {
    let _ = get(true);
    // The label is leaked, as when it is replaced: readers may still hold it.
    LABEL.store(std::ptr::null_mut(), std::sync::atomic::Ordering::Release);
}

/// How this program applies a log filter to plough's own subscriber (the `plough`
/// facade registers it; `None`: nothing to apply it to).
static LOG_FILTER: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Registers how a child applies the log level its spawn chose (`SpawnOptions::log_level`)
/// to plough's own tracing subscriber: the `plough` facade does this, and its hook never
/// touches a subscriber the program installed itself. Set once per process (a forked
/// child inherits it); later calls are ignored.
pub fn set_log_filter_hook(hook: fn(&str)) {
    let _ = LOG_FILTER.set(hook);
}

/// Applies `filter` through the registered hook, if any.
pub(crate) fn apply_log_filter(filter: &str) {
    if let Some(hook) = LOG_FILTER.get() {
        hook(filter);
    }
}

static LABEL: std::sync::atomic::AtomicPtr<String> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

fn leaked_label(p: *mut String) -> &'static str {
    #[allow(unsafe_code)]
    // SAFETY: `p` was produced by `Box::leak` in `set_actor_label` and is never freed.
    let s: &'static String = unsafe { &*p };
    s.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_clear_then_set_and_fork_hooks() {
        let _ = get(true);
        assert!(!is_set());
        assert_eq!(get(false), RuntimeVars::default());
        let vars = RuntimeVars {
            is_root: true,
            spawn_method: "exec".into(),
            log_level: "debug".into(),
            ..RuntimeVars::default()
        };
        set(vars.clone());
        assert!(is_set());
        assert_eq!(get(false), vars);
        assert_eq!(get(true), vars);
        assert!(!is_set());
        assert_eq!(get(false), RuntimeVars::default());

        // (Same test: the vars are one global, so their tests must not run in parallel.)
        fork_prepare();
        assert!(VARS.try_lock().is_err(), "prepare must hold the lock");
        fork_parent();
        assert!(VARS.try_lock().is_ok());
        fork_prepare();
        fork_child();
        assert!(VARS.try_lock().is_ok());
    }
}
