//! `Error.kind` on the wire: every kind round-trips (nested too), a kind from a newer peer
//! reads as `Unknown` with the rest of the message intact, and a message from a peer that
//! predates the field reads as `User`.

use crate::support::aid;
use bytes::BytesMut;
use capnp::dynamic_value;
use capnp::introspect::{Introspect, TypeVariant};
use plough_ipc_wire::generated::plough_capnp as schema;
use plough_ipc_wire::msg::{ErrorKind, ErrorMsg, ErrorValue, Msg, TypeErrorInfo};
use plough_ipc_wire::{Frame, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

/// An error with every field set, of kind `kind`.
fn full_error(kind: ErrorKind, nested: Vec<ErrorMsg>) -> ErrorMsg {
    ErrorMsg {
        cid: Some(42),
        source: aid("source"),
        kind,
        type_name: kind.type_name().to_owned(),
        message: format!("a {kind:?} failure"),
        backtrace: "at somewhere\nat elsewhere".into(),
        relay_path: vec![aid("hop-1"), aid("hop-2")],
        canceller: Some(aid("canceller")),
        overrun_sender: Some(aid("sender")),
        type_error: Some(TypeErrorInfo {
            expected_type: "u32".into(),
            msg_kind: "yield".into(),
            rendering: "\"x\"".into(),
        }),
        nested,
        value: Some(Box::new(ErrorValue {
            type_path: "app::MyError".into(),
            payload: vec![0x92, 0x07, 0xa1, b'x'].into(),
        })),
    }
}

fn one_frame(mut buf: BytesMut) -> Frame {
    let frame = FrameCodec::default().decode(&mut buf).expect("frames").expect("a whole frame");
    assert!(buf.is_empty(), "exactly one frame");
    frame
}

fn round_trip(msg: &Msg) -> Msg {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(msg, &mut buf).expect("encodes");
    one_frame(buf).decode().expect("decodes")
}

/// Frames a message whose `Error.kind` fields hold raw values: `raw[0]` for the top-level
/// error, `raw[1 + i]` for its nested error `i`. The generated `set_kind` only takes known
/// kinds, so the raw `u16` goes through capnp's dynamic (schema-driven) API, which writes
/// any value into the enum's slot — the bytes a newer peer with more kinds would send.
fn frame_with_raw_kinds(msg: &ErrorMsg, raw: &[u16]) -> Frame {
    let enum_schema = match schema::ErrorKind::introspect().which() {
        TypeVariant::Enum(raw_schema) => capnp::schema::EnumSchema::new(raw_schema),
        _ => unreachable!("ErrorKind is an enum"),
    };
    let set_raw = |b: schema::error::Builder<'_>, value: u16| {
        let mut s: capnp::dynamic_struct::Builder<'_> = dynamic_value::Builder::from(b).downcast();
        s.set_named("kind", dynamic_value::Enum::new(value, enum_schema).into()).expect("set kind");
    };
    let mut message = capnp::message::Builder::new_default();
    let mut root = message.init_root::<schema::msg::Builder<'_>>();
    Msg::Error(Box::new(msg.clone())).write(root.reborrow());
    let Ok(schema::msg::Which::Error(Ok(mut eb))) = root.which() else {
        unreachable!("an error was written")
    };
    set_raw(eb.reborrow(), raw[0]);
    let mut nested = eb.get_nested().expect("nested list");
    for (i, value) in raw[1..].iter().enumerate() {
        set_raw(nested.reborrow().get(i as u32), *value);
    }
    one_frame(BytesMut::from(&capnp::serialize::write_message_to_words(&message)[..]))
}

fn raw_kind(frame: &Frame) -> Result<schema::ErrorKind, capnp::NotInSchema> {
    match frame.root().expect("root").which() {
        Ok(schema::msg::Which::Error(Ok(e))) => e.get_kind(),
        _ => panic!("not an error message"),
    }
}

#[test]
fn every_kind_round_trips_flat_and_nested() {
    for kind in ErrorKind::ALL {
        let flat = Msg::Error(Box::new(full_error(kind, Vec::new())));
        assert_eq!(round_trip(&flat), flat, "{kind:?}");
    }
    // A multi-error whose members are every kind, one of them itself a multi-error of every
    // kind: each nested error keeps its own kind.
    let members = |depth: usize| -> Vec<ErrorMsg> {
        ErrorKind::ALL
            .into_iter()
            .map(|k| ErrorMsg { cid: None, nested: Vec::new(), ..full_error(k, Vec::new()) })
            .chain((depth > 0).then(|| ErrorMsg { kind: ErrorKind::Multi, ..Default::default() }))
            .collect()
    };
    let mut inner = members(0);
    inner.reverse();
    let mut outer = members(1);
    outer.last_mut().expect("the nested multi").nested = inner;
    let multi = Msg::Error(Box::new(full_error(ErrorKind::Multi, outer)));
    let back = round_trip(&multi);
    assert_eq!(back, multi);
    let Msg::Error(e) = back else { unreachable!() };
    let kinds: Vec<ErrorKind> = e.nested.iter().map(|n| n.kind).collect();
    assert_eq!(kinds[..ErrorKind::ALL.len()], ErrorKind::ALL);
    assert_eq!(e.nested[ErrorKind::ALL.len()].nested.last().map(|n| n.kind), Some(ErrorKind::User));
}

