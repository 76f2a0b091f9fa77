//! Locking a `std::sync::Mutex` whatever a panicking thread left behind: [`LockExt`].
//!
//! A `Mutex` is *poisoned* when a thread panics while holding its guard; from then on
//! `lock()` returns `Err`, and the usual `lock().unwrap()` turns that one panic into a
//! panic of every later user. In plough that would be the wrong trade. The locks that
//! plough's bookkeeping holds (here a child's cached exit status, the queue of children
//! for the reaper thread and the fork-hook list; in the crates above, their own tables)
//! are what reaps children and lets nurseries exit. If one panicking task (an RPC
//! handler, a user's fork hook, a `Drop`) could wedge them, every later spawn, wait or
//! reap would panic too, and the runtime's first promise (no orphan, no zombie) would be
//! broken by the very panic it is meant to survive. So plough takes the lock anyway.
//!
//! That is sound only where the guarded data is valid at every point a panic can leave a
//! critical section. A site meets that if it only reads, or changes the data in one step
//! that either happens whole or not at all: an assignment of a value computed before
//! it, a `Vec::push` or `Vec::append` (which leave the vectors as they were if they
//! fail). A critical section that updates two things in turn, and so can leave them out
//! of step, must not use [`LockExt::locked`]. This crate's sites, checked:
//!
//! * `ChildHandle::status` (`Option<ExitStatus>`, `Copy`): `try_wait` assigns the result
//!   of a `waitid` that has already returned; `exit_status` and `signal` only read.
//! * The reap queue's `incoming` (`Vec<Entry>`): `push` from `Drop`, and `append` into the
//!   reaper thread's own list.
//! * The fork-hook list (`Vec<Arc<ForkHooks>>`): `push` on registration. The forkserver
//!   holds the guard across `fork`, and user hooks run under it, but it only reads the
//!   list there: a hook that panics leaves the list as it was.
//!
//! The poison flag itself is left set, for any code that wants to know that a panic
//! happened.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// [`Mutex::lock`] that ignores poisoning: see the [module docs](self) for when that is
/// right.
///
/// ```
/// use plough_fork_prims::sync::LockExt;
/// use std::sync::Mutex;
///
/// let m = Mutex::new(vec![1]);
/// m.locked().push(2);
/// assert_eq!(*m.locked(), [1, 2]);
/// ```
pub trait LockExt<T: ?Sized>: private::Sealed {
    /// Blocks until the lock is ours, as [`Mutex::lock`], and returns the guard even when
    /// another thread panicked while holding it.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    #[inline]
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

mod private {
    /// Only `std::sync::Mutex` implements [`super::LockExt`].
    pub trait Sealed {}
    impl<T: ?Sized> Sealed for std::sync::Mutex<T> {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_mutex_still_locks_with_the_data_as_it_was_left() {
        let m = Arc::new(Mutex::new(vec![1, 2]));
        let m2 = Arc::clone(&m);
        let panicked = std::thread::spawn(move || {
            let mut guard = m2.lock().unwrap();
            guard.push(3);
            panic!("a task panicked while holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(m.is_poisoned());
        assert!(m.lock().is_err(), "plain lock() refuses");
        assert_eq!(*m.locked(), [1, 2, 3]);
        m.locked().push(4);
        assert_eq!(*m.locked(), [1, 2, 3, 4]);
        assert!(m.is_poisoned(), "the flag stays set");
    }

    #[test]
    fn an_unpoisoned_mutex_locks_as_usual_also_unsized_and_static() {
        static COUNT: Mutex<u32> = Mutex::new(0);
        *COUNT.locked() += 1;
        assert_eq!(*COUNT.locked(), 1);
        let m: Box<Mutex<[u8]>> = Box::new(Mutex::new([7u8, 8]));
        m.locked()[0] = 9;
        assert_eq!(&*m.locked(), &[9, 8]);
        assert!(!m.is_poisoned());
    }
}
