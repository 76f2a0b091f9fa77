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
//! cannot make a reader do unbounded work; and decoding holds the copies it makes to a
//! budget proportional to the frame's size too ([`Limits::decode_factor`]), so such a
//! message cannot make it allocate unbounded memory either.
//!
//! This module knows nothing of the codec: it takes its [`Limits`] from the leaf module
//! that defines them, and the codec (above it) builds frames through a crate-private
//! constructor.

use crate::error::MsgError;
use crate::generated::plough_capnp as schema;
use crate::limits::Limits;
use crate::msg::{self, Aid, Cid, Msg};
use crate::msg_kind::MsgKind;
use crate::payload::Payload;
use bytes::Bytes;
use capnp::message::{Reader, ReaderOptions, ReaderSegments};
use std::sync::Arc;

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
    /// What [`Frame::decode`] may allocate ([`Limits::decode_factor`] × the frame's size).
    decode_budget: usize,
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
        let decode_budget = limits.decode_budget(bytes.len());
        Self { reader: Reader::new(FrameSegments { bytes, bounds }, options), decode_budget }
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

    /// Decodes the owned message. Payloads share this frame's buffer (no copy); the strings
    /// and lists it copies take at most [`Limits::decode_factor`] times the frame's size
    /// (plus [`Limits::DECODE_SLACK_BYTES`]), however the frame's pointers alias.
    ///
    /// # Errors
    /// [`MsgError`] for an unknown variant, a malformed field or a limit hit (traversal,
    /// nesting, the decode budget) — for this message only.
    pub fn decode(&self) -> Result<Msg, MsgError> {
        Msg::read_within(self.root()?, Some(self.bytes()), self.decode_budget)
    }

    /// [`Frame::decode`] for a frame from `peer`: a `Start` that names `peer` as its
    /// caller (as a peer's own calls do) shares `peer` instead of a copy of it.
    ///
    /// # Errors
    /// As [`Frame::decode`].
    pub fn decode_from(&self, peer: &Arc<Aid>) -> Result<Msg, MsgError> {
        Msg::read_knowing(self.root()?, Some(self.bytes()), self.decode_budget, Some(peer))
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
            W::Hello(_) | W::SpawnSpec(_) | W::Proof(_) => (None, None),
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
            W::Yields(y) => (Some(y.map_err(fail)?.get_cid()), None),
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

    /// The call this frame belongs to, found even when the frame does not decode.
    ///
    /// Only fixed-size fields are read (a call id lives in the first data word of every
    /// call-bearing member), so a message whose text, payload pointer or enum field is bad
    /// still names its call, and its sender can be answered with an error for that call
    /// instead of waiting forever. A member of the `Msg` union that this build does not know
    /// is read by the schema's evolution rule 6: a new member that belongs to a call is a
    /// struct whose field `cid @0 :UInt64` is its first data word. `None` for a message that
    /// belongs to no call (`Hello`, `SpawnSpec`, an actor-level `Error`), an unknown member
    /// that is not a struct with a non-zero first data word, or an unreadable root.
    pub fn call_id(&self) -> Option<Cid> {
        use capnp::traits::IntoInternalStructReader;
        use schema::msg::Which as W;
        let root = self.root().ok()?;
        match root.which() {
            Ok(W::Hello(_) | W::SpawnSpec(_) | W::Proof(_)) => None,
            Ok(W::Start(s)) => s.ok().map(|s| s.get_cid()),
            Ok(W::StartAck(a)) => a.ok().map(|a| a.get_cid()),
            Ok(W::Started(p) | W::Yield(p) | W::Return(p)) => p.ok().map(|p| p.get_cid()),
            Ok(W::Stop(cid)) => Some(cid),
            Ok(W::Yields(y)) => y.ok().map(|y| y.get_cid()),
            Ok(W::CancelAck(a)) => a.ok().map(|a| a.get_cid()),
            Ok(W::Error(e)) => match e.ok()?.get_cid().which() {
                Ok(schema::error::cid::Which::Id(id)) => Some(id),
                _ => None,
            },
            Err(capnp::NotInSchema(_)) => {
                // Every pointer member of the union shares the struct's pointer 0.
                let member = root.into_internal_struct_reader().get_pointer_field(0);
                if member.is_null() {
                    return None;
                }
                // Its first data word; a struct without one reads as 0, which is no call
                // anyone waits on (cids start at 1 and 2).
                let cid = member.get_struct(None).ok()?.get_data_field::<u64>(0);
                (cid != 0).then_some(cid)
            }
        }
    }

    /// Turns payload bytes borrowed from this frame (e.g. [`MsgView::payload`]) into an owned
    /// [`Payload`] that shares the frame's buffer, without copying.
    pub fn share_payload(&self, borrowed: &[u8]) -> Payload {
        msg::share(self.bytes(), borrowed).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameCodec;
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    /// Frames a message built by hand with the generated builder.
    fn frame_of(build: impl FnOnce(schema::msg::Builder<'_>)) -> Frame {
        let mut b = capnp::message::Builder::new_default();
        build(b.init_root());
        let mut buf = BytesMut::from(&capnp::serialize::write_message_to_words(&b)[..]);
        FrameCodec::default().decode(&mut buf).unwrap().unwrap()
    }

    /// A `Start` of call `cid` whose `kind` field holds `raw_kind`, known or not.
    pub(crate) fn start_with_kind(cid: u64, raw_kind: u16) -> Frame {
        let f = frame_of(|m| {
            let mut s = m.init_start();
            s.set_cid(cid);
            s.set_function("echo");
            s.reborrow().init_caller().set_uuid(&[1; 16]);
        });
        // `kind` is the u16 right after the cid (data offset 4 in u16s, as the generated
        // `set_kind` writes it): find the cid's word and patch the next one.
        let mut bytes = f.bytes().to_vec();
        let at =
            bytes.chunks_exact(8).position(|w| w == cid.to_le_bytes()).expect("the cid's word") * 8;
        bytes[at + 8..at + 10].copy_from_slice(&raw_kind.to_le_bytes());
        let mut buf = BytesMut::from(&bytes[..]);
        FrameCodec::default().decode(&mut buf).unwrap().unwrap()
    }

    #[test]
    fn a_start_with_an_unknown_kind_fails_to_decode_but_names_its_call() {
        let f = start_with_kind(41, 9);
        assert_eq!(
            f.decode(),
            Err(MsgError::UnknownEnumValue { kind: MsgKind::Start, field: "kind", value: 9 })
        );
        assert_eq!(f.call_id(), Some(41));
        assert_eq!(start_with_kind(43, 2).call_id(), Some(43), "a known kind too");
    }

    /// A `Start` naming the known peer as its caller shares the peer's `Arc`; one naming
    /// anybody else (another uuid, pid or name) is read as its own copy, as
    /// [`Frame::decode`] reads every one.
    #[test]
    fn a_start_from_the_known_peer_shares_it_and_any_other_caller_is_copied() {
        use crate::msg::{CallKind, Start, Uuid};
        use tokio_util::codec::Encoder;
        let peer = Arc::new(Aid { name: "root".into(), uuid: Uuid([7; 16]), pid: 10 });
        let framed = |caller: Aid| {
            let start = Start {
                cid: 5,
                function: "echo".into(),
                caller: Arc::new(caller),
                kind: CallKind::Function,
                ..Start::default()
            };
            let mut buf = BytesMut::new();
            FrameCodec::default().encode(Msg::Start(Box::new(start)), &mut buf).unwrap();
            FrameCodec::default().decode(&mut buf).unwrap().unwrap()
        };
        let caller_of = |msg: Msg| match msg {
            Msg::Start(s) => s.caller,
            other => panic!("not a start: {other:?}"),
        };
        let f = framed((*peer).clone());
        assert!(Arc::ptr_eq(&caller_of(f.decode_from(&peer).unwrap()), &peer));
        assert!(!Arc::ptr_eq(&caller_of(f.decode().unwrap()), &peer), "decode copies");
        let others = [
            Aid { uuid: Uuid([8; 16]), ..(*peer).clone() },
            Aid { pid: 11, ..(*peer).clone() },
            Aid { name: "rooT".into(), ..(*peer).clone() },
        ];
        for other in others {
            let caller = caller_of(framed(other.clone()).decode_from(&peer).unwrap());
            assert!(!Arc::ptr_eq(&caller, &peer));
            assert_eq!(*caller, other);
        }
    }

    #[test]
    fn a_malformed_field_still_names_its_call() {
        let f = frame_of(|m| {
            let mut p = m.init_return();
            p.set_cid(17);
            p.set_payload(&[1, 2, 3]);
        });
        // Point the payload past the segment's end: the pointer is out of bounds.
        let mut bytes = f.bytes().to_vec();
        let n = bytes.len();
        bytes[n - 16..n - 8].copy_from_slice(&0x0000_00ff_0000_0001u64.to_le_bytes());
        let mut buf = BytesMut::from(&bytes[..]);
        let bad = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert!(bad.decode().is_err(), "the payload pointer is out of bounds");
        assert_eq!(bad.call_id(), Some(17));
    }

    #[test]
    fn an_unknown_member_names_its_call_by_schema_rule_6() {
        // A member of a newer schema: discriminant 200, a struct with `cid @0` at pointer 0.
        let f = frame_of(|m| m.init_start_ack().set_cid(99));
        let mut bytes = f.bytes().to_vec();
        // Root struct: word 0 is the root pointer, word 1 the data word with the
        // discriminant in its low 16 bits.
        bytes[8 + 8..8 + 10].copy_from_slice(&200u16.to_le_bytes());
        let mut buf = BytesMut::from(&bytes[..]);
        let f = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.decode(), Err(MsgError::UnknownVariant { discriminant: 200 }));
        assert_eq!(f.call_id(), Some(99));
        // A member that is not a struct with a cid names no call.
        let none = frame_of(|m| {
            m.init_hello();
        });
        assert_eq!(none.call_id(), None);
        let actor_level = frame_of(|m| m.init_error().get_cid().set_none(()));
        assert_eq!(actor_level.call_id(), None);
    }
}
