//! The owned, ergonomic mirror of the schema's `Msg` union, converting both ways.
//!
//! Every generated reader getter can fail (a pointer out of bounds, invalid UTF-8, a limit
//! hit) and every union can hold a member this build does not know. This module is where
//! those outcomes become a typed [`MsgError`] for *that message* — it never panics and never
//! allocates more than the frame it reads justifies: every string and list it copies is
//! charged, before it is allocated, against the frame's decode budget
//! ([`Limits::decode_factor`](crate::Limits::decode_factor) times its size), which holds
//! even when the frame's pointers alias one list so that a reader sees it many times over.
//! Payloads are not copied at all: a [`Payload`] decoded from a [`Frame`](crate::Frame)
//! shares the frame's buffer.
//!
//! Writing is infallible for any value of these types; only size is checked, by the codec.
//!
//! In the crate's module graph this sits above [`crate::error`], [`crate::payload`] and
//! [`crate::address`] and below `frame` and `codec`; [`MsgKind`], which the error and payload
//! types name too, is defined in a leaf module below all of them and re-exported here, and
//! so is [`ErrorKind`] (next to the generated code it converts to and from).

use crate::address::Address;
use crate::error::MsgError;
pub use crate::error_kind::ErrorKind;
use crate::generated::plough_capnp as schema;
pub use crate::msg_kind::MsgKind;
use crate::payload::{MsgPack, MsgTypeError, Payload, PayloadCodec, ShmRef};
use bytes::Bytes;
use capnp::traits::HasStructSize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A call id: chosen by the caller, unique among the caller's calls.
pub type Cid = u64;

/// A 16-byte actor instance id. Displayed in the usual 8-4-4-4-12 lowercase hex form;
/// [`Uuid::simple`] gives the 32 hex digits without hyphens, and [`FromStr`] reads both.
///
/// The bytes are public so that any 16 bytes make a `Uuid`; the text forms and
/// [`Uuid::new_v4`] come from the `uuid` crate.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A random (version 4) uuid, from the operating system's random source.
    pub fn new_v4() -> Uuid {
        Uuid(uuid::Uuid::new_v4().into_bytes())
    }

    /// The simple text form: 32 lowercase hex digits, no hyphens.
    pub fn simple(&self) -> impl fmt::Display + use<> {
        uuid::Uuid::from_bytes(self.0).simple()
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

/// Parses the hyphenated form (`67e55044-10b1-426f-9247-bb680e5fe0c8`, as `Display`
/// writes it) or the simple form (32 hex digits, as [`Uuid::simple`] writes it); hex
/// digits may be of either case. Other forms (braced, `urn:uuid:`) are refused.
impl FromStr for Uuid {
    type Err = InvalidUuid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidUuid { input: s.chars().take(InvalidUuid::MAX_SHOWN).collect() };
        // 36 bytes is only the hyphenated form, 32 only the simple one: no other form the
        // `uuid` crate accepts has either length.
        if !matches!(s.len(), 32 | 36) {
            return Err(invalid());
        }
        uuid::Uuid::try_parse(s).map(|u| Uuid(u.into_bytes())).map_err(|_| invalid())
    }
}

/// A string that is not a uuid in hyphenated or simple form; see [`Uuid`]'s [`FromStr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a uuid (expected 32 hex digits, optionally hyphenated 8-4-4-4-12)")]
pub struct InvalidUuid {
    /// The offending text, cut to its first [`InvalidUuid::MAX_SHOWN`] characters.
    input: String,
}

impl InvalidUuid {
    /// At most this many characters of the offending text are kept.
    pub const MAX_SHOWN: usize = 64;

    /// The offending text (at most [`InvalidUuid::MAX_SHOWN`] characters of it).
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// An actor's identity: name, instance uuid, process id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Aid {
    /// The actor's name.
    pub name: String,
    /// Unique per actor instance.
    pub uuid: Uuid,
    /// OS process id.
    pub pid: u32,
}

impl fmt::Display for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.pid)
    }
}

/// The opening message of every connection, both ways; each end then answers the other's
/// nonce with a [`Msg::Proof`] (the scheme is in the `auth` module, a layer above this one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// Who is speaking.
    pub aid: Aid,
    /// The challenge: fresh random bytes (32 from this crate's handshake) that the peer's
    /// proof must cover.
    pub nonce: Bytes,
    /// The speaker's build id (16 bytes, see [`BuildId`](crate::BuildId)), or empty: the
    /// handshake sends it where builds must match (over TLS by default).
    pub build: Bytes,
    /// The speaker reads [`Msg::Yields`]: its peer may send it stream items in batches.
    pub batches: bool,
    /// Whether the speaker reads payloads lent through shared memory
    /// ([`ShmRef`]); false from a peer that predates them.
    pub reads_shm: bool,
}

/// Process-global runtime settings a parent hands to a child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeVars {
    /// Whether the child is the root of its tree.
    pub is_root: bool,
    /// Debug mode.
    pub debug_mode: bool,
    /// Spawn method key, e.g. `main_thread_forkserver`.
    pub spawn_method: String,
    /// Log filter, e.g. `info`.
    pub log_level: String,
    /// Forward-compatible extra settings.
    pub extra: Vec<(String, String)>,
    /// Where the tree's root actor listens, when the sender knows it (a root sets its
    /// own; every child passes on what it was given).
    pub root_addr: Option<Address>,
    /// The sender's build, when it has computed it
    /// ([`BuildId::known`](crate::build_id::BuildId::known)): a child that runs that very
    /// executable file adopts it ([`BuildId::adopt`](crate::build_id::BuildId::adopt))
    /// instead of hashing its executable again.
    pub build: Option<crate::build_id::ExeBuild>,
}

/// What a parent tells a freshly spawned child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpawnSpec {
    /// Runtime settings.
    pub runtime_vars: RuntimeVars,
    /// Where the registrar(s) listen.
    pub registry_addrs: Vec<Address>,
    /// Where the child should listen.
    pub bind_addrs: Vec<Address>,
    /// Names of the handlers the child exposes, when [`SpawnSpec::expose_only`].
    pub enable_handlers: Vec<String>,
    /// The spawning parent, if any.
    pub parent: Option<Aid>,
    /// Whether the child serves only [`SpawnSpec::enable_handlers`]; otherwise (a spawn
    /// that did not narrow it) every function of its own registry, which its parent may
    /// not know (a host daemon runs another program than its own).
    pub expose_only: bool,
}

/// How a remote call behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallKind {
    /// `args -> result`.
    #[default]
    Function,
    /// `started`, then an optional two-way stream, then a result.
    Context,
    /// A context that opened a stream.
    Stream,
}

