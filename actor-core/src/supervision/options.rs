//! [`SpawnOptions`]: what a spawn may choose for its child beyond its name — which
//! registered functions it serves (tractor's `enable_modules`), where else it listens
//! (tractor's bind addresses). The choices travel in the child's spawn spec.

use super::nursery::Nursery;
use crate::base::error::ActorError;
use crate::base::runtime_vars;
use crate::calls::portal::Portal;
use crate::serving::actor::Actor;
use crate::serving::exposure::registered;
use plough_ipc_wire::Address;
use plough_ipc_wire::msg::SpawnSpec;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Options of one spawn ([`Nursery::start_actor_with`], [`Nursery::run_in_actor_with`]).
/// The default is what [`Nursery::start_actor`] does: the child serves every registered
/// function.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// `None`: every registered function.
    expose: Option<Vec<String>>,
    /// Where the child listens besides its own address.
    bind: Vec<Address>,
    /// The child's log filter; `None`: its parent's.
    log_level: Option<String>,
}

impl SpawnOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The child serves only `functions` (tractor's `enable_modules`); a call to another
    /// registered function fails with [`ErrorKind::NotExposed`](crate::ErrorKind). Each
    /// name must be registered: the spawn fails with
    /// [`Misuse::NotRegistered`](crate::Misuse::NotRegistered) otherwise. A child can
    /// narrow this further itself ([`Actor::expose_only`]), never widen it. The functions
    /// of the runtime (cancel, the registrar's) are always served.
    pub fn expose<I, S>(mut self, functions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.expose = Some(functions.into_iter().map(Into::into).collect());
        self
    }

    /// The child listens on `addr` too, besides the address it always has (on its
    /// parent's transport, the one its tree knows it by): e.g. a TCP port for a child of a
    /// UDS tree. May be given several times; a TCP port 0 is chosen by the kernel
    /// ([`Actor::addrs`] tells it). Every address authenticates like the first. An address
    /// the child cannot bind is its setup error: it exits, and its nursery reports its
    /// death.
    pub fn bind(mut self, addr: Address) -> Self {
        self.bind.push(addr);
        self
    }

    /// The child's log filter (tractor's per-actor `loglevel`), e.g. `debug` or
    /// `info,plough=debug` (`EnvFilter` syntax): passed in its spawn spec, seen in its
    /// runtime vars ([`Actor::log_level`]), inherited by its own children unless they are
    /// given another, and applied by plough's own subscriber in that child — also over
    /// `PLOUGH_LOG`, which is for the whole tree. A subscriber the program installed
    /// itself is never touched: there the level is only information. Default: the
    /// parent's own (none at the root).
    pub fn log_level(mut self, filter: impl Into<String>) -> Self {
        self.log_level = Some(filter.into());
        self
    }

    /// The spawn spec of a child of `actor` spawned with these options.
    pub(super) fn spawn_spec(&self, actor: &Actor) -> Result<SpawnSpec, ActorError> {
        let enable_handlers = match &self.expose {
            Some(names) => registered(actor, names.iter().cloned())?.into_iter().collect(),
            None => actor.registry().names().map(str::to_owned).collect(),
        };
        let mut vars = runtime_vars::get(false);
        if let Some(level) = &self.log_level {
            vars.log_level.clone_from(level);
        }
        // Ours if we know it (a host daemon that met a root over TLS does): a child that runs
        // our executable file need not hash it again. Else what our parent told us passes on.
        vars.build = plough_ipc_wire::BuildId::known().or(vars.build);
        Ok(SpawnSpec {
            runtime_vars: vars,
            registry_addrs: vec![actor.registry_addr().clone()],
            bind_addrs: self.bind.clone(),
            enable_handlers,
            parent: Some(actor.aid().clone()),
            expose_only: self.expose.is_some(),
        })
    }

    /// Checks the options against `actor` before anything is spawned.
    pub(super) fn check(&self, actor: &Actor) -> Result<(), ActorError> {
        self.spawn_spec(actor).map(drop)
    }
}

impl Nursery {
    /// [`Nursery::start_actor`] with [`SpawnOptions`].
    ///
    /// # Errors
    ///
    /// As [`Nursery::start_actor`]; options that name an unregistered function are a
    /// [`Misuse`](crate::Misuse), before anything is spawned.
    pub async fn start_actor_with(
        &self,
        name: &str,
        options: SpawnOptions,
    ) -> Result<Portal, ActorError> {
        options.check(self.actor())?;
        self.start_actor_opts(name, &options).await
    }

    /// [`Nursery::run_in_actor`] with [`SpawnOptions`] (the function must be one the child
    /// exposes, or its result is a `NotExposed` error).
    ///
    /// # Errors
    ///
    /// As [`Nursery::start_actor_with`].
    pub async fn run_in_actor_with<A, R>(
        &self,
        name: &str,
        options: SpawnOptions,
        function: &str,
        args: A,
    ) -> Result<super::nursery::RunHandle<R>, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        options.check(self.actor())?;
        self.run_in_actor_opts(name, &options, function, args).await
    }
}

impl Actor {
    /// The log filter this actor was spawned with ([`SpawnOptions::log_level`], or its
    /// parent's), from its runtime vars; `None` when none was chosen.
    pub fn log_level(&self) -> Option<String> {
        Some(runtime_vars::get(false).log_level).filter(|l| !l.is_empty())
    }
}
