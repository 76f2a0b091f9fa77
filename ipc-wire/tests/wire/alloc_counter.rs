//! A global allocator that records, per thread, the largest single allocation: lets a test
//! assert that hostile input did not make the process allocate what it claimed.
//!
//! # Safety
//!
//! `Counting` forwards every call unchanged to the system allocator, so it upholds
//! `GlobalAlloc`'s contract exactly as `System` does; the bookkeeping uses a const-initialized
//! thread-local `Cell`, which never allocates (no re-entrancy into the allocator).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

pub struct Counting;

fn record(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method delegates to `System` with the caller's arguments (see module docs).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Forgets the largest allocation seen so far on this thread.
pub fn reset_largest() {
    LARGEST.with(|l| l.set(0));
}

/// The largest single allocation this thread made since [`reset_largest`].
pub fn largest() -> usize {
    LARGEST.with(Cell::get)
}