/// Start a call on the receiving actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    /// Call id.
    pub cid: Cid,
    /// Registered handler name (shared: a caller names its call with the name it keeps).
    pub function: Arc<str>,
    /// Arguments.
    pub args: Payload,
    /// Who calls (shared: a caller does not copy its identity into every call, and
    /// [`Frame::decode_from`](crate::Frame::decode_from) reads a known one as the caller's
    /// own `Arc`).
    pub caller: Arc<Aid>,
    /// The kind the caller expects.
    pub kind: CallKind,
    /// The caller's span, so that the callee's span is its child; `None` when the caller
    /// traces nothing (the callee then starts a trace of its own).
    pub trace: Option<TraceContext>,
}

/// A span's place in a distributed trace, in W3C Trace Context (`traceparent`) terms: the
/// trace it belongs to, the span that is the parent of whatever the receiver does for it,
/// and the trace flags. Rendered as a `traceparent` header value by [`fmt::Display`]
/// (`00-<trace id>-<span id>-<flags>`, lowercase hex).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace's id (all zero is W3C's invalid id).
    pub trace_id: [u8; 16],
    /// The parent span's id (all zero is W3C's invalid id).
    pub span_id: [u8; 8],
    /// W3C trace flags: [`TraceContext::SAMPLED`] or nothing.
    pub flags: u8,
}

impl TraceContext {
    /// The W3C `sampled` trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// Whether both ids are valid (not all zero), as W3C requires of a `traceparent`.
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// Acknowledges a [`Start`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartAck {
    /// Call id.
    pub cid: Cid,
    /// The kind the callee registered.
    pub kind: CallKind,
}

/// Answers a cancel request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CancelAck {
    /// Call id.
    pub cid: Cid,
    /// Whether the cancel was acknowledged.
    pub acked: bool,
}

/// A handler's error value, sent for an error type registered to travel as itself: the
/// caller decodes it when its own type has the same path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorValue {
    /// The error's full Rust type path (`std::any::type_name`).
    pub type_path: String,
    /// The value, encoded by the payload codec.
    pub payload: Payload,
}

/// Details of a type error (a payload that did not decode as the receiver's type).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeErrorInfo {
    /// The receiver's Rust type name.
    pub expected_type: String,
    /// The offending message kind.
    pub msg_kind: String,
    /// A short rendering of what arrived.
    pub rendering: String,
}

impl From<&MsgTypeError> for TypeErrorInfo {
    fn from(e: &MsgTypeError) -> Self {
        Self {
            expected_type: e.expected.clone(),
            msg_kind: e.kind.map(|k| k.to_string()).unwrap_or_default(),
            rendering: e.arrived.clone(),
        }
    }
}

/// An error travelling home.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorMsg {
    /// The call it belongs to; `None` for an actor-level error.
    pub cid: Option<Cid>,
    /// The actor where it was raised.
    pub source: Aid,
    /// Which failure: [`ErrorKind::User`] (the default, also what an older peer's message
    /// reads as) for a handler's own error, a runtime kind otherwise; a kind this build does
    /// not know reads as [`ErrorKind::Unknown`].
    pub kind: ErrorKind,
    /// Error type name: the handler's error type for a [`ErrorKind::User`] error, by
    /// convention [`ErrorKind::type_name`] for a runtime kind.
    pub type_name: String,
    /// Message text.
    pub message: String,
    /// Remote backtrace, as text.
    pub backtrace: String,
    /// Actors it travelled through, nearest last.
    pub relay_path: Vec<Aid>,
    /// Set when the error is a cancellation.
    pub canceller: Option<Aid>,
    /// Set when the error is a stream overrun.
    pub overrun_sender: Option<Aid>,
    /// Set for a type error.
    pub type_error: Option<TypeErrorInfo>,
    /// For a multi-error: every failure it holds, each with its own `kind` (nested as deep
    /// as the reader's nesting limit allows).
    pub nested: Vec<ErrorMsg>,
    /// For a handler's error of a registered type: its value.
    pub value: Option<Box<ErrorValue>>,
}

/// One message of the protocol: the owned mirror of the schema's `Msg` union.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Msg {
    /// The first message both ways on every connection.
    Hello(Box<Hello>),
    SpawnSpec(Box<SpawnSpec>),
    Start(Box<Start>),
    StartAck(StartAck),
    Started {
        cid: Cid,
        payload: Payload,
    },
    Yield {
        cid: Cid,
        payload: Payload,
    },
    Stop {
        cid: Cid,
    },
    Return {
        cid: Cid,
        payload: Payload,
    },
    CancelAck(CancelAck),
    Error(Box<ErrorMsg>),
    /// The answer to the peer's [`Hello::nonce`]: a MAC under the tree's secret of both
    /// hellos (see the `auth` module). Sent once per connection, right after the hellos.
    Proof(Bytes),
    /// Several stream items of one call, in order: the same as that many
    /// [`Msg::Yield`]s. Its kind is [`MsgKind::Yield`]. Sent only to a peer whose
    /// [`Hello::batches`] says it reads them.
    Yields {
        cid: Cid,
        payloads: Vec<Payload>,
    },
}

impl Msg {
    /// This message's kind.
    pub fn kind(&self) -> MsgKind {
        match self {
            Msg::Hello(_) => MsgKind::Hello,
            Msg::SpawnSpec(_) => MsgKind::SpawnSpec,
            Msg::Start(_) => MsgKind::Start,
            Msg::StartAck(_) => MsgKind::StartAck,
            Msg::Started { .. } => MsgKind::Started,
            Msg::Yield { .. } | Msg::Yields { .. } => MsgKind::Yield,
            Msg::Stop { .. } => MsgKind::Stop,
            Msg::Return { .. } => MsgKind::Return,
            Msg::CancelAck(_) => MsgKind::CancelAck,
            Msg::Error(_) => MsgKind::Error,
            Msg::Proof(_) => MsgKind::Proof,
        }
    }

    /// The call id, for the kinds that belong to a call.
    pub fn cid(&self) -> Option<Cid> {
        match self {
            Msg::Hello(_) | Msg::SpawnSpec(_) | Msg::Proof(_) => None,
            Msg::Start(s) => Some(s.cid),
            Msg::StartAck(a) => Some(a.cid),
            Msg::Started { cid, .. }
            | Msg::Yield { cid, .. }
            | Msg::Yields { cid, .. }
            | Msg::Stop { cid }
            | Msg::Return { cid, .. } => Some(*cid),
            Msg::CancelAck(a) => Some(a.cid),
            Msg::Error(e) => e.cid,
        }
    }

