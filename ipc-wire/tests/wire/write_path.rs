//! The write path: small frames coalesce into one write, a large payload is copied once.

use crate::alloc_counter::{largest, reset_largest};
use crate::support::{run, yield_msg};
use bytes::BytesMut;
use futures::SinkExt;
use plough_ipc_wire::FrameCodec;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::codec::{Encoder, FramedWrite};

/// An `AsyncWrite` that counts the write calls it sees (each would be one syscall).
#[derive(Default)]
struct CountingWriter {
    writes: usize,
    bytes: usize,
}

impl AsyncWrite for CountingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes += 1;
        self.bytes += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn many_small_frames_fed_then_flushed_leave_in_one_write() {
    run(async {
        let mut sink = FramedWrite::new(CountingWriter::default(), FrameCodec::default());
        sink.set_backpressure_boundary(1 << 20);
        let msg = yield_msg(1, &[7; 64]);
        for _ in 0..1000 {
            sink.feed(&msg).await.unwrap();
        }
        SinkExt::<&plough_ipc_wire::Msg>::flush(&mut sink).await.unwrap();
        let w = sink.get_ref();
        assert_eq!(w.writes, 1, "1000 frames, {} bytes", w.bytes);
        assert!(w.bytes > 1000 * 64);
    });
}

#[test]
fn a_large_payload_is_encoded_without_an_intermediate_copy() {
    let msg = yield_msg(1, &vec![9; 4 << 20]);
    let mut codec = FrameCodec::default();
    let mut dst = BytesMut::with_capacity(8 << 20);
    reset_largest();
    codec.encode(&msg, &mut dst).unwrap();
    let largest = largest();
    // The message is built in `dst` itself: no buffer of the payload's size is allocated.
    assert!(largest < 64 << 10, "largest allocation while encoding 4 MiB: {largest} bytes");
    assert!(dst.len() > 4 << 20);
}
