//! [`BufferedBytes`]: the bytes that the stream buffers of one connection hold in all.
//!
//! Every stream buffer is bounded on its own, in messages and in bytes; a peer with many
//! contexts open could still make the sum of them large (a thousand contexts at their full
//! byte budget each). The contexts of a connection therefore charge what they buffer to
//! the connection's budget too, [`Budgets::stream_buffers`](crate::Budgets::stream_buffers):
//! a message that would take the sum over it is refused like one over its own stream's
//! budget, as an overrun of that stream, and the connection serves on. A stream gives
//! back what its reader consumed with each credit batch (half its message buffer, or
//! 1 MiB), so the sum may count up to one batch per stream that was read already: never
//! less than the buffers hold.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A budget of buffered stream bytes, shared by the contexts of one connection.
#[derive(Debug)]
pub(crate) struct BufferedBytes {
    used: AtomicUsize,
    limit: usize,
}

impl BufferedBytes {
    /// A budget of `limit` bytes in all.
    pub(crate) fn new(limit: usize) -> Self {
        BufferedBytes { used: AtomicUsize::new(0), limit }
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Charges `n` bytes, or returns what was charged already when that would go over the
    /// limit. One message is always admitted while nothing is charged, whatever its size,
    /// so that a budget below the frame size never wedges a stream.
    pub(crate) fn charge(&self, n: usize) -> Result<(), usize> {
        // One atomic add in the common case (this runs for every stream message); a
        // charge over the limit is taken back at once.
        let used = self.used.fetch_add(n, Ordering::AcqRel);
        if used == 0 || used.saturating_add(n) <= self.limit {
            return Ok(());
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        Err(used)
    }

    /// Returns `n` bytes charged before.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_one_message_when_empty_whatever_its_size() {
        let b = BufferedBytes::new(100);
        assert_eq!(b.charge(250), Ok(()), "alone, an oversized message is admitted");
        assert_eq!(b.charge(1), Err(250));
        b.release(250);
        assert_eq!(b.charge(60), Ok(()));
        assert_eq!(b.charge(40), Ok(()));
        assert_eq!(b.charge(1), Err(100), "the limit is inclusive");
        b.release(40);
        assert_eq!((b.used(), b.limit()), (60, 100));
    }
}
