//! Stream credit in messages and bytes: the sender's side ([`SendCredit`]) and the
//! receiver's admission rule ([`admits`]), which must agree.
//!
//! A receiver's buffer is bounded twice, in messages and in payload bytes, and it enforces
//! both whatever the sender does: a message over either bound is an overrun. A sender in
//! backpressure mode holds credit for both and never breaks them. The hazards designed
//! out here:
//!
//! * **A message larger than the whole budget wedging the stream.** A 16 MiB message can
//!   never fit "under" a 16 MiB budget that holds anything at all, so the rule has an
//!   exception, the same on both sides: a message larger than the room left is admitted
//!   when the room left is at least [`OVERSIZE_ROOM`] (the default budget minus
//!   [`GRANT_BYTES`]), i.e. when the buffer holds at most 1 MiB (with the default budget).
//!   The buffer then holds that one message and what was there. The sender checks the
//!   same thing against its credit, which is never more than the receiver's room.
//! * **Credit withheld while both sides wait.** The receiver grants credit back in batches
//!   (after half its message buffer, or [`GRANT_BYTES`], was consumed) so that small
//!   messages cost one grant per many. A sender waiting for the room for a large message
//!   while the receiver sits on less than a batch of ungranted credit would wait forever
//!   if that large message needed *all* the credit back; it needs only [`OVERSIZE_ROOM`],
//!   and the receiver never withholds more than [`GRANT_BYTES`] of it.
//! * **Credit that drifts.** Byte credit is counted in the payload's exact length on both
//!   sides, and may go below zero after an oversized message: it comes back as that
//!   message is consumed, so the sender's count is always the receiver's budget minus
//!   what it sent and has not had granted back.

use super::stream::{INITIAL_CREDIT, STREAM_BUFFER_BYTES};
use crate::base::sync::LockExt;
use crate::connection::Credit;
use std::sync::Mutex;
use tokio::sync::Notify;

/// A receiver grants byte credit back once it has consumed this much ungranted (1 MiB),
/// so it never withholds more.
pub(crate) const GRANT_BYTES: usize = 1 << 20;

/// The room a message larger than the room left needs to be admitted: the default byte
/// budget minus what a receiver may withhold (15 MiB).
pub(crate) const OVERSIZE_ROOM: usize = STREAM_BUFFER_BYTES - GRANT_BYTES;

/// Whether a receiver whose buffer holds `buffered` bytes of its `budget` admits a
/// message of `len` bytes (the count of messages is checked apart).
pub(crate) fn admits(buffered: usize, budget: usize, len: usize) -> bool {
    let room = budget.saturating_sub(buffered);
    len <= room || room >= OVERSIZE_ROOM
}

/// What a backpressured sender may still send; closed when the stream can send no more.
pub(crate) struct SendCredit {
    state: Mutex<State>,
    notify: Notify,
}

struct State {
    messages: u64,
    /// Below zero after an oversized message, until it is granted back.
    bytes: i64,
    closed: bool,
}

/// The stream ended while the sender waited for credit.
#[derive(Debug)]
pub(crate) struct CreditClosed;

