//! A frame sink that sends a large payload from the caller's own bytes.
//!
//! [`FrameWriter`] is a `Sink<Msg>` like `FramedWrite<_, FrameCodec>`: a message is encoded
//! into one write buffer when it is fed, and everything fed leaves together when the sink
//! is flushed (`feed` several, `flush` once: one write). The difference is the large
//! payload, of [`OUT_OF_LINE_BYTES`](crate::codec::OUT_OF_LINE_BYTES) or more: it is not
//! copied into the buffer. Its frame's first segment is (the message, with a far pointer
//! to the payload), then the payload's own `Bytes` follow it in the same vectored write
//! (`writev`), so a payload goes from the caller's memory to the kernel with no copy in
//! between. The frame is standard Cap'n Proto; the reader needs to know nothing of this.
//!
//! The sink holds at most one large payload unwritten: feeding one flushes whatever was
//! queued before it once the queue holds [`WRITE_BOUNDARY`] bytes or more, as
//! `FramedWrite`'s backpressure boundary does.

use crate::arena::Scratch;
use crate::codec::{Limits, encode_parts};
use crate::error::FrameError;
use crate::msg::{Aid, Msg};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;

/// `poll_ready` flushes first once this many bytes wait to be written (`FramedWrite`'s
/// default boundary).
pub const WRITE_BOUNDARY: usize = 8 << 10;

/// Slices one vectored write takes at most (well below every kernel's `IOV_MAX`).
const MAX_SLICES: usize = 64;

/// Zero bytes to pad a payload to a whole word.
static PAD: [u8; 8] = [0; 8];

/// See the module docs.
pub struct FrameWriter<W> {
    io: W,
    /// Bytes to write before `buf`: frozen heads of large frames, and their payloads.
    chunks: VecDeque<Bytes>,
    /// The bytes in `chunks`.
    chunked: usize,
    /// Where frames are encoded; written after `chunks`.
    buf: BytesMut,
    max_frame: usize,
    scratch: Scratch,
    /// This end of the connection ([`FrameWriter::sent_by`]).
    sender: Option<Aid>,
}

impl<W> std::fmt::Debug for FrameWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("pending", &(self.chunked + self.buf.len()))
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer of frames within `limits` to `io`.
    pub fn new(io: W, limits: &Limits) -> Self {
        Self::with_buffer(io, limits, BytesMut::new())
    }

    /// As [`FrameWriter::new`], writing the bytes of `buf` first (e.g. a `FramedParts`'s
    /// write buffer).
    pub fn with_buffer(io: W, limits: &Limits, buf: BytesMut) -> Self {
        Self {
            io,
            chunks: VecDeque::new(),
            chunked: 0,
            buf,
            max_frame: limits.max_frame(),
            scratch: Scratch::new(),
            sender: None,
        }
    }

    /// Tells the writer who this end of the connection is: a `Start` that names it as
    /// the caller goes without the caller (a few dozen bytes, and the work of writing and
    /// reading them, on every call), which a reader that knows its peer reads as the peer
    /// ([`Frame::decode_from`](crate::Frame::decode_from)). For a connection whose peer
    /// reads it that way only.
    #[must_use]
    pub fn sent_by(mut self, me: Aid) -> Self {
        self.sender = Some(me);
        self
    }

    /// Bytes fed and not written yet.
    pub fn pending(&self) -> usize {
        self.chunked + self.buf.len()
    }

    /// Writes until nothing is pending.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending() > 0 {
            let written = if self.chunks.is_empty() {
                ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                for c in self.chunks.iter().take(MAX_SLICES) {
                    slices[n] = IoSlice::new(c);
                    n += 1;
                }
                if n < MAX_SLICES && !self.buf.is_empty() {
                    slices[n] = IoSlice::new(&self.buf);
                    n += 1;
                }
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Drops `n` written bytes from the front.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.buf.advance(n);
                return;
            };
            let k = n.min(front.len());
            front.advance(k);
            self.chunked -= k;
            n -= k;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    fn push_chunk(&mut self, c: Bytes) {
        if !c.is_empty() {
            self.chunked += c.len();
            self.chunks.push_back(c);
        }
    }
}

