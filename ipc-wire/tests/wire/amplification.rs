//! Decode amplification: a frame whose pointers alias one another can make a reader see
//! far more than the frame holds. The traversal limit bounds the *work* of that; the
//! decode budget ([`Limits::decode_factor`]) bounds the *memory*: decoding a frame never
//! allocates more than a small constant times its size, however its pointers alias.

use crate::alloc_counter::{peak, reset_peak};
use bytes::BytesMut;
use plough_ipc_wire::{Aid, ErrorMsg, Frame, FrameCodec, Limits, Msg, MsgError, Uuid};
use tokio_util::codec::{Decoder, Encoder};

const MARK: u64 = 0x6d61_726b_0000_0000;

fn small_aid() -> Aid {
    Aid { name: String::new(), uuid: Uuid([1; 16]), pid: 1 }
}

fn encode(msg: &Msg) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(msg, &mut buf).unwrap();
    buf
}

fn word(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at * 8..at * 8 + 8].try_into().unwrap())
}

/// The word index of the word holding `value`.
fn find(buf: &[u8], value: u64) -> usize {
    (0..buf.len() / 8).find(|&w| word(buf, w) == value).expect("the marker word")
}

/// An `Error` whose `nested` holds `m` errors, the first with `k` nested leaves of its own;
/// then every other of the `m` has its `nested` pointer rewritten to alias the first's
/// list. The frame holds `m + k` small errors; a reader sees `m × k`.
fn amplifying_frame(m: usize, k: usize) -> BytesMut {
    let leaf = || ErrorMsg { source: small_aid(), ..Default::default() };
    let mut nested: Vec<ErrorMsg> =
        (0..m).map(|j| ErrorMsg { cid: Some(MARK + j as u64), ..leaf() }).collect();
    nested[0].nested = (0..k).map(|_| leaf()).collect();
    let mut buf = encode(&Msg::Error(Box::new(ErrorMsg {
        source: small_aid(),
        nested,
        ..Default::default()
    })));
    // An `Error` struct is 2 data words (the cid's discriminant, then its id) and 9
    // pointers, `nested` the last: its pointer is 9 words after the cid's id.
    let first = find(&buf, MARK) + 9;
    let pointer = word(&buf, first);
    assert_eq!(pointer & 3, 1, "a list pointer");
    let target = first as i64 + 1 + i64::from((pointer as u32 as i32) >> 2);
    for j in 1..m {
        let at = find(&buf, MARK + j as u64) + 9;
        assert_eq!(word(&buf, at), 0, "an empty list is a null pointer");
        let offset = (target - at as i64 - 1) as i32;
        let aliased = (pointer & !0xffff_ffff) | u64::from(((offset << 2) as u32) | 1);
        buf[at * 8..at * 8 + 8].copy_from_slice(&aliased.to_le_bytes());
    }
    buf
}

fn frame(buf: &mut BytesMut) -> Frame {
    FrameCodec::default().decode(buf).unwrap().unwrap()
}

/// Decodes `frame` on this thread and returns the result and the peak of bytes live
/// meanwhile.
fn decode_measured(frame: &Frame) -> (Result<Msg, MsgError>, usize) {
    reset_peak();
    let out = frame.decode();
    (out, peak())
}

#[test]
fn an_aliasing_frame_cannot_make_decoding_allocate_more_than_a_few_times_its_size() {
    // 4 + 4000 small errors on the wire (about 0.5 MB); 4 × 4000 for a reader.
    let mut buf = amplifying_frame(4, 4000);
    let len = buf.len();
    let frame = frame(&mut buf);
    let (out, peak) = decode_measured(&frame);
    let factor = Limits::DEFAULT.decode_factor as usize;
    eprintln!(
        "amplification frame: {len} bytes, peak {peak} bytes live while decoding ({:.1}x), {}",
        peak as f64 / len as f64,
        match &out {
            Ok(_) => "decoded".to_owned(),
            Err(e) => format!("refused: {e}"),
        }
    );
    assert!(
        matches!(&out, Err(MsgError::LimitExceeded { .. })),
        "a reader sees 16,000 errors in 4,004: refused, not {}",
        if out.is_ok() { "decoded" } else { "another error" }
    );
    assert!(
        peak <= factor * len + Limits::DECODE_SLACK_BYTES,
        "{peak} bytes for a {len}-byte frame"
    );
}

#[test]
fn legitimate_messages_of_the_most_expensive_shapes_decode_within_the_budget() {
    // The shapes whose owned form is largest for their size on the wire: many small
    // nested errors, a long relay path of nameless actors, many one-byte texts.
    let nested = (0..5000).map(|_| ErrorMsg { source: small_aid(), ..Default::default() });
    let shapes = [
        Msg::Error(Box::new(ErrorMsg {
            source: small_aid(),
            nested: nested.collect(),
            ..Default::default()
        })),
        Msg::Error(Box::new(ErrorMsg {
            source: small_aid(),
            relay_path: vec![small_aid(); 5000],
            ..Default::default()
        })),
        Msg::SpawnSpec(Box::new(plough_ipc_wire::SpawnSpec {
            enable_handlers: vec!["f".to_owned(); 5000],
            runtime_vars: plough_ipc_wire::RuntimeVars {
                extra: vec![("k".to_owned(), "v".to_owned()); 5000],
                ..Default::default()
            },
            ..Default::default()
        })),
        Msg::Error(Box::new(ErrorMsg { source: small_aid(), ..Default::default() })),
        Msg::Stop { cid: 1 },
    ];
    let factor = Limits::DEFAULT.decode_factor as usize;
    for msg in shapes {
        let mut buf = encode(&msg);
        let len = buf.len();
        let frame = frame(&mut buf);
        let (out, peak) = decode_measured(&frame);
        assert_eq!(out.as_ref(), Ok(&msg), "a legitimate {} message decodes", msg.kind());
        assert!(peak <= factor * len + Limits::DECODE_SLACK_BYTES, "{peak} bytes for {len}");
    }
}
