//! The shared-memory rows (`--only shm`), each next to a floor measured in the same run:
//!
//! * a payload of 1 MiB and of 64 MiB, child → root, **by copy**: a backpressured stream
//!   of `bytes` payloads of at most 1 MiB each (the default 64 MiB frame limit and 16 MiB
//!   stream budget do not admit a 64 MiB item, so 64 MiB goes as 64 items), against
//!   **by shared memory**: one call that returns the `ShmHandle` of a buffer the child
//!   prepared, then `ShmBuf::open` (checks + `mmap`) and the drop (`munmap`) in the root;
//!   a second shm row has the child create, fill and freeze a new segment for every
//!   payload (what a producer that writes straight into shared memory pays). In every row
//!   the root reads one byte of every 4 KiB page of the payload it got (a copy's pages are
//!   resident already; a fresh mapping's fault in). GB/s of payload delivered; the floor
//!   is a `memcpy` of the same size between two resident buffers of this process;
//!   (that stream's 1 MiB items are at `Budgets::shm_threshold`, so with the child's
//!   default budgets they are lent through shared memory on their own);
//! * the automatic path on against off (`Budgets::shm_threshold` of the sending root, one
//!   process tree each, same run): 1 MiB and 64 MiB root → child through a stream (items
//!   of 1 MiB, every page touched by the child), and 1 MiB and 60 MiB as one call's
//!   argument (by copy an argument must fit a 64 MiB frame);
//! * a ring of 64-byte messages between two actors (a child sends, the root receives,
//!   each end in a blocking thread), msgs/s, against the raw UDS stream of 64-byte records.

use super::{MIB, Stat};
use plough::shm::{Ring, RingHandle, ShmBuf, ShmBufMut, ShmError, ShmHandle};
use plough::{Cx, Registry, SpawnMethod};
use std::sync::Mutex;
use std::time::Instant;

/// The child's prepared buffer (`shm_prepare`) and its latest fresh one (`shm_fresh`).
static PREPARED: Mutex<Option<ShmBuf<u8>>> = Mutex::new(None);
static FRESH: Mutex<Option<ShmBuf<u8>>> = Mutex::new(None);

fn filled(size: usize) -> Result<ShmBuf<u8>, ShmError> {
    let mut b = ShmBufMut::<u8>::new(size)?;
    b.as_mut_slice().fill(7);
    b.freeze()
}

/// Prepares (once) a buffer of `size` bytes; returns its handle.
async fn shm_prepare(_cx: Cx, size: usize) -> Result<ShmHandle, ShmError> {
    let b = filled(size)?;
    let h = b.handle();
    *PREPARED.lock().unwrap() = Some(b);
    Ok(h)
}

/// The prepared buffer's handle.
async fn shm_prepared(_cx: Cx, _: ()) -> Result<Option<ShmHandle>, ShmError> {
    Ok(PREPARED.lock().unwrap().as_ref().map(ShmBuf::handle))
}

/// A new buffer of `size` bytes, created, filled and frozen now (the previous one is
/// dropped); returns its handle.
async fn shm_fresh(_cx: Cx, size: usize) -> Result<ShmHandle, ShmError> {
    let b = filled(size)?;
    let h = b.handle();
    *FRESH.lock().unwrap() = Some(b);
    Ok(h)
}

/// Sends `n` 64-byte messages into a ring, then closes it.
async fn shm_ring_send(_cx: Cx, (h, n): (RingHandle, u64)) -> Result<u64, ShmError> {
    let mut tx = h.sender()?;
    tokio::task::spawn_blocking(move || {
        let msg = [7u8; 64];
        for _ in 0..n {
            tx.send(&msg)?;
        }
        Ok(n)
    })
    .await
    .expect("the sending thread")
}

/// The shm handlers of the bench's registry.
pub(super) fn register(r: Registry) -> Registry {
    r.func("shm_prepare", shm_prepare)
        .func("shm_prepared", shm_prepared)
        .func("shm_fresh", shm_fresh)
        .func("shm_ring_send", shm_ring_send)
        .context("shm_sink", shm_sink)
}

/// Reads one byte of every page (and the last).
fn touch(bytes: &[u8]) -> u64 {
    let mut acc = 0u64;
    for i in (0..bytes.len()).step_by(4096) {
        acc += u64::from(bytes[i]);
    }
    acc + u64::from(*bytes.last().unwrap_or(&0))
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

/// The memcpy floor: GB/s copying `size` bytes between two resident buffers.
fn memcpy_floor(size: usize, samples: usize) -> Vec<f64> {
    let src = vec![7u8; size];
    let mut dst = vec![1u8; size];
    (0..samples)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(touch(&dst));
            gbps(size, t.elapsed().as_secs_f64())
        })
        .collect()
}

