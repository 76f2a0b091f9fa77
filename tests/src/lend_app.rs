//! Handlers for the automatic shared-memory path (`tests/tests/runtime_shm_lend.rs`):
//! large arguments and results, which the connection lends through shared memory.

use crate::app::AppError;
use plough::{Cx, Registry};

/// `len` bytes of `fill`.
async fn lend_bytes(_cx: Cx, (len, fill): (usize, u8)) -> Result<bytes::Bytes, AppError> {
    Ok(bytes::Bytes::from(vec![fill; len]))
}

/// The length and the wrapping byte sum of `blob`.
async fn lend_sum(_cx: Cx, blob: bytes::Bytes) -> Result<(u64, u64), AppError> {
    Ok((blob.len() as u64, blob.iter().map(|&b| u64::from(b)).sum()))
}

/// Registers this module's handlers.
pub fn register(r: Registry) -> Registry {
    r.func("lend_bytes", lend_bytes).func("lend_sum", lend_sum)
}
