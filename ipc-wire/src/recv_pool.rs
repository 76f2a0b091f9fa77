//! Read buffers for large frames, used again once their frames are dropped.
//!
//! A frame is a slice of the connection's read buffer, handed on without copying, so a
//! large frame still alive (a payload in a stream's buffer, in a caller's hands) keeps its
//! buffer busy, and the next large frame needs another. Allocated fresh each time, a
//! buffer of a megabyte comes from the kernel as new pages more often than not (the
//! allocator maps large blocks, or trims its heap once they are freed), and every page
//! then costs a fault and a clearing before the socket's bytes can be copied in: as much
//! as the copy itself. [`RecvPool`] keeps the last few large buffers and reads the next
//! large frame into one whose frames are all gone ([`BytesMut::try_reclaim`]), so a
//! reader that keeps up reads into the same warm pages over and over.
//!
//! It holds at most [`RecvPool::BUFFERS`] buffers of at most [`RecvPool::MAX_BUFFER`]
//! bytes each; a larger frame gets a buffer of its own that is freed with it.

use bytes::BytesMut;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct RecvPool {
    /// Large buffers, each empty or shared with frames still alive.
    spare: Vec<BytesMut>,
    /// The connection's small read buffer while a large frame is read into a pooled one.
    parked: Option<BytesMut>,
}

impl RecvPool {
    /// A frame at least this large is read into a pooled buffer.
    pub(crate) const MIN_FRAME: usize = 64 << 10;
    /// Buffers kept at most.
    pub(crate) const BUFFERS: usize = 4;
    /// A buffer larger than this is not kept.
    pub(crate) const MAX_BUFFER: usize = 4 << 20;

    /// Moves the partial frame at the front of `src` (`total` bytes once whole) into a
    /// buffer with room for all of it: a spare one whose frames are gone, or a new one.
    /// `src` becomes that buffer; what it was is parked until [`RecvPool::frame_taken`].
    pub(crate) fn read_into_large(&mut self, src: &mut BytesMut, total: usize) {
        let at = self.spare.iter_mut().position(|b| b.try_reclaim(total));
        let mut large = match at {
            Some(i) => self.spare.swap_remove(i),
            None => BytesMut::with_capacity(total),
        };
        large.extend_from_slice(src);
        let mut small = std::mem::replace(src, large);
        if self.parked.is_none() {
            small.clear();
            self.parked = Some(small);
        }
    }

    /// The frame read into a large buffer was split off `src`: the bytes after it (the
    /// start of the next frame) go back to the parked small buffer, which becomes `src`
    /// again, and the large one waits as a spare for its frame to be dropped.
    pub(crate) fn frame_taken(&mut self, src: &mut BytesMut) {
        let Some(mut small) = self.parked.take() else { return };
        small.extend_from_slice(src);
        let mut large = std::mem::replace(src, small);
        large.clear();
        if large.capacity() <= Self::MAX_BUFFER {
            if self.spare.len() >= Self::BUFFERS {
                // The oldest is the most likely to be free soon; keep the newest instead.
                self.spare.remove(0);
            }
            self.spare.push(large);
        }
    }

    /// Whether a large frame is being read into a pooled buffer.
    pub(crate) fn reading_large(&self) -> bool {
        self.parked.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_used_again_once_its_frame_is_dropped_and_not_before() {
        let mut pool = RecvPool::default();
        let total = 1 << 20;
        let mut src = BytesMut::with_capacity(8 << 10);
        src.extend_from_slice(&[1; 100]);
        pool.read_into_large(&mut src, total);
        assert!(pool.reading_large());
        assert!(src.capacity() >= total);
        assert_eq!(&src[..], &[1; 100][..], "the partial frame moved along");
        let a_ptr = src.as_ptr();
        src.resize(total, 1);
        let a = src.split_to(total).freeze();
        pool.frame_taken(&mut src);
        assert!(!pool.reading_large());
        assert!(src.capacity() < total, "back to the small buffer");

        // Its frame is alive: the next large frame gets another buffer.
        pool.read_into_large(&mut src, total);
        assert_ne!(src.as_ptr(), a_ptr);
        src.resize(total, 2);
        let b = src.split_to(total).freeze();
        pool.frame_taken(&mut src);
        assert_eq!(pool.spare.len(), 2);

        // Both dropped: the next one reads into one of them, and the bytes of the frame
        // after it, read along, go back to the small buffer.
        drop((a, b));
        pool.read_into_large(&mut src, total - 1000);
        assert!(src.capacity() >= total);
        assert_eq!(pool.spare.len(), 1, "one spare taken, one left");
        src.resize(total, 3);
        let c = src.split_to(total - 1000).freeze();
        pool.frame_taken(&mut src);
        assert_eq!(&src[..], &[3; 1000][..], "the next frame's start is kept");
        assert!(src.capacity() < total);
        assert_eq!(c.len(), total - 1000);
    }

    #[test]
    fn the_pool_is_bounded_in_buffers_and_in_size() {
        let mut pool = RecvPool::default();
        let mut src = BytesMut::new();
        let mut alive = Vec::new();
        for _ in 0..2 * RecvPool::BUFFERS {
            pool.read_into_large(&mut src, 1 << 20);
            src.resize(1 << 20, 0);
            alive.push(src.split_to(1 << 20).freeze());
            pool.frame_taken(&mut src);
        }
        assert_eq!(pool.spare.len(), RecvPool::BUFFERS);
        let huge = RecvPool::MAX_BUFFER + 1;
        pool.read_into_large(&mut src, huge);
        src.resize(huge, 0);
        drop(src.split_to(huge));
        pool.frame_taken(&mut src);
        assert!(pool.spare.iter().all(|b| b.capacity() <= RecvPool::MAX_BUFFER));
    }
}
