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
//! A large payload is not copied at all ([`Reserved`]): the message is built with the
//! payload's room *reserved* (`init_payload`, not `set_payload`), capnp puts that room in a
//! second segment of its own behind a far pointer, and the allocator hands it a segment
//! from a [`Scratch`] mapping that nothing ever writes to but the segment's first word (the
//! far pointer's landing pad). The encoder keeps the landing pad and sends the payload
//! from the caller's own bytes in its place (see `codec::encode_parts`), so the frame is
//! standard two-segment Cap'n Proto that any reader follows, and the mapping stays zero,
//! untouched and unfaulted apart from its first page.
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
//!
//! The reserved segment is a prefix of a [`Scratch`] mapping: anonymous memory, zero when
//! mapped, exclusively borrowed for `'a` through `&'a mut Scratch`, and given back zeroed
//! (the encoder clears the one word capnp wrote, [`Scratch::clear_landing_pad`]).
#![allow(unsafe_code)]

use capnp::message::{Allocator, HeapAllocator};
use std::ptr::NonNull;

/// Largest first segment we offer capnp, in words (capnp's own segment ceiling).
const MAX_SEGMENT_WORDS: usize = 1 << 29;

/// The allocator; see the module docs.
pub(crate) struct InPlace<'a> {
    first: Option<&'a mut [u8]>,
    first_ptr: Option<NonNull<u8>>,
    /// The reserved second segment ([`Reserved`]), if any: handed out once, at exactly
    /// the size capnp asks for, so that nothing else is ever placed in it.
    reserved: Option<Reserved<'a>>,
    reserved_ptr: Option<NonNull<u8>>,
    heap: HeapAllocator,
}

/// A segment for a large payload's reserved room: `words` words of a [`Scratch`] mapping.
pub(crate) struct Reserved<'a> {
    ptr: NonNull<u8>,
    words: usize,
    _scratch: std::marker::PhantomData<&'a mut Scratch>,
}

impl Reserved<'_> {
    /// Where the segment starts.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl<'a> InPlace<'a> {
    /// `region` must be zeroed; its length is rounded down to whole words.
    pub(crate) fn new(region: &'a mut [u8]) -> Self {
        debug_assert!(region.iter().all(|b| *b == 0), "the first segment must be zeroed");
        Self {
            first: Some(region),
            first_ptr: None,
            reserved: None,
            reserved_ptr: None,
            heap: HeapAllocator::new(),
        }
    }

    /// As [`InPlace::new`], with `reserved` for the one allocation of exactly its size that
    /// does not fit the first segment (a payload's room and its landing pad).
    pub(crate) fn with_reserved(region: &'a mut [u8], reserved: Reserved<'a>) -> Self {
        Self { reserved_ptr: Some(reserved.ptr), reserved: Some(reserved), ..Self::new(region) }
    }
}

/// A zeroed anonymous mapping that reserved payload segments are cut from (see the module
/// docs). Grown on demand, kept for the next large payload; its pages are never written
/// but the first word, so it costs address space, not memory.
pub(crate) struct Scratch {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Scratch` owns its mapping outright (no aliasing pointer escapes but through
// `&mut self` borrows), so moving it to another thread is sound.
unsafe impl Send for Scratch {}

impl Scratch {
    /// No mapping yet.
    pub(crate) const fn new() -> Self {
        Self { ptr: NonNull::dangling(), len: 0 }
    }

    /// A reserved segment of `words` words (mapping or growing the scratch first), or
    /// `None` when the kernel will not map that much.
    pub(crate) fn reserve(&mut self, words: usize) -> Option<Reserved<'_>> {
        let bytes = words.checked_mul(8)?;
        if bytes > self.len {
            self.unmap();
            let len = bytes.checked_next_power_of_two()?.max(1 << 20);
            use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};
            // SAFETY: a fresh private anonymous mapping at an address of the kernel's
            // choosing aliases nothing.
            let ptr = unsafe {
                mmap_anonymous(
                    std::ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::PRIVATE | MapFlags::NORESERVE,
                )
            }
            .ok()?;
            self.ptr = NonNull::new(ptr.cast::<u8>())?;
            self.len = len;
        }
        Some(Reserved { ptr: self.ptr, words, _scratch: std::marker::PhantomData })
    }

    /// The first word of the last reserved segment: the landing pad capnp wrote there.
    pub(crate) fn landing_pad(&self) -> [u8; 8] {
        if self.len == 0 {
            return [0; 8];
        }
        // SAFETY: the mapping is at least one page long and readable; no borrow of it is
        // alive (`&self`, and `Reserved` borrows `&mut self`).
        unsafe { std::ptr::read_unaligned(self.ptr.as_ptr().cast::<[u8; 8]>()) }
    }

    /// Zeroes the first word again, so the mapping is all zero for the next payload:
    /// capnp writes nothing else in a reserved segment (its room is `init`ialised only).
    pub(crate) fn clear_landing_pad(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: as `landing_pad`, and writable; `&mut self` excludes other borrows.
        unsafe { std::ptr::write_unaligned(self.ptr.as_ptr().cast::<[u8; 8]>(), [0; 8]) }
    }

    /// Zeroes the first `words` words (all a reserved segment of that size may have had
    /// written to it), for a message capnp laid out otherwise than planned.
    pub(crate) fn zero(&mut self, words: usize) {
        let len = words.saturating_mul(8).min(self.len);
        // SAFETY: `len` bytes of our own writable mapping; `&mut self` excludes borrows.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, len) }
    }

    fn unmap(&mut self) {
        if self.len != 0 {
            // SAFETY: `ptr`/`len` are exactly a mapping we made and still own; no borrow
            // of it is alive (`&mut self`).
            let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
            self.len = 0;
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.unmap();
    }
}

// SAFETY: see the module docs: the in-place segment is zeroed, exclusively borrowed for
// longer than the builder lives, disjoint from the heap segments, and handed out once;
// the reserved segment likewise (zero scratch pages, borrowed through `&'a mut Scratch`,
// handed out once, at most its `words`);
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
        if let Some(r) = self.reserved.take_if(|r| r.words == minimum_size as usize) {
            return (r.ptr, minimum_size);
        }
        self.heap.allocate_segment(minimum_size)
    }

    unsafe fn deallocate_segment(&mut self, ptr: NonNull<u8>, word_size: u32, words_used: u32) {
        if Some(ptr) == self.first_ptr || self.reserved_ptr == Some(ptr) {
            // The in-place segment is the output, the reserved one the scratch's: leave
            // their contents alone.
            return;
        }
        // SAFETY: every other segment came from `self.heap.allocate_segment`, and capnp
        // passes back the size it was given, once (the caller's contract).
        unsafe { self.heap.deallocate_segment(ptr, word_size, words_used) }
    }
}