/// (copy, prepared shm, fresh shm) GB/s samples for payloads of `size` bytes.
fn payloads(size: usize, samples: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    super::runtime(SpawnMethod::Zygote, true)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("shm-source").await?;
                let other = |e: ShmError| plough::ActorError::other(e);
                let (mut copy, mut prepared, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
                let item = size.min(MIB);
                let items = (size / item) as u64;
                p.run::<_, ShmHandle>("shm_prepare", size).await?;
                for _ in 0..samples {
                    // By copy: one stream of `items` payloads.
                    let t = Instant::now();
                    let (ctx, ()) = p.open_context::<_, ()>("source", (items, item)).await?;
                    let s = ctx.open_stream_with(plough::StreamConfig::backpressure()).await?;
                    let mut got = 0usize;
                    while let Some(payload) = s.recv_payload().await? {
                        std::hint::black_box(touch(payload.as_bytes()));
                        got += payload.as_bytes().len();
                    }
                    ctx.result::<u64>().await?;
                    assert_eq!(got, size);
                    copy.push(gbps(size, t.elapsed().as_secs_f64()));
                    // By shm: the prepared buffer's handle, mapped, touched, unmapped.
                    let t = Instant::now();
                    let h: Option<ShmHandle> = p.run("shm_prepared", ()).await?;
                    let b = ShmBuf::<u8>::open(&h.expect("prepared")).map_err(other)?;
                    std::hint::black_box(touch(&b));
                    drop(b);
                    prepared.push(gbps(size, t.elapsed().as_secs_f64()));
                    // By shm, a new segment each time.
                    let t = Instant::now();
                    let h: ShmHandle = p.run("shm_fresh", size).await?;
                    let b = ShmBuf::<u8>::open(&h).map_err(other)?;
                    std::hint::black_box(touch(&b));
                    drop(b);
                    fresh.push(gbps(size, t.elapsed().as_secs_f64()));
                }
                Ok((copy, prepared, fresh))
            })
            .await
        })
        .expect("shm payload bench")
}

/// Whether `addr` lies in one of this process's plough-shm mappings.
fn in_a_segment(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    maps.lines().filter(|l| l.contains("/memfd:plough-shm.")).any(|l| {
        let (a, b) = l.split_whitespace().next().and_then(|r| r.split_once('-')).expect("a-b");
        let hex = |s| usize::from_str_radix(s, 16).expect("hex");
        (hex(a)..hex(b)).contains(&addr)
    })
}

/// Receives byte items until the stream ends, reading one byte of every 4 KiB page of
/// each; returns the bytes received. Checks that the first item was lent (`lent`) or not.
async fn shm_sink(ctx: plough::Context, lent: bool) -> Result<u64, plough::ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream_with(plough::StreamConfig::backpressure()).await?;
    let mut got = 0u64;
    while let Some(payload) = s.recv_payload().await? {
        if got == 0 {
            assert_eq!(in_a_segment(payload.as_ptr() as usize), lent, "lent or not");
        }
        std::hint::black_box(touch(payload.as_bytes()));
        got += payload.len() as u64;
    }
    Ok(got)
}

/// The automatic path (`Budgets::shm_threshold`) on (`lend`) or off, in one process tree
/// each; the root sends, so its budgets decide: GB/s samples of `size` bytes root → child
/// through a stream (items of at most 1 MiB, every page touched by the child), and of
/// `call` bytes root → child as one call's argument (`blob_len`).
fn auto(size: usize, call: usize, samples: usize, lend: bool) -> (Vec<f64>, Vec<f64>) {
    // On: every payload of these rows (1 MiB and up) is lent.
    let threshold = if lend { Some(MIB) } else { None };
    super::runtime(SpawnMethod::Zygote, true)
        .configure(|c| c.budgets.shm_threshold = threshold)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("shm-auto").await?;
                let (mut stream, mut calls) = (Vec::new(), Vec::new());
                let item = size.min(MIB);
                let payload = plough::ipc_wire::Payload::from(vec![7u8; item]);
                let blob = bytes::Bytes::from(vec![7u8; call]);
                for _ in 0..samples {
                    let t = Instant::now();
                    let (ctx, ()) = p.open_context::<_, ()>("shm_sink", lend).await?;
                    let s = ctx.open_stream_with(plough::StreamConfig::backpressure()).await?;
                    for _ in 0..size / item {
                        s.send_payload(payload.clone()).await?;
                    }
                    s.close().await?;
                    let got = ctx.result::<u64>().await?.returned();
                    assert_eq!(got, Some(size as u64));
                    stream.push(gbps(size, t.elapsed().as_secs_f64()));
                    let t = Instant::now();
                    let len: u64 = p.run("blob_len", blob.clone()).await?;
                    assert_eq!(len, call as u64);
                    calls.push(gbps(call, t.elapsed().as_secs_f64()));
                }
                Ok((stream, calls))
            })
            .await
        })
        .expect("automatic shm bench")
}

