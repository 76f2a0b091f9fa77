//! Property tests of the wire: round trips, arbitrary input, arbitrary splits.

use bytes::BytesMut;
use plough_ipc_wire::{
    Address, Aid, CallKind, CancelAck, ErrorKind, ErrorMsg, ErrorValue, FrameCodec, Hello, Limits,
    Msg, Payload, RuntimeVars, SpawnSpec, Start, StartAck, TraceContext, TypeErrorInfo, Uuid,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::{IpAddr, SocketAddr};
use tokio_util::codec::{Decoder, Encoder};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9_.@-]{0,24}"].prop_map(|s| s.chars().take(40).collect())
}

fn bytes(max: usize) -> impl Strategy<Value = Payload> {
    vec(any::<u8>(), 0..max).prop_map(Payload::from)
}

fn aid() -> impl Strategy<Value = Aid> {
    (text(), any::<[u8; 16]>(), any::<u32>()).prop_map(|(name, uuid, pid)| Aid {
        name,
        uuid: Uuid(uuid),
        pid,
    })
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        (
            prop_oneof![
                any::<std::net::Ipv4Addr>().prop_map(IpAddr::V4),
                any::<std::net::Ipv6Addr>().prop_map(IpAddr::V6)
            ],
            any::<u16>()
        )
            .prop_map(|(ip, port)| Address::Tcp(SocketAddr::new(ip, port))),
        "(/[a-zA-Z0-9_.@ -]{1,12}){1,4}".prop_map(|p| Address::Uds(p.into())),
    ]
}

fn call_kind() -> impl Strategy<Value = CallKind> {
    prop_oneof![Just(CallKind::Function), Just(CallKind::Context), Just(CallKind::Stream)]
}

fn spawn_spec() -> impl Strategy<Value = SpawnSpec> {
    (
        (
            any::<bool>(),
            any::<bool>(),
            text(),
            text(),
            vec((text(), text()), 0..3),
            proptest::option::of(address()),
        ),
        vec(address(), 0..3),
        vec(address(), 0..3),
        (vec(text(), 0..4), any::<bool>()),
        proptest::option::of(aid()),
        proptest::option::of((
            any::<[u8; plough_ipc_wire::build_id::BUILD_ID_LEN]>(),
            any::<u64>(),
            any::<u64>(),
        )),
    )
        .prop_map(
            |(
                (is_root, debug_mode, spawn_method, log_level, extra, root_addr),
                registry_addrs,
                bind_addrs,
                (enable_handlers, expose_only),
                parent,
                build_id,
            )| {
                SpawnSpec {
                    runtime_vars: RuntimeVars {
                        is_root,
                        debug_mode,
                        spawn_method,
                        log_level,
                        extra,
                        root_addr,
                        build: build_id.map(|(id, dev, ino)| plough_ipc_wire::ExeBuild {
                            id: plough_ipc_wire::BuildId(id),
                            dev,
                            ino,
                        }),
                    },
                    registry_addrs,
                    bind_addrs,
                    enable_handlers,
                    parent,
                    expose_only,
                }
            },
        )
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    proptest::sample::select(ErrorKind::ALL.to_vec())
}

fn error_msg() -> impl Strategy<Value = ErrorMsg> {
    // A multi-error nests errors: up to two levels, a few members each.
    flat_error_msg().prop_recursive(2, 8, 3, |inner| {
        (flat_error_msg(), vec(inner, 0..3)).prop_map(|(mut e, nested)| {
            e.nested = nested;
            e
        })
    })
}

fn flat_error_msg() -> impl Strategy<Value = ErrorMsg> {
    (
        proptest::option::of(any::<u64>()),
        aid(),
        error_kind(),
        (text(), text(), text()),
        vec(aid(), 0..4),
        proptest::option::of(aid()),
        proptest::option::of(aid()),
        proptest::option::of((text(), text(), text())),
        proptest::option::of((text(), bytes(30))),
    )
        .prop_map(
            |(
                cid,
                source,
                kind,
                (type_name, message, backtrace),
                relay_path,
                canceller,
                overrun_sender,
                te,
                value,
            )| ErrorMsg {
                cid,
                source,
                kind,
                type_name,
                message,
                backtrace,
                relay_path,
                canceller,
                overrun_sender,
                type_error: te.map(|(expected_type, msg_kind, rendering)| TypeErrorInfo {
                    expected_type,
                    msg_kind,
                    rendering,
                }),
                nested: Vec::new(),
                value: value
                    .map(|(type_path, payload)| Box::new(ErrorValue { type_path, payload })),
            },
        )
}

/// A `Start`'s trace context: absent, or any ids and flags.
fn trace() -> impl Strategy<Value = Option<TraceContext>> {
    proptest::option::of(
        (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
            .prop_map(|(trace_id, span_id, flags)| TraceContext { trace_id, span_id, flags }),
    )
}

/// Every variant of `Msg`, with arbitrary field values.
pub fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (aid(), bytes(40), bytes(20), any::<bool>(), any::<bool>()).prop_map(
            |(aid, p, b, batches, reads_shm)| {
                Msg::Hello(Box::new(Hello {
                    aid,
                    nonce: p.into_bytes(),
                    build: b.into_bytes(),
                    batches,
                    reads_shm,
                }))
            }
        ),
        spawn_spec().prop_map(|s| Msg::SpawnSpec(Box::new(s))),
        (any::<u64>(), text(), bytes(200), aid(), call_kind(), trace()).prop_map(
            |(cid, function, args, caller, kind, trace)| Msg::Start(Box::new(Start {
                cid,
                function: function.into(),
                args,
                caller: caller.into(),
                kind,
                trace
            }))
        ),
        (any::<u64>(), call_kind()).prop_map(|(cid, kind)| Msg::StartAck(StartAck { cid, kind })),
        (any::<u64>(), bytes(200)).prop_map(|(cid, payload)| Msg::Started { cid, payload }),
        (any::<u64>(), bytes(200)).prop_map(|(cid, payload)| Msg::Yield { cid, payload }),
        (any::<u64>(), proptest::collection::vec(bytes(100), 0..8))
            .prop_map(|(cid, payloads)| Msg::Yields { cid, payloads }),
        any::<u64>().prop_map(|cid| Msg::Stop { cid }),
        (any::<u64>(), bytes(200)).prop_map(|(cid, payload)| Msg::Return { cid, payload }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(cid, acked)| Msg::CancelAck(CancelAck { cid, acked })),
        error_msg().prop_map(|e| Msg::Error(Box::new(e))),
    ]
}

