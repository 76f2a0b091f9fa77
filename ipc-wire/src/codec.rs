//! Cap'n Proto standard stream framing as a `tokio_util` codec, with limits checked first.
//!
//! A frame is a segment table (`u32` segment count − 1, then one `u32` word count per
//! segment, padded to 8 bytes) followed by the segments. The table is the only place a peer
//! says how much memory it wants us to set aside, so [`FrameCodec`] checks it against
//! [`Limits`] *before* reserving anything: a table that claims gigabytes, or thousands of
//! segments, is a [`FrameError`] while the process has allocated nothing for it. Only a
//! frame within the limit gets its buffer reserved, once, at its final size.
//!
//! Decoding is cancel-safe: all state lives in the read buffer and the codec, so dropping
//! `FramedRead::next()` mid-frame loses nothing. Decoding yields [`Frame`]s; interpreting a
//! frame is a separate step whose errors concern that message only (see [`crate::error`]).
//!
//! Encoding builds each message directly in the write buffer (see the `arena` module), so
//! a payload is copied exactly once, the buffer's capacity is reused from message to
//! message as scratch space, and many small frames queued with `SinkExt::feed` leave in one
//! `write` when the sink is flushed. A [`FrameWriter`](crate::FrameWriter) goes further for
//! a payload of [`OUT_OF_LINE_BYTES`] or more: it is not copied at all.
//!
//! Reading, a large frame that has not fully arrived is read into a buffer of its own
//! size, taken from a small pool of buffers whose frames have all been dropped (see the
//! `recv_pool` module), so a reader that keeps up reads into the same pages again instead
//! of faulting in fresh ones for every frame.
//!
//! A frame that started arriving is timed: the codec records in a shared
//! [`PartialFrameClock`] when the first byte of the frame it is waiting for arrived (the
//! read that brought it, as the codec saw it), and clears it when that frame completes. It
//! measures and never decides: the reader that owns the connection reads the clock and
//! drops a peer whose frame takes longer than its deadline (plough's channel does, under
//! `Budgets::frame_read`). Progress within a frame does not move the clock: the deadline
//! is per frame, from its first byte, so a peer cannot hold a buffer by trickling a byte
//! a second; a peer whose frames each complete in time may be as slow between frames as
//! it likes.
//!
//! Partial frames can share a [`FrameBudget`] (plough gives one to every connection of an
//! actor): the bytes a frame's segment table claims are charged to it when the codec
//! reserves the buffer for a frame that has not fully arrived, and given back when the
//! frame completes, the connection ends or the codec is dropped. A frame that would take
//! the budget over its limit is a [`FrameError::OverBudget`] for its connection alone,
//! before anything is reserved: N peers each holding a large partial frame cost at most
//! the budget, not N frames. A frame that arrives whole in one read is never charged
//! (its bytes are already here). The codec bounds partial frames, not frames the reader
//! has yet to take from its buffer, nor what a consumer queues after decoding.
//!
//! The codec sits above [`crate::frame`] (it produces frames) and both sit above the leaf
//! module that defines [`Limits`], re-exported here as `codec::Limits`.