/// Thousands of 64-byte messages per second through a ring, child → root, per run.
fn ring_rate(n: u64, runs: usize) -> Vec<f64> {
    super::runtime(SpawnMethod::Zygote, true)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("ring-source").await?;
                let mut out = Vec::new();
                for _ in 0..runs {
                    let ring = Ring::create(1 << 16).map_err(plough::ActorError::other)?;
                    let h = ring.handle();
                    let mut rx = ring.receiver().map_err(plough::ActorError::other)?;
                    let recv = tokio::task::spawn_blocking(move || {
                        let mut buf = Vec::with_capacity(64);
                        // Timed from the first message: the sender's attach is not counted.
                        rx.recv(&mut buf)?;
                        let t = Instant::now();
                        let mut got = 1u64;
                        while rx.recv(&mut buf)?.is_some() {
                            got += 1;
                        }
                        Ok::<_, ShmError>((got, t.elapsed().as_secs_f64()))
                    });
                    let sent: u64 = p.run("shm_ring_send", (h, n)).await?;
                    let (got, secs) =
                        recv.await.expect("receiver").map_err(plough::ActorError::other)?;
                    assert_eq!((sent, got), (n, n));
                    out.push((n - 1) as f64 / secs / 1e3);
                }
                Ok(out)
            })
            .await
        })
        .expect("ring bench")
}

/// The rows.
pub(super) fn rows(quick: bool) -> Vec<(Stat, Option<Stat>)> {
    let mut rows = Vec::new();
    for (label, size, samples) in [
        ("1 MiB", MIB, if quick { 10 } else { 30 }),
        ("64 MiB", 64 * MIB, if quick { 3 } else { 8 }),
    ] {
        let (copy, prepared, fresh) = payloads(size, samples);
        let floor =
            Stat::new(&format!("floor: memcpy {label}"), "GB/s", memcpy_floor(size, samples));
        rows.push((
            Stat::new(
                &format!("{label} by stream of bytes (lent when >= threshold)"),
                "GB/s",
                copy,
            ),
            Some(floor.clone()),
        ));
        rows.push((
            Stat::new(&format!("{label} by shm (prepared buffer: handle + map)"), "GB/s", prepared),
            Some(floor.clone()),
        ));
        rows.push((
            Stat::new(&format!("{label} by shm (new segment each)"), "GB/s", fresh),
            Some(floor),
        ));
    }
    // The automatic path, on against off in the same run. By copy a call's argument must
    // fit one frame (64 MiB with its header), so the large call row is 60 MiB.
    for (label, size, call_label, call, samples) in [
        ("1 MiB", MIB, "1 MiB", MIB, if quick { 10 } else { 30 }),
        ("64 MiB", 64 * MIB, "60 MiB", 60 * MIB, if quick { 3 } else { 8 }),
    ] {
        let (off_stream, off_call) = auto(size, call, samples, false);
        let (on_stream, on_call) = auto(size, call, samples, true);
        rows.push((
            Stat::new(&format!("auto shm on: {label} stream root -> child"), "GB/s", on_stream),
            Some(Stat::new(&format!("auto shm off: {label} stream"), "GB/s", off_stream)),
        ));
        rows.push((
            Stat::new(
                &format!("auto shm on: {call_label} call arg root -> child"),
                "GB/s",
                on_call,
            ),
            Some(Stat::new(&format!("auto shm off: {call_label} call arg"), "GB/s", off_call)),
        ));
    }
    let n = if quick { 500_000 } else { 2_000_000 };
    let floor = Stat::new("floor: raw UDS stream, 64 B records", "k/s", super::raw_stream(n, 3));
    rows.push((
        Stat::new("ring 64 B child -> root (shm, futex)", "k/s", ring_rate(n, 3)),
        Some(floor),
    ));
    rows
}
