//! A Cap'n Proto segment allocator whose first segment is a slice of the output buffer.
//!
//! Building a message normally means building it in the allocator's segments and then
//! copying the segments into the write buffer — a second full copy of every payload, which
//! is what caps throughput for large messages. Here the first segment *is* the write
//! buffer's tail: the encoder zero-extends the buffer by an upper bound of the message size,
//! the builder writes straight into it, and the frame is finished by writing the 8-byte
//! segment table in front and truncating the unused rest. A payload is copied once, from
//! the caller's bytes into the frame. Should the bound be wrong, capnp asks for more
//! segments, which come from the heap, and the encoder falls back to copying.
//!
//! # Safety
//!
//! `capnp::message::Allocator` is an `unsafe trait`: a segment must be zeroed, valid for
//! reads and writes for the life of the builder, not overlap other segments, and be 8-byte
//! aligned unless capnp's `unaligned` feature is on (it is, in this crate's manifest). The
//! first segment is a `&'a mut [u8]` that the encoder zero-filled (`BytesMut::resize`), so it
//! is zeroed, exclusively borrowed for `'a` (which outlives the builder that owns this
//! allocator), and disjoint from the heap segments. It is handed out at most once. Heap
//! segments are delegated to capnp's own `HeapAllocator`, which upholds the contract itself.
#![allow(unsafe_code)]

use capnp::message::{Allocator, HeapAllocator};
use std::ptr::NonNull;

/// Largest first segment we offer capnp, in words (capnp's own segment ceiling).
const MAX_SEGMENT_WORDS: usize = 1 << 29;

/// The allocator; see the module docs.
pub(crate) struct InPlace<'a> {
    first: Option<&'a mut [u8]>,
    first_ptr: Option<NonNull<u8>>,
    heap: HeapAllocator,
}

impl<'a> InPlace<'a> {
    /// `region` must be zeroed; its length is rounded down to whole words.
    pub(crate) fn new(region: &'a mut [u8]) -> Self {
        debug_assert!(region.iter().all(|b| *b == 0), "the first segment must be zeroed");
        Self { first: Some(region), first_ptr: None, heap: HeapAllocator::new() }
    }
}

// SAFETY: see the module docs: the in-place segment is zeroed, exclusively borrowed for
// longer than the builder lives, disjoint from the heap segments, and handed out once;
// alignment is not required (capnp's `unaligned` feature). Heap segments come from capnp's
// `HeapAllocator`, which is a correct `Allocator`.
unsafe impl Allocator for InPlace<'_> {
    fn allocate_segment(&mut self, minimum_size: u32) -> (NonNull<u8>, u32) {
        if let Some(region) = self.first.take() {
            let words = (region.len() / 8).min(MAX_SEGMENT_WORDS);
            if words >= minimum_size as usize && words > 0 {
                let ptr = NonNull::from(region).cast::<u8>();
                self.first_ptr = Some(ptr);
                return (ptr, words as u32);
            }
        }
        self.heap.allocate_segment(minimum_size)
    }

    unsafe fn deallocate_segment(&mut self, ptr: NonNull<u8>, word_size: u32, words_used: u32) {
        if Some(ptr) == self.first_ptr {
            // The in-place segment is the output: leave its contents alone.
            return;
        }
        // SAFETY: every other segment came from `self.heap.allocate_segment`, and capnp
        // passes back the size it was given, once (the caller's contract).
        unsafe { self.heap.deallocate_segment(ptr, word_size, words_used) }
    }
}
