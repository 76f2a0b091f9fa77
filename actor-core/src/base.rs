//! **base** — the bottom layer: what every other layer may use, and which uses none of
//! them.
//!
//! * [`error`]: the errors user code sees ([`ActorError`](error::ActorError) and its
//!   parts) and the wire form a failure travels home in;
//! * [`budgets`]: every timeout and grace period of the runtime, named and documented in
//!   one place, with the cancellation ladder's total computed from them;
//! * [`config`]: [`RuntimeConfig`](config::RuntimeConfig), the settings of a program's
//!   runtime;
//! * [`names`]: the reserved `plough.*` function names and runtime-var keys;
//! * [`spawn`], [`spawn_method`]: the spawn-backend trait and the backend keys;
//! * process-level state, one instance per process: [`runtime_vars`], the SIGUSR1 task
//!   table ([`dump`]), the boot-stderr pipe ([`boot_stderr`]), the fork hooks that keep
//!   them consistent across `fork` ([`fork_hooks`]), and [`ids`] (fresh uuids, the tree's
//!   uuid);
//! * [`fate`]: a child's exit status, for the layers that report its death;
//! * [`trace`]: the actor's and each call's spans, and the trace context a call carries;
//! * [`metrics`]: every metric name plough records, through the `metrics` facade;
//! * [`sync`]: the lock helper.

pub(crate) mod boot_stderr;
pub(crate) mod budgets;
pub(crate) mod config;
pub(crate) mod dump;
pub(crate) mod error;
pub(crate) mod fate;
pub(crate) mod fork_hooks;
pub(crate) mod ids;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod runtime_vars;
pub(crate) mod spawn;
pub(crate) mod spawn_method;
pub(crate) mod sync;
pub(crate) mod trace;