fn encode_all(msgs: &[Msg]) -> BytesMut {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for m in msgs {
        codec.encode(m, &mut buf).expect("encode");
    }
    buf
}

/// Feeds `stream` to a fresh decoder in the given chunk sizes; returns the decoded messages.
fn decode_chunked(stream: &[u8], chunks: &[usize]) -> Vec<Msg> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = codec.decode(&mut buf).expect("valid stream") {
            out.push(frame.decode().expect("valid message"));
        }
    }
    assert!(codec.decode_eof(&mut buf).expect("clean end").is_none());
    out
}

/// Decodes anything: every outcome must be a value or a typed error.
fn decode_anything(input: &[u8], chunks: &[usize], limits: Limits) {
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len().max(1)).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let step =
            if rest.is_empty() { codec.decode_eof(&mut buf) } else { codec.decode(&mut buf) };
        match step {
            Ok(Some(frame)) => {
                let _ = frame.kind();
                if let Ok(view) = frame.view() {
                    if let Some(p) = view.payload {
                        let _ = frame.share_payload(p).decode::<Vec<String>>();
                    }
                }
                if let Ok(msg) = frame.decode() {
                    let _ = msg.decode_payload::<(u32, String)>();
                }
            }
            Ok(None) if rest.is_empty() => return,
            Ok(None) => {}
            Err(_) => return, // a typed, connection-fatal error: the stream ends here
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_variant_round_trips_with_arbitrary_fields(m in msg()) {
        let buf = encode_all(std::slice::from_ref(&m));
        let mut codec = FrameCodec::default();
        let mut b = buf.clone();
        let frame = codec.decode(&mut b).unwrap().expect("one whole frame");
        prop_assert!(b.is_empty());
        prop_assert_eq!(&frame.decode().unwrap(), &m);
        let view = frame.view().unwrap();
        prop_assert_eq!(view.kind, m.kind());
        prop_assert_eq!(view.cid, m.cid());
        prop_assert_eq!(view.payload, m.payload().map(|p| &p[..]));
    }

    #[test]
    fn a_valid_stream_split_anywhere_decodes_identically(
        msgs in vec(msg(), 1..6),
        chunks in vec(1usize..64, 1..8),
    ) {
        let stream = encode_all(&msgs);
        prop_assert_eq!(decode_chunked(&stream, &chunks), msgs);
    }

    #[test]
    fn concatenated_streams_decode_in_order(a in vec(msg(), 0..4), b in vec(msg(), 0..4), chunk in 1usize..200) {
        let mut stream = encode_all(&a);
        stream.extend_from_slice(&encode_all(&b));
        let expected: Vec<Msg> = a.into_iter().chain(b).collect();
        prop_assert_eq!(decode_chunked(&stream, &[chunk]), expected);
    }

    #[test]
    fn arbitrary_bytes_decode_to_values_or_typed_errors(
        input in vec(any::<u8>(), 0..512),
        chunks in vec(1usize..64, 1..4),
    ) {
        decode_anything(&input, &chunks, Limits::DEFAULT);
        decode_anything(&input, &chunks, Limits::HANDSHAKE.with_max_segments(64));
    }

    #[test]
    fn mutated_valid_frames_decode_to_values_or_typed_errors(
        msgs in vec(msg(), 1..4),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        chunk in 1usize..128,
    ) {
        let mut stream = encode_all(&msgs).to_vec();
        for (at, byte) in flips {
            let i = at.index(stream.len());
            stream[i] = byte;
        }
        decode_anything(&stream, &[chunk], Limits::DEFAULT);
    }
}

/// Every kind of address, TLS ones included (with and without a certificate name).
fn any_address() -> impl Strategy<Value = Address> {
    prop_oneof![
        address(),
        (
            address(),
            proptest::option::of(
                "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,5}[a-z0-9])?){0,2}"
            )
        )
            .prop_filter_map("tcp only", |(a, name)| match a {
                Address::Tcp(addr) => Some(Address::Tls { name: name.map(Into::into), addr }),
                _ => None,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn an_address_round_trips_through_its_url_and_its_multiaddr(a in any_address()) {
        let url = a.to_string();
        prop_assert_eq!(url.parse::<Address>().unwrap(), a.clone());
        let multi = a.to_multiaddr();
        prop_assert!(multi.starts_with('/'), "{}", multi);
        prop_assert_eq!(multi.parse::<Address>().unwrap(), a);
    }

    #[test]
    fn any_text_parses_to_an_address_or_a_typed_error(s in "(/|tcp://|uds://|tls://)?[ -~]{0,40}") {
        // Never a panic; when it parses, its own forms read back to it.
        if let Ok(a) = s.parse::<Address>() {
            prop_assert_eq!(a.to_multiaddr().parse::<Address>().unwrap(), a.clone());
            prop_assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }
}
