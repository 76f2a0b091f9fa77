//! Payloads: the opaque bytes of call arguments, results and stream items.
//!
//! The schema carries payloads as `Data`, so user types never need a `.capnp` file. A
//! [`PayloadCodec`] turns values into those bytes and back; the default, [`MsgPack`], is
//! self-describing, which is what lets a mismatch say *what arrived* instead of only
//! "invalid type". Raw bytes go through untouched: build a [`Payload`] from [`Bytes`]
//! or a `Vec<u8>` and read it back with [`Payload::as_bytes`].
//!
//! The hazard designed out here is the silent or unhelpful type mismatch between two
//! processes that were built from different versions of a handler: decoding into the
//! wrong type is a [`MsgTypeError`] naming the expected Rust type, the message kind and a
//! short rendering of the value, and that error is `Clone` and serializable so it can be
//! sent back to the peer. Decoding never allocates more than the bytes that arrived
//! justify (serde's cautious size hints) and nesting is capped.

use crate::msg_kind::MsgKind;
use bytes::Bytes;
use serde::de::{self, DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};

/// Deepest nesting a payload may have when decoded (a deeper one is a [`MsgTypeError`]).
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// Longest rendering (in characters) of an offending value in a [`MsgTypeError`].
pub const MAX_RENDERING_CHARS: usize = 120;

/// Opaque payload bytes, as they travel in `Start.args`, `Started`, `Yield` and `Return`.
///
/// Cheap to clone (reference-counted). A payload decoded from a frame borrows the frame's
/// buffer: no copy is made.
///
/// # Caveats
/// Because of that sharing, a payload kept alive keeps the whole buffer it was read into
/// alive (a read buffer holds several frames, and a large frame has one of its own). Copy
/// a small payload you keep for long: `Payload::from(payload.to_vec())`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Payload(Bytes, Option<Box<ShmRef>>);

/// Where a payload lent through shared memory lies: a sealed memfd of its sender's (the
/// schema's `ShmRef`; plough-shm's `SegmentRef` names the same fields). A frame carries
/// one instead of a large payload's bytes between two processes of one host; the
/// connection layer of the receiver opens it (checking every field) and replaces it with
/// the mapped bytes before anyone reads the payload. Untrusted input, like any field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ShmRef {
    /// The owner's (the sender's) pid.
    pub pid: u32,
    /// The owner's start time (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// The memfd's fd number in the owner.
    pub fd: i32,
    /// The memfd's inode.
    pub ino: u64,
    /// The payload's length: the segment's first `len` bytes.
    pub len: u64,
}

impl Payload {
    /// An empty payload.
    pub const fn empty() -> Self {
        Self(Bytes::new(), None)
    }

    /// A payload that travels as a reference to a shared-memory segment: its bytes are
    /// empty until the receiving connection opens the segment.
    pub fn lent(r: ShmRef) -> Self {
        Self(Bytes::new(), Some(Box::new(r)))
    }

    /// The segment this payload names instead of carrying bytes, if it was lent (only
    /// seen by the connection layer: it replaces a lent payload with its bytes).
    pub fn shm_ref(&self) -> Option<&ShmRef> {
        self.1.as_deref()
    }

    /// Serializes `value` with the default codec, [`MsgPack`].
    ///
    /// # Errors
    /// [`PayloadEncodeError`] when the value's `Serialize` impl fails.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, PayloadEncodeError> {
        MsgPack.encode(value)
    }

    /// Deserializes the payload with the default codec, [`MsgPack`].
    ///
    /// # Errors
    /// [`MsgTypeError`] when the bytes are not a `T` (the message kind is left empty; use
    /// [`Msg::decode_payload`](crate::Msg::decode_payload) to have it filled in).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, MsgTypeError> {
        MsgPack.decode(self, None)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The raw bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self(b, None)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v), None)
    }
}

impl From<&'static [u8]> for Payload {
    fn from(v: &'static [u8]) -> Self {
        Self(Bytes::from_static(v), None)
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.1 {
            Some(r) => write!(f, "Payload(lent {} bytes: {r:?})", r.len),
            None => write!(f, "Payload({})", render(&self.0)),
        }
    }
}

