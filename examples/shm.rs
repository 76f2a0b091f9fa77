//! Shared memory between actors: a buffer one actor fills and another reads in place, and
//! a ring of messages between two actors.
//!
//! ```sh
//! cargo run --release --example shm
//! ```
//!
//! A `producer` actor fills a buffer of 1M `f64` samples, freezes it and returns its
//! handle; a `consumer` actor maps it (zero-copy) and returns its mean. Then the root
//! streams 100,000 readings to the consumer through a ring (the root sends, the consumer
//! receives, each end in a blocking thread) and gets their sum back. Every segment is a
//! sealed memfd that dies with its owner.

use plough::shm::{Ring, RingHandle, ShmBuf, ShmBufMut, ShmError, ShmHandle};
use plough::{ActorError, Cx, Registry};
use std::sync::Mutex;
use std::time::Instant;

/// The producer's buffers, kept while the actor lives (readers map them meanwhile).
static KEPT: Mutex<Vec<ShmBuf<f64>>> = Mutex::new(Vec::new());

/// Fills a buffer of `n` samples, freezes it and returns its handle.
async fn produce(_cx: Cx, n: usize) -> Result<ShmHandle, ShmError> {
    let mut buf = ShmBufMut::<f64>::new(n)?;
    for (i, x) in buf.as_mut_slice().iter_mut().enumerate() {
        *x = (i % 100) as f64;
    }
    let buf = buf.freeze()?;
    let handle = buf.handle();
    KEPT.lock().expect("kept").push(buf);
    Ok(handle)
}

/// Maps a buffer of samples and returns their mean.
async fn mean(_cx: Cx, handle: ShmHandle) -> Result<f64, ShmError> {
    let samples = ShmBuf::<f64>::open(&handle)?;
    Ok(samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Receives `f64` readings from a ring until the sender closes it; returns their sum.
async fn sum_ring(_cx: Cx, handle: RingHandle) -> Result<f64, ShmError> {
    let mut rx = handle.receiver()?;
    tokio::task::spawn_blocking(move || {
        let (mut sum, mut msg) = (0.0, Vec::new());
        while rx.recv(&mut msg)?.is_some() {
            sum += f64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
        }
        Ok(sum)
    })
    .await
    .expect("the receiving thread")
}

fn registry() -> Registry {
    Registry::new().func("produce", produce).func("mean", mean).func("sum_ring", sum_ring)
}

fn main() -> plough::Result<()> {
    plough::Runtime::new(registry()).run(|root| async move {
        root.nursery(|n| async move {
            let producer = n.start_actor("producer").await?;
            let consumer = n.start_actor("consumer").await?;
            let t = Instant::now();
            let handle: ShmHandle = producer.run("produce", 1usize << 20).await?;
            let m: f64 = consumer.run("mean", handle).await?;
            println!(
                "consumer read {} MiB of the producer's samples in place: mean {m} ({:.1} ms)",
                handle.byte_len() >> 20,
                t.elapsed().as_secs_f64() * 1e3
            );
            let ring = Ring::create(1 << 16).map_err(ActorError::other)?;
            let ring_handle = ring.handle();
            let mut tx = ring.sender().map_err(ActorError::other)?;
            let t = Instant::now();
            let send = tokio::task::spawn_blocking(move || {
                (0..100_000u32).try_for_each(|i| tx.send(&f64::from(i).to_le_bytes()))
            });
            let sum: f64 = consumer.run("sum_ring", ring_handle).await?;
            send.await.expect("the sending thread").map_err(ActorError::other)?;
            println!(
                "100,000 readings through a ring: sum {sum} ({:.1} ms)",
                t.elapsed().as_secs_f64() * 1e3
            );
            Ok(())
        })
        .await
    })
}
