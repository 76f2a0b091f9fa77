//! [`Limits`]: the bounds every frame is held to, both ways.
//!
//! A leaf of the module graph: the codec (`codec`) checks each segment table against
//! them, and a received frame (`frame`) sets up its reader's traversal and nesting limits
//! from them, so both point down here instead of at each other. Public paths:
//! `plough_ipc_wire::Limits` and `plough_ipc_wire::codec::Limits`.

/// Limits a [`FrameCodec`](crate::FrameCodec) enforces on every frame, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame (segment table included), checked from the segment table before any
    /// buffer is reserved, and on encode. At most [`Limits::MAX_FRAME_CEILING`].
    pub max_frame_bytes: usize,
    /// Most segments a frame may have (our encoder emits one, or two for a large payload
    /// sent from its own bytes: see [`FrameWriter`](crate::FrameWriter)).
    pub max_segments: u32,
    /// Deepest struct/list nesting a reader follows.
    pub nesting_limit: i32,
    /// A frame of `n` words may be traversed `n × traversal_factor` (+ a small slack) words
    /// in total by all reads of it, which bounds the work a small, aliasing message can cause.
    pub traversal_factor: u32,
    /// Decoding a frame of `n` bytes into an owned [`Msg`](crate::Msg) may allocate at most
    /// `n × decode_factor` + [`Limits::DECODE_SLACK_BYTES`] bytes (4 by default). Every
    /// string and list the decoder copies is charged against that budget *before* it is
    /// allocated (a list at its exact length, so no growth doubles it), and a message
    /// that needs more is a [`MsgError::LimitExceeded`](crate::MsgError::LimitExceeded)
    /// for that message. The traversal limit alone does not bound memory: pointers that
    /// alias one list let a reader see it many times, each time decoding it anew. Payloads
    /// are shared with the frame, never copied, and cost nothing here. The most
    /// expensive legitimate shape, a list of small nested errors, needs under 3×.
    pub decode_factor: u32,
}

impl Limits {
    /// The defaults after a handshake: 64 MiB frames, 16 segments, nesting 16, traversal
    /// factor 4, decode factor 4.
    pub const DEFAULT: Limits = Limits {
        max_frame_bytes: 64 << 20,
        max_segments: 16,
        nesting_limit: 16,
        traversal_factor: 4,
        decode_factor: 4,
    };

    /// The limits before a handshake completes: 64 KiB frames, 4 segments.
    pub const HANDSHAKE: Limits =
        Limits { max_frame_bytes: 64 << 10, max_segments: 4, ..Limits::DEFAULT };

    /// Frames cannot be larger than this (Cap'n Proto lists hold at most 2²⁹ − 1 bytes).
    pub const MAX_FRAME_CEILING: usize = 256 << 20;

    pub(crate) const TRAVERSAL_SLACK_WORDS: usize = 64;

    /// What decoding any frame may allocate beyond `decode_factor ×` its size (4 KiB), so
    /// that a tiny message's few small strings always fit.
    pub const DECODE_SLACK_BYTES: usize = 4 << 10;

    /// [`Limits::DEFAULT`] with another maximum frame size (clamped to the ceiling).
    pub const fn with_max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes =
            if bytes > Self::MAX_FRAME_CEILING { Self::MAX_FRAME_CEILING } else { bytes };
        self
    }

    /// With another maximum segment count (at least 1).
    pub const fn with_max_segments(mut self, n: u32) -> Self {
        self.max_segments = if n == 0 { 1 } else { n };
        self
    }

    /// With another nesting limit.
    pub const fn with_nesting_limit(mut self, n: i32) -> Self {
        self.nesting_limit = n;
        self
    }

    /// With another traversal factor.
    pub const fn with_traversal_factor(mut self, f: u32) -> Self {
        self.traversal_factor = f;
        self
    }

    /// With another decode factor.
    pub const fn with_decode_factor(mut self, f: u32) -> Self {
        self.decode_factor = f;
        self
    }

    /// The bytes decoding a frame of `frame_bytes` may allocate (see
    /// [`Limits::decode_factor`]).
    pub(crate) fn decode_budget(&self, frame_bytes: usize) -> usize {
        frame_bytes
            .saturating_mul(self.decode_factor as usize)
            .saturating_add(Self::DECODE_SLACK_BYTES)
    }

    /// The largest frame these limits admit: [`Limits::max_frame_bytes`], clamped to
    /// [`Limits::MAX_FRAME_CEILING`].
    pub fn max_frame(&self) -> usize {
        self.max_frame_bytes.min(Self::MAX_FRAME_CEILING)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