    /// The payload (`Start.args`, `Started`, `Yield`, `Return`), if this kind has one.
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Msg::Start(s) => Some(&s.args),
            Msg::Started { payload, .. }
            | Msg::Yield { payload, .. }
            | Msg::Return { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// Decodes the payload as a `T` with the default codec.
    ///
    /// # Errors
    /// [`MsgTypeError`] naming `T`, this message's kind and what arrived; a kind without a
    /// payload is a type error too.
    pub fn decode_payload<T: DeserializeOwned>(&self) -> Result<T, MsgTypeError> {
        match self.payload() {
            Some(p) => MsgPack.decode(p, Some(self.kind())),
            None => Err(MsgTypeError {
                expected: std::any::type_name::<T>().to_owned(),
                kind: Some(self.kind()),
                arrived: "no payload".to_owned(),
                reason: format!("a {} message carries no payload", self.kind()),
            }),
        }
    }

    /// Writes this message into a generated builder.
    pub fn write(&self, b: schema::msg::Builder<'_>) {
        self.write_as(b, PayloadBytes::Copied, None);
    }

    /// [`Msg::write`] on a connection whose own end is `sender`: a `Start` that names
    /// `sender` as its caller leaves the caller out, and the peer reads the connection's
    /// peer in its place ([`Frame::decode_from`](crate::Frame::decode_from)).
    pub(crate) fn write_sent_by(&self, b: schema::msg::Builder<'_>, sender: Option<&Aid>) {
        self.write_as(b, PayloadBytes::Copied, sender);
    }

    /// Writes this message with its [`payload`](Msg::payload)'s room reserved, not filled:
    /// the encoder sends the bytes from the payload itself (`codec::encode_parts`).
    pub(crate) fn write_reserving_payload(
        &self,
        b: schema::msg::Builder<'_>,
        sender: Option<&Aid>,
    ) {
        self.write_as(b, PayloadBytes::Reserved, sender);
    }

    fn write_as(&self, mut b: schema::msg::Builder<'_>, bytes: PayloadBytes, sender: Option<&Aid>) {
        match self {
            Msg::Hello(h) => {
                let mut hb = b.init_hello();
                write_aid(&h.aid, hb.reborrow().init_aid());
                if !h.nonce.is_empty() {
                    hb.set_nonce(&h.nonce);
                }
                if !h.build.is_empty() {
                    hb.set_build(&h.build);
                }
                hb.set_batches(h.batches);
                hb.set_reads_shm(h.reads_shm);
            }
            Msg::SpawnSpec(s) => write_spawn_spec(s, b.init_spawn_spec()),
            Msg::Start(s) => {
                let mut sb = b.init_start();
                sb.set_cid(s.cid);
                sb.set_function(&*s.function);
                match bytes {
                    PayloadBytes::Copied => sb.set_args(&s.args),
                    PayloadBytes::Reserved => {
                        sb.reborrow().init_args(payload_len(&s.args));
                    }
                }
                if let Some(r) = s.args.shm_ref() {
                    write_shm_ref(r, sb.reborrow().init_args_shm());
                }
                sb.set_kind(s.kind.into());
                if let Some(t) = &s.trace {
                    write_trace(t, sb.reborrow().init_trace());
                }
                if sender != Some(&*s.caller) {
                    write_aid(&s.caller, sb.init_caller());
                }
            }
            Msg::StartAck(a) => {
                let mut ab = b.init_start_ack();
                ab.set_cid(a.cid);
                ab.set_kind(a.kind.into());
            }
            Msg::Started { cid, payload } => {
                write_cid_payload(*cid, payload, bytes, b.init_started())
            }
            Msg::Yield { cid, payload } => write_cid_payload(*cid, payload, bytes, b.init_yield()),
            Msg::Stop { cid } => b.set_stop(*cid),
            Msg::Return { cid, payload } => {
                write_cid_payload(*cid, payload, bytes, b.init_return())
            }
            Msg::CancelAck(a) => {
                let mut ab = b.init_cancel_ack();
                ab.set_cid(a.cid);
                ab.set_acked(a.acked);
            }
            Msg::Error(e) => write_error(e, b.init_error()),
            Msg::Proof(mac) => b.set_proof(mac),
            Msg::Yields { cid, payloads } => {
                let mut yb = b.init_yields();
                yb.set_cid(*cid);
                let len = u32::try_from(payloads.len()).expect("a batch of fewer than 2^32 items");
                let mut list = yb.init_payloads(len);
                for (i, p) in payloads.iter().enumerate() {
                    list.set(i as u32, p);
                }
            }
        }
    }

    /// Reads a message from a generated reader. Payloads and the tree proof share `frame`
    /// when the reader's bytes lie inside it, and are copied otherwise. Nothing bounds what
    /// the copies may allocate but the reader's traversal limit: a received frame is read
    /// with [`Frame::decode`](crate::Frame::decode), which also holds it to its decode
    /// budget ([`Limits::decode_factor`](crate::Limits::decode_factor)).
    ///
    /// # Errors
    /// [`MsgError`] for an unknown variant or enum value, a malformed field, or a limit hit.
    pub fn read(r: schema::msg::Reader<'_>, frame: Option<&Bytes>) -> Result<Msg, MsgError> {
        Self::read_within(r, frame, usize::MAX)
    }

    /// [`Msg::read`], allocating at most `budget` bytes for the strings and lists it copies:
    /// each is charged before it is allocated (a list at its exact length), and one that
    /// does not fit is a [`MsgError::LimitExceeded`].
    pub(crate) fn read_within(
        r: schema::msg::Reader<'_>,
        frame: Option<&Bytes>,
        budget: usize,
    ) -> Result<Msg, MsgError> {
        Self::read_knowing(r, frame, budget, None)
    }

    /// [`Msg::read_within`], a `Start` whose caller is `known` sharing it.
    pub(crate) fn read_knowing(
        r: schema::msg::Reader<'_>,
        frame: Option<&Bytes>,
        budget: usize,
        known: Option<&Arc<Aid>>,
    ) -> Result<Msg, MsgError> {
        use schema::msg::Which as W;
        let which = r.which().map_err(|e| MsgError::UnknownVariant { discriminant: e.0 })?;
        let kind = kind_of(&which);
        let cx = Cx { kind, frame, budget: std::cell::Cell::new(budget), known };
        let msg = match which {
            W::Hello(h) => {
                let h = cx.ok(h)?;
                Msg::Hello(Box::new(Hello {
                    aid: cx.aid(cx.ok(h.get_aid())?)?,
                    nonce: cx.share(cx.ok(h.get_nonce())?)?,
                    build: if h.has_build() {
                        cx.share(cx.ok(h.get_build())?)?
                    } else {
                        Bytes::new()
                    },
                    batches: h.get_batches(),
                    reads_shm: h.get_reads_shm(),
                }))
            }
            W::SpawnSpec(s) => Msg::SpawnSpec(Box::new(cx.spawn_spec(cx.ok(s)?)?)),
            W::Start(s) => {
                let s = cx.ok(s)?;
                Msg::Start(Box::new(Start {
                    cid: s.get_cid(),
                    function: cx.shared_text(s.get_function())?,
                    args: lent_or(
                        cx.share(cx.ok(s.get_args())?)?.into(),
                        if s.has_args_shm() {
                            Some(read_shm_ref(cx.ok(s.get_args_shm())?))
                        } else {
                            None
                        },
                    ),
                    caller: if s.has_caller() {
                        cx.shared_aid(cx.ok(s.get_caller())?)?
                    } else {
                        cx.sender()?
                    },
                    kind: cx.call_kind(s.get_kind())?,
                    trace: if s.has_trace() {
                        Some(read_trace(cx.ok(s.get_trace())?))
                    } else {
                        None
                    },
                }))
            }
            W::StartAck(a) => {
                let a = cx.ok(a)?;
                Msg::StartAck(StartAck { cid: a.get_cid(), kind: cx.call_kind(a.get_kind())? })
            }
            W::Started(p) => {
                let (cid, payload) = cx.cid_payload(p)?;
                Msg::Started { cid, payload }
            }
            W::Yield(p) => {
                let (cid, payload) = cx.cid_payload(p)?;
                Msg::Yield { cid, payload }
            }
            W::Stop(cid) => Msg::Stop { cid },
            W::Return(p) => {
                let (cid, payload) = cx.cid_payload(p)?;
                Msg::Return { cid, payload }
            }
            W::CancelAck(a) => {
                let a = cx.ok(a)?;
                Msg::CancelAck(CancelAck { cid: a.get_cid(), acked: a.get_acked() })
            }
            W::Error(e) => Msg::Error(Box::new(cx.error(cx.ok(e)?)?)),
            W::Proof(mac) => Msg::Proof(cx.share(cx.ok(mac)?)?),
            W::Yields(y) => {
                let y = cx.ok(y)?;
                let list = cx.ok(y.get_payloads())?;
                let mut payloads = cx.vec(list.len())?;
                for item in list.iter() {
                    payloads.push(cx.share(cx.ok(item)?)?.into());
                }
                Msg::Yields { cid: y.get_cid(), payloads }
            }
        };
        Ok(msg)
    }

    /// An upper bound (in bytes, segment table included) of the frame this message
    /// encodes to, whichever way the encoder lays it out: a message whose bound is within
    /// [`Limits::max_frame`](crate::Limits::max_frame) always encodes.
    pub fn frame_len_bound(&self) -> usize {
        // A two-segment table (16 bytes) and a landing pad (8) at most beyond the words.
        24 + 8 * self.size_hint_words()
    }

    /// An upper bound (in 8-byte words, segment table excluded) of this message's encoded
    /// size, so that the encoder can build it in one segment in place.
    pub(crate) fn size_hint_words(&self) -> usize {
        let body = match self {
            Msg::Hello(h) => {
                words::<schema::hello::Builder<'_>>()
                    + aid_words(&h.aid)
                    + data_words(&h.nonce)
                    + data_words(&h.build)
            }
            Msg::SpawnSpec(s) => spawn_spec_words(s),
            Msg::Start(s) => {
                words::<schema::start::Builder<'_>>()
                    + text_words(&s.function)
                    + data_words(&s.args)
                    + s.args.shm_ref().map_or(0, |_| words::<schema::shm_ref::Builder<'_>>())
                    + aid_words(&s.caller)
                    + s.trace.map_or(0, |_| words::<schema::trace_context::Builder<'_>>())
            }
            Msg::StartAck(_) => words::<schema::start_ack::Builder<'_>>(),
            Msg::Started { payload, .. }
            | Msg::Yield { payload, .. }
            | Msg::Return { payload, .. } => {
                words::<schema::cid_payload::Builder<'_>>()
                    + data_words(payload)
                    + payload.shm_ref().map_or(0, |_| words::<schema::shm_ref::Builder<'_>>())
            }
            Msg::Stop { .. } => 0,
            Msg::CancelAck(_) => words::<schema::cancel_ack::Builder<'_>>(),
            Msg::Error(e) => error_words(e),
            Msg::Proof(mac) => data_words(mac),
            Msg::Yields { payloads, .. } => {
                words::<schema::cid_payloads::Builder<'_>>()
                    + payloads.len()
                    + payloads.iter().map(|p| data_words(p)).sum::<usize>()
            }
        };
        1 + words::<schema::msg::Builder<'_>>() + body
    }

    /// A lower bound (in bytes) of this message's encoded size: the variable-length bytes
    /// it carries. Lets the encoder refuse an oversized message before building it.
    pub(crate) fn size_floor_bytes(&self) -> usize {
        match self {
            Msg::Hello(h) => h.aid.name.len() + h.nonce.len() + h.build.len(),
            Msg::Proof(mac) => mac.len(),
            Msg::Start(s) => s.function.len() + s.args.len() + s.caller.name.len(),
            Msg::Started { payload, .. }
            | Msg::Yield { payload, .. }
            | Msg::Return { payload, .. } => payload.len(),
            Msg::Error(e) => e.message.len() + e.backtrace.len() + e.type_name.len(),
            Msg::Yields { payloads, .. } => payloads.iter().map(Payload::len).sum(),
            _ => 0,
        }
    }
}

pub(crate) fn kind_of<A, B, C, D, E, F, G, H, I, J, K>(
    w: &schema::msg::Which<A, B, C, D, E, F, G, H, I, J, K>,
) -> MsgKind {
    use schema::msg::Which as W;
    match w {
        W::Hello(_) => MsgKind::Hello,
        W::SpawnSpec(_) => MsgKind::SpawnSpec,
        W::Start(_) => MsgKind::Start,
        W::StartAck(_) => MsgKind::StartAck,
        W::Started(_) => MsgKind::Started,
        W::Yield(_) => MsgKind::Yield,
        W::Stop(_) => MsgKind::Stop,
        W::Return(_) => MsgKind::Return,
        W::CancelAck(_) => MsgKind::CancelAck,
        W::Error(_) => MsgKind::Error,
        W::Proof(_) => MsgKind::Proof,
        W::Yields(_) => MsgKind::Yield,
    }
}

pub(crate) fn kind_of_reader(r: schema::msg::Reader<'_>) -> Result<MsgKind, MsgError> {
    r.which().map(|w| kind_of(&w)).map_err(|e| MsgError::UnknownVariant { discriminant: e.0 })
}

impl From<CallKind> for schema::CallKind {
    fn from(k: CallKind) -> Self {
        match k {
            CallKind::Function => schema::CallKind::Function,
            CallKind::Context => schema::CallKind::Context,
            CallKind::Stream => schema::CallKind::Stream,
        }
    }
}

// ---- writing ----

fn write_aid(aid: &Aid, mut b: schema::aid::Builder<'_>) {
    b.set_name(aid.name.as_str());
    b.set_uuid(&aid.uuid.0);
    b.set_pid(aid.pid);
}

fn write_trace(t: &TraceContext, mut b: schema::trace_context::Builder<'_>) {
    let (high, low) = t.trace_id.split_at(8);
    b.set_trace_id_high(u64::from_be_bytes(high.try_into().expect("8 bytes")));
    b.set_trace_id_low(u64::from_be_bytes(low.try_into().expect("8 bytes")));
    b.set_span_id(u64::from_be_bytes(t.span_id));
    b.set_flags(t.flags);
}

fn read_trace(r: schema::trace_context::Reader<'_>) -> TraceContext {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&r.get_trace_id_high().to_be_bytes());
    trace_id[8..].copy_from_slice(&r.get_trace_id_low().to_be_bytes());
    TraceContext { trace_id, span_id: r.get_span_id().to_be_bytes(), flags: r.get_flags() }
}

/// How [`Msg::write_as`] writes a payload's bytes.
#[derive(Clone, Copy)]
enum PayloadBytes {
    /// Into the message.
    Copied,
    /// Not at all: the room is reserved (zero), for the encoder to fill on the way out.
    Reserved,
}

/// A payload's length as a Cap'n Proto data length.
fn payload_len(p: &Payload) -> u32 {
    u32::try_from(p.len()).expect("a payload below the frame limit (checked by the encoder)")
}

fn write_cid_payload(
    cid: Cid,
    payload: &Payload,
    bytes: PayloadBytes,
    mut b: schema::cid_payload::Builder<'_>,
) {
    b.set_cid(cid);
    match bytes {
        PayloadBytes::Copied => b.set_payload(payload),
        PayloadBytes::Reserved => {
            b.reborrow().init_payload(payload_len(payload));
        }
    }
    if let Some(r) = payload.shm_ref() {
        write_shm_ref(r, b.init_payload_shm());
    }
}

fn write_shm_ref(r: &ShmRef, mut b: schema::shm_ref::Builder<'_>) {
    b.set_pid(r.pid);
    b.set_start_time(r.start_time);
    b.set_fd(r.fd);
    b.set_ino(r.ino);
    b.set_len(r.len);
}

fn read_shm_ref(r: schema::shm_ref::Reader<'_>) -> ShmRef {
    ShmRef {
        pid: r.get_pid(),
        start_time: r.get_start_time(),
        fd: r.get_fd(),
        ino: r.get_ino(),
        len: r.get_len(),
    }
}

/// A payload's bytes, or the segment it was lent through (`shm`, when the field is set).
fn lent_or(bytes: Payload, shm: Option<ShmRef>) -> Payload {
    match shm {
        Some(r) => Payload::lent(r),
        None => bytes,
    }
}

fn write_text_list<'a>(
    items: impl ExactSizeIterator<Item = &'a str>,
    mut b: capnp::text_list::Builder<'_>,
) {
    for (i, s) in items.enumerate() {
        b.set(i as u32, s);
    }
}

fn write_spawn_spec(s: &SpawnSpec, mut b: schema::spawn_spec::Builder<'_>) {
    {
        let v = &s.runtime_vars;
        let mut vb = b.reborrow().init_runtime_vars();
        vb.set_is_root(v.is_root);
        vb.set_debug_mode(v.debug_mode);
        vb.set_spawn_method(v.spawn_method.as_str());
        vb.set_log_level(v.log_level.as_str());
        if let Some(root) = &v.root_addr {
            vb.set_root_addr(root.to_string().as_str());
        }
        if let Some(build) = &v.build {
            let mut bb = vb.reborrow().init_build();
            bb.set_id(&build.id.0);
            bb.set_dev(build.dev);
            bb.set_ino(build.ino);
        }
        let mut eb = vb.init_extra(v.extra.len() as u32);
        for (i, (k, val)) in v.extra.iter().enumerate() {
            let mut kv = eb.reborrow().get(i as u32);
            kv.set_key(k.as_str());
            kv.set_value(val.as_str());
        }
    }
    let registry: Vec<String> = s.registry_addrs.iter().map(Address::to_string).collect();
    let bind: Vec<String> = s.bind_addrs.iter().map(Address::to_string).collect();
    write_text_list(
        registry.iter().map(String::as_str),
        b.reborrow().init_registry_addrs(registry.len() as u32),
    );
    write_text_list(
        bind.iter().map(String::as_str),
        b.reborrow().init_bind_addrs(bind.len() as u32),
    );
    write_text_list(
        s.enable_handlers.iter().map(String::as_str),
        b.reborrow().init_enable_handlers(s.enable_handlers.len() as u32),
    );
    b.set_expose_only(s.expose_only);
    if let Some(parent) = &s.parent {
        write_aid(parent, b.init_parent());
    }
}

fn write_error(e: &ErrorMsg, mut b: schema::error::Builder<'_>) {
    match e.cid {
        Some(cid) => b.reborrow().get_cid().set_id(cid),
        None => b.reborrow().get_cid().set_none(()),
    }
    write_aid(&e.source, b.reborrow().init_source());
    b.set_kind(e.kind.into());
    b.set_type_name(e.type_name.as_str());
    b.set_message(e.message.as_str());
    b.set_backtrace(e.backtrace.as_str());
    let mut path = b.reborrow().init_relay_path(e.relay_path.len() as u32);
    for (i, aid) in e.relay_path.iter().enumerate() {
        write_aid(aid, path.reborrow().get(i as u32));
    }
    if let Some(c) = &e.canceller {
        write_aid(c, b.reborrow().init_canceller());
    }
    if let Some(o) = &e.overrun_sender {
        write_aid(o, b.reborrow().init_overrun_sender());
    }
    if let Some(t) = &e.type_error {
        let mut tb = b.reborrow().init_type_error();
        tb.set_expected_type(t.expected_type.as_str());
        tb.set_msg_kind(t.msg_kind.as_str());
        tb.set_rendering(t.rendering.as_str());
    }
    if let Some(v) = &e.value {
        let mut vb = b.reborrow().init_value();
        vb.set_type_path(v.type_path.as_str());
        vb.set_payload(&v.payload);
    }
    if !e.nested.is_empty() {
        let mut list = b.init_nested(e.nested.len() as u32);
        for (i, n) in e.nested.iter().enumerate() {
            write_error(n, list.reborrow().get(i as u32));
        }
    }
}

// ---- size hints (upper bounds, in words) ----

fn words<T: HasStructSize>() -> usize {
    T::STRUCT_SIZE.total() as usize
}

fn text_words(s: &str) -> usize {
    (s.len() + 1).div_ceil(8)
}

pub(crate) fn data_words(d: &[u8]) -> usize {
    d.len().div_ceil(8)
}

fn aid_words(aid: &Aid) -> usize {
    words::<schema::aid::Builder<'_>>() + text_words(&aid.name) + 2
}

fn aid_list_words(aids: &[Aid]) -> usize {
    1 + aids.iter().map(aid_words).sum::<usize>()
}

fn text_list_words<'a>(items: impl Iterator<Item = &'a str>) -> usize {
    items.map(|s| 1 + text_words(s)).sum()
}

fn spawn_spec_words(s: &SpawnSpec) -> usize {
    let v = &s.runtime_vars;
    let addr = |a: &Address| 1 + (a.to_string().len() + 1).div_ceil(8);
    words::<schema::spawn_spec::Builder<'_>>()
        + words::<schema::runtime_vars::Builder<'_>>()
        + text_words(&v.spawn_method)
        + text_words(&v.log_level)
        + v.root_addr.as_ref().map_or(0, |a| (a.to_string().len() + 1).div_ceil(8))
        + v.build.map_or(0, |_| {
            words::<schema::exe_build::Builder<'_>>() + crate::build_id::BUILD_ID_LEN.div_ceil(8)
        })
        + 1
        + v.extra
            .iter()
            .map(|(k, val)| {
                words::<schema::key_value::Builder<'_>>() + text_words(k) + text_words(val)
            })
            .sum::<usize>()
        + s.registry_addrs.iter().map(addr).sum::<usize>()
        + s.bind_addrs.iter().map(addr).sum::<usize>()
        + text_list_words(s.enable_handlers.iter().map(String::as_str))
        + s.parent.as_ref().map_or(0, aid_words)
}

fn error_words(e: &ErrorMsg) -> usize {
    let opt_aid = |a: &Option<Aid>| a.as_ref().map_or(0, aid_words);
    words::<schema::error::Builder<'_>>()
        + aid_words(&e.source)
        + text_words(&e.type_name)
        + text_words(&e.message)
        + text_words(&e.backtrace)
        + aid_list_words(&e.relay_path)
        + opt_aid(&e.canceller)
        + opt_aid(&e.overrun_sender)
        + e.type_error.as_ref().map_or(0, |t| {
            words::<schema::type_error_info::Builder<'_>>()
                + text_words(&t.expected_type)
                + text_words(&t.msg_kind)
                + text_words(&t.rendering)
        })
        + e.value.as_ref().map_or(0, |v| {
            words::<schema::error_value::Builder<'_>>()
                + text_words(&v.type_path)
                + data_words(&v.payload)
        })
        + if e.nested.is_empty() { 0 } else { 1 + e.nested.iter().map(error_words).sum::<usize>() }
}

// ---- reading ----

/// Reading context: the kind being read (for errors), the frame to share bytes with, and
/// the bytes the copies may still allocate.
struct Cx<'f> {
    kind: MsgKind,
    frame: Option<&'f Bytes>,
    budget: std::cell::Cell<usize>,
    /// An identity a `Start` is expected to name as its caller (the connection's peer):
    /// one that does is read as this `Arc`, nothing allocated.
    known: Option<&'f Arc<Aid>>,
}

impl Cx<'_> {
    /// Takes `bytes` from the decode budget, before they are allocated.
    fn charge(&self, bytes: usize) -> Result<(), MsgError> {
        match self.budget.get().checked_sub(bytes) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(MsgError::LimitExceeded {
                kind: Some(self.kind),
                reason: format!(
                    "decoding needs more memory than the frame's decode budget allows \
                     ({bytes} bytes more, {} left)",
                    self.budget.get()
                ),
            }),
        }
    }

    /// A `Vec` for a list the peer says has `len` elements, charged at its exact size (so
    /// it never grows). A list of zero-sized structs can claim 2²⁹ elements while
    /// occupying no byte of the frame: the charge refuses it before anything is reserved.
    fn vec<T>(&self, len: u32) -> Result<Vec<T>, MsgError> {
        self.charge((len as usize).saturating_mul(std::mem::size_of::<T>()))?;
        Ok(Vec::with_capacity(len as usize))
    }

    /// The caller of a `Start` that names none: the connection's peer, which sent it.
    fn sender(&self) -> Result<Arc<Aid>, MsgError> {
        self.known.cloned().ok_or_else(|| {
            self.malformed("a start names no caller, and the connection's peer is not known here")
        })
    }

    fn ok<T>(&self, r: capnp::Result<T>) -> Result<T, MsgError> {
        r.map_err(|e| MsgError::from_capnp(Some(self.kind), e))
    }

    fn malformed(&self, reason: impl Into<String>) -> MsgError {
        MsgError::Malformed { kind: Some(self.kind), reason: reason.into() }
    }

    /// A text field, charged to the budget before it is copied.
    fn checked_text<'r>(
        &self,
        r: capnp::Result<capnp::text::Reader<'r>>,
    ) -> Result<&'r str, MsgError> {
        let t = self.ok(r)?;
        self.charge(t.len())?;
        t.to_str().map_err(|e| self.malformed(format!("invalid UTF-8 in a text field: {e}")))
    }

    fn text(&self, r: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, MsgError> {
        self.checked_text(r).map(str::to_owned)
    }

    /// [`Cx::text`], shared (in one allocation).
    fn shared_text(&self, r: capnp::Result<capnp::text::Reader<'_>>) -> Result<Arc<str>, MsgError> {
        self.checked_text(r).map(Arc::from)
    }

    fn share(&self, data: &[u8]) -> Result<Bytes, MsgError> {
        match self.frame {
            Some(frame) => Ok(share(frame, data)),
            None => {
                self.charge(data.len())?;
                Ok(Bytes::copy_from_slice(data))
            }
        }
    }

    /// [`Cx::aid`], shared: the known identity itself when `r` names it.
    fn shared_aid(&self, r: schema::aid::Reader<'_>) -> Result<Arc<Aid>, MsgError> {
        if let Some(known) = self.known {
            let name = self.ok(r.get_name())?;
            if r.get_pid() == known.pid
                && self.ok(r.get_uuid())? == known.uuid.0.as_slice()
                && name.as_bytes() == known.name.as_bytes()
            {
                return Ok(Arc::clone(known));
            }
        }
        self.aid(r).map(Arc::new)
    }

    fn aid(&self, r: schema::aid::Reader<'_>) -> Result<Aid, MsgError> {
        let uuid = self.ok(r.get_uuid())?;
        let uuid: [u8; 16] = uuid.try_into().map_err(|_| {
            self.malformed(format!("an aid's uuid has {} bytes, not 16", uuid.len()))
        })?;
        Ok(Aid { name: self.text(r.get_name())?, uuid: Uuid(uuid), pid: r.get_pid() })
    }

    fn opt_aid(
        &self,
        present: bool,
        r: capnp::Result<schema::aid::Reader<'_>>,
    ) -> Result<Option<Aid>, MsgError> {
        if present { Ok(Some(self.aid(self.ok(r)?)?)) } else { Ok(None) }
    }

    fn call_kind(
        &self,
        r: Result<schema::CallKind, capnp::NotInSchema>,
    ) -> Result<CallKind, MsgError> {
        match r {
            Ok(schema::CallKind::Function) => Ok(CallKind::Function),
            Ok(schema::CallKind::Context) => Ok(CallKind::Context),
            Ok(schema::CallKind::Stream) => Ok(CallKind::Stream),
            Err(e) => {
                Err(MsgError::UnknownEnumValue { kind: self.kind, field: "kind", value: e.0 })
            }
        }
    }

    fn cid_payload(
        &self,
        r: capnp::Result<schema::cid_payload::Reader<'_>>,
    ) -> Result<(Cid, Payload), MsgError> {
        let r = self.ok(r)?;
        let shm = if r.has_payload_shm() {
            Some(read_shm_ref(self.ok(r.get_payload_shm())?))
        } else {
            None
        };
        Ok((r.get_cid(), lent_or(self.share(self.ok(r.get_payload())?)?.into(), shm)))
    }

    fn text_list(
        &self,
        r: capnp::Result<capnp::text_list::Reader<'_>>,
    ) -> Result<Vec<String>, MsgError> {
        let list = self.ok(r)?;
        let mut out = self.vec(list.len())?;
        for item in list.iter() {
            out.push(self.text(item)?);
        }
        Ok(out)
    }

    fn build_id(&self, data: &[u8]) -> Result<crate::build_id::BuildId, MsgError> {
        let id: [u8; crate::build_id::BUILD_ID_LEN] = data.try_into().map_err(|_| {
            self.malformed(format!(
                "a build id has {} bytes, not {}",
                data.len(),
                crate::build_id::BUILD_ID_LEN
            ))
        })?;
        Ok(crate::build_id::BuildId(id))
    }

    fn addr(&self, s: String) -> Result<Address, MsgError> {
        // An address holds (at most) its text again, as a path or a host.
        self.charge(s.len())?;
        s.parse().map_err(|e| self.malformed(format!("bad address `{s}`: {e}")))
    }

    fn addr_list(
        &self,
        r: capnp::Result<capnp::text_list::Reader<'_>>,
    ) -> Result<Vec<Address>, MsgError> {
        let texts = self.text_list(r)?;
        let mut out = self.vec(texts.len() as u32)?;
        for s in texts {
            out.push(self.addr(s)?);
        }
        Ok(out)
    }

    fn spawn_spec(&self, s: schema::spawn_spec::Reader<'_>) -> Result<SpawnSpec, MsgError> {
        let v = self.ok(s.get_runtime_vars())?;
        let extra_list = self.ok(v.get_extra())?;
        let mut extra = self.vec(extra_list.len())?;
        for kv in extra_list.iter() {
            extra.push((self.text(kv.get_key())?, self.text(kv.get_value())?));
        }
        Ok(SpawnSpec {
            runtime_vars: RuntimeVars {
                is_root: v.get_is_root(),
                debug_mode: v.get_debug_mode(),
                spawn_method: self.text(v.get_spawn_method())?,
                log_level: self.text(v.get_log_level())?,
                extra,
                root_addr: match v.has_root_addr() {
                    true => Some(self.addr(self.text(v.get_root_addr())?)?),
                    false => None,
                },
                build: match v.has_build() {
                    true => {
                        let b = self.ok(v.get_build())?;
                        Some(crate::build_id::ExeBuild {
                            id: self.build_id(self.ok(b.get_id())?)?,
                            dev: b.get_dev(),
                            ino: b.get_ino(),
                        })
                    }
                    false => None,
                },
            },
            registry_addrs: self.addr_list(s.get_registry_addrs())?,
            bind_addrs: self.addr_list(s.get_bind_addrs())?,
            enable_handlers: self.text_list(s.get_enable_handlers())?,
            parent: self.opt_aid(s.has_parent(), s.get_parent())?,
            expose_only: s.get_expose_only(),
        })
    }

    fn error(&self, e: schema::error::Reader<'_>) -> Result<ErrorMsg, MsgError> {
        use schema::error::cid::Which as C;
        let cid = match e.get_cid().which() {
            Ok(C::None(())) => None,
            Ok(C::Id(id)) => Some(id),
            Err(n) => {
                return Err(MsgError::UnknownEnumValue {
                    kind: self.kind,
                    field: "cid",
                    value: n.0,
                });
            }
        };
        let path = self.ok(e.get_relay_path())?;
        let mut relay_path = self.vec(path.len())?;
        for aid in path.iter() {
            relay_path.push(self.aid(aid)?);
        }
        let type_error = if e.has_type_error() {
            let t = self.ok(e.get_type_error())?;
            Some(TypeErrorInfo {
                expected_type: self.text(t.get_expected_type())?,
                msg_kind: self.text(t.get_msg_kind())?,
                rendering: self.text(t.get_rendering())?,
            })
        } else {
            None
        };
        let value = if e.has_value() {
            let v = self.ok(e.get_value())?;
            Some(Box::new(ErrorValue {
                type_path: self.text(v.get_type_path())?,
                payload: self.share(self.ok(v.get_payload())?)?.into(),
            }))
        } else {
            None
        };
        let nested_r = self.ok(e.get_nested())?;
        let mut nested = self.vec(nested_r.len())?;
        for n in nested_r.iter() {
            nested.push(self.error(n)?);
        }
        Ok(ErrorMsg {
            cid,
            source: self.aid(self.ok(e.get_source())?)?,
            kind: ErrorKind::from_wire(e.get_kind()),
            type_name: self.text(e.get_type_name())?,
            message: self.text(e.get_message())?,
            backtrace: self.text(e.get_backtrace())?,
            relay_path,
            canceller: self.opt_aid(e.has_canceller(), e.get_canceller())?,
            overrun_sender: self.opt_aid(e.has_overrun_sender(), e.get_overrun_sender())?,
            type_error,
            nested,
            value,
        })
    }
}