#[test]
fn the_raw_kind_slot_is_the_one_set_kind_writes() {
    // Guards the next test: writing raw known values through the dynamic API must give the
    // same kinds as the typed path, or "decodes as Unknown" would prove nothing.
    let e = full_error(ErrorKind::User, vec![full_error(ErrorKind::User, Vec::new())]);
    for kind in ErrorKind::ALL {
        let raw = u16::from(schema::ErrorKind::from(kind));
        let frame = frame_with_raw_kinds(&e, &[raw, raw]);
        let Msg::Error(back) = frame.decode().expect("decodes") else { unreachable!() };
        assert_eq!((back.kind, back.nested[0].kind), (kind, kind));
    }
}

#[test]
fn an_unknown_kind_decodes_as_unknown_with_the_rest_intact() {
    let nested =
        vec![full_error(ErrorKind::Panic, Vec::new()), full_error(ErrorKind::Spawn, vec![])];
    let sent = full_error(ErrorKind::Cancelled, nested);
    for raw in [ErrorKind::ALL.len() as u16, ErrorKind::ALL.len() as u16 + 1, 0x00ff, u16::MAX] {
        // A newer peer's kind on the error itself and on its first nested error.
        let frame = frame_with_raw_kinds(&sent, &[raw, raw, 12]);
        assert_eq!(raw_kind(&frame).map_err(|e| e.0), Err(raw), "the raw value is on the wire");
        let Msg::Error(got) = frame.decode().expect("an unknown kind never fails the message")
        else {
            panic!("not an error")
        };
        let mut expected = sent.clone();
        expected.kind = ErrorKind::Unknown;
        expected.nested[0].kind = ErrorKind::Unknown;
        assert_eq!(got, Box::new(expected), "raw kind {raw}");
        let view = frame.view().expect("the view reads too");
        assert_eq!(view.cid, Some(42));
    }
}

#[test]
fn an_unknown_kind_is_not_a_connection_or_stream_problem() {
    // Back to back with ordinary frames on one stream: every frame still decodes in order.
    let e = full_error(ErrorKind::Lagged, Vec::new());
    let odd = frame_with_raw_kinds(&e, &[999]);
    let mut stream = BytesMut::new();
    let mut codec = FrameCodec::default();
    codec.encode(&Msg::Stop { cid: 1 }, &mut stream).unwrap();
    stream.extend_from_slice(odd.bytes());
    codec.encode(&Msg::Error(Box::new(e.clone())), &mut stream).unwrap();
    let mut got = Vec::new();
    while let Some(frame) = codec.decode(&mut stream).unwrap() {
        got.push(frame.decode().unwrap());
    }
    let unknown = ErrorMsg { kind: ErrorKind::Unknown, ..e.clone() };
    assert_eq!(
        got,
        vec![Msg::Stop { cid: 1 }, Msg::Error(Box::new(unknown)), Msg::Error(Box::new(e))]
    );
}

#[test]
fn an_error_without_the_field_reads_as_user() {
    // What an older peer's writer does: fill every other field, never touch `kind`.
    let mut message = capnp::message::Builder::new_default();
    {
        let mut eb = message.init_root::<schema::msg::Builder<'_>>().init_error();
        eb.reborrow().get_cid().set_id(5);
        let mut src = eb.reborrow().init_source();
        src.set_name("old");
        src.set_uuid(&[9; 16]);
        src.set_pid(77);
        eb.set_type_name("ValueError");
        eb.set_message("boom");
        let mut n = eb.init_nested(1).get(0);
        n.reborrow().get_cid().set_none(());
        n.init_source().set_uuid(&[1; 16]);
    }
    let frame = one_frame(BytesMut::from(&capnp::serialize::write_message_to_words(&message)[..]));
    let Msg::Error(e) = frame.decode().expect("decodes") else { panic!("not an error") };
    assert_eq!((e.kind, e.nested[0].kind), (ErrorKind::User, ErrorKind::User));
    assert_eq!((e.cid, e.source.name.as_str(), e.source.pid), (Some(5), "old", 77));
    assert_eq!((e.type_name.as_str(), e.message.as_str()), ("ValueError", "boom"));

    // And a real one: an `Error` frame encoded by the build before `kind` existed (the
    // fuzz seed `seed-9` of commit 72559e9, without its leading chunk-size byte).
    let old = one_frame(BytesMut::from(&include_bytes!("fixtures/error-before-kind.bin")[..]));
    let Msg::Error(e) = old.decode().expect("an old peer's error decodes") else {
        panic!("not an error")
    };
    assert_eq!(e.kind, ErrorKind::User);
    assert_eq!((e.cid, e.source.name.as_str(), e.source.pid), (Some(1), "actor", 7));
    assert_eq!(e.relay_path.len(), 1);
    assert!(e.canceller.is_some() && e.overrun_sender.is_some() && e.type_error.is_some());
    assert_eq!(Msg::Error(e.clone()), round_trip(&Msg::Error(e)));
}

proptest::proptest! {
    #[test]
    fn any_raw_kind_decodes_to_its_kind_or_unknown(raw in proptest::prelude::any::<u16>()) {
        let sent = full_error(ErrorKind::User, Vec::new());
        let Ok(Msg::Error(got)) = frame_with_raw_kinds(&sent, &[raw]).decode() else {
            panic!("raw kind {raw} did not decode to an error")
        };
        let expected = ErrorKind::ALL.get(usize::from(raw)).copied().unwrap_or(ErrorKind::Unknown);
        proptest::prop_assert_eq!(*got, ErrorMsg { kind: expected, ..sent });
    }
}
