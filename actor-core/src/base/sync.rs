//! The one lock helper of the crate.
//!
//! Every mutex here guards bookkeeping that is consistent between any two statements
//! (maps of routes, flags, buffers updated by single inserts and removes), so a panic in
//! another task while it held the lock leaves nothing half-written: poisoning carries no
//! information, and honouring it would turn one panicking handler into a wedged actor.
//! [`LockExt::locked`] therefore takes the lock whether or not it is poisoned.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// `Mutex::lock` that ignores poisoning (see the module doc for why that is sound here).
pub(crate) trait LockExt<T: ?Sized> {
    /// Locks, recovering the guard of a poisoned mutex.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(41));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 42);
    }
}