impl<W: AsyncWrite + Unpin> futures::Sink<Msg> for FrameWriter<W> {
    type Error = FrameError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), FrameError>> {
        let this = self.get_mut();
        if this.pending() >= WRITE_BOUNDARY {
            ready!(this.poll_write_pending(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, msg: Msg) -> Result<(), FrameError> {
        let this = self.get_mut();
        if let Some(tail) = encode_parts(
            &msg,
            &mut this.buf,
            this.max_frame,
            &mut this.scratch,
            this.sender.as_ref(),
        )? {
            let head = this.buf.split().freeze();
            this.push_chunk(head);
            this.push_chunk(tail.payload);
            this.push_chunk(Bytes::from_static(&PAD[..tail.pad]));
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), FrameError>> {
        let this = self.get_mut();
        ready!(this.poll_write_pending(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), FrameError>> {
        let this = self.get_mut();
        ready!(this.poll_write_pending(cx))?;
        ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FrameCodec, OUT_OF_LINE_BYTES};
    use crate::msg::{Aid, CallKind, Start, Uuid};
    use crate::payload::Payload;
    use futures::{SinkExt, StreamExt};
    use std::sync::Arc;
    use tokio_util::codec::{Encoder, FramedRead};

    fn start(args: Payload) -> Msg {
        Msg::Start(Box::new(Start {
            cid: 3,
            function: "f".into(),
            args,
            kind: CallKind::Function,
            caller: Aid { name: "caller".into(), uuid: Uuid::new_v4(), pid: 0 }.into(),
            trace: None,
        }))
    }

    /// Feeds every message to a writer on `io` (one flush, at the close), from a task.
    fn write_all(io: tokio::io::DuplexStream, msgs: Vec<Msg>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut w = FrameWriter::new(io, &Limits::DEFAULT);
            for m in msgs {
                w.feed(m).await.unwrap();
            }
            w.close().await.unwrap();
        })
    }

    fn payload(n: usize, seed: u8) -> Payload {
        Payload::from(
            (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<_>>(),
        )
    }

    /// A writer told who its end is leaves that caller out of its starts, small or with an
    /// out-of-line payload: the frame is smaller, a reader that knows its peer reads the
    /// peer in its place, and one that does not refuses the start in words. A start naming
    /// anyone else keeps its caller.
    #[tokio::test]
    async fn a_writers_own_calls_leave_their_caller_out_and_read_back_as_the_peer() {
        let own = start(payload(5, 1));
        let Msg::Start(s) = &own else { unreachable!() };
        let me = Aid::clone(&s.caller);
        let other = start(payload(5, 1));
        let large =
            Msg::Start(Box::new(Start { args: payload(OUT_OF_LINE_BYTES, 2), ..(**s).clone() }));
        let (a, b) = tokio::io::duplex(1 << 16);
        let msgs = vec![own.clone(), other.clone(), large.clone()];
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(a, &Limits::DEFAULT).sent_by(me);
            for m in msgs {
                w.feed(m).await.unwrap();
            }
            w.close().await.unwrap();
        });
        let mut r = FramedRead::new(b, FrameCodec::default());
        let mut frames = Vec::new();
        while let Some(f) = r.next().await {
            frames.push(f.unwrap());
        }
        writer.await.unwrap();
        let [own_f, other_f, large_f] = &frames[..] else { panic!("{} frames", frames.len()) };
        let (mut full, mut no_caller) = (BytesMut::new(), BytesMut::new());
        FrameCodec::default().encode(&own, &mut full).unwrap();
        encode_parts(&own, &mut no_caller, Limits::DEFAULT.max_frame(), &mut Scratch::new(), None)
            .unwrap();
        assert_eq!(full.len(), no_caller.len(), "no sender: the caller is written");
        assert!(
            own_f.bytes().len() < full.len(),
            "{} bytes, with the caller {}",
            own_f.bytes().len(),
            full.len()
        );
        assert_eq!(other_f.bytes().len(), full.len(), "someone else's start keeps its caller");
        let Msg::Start(s) = &own else { unreachable!() };
        let peer = Arc::clone(&s.caller);
        for (f, sent) in [(own_f, &own), (large_f, &large)] {
            let got = f.decode_from(&peer).unwrap();
            assert_eq!(&got, sent);
            let Msg::Start(g) = got else { unreachable!() };
            assert!(Arc::ptr_eq(&g.caller, &peer), "read as the peer itself");
            let err = f.decode().unwrap_err();
            assert!(err.to_string().contains("names no caller"), "{err}");
        }
        assert_eq!(&other_f.decode_from(&peer).unwrap(), &other);
    }

    /// Every size around the out-of-line threshold and the word boundary, for each kind
    /// with a payload, interleaved with small messages: what is read is what was sent,
    /// in order, and large payloads come back as slices of their frame (no copy).
    #[tokio::test]
    async fn frames_with_payloads_of_every_size_read_back_in_order() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut sent = Vec::new();
        for (i, n) in [
            0,
            1,
            7,
            8,
            9,
            OUT_OF_LINE_BYTES - 1,
            OUT_OF_LINE_BYTES,
            OUT_OF_LINE_BYTES + 1,
            OUT_OF_LINE_BYTES + 7,
            3 << 20,
        ]
        .into_iter()
        .enumerate()
        {
            let seed = i as u8;
            sent.push(Msg::Yield { cid: 5, payload: payload(n, seed) });
            sent.push(Msg::Stop { cid: 5 });
            sent.push(Msg::Return { cid: 7, payload: payload(n, seed ^ 0x55) });
            sent.push(Msg::Started { cid: 9, payload: payload(n, seed ^ 0xaa) });
            sent.push(start(payload(n, seed ^ 0x0f)));
        }
        let expect = sent.clone();
        let writer = write_all(a, sent);
        let mut r = FramedRead::new(b, FrameCodec::default());
        let mut got = Vec::new();
        while let Some(frame) = r.next().await {
            let frame = frame.unwrap();
            let msg = frame.decode().unwrap();
            if let Some(p) = msg.payload().filter(|p| p.len() >= OUT_OF_LINE_BYTES) {
                let range = frame.bytes().as_ptr_range();
                assert!(range.contains(&p.as_bytes().as_ptr()), "a large payload shares its frame");
            }
            got.push(msg);
        }
        writer.await.unwrap();
        assert_eq!(got, expect);
    }

    /// A large payload's frame is two segments, readable by capnp's own reader.
    #[test]
    fn a_large_payload_frame_is_standard_two_segment_capnp() {
        let msg = Msg::Yield { cid: 11, payload: payload(OUT_OF_LINE_BYTES + 3, 1) };
        let mut buf = BytesMut::new();
        let mut scratch = Scratch::new();
        let tail = encode_parts(&msg, &mut buf, Limits::DEFAULT.max_frame(), &mut scratch, None)
            .unwrap()
            .expect("out of line");
        assert_eq!(tail.pad, 5);
        let mut frame = buf.to_vec();
        frame.extend_from_slice(&tail.payload);
        frame.extend_from_slice(&PAD[..tail.pad]);
        let mut slice = &frame[..];
        let reader =
            capnp::serialize::read_message_from_flat_slice(&mut slice, Default::default()).unwrap();
        assert!(slice.is_empty(), "the table's sizes cover the frame exactly");
        assert_eq!(capnp::message::ReaderSegments::len(&reader.into_segments()), 2);
        let mut slice = &frame[..];
        let reader =
            capnp::serialize::read_message_from_flat_slice(&mut slice, Default::default()).unwrap();
        let root = reader.get_root::<crate::generated::plough_capnp::msg::Reader<'_>>().unwrap();
        assert_eq!(Msg::read(root, None).unwrap(), msg);
        assert_eq!(scratch.landing_pad(), [0; 8], "the scratch is zero again");
        // The next one reuses the scratch, and so on.
        let again = encode_parts(
            &msg,
            &mut BytesMut::new(),
            Limits::DEFAULT.max_frame(),
            &mut scratch,
            None,
        )
        .unwrap()
        .expect("out of line");
        assert_eq!(again.payload, tail.payload);
    }

    /// The frame limit holds for an out-of-line payload as for a copied one.
    #[test]
    fn an_out_of_line_payload_over_the_limit_is_too_large() {
        let limits = Limits::DEFAULT.with_max_frame_bytes(OUT_OF_LINE_BYTES + 64);
        let msg = Msg::Yield { cid: 1, payload: payload(OUT_OF_LINE_BYTES + 64, 0) };
        let mut buf = BytesMut::new();
        let err = encode_parts(&msg, &mut buf, limits.max_frame(), &mut Scratch::new(), None)
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
        assert!(buf.is_empty(), "nothing of it is left in the buffer");
    }

    /// Random mixes of small and large payloads through pipes of random sizes, the reader
    /// keeping random frames alive for a while (so pooled buffers are sometimes free,
    /// sometimes not): every message arrives whole, in order, whatever the reads' sizes.
    #[tokio::test]
    async fn random_mixes_of_sizes_survive_any_chunking_and_any_frame_lifetime() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for case in 0..12 {
            let sizes: Vec<usize> = (0..40)
                .map(|_| match rand(4) {
                    0 => rand(200),
                    1 => OUT_OF_LINE_BYTES - 8 + rand(16),
                    2 => (1 << 20) + rand(3 << 20),
                    _ => rand(128 << 10),
                })
                .collect();
            let sent: Vec<Msg> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| Msg::Yield { cid: i as u64 + 1, payload: payload(n, case as u8) })
                .collect();
            let (a, b) = tokio::io::duplex(1 + rand(300 << 10));
            let expect = sent.clone();
            let writer = write_all(a, sent);
            let mut r = FramedRead::new(b, FrameCodec::default());
            let mut held = std::collections::VecDeque::new();
            let mut i = 0;
            while let Some(frame) = r.next().await {
                let frame = frame.unwrap();
                assert_eq!(frame.decode().unwrap(), expect[i], "case {case}, message {i}");
                i += 1;
                held.push_back(frame);
                while held.len() > rand(4) {
                    held.pop_front();
                }
            }
            assert_eq!(i, expect.len(), "case {case}: every message");
            writer.await.unwrap();
        }
    }
}