/// Turns values into payload bytes and back.
pub trait PayloadCodec {
    /// Serializes `value`.
    ///
    /// # Errors
    /// [`PayloadEncodeError`] when the value cannot be represented.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Payload, PayloadEncodeError>;

    /// Deserializes a `T` from `payload`, which arrived in a message of kind `kind`.
    ///
    /// # Errors
    /// [`MsgTypeError`] when the bytes are not a `T`.
    fn decode<T: DeserializeOwned>(
        &self,
        payload: &Payload,
        kind: Option<MsgKind>,
    ) -> Result<T, MsgTypeError>;
}

/// How many bytes follow the first value of `bytes` (for the error of a payload that has
/// some: the slow path, read again through a cursor that counts).
fn trailing(bytes: &[u8]) -> usize {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    match IgnoredAny::deserialize(&mut de) {
        Ok(_) => bytes.len().saturating_sub(de.position() as usize),
        Err(_) => bytes.len(),
    }
}

/// The largest encoding [`MsgPack`] copies out of its per-thread scratch buffer; a larger
/// one takes the buffer with it.
const SCRATCH_BYTES: usize = 4096;

thread_local! {
    /// Where [`MsgPack`] encodes: a value's encoding grows no fresh buffer step by step
    /// (two or three allocations for a small one, and a third for `Bytes` to share a
    /// buffer longer than its contents), and a small one leaves in one allocation.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The default payload codec: MessagePack via `rmp-serde`, structs as maps (field names
/// travel, so reordering fields between versions is harmless and a mismatch renders
/// readably).
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPack;

impl PayloadCodec for MsgPack {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Payload, PayloadEncodeError> {
        let failed = |e: rmp_serde::encode::Error| PayloadEncodeError {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        };
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                let written = rmp_serde::encode::write_named(&mut *buf, value);
                written.map_err(failed)?;
                Ok(if buf.len() <= SCRATCH_BYTES {
                    // One allocation, of the exact size (`Bytes` adopts it as it is).
                    Payload::from(Bytes::copy_from_slice(&buf))
                } else {
                    // A large value keeps the buffer it grew, uncopied.
                    Payload::from(std::mem::take(&mut *buf))
                })
            }
            // A `Serialize` impl that encodes a payload itself.
            Err(_) => rmp_serde::to_vec_named(value).map(Payload::from).map_err(failed),
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        payload: &Payload,
        kind: Option<MsgKind>,
    ) -> Result<T, MsgTypeError> {
        // Read in place (strings and binaries borrowed from the payload, copied once, at
        // their exact size, into the value), not through `io::Read`, which copies each
        // of them through a growing buffer first.
        let bytes: &[u8] = payload.as_ref();
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(MAX_PAYLOAD_DEPTH);
        let result = T::deserialize(&mut de).map_err(|e| e.to_string());
        let result = result.and_then(|v| {
            // Trailing bytes mean the peer sent something else than one `T`: the value
            // must end the payload, so reading another one finds no marker at all.
            match IgnoredAny::deserialize(&mut de) {
                Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    Ok(v)
                }
                _ => Err(format!("{} trailing bytes after the value", trailing(bytes))),
            }
        });
        result.map_err(|reason| MsgTypeError {
            expected: std::any::type_name::<T>().to_owned(),
            kind,
            arrived: render(payload),
            reason,
        })
    }
}

/// A value could not be serialized into a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to encode a `{type_name}` payload: {reason}")]
pub struct PayloadEncodeError {
    /// The Rust type that was being encoded.
    pub type_name: &'static str,
    /// The serializer's complaint.
    pub reason: String,
}

/// A payload did not decode into the type the receiver expected.
///
/// `Clone` and serializable, so it can cross a portal back to the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "expected a `{expected}`{} but got {arrived}: {reason}",
    kind.map(|k| format!(" in a {k} message")).unwrap_or_default()
)]
pub struct MsgTypeError {
    /// The Rust type the receiver asked for.
    pub expected: String,
    /// The kind of message the payload came in, when known.
    pub kind: Option<MsgKind>,
    /// A short rendering of what arrived (at most [`MAX_RENDERING_CHARS`] characters).
    pub arrived: String,
    /// The deserializer's complaint.
    pub reason: String,
}

