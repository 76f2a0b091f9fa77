//! Hostile frames: gigabyte claims, unknown variants, limits, truncation — over real sockets.

use crate::alloc_counter::{largest, reset_largest};
use crate::support::{aid, framed_pair, run, yield_msg};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use plough_ipc_wire::{ErrorMsg, FrameCodec, FrameError, Limits, Msg, MsgError};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::{Encoder, FramedRead};

/// A segment table of one segment claiming `words` words, and nothing else.
fn claim(words: u32) -> Vec<u8> {
    let mut v = 0u32.to_le_bytes().to_vec();
    v.extend_from_slice(&words.to_le_bytes());
    v
}

#[test]
fn a_frame_claiming_gigabytes_is_refused_without_allocating_it() {
    run(async {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        // 2^32 - 1 words: 32 GiB claimed, then a few real bytes.
        tx.write_all(&claim(u32::MAX)).await.unwrap();
        tx.write_all(&[0u8; 64]).await.unwrap();
        let mut framed = FramedRead::new(rx, FrameCodec::default());
        // The runtime is current-thread: the decoder runs on this thread, where the
        // allocation counter looks.
        reset_largest();
        let result = framed.next().await;
        let largest = largest();
        match result {
            Some(Err(FrameError::TooLarge { claimed, limit })) => {
                assert_eq!(claimed, 8 + u64::from(u32::MAX) * 8);
                assert_eq!(limit, Limits::DEFAULT.max_frame_bytes);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(largest < 64 << 10, "largest allocation while refusing: {largest} bytes");
        assert!(framed.next().await.is_none(), "the connection is done after a framing error");
    });
}

#[test]
fn a_claim_just_over_the_limit_is_refused_and_one_under_is_read() {
    let limits = Limits::DEFAULT.with_max_frame_bytes(1 << 20);
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::from(&claim((1 << 17) - 1 + 1)[..]); // 8 + 2^20 bytes
    assert!(matches!(
        tokio_util::codec::Decoder::decode(&mut codec, &mut buf),
        Err(FrameError::TooLarge { .. })
    ));
    let mut ok = BytesMut::new();
    codec.encode(&yield_msg(1, &vec![1; (1 << 20) - 64]), &mut ok).unwrap();
    assert!(ok.len() <= 1 << 20);
    let frame = tokio_util::codec::Decoder::decode(&mut codec, &mut ok).unwrap().unwrap();
    assert_eq!(frame.decode().unwrap(), yield_msg(1, &vec![1; (1 << 20) - 64]));
}

/// A `Stop` frame whose union discriminant is patched to a member no build knows.
fn unknown_variant_frame() -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(&Msg::Stop { cid: 9 }, &mut buf).unwrap();
    // Segment table (8) + root pointer (8); the discriminant is the first u16 of the data.
    buf[16..18].copy_from_slice(&42u16.to_le_bytes());
    buf.to_vec()
}

#[test]
fn an_unknown_variant_fails_that_message_and_the_next_one_arrives() {
    run(async {
        let (mut a, mut b) = framed_pair(Limits::DEFAULT);
        a.send(yield_msg(1, b"before")).await.unwrap();
        a.get_mut().write_all(&unknown_variant_frame()).await.unwrap();
        a.send(yield_msg(2, b"after")).await.unwrap();

        let first = b.next().await.unwrap().unwrap();
        assert_eq!(first.decode().unwrap(), yield_msg(1, b"before"));
        let unknown = b.next().await.unwrap().expect("the frame itself is fine");
        assert_eq!(unknown.decode(), Err(MsgError::UnknownVariant { discriminant: 42 }));
        assert_eq!(unknown.view().unwrap_err(), MsgError::UnknownVariant { discriminant: 42 });
        let next = b.next().await.unwrap().unwrap();
        assert_eq!(next.decode().unwrap(), yield_msg(2, b"after"));
    });
}

#[test]
fn nesting_and_traversal_limits_fail_one_message() {
    let error = Msg::Error(Box::new(ErrorMsg {
        relay_path: vec![aid("a"), aid("b")],
        ..Default::default()
    }));
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(&error, &mut buf).unwrap();
    FrameCodec::default().encode(&yield_msg(1, &[7; 4096]), &mut buf).unwrap();
    let mut shallow =
        FrameCodec::new(Limits::DEFAULT.with_nesting_limit(2).with_traversal_factor(0));
    let decode = |c: &mut FrameCodec, b: &mut BytesMut| {
        tokio_util::codec::Decoder::decode(c, b).unwrap().unwrap()
    };
    let too_deep = decode(&mut shallow, &mut buf);
    assert!(
        matches!(too_deep.decode(), Err(MsgError::LimitExceeded { .. })),
        "{:?}",
        too_deep.decode()
    );
    let too_much = decode(&mut shallow, &mut buf);
    assert!(
        matches!(too_much.decode(), Err(MsgError::LimitExceeded { .. })),
        "{:?}",
        too_much.decode()
    );
}

#[test]
fn a_peer_hanging_up_mid_frame_is_a_truncated_error() {
    run(async {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(&yield_msg(3, &[1; 100]), &mut buf).unwrap();
        tx.write_all(&buf[..buf.len() - 10]).await.unwrap();
        drop(tx);
        let mut framed = FramedRead::new(rx, FrameCodec::default());
        match framed.next().await {
            Some(Err(FrameError::Truncated { have, need })) => {
                assert_eq!(have, buf.len() - 10);
                assert_eq!(need, Some(buf.len() as u64));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    });
}

#[test]
fn a_read_cancelled_mid_frame_loses_nothing() {
    run(async {
        let (mut a, mut b) = framed_pair(Limits::DEFAULT);
        let mut bytes = BytesMut::new();
        FrameCodec::default().encode(&yield_msg(5, &[9; 50_000]), &mut bytes).unwrap();
        let (head, tail) = bytes.split_at(20_000);
        a.get_mut().write_all(head).await.unwrap();
        // Start reading the frame and drop the read future each time it pends, as a
        // `select!` losing the race would, until the first half sits in the read buffer.
        while b.read_buffer().len() < head.len() {
            assert!(futures::poll!(b.next()).is_pending(), "the frame cannot be complete yet");
            tokio::task::yield_now().await;
        }
        a.get_mut().write_all(tail).await.unwrap();
        let frame = b.next().await.unwrap().unwrap();
        assert_eq!(frame.decode().unwrap(), yield_msg(5, &[9; 50_000]));
    });
}

#[test]
fn a_list_of_zero_sized_structs_cannot_make_the_reader_reserve_gigabytes() {
    // An error with an empty relay path and an 8 MiB backtrace: a big frame, hence a big
    // traversal budget (4 × its words) for a hostile list to claim elements against.
    let error =
        Msg::Error(Box::new(ErrorMsg { backtrace: "x".repeat(8 << 20), ..Default::default() }));
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(&error, &mut buf).unwrap();
    // The empty relay path is an inline-composite list whose tag word says: 0 elements of
    // Aid's size (1 data word, 2 pointers). Make it 4 million zero-sized elements — which
    // occupy no bytes at all, so the frame stays the same size.
    let tag: [u8; 8] = [0, 0, 0, 0, 1, 0, 2, 0];
    let at: Vec<usize> =
        (0..buf.len() / 8).map(|w| w * 8).filter(|&i| buf[i..i + 8] == tag).collect();
    assert_eq!(at.len(), 1, "exactly one empty Aid list in the frame");
    let count: u32 = 4 << 20;
    buf[at[0]..at[0] + 4].copy_from_slice(&(count << 2).to_le_bytes());
    buf[at[0] + 4..at[0] + 8].copy_from_slice(&[0; 4]);

    let frame =
        tokio_util::codec::Decoder::decode(&mut FrameCodec::default(), &mut buf).unwrap().unwrap();
    reset_largest();
    let result = frame.decode();
    let largest = largest();
    // Refused by the decode budget before anything is reserved for the claimed elements
    // (4 Mi × an `Aid` is far more than 4 × the frame's 8 MiB).
    assert!(matches!(result, Err(MsgError::LimitExceeded { .. })), "{result:?}");
    assert!(largest < 1 << 20, "largest allocation while decoding: {largest} bytes");
}
