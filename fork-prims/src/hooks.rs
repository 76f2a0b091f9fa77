//! Fork hooks: our `pthread_atfork`.
//!
//! A library with process-global state registers three callbacks: *prepare* runs on the
//! forkserver thread just before `fork` (take your locks, so no other thread holds them
//! at the instant of the fork), *parent* runs in the parent after `fork` (release them),
//! *child* runs in the child at the end of its prelude (release them and reset what the
//! child must not inherit, e.g. a connection pool or a runtime handle). As with
//! `pthread_atfork`, prepare hooks run in reverse registration order, parent and child
//! hooks in registration order.
//!
//! Built in, before any registered hook: the forkserver flushes and holds the stdout lock
//! and holds the stderr lock across `fork`, so a child never inherits them locked (the
//! tracing subscriber's default writer is stderr).

use crate::sync::LockExt;
use std::sync::{Arc, Mutex, MutexGuard};

type Hook = Box<dyn Fn() + Send + Sync>;

/// A set of fork callbacks; any of the three may be absent.
#[derive(Default)]
pub struct ForkHooks {
    pub(crate) prepare: Option<Hook>,
    pub(crate) parent: Option<Hook>,
    pub(crate) child: Option<Hook>,
}

impl std::fmt::Debug for ForkHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkHooks")
            .field("prepare", &self.prepare.is_some())
            .field("parent", &self.parent.is_some())
            .field("child", &self.child.is_some())
            .finish()
    }
}

impl ForkHooks {
    /// No callbacks yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Runs on the forkserver thread just before `fork`.
    pub fn prepare(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.prepare = Some(Box::new(f));
        self
    }
    /// Runs in the parent after `fork` (also when `fork` failed).
    pub fn parent(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.parent = Some(Box::new(f));
        self
    }
    /// Runs in the child at the end of its prelude, before the child's closure. It runs
    /// on the only thread of the child: it must not wait for any other thread.
    pub fn child(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.child = Some(Box::new(f));
        self
    }
}

static HOOKS: Mutex<Vec<Arc<ForkHooks>>> = Mutex::new(Vec::new());

/// Registers fork callbacks for every later fork of this process (and, being process
/// memory, of its forked children). There is no unregistration, as with
/// `pthread_atfork`.
pub fn register_fork_hooks(hooks: ForkHooks) {
    HOOKS.locked().push(Arc::new(hooks));
}

/// The hook list, locked: the forkserver holds this guard across `fork` so that no
/// other thread can hold the lock at that instant (a child that forks again needs it).
/// Hooks therefore must not register hooks.
pub(crate) fn lock() -> MutexGuard<'static, Vec<Arc<ForkHooks>>> {
    HOOKS.locked()
}
