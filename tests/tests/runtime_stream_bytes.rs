//! Stream buffers bounded in bytes (issue 21): a child streams 16 MiB messages into the
//! root. Without backpressure, into a reader that does not read: the stream fails with the
//! typed overrun naming the byte budget, a call on the same connection answers meanwhile,
//! and the root's memory stays bounded (its peak resident set, `VmHWM`, reset before the
//! flood through `/proc/self/clear_refs`) and returns, with its fds, to the baseline.
//! With backpressure, into a slow reader: every message arrives in order while the sender
//! waits for byte credit, and the root's memory stays bounded. Before the byte bound, the
//! overrun flood took the root from 5 MiB to over 1 GiB (64 messages of up to 64 MiB).

use plough::{ActorError, ErrorKind, Outcome, OverrunBound, STREAM_BUFFER_BYTES};
use plough_tests::{in_nursery, runtime};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(90);
const MIB: usize = 1 << 20;
/// Each message's payload: the whole default byte budget of a stream.
const SIZE: usize = 16 * MIB;
/// What the root's peak resident set may grow by while a flood runs: a few messages (one
/// buffered, one being read, one being dropped), never the 64 × 16 MiB the message bound
/// alone allowed.
const PEAK_BOUND_KIB: u64 = 96 * 1024;
/// What the root's resident set may stay above its baseline once the flood is over: the
/// read buffer of the connection, still open, keeps the capacity of its largest frame
/// (16 MiB), and the allocator keeps freed messages for reuse (measured: +16 to +32 MiB).
const AFTER_BOUND_KIB: u64 = 64 * 1024;

/// A `VmRSS`/`VmHWM`-style field of this process's `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("the field");
    line.split_whitespace().nth(1).expect("a number").parse().expect("KiB")
}

/// Resets this process's peak resident set (`VmHWM`) to its current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

/// This process's open fds.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("the fd dir").count()
}

/// Polls `cond` every 10 ms until it holds, or panics naming `what` after `limit`.
async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn index_of(p: &plough::ipc_wire::Payload) -> u64 {
    u64::from_le_bytes(p.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The root's fds and resident set before a flood; its peak is reset when taken.
struct Baseline {
    fds: usize,
    rss: u64,
}

impl Baseline {
    fn take() -> Self {
        let b = Baseline { fds: fd_count(), rss: status_kib("VmRSS:") };
        reset_peak();
        b
    }

    /// Once the flood's context is gone: waits for the fds to be back at the baseline,
    /// then reports the peak and what the resident set kept, and checks both bounds.
    async fn settle(self, what: &str) {
        let peak = status_kib("VmHWM:");
        until(Duration::from_secs(5), "the root's fds back at baseline", || fd_count() == self.fds)
            .await;
        let after = status_kib("VmRSS:");
        let (grown, kept) = (peak.saturating_sub(self.rss), after.saturating_sub(self.rss));
        eprintln!(
            "{what}: root VmRSS {} KiB before, VmHWM {peak} KiB during (+{grown} KiB), \
             VmRSS {after} KiB after (+{kept} KiB)",
            self.rss
        );
        assert!(grown < PEAK_BOUND_KIB, "{what}: the root's peak grew by {grown} KiB");
        assert!(kept < AFTER_BOUND_KIB, "{what}: the root kept {kept} KiB");
    }
}

#[test]
fn a_flood_of_16_mib_messages_into_a_reader_that_does_not_read_is_a_byte_overrun_in_bounded_memory()
{
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("flooder").await?;
        assert_eq!(p.run::<_, i64>("add", (1, 2)).await?, 3);
        let baseline = Baseline::take();
        // Without backpressure, until its stream fails.
        let (ctx, ()) = p.open_context::<_, ()>("ctx_bytes_source", (0u64, SIZE, false)).await?;
        let s = ctx.open_stream().await?;
        // The root never reads while the flood runs: the first message fills the budget.
        until(LIMIT, "the first message buffered", || s.buffered() == 1).await;
        assert_eq!(s.buffered_bytes(), SIZE);
        // A legitimate call, on the flooded connection, answers.
        assert_eq!(p.run::<_, i64>("add", (2, 3)).await?, 5);
        // The flooder was told: its send failed, with the overrun as the root reported it.
        let e = ctx.result::<u64>().await.unwrap_err();
        let r = e.as_remote().unwrap_or_else(|| panic!("a remote error: {e:?}"));
        assert_eq!(r.kind, ErrorKind::StreamOverrun, "{e}");
        assert_eq!(r.overrun_sender.as_ref(), Some(p.aid()), "names the sender: {e}");
        assert!(r.message.contains("over the stream's budget of 16777216 bytes"), "{e}");
        // The root's stream: the typed overrun, naming the byte bound.
        match s.recv_payload().await {
            Err(ActorError::StreamOverrun { sender, bound, .. }) => {
                assert_eq!(&sender, p.aid());
                let (limit, buffered, arriving) = (STREAM_BUFFER_BYTES, SIZE, SIZE);
                assert_eq!(*bound, OverrunBound::Bytes { limit, buffered, arriving });
            }
            other => panic!("expected the byte overrun, got {other:?}"),
        }
        drop(s);
        drop(ctx);
        // The actor serves on; the root's fds and memory return to the baseline.
        assert_eq!(p.run::<_, i64>("add", (3, 4)).await?, 7);
        baseline.settle("overrun flood of 16 MiB messages").await;
        Ok(())
    })
    .unwrap();
}

#[test]
fn with_backpressure_a_slow_reader_of_16_mib_messages_gets_every_one_in_order_in_bounded_memory() {
    const N: u64 = 16;
    let mut most_buffered = 0;
    let most = &mut most_buffered;
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("source").await?;
        assert_eq!(p.run::<_, i64>("add", (1, 2)).await?, 3);
        let baseline = Baseline::take();
        let (ctx, ()) = p.open_context::<_, ()>("ctx_bytes_source", (N, SIZE, true)).await?;
        let s = ctx.open_stream().await?;
        for i in 0..N {
            // A slow reader: before each read, the sender has had the time to send all its
            // credit allows (a call answered on the same connection after the message
            // arrived); the buffer never holds more than the budget.
            until(LIMIT, "a message buffered", || s.buffered() > 0).await;
            assert_eq!(p.run::<_, i64>("add", (i as i64, 1)).await?, i as i64 + 1);
            *most = (*most).max(s.buffered_bytes());
            let msg = s.recv_payload().await?.expect("a message, not the end");
            assert_eq!((index_of(&msg), msg.len()), (i, SIZE), "every message, in order");
        }
        assert!(s.recv_payload().await?.is_none(), "then the end of the stream");
        assert_eq!(ctx.result::<u64>().await?, Outcome::Returned(N));
        drop(s);
        drop(ctx);
        baseline.settle("backpressured stream of 16 x 16 MiB").await;
        Ok(())
    })
    .unwrap();
    eprintln!("backpressure: the root's buffer held at most {most_buffered} bytes");
    assert!(most_buffered <= STREAM_BUFFER_BYTES, "held {most_buffered} bytes");
}