/// `sub` as a `Bytes` sharing `frame`'s buffer when it lies inside it (no copy), or a copy
/// when it does not. Never panics, unlike `Bytes::slice_ref`.
pub(crate) fn share(frame: &Bytes, sub: &[u8]) -> Bytes {
    let base = frame.as_ptr() as usize;
    let start = sub.as_ptr() as usize;
    if sub.is_empty() {
        return Bytes::new();
    }
    match start.checked_sub(base) {
        Some(offset) if offset + sub.len() <= frame.len() => {
            frame.slice(offset..offset + sub.len())
        }
        _ => Bytes::copy_from_slice(sub),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameCodec;
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    #[test]
    fn a_message_is_small_enough_to_move_cheaply() {
        // Every message is moved several times between a sender and the socket (into a
        // queue, out of it, into the encoder): the rare large variants are boxed so that
        // a stream item or a reply is a few words, not the size of an error.
        assert!(std::mem::size_of::<Msg>() <= 56, "Msg is {} bytes", std::mem::size_of::<Msg>());
    }

    #[test]
    fn a_trace_context_reads_as_a_w3c_traceparent_and_survives_the_wire() {
        let mut trace_id = [0u8; 16];
        trace_id[0] = 0x4b;
        trace_id[15] = 0x36;
        let t = TraceContext { trace_id, span_id: [0, 0xf0, 0, 0, 0, 0, 0, 0x7a], flags: 1 };
        assert_eq!(t.to_string(), "00-4b000000000000000000000000000036-00f000000000007a-01");
        assert!(t.is_valid());
        assert!(!TraceContext::default().is_valid());
        let start = Msg::Start(Box::new(Start { cid: 3, trace: Some(t), ..Start::default() }));
        let mut buf = BytesMut::new();
        tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), start.clone(), &mut buf)
            .expect("encodes");
        let frame = FrameCodec::default().decode(&mut buf).expect("decodes").expect("a frame");
        assert_eq!(frame.decode().expect("a message"), start);
    }

    /// Frames a message built by hand with the generated builder (bypassing `Msg::write`).
    fn frame_of(build: impl FnOnce(schema::msg::Builder<'_>)) -> crate::Frame {
        let mut b = capnp::message::Builder::new_default();
        build(b.init_root());
        let mut buf = BytesMut::from(&capnp::serialize::write_message_to_words(&b)[..]);
        FrameCodec::default().decode(&mut buf).unwrap().unwrap()
    }

    fn malformed_reason(frame: &crate::Frame) -> String {
        match frame.decode() {
            Err(MsgError::Malformed { reason, .. }) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn a_uuid_that_is_not_16_bytes_is_malformed() {
        let f = frame_of(|m| m.init_hello().init_aid().set_uuid(&[1, 2, 3]));
        assert!(malformed_reason(&f).contains("3 bytes, not 16"));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let f = frame_of(|m| {
            let mut aid = m.init_hello().init_aid();
            aid.set_uuid(&[0; 16]);
            aid.init_name(2).as_bytes_mut().copy_from_slice(&[0xff, 0xfe]);
        });
        assert!(malformed_reason(&f).contains("UTF-8"));
    }

    #[test]
    fn an_unparsable_address_is_malformed() {
        let f = frame_of(|m| m.init_spawn_spec().init_bind_addrs(1).set(0, "ftp://x"));
        assert!(malformed_reason(&f).contains("ftp://x"));
    }

    #[test]
    fn uuid_text_forms_round_trip() {
        let u = Uuid([
            0x67, 0xe5, 0x50, 0x44, 0x10, 0xb1, 0x42, 0x6f, 0x92, 0x47, 0xbb, 0x68, 0x0e, 0x5f,
            0xe0, 0xc8,
        ]);
        assert_eq!(u.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(u.simple().to_string(), "67e5504410b1426f9247bb680e5fe0c8");
        assert_eq!(format!("{u:?}"), "Uuid(67e55044-10b1-426f-9247-bb680e5fe0c8)");
        assert_eq!(u.to_string().parse::<Uuid>(), Ok(u));
        assert_eq!(u.simple().to_string().parse::<Uuid>(), Ok(u));
        assert_eq!("67E55044-10B1-426F-9247-BB680E5FE0C8".parse::<Uuid>(), Ok(u));
        assert_eq!(Uuid::default().to_string(), "00000000-0000-0000-0000-000000000000");
        for _ in 0..32 {
            let r = Uuid::new_v4();
            assert_eq!(r.to_string().parse::<Uuid>(), Ok(r));
            assert_eq!(r.simple().to_string().parse::<Uuid>(), Ok(r));
        }
    }

    #[test]
    fn bad_uuid_strings_are_errors() {
        for bad in [
            "",
            "67e55044",
            "67e55044-10b1-426f-9247-bb680e5fe0c", // one digit short
            "67e55044-10b1-426f-9247-bb680e5fe0c8a", // one digit long
            "67e55044-10b1-426f-9247-bb680e5fe0cg", // not hex
            "67e5504410b1426f9247bb680e5fe0cz",
            "67e55044x10b1x426fx9247xbb680e5fe0c8", // wrong separators
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            let err = bad.parse::<Uuid>().expect_err(bad);
            assert_eq!(err.input(), bad);
            assert!(err.to_string().contains("is not a uuid"), "{err}");
        }
        let long = "x".repeat(1000);
        assert_eq!(long.parse::<Uuid>().unwrap_err().input().len(), InvalidUuid::MAX_SHOWN);
    }

    #[test]
    fn new_v4_is_random_version_4() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(a, b);
        for u in [a, b] {
            let parsed = uuid::Uuid::from_bytes(u.0);
            assert_eq!(parsed.get_version(), Some(uuid::Version::Random));
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
            // Version nibble and variant bits, straight from the bytes.
            assert_eq!(u.0[6] >> 4, 4);
            assert_eq!(u.0[8] >> 6, 0b10);
            assert_eq!(u.to_string().as_bytes()[14], b'4');
        }
    }

    #[test]
    fn a_kind_without_payload_is_a_type_error() {
        let err = Msg::Stop { cid: 1 }.decode_payload::<u32>().unwrap_err();
        assert_eq!(err.kind, Some(MsgKind::Stop));
        assert_eq!(err.arrived, "no payload");
    }
}
