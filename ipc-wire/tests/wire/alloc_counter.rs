//! A global allocator that records, per thread, the largest single allocation and the peak
//! of bytes live: lets a test assert that hostile input did not make the process allocate
//! what it claimed, nor more than a small multiple of what it sent.
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
    /// Bytes allocated minus bytes freed on this thread since [`reset_peak`] (a free of
    /// memory allocated before it, or on another thread, can make it negative).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn live(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get() + delta;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

pub struct Counting;

fn record(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method delegates to `System` with the caller's arguments (see module docs).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        live(layout.size() as isize);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        live(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // While it moves, old and new are both live.
        live(new_size as isize);
        live(-(layout.size() as isize));
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

/// Starts counting the peak of bytes live on this thread from now.
pub fn reset_peak() {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
}

/// The most bytes this thread had allocated and not freed at once since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.with(Cell::get).max(0) as usize
}
