//! plough's actor runtime: root, nursery, portal, registrar, cancellation, and the
//! `SpawnBackend` trait that the backends implement.
//!
//! ```no_run
//! use plough_actor_core::{Cx, Registry, Runtime};
//!
//! async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<i64, std::convert::Infallible> {
//!     Ok(a + b)
//! }
//!
//! fn main() -> plough_actor_core::Result<()> {
//!     // (The `plough` facade adds the default spawn backend.)
//!     let sum = Runtime::new(Registry::new().func("add", add)).run(|root| async move {
//!         root.nursery(|n| async move {
//!             let portal = n.start_actor("adder").await?;
//!             portal.run::<_, i64>("add", (1, 2)).await
//!         })
//!         .await
//!     })?;
//!     assert_eq!(sum, 3);
//!     Ok(())
//! }
//! ```
//!
//! * [`runtime`]: [`Runtime::run`] (the root, and child-mode dispatch) and `child_main`.
//! * [`actor`]: the per-process [`Actor`]; [`nursery`]: scoped children and the
//!   cancellation ladder; [`portal`]: calls to another actor; [`registrar`]: discovery.
//! * [`context`]: [`Context`] and its two-way [`MsgStream`] (bounded, with opt-in
//!   backpressure).
//! * [`error`]: the errors user code sees; [`handler`]: the [`Registry`] of functions.
//! * [`runtime_vars`], [`spawn_method`], [`spawn`]: settings, backend keys, backend trait.

pub mod actor;
pub mod boot_stderr;
mod channel;
pub mod context;
pub mod dump;
pub mod error;
pub mod handler;
pub mod nursery;
pub mod portal;
pub mod registrar;
pub mod runtime;
pub mod runtime_vars;
pub mod spawn;
pub mod spawn_method;

pub use actor::Actor;
pub use context::{
    Context, FanOut, MsgStream, MsgTypes, Outcome, STREAM_BUFFER, StreamConfig, Subscriber,
};
pub use error::{ActorError, RemoteActorError, Result, SpawnError};
pub use handler::{Cx, Registry};
pub use nursery::{LadderConfig, Nursery, RunHandle};
pub use portal::Portal;
pub use registrar::ActorEntry;
pub use runtime::{Runtime, RuntimeConfig};
pub use spawn::{ChildBoot, SpawnBackend, SpawnRequest};
pub use spawn_method::{SpawnMethod, UnknownSpawnMethod};