impl SendCredit {
    /// What every sender starts with: [`INITIAL_CREDIT`] messages (the receiver's buffer
    /// may be that small; it grants the rest when it opens its stream) and the default
    /// byte budget.
    pub(crate) fn new() -> Self {
        SendCredit {
            state: Mutex::new(State {
                messages: INITIAL_CREDIT as u64,
                bytes: STREAM_BUFFER_BYTES as i64,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    /// The receiver granted `credit` back.
    pub(crate) fn grant(&self, credit: Credit) {
        {
            let mut s = self.state.locked();
            if s.closed {
                return;
            }
            s.messages = s.messages.saturating_add(u64::from(credit.messages));
            s.bytes = s.bytes.saturating_add(i64::try_from(credit.bytes).unwrap_or(i64::MAX));
        }
        self.notify.notify_waiters();
    }

    /// No more credit: waiting senders and later ones fail.
    pub(crate) fn close(&self) {
        self.state.locked().closed = true;
        self.notify.notify_waiters();
    }

    /// The credit left: messages, bytes.
    #[cfg(test)]
    pub(crate) fn available(&self) -> (u64, i64) {
        let s = self.state.locked();
        (s.messages, s.bytes)
    }

    /// Takes the credit for one message of `len` bytes, waiting until there is enough
    /// (see the module docs). Cancel-safe: nothing is taken until it returns `Ok`.
    pub(crate) async fn acquire(&self, len: usize) -> Result<(), CreditClosed> {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        // Fast path, the common case of a sender with credit: no waiter registration.
        if let Some(r) = self.try_take(len) {
            return r;
        }
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.try_take(len) {
                return r;
            }
            notified.await;
        }
    }

    /// [`SendCredit::acquire`] without waiting: `None` when it would wait.
    pub(crate) fn try_acquire(&self, len: usize) -> Option<Result<(), CreditClosed>> {
        self.try_take(i64::try_from(len).unwrap_or(i64::MAX))
    }

    /// Takes the credit for a message of `len` bytes if there is enough; `None` to wait.
    fn try_take(&self, len: i64) -> Option<Result<(), CreditClosed>> {
        let mut s = self.state.locked();
        if s.closed {
            return Some(Err(CreditClosed));
        }
        let room_ok = len <= s.bytes || s.bytes >= OVERSIZE_ROOM as i64;
        if s.messages > 0 && room_ok {
            s.messages -= 1;
            s.bytes -= len;
            return Some(Ok(()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const MIB: usize = 1 << 20;

    use crate::calls::stream::STREAM_BUFFER;

    /// A sender's credit once its receiver opened its stream with the default buffer.
    fn opened() -> SendCredit {
        let c = SendCredit::new();
        let rest = (STREAM_BUFFER - INITIAL_CREDIT) as u32;
        c.grant(Credit { messages: rest, bytes: 0 });
        c
    }

    #[test]
    fn a_sender_starts_with_one_message_of_credit() {
        let c = SendCredit::new();
        assert_eq!(c.available(), (1, STREAM_BUFFER_BYTES as i64));
        assert!(c.acquire(10).now_or_never().is_some());
        assert!(c.acquire(10).now_or_never().is_none(), "a buffer of one: the next waits");
    }

    #[test]
    fn an_oversized_message_is_admitted_into_a_nearly_empty_buffer_only() {
        let b = STREAM_BUFFER_BYTES;
        assert!(admits(0, b, 64 * MIB), "alone");
        assert!(admits(GRANT_BYTES, b, 64 * MIB), "behind at most GRANT_BYTES");
        assert!(!admits(GRANT_BYTES + 1, b, 64 * MIB));
        assert!(admits(b - 10, b, 10), "what fits fits");
        assert!(!admits(b - 10, b, 11));
        assert!(!admits(b + 40 * MIB, b, 1), "after an oversized message, nothing more");
    }

    #[tokio::test]
    async fn a_sender_waits_for_bytes_and_messages_and_an_oversized_message_for_the_room() {
        let c = opened();
        c.acquire(10 * MIB).await.unwrap();
        assert!(c.acquire(7 * MIB).now_or_never().is_none(), "6 MiB left: waits");
        c.acquire(6 * MIB).await.unwrap();
        c.grant(Credit { messages: 2, bytes: (10 * MIB) as u64 });
        assert!(c.acquire(20 * MIB).now_or_never().is_none(), "10 MiB of room: waits");
        c.grant(Credit { messages: 0, bytes: (5 * MIB) as u64 });
        c.acquire(20 * MIB).await.unwrap();
        assert_eq!(c.available(), (STREAM_BUFFER as u64 - 1, -(5 * MIB as i64)));
        assert!(c.acquire(1).now_or_never().is_none(), "in debt: waits");
        c.close();
        assert!(c.acquire(1).await.is_err());
        let m = opened();
        for _ in 0..STREAM_BUFFER {
            m.acquire(1).await.unwrap();
        }
        assert!(m.acquire(1).now_or_never().is_none(), "out of messages: waits");
    }

    /// One receiver with its buffer and its batched grants, one sender with its credit,
    /// and a channel between them, driven step by step.
    struct Model {
        budget: usize,
        credit: SendCredit,
        /// Sent, not yet arrived; grants not yet arrived.
        wire: VecDeque<usize>,
        grants: VecDeque<Credit>,
        buffer: VecDeque<usize>,
        ungranted: (u32, u64),
        max_buffered: usize,
    }

    impl Model {
        fn arrive(&mut self) {
            if let Some(len) = self.wire.pop_front() {
                let buffered: usize = self.buffer.iter().sum();
                assert!(self.buffer.len() < STREAM_BUFFER, "a well-behaved sender overran");
                assert!(admits(buffered, self.budget, len), "{len} into {buffered}");
                self.buffer.push_back(len);
                self.max_buffered = self.max_buffered.max(buffered + len);
            }
        }

        fn consume(&mut self) {
            if let Some(len) = self.buffer.pop_front() {
                self.ungranted.0 += 1;
                self.ungranted.1 += len as u64;
                if self.ungranted.0 as usize >= STREAM_BUFFER / 2
                    || self.ungranted.1 >= GRANT_BYTES as u64
                {
                    let (messages, bytes) = std::mem::take(&mut self.ungranted);
                    self.grants.push_back(Credit { messages, bytes });
                }
            }
        }
    }

    proptest! {
        /// A sender that takes its credit never breaks the receiver's bounds, and never
        /// waits forever: once the receiver has consumed everything, the next message
        /// (of any size up to the frame cap) can go.
        #[test]
        fn backpressure_never_overruns_and_never_deadlocks(
            sizes in proptest::collection::vec(
                prop_oneof![0usize..4096, 0usize..(2 * MIB), (15 * MIB)..(64 * MIB)], 1..200),
            steps in proptest::collection::vec(0u8..4, 0..2000),
        ) {
            let mut m = Model {
                budget: STREAM_BUFFER_BYTES,
                credit: opened(),
                wire: VecDeque::new(),
                grants: VecDeque::new(),
                buffer: VecDeque::new(),
                ungranted: (0, 0),
                max_buffered: 0,
            };
            let mut next = 0;
            let mut steps = steps.into_iter();
            while next < sizes.len() {
                match steps.next() {
                    Some(0) | None if m.credit.acquire(sizes[next]).now_or_never().is_some() => {
                        m.wire.push_back(sizes[next]);
                        next += 1;
                    }
                    Some(1) => m.arrive(),
                    Some(2) => m.consume(),
                    Some(_) => {
                        if let Some(g) = m.grants.pop_front() {
                            m.credit.grant(g);
                        }
                    }
                    None => {
                        // Out of steps and the sender is blocked: everything in flight
                        // arrives and is consumed, every grant arrives; then it must go.
                        while !m.wire.is_empty() || !m.buffer.is_empty() {
                            m.arrive();
                            m.consume();
                        }
                        while let Some(g) = m.grants.pop_front() {
                            m.credit.grant(g);
                        }
                        prop_assert!(
                            m.credit.acquire(sizes[next]).now_or_never().is_some(),
                            "deadlock: message {next} of {} bytes waits for an idle receiver",
                            sizes[next]
                        );
                        m.wire.push_back(sizes[next]);
                        next += 1;
                    }
                }
            }
            let largest = sizes.iter().copied().max().unwrap_or(0);
            prop_assert!(m.max_buffered <= STREAM_BUFFER_BYTES.max(GRANT_BYTES + largest));
        }
    }
}
