//! Shared memory between the actors of a plough tree: buffers with typed views and
//! single-producer / single-consumer rings, in segments that live no longer than their
//! owner.
//!
//! * [`ShmBufMut`] → [`ShmBuf`]: an actor fills a buffer of `T: Pod`, freezes it
//!   (write-sealed), and sends its [`ShmHandle`] in an ordinary call argument or stream
//!   item; the receiver maps it read-only with [`ShmBuf::open`] and reads the shared
//!   pages in place (zero-copy). [`ShmBytes`] is the bytes view.
//! * [`Ring`]: a bounded ring of messages; one process sends, one receives
//!   ([`RingSender`], [`RingReceiver`]), waiting on a shared futex, never spinning; either
//!   side's end (a drop, or its process dying) is a clear state for the other.
//!
//! Large call arguments, results and stream items need none of this: plough's connections
//! lend any payload over `Budgets::shm_threshold` through a segment of this crate on
//! their own (see plough-actor-core's `Budgets`).
//!
//! Segments are sealed memfds, not `/dev/shm` files: see [`SegmentRef`] for why, and for
//! how another process opens one. In short: an owner that ends however it ends (even by
//! SIGKILL) leaves no segment behind, and no segment can shrink under a mapping (no
//! SIGBUS).
//!
//! Every handle is untrusted input: opening one checks it against the kernel's view and
//! answers a lie with a typed [`ShmError`], mapping nothing.
//!
//! ```
//! use plough_shm::{ShmBuf, ShmBufMut};
//! let mut buf = ShmBufMut::<u64>::new(1024)?;
//! buf.as_mut_slice().iter_mut().enumerate().for_each(|(i, x)| *x = i as u64);
//! let buf = buf.freeze()?;
//! // ... send `buf.handle()` to another actor, which does:
//! let view = ShmBuf::<u64>::open(&buf.handle())?;
//! assert_eq!(view[1023], 1023);
//! # Ok::<(), plough_shm::ShmError>(())
//! ```

mod buf;
mod error;
pub mod limits;
mod map;
mod ring;
mod segment;

pub use buf::{ShmBuf, ShmBufMut, ShmBytes, ShmHandle};
pub use bytemuck::{Pod, Zeroable};
pub use error::{Result, ShmError};
pub use ring::{HEADER_BYTES, MAGIC, Ring, RingHandle, RingReceiver, RingSender, VERSION};
pub use segment::SegmentRef;
