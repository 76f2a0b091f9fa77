//! A received frame: the bytes of one message, with its segment table already validated.
//!
//! A [`Frame`] owns its bytes (a slice of the connection's read buffer, handed over without
//! copying) and reads them in place through Cap'n Proto. Three ways to look at it:
//! [`Frame::decode`] for the owned [`Msg`] (payloads still share the frame's buffer),
//! [`Frame::view`] for the hot path (kind, call id and payload bytes borrowed, nothing
//! allocated), and [`Frame::root`] for the generated reader. None of them can take the
//! connection down: every failure is a [`MsgError`] for this frame only. The reader is set
//! up with a traversal limit proportional to the frame's size and an explicit nesting limit,
//! so a small message crafted to be expensive to read (pointers aliasing one big list)
//! cannot make a reader do unbounded work.
//!
//! This module knows nothing of the codec: it takes its [`Limits`] from the leaf module
//! that defines them, and the codec (above it) builds frames through a crate-private
//! constructor.

use crate::error::MsgError;
use crate::generated::plough_capnp as schema;
use crate::limits::Limits;
use crate::msg::{self, Cid, Msg};
use crate::msg_kind::MsgKind;
use crate::payload::Payload;
use bytes::Bytes;
use capnp::message::{Reader, ReaderOptions, ReaderSegments};

/// Where a frame's segments lie, as byte ranges of the frame.
#[derive(Debug, Clone)]
pub(crate) enum SegmentBounds {
    /// The common case: one segment, no allocation.
    One(usize, usize),
    /// Several segments (bounded by [`Limits::max_segments`]).
    Many(Box<[(usize, usize)]>),
}

/// The frame's bytes plus where its segments are: capnp's view of them.
pub(crate) struct FrameSegments {
    bytes: Bytes,
    bounds: SegmentBounds,
}

impl ReaderSegments for FrameSegments {
    fn get_segment(&self, idx: u32) -> Option<&[u8]> {
        let (a, b) = match &self.bounds {
            SegmentBounds::One(a, b) => (idx == 0).then_some((*a, *b))?,
            SegmentBounds::Many(v) => *v.get(idx as usize)?,
        };
        self.bytes.get(a..b)
    }

    fn len(&self) -> usize {
        match &self.bounds {
            SegmentBounds::One(..) => 1,
            SegmentBounds::Many(v) => v.len(),
        }
    }
}

/// One received message, not yet interpreted. See the module docs.
pub struct Frame {
    reader: Reader<FrameSegments>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.bytes().len())
            .field("segments", &self.reader.get_segments().len())
            .finish()
    }
}

/// The hot-path view of a frame: what kind it is, which call it belongs to, and its payload
/// bytes, all borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgView<'a> {
    /// The message kind.
    pub kind: MsgKind,
    /// The call id, for kinds that belong to a call (`Error` only when it names one).
    pub cid: Option<Cid>,
    /// The payload bytes, for `Start` (its args), `Started`, `Yield` and `Return`.
    pub payload: Option<&'a [u8]>,
}

impl Frame {
    pub(crate) fn new(bytes: Bytes, bounds: SegmentBounds, limits: &Limits) -> Self {
        let words = bytes.len() / 8;
        let mut options = ReaderOptions::new();
        options.nesting_limit(limits.nesting_limit).traversal_limit_in_words(Some(
            words
                .saturating_mul(limits.traversal_factor as usize)
                .saturating_add(Limits::TRAVERSAL_SLACK_WORDS),
        ));
        Self { reader: Reader::new(FrameSegments { bytes, bounds }, options) }
    }

    /// The whole frame as it came off the wire (segment table included).
    pub fn bytes(&self) -> &Bytes {
        &self.reader.get_segments().bytes
    }

    /// The generated zero-copy reader of the root `Msg`.
    ///
    /// # Errors
    /// [`MsgError`] when the root pointer is invalid.
    pub fn root(&self) -> Result<schema::msg::Reader<'_>, MsgError> {
        self.reader.get_root::<schema::msg::Reader<'_>>().map_err(|e| MsgError::from_capnp(None, e))
    }

    /// The message kind.
    ///
    /// # Errors
    /// [`MsgError::UnknownVariant`] for a member this build does not know; other
    /// [`MsgError`]s for an invalid root.
    pub fn kind(&self) -> Result<MsgKind, MsgError> {
        msg::kind_of_reader(self.root()?)
    }

    /// Decodes the owned message. Payloads share this frame's buffer (no copy).
    ///
    /// # Errors
    /// [`MsgError`] for an unknown variant, a malformed field or a limit hit — for this
    /// message only.
    pub fn decode(&self) -> Result<Msg, MsgError> {
        Msg::read(self.root()?, Some(self.bytes()))
    }

    /// The hot-path view: kind, call id and payload bytes, borrowed, nothing allocated.
    ///
    /// # Errors
    /// As [`Frame::decode`], but only the fields the view needs are checked.
    pub fn view(&self) -> Result<MsgView<'_>, MsgError> {
        use schema::msg::Which as W;
        let which =
            self.root()?.which().map_err(|e| MsgError::UnknownVariant { discriminant: e.0 })?;
        let kind = msg::kind_of(&which);
        let fail = |e| MsgError::from_capnp(Some(kind), e);
        let (cid, payload) = match which {
            W::Hello(_) | W::SpawnSpec(_) => (None, None),
            W::Start(s) => {
                let s = s.map_err(fail)?;
                (Some(s.get_cid()), Some(s.get_args().map_err(fail)?))
            }
            W::StartAck(a) => (Some(a.map_err(fail)?.get_cid()), None),
            W::Started(p) | W::Yield(p) | W::Return(p) => {
                let p = p.map_err(fail)?;
                (Some(p.get_cid()), Some(p.get_payload().map_err(fail)?))
            }
            W::Stop(cid) => (Some(cid), None),
            W::CancelAck(a) => (Some(a.map_err(fail)?.get_cid()), None),
            W::Error(e) => {
                use schema::error::cid::Which as C;
                match e.map_err(fail)?.get_cid().which() {
                    Ok(C::Id(id)) => (Some(id), None),
                    _ => (None, None),
                }
            }
        };
        Ok(MsgView { kind, cid, payload })
    }

    /// Turns payload bytes borrowed from this frame (e.g. [`MsgView::payload`]) into an owned
    /// [`Payload`] that shares the frame's buffer, without copying.
    pub fn share_payload(&self, borrowed: &[u8]) -> Payload {
        msg::share(self.bytes(), borrowed).into()
    }
}
