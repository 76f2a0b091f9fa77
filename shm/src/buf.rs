//! Shared buffers with typed views: [`ShmBufMut`] (the owner fills it) → [`ShmBuf`]
//! (write-sealed, shared by [`ShmHandle`], mapped read-only and zero-copy by readers).

use crate::error::{Result, ShmError};
use crate::map::Mapping;
use crate::segment::{Segment, SegmentRef};
use bytemuck::Pod;
use rustix::fs::SealFlags;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// A serializable reference to a shared buffer: send it in a call argument or a stream
/// item; the receiver opens it with [`ShmBuf::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShmHandle {
    /// The segment.
    pub segment: SegmentRef,
    /// `size_of` the element type the buffer was made of.
    pub elem_size: u64,
}

impl ShmHandle {
    /// The buffer's length in bytes.
    pub fn byte_len(&self) -> u64 {
        self.segment.len
    }
}

fn byte_len<T>(len: usize) -> Result<u64> {
    let bytes = len.checked_mul(size_of::<T>()).and_then(|b| u64::try_from(b).ok());
    bytes.ok_or(ShmError::BadLength { len: u64::MAX, max: crate::limits::MAX_SEGMENT_BYTES })
}

fn cast<T: Pod>(bytes: &[u8], elem_size: u64) -> Result<&[T]> {
    let mismatch = || ShmError::ElementMismatch {
        elem_size,
        len: bytes.len() as u64,
        asked: size_of::<T>() as u64,
    };
    if elem_size != size_of::<T>() as u64 {
        return Err(mismatch());
    }
    bytemuck::try_cast_slice(bytes).map_err(|_| mismatch())
}

/// A buffer this process owns and is still filling: `len` elements of `T`, zeroed at
/// first, writable through [`as_mut_slice`](Self::as_mut_slice). Nobody else can map it
/// until [`freeze`](Self::freeze) seals it.
#[derive(Debug)]
pub struct ShmBufMut<T: Pod> {
    segment: Segment,
    map: Mapping,
    _elem: PhantomData<T>,
}

impl<T: Pod> ShmBufMut<T> {
    /// A zeroed buffer of `len` elements (`len * size_of::<T>()` bytes, at least one).
    pub fn new(len: usize) -> Result<Self> {
        let segment = Segment::create(byte_len::<T>(len)?)?;
        let map = Mapping::map_writable(segment.fd(), segment.reference().len as usize)?;
        Ok(ShmBufMut { segment, map, _elem: PhantomData })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[T]) -> Result<Self> {
        let mut buf = ShmBufMut::new(data.len())?;
        buf.as_mut_slice().copy_from_slice(data);
        Ok(buf)
    }

    /// The elements, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.map.bytes_mut())
    }

    /// Seals the buffer against writing (`F_SEAL_WRITE | F_SEAL_SEAL`; it already cannot
    /// shrink or grow), maps it read-only, and makes it shareable. Fails (with
    /// `EBUSY`) if some other process mapped it writable meanwhile.
    pub fn freeze(self) -> Result<ShmBuf<T>> {
        let ShmBufMut { segment, map, .. } = self;
        drop(map);
        segment.seal(SealFlags::WRITE | SealFlags::SEAL)?;
        let map = Mapping::map_frozen(segment.fd(), segment.reference().len as usize)?;
        let handle = ShmHandle { segment: segment.reference(), elem_size: size_of::<T>() as u64 };
        Ok(ShmBuf { _segment: Some(segment), map, handle, _elem: PhantomData })
    }
}

/// An immutable shared buffer of `T`: the owner's (after [`ShmBufMut::freeze`]) or a
/// reader's (from [`ShmBuf::open`]). It derefs to `&[T]`, read straight from the shared
/// pages (zero-copy). Dropping it unmaps it; the owner's drop also closes the memfd, after
/// which no new reader can open it (the kernel frees the memory once the last reader
/// unmaps).
#[derive(Debug)]
pub struct ShmBuf<T: Pod> {
    /// The memfd, held by the owner only (readers need only their mapping).
    _segment: Option<Segment>,
    map: Mapping,
    handle: ShmHandle,
    _elem: PhantomData<T>,
}

/// A shared buffer of bytes.
pub type ShmBytes = ShmBuf<u8>;

impl<T: Pod> ShmBuf<T> {
    /// Maps the buffer a handle names, read-only, after checking the handle against the
    /// kernel's view (see [`ShmError`] for each refusal): the owner is alive and ours, the
    /// file is our memfd, mode 0600, sealed against writing and shrinking, and at least
    /// as long as the handle says; `T` has the handle's element size. A refusal maps
    /// nothing.
    ///
    /// The length is the sender's claim (up to
    /// [`MAX_SEGMENT_BYTES`](crate::limits::MAX_SEGMENT_BYTES)): mapping costs only
    /// address space, but reading a page its owner never wrote allocates it, so check
    /// [`ShmHandle::byte_len`] against your own budget before reading a stranger's buffer
    /// through.
    pub fn open(handle: &ShmHandle) -> Result<ShmBuf<T>> {
        if handle.elem_size != size_of::<T>() as u64
            || handle.segment.len % handle.elem_size.max(1) != 0
        {
            return Err(ShmError::ElementMismatch {
                elem_size: handle.elem_size,
                len: handle.segment.len,
                asked: size_of::<T>() as u64,
            });
        }
        let need = SealFlags::SHRINK | SealFlags::WRITE;
        let fd = handle.segment.open(need, false)?;
        let map = Mapping::map_frozen(&fd, handle.segment.len as usize)?;
        cast::<T>(map.bytes(), handle.elem_size)?;
        Ok(ShmBuf { _segment: None, map, handle: *handle, _elem: PhantomData })
    }

    /// The handle to send to readers.
    pub fn handle(&self) -> ShmHandle {
        self.handle
    }

    /// Whether this process owns the buffer.
    pub fn is_owner(&self) -> bool {
        self._segment.is_some()
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        cast(self.map.bytes(), self.handle.elem_size).expect("checked when mapped")
    }

    /// The bytes (a bytes view of any buffer).
    pub fn as_bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.map.len() / size_of::<T>().max(1)
    }

    /// Whether it holds no element (never: a segment has at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Pod> std::ops::Deref for ShmBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}