/// Renders payload bytes for humans: the MessagePack value when they are one, a hex
/// prefix otherwise. Bounded in length and depth whatever the input.
pub fn render(bytes: &[u8]) -> String {
    let mut out = Renderer { out: String::new(), depth: 0 };
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de.set_max_depth(32);
    match out.render_value(&mut de) {
        Ok(()) if de.position() as usize == bytes.len() => {}
        Ok(()) => out.push_str(" …(trailing bytes)"),
        Err(_) if out.out.is_empty() => return hex_prefix(bytes),
        Err(_) => out.push_str(" …(invalid)"),
    }
    out.finish()
}

fn hex_prefix(bytes: &[u8]) -> String {
    let mut s = format!("{} bytes, not MessagePack: 0x", bytes.len());
    for b in bytes.iter().take(24) {
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > 24 {
        s.push('…');
    }
    s
}

/// A serde visitor that renders any MessagePack value into a bounded string. Past the
/// budget it keeps consuming (with `IgnoredAny`, which allocates nothing) so that the
/// deserializer stays in sync, but writes nothing more.
struct Renderer {
    out: String,
    depth: usize,
}

impl Renderer {
    fn full(&self) -> bool {
        self.out.chars().count() >= MAX_RENDERING_CHARS
    }

    fn push_str(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn finish(mut self) -> String {
        if self.out.chars().count() > MAX_RENDERING_CHARS {
            self.out = self.out.chars().take(MAX_RENDERING_CHARS - 1).collect();
            self.out.push('…');
        }
        self.out
    }

    fn render_value<'de, D: de::Deserializer<'de>>(&mut self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(Visit(self))
    }

    /// Renders a sequence or map: `item` renders one element (or entry) and says whether
    /// there was one.
    fn collection<E>(
        &mut self,
        open: char,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.out.push(open);
        self.depth += 1;
        let mut first = true;
        loop {
            if !first && !self.full() {
                self.push_str(", ");
            }
            first = false;
            if !item(self)? {
                break;
            }
        }
        self.depth -= 1;
        if self.out.ends_with(", ") {
            self.out.truncate(self.out.len() - 2);
        }
        self.out.push(close);
        Ok(())
    }
}

struct Visit<'r>(&'r mut Renderer);

/// Renders one value through `&mut Renderer` as a `DeserializeSeed`.
struct Seed<'r>(&'r mut Renderer);

impl<'de> de::DeserializeSeed<'de> for Seed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        if self.0.full() || self.0.depth >= 8 {
            if !self.0.full() {
                self.0.push_str("…");
            }
            IgnoredAny::deserialize(de).map(|_| ())
        } else {
            self.0.render_value(de)
        }
    }
}

impl Visit<'_> {
    fn text(self, s: impl fmt::Display) {
        if !self.0.full() {
            let _ = write!(self.0.out, "{s}");
        }
    }
}

