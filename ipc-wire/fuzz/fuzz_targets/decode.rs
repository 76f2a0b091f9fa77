//! Fuzzes the read path end to end: framing (in chunks of input-chosen sizes, to exercise
//! partial frames), then every way of interpreting a frame. Oracles: nothing panics, and any
//! message that decodes re-encodes to a frame that decodes to the same message.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use plough_ipc_wire::{FrameCodec, Limits, Msg};
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let limits = Limits::DEFAULT.with_max_frame_bytes(1 << 20).with_max_segments(64);
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut chunks = input.chunks(chunk).peekable();
    while let Some(piece) = chunks.next() {
        buf.extend_from_slice(piece);
        loop {
            let last = chunks.peek().is_none();
            let step = if last { codec.decode_eof(&mut buf) } else { codec.decode(&mut buf) };
            match step {
                Ok(Some(frame)) => check(&frame),
                Ok(None) => break,
                Err(_) => return, // connection-fatal, typed: the stream ends here
            }
        }
    }
});

fn check(frame: &plough_ipc_wire::Frame) {
    let _ = frame.kind();
    if let Ok(view) = frame.view() {
        if let Some(p) = view.payload {
            let _ = frame.share_payload(p).decode::<Vec<(String, u64)>>();
        }
    }
    let Ok(msg) = frame.decode() else { return };
    let _ = msg.decode_payload::<std::collections::BTreeMap<String, Vec<u8>>>();
    let mut out = BytesMut::new();
    let mut codec = FrameCodec::default();
    codec.encode(&msg, &mut out).expect("a decoded message re-encodes");
    let again = codec.decode(&mut out).expect("re-encoded frame").expect("whole frame");
    let back: Msg = again.decode().expect("re-encoded message decodes");
    assert_eq!(back, msg);
}
