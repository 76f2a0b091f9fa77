//! The two failure domains of the wire, kept apart on purpose.
//!
//! A [`FrameError`] means the byte stream itself can no longer be trusted: the segment
//! table is nonsense, the frame is larger than the limit, the peer hung up mid-frame, or
//! the socket failed. Nothing after that point can be framed, so the connection is done.
//!
//! A [`MsgError`] means one well-framed message could not be understood: an unknown union
//! variant from a newer peer, invalid UTF-8, a missing required field, a traversal or
//! nesting limit hit. The frame boundary is intact, so only that message fails and the next
//! frame on the same connection decodes normally. Keeping the types separate makes it
//! impossible to drop a connection for a per-message problem by accident.

use crate::msg_kind::MsgKind;

/// A connection-fatal framing error: after it, the stream cannot be framed any more.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The segment table claims (or the message to send needs) more bytes than allowed.
    /// Raised from the segment table alone, before any buffer for the frame is allocated.
    #[error("frame of {claimed} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes the frame claims (segment table included).
        claimed: u64,
        /// The configured [`Limits::max_frame_bytes`](crate::Limits::max_frame_bytes).
        limit: usize,
    },
    /// The segment table is malformed (too many segments, an empty first segment).
    #[error("bad segment table: {reason}")]
    BadSegmentTable {
        /// What is wrong with it.
        reason: SegmentTableError,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame after {have} bytes{}", need.map(|n| format!(" of {n}")).unwrap_or_default())]
    Truncated {
        /// Bytes of the partial frame that arrived.
        have: usize,
        /// Total size of the frame, when the segment table was complete.
        need: Option<u64>,
    },
    /// A partial frame would take the buffered partial frames of every connection sharing
    /// the codec's [`FrameBudget`](crate::FrameBudget) over its limit: this connection is
    /// closed, the others keep theirs.
    #[error(
        "a partial frame of {claimed} bytes would take the buffered partial frames over the budget of {limit} bytes ({buffered} already buffered)"
    )]
    OverBudget {
        /// Bytes the frame claims (segment table included).
        claimed: u64,
        /// Bytes of partial frames already charged to the budget by all its connections.
        buffered: usize,
        /// The budget's limit.
        limit: usize,
    },
    /// The underlying socket failed.
    #[error("i/o error on the connection")]
    Io(#[from] std::io::Error),
}

/// What is wrong with a segment table; see [`FrameError::BadSegmentTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentTableError {
    /// More segments than [`Limits::max_segments`](crate::Limits::max_segments).
    #[error("{count} segments, at most {limit} allowed")]
    TooManySegments {
        /// Segments claimed.
        count: u64,
        /// The limit.
        limit: u32,
    },
    /// The first segment, which holds the root pointer, has no words.
    #[error("the first segment is empty")]
    EmptyFirstSegment,
}

/// A per-message error: this one frame could not be understood, the connection is fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    /// The `Msg` union holds a member this build does not know (a newer peer's message).
    #[error("unknown message variant {discriminant} (sent by a newer peer?)")]
    UnknownVariant {
        /// The union discriminant that arrived.
        discriminant: u16,
    },
    /// An enum field holds a value this build does not know.
    #[error("unknown value {value} for `{field}` in a {kind} message")]
    UnknownEnumValue {
        /// The message kind.
        kind: MsgKind,
        /// The field name, as in the schema.
        field: &'static str,
        /// The raw value.
        value: u16,
    },
    /// The message broke a rule of the schema or of this crate (invalid UTF-8, a uuid that
    /// is not 16 bytes, an address that does not parse, a pointer out of bounds, ...).
    #[error("malformed {} message: {reason}", kind.map_or("unknown".into(), |k| k.to_string()))]
    Malformed {
        /// The message kind, when the union discriminant could be read.
        kind: Option<MsgKind>,
        /// What is wrong.
        reason: String,
    },
    /// Reading the message hit the traversal or nesting limit (a message built to amplify
    /// the work of reading it, or one too deeply nested).
    #[error("reading a {} message exceeded a limit: {reason}", kind.map_or("unknown".into(), |k| k.to_string()))]
    LimitExceeded {
        /// The message kind, when the union discriminant could be read.
        kind: Option<MsgKind>,
        /// Which limit.
        reason: String,
    },
}

impl MsgError {
    pub(crate) fn from_capnp(kind: Option<MsgKind>, e: capnp::Error) -> Self {
        use capnp::ErrorKind as K;
        match e.kind {
            K::ReadLimitExceeded
            | K::NestingLimitExceeded
            | K::MessageIsTooDeeplyNested
            | K::MessageIsTooDeeplyNestedOrContainsCycles => {
                MsgError::LimitExceeded { kind, reason: e.to_string() }
            }
            _ => MsgError::Malformed { kind, reason: e.to_string() },
        }
    }
}
