//! plough's actor runtime: root, nursery, portal, contexts and streams, registrar,
//! cancellation, and the `SpawnBackend` trait that the backends implement.
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
//! # Layers
//!
//! The crate is seven layers, one folder each; a file imports only from its own layer and
//! those below it (the test `tests/layers.rs` rejects an import that runs back up):
//!
//! 1. **base** — errors, [`Budgets`] (every timeout, in one place), [`RuntimeConfig`],
//!    reserved names, the spawn-backend trait and keys, process-level state (runtime
//!    vars, SIGUSR1 task table, boot stderr, fork hooks);
//! 2. **connection** — a handshaken connection and the calls multiplexed over it; it owns
//!    the traits through which the layers above receive traffic;
//! 3. **calls** — [`Portal`], [`Context`], [`MsgStream`], [`FanOut`], [`MsgTypes`];
//! 4. **registrar** — its state, its service, its clients ([`ActorEntry`]);
//! 5. **serving** — [`Actor`], [`Registry`], [`Cx`], dispatch, discovery;
//! 6. **supervision** — [`Nursery`], [`Supervisor`], boot, the cancellation ladder;
//! 7. **runtime** — [`Runtime`]: root and child entry, signals.
//!
//! What only a spawn backend needs is in [`backend`].

#![warn(unreachable_pub)]

mod base;
mod calls;
mod connection;
mod registrar;
mod runtime;
mod serving;
mod supervision;

pub use base::budgets::{Budgets, LadderConfig, RestartIntensity};
pub use base::config::{REGISTRY_ENV, RuntimeConfig, TreeSecret};
pub use base::dump::DUMPS_KEPT;
pub use base::error::{
    ActorError, ChildExit, During, Misuse, OverrunBound, RemoteActorError, Result, SetupError,
    SpawnError,
};
pub use base::runtime_vars::{actor_label, set_log_filter_hook};
pub use base::spawn_method::{SPAWN_METHOD_ENV, SpawnMethod, UnknownSpawnMethod};
pub use calls::context::{Context, Outcome};
pub use calls::fan_out::{FanOut, Subscriber};
#[cfg(feature = "testing")]
pub use calls::fault::BreakSide;
pub use calls::portal::Portal;
pub use calls::shared::{Cached, SharedCache};
pub use calls::stream::{MsgStream, STREAM_BUFFER, STREAM_BUFFER_BYTES, StreamConfig};
pub use calls::typed::{ContextFn, Func, ServedContext, StreamFn, TypedContext, TypedStream};
pub use calls::types::MsgTypes;
pub use plough_fork_prims::ExitStatus;
pub use plough_ipc_wire::msg::ErrorKind;
pub use registrar::client::list_registry;
pub use registrar::entry::ActorEntry;
pub use runtime::root::Runtime;
pub use serving::actor::Actor;
pub use serving::cx::Cx;
pub use serving::registry::Registry;
pub use supervision::cluster::Cluster;
pub use supervision::nursery::{Nursery, RunHandle};
pub use supervision::options::SpawnOptions;
pub use supervision::pool::{JobHandle, Pool, PoolConfig};
pub use supervision::supervisor::{
    ChildExits, ChildSpec, Restart, Strategy, Supervised, Supervisor,
};

/// Roots and host daemons: the functions a `plough-host` daemon serves, what they carry,
/// and the root's handle on a host (see `docs/multi-host.md`).
pub mod host {
    pub use crate::supervision::remote::{
        Attached, Exit, HOST_ATTACH, HOST_BEAT, HOST_LIST, HOST_SIGNAL, HOST_SPAWN, HOST_STOP,
        HOST_WAIT, Host, HostedActor, HostedProcess, SignalOrder, SpawnOrder, Spawned,
    };
}

/// Spans and the trace context that crosses processes: the span names plough uses, the
/// task's current context, and the hook through which a subscriber with ids of its own
/// (OpenTelemetry's) carries its trace instead of plough's.
pub mod trace {
    pub use crate::base::trace::{
        ACTOR_SPAN, CALL_SPAN, PropagationAlreadySet, SERVE_SPAN, TracePropagation, current,
        set_propagation,
    };
    pub use plough_ipc_wire::msg::TraceContext;
}

/// The metrics plough records through the [`metrics`](https://docs.rs/metrics) facade: the
/// program's recorder exports them; without one, recording is a no-op.
///
/// Every name plough records is a constant of this module, and every label value is
/// bounded: backends, outcomes, sides, directions, rungs and error kinds are fixed sets,
/// and a function label is a name the program registered (a call to a function the callee
/// does not have is counted as [`UNKNOWN_FUNCTION`](metrics::UNKNOWN_FUNCTION)). No pid, uuid or actor name is
/// ever a label.
///
/// | name | type | labels | what |
/// |---|---|---|---|
/// | `plough_spawns_total` | counter | `backend`, `outcome` (`ok`, `error`) | child spawns, booted or failed |
/// | `plough_spawn_duration_seconds` | histogram | `backend` | spawn → the child connected back and got its spec |
/// | `plough_actors_live` | gauge | `backend` | children this process spawned that have not exited |
/// | `plough_restarts_total` | counter | — | restarts made by supervisors of this process |
/// | `plough_calls_total` | counter | `function`, `side` (`caller`, `callee`), `kind` | calls, contexts and streams started |
/// | `plough_call_errors_total` | counter | `function`, `side`, `error` | calls that ended in an error (its [`ErrorKind`], `user` for a handler's own) |
/// | `plough_stream_messages_total` | counter | `function`, `direction` (`sent`, `received`) | stream messages |
/// | `plough_stream_bytes_total` | counter | `function`, `direction` | stream payload bytes |
/// | `plough_ladder_escalations_total` | counter | `rung` (`sigterm`, `sigkill`, `forced`) | children the cancellation ladder had to signal |
///
/// A recorder installed after plough started still sees everything but the streams that
/// were already open (their counters are taken when a stream opens). [`describe`](metrics::describe) gives a
/// recorder each metric's unit and description.
pub mod metrics {
    pub use crate::base::metrics::{
        ACTORS_LIVE, CALL_ERRORS, CALLS, LABEL_BACKEND, LABEL_DIRECTION, LABEL_ERROR,
        LABEL_FUNCTION, LABEL_KIND, LABEL_OUTCOME, LABEL_RUNG, LABEL_SIDE, LADDER_ESCALATIONS,
        RESTARTS, SPAWN_DURATION, SPAWNS, STREAM_BYTES, STREAM_MESSAGES, UNKNOWN_FUNCTION,
        describe,
    };
}

/// What a spawn backend needs, and nothing a program needs: the trait a backend
/// implements, what it is asked to start, and the process-level hooks a forking backend
/// must install (see `plough-spawn-backends`).
pub mod backend {
    pub use crate::base::boot_stderr::{ChildStdio, capture_in_forked_child, dup_stderr};
    pub use crate::base::error::SpawnError;
    pub use crate::base::fork_hooks::fork_hooks;
    pub use crate::base::spawn::{ChildBoot, ChildMain, ChildRuntime, SpawnBackend, SpawnRequest};
    pub use crate::base::spawn_method::SpawnMethod;
}
