//! plough: structured-concurrency actors that are OS processes.
//!
//! ```no_run
//! async fn add(_cx: plough::Cx, (a, b): (i64, i64)) -> Result<i64, std::convert::Infallible> {
//!     Ok(a + b)
//! }
//!
//! fn main() -> plough::Result<()> {
//!     let sum = plough::Runtime::new(plough::Registry::new().func("add", add)).run(|root| async move {
//!         root.nursery(|n| async move {
//!             let portal = n.start_actor("adder").await?;
//!             portal.run::<_, i64>("add", (1, 2)).await
//!         })
//!         .await
//!     })?;
//!     println!("1 + 2 = {sum}");
//!     Ok(())
//! }
//! ```
//!
//! Every process of the program (the root and each child actor, exec'd or forked) builds
//! the same [`Registry`]; [`Runtime::run`] dispatches child mode before the body runs.
//! `PLOUGH_SPAWN_METHOD` overrides the program's spawn method.
//!
//! # Logging
//!
//! plough logs with `tracing` and leaves the global subscriber to the program:
//!
//! * A program that installs its own global subscriber (in `main`, before
//!   [`Runtime::run`] or [`Runtime::run_async`]: `zygote` and `exec` children run `main`
//!   from its start, `main_thread_forkserver` children inherit it) gets plough's events in
//!   it, and plough installs nothing.
//! * A program without one gets plough's stderr subscriber only when it asks for it:
//!   [`Runtime::log`] in the program, or `PLOUGH_LOG` in the environment (which wins;
//!   `tracing_subscriber` `EnvFilter` syntax, e.g. `PLOUGH_LOG=debug`). Every line is
//!   prefixed with the actor that wrote it: `[name@pid method] `. Without an ask a root
//!   installs nothing and prints no log line.
//! * A child actor process with no subscriber installs plough's, filtered by `PLOUGH_LOG`,
//!   else the program's [`Runtime::log`] filter, else `warn`, so a child's errors are
//!   always visible.
//! * An ask that cannot be honoured because the program's own subscriber is in use is
//!   never dropped silently: the root emits one warning, through that subscriber, naming
//!   the filter that is not applied.
//!
//! plough's subscriber is the default cargo feature `log` (it brings `tracing-subscriber`
//! and the regex crates behind its `EnvFilter`). A program that always installs its own
//! subscriber may turn it off (`default-features = false`): plough then never installs
//! one, a child's log lines exist only through the program's subscriber (its errors still
//! come home as typed errors), and an ask is answered with one warning that it is not
//! applied (on stderr when no subscriber listens).
//!
//! # Spans and metrics
//!
//! Each actor runs in a `plough.actor` span, and each call, context and stream has a
//! `plough.call` span on the caller's side and a `plough.serve` span on the callee's,
//! linked across processes by the trace context every call carries ([`trace`]); the cargo
//! feature `opentelemetry` makes that OpenTelemetry's context (`plough::otel`). plough
//! records [`metrics`] through the `metrics` facade and installs no recorder. The guide's
//! `docs/observability.md` lists the span fields and the metric names.

pub use plough_actor_core as core;
pub use plough_actor_core::host;
pub use plough_actor_core::{
    Actor, ActorEntry, ActorError, Budgets, Cached, ChildExit, ChildExits, ChildSpec, Cluster,
    Context, ContextFn, Cx, During, ErrorKind, ExitStatus, FanOut, Func, JobHandle, LadderConfig,
    Misuse, MsgStream, MsgTypes, Nursery, Outcome, OverrunBound, Pool, PoolConfig, Portal,
    REGISTRY_ENV, Registry, RemoteActorError, Restart, RestartIntensity, Result, RunHandle,
    RuntimeConfig, STREAM_BUFFER, STREAM_BUFFER_BYTES, ServedContext, SetupError, SharedCache,
    SpawnError, SpawnMethod, SpawnOptions, Strategy, StreamConfig, StreamFn, Subscriber,
    Supervised, Supervisor, TreeSecret, TypedContext, TypedStream,
};
pub use plough_fork_prims as fork_prims;
pub use plough_ipc_wire as ipc_wire;
pub use plough_ipc_wire::Address;
/// Shared memory between actors: sealed buffers with typed views, SPSC rings.
pub use plough_shm as shm;
pub use plough_spawn_backends as backends;

pub use plough_actor_core::{metrics, trace};

mod logging;
#[cfg(feature = "opentelemetry")]
pub mod otel;
pub mod testing;

/// Environment variable with the log filter (`tracing_subscriber` `EnvFilter` syntax).
pub const LOG_ENV: &str = "PLOUGH_LOG";

/// Whether this process was started as a child actor (by `zygote` or `exec`) and has not
/// become it yet: a program that does work of its own before [`Runtime::run`] can skip it
/// in children (they run `main` from its start).
pub fn started_as_child() -> bool {
    plough_fork_prims::has_delivery()
}

