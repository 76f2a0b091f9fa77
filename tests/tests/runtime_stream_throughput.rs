//! Stream throughput, child → parent (ignored by default: run with
//! `cargo nextest run --release -p plough-tests -E 'binary(runtime_stream_throughput)' --run-ignored only --no-capture`).
//! Prints messages/s and bytes/s for 64-byte and 1 MiB payloads.

use plough::{ActorError, Outcome, STREAM_BUFFER, StreamConfig};
use plough_tests::{assert_no_descendants, become_subreaper, bounded, root_lock, runtime};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");

/// Streams `n` payloads of `size` bytes from a child; returns the messages/s of the best
/// of `runs` runs, or the error (an overrun without backpressure).
fn measure(n: u64, size: usize, bp: bool, buffer: usize, runs: usize) -> Result<f64, ActorError> {
    let _g = root_lock();
    become_subreaper();
    let out = runtime(APP).run(|root| {
        bounded(Duration::from_secs(120), async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("source").await?;
                let mut best = 0f64;
                for _ in 0..runs {
                    let (ctx, ()) =
                        p.open_context::<_, ()>("ctx_bytes_source", (n, size, bp)).await?;
                    let s =
                        ctx.open_stream_with(StreamConfig::default().with_buffer(buffer)).await?;
                    let t = Instant::now();
                    let mut got = 0u64;
                    while let Some(pl) = s.recv_payload().await? {
                        got += 1;
                        assert!(pl.len() >= size);
                    }
                    let rate = got as f64 / t.elapsed().as_secs_f64();
                    assert_eq!(got, n);
                    assert_eq!(ctx.result::<u64>().await?, Outcome::Returned(n));
                    best = best.max(rate);
                }
                Ok(best)
            })
            .await
        })
    });
    assert_no_descendants(Duration::from_secs(5));
    out
}

fn report(what: &str, n: u64, size: usize, bp: bool, buffer: usize) {
    match measure(n, size, bp, buffer, 3) {
        Ok(rate) => eprintln!(
            "THROUGHPUT {what}: {rate:.0} msgs/s, {:.1} MB/s ({n} x {size} B, backpressure {bp}, buffer {buffer})",
            rate * size as f64 / 1e6
        ),
        Err(e) => eprintln!("THROUGHPUT {what}: failed: {e}"),
    }
}

#[test]
#[ignore = "benchmark"]
fn small_messages_with_backpressure() {
    report("64 B, backpressure", 1_000_000, 64, true, STREAM_BUFFER);
    report("64 B, backpressure", 1_000_000, 64, true, 1024);
}

#[test]
#[ignore = "benchmark"]
fn small_messages_without_backpressure() {
    report("64 B, no backpressure", 1_000_000, 64, false, STREAM_BUFFER);
}

#[test]
#[ignore = "benchmark"]
fn one_mib_messages_with_backpressure() {
    report("1 MiB, backpressure", 2_000, 1 << 20, true, STREAM_BUFFER);
}
