//! Mappings of a segment into this process: the crate's only unsafe code.
//!
//! # Safety
//!
//! A [`Mapping`] owns one `mmap(MAP_SHARED)` region of a memfd and unmaps it in `Drop`;
//! every access is bounds-checked against its length. The file never shrinks under it:
//! the crate maps only memfds sealed with `F_SEAL_SHRINK` (checked with
//! `F_GET_SEALS` before mapping), so no access can fault with SIGBUS.
//!
//! Mappings are `MADV_DONTFORK`: a forked child never inherits one.
//!
//! * [`Mapping::bytes`] hands out `&[u8]` only for a mapping made by
//!   [`Mapping::map_frozen`], of a memfd that carries `F_SEAL_WRITE`: the kernel then
//!   refuses every `write(2)` and every writable mapping of it, in every process, so the
//!   bytes cannot change while the reference lives.
//! * [`Mapping::bytes_mut`] hands out `&mut [u8]` of a writable mapping through
//!   `&mut self`: within this process nothing else can see those bytes. Another process
//!   of the same uid that opens the memfd through `/proc` before it is sealed could write
//!   them too; same-uid processes can already `ptrace` each other, so this is no new
//!   power, and the crate's own readers map a buffer only once it is write-sealed.
//! * Rings (shared, writable by two processes) are reached only through atomics
//!   ([`Mapping::atomic_u32`], [`Mapping::atomic_u64`]) and byte copies
//!   ([`Mapping::read`], [`Mapping::write`]) that never make a reference to the shared
//!   bytes. The SPSC protocol (acquire/release on head and tail) keeps the two ends off
//!   each other's bytes; a peer that breaks it can garble message contents, never this
//!   process's memory outside the mapping.
#![allow(unsafe_code)]

use crate::error::{Result, ShmError};
use rustix::fd::AsFd;
use rustix::mm::{MapFlags, ProtFlags};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// One `MAP_SHARED` mapping of a segment, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    frozen: bool,
}

// SAFETY: the mapping is plain memory owned by this value; shared access goes through
// atomics and bounds-checked copies, and `&[u8]` only exists for immutable (write-sealed)
// segments, so moving or sharing the handle between threads is as safe as for a `Vec<u8>`.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&self` methods only read immutable bytes, copy, or use atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: impl AsFd, len: usize, prot: ProtFlags, frozen: bool) -> Result<Mapping> {
        // A reader's mapping of a frozen buffer whose pages all exist is filled in at once
        // (`MAP_POPULATE`: one call instead of a fault per page; measured 190 -> 120 µs to
        // open and read one byte of every page of 1 MiB). Not a sparse one: populating
        // its holes would allocate them, so a peer could make us hold the memory of a
        // segment it never filled. A writable mapping stays lazy.
        let backed = || {
            rustix::fs::fstat(&fd)
                .is_ok_and(|st| u64::try_from(st.st_blocks).unwrap_or(0) * 512 >= len as u64)
        };
        let flags = if frozen && backed() {
            MapFlags::SHARED | MapFlags::POPULATE
        } else {
            MapFlags::SHARED
        };
        if len == 0 {
            return Err(ShmError::BadLength { len: 0, max: crate::limits::MAX_SEGMENT_BYTES });
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of a memfd whose size
        // the caller checked to be at least `len` and which is sealed against shrinking.
        let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) }
            .map_err(|e| ShmError::os("mmap", e))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns null on success");
        let mapping = Mapping { ptr, len, frozen };
        // A process forked from this one (the `main_thread_forkserver` backend forks the
        // root's own process) must not inherit the mapping: it would keep the segment's
        // memory alive, unseen, for its whole life.
        // SAFETY: advice on our own fresh mapping; `MADV_DONTFORK` changes no contents.
        unsafe { rustix::mm::madvise(ptr.as_ptr().cast(), len, rustix::mm::Advice::LinuxDontFork) }
            .map_err(|e| ShmError::os("madvise(MADV_DONTFORK)", e))?;
        Ok(mapping)
    }

    /// A writable mapping of the first `len` bytes of `fd`.
    pub(crate) fn map_writable(fd: impl AsFd, len: usize) -> Result<Mapping> {
        Mapping::map(fd, len, ProtFlags::READ | ProtFlags::WRITE, false)
    }

    /// A read-only mapping of the first `len` bytes of `fd`, which must carry
    /// `F_SEAL_WRITE` (checked here) so that its bytes can be lent as `&[u8]`.
    pub(crate) fn map_frozen(fd: impl AsFd, len: usize) -> Result<Mapping> {
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|e| ShmError::os("F_GET_SEALS", e))?;
        let need = rustix::fs::SealFlags::WRITE | rustix::fs::SealFlags::SHRINK;
        if !seals.contains(need) {
            return Err(ShmError::NotSealed { missing: crate::segment::seal_names(need - seals) });
        }
        Mapping::map(fd, len, ProtFlags::READ, true)
    }

    /// Its length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes of a write-sealed segment.
    pub(crate) fn bytes(&self) -> &[u8] {
        assert!(self.frozen, "bytes() of a mapping that is not write-sealed");
        // SAFETY: `len` bytes mapped readable at `ptr` for as long as `self`; the memfd
        // is write-sealed (checked in `map_frozen`), so nobody can change them.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes of this process's writable mapping.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        assert!(!self.frozen, "bytes_mut() of a read-only mapping");
        // SAFETY: `len` bytes mapped read-write at `ptr`, borrowed exclusively through
        // `&mut self` (see the module's Safety section for other processes).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn checked(&self, offset: usize, size: usize, align: usize) -> *mut u8 {
        assert!(
            offset.checked_add(size).is_some_and(|end| end <= self.len),
            "access of {size} bytes at {offset} beyond a {}-byte mapping",
            self.len
        );
        // SAFETY: `offset + size <= len`, inside the mapping.
        let p = unsafe { self.ptr.as_ptr().add(offset) };
        assert_eq!(p as usize % align, 0, "misaligned atomic at offset {offset}");
        p
    }

    /// The `AtomicU32` at `offset` (bounds and alignment checked).
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let p = self.checked(offset, 4, align_of::<AtomicU32>());
        // SAFETY: in bounds and aligned (checked), mapped for as long as `&self`; every
        // process touches these bytes only atomically.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    /// The `AtomicU64` at `offset` (bounds and alignment checked).
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        let p = self.checked(offset, 8, align_of::<AtomicU64>());
        // SAFETY: as for `atomic_u32`.
        unsafe { AtomicU64::from_ptr(p.cast()) }
    }

    /// Copies `out.len()` bytes from `offset` out of a (shared, writable) mapping.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        let p = self.checked(offset, out.len(), 1);
        // SAFETY: in bounds (checked); `out` is our own memory, never inside the mapping
        // (a `&mut [u8]` into it is never made for a writable mapping shared through
        // `&self`).
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) }
    }

    /// Copies `data` into the mapping at `offset`.
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        assert!(!self.frozen, "write() into a read-only mapping");
        let p = self.checked(offset, data.len(), 1);
        // SAFETY: in bounds (checked) of a writable mapping; `data` does not overlap it
        // (see `read`).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; every reference into it borrowed
        // `self`, so none outlives it.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