/// The actor runtime with plough's default spawn backends.
#[derive(Debug)]
pub struct Runtime {
    registry: Registry,
    config: RuntimeConfig,
    command: backends::ChildCommand,
    log: Option<String>,
}

impl Runtime {
    /// A runtime serving `registry` with default settings.
    pub fn new(registry: Registry) -> Self {
        Runtime {
            registry,
            config: RuntimeConfig::default(),
            command: backends::ChildCommand::this_program(),
            log: None,
        }
    }

    /// Changes the settings.
    pub fn configure(mut self, f: impl FnOnce(&mut RuntimeConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Asks for plough's stderr subscriber with this filter (`tracing_subscriber`
    /// `EnvFilter` syntax, e.g. `info` or `plough_actor_core=debug`); `PLOUGH_LOG` in the
    /// environment wins over it. Lines are prefixed `[name@pid method] `.
    ///
    /// Without this call (and without `PLOUGH_LOG`) a root installs no subscriber at all;
    /// child actors install plough's with filter `warn` when they have none. If the program
    /// installed its own global subscriber, plough installs nothing and logs through it;
    /// this filter is then not applied, and the root says so in one warning (through the
    /// program's subscriber). Without the default `log` feature plough has no subscriber of
    /// its own: the filter is not applied, and one warning says so. See
    /// [the crate docs](crate#logging).
    pub fn log(mut self, filter: impl Into<String>) -> Self {
        self.log = Some(filter.into());
        self
    }

    /// For the `zygote` and `exec` backends: the program children run (default: this one),
    /// with no arguments (set some with [`Runtime::child_args`]). It must build the same
    /// registry and reach `Runtime::run` (or `run_async`).
    pub fn child_program(mut self, program: impl Into<std::path::PathBuf>) -> Self {
        self.command = backends::ChildCommand::program(program);
        self
    }

    /// For the `zygote` and `exec` backends: the arguments (after `argv[0]`) children's
    /// `main` sees. Default: this process's own, which its argument parser accepted. A
    /// child runs `main` from its start until `Runtime::run`, so these arguments must lead
    /// it there (a test harness needs those that select the running test: see
    /// [`testing`]).
    pub fn child_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.command = self.command.with_args(args);
        self
    }

    /// Runs the root actor with `body` (in a child process: becomes the child actor and
    /// exits). See [`plough_actor_core::Runtime::run`].
    ///
    /// # Errors
    ///
    /// As [`plough_actor_core::Runtime::run`]; an unknown `PLOUGH_SPAWN_METHOD`.
    pub fn run<T, F, Fut>(self, body: F) -> Result<T>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.into_core()?.run(body)
    }

    /// Runs the root actor on the caller's tokio runtime (`#[tokio::main]`, either
    /// flavour); children run on fresh current-thread runtimes of their own. See
    /// [`plough_actor_core::Runtime::run_async`].
    ///
    /// # Errors
    ///
    /// As [`Runtime::run`].
    pub async fn run_async<T, F, Fut>(self, body: F) -> Result<T>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.into_core()?.run_async(body).await
    }

    /// The core runtime with the spawn method (`PLOUGH_SPAWN_METHOD` wins) and its backend.
    fn into_core(mut self) -> Result<plough_actor_core::Runtime> {
        logging::init(self.log.as_deref(), started_as_child());
        match SpawnMethod::from_env() {
            Ok(Some(m)) => {
                if m != self.config.spawn_method {
                    tracing::info!(method = %m, program_chose = %self.config.spawn_method, "PLOUGH_SPAWN_METHOD overrides the spawn method");
                }
                self.config.spawn_method = m;
            }
            Ok(None) => {}
            Err(e) => return Err(plough_actor_core::SetupError::from(e).into()),
        }
        let backend = backends::backend_for(self.config.spawn_method, self.command);
        Ok(plough_actor_core::Runtime::new(self.registry)
            .with_config(self.config)
            .with_backend(backend))
    }
}

/// The guide (`docs/*.md`), compiled as doc tests so that every Rust block in it keeps
/// building against this crate (blocks marked `text` are not Rust).
#[cfg(doctest)]
pub mod guide {
    #[doc = include_str!("../docs/README.md")]
    pub struct Index;
    #[doc = include_str!("../docs/concepts.md")]
    pub struct Concepts;
    #[doc = include_str!("../docs/backends.md")]
    pub struct Backends;
    #[doc = include_str!("../docs/testing.md")]
    pub struct Testing;
    #[doc = include_str!("../docs/tractor.md")]
    pub struct Tractor;
    #[doc = include_str!("../docs/troubleshooting.md")]
    pub struct Troubleshooting;
    #[doc = include_str!("../docs/observability.md")]
    pub struct Observability;
    #[doc = include_str!("../docs/design.md")]
    pub struct Design;
    #[doc = include_str!("../docs/multi-host.md")]
    pub struct MultiHost;
}
