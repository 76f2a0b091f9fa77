//! plough's actor runtime: root, nursery, portal, context, stream, registrar,
//! cancellation, and the `SpawnBackend` trait that the backends implement.
//!
//! This crate is being built in layers (issue 4 onwards). What is here now:
//!
//! * [`error`]: the errors user code sees, and the wire shape of a failure travelling
//!   home (source actor, type name, message, backtrace text, relay path).
//! * [`handler`]: the [`Registry`] of functions an actor serves, typed at registration,
//!   dispatched by name.
//! * [`runtime_vars`]: the one process-global settings struct with `get(clear)` / `set`
//!   and fork hooks.
//! * [`spawn_method`]: the backend keys (`exec`, `main_thread_forkserver`, the reserved
//!   `subint_forkserver`).

pub mod error;
pub mod handler;
pub mod runtime_vars;
pub mod spawn_method;

pub use error::{ActorError, RemoteActorError, Result, SpawnError};
pub use handler::{Cx, Registry};
pub use spawn_method::{SpawnMethod, UnknownSpawnMethod};