impl<'de> de::Visitor<'de> for Visit<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.text(v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.text(v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.text(v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.text(v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        let shown: String = v.chars().take(MAX_RENDERING_CHARS).collect();
        self.text(format_args!("{shown:?}"));
        Ok(())
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<(), E> {
        self.text(format_args!("<{} bytes>", v.len()));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.text("nil");
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.text("nil");
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.0.render_value(de)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.0.render_value(de)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.collection('[', ']', |r| Ok(seq.next_element_seed(Seed(r))?.is_some()))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.collection('{', '}', |r| {
            if map.next_key_seed(Seed(r))?.is_none() {
                return Ok(false);
            }
            if !r.full() {
                r.push_str(": ");
            }
            map.next_value_seed(Seed(r))?;
            Ok(true)
        })
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess;
        let r = self.0;
        let ((), variant) = data.variant_seed(Seed(r))?;
        variant.newtype_variant_seed(Seed(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn values_round_trip() {
        let p = Payload::encode(&Point { x: 1, y: -2 }).unwrap();
        assert_eq!(p.decode::<Point>().unwrap(), Point { x: 1, y: -2 });
    }

    /// Encodings of every size through the per-thread scratch buffer: each payload is its
    /// own bytes (no later encoding changes an earlier one), small ones at their exact
    /// size, and a value whose `Serialize` encodes a payload itself still encodes.
    #[test]
    fn encodings_share_no_bytes_and_nested_encoding_works() {
        let small = Payload::encode(&7u64).unwrap();
        let large_value = "y".repeat(3 * SCRATCH_BYTES);
        let large = Payload::encode(&large_value).unwrap();
        let again = Payload::encode(&(1u8, "two")).unwrap();
        assert_eq!(small.decode::<u64>().unwrap(), 7);
        assert_eq!(large.decode::<String>().unwrap(), large_value);
        assert_eq!(again.decode::<(u8, String)>().unwrap(), (1, "two".to_owned()));
        assert_eq!(small.as_bytes(), &rmp_serde::to_vec_named(&7u64).unwrap()[..]);

        struct Nested;
        impl Serialize for Nested {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let inner =
                    Payload::encode(&Point { x: 3, y: 4 }).map_err(serde::ser::Error::custom)?;
                s.serialize_bytes(inner.as_bytes())
            }
        }
        let outer = Payload::encode(&Nested).unwrap();
        let inner: serde_bytes_like::Bin = outer.decode().unwrap();
        assert_eq!(Payload::from(inner.0).decode::<Point>().unwrap(), Point { x: 3, y: 4 });
    }

    mod serde_bytes_like {
        /// A MessagePack `bin`, read back as bytes.
        pub(super) struct Bin(pub(super) Vec<u8>);
        impl<'de> serde::Deserialize<'de> for Bin {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Bin;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Bin, E> {
                        Ok(Bin(v.to_vec()))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    }

    #[test]
    fn mismatch_names_expected_type_kind_and_what_arrived() {
        let p = Payload::encode(&("hello", 3u8)).unwrap();
        let err = MsgPack.decode::<Point>(&p, Some(MsgKind::Yield)).unwrap_err();
        assert!(err.expected.ends_with("Point"), "{err}");
        assert_eq!(err.kind, Some(MsgKind::Yield));
        assert_eq!(err.arrived, r#"["hello", 3]"#);
        let text = err.to_string();
        assert!(text.contains("in a yield message"), "{text}");
    }

    #[test]
    fn trailing_bytes_are_a_type_error() {
        let mut bytes = rmp_serde::to_vec(&7u32).unwrap();
        bytes.extend_from_slice(&rmp_serde::to_vec(&8u32).unwrap());
        let err = Payload::from(bytes.clone()).decode::<u32>().unwrap_err();
        assert_eq!(err.reason, "1 trailing bytes after the value", "{err}");
        // Trailing bytes that are no value at all (a truncated one) are trailing bytes too.
        bytes.extend_from_slice(&[0xc6, 0, 0, 1, 0]); // a 256-byte bin with no data
        let err = Payload::from(bytes).decode::<u32>().unwrap_err();
        assert!(err.reason.ends_with("trailing bytes after the value"), "{err}");
    }

    /// Strings (and binaries) are read in place and copied once into the value: a large
    /// one comes back whole, and a length beyond the payload is an error, not an
    /// allocation.
    #[test]
    fn large_strings_decode_and_lying_lengths_do_not_allocate() {
        let big = "x".repeat(3 << 20);
        assert_eq!(Payload::encode(&big).unwrap().decode::<String>().unwrap(), big);
        let lying = Payload::from(vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a', b'b']);
        assert!(lying.decode::<String>().is_err());
    }

    #[test]
    fn rendering_is_bounded() {
        let big: BTreeMap<String, Vec<u32>> =
            (0..1000).map(|i| (format!("key{i}"), vec![i; 10])).collect();
        let r = render(&rmp_serde::to_vec(&big).unwrap());
        assert!(r.chars().count() <= MAX_RENDERING_CHARS, "{r}");
        assert!(r.starts_with("{\"key0\": [0, 0"), "{r}");
    }

    #[test]
    fn rendering_of_garbage_and_hostile_lengths() {
        assert!(render(&[0xc1, 1, 2]).contains("not MessagePack"));
        // An array header claiming 4 billion elements, followed by nothing.
        let r = render(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.starts_with('['), "{r}");
        // Deep nesting: 10k nested one-element arrays.
        let r = render(&vec![0x91; 10_000]);
        assert!(r.chars().count() <= MAX_RENDERING_CHARS, "{r}");
        let deep = Payload::from(vec![0x91; 10_000]);
        assert!(deep.decode::<Vec<Vec<u8>>>().is_err());
    }
}