use crate::arena::{InPlace, Scratch};
use crate::error::{FrameError, SegmentTableError};
use crate::frame::{Frame, SegmentBounds};
use crate::generated::plough_capnp as schema;
pub use crate::limits::Limits;
use crate::msg::{Aid, Msg, data_words};
use crate::recv_pool::RecvPool;
use bytes::{Buf, Bytes, BytesMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

/// When the first byte of the frame a [`FrameCodec`] is waiting for arrived, shared with
/// whoever enforces a deadline on it (see the module docs). Cheap to clone: clones read
/// the same clock.
#[derive(Debug, Clone, Default)]
pub struct PartialFrameClock(Arc<Mutex<Option<Instant>>>);

impl PartialFrameClock {
    /// When the first byte of the partial frame in the read buffer arrived; `None` while
    /// the buffer holds no partial frame (between frames).
    pub fn since(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, at: Option<Instant>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Starts the clock at `now` unless it runs already.
    fn start(&self) {
        let mut at = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        at.get_or_insert_with(Instant::now);
    }
}

/// A budget of buffered partial-frame bytes shared by many codecs (see the module docs).
/// Cheap to clone: clones charge the same budget.
#[derive(Debug, Clone)]
pub struct FrameBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    used: AtomicUsize,
    limit: usize,
}

impl FrameBudget {
    /// A budget of `limit` bytes of partial frames in all.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(BudgetInner { used: AtomicUsize::new(0), limit }))
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Bytes charged now, by every codec sharing the budget.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes, or says how much was charged already if that would exceed it.
    fn charge(&self, n: usize) -> Result<(), usize> {
        self.0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.0.limit)
            })
            .map(|_| ())
    }

    fn release(&self, n: usize) {
        self.0.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A validated segment table of the frame at the front of the read buffer.
#[derive(Debug, Clone)]
struct Head {
    total: usize,
    bounds: SegmentBounds,
}

/// The framing codec: [`Decoder`] of [`Frame`]s, [`Encoder`] of [`Msg`]s. See the module docs.
#[derive(Debug, Default)]
pub struct FrameCodec {
    limits: Limits,
    /// The head of a frame whose body has not fully arrived yet (saves re-parsing).
    pending: Option<Head>,
    /// When the partial frame in the read buffer started arriving.
    clock: PartialFrameClock,
    /// The budget partial frames are charged to, and what is charged now.
    budget: Option<FrameBudget>,
    charged: usize,
    /// Read buffers for large frames ([`RecvPool`]).
    pool: RecvPool,
}

impl Drop for FrameCodec {
    fn drop(&mut self) {
        self.release();
    }
}

impl Clone for FrameCodec {
    /// The same limits and budget, with a clock of its own and no partial frame (the clone
    /// reads another buffer).
    fn clone(&self) -> Self {
        let clock = PartialFrameClock::default();
        clock.set(self.clock.since());
        // A clone charges nothing until its own partial frame.
        let (pending, budget) = (None, self.budget.clone());
        Self { limits: self.limits, pending, clock, budget, charged: 0, pool: RecvPool::default() }
    }
}

impl FrameCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: None,
            clock: PartialFrameClock::default(),
            budget: None,
            charged: 0,
            pool: RecvPool::default(),
        }
    }

    /// Charges this codec's partial frames to `budget` from now on (see the module docs);
    /// what was charged to a previous budget is given back to it.
    pub fn set_frame_budget(&mut self, budget: FrameBudget) {
        self.release();
        self.pending = None;
        self.budget = Some(budget);
    }

    /// Gives back what the partial frame was charged.
    fn release(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(std::mem::take(&mut self.charged));
        }
    }

    /// The clock of the partial frame this codec waits for (see the module docs).
    pub fn partial_frame_clock(&self) -> PartialFrameClock {
        self.clock.clone()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Changes the limits (e.g. from [`Limits::HANDSHAKE`] to [`Limits::DEFAULT`] once the
    /// peer is known). A partially received frame is re-checked against the new limits.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.release();
        self.pending = None;
    }

    /// The frame at the front of `src`, once it is all there.
    fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let head = match self.pending.take() {
            Some(head) => head,
            None => match self.parse_head(src)? {
                Some(head) => head,
                None => return Ok(None),
            },
        };
        if src.len() < head.total {
            // Within the limit (checked above) and the budget: now, and only now, reserve
            // the whole frame.
            if self.charged == 0 {
                if let Some(budget) = &self.budget {
                    budget.charge(head.total).map_err(|buffered| FrameError::OverBudget {
                        claimed: head.total as u64,
                        buffered,
                        limit: budget.limit(),
                    })?;
                    self.charged = head.total;
                }
            }
            if head.total >= RecvPool::MIN_FRAME && !self.pool.reading_large() {
                self.pool.read_into_large(src, head.total);
            } else {
                src.reserve(head.total - src.len());
            }
            self.pending = Some(head);
            return Ok(None);
        }
        self.release();
        let bytes = src.split_to(head.total).freeze();
        self.pool.frame_taken(src);
        Ok(Some(Frame::new(bytes, head.bounds, &self.limits)))
    }

    /// Parses and checks the segment table at the front of `src`; `None` until it is all there.
    fn parse_head(&self, src: &mut BytesMut) -> Result<Option<Head>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let count = u64::from(u32::from_le_bytes(src[..4].try_into().expect("4 bytes"))) + 1;
        if count > u64::from(self.limits.max_segments) {
            return Err(FrameError::BadSegmentTable {
                reason: SegmentTableError::TooManySegments {
                    count,
                    limit: self.limits.max_segments,
                },
            });
        }
        let count = count as usize; // ≤ max_segments: small
        let table_len = (4 + 4 * count).next_multiple_of(8);
        if src.len() < table_len {
            src.reserve(table_len - src.len());
            return Ok(None);
        }
        let lens = src[4..4 + 4 * count]
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))));
        let words: u64 = lens.clone().sum(); // ≤ 2³² segments × 2³² words: no overflow in u64
        let total = table_len as u64 + words * 8;
        if total > self.limits.max_frame() as u64 {
            return Err(FrameError::TooLarge { claimed: total, limit: self.limits.max_frame() });
        }
        if src[4..8] == [0; 4] {
            return Err(FrameError::BadSegmentTable {
                reason: SegmentTableError::EmptyFirstSegment,
            });
        }
        let total = total as usize; // ≤ max_frame
        let bounds = if count == 1 {
            SegmentBounds::One(table_len, total)
        } else {
            let mut at = table_len;
            let ranges: Vec<(usize, usize)> = lens
                .map(|w| {
                    let range = (at, at + w as usize * 8);
                    at = range.1;
                    range
                })
                .collect();
            SegmentBounds::Many(ranges.into_boxed_slice())
        };
        Ok(Some(Head { total, bounds }))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let frame = self.decode_frame(src)?;
        // The clock runs while the buffer holds part of a frame. Bytes left after a frame
        // are the next frame's, which arrived just now (in the read that completed this
        // one, or an earlier one the reader had not got to: never earlier than that).
        if src.is_empty() {
            self.clock.set(None);
        } else if frame.is_some() {
            self.clock.set(Some(Instant::now()));
        } else {
            self.clock.start();
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = self.pending.take().map(|h| h.total as u64);
                self.release();
                let have = src.len();
                src.advance(have);
                self.clock.set(None);
                Err(FrameError::Truncated { have, need })
            }
        }
    }
}

