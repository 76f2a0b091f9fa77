//! Handlers for the shared-memory suite (`tests/tests/runtime_shm.rs`): actors that own
//! buffers and rings (held for the actor's life), and actors that map what others own.

use crate::app::AppError;
use plough::shm::{Ring, RingHandle, ShmBuf, ShmBufMut, ShmError, ShmHandle};
use plough::{Cx, Registry};
use std::sync::Mutex;

/// The buffers and rings this actor owns, alive until it ends.
static HELD: Mutex<Vec<ShmBuf<u64>>> = Mutex::new(Vec::new());
static RINGS: Mutex<Vec<Ring>> = Mutex::new(Vec::new());

/// The value at index `i` of the buffers `shm_make` fills.
pub fn square(i: u64) -> u64 {
    i * i
}

/// Makes and holds a buffer of `n` u64s (`square(i)` at `i`); returns its handle.
async fn shm_make(_cx: Cx, n: u64) -> Result<ShmHandle, ShmError> {
    let mut b = ShmBufMut::<u64>::new(n as usize)?;
    for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = square(i as u64);
    }
    let b = b.freeze()?;
    let h = b.handle();
    HELD.lock().expect("held").push(b);
    Ok(h)
}

/// Maps a u64 buffer and sums it (a bad handle: the call's error).
async fn shm_sum(_cx: Cx, h: ShmHandle) -> Result<u64, ShmError> {
    Ok(ShmBuf::<u64>::open(&h)?.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
}

/// Maps a byte buffer and sums its bytes; the error comes back as a value (its exact
/// variant).
async fn shm_try_sum_bytes(_cx: Cx, h: ShmHandle) -> Result<Result<u64, ShmError>, AppError> {
    Ok(ShmBuf::<u8>::open(&h).map(|b| b.iter().map(|&x| u64::from(x)).sum()))
}

/// How many of this process's mappings are segments of plough-shm.
async fn shm_maps(_cx: Cx, _: ()) -> Result<usize, AppError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| AppError(e.to_string()))?;
    Ok(maps.lines().filter(|l| l.contains("/memfd:plough-shm.")).count())
}

/// Makes and holds a ring of `capacity` bytes; returns its handle.
async fn shm_ring_make(_cx: Cx, capacity: u64) -> Result<RingHandle, ShmError> {
    let ring = Ring::create(capacity)?;
    let h = ring.handle();
    RINGS.lock().expect("rings").push(ring);
    Ok(h)
}

/// Becomes the sender of the ring this actor made last and sends `0..n` (8 bytes
/// each), then closes it.
async fn shm_ring_send_held(_cx: Cx, n: u64) -> Result<u64, ShmError> {
    let ring =
        RINGS.lock().expect("rings").pop().ok_or(ShmError::Closed { role: "none".into() })?;
    let mut tx = ring.sender()?;
    tokio::task::spawn_blocking(move || {
        for i in 0..n {
            tx.send(&i.to_le_bytes())?;
        }
        Ok(n)
    })
    .await
    .expect("the sending task")
}

/// Attaches as the receiver of a ring and receives until it is closed: (count, sum).
async fn shm_ring_recv(_cx: Cx, h: RingHandle) -> Result<(u64, u64), ShmError> {
    let mut rx = h.receiver()?;
    tokio::task::spawn_blocking(move || {
        let (mut count, mut sum, mut out) = (0u64, 0u64, Vec::new());
        while rx.recv(&mut out)?.is_some() {
            count += 1;
            sum = sum.wrapping_add(u64::from_le_bytes(out[..8].try_into().unwrap_or([0; 8])));
        }
        Ok((count, sum))
    })
    .await
    .expect("the receiving task")
}

/// The shared-memory handlers.
pub(crate) fn register(r: Registry) -> Registry {
    r.func("shm_make", shm_make)
        .func("shm_sum", shm_sum)
        .func("shm_try_sum_bytes", shm_try_sum_bytes)
        .func("shm_maps", shm_maps)
        .func("shm_ring_make", shm_ring_make)
        .func("shm_ring_send_held", shm_ring_send_held)
        .func("shm_ring_recv", shm_ring_recv)
}