impl Encoder<&Msg> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: &Msg, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_into(msg, dst, self.limits.max_frame(), msg.size_hint_words(), None)
    }
}

impl Encoder<Msg> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: Msg, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&msg, dst)
    }
}

/// A payload at least this large is not copied into its frame: the frame's first segment
/// is built in the write buffer and the payload leaves from its own bytes, as the frame's
/// second segment ([`FrameWriter`](crate::FrameWriter)). Below it, one copy into the write
/// buffer costs less than a second segment and another `iovec`.
pub const OUT_OF_LINE_BYTES: usize = 64 << 10;

/// What follows the bytes [`encode_parts`] appended, to complete the frame.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The payload, written as it is.
    pub(crate) payload: Bytes,
    /// Zero bytes after it, to a whole word.
    pub(crate) pad: usize,
}

/// The segment table of a two-segment frame: count − 1, both sizes, padding.
const TWO_SEGMENT_TABLE: usize = 16;

/// Appends one frame holding `msg` to `dst`, or, for a payload of [`OUT_OF_LINE_BYTES`] or
/// more, all of the frame but the payload and its padding, which the caller writes next
/// ([`Tail`]). That frame has two segments: the message with the payload's room reserved
/// behind a far pointer, then the landing pad and the payload (see the `arena` module),
/// which is standard Cap'n Proto: any reader follows the pointer. Should capnp lay the
/// message out otherwise, it is encoded as one copied frame instead.
///
/// `sender`: this end of the connection, whose own calls leave their caller out
/// ([`Msg::write_sent_by`]).
pub(crate) fn encode_parts(
    msg: &Msg,
    dst: &mut BytesMut,
    max_frame: usize,
    scratch: &mut Scratch,
    sender: Option<&Aid>,
) -> Result<Option<Tail>, FrameError> {
    let copied =
        |dst: &mut BytesMut| encode_into(msg, dst, max_frame, msg.size_hint_words(), sender);
    let Some(payload) = msg.payload().filter(|p| p.len() >= OUT_OF_LINE_BYTES) else {
        return copied(dst).map(|()| None);
    };
    let too_large =
        |claimed: usize| FrameError::TooLarge { claimed: claimed as u64, limit: max_frame };
    if msg.size_floor_bytes() > max_frame {
        return Err(too_large(msg.size_floor_bytes()));
    }
    let payload_words = data_words(payload);
    // The landing pad, then the payload.
    let reserved_words = payload_words + 1;
    let rest_words = msg.size_hint_words().saturating_sub(payload_words);
    let Some(reserved) = scratch.reserve(reserved_words) else {
        return copied(dst).map(|()| None);
    };
    let reserved_ptr = reserved.as_ptr();
    let start = dst.len();
    dst.resize(start + TWO_SEGMENT_TABLE + rest_words * 8, 0);
    let first_words = {
        let region = &mut dst[start + TWO_SEGMENT_TABLE..];
        let region_ptr = region.as_ptr();
        let mut builder = capnp::message::Builder::new(InPlace::with_reserved(region, reserved));
        msg.write_reserving_payload(builder.init_root::<schema::msg::Builder<'_>>(), sender);
        let segments = builder.get_segments_for_output();
        let as_planned = segments.len() == 2
            && segments[0].as_ptr() == region_ptr
            && segments[1].as_ptr() == reserved_ptr
            && segments[1].len() == reserved_words * 8;
        as_planned.then(|| segments[0].len() / 8)
    };
    let Some(first_words) = first_words else {
        // Whatever capnp wrote in the reserved segment goes, for the next payload.
        scratch.zero(reserved_words);
        dst.truncate(start);
        return copied(dst).map(|()| None);
    };
    let landing_pad = scratch.landing_pad();
    scratch.clear_landing_pad();
    let total = TWO_SEGMENT_TABLE + (first_words + reserved_words) * 8;
    if total > max_frame {
        dst.truncate(start);
        return Err(too_large(total));
    }
    let word = |n: usize| u32::try_from(n).expect("a segment below the frame limit").to_le_bytes();
    dst[start..start + 4].copy_from_slice(&1u32.to_le_bytes());
    dst[start + 4..start + 8].copy_from_slice(&word(first_words));
    dst[start + 8..start + 12].copy_from_slice(&word(reserved_words));
    dst[start + 12..start + 16].copy_from_slice(&[0; 4]);
    dst.truncate(start + TWO_SEGMENT_TABLE + first_words * 8);
    dst.extend_from_slice(&landing_pad);
    Ok(Some(Tail { payload: payload.as_bytes().clone(), pad: payload_words * 8 - payload.len() }))
}

/// Appends one frame holding `msg` to `dst`, building it in place in a first segment of
/// `hint_words` words (`sender`: as for [`encode_parts`]). Exposed to tests so the
/// multi-segment fallback is exercised.
pub(crate) fn encode_into(
    msg: &Msg,
    dst: &mut BytesMut,
    max_frame: usize,
    hint_words: usize,
    sender: Option<&Aid>,
) -> Result<(), FrameError> {
    let too_large =
        |claimed: usize| FrameError::TooLarge { claimed: claimed as u64, limit: max_frame };
    if msg.size_floor_bytes() > max_frame {
        return Err(too_large(msg.size_floor_bytes()));
    }
    let hint_words = hint_words.min(max_frame / 8 + 1);
    let start = dst.len();
    dst.resize(start + 8 + hint_words * 8, 0);
    let (single_words, fallback) = {
        let region = &mut dst[start + 8..];
        let region_ptr = region.as_ptr();
        let mut builder = capnp::message::Builder::new(InPlace::new(region));
        msg.write_sent_by(builder.init_root::<schema::msg::Builder<'_>>(), sender);
        let segments = builder.get_segments_for_output();
        if segments.len() == 1 && segments[0].as_ptr() == region_ptr {
            (segments[0].len() / 8, None)
        } else {
            (0, Some(capnp::serialize::write_message_segments_to_words(&builder)))
        }
    };
    match fallback {
        None => {
            let total = 8 + single_words * 8;
            if total > max_frame {
                dst.truncate(start);
                return Err(too_large(total));
            }
            dst[start..start + 4].copy_from_slice(&0u32.to_le_bytes());
            dst[start + 4..start + 8].copy_from_slice(&(single_words as u32).to_le_bytes());
            dst.truncate(start + total);
        }
        Some(words) => {
            dst.truncate(start);
            if words.len() > max_frame {
                return Err(too_large(words.len()));
            }
            dst.extend_from_slice(&words);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Aid, Uuid};
    use crate::payload::Payload;

    fn yield_msg(n: usize) -> Msg {
        Msg::Yield { cid: 7, payload: Payload::from(vec![0xab; n]) }
    }

    fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(f) = codec.decode(buf).unwrap() {
            out.push(f.decode().unwrap());
        }
        out
    }

    #[test]
    fn in_place_encoding_is_standard_framing() {
        let msg = yield_msg(64);
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(&msg, &mut buf).unwrap();
        // The frame must be readable by capnp's own reader.
        let mut slice = &buf[..];
        let reader =
            capnp::serialize::read_message_from_flat_slice(&mut slice, Default::default()).unwrap();
        assert!(slice.is_empty());
        let root = reader.get_root::<schema::msg::Reader<'_>>().unwrap();
        assert_eq!(Msg::read(root, None).unwrap(), msg);
        // And as small as capnp's own serialization of the same message.
        let mut b = capnp::message::Builder::new_default();
        msg.write(b.init_root());
        assert_eq!(buf.len(), capnp::serialize::write_message_to_words(&b).len());
    }

    #[test]
    fn size_hint_is_an_upper_bound_for_every_kind() {
        let aid = Aid { name: "abcdefghi".into(), uuid: Uuid([1; 16]), pid: 9 };
        let msgs = [
            yield_msg(0),
            yield_msg(1),
            yield_msg(1 << 20),
            Msg::Stop { cid: 1 },
            Msg::Error(Box::new(crate::msg::ErrorMsg {
                relay_path: vec![aid.clone(), aid.clone()],
                canceller: Some(aid.clone()),
                source: aid,
                message: "x".repeat(33),
                ..Default::default()
            })),
        ];
        for msg in &msgs {
            let hint = msg.size_hint_words();
            let alloc = capnp::message::HeapAllocator::new().first_segment_words(hint as u32);
            let mut b = capnp::message::Builder::new(alloc);
            msg.write(b.init_root());
            let segments = b.get_segments_for_output();
            assert_eq!(segments.len(), 1, "{msg:?} did not fit in {hint} words");
            assert!(segments[0].len() / 8 <= hint);
        }
    }

    #[test]
    fn too_small_hint_falls_back_to_multi_segment_frames() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let msg = yield_msg(100_000);
        for hint in [0, 1, 3, 10] {
            encode_into(&msg, &mut buf, Limits::DEFAULT.max_frame_bytes, hint, None).unwrap();
        }
        assert_eq!(decode_all(&mut codec, &mut buf), vec![msg; 4]);
    }

    #[test]
    fn oversized_messages_are_refused_on_encode() {
        let mut codec = FrameCodec::new(Limits::DEFAULT.with_max_frame_bytes(1024));
        let mut buf = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            codec.encode(&yield_msg(2000), &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        // Just above the limit once the header is counted.
        assert!(matches!(
            codec.encode(&yield_msg(1000), &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(&buf[..], b"keep", "a refused message leaves the buffer as it was");
        codec.encode(&yield_msg(900), &mut buf).unwrap();
    }

    #[test]
    fn segment_table_is_checked_before_reserving() {
        let mut codec = FrameCodec::new(Limits::DEFAULT.with_max_frame_bytes(1 << 20));
        // One segment claiming 2^32 - 1 words (32 GiB).
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..]);
        let cap = buf.capacity();
        assert!(
            matches!(codec.decode(&mut buf), Err(FrameError::TooLarge { claimed, .. }) if claimed > 1 << 34)
        );
        assert_eq!(buf.capacity(), cap);
        // 2^32 segments.
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::BadSegmentTable { reason: SegmentTableError::TooManySegments { .. } })
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::BadSegmentTable { reason: SegmentTableError::EmptyFirstSegment })
        ));
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut buf = BytesMut::new();
        let mut codec = FrameCodec::default();
        codec.encode(&yield_msg(100), &mut buf).unwrap();
        buf.truncate(buf.len() - 1);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { need: Some(_), .. })
        ));
        let mut partial_table = BytesMut::from(&[1, 0][..]);
        assert!(matches!(
            FrameCodec::default().decode_eof(&mut partial_table),
            Err(FrameError::Truncated { have: 2, need: None })
        ));
    }

    #[test]
    fn the_partial_frame_clock_runs_from_a_frames_first_byte_until_it_completes() {
        let mut codec = FrameCodec::default();
        let clock = codec.partial_frame_clock();
        let mut wire = BytesMut::new();
        codec.encode(&yield_msg(100), &mut wire).unwrap();
        codec.encode(&yield_msg(5), &mut wire).unwrap();
        let first_len = wire.len() - {
            let mut b = BytesMut::new();
            codec.encode(&yield_msg(5), &mut b).unwrap();
            b.len()
        };
        let mut buf = BytesMut::new();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(clock.since(), None, "an empty buffer holds no partial frame");
        // Two bytes of the segment table: the clock starts.
        let before = Instant::now();
        buf.extend_from_slice(&wire.split_to(2));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        let started = clock.since().expect("running");
        assert!(started >= before);
        // Progress (the rest of the table, half the body) does not move it.
        buf.extend_from_slice(&wire.split_to(first_len / 2 - 2));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(clock.since(), Some(started));
        // The rest of the first frame and one byte of the next: the first frame is yielded
        // and the clock restarts for the second, no earlier than now.
        let mid = Instant::now();
        buf.extend_from_slice(&wire.split_to(first_len - first_len / 2 + 1));
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().decode().unwrap(), yield_msg(100));
        let second = clock.since().expect("the next frame's byte");
        assert!(second >= mid && second > started);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(clock.since(), Some(second));
        // The second frame completes: nothing partial left, the clock stops.
        buf.extend_from_slice(&wire);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().decode().unwrap(), yield_msg(5));
        assert_eq!(clock.since(), None);
        // A clone of the codec has a clock of its own.
        buf.extend_from_slice(&[0]);
        let mut other = codec.clone();
        assert!(other.decode(&mut buf.clone()).unwrap().is_none());
        assert!(other.partial_frame_clock().since().is_some());
        assert_eq!(clock.since(), None);
    }

    #[test]
    fn partial_frames_are_charged_to_a_shared_budget_and_one_over_it_is_refused() {
        let budget = FrameBudget::new(3000);
        let mut codecs: Vec<FrameCodec> = (0..3).map(|_| FrameCodec::default()).collect();
        for c in &mut codecs {
            c.set_frame_budget(budget.clone());
        }
        let frame = |n| {
            let mut b = BytesMut::new();
            FrameCodec::default().encode(&yield_msg(n), &mut b).unwrap();
            b
        };
        let whole = frame(1200);
        let total = whole.len();
        // Two connections each hold part of a ~1.2 KB frame: both charged in full.
        let mut bufs: Vec<BytesMut> = (0..3).map(|_| BytesMut::from(&whole[..100])).collect();
        for i in 0..2 {
            assert!(codecs[i].decode(&mut bufs[i]).unwrap().is_none());
        }
        assert_eq!(budget.used(), 2 * total);
        // More of the same frame charges nothing more.
        bufs[0].extend_from_slice(&whole[100..200]);
        assert!(codecs[0].decode(&mut bufs[0]).unwrap().is_none());
        assert_eq!(budget.used(), 2 * total);
        // A third would go over: refused, nothing reserved, nothing charged.
        let cap = bufs[2].capacity();
        match codecs[2].decode(&mut bufs[2]) {
            Err(FrameError::OverBudget { claimed, buffered, limit }) => {
                assert_eq!((claimed, buffered, limit), (total as u64, 2 * total, 3000));
            }
            other => panic!("expected OverBudget, got {other:?}"),
        }
        assert_eq!(bufs[2].capacity(), cap);
        assert_eq!(budget.used(), 2 * total);
        // A small frame arriving whole is never charged, even with the budget all but used.
        let mut small = frame(10);
        assert!(codecs[2].decode(&mut small).unwrap().is_some());
        // The first frame completes: its charge is given back, and the third fits now.
        bufs[0].extend_from_slice(&whole[200..]);
        assert_eq!(
            codecs[0].decode(&mut bufs[0]).unwrap().unwrap().decode().unwrap(),
            yield_msg(1200)
        );
        assert_eq!(budget.used(), total);
        let mut third = BytesMut::from(&whole[..100]);
        assert!(codecs[2].decode(&mut third).unwrap().is_none());
        assert_eq!(budget.used(), 2 * total);
        // A connection that ends mid-frame, or a codec dropped mid-frame, gives its charge back.
        assert!(matches!(codecs[1].decode_eof(&mut bufs[1]), Err(FrameError::Truncated { .. })));
        assert_eq!(budget.used(), total);
        drop(codecs);
        assert_eq!(budget.used(), 0);
    }
}
