//! The errors of the actor runtime, and the shape in which a failure travels home.
//!
//! A failure anywhere in a tree must reach the code that opened the nursery as a typed
//! value naming the actor it came from and the actors it travelled through. So every
//! error that can cross a process boundary is `Clone`, converts to and from the wire's
//! [`ErrorMsg`], and keeps the remote backtrace as text. Several failures of one nursery
//! arrive together in one [`ActorError::Multi`], none lost and none masked by the cancel
//! that their siblings received.
//!
//! Every error is a value a caller can branch on: a remote error carries its
//! [`ErrorKind`] (an enum on the wire too), and the runtime's own failures are variants —
//! [`Misuse`] for a call the API does not allow, [`SetupError`] for a runtime that could
//! not start, [`ActorError::ActorDied`], [`ActorError::Protocol`] — never a bare string.

use super::budgets::RestartIntensity;
use plough_fork_prims::ExitStatus;
use plough_ipc_wire::msg::{Aid, ErrorKind, ErrorMsg, ErrorValue, TypeErrorInfo};
use plough_ipc_wire::payload::Payload;
use serde::de::DeserializeOwned;
use std::fmt;

/// An error raised in another actor, as it arrived here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteActorError {
    /// The actor where it was raised.
    pub source: Aid,
    /// What kind of failure it is: a handler's own error ([`ErrorKind::User`]) or one the
    /// runtime raised.
    pub kind: ErrorKind,
    /// The error's type name in the source actor (e.g. `ParseIntError`; for a runtime
    /// kind, [`ErrorKind::type_name`]).
    pub type_name: String,
    /// Its message.
    pub message: String,
    /// The source's backtrace, as text (may be empty).
    pub backtrace: String,
    /// The actors it travelled through on its way here, nearest the source first.
    pub relay_path: Vec<Aid>,
    /// For a cancellation: who cancelled.
    pub canceller: Option<Aid>,
    /// For a stream overrun: who overran.
    pub overrun_sender: Option<Aid>,
    /// For a payload type error: what was expected and what arrived.
    pub type_error: Option<TypeErrorInfo>,
    /// For a `MultiError`: every failure it holds.
    pub nested: Vec<RemoteActorError>,
    /// For a handler's error of a type registered to travel as itself
    /// ([`Registry::error_type`](crate::Registry::error_type)): its value, which
    /// [`RemoteActorError::downcast_remote`] decodes.
    pub value: Option<ErrorValue>,
}

impl RemoteActorError {
    /// A runtime error of `kind` raised here, by `source`, ready to be sent (its type
    /// name is the kind's).
    pub fn new(source: Aid, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::of(source, kind, kind.type_name(), message)
    }

    /// A handler's own error (of type `type_name`) raised by `source`.
    pub fn user(source: Aid, type_name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of(source, ErrorKind::User, type_name, message)
    }

    fn of(
        source: Aid,
        kind: ErrorKind,
        type_name: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        RemoteActorError {
            source,
            kind,
            type_name: type_name.into(),
            message: message.into(),
            backtrace: String::new(),
            relay_path: Vec::new(),
            canceller: None,
            overrun_sender: None,
            type_error: None,
            nested: Vec::new(),
            value: None,
        }
    }

    /// The handler's error as its own type `T`, when it was raised as a `T` registered
    /// with [`Registry::error_type`](crate::Registry::error_type) in the source actor
    /// (however many actors relayed it). `None` for another type, a runtime error, or an
    /// error type its source did not register.
    pub fn downcast_remote<T: DeserializeOwned>(&self) -> Option<T> {
        let v = self.value.as_ref()?;
        if v.type_path != std::any::type_name::<T>() {
            return None;
        }
        v.payload.decode().ok()
    }

    /// Whether this is (only) a cancellation.
    pub fn is_cancel(&self) -> bool {
        self.kind == ErrorKind::Cancelled
    }

    /// The same error after it passed through `hop` on its way to the root.
    pub fn relayed_by(mut self, hop: Aid) -> Self {
        for n in &mut self.nested {
            *n = n.clone().relayed_by(hop.clone());
        }
        self.relay_path.push(hop);
        self
    }

    /// The wire form (for the call `cid`, if any).
    pub fn to_msg(&self, cid: Option<u64>) -> ErrorMsg {
        ErrorMsg {
            cid,
            source: self.source.clone(),
            kind: self.kind,
            type_name: self.type_name.clone(),
            message: self.message.clone(),
            backtrace: self.backtrace.clone(),
            relay_path: self.relay_path.clone(),
            canceller: self.canceller.clone(),
            overrun_sender: self.overrun_sender.clone(),
            type_error: self.type_error.clone(),
            nested: self.nested.iter().map(|n| n.to_msg(None)).collect(),
            value: self.value.clone().map(Box::new),
        }
    }
}

impl From<Box<ErrorMsg>> for RemoteActorError {
    fn from(m: Box<ErrorMsg>) -> Self {
        RemoteActorError::from(*m)
    }
}

impl From<ErrorMsg> for RemoteActorError {
    fn from(m: ErrorMsg) -> Self {
        RemoteActorError {
            source: m.source,
            kind: m.kind,
            type_name: m.type_name,
            message: m.message,
            backtrace: m.backtrace,
            relay_path: m.relay_path,
            canceller: m.canceller,
            overrun_sender: m.overrun_sender,
            type_error: m.type_error,
            nested: m.nested.into_iter().map(RemoteActorError::from).collect(),
            value: m.value.map(|v| *v),
        }
    }
}

impl fmt::Display for RemoteActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in actor {}: {}", self.type_name, self.source, self.message)?;
        if !self.relay_path.is_empty() {
            f.write_str(" (relayed via ")?;
            for (i, hop) in self.relay_path.iter().enumerate() {
                if i > 0 {
                    f.write_str(" -> ")?;
                }
                write!(f, "{hop}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteActorError {}

/// Why a child could not be spawned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpawnError {
    /// The spawn method is known but not implemented (e.g. the reserved
    /// `subint_forkserver`).
    #[error("spawn method `{method}` is not implemented: {why}; use `{instead}`")]
    NotImplemented {
        /// The method asked for.
        method: String,
        /// Why it is not available.
        why: String,
        /// The working choice.
        instead: String,
    },
    /// The spawn method cannot work in this program (found before anything was forked).
    #[error("spawn method `{method}` cannot start actors in this program: {why}; use {instead}")]
    Unsupported {
        /// The method asked for.
        method: String,
        /// What in this program rules it out.
        why: String,
        /// The methods that work.
        instead: String,
    },
    /// The child did not connect back within the deadline (it was killed and reaped).
    #[error("actor {name} did not connect back within {secs:.1} s{}", stderr_tail(.stderr))]
    ConnectTimeout {
        /// The actor's name.
        name: String,
        /// The deadline.
        secs: f64,
        /// The end of what it wrote to stderr meanwhile, if captured.
        stderr: String,
    },
    /// The OS refused (fork/exec/socket).
    #[error("spawning actor {name} failed: {message}")]
    Os {
        /// The actor's name.
        name: String,
        /// The OS error with context.
        message: String,
    },
    /// This process ran out of file descriptors (`EMFILE`/`ENFILE`) at one step of the
    /// spawn, or had too few left to start it ([`Budgets::spawn_fds`]). Nothing of the
    /// child is left: a process forked before the step failed was killed and reaped. The
    /// running tree is not affected; a spawn may succeed once fds are freed.
    ///
    /// [`Budgets::spawn_fds`]: crate::Budgets::spawn_fds
    #[error(
        "cannot spawn actor {name}: out of file descriptors at {step} (RLIMIT_NOFILE soft limit {}){}",
        limit_text(*.limit),
        stderr_tail(.detail)
    )]
    OutOfFds {
        /// The actor's name.
        name: String,
        /// The step that found no fd: `the boot stderr pipe`, `pidfd_open`, ...
        step: String,
        /// The soft `RLIMIT_NOFILE` at the time (`None`: unlimited, so the system's table
        /// is full).
        limit: Option<u64>,
        /// The OS error with context (empty for the up-front check).
        detail: String,
    },
}

impl SpawnError {
    /// The error for `e`, an OS failure at `step` of spawning `name`:
    /// [`SpawnError::OutOfFds`] when it means no fd was left (see
    /// `plough_fork_prims::is_out_of_fds`), [`SpawnError::Os`] otherwise.
    pub fn from_io(name: &str, step: &str, e: &std::io::Error) -> SpawnError {
        if plough_fork_prims::is_out_of_fds(e) {
            SpawnError::OutOfFds {
                name: name.to_owned(),
                step: step.to_owned(),
                limit: plough_fork_prims::nofile_soft_limit(),
                detail: e.to_string(),
            }
        } else {
            SpawnError::Os { name: name.to_owned(), message: format!("{step}: {e}") }
        }
    }
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |l| l.to_string())
}

fn stderr_tail(s: &str) -> String {
    if s.is_empty() { String::new() } else { format!(": {}", s.trim_end()) }
}

/// One exit of a supervised child, as its supervisor saw it (see
/// [`Supervised::exits`](crate::Supervised::exits)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChildExit {
    /// The child's id in its supervisor (its [`ChildSpec`](crate::ChildSpec) id, also its
    /// actor name).
    pub id: String,
    /// The actor that exited; `None` when its spawn failed before it had one.
    pub actor: Option<Aid>,
    /// How its process ended, when it did (a run child whose function returned is
    /// still alive when its exit is reported: `None`).
    pub status: Option<ExitStatus>,
    /// What it was doing: booting, idle, or which call was in flight.
    pub during: During,
    /// Why the exit is abnormal; `None` for a normal exit (a run child's function
    /// returned `Ok` or was cancelled, a serving child exited with code 0).
    pub error: Option<ActorError>,
    /// How often this child had been restarted before this exit.
    pub restarts: u32,
    /// Whether the supervisor restarts it (the strategy may also restart others).
    pub restarting: bool,
}

impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.actor {
            Some(a) => write!(f, "{} ({a})", self.id)?,
            None => f.write_str(&self.id)?,
        }
        match (&self.error, self.status) {
            (Some(e), _) => write!(f, ": {e}")?,
            (None, Some(s)) => write!(f, ": {s}")?,
            (None, None) => f.write_str(": returned")?,
        }
        if self.restarts > 0 {
            write!(f, " (after {} restarts)", self.restarts)?;
        }
        Ok(())
    }
}

fn join_exits(exits: &[ChildExit]) -> String {
    exits.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// What a child was doing when it died (see [`ActorError::ActorDied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum During {
    /// It had not connected back to its parent yet.
    Boot,
    /// It was up, and no call of the observer's was in flight.
    Idle,
    /// It was serving this call (a function or a context).
    Call {
        /// The function or context name.
        function: String,
        /// The call's id on its connection.
        cid: u64,
    },
}

impl fmt::Display for During {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            During::Boot => f.write_str("during boot"),
            During::Idle => f.write_str("while idle"),
            During::Call { function, cid } => write!(f, "during call `{function}` (cid {cid})"),
        }
    }
}

/// Every error the runtime hands to user code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActorError {
    /// An error raised in another actor.
    #[error("remote error: {0}")]
    Remote(Box<RemoteActorError>),
    /// The context or call was cancelled (by `canceller`).
    #[error("cancelled by {canceller}")]
    ContextCancelled {
        /// Who cancelled.
        canceller: Aid,
    },
    /// A payload did not decode as the expected type.
    #[error(transparent)]
    MsgType(#[from] plough_ipc_wire::MsgTypeError),
    /// A stream's receiver fell too far behind: a message found its buffer full.
    #[error("stream overrun: {sender} sent faster than {receiver} read: {bound}")]
    StreamOverrun {
        /// The overrunning sender.
        sender: Aid,
        /// The slow receiver.
        receiver: Aid,
        /// Which bound of the receiver's buffer the message would have broken (boxed: it
        /// is the rare error, and every `Result` of the crate carries its size).
        bound: Box<OverrunBound>,
    },
    /// The peer closed the context's stream — it called `MsgStream::close`, or its side
    /// of the context ended — so nothing more can be sent on it (a `recv` is end of
    /// stream). tractor raises `trio.EndOfChannel` here.
    #[error(
        "the stream of context `{function}` was closed by {by}: nothing more can be sent on it"
    )]
    StreamClosed {
        /// The context function.
        function: String,
        /// The actor that closed it (the peer).
        by: Aid,
    },
    /// A fan-out subscriber fell behind and missed `missed` messages (it continues with
    /// the oldest message still held).
    #[error("subscriber lagged by {missed} messages")]
    Lagged {
        /// How many messages it missed.
        missed: u64,
    },
    /// The peer did not answer within its budget.
    #[error("actor {actor} too slow: no {what} within {secs:.1} s")]
    ActorTooSlow {
        /// The slow actor.
        actor: Aid,
        /// What it failed to do.
        what: String,
        /// The budget.
        secs: f64,
    },
    /// The connection to a peer closed while a call was in flight.
    #[error("connection to {peer} closed{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    TransportClosed {
        /// The peer.
        peer: String,
        /// What we know about why.
        detail: String,
    },
    /// A child could not be spawned.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// Several children of one nursery failed: every failure, in arrival order.
    #[error("{} actors failed: {}", .0.len(), join(.0))]
    Multi(Vec<ActorError>),
    /// A child actor died: it crashed, was killed, exited on its own, or died during its
    /// boot. Every path that sees a child of ours die — a call or context on it, a
    /// stream, its boot, the nursery's or supervisor's watch — reports this variant.
    #[error("actor {actor} died {during} ({status}){}", stderr_tail(.stderr))]
    ActorDied {
        /// The actor.
        actor: Aid,
        /// How its process ended: the exit code, or the signal and whether it dumped core.
        status: ExitStatus,
        /// What it was doing when it died, as the observer saw it: booting, idle, or
        /// serving a call (the one the observer made, or the oldest one in flight).
        during: During,
        /// The end of what it wrote to stderr, when the runtime captured it (a death
        /// during boot); empty otherwise.
        stderr: String,
    },
    /// A child actor on another host is lost with its host: the daemon there stopped
    /// answering the heartbeats for longer than the lease (it died, or the network
    /// between us did), so no exit status can come home. The daemon, if alive, takes the
    /// actor down when the lease runs out on its side.
    #[error("actor {actor} on host {host} is lost: {reason}")]
    HostLost {
        /// The actor.
        actor: Aid,
        /// Its host.
        host: String,
        /// Why the host is taken for lost.
        reason: String,
    },
    /// A supervisor's children exited more often than its restart intensity allows: it
    /// took every child down (in reverse start order) and ended. `exits` holds the exits
    /// of the window that broke the limit, oldest first, the last one included.
    #[error("supervisor {supervisor} gave up: more than {} restarts in {:.1?}; exits: {}", .intensity.max_restarts, .intensity.period, join_exits(.exits))]
    SupervisorGaveUp {
        /// The actor the supervisor ran in.
        supervisor: Aid,
        /// The limit that was broken.
        intensity: RestartIntensity,
        /// The recent exits.
        exits: Vec<ChildExit>,
    },
    /// A pool job killed every worker it ran on: it ran `1 + retries` times and each
    /// time its worker died ([`PoolConfig::retries`](crate::PoolConfig::retries)).
    #[error("job {job} (`{function}`) is poisoned: it killed {} workers: {}", .deaths.len(), join(.deaths))]
    JobPoisoned {
        /// The job's id ([`JobHandle::id`](crate::JobHandle::id)).
        job: u64,
        /// Its function.
        function: String,
        /// Every death it caused, oldest first.
        deaths: Vec<ActorError>,
    },
    /// A peer broke the protocol: a message came where it cannot.
    #[error("protocol error from {peer}: {detail}")]
    Protocol {
        /// The peer (its aid, or its address when it has no aid yet).
        peer: String,
        /// What arrived instead of what.
        detail: String,
    },
    /// A value could not be encoded as a payload.
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// What was being encoded (`arguments`, `a stream message`, ...).
        what: &'static str,
        /// The codec's error.
        detail: String,
    },
    /// The tree was interrupted (SIGINT) and cancelled.
    #[error("interrupted (SIGINT): the actor tree was cancelled")]
    Interrupted,
    /// The tree was asked to terminate (SIGTERM, e.g. by a service manager) and cancelled.
    #[error("terminated (SIGTERM): the actor tree was cancelled")]
    Terminated,
    /// A call the runtime's API does not allow (a programming error at the call site).
    #[error(transparent)]
    Misuse(#[from] Misuse),
    /// The runtime could not be set up (listening, joining the registrar, a child's boot).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A failure of the program's own, raised in a nursery body or a handler with
    /// [`ActorError::other`]; it travels home as a user error.
    #[error("{0}")]
    Other(std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

/// A call the runtime's API does not allow: a programming error at the call site, never
/// a failure of the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// A second actor in one process (one root per process).
    #[error("an actor is already running in this process (one root per process)")]
    ActorAlreadyRunning,
    /// A context opened through a portal to the calling actor itself.
    #[error("cannot open context `{function}` with yourself ({me}): a context needs two actors")]
    ContextWithSelf {
        /// The context function.
        function: String,
        /// The calling actor.
        me: Aid,
    },
    /// A parent-side call in the child, or a child-side call in the parent.
    #[error("`{call}` is the {side}'s call")]
    WrongSide {
        /// The call (`started`, `result`).
        call: &'static str,
        /// The side it belongs to (`parent`, `child`).
        side: &'static str,
    },
    /// `started` called a second time.
    #[error("`started` called twice in context `{function}`")]
    StartedTwice {
        /// The context function.
        function: String,
    },
    /// A stream opened before `started` (child side).
    #[error("open_stream before `started` in context `{function}`: call `started` first")]
    StreamBeforeStarted {
        /// The context function.
        function: String,
    },
    /// A second stream on one context.
    #[error(
        "context `{function}` already opened its stream (one stream per context; a closed \
         stream cannot be opened again)"
    )]
    SecondStream {
        /// The context function.
        function: String,
    },
    /// A context opened on a function that returned without calling `started`.
    #[error("`{function}` returned without calling `started` (is it a context?)")]
    NotAContext {
        /// The function.
        function: String,
    },
    /// A send after this side closed its sending half.
    #[error("send on a stream whose sending half is closed")]
    SendAfterClose,
    /// A subscription to a fan-out that was closed ([`FanOut::close`](crate::FanOut::close)).
    #[error("cannot subscribe to a fan-out that was closed")]
    SubscribeAfterClose,
    /// `start_actor` / `run_in_actor` on a nursery that has exited.
    #[error("cannot start actor {name}: the nursery has exited")]
    NurseryExited {
        /// The actor that was to be started.
        name: String,
    },
    /// A runtime without a spawn backend asked to spawn.
    #[error("this runtime has no spawn backend")]
    NoSpawnBackend,
    /// The blocking `Runtime::run` was called on a thread that runs a tokio runtime
    /// (e.g. inside `#[tokio::main]`).
    #[error(
        "Runtime::run was called inside a tokio runtime (e.g. #[tokio::main]): use \
         `Runtime::run_async(body).await` there"
    )]
    InsideTokioRuntime,
    /// A `run_in_actor` result read before the nursery exited (or after it was cancelled
    /// before the call finished).
    #[error("the call in actor {actor} has no result (nursery not exited, or cancelled)")]
    NoResult {
        /// The actor that ran the call.
        actor: Aid,
    },
    /// A job submitted to (or still queued in) a pool that has ended.
    #[error("the worker pool has ended")]
    PoolClosed,
    /// No child of this id runs under the supervisor: the id is unknown, the child
    /// was terminated and is not restarted, or the supervisor has ended.
    #[error("no child `{id}` runs under this supervisor")]
    NoSuchChild {
        /// The child id asked for.
        id: String,
    },
    /// A function named to be exposed (see `SpawnOptions::expose`, `Actor::expose_only`)
    /// that the registry does not have.
    #[error("cannot expose `{function}`: no function of that name is registered")]
    NotRegistered {
        /// The function named.
        function: String,
    },
    /// A portal to the parent (or the root) asked for in a root actor.
    #[error("actor {actor} is a root: it has no parent")]
    NoParent {
        /// The actor that asked.
        actor: Aid,
    },
    /// A portal to the root asked for in a child that was not told the root's address
    /// (its parent predates `RuntimeVars::root_addr`).
    #[error("this actor was not told its root's address")]
    NoRootAddr,
}

/// Why an actor's runtime could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// This process was started as a child actor, but its boot is unusable: malformed, or
    /// never taken because plough's startup hook did not run.
    #[error("cannot boot as a child actor: {0}")]
    ChildBoot(String),
    /// The tokio runtime could not be built.
    #[error("cannot build the tokio runtime: {0}")]
    TokioRuntime(String),
    /// Binding the actor's listener failed.
    #[error("cannot listen on {addr}: {detail}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        detail: String,
    },
    /// No socket path could be made for an actor.
    #[error("no socket path for actor {name}: {detail}")]
    SocketPath {
        /// The actor.
        name: String,
        /// Why.
        detail: String,
    },
    /// Something that is not a plough registrar holds the registry address.
    #[error(
        "the registry address {addr} is held by something that is not a plough registrar: {detail}"
    )]
    RegistryAddressTaken {
        /// The registry address.
        addr: String,
        /// What connecting there gave.
        detail: String,
    },
    /// The plough registrar at the registry address refused our proof: it belongs to
    /// another user or another tree.
    #[error(
        "the plough registrar at {addr} belongs to another user or tree: {detail}; give this \
         tree a registry address of its own (`PLOUGH_REGISTRY` or `RuntimeConfig::registry_addr`)"
    )]
    RegistryOfAnotherTree {
        /// The registry address.
        addr: String,
        /// Its refusal.
        detail: String,
    },
    /// The tree's secret could not be had (see [`TreeSecret`](crate::TreeSecret)).
    #[error("cannot get the tree's secret: {0}")]
    Secret(String),
    /// The host's TLS identity ([`RuntimeConfig::tls`](crate::RuntimeConfig::tls)) could
    /// not be loaded.
    #[error("cannot load this host's TLS identity: {0}")]
    Tls(String),
    /// The registrar at the registry address refused our registration.
    #[error("the plough actor at the registry address refused to register us: {detail}")]
    RegistrationRefused {
        /// Its answer.
        detail: String,
    },
    /// This actor has no registrar to ask.
    #[error("actor {actor} is not connected to a registrar")]
    NoRegistrar {
        /// The asking actor.
        actor: Aid,
    },
    /// A spawned child could not connect back to its parent.
    #[error("cannot connect to parent at {addr}: {detail}")]
    ParentUnreachable {
        /// The parent's address.
        addr: String,
        /// Why.
        detail: String,
    },
    /// A spawned child did not get its spawn spec.
    #[error("no spawn spec from the parent: {0}")]
    NoSpawnSpec(String),
    /// An environment variable that chooses an address (`PLOUGH_REGISTRY`) holds
    /// something that is not one.
    #[error("{var}=`{value}` is not a registry address: {detail}")]
    BadRegistryEnv {
        /// The variable.
        var: &'static str,
        /// Its value (lossily as text).
        value: String,
        /// Why it does not parse.
        detail: String,
    },
    /// The runtime directory (sockets, actor markers: `$XDG_RUNTIME_DIR/plough` or
    /// `/tmp/plough-<uid>`) is not private — a symlink, not a directory, another user's, or
    /// writable by others — so nothing of ours is written through it, whatever the
    /// transport.
    #[error("refusing the runtime directory {path}: {detail}")]
    RuntimeDir {
        /// The directory.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// `PLOUGH_SPAWN_METHOD` (or the configuration) names no spawn method.
    #[error(transparent)]
    UnknownSpawnMethod(#[from] super::spawn_method::UnknownSpawnMethod),
}

/// Which bound of a stream's receive buffer an overrun broke
/// ([`ActorError::StreamOverrun`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrunBound {
    /// The buffer held its `limit` messages already.
    Messages {
        /// The receiver's buffer, in messages.
        limit: usize,
    },
    /// A message of `arriving` bytes found `buffered` bytes in the buffer: over its byte
    /// budget of `limit`.
    Bytes {
        /// The receiver's byte budget.
        limit: usize,
        /// What its buffer held.
        buffered: usize,
        /// The size of the refused message's payload.
        arriving: usize,
    },
    /// A message of `arriving` bytes found `buffered` bytes in the buffers of all the
    /// contexts of its connection: over the connection's budget of `limit`
    /// ([`Budgets::stream_buffers`](crate::Budgets::stream_buffers)).
    Connection {
        /// The connection's budget.
        limit: usize,
        /// What the connection's stream buffers held.
        buffered: usize,
        /// The size of the refused message's payload.
        arriving: usize,
    },
    /// The sender's side: the receiver reported the overrun, in these words.
    Reported {
        /// The receiver's account of which bound broke.
        detail: String,
    },
}

impl fmt::Display for OverrunBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverrunBound::Messages { limit } => {
                write!(f, "its buffer of {limit} messages was full")
            }
            OverrunBound::Bytes { limit, buffered, arriving } => write!(
                f,
                "a message of {arriving} bytes would take the {buffered} bytes buffered \
                 over the stream's budget of {limit} bytes"
            ),
            OverrunBound::Connection { limit, buffered, arriving } => write!(
                f,
                "a message of {arriving} bytes would take the {buffered} bytes buffered by \
                 the connection's streams over their budget of {limit} bytes"
            ),
            OverrunBound::Reported { detail } => f.write_str(detail),
        }
    }
}

fn join(errs: &[ActorError]) -> String {
    errs.iter().map(|e| format!("[{e}]")).collect::<Vec<_>>().join(", ")
}

impl From<RemoteActorError> for ActorError {
    fn from(e: RemoteActorError) -> Self {
        ActorError::Remote(Box::new(e))
    }
}

impl ActorError {
    /// A remote handler's error as its own type `T` (see
    /// [`RemoteActorError::downcast_remote`]); `None` for any other error (of a nursery's
    /// several failures, ask each of [`ActorError::failures`]).
    pub fn downcast_remote<T: DeserializeOwned>(&self) -> Option<T> {
        self.as_remote()?.downcast_remote()
    }

    /// A failure of the program's own (see [`ActorError::Other`]): any error, or a
    /// message (`ActorError::other("body gave up")`).
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ActorError::Other(std::sync::Arc::from(e.into()))
    }

    /// The conventional exit code for a program that ends with this error: 130 after
    /// SIGINT, 143 after SIGTERM (128 + the signal's number, as shells report them), 1
    /// otherwise. `std::process::exit(e.exit_code())` ends a service the way its manager
    /// expects.
    pub fn exit_code(&self) -> i32 {
        match self {
            ActorError::Interrupted => 128 + plough_fork_prims::Signal::INT.as_raw(),
            ActorError::Terminated => 128 + plough_fork_prims::Signal::TERM.as_raw(),
            _ => 1,
        }
    }

    /// The kind this error travels home as (a remote error keeps its own).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ActorError::Remote(r) => r.kind,
            ActorError::ContextCancelled { .. } => ErrorKind::Cancelled,
            ActorError::MsgType(_) => ErrorKind::MsgType,
            ActorError::StreamOverrun { .. } => ErrorKind::StreamOverrun,
            ActorError::Lagged { .. } => ErrorKind::Lagged,
            // Sending on a stream the peer closed breaks the context protocol.
            ActorError::StreamClosed { .. } => ErrorKind::ContextMisuse,
            ActorError::ActorTooSlow { .. } => ErrorKind::ActorTooSlow,
            ActorError::TransportClosed { .. } => ErrorKind::TransportClosed,
            ActorError::Spawn(_) => ErrorKind::Spawn,
            ActorError::Multi(_) | ActorError::SupervisorGaveUp { .. } => ErrorKind::Multi,
            ActorError::ActorDied { .. }
            | ActorError::JobPoisoned { .. }
            | ActorError::HostLost { .. } => ErrorKind::ActorDied,
            ActorError::Protocol { .. } => ErrorKind::Protocol,
            ActorError::Encode { .. } => ErrorKind::PayloadEncode,
            ActorError::Interrupted | ActorError::Terminated => ErrorKind::Interrupted,
            ActorError::Misuse(_) => ErrorKind::Misuse,
            ActorError::Setup(_) => ErrorKind::Setup,
            ActorError::Other(_) => ErrorKind::User,
        }
    }

    /// A death as one call saw it: that call was in flight (any other error is returned
    /// as it is).
    pub(crate) fn in_call(self, function: &str, cid: u64) -> Self {
        match self {
            ActorError::ActorDied { actor, status, during, stderr } if during != During::Boot => {
                let during = During::Call { function: function.to_owned(), cid };
                ActorError::ActorDied { actor, status, during, stderr }
            }
            other => other,
        }
    }

    /// The remote error, when this is one.
    pub fn as_remote(&self) -> Option<&RemoteActorError> {
        match self {
            ActorError::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// The failures this error holds: itself, or each member of a [`ActorError::Multi`].
    pub fn failures(&self) -> &[ActorError] {
        match self {
            ActorError::Multi(v) => v,
            other => std::slice::from_ref(other),
        }
    }

    /// Whether this is (only) a cancellation, as opposed to a real failure.
    pub fn is_cancel(&self) -> bool {
        matches!(self, ActorError::ContextCancelled { .. })
            || self.as_remote().is_some_and(RemoteActorError::is_cancel)
    }

    /// Collects several failures: none is one `Ok`, one is itself, several are `Multi`
    /// (nested `Multi`s are flattened). Cancellations are dropped when a real failure is
    /// present: a cancel that a failure caused must not mask it.
    pub fn collect(errors: Vec<ActorError>) -> Option<ActorError> {
        let mut flat = Vec::new();
        for e in errors {
            match e {
                ActorError::Multi(v) => flat.extend(v),
                other => flat.push(other),
            }
        }
        if flat.iter().any(|e| !e.is_cancel()) {
            flat.retain(|e| !e.is_cancel());
        }
        match flat.len() {
            0 => None,
            1 => flat.pop(),
            _ => Some(ActorError::Multi(flat)),
        }
    }
}

/// The wire form of `err` as it leaves actor `me` on its way home: a remote error keeps
/// its source and gains `me` on its relay path; anything else is raised here.
pub(crate) fn relay(err: &ActorError, me: &Aid) -> RemoteActorError {
    let mut e = match err {
        ActorError::Remote(r) => return (**r).clone().relayed_by(me.clone()),
        // A program's own failure is a user error (its type is not known here).
        ActorError::Other(_) => RemoteActorError::user(me.clone(), "Error", err.to_string()),
        other => RemoteActorError::new(me.clone(), other.kind(), other.to_string()),
    };
    match err {
        ActorError::ContextCancelled { canceller } => e.canceller = Some(canceller.clone()),
        ActorError::MsgType(t) => e.type_error = Some(t.into()),
        ActorError::StreamOverrun { sender, .. } => e.overrun_sender = Some(sender.clone()),
        ActorError::Multi(errs) => e.nested = errs.iter().map(|x| relay(x, me)).collect(),
        ActorError::SupervisorGaveUp { exits, .. } => {
            e.nested = exits.iter().filter_map(|x| x.error.as_ref()).map(|x| relay(x, me)).collect()
        }
        _ => {}
    }
    e
}

/// Encodes a value as a payload, as an `ActorError` on failure.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(v: &T) -> Result<Payload, ActorError> {
    Payload::encode(v).map_err(|e| ActorError::Encode { what: "a value", detail: e.to_string() })
}

/// `Result<T, ActorError>`.
pub type Result<T, E = ActorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use plough_ipc_wire::msg::Uuid;

    fn aid(name: &str, pid: u32) -> Aid {
        Aid { name: name.into(), uuid: Uuid([pid as u8; 16]), pid }
    }

    #[test]
    fn remote_errors_name_source_and_relay_path() {
        let e = RemoteActorError::user(aid("leaf", 30), "ValueError", "bad input")
            .relayed_by(aid("branch", 20))
            .relayed_by(aid("trunk", 10));
        assert_eq!(
            e.to_string(),
            "ValueError in actor leaf@30: bad input (relayed via branch@20 -> trunk@10)"
        );
        let back = RemoteActorError::from(e.to_msg(Some(7)));
        assert_eq!(back, e);
        assert_eq!(e.to_msg(Some(7)).cid, Some(7));
    }

    #[test]
    fn collect_keeps_every_failure_and_drops_masking_cancels() {
        let fail = |n: u32| ActorError::from(RemoteActorError::user(aid("w", n), "E", "x"));
        let cancel = ActorError::ContextCancelled { canceller: aid("root", 1) };
        assert!(ActorError::collect(vec![]).is_none());
        assert!(matches!(ActorError::collect(vec![fail(1)]), Some(ActorError::Remote(_))));
        let multi = ActorError::collect(vec![fail(1), cancel.clone(), fail(2)]).unwrap();
        assert_eq!(multi.failures().len(), 2, "{multi}");
        let nested = ActorError::collect(vec![multi, fail(3)]).unwrap();
        assert_eq!(nested.failures().len(), 3);
        assert!(nested.to_string().starts_with("3 actors failed: "));
        // Only cancels: they are the outcome.
        let only = ActorError::collect(vec![cancel.clone(), cancel]).unwrap();
        assert_eq!(only.failures().len(), 2);
    }

    #[test]
    fn spawn_errors_read_well() {
        let e = ActorError::ActorDied {
            actor: aid("w", 3),
            status: ExitStatus::Exited(3),
            during: During::Boot,
            stderr: "boom\n".into(),
        };
        assert_eq!(e.to_string(), "actor w@3 died during boot (exited with code 3): boom");
        let e = ActorError::ActorDied {
            actor: aid("w", 3),
            status: ExitStatus::Signaled { signal: 11, core_dumped: true },
            during: During::Call { function: "work".into(), cid: 5 },
            stderr: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "actor w@3 died during call `work` (cid 5) (killed by SIGSEGV (core dumped))"
        );
        let e = SpawnError::NotImplemented {
            method: "subint_forkserver".into(),
            why: "reserved".into(),
            instead: "main_thread_forkserver".into(),
        };
        assert!(e.to_string().contains("use `main_thread_forkserver`"));
    }

    #[test]
    fn fd_exhaustion_is_its_own_variant_naming_step_and_limit() {
        let emfile = std::io::Error::from_raw_os_error(libc_emfile());
        let e = SpawnError::from_io("w", "pidfd_open", &emfile);
        let SpawnError::OutOfFds { name, step, limit, .. } = &e else { panic!("{e:?}") };
        assert_eq!((name.as_str(), step.as_str()), ("w", "pidfd_open"));
        assert_eq!(*limit, plough_fork_prims::nofile_soft_limit());
        let text = e.to_string();
        assert!(text.contains("out of file descriptors at pidfd_open"), "{text}");
        assert!(text.contains("RLIMIT_NOFILE soft limit"), "{text}");
        let other = SpawnError::from_io("w", "fork", &std::io::Error::from_raw_os_error(11));
        assert!(matches!(other, SpawnError::Os { .. }), "{other:?}");
        assert!(other.to_string().contains("fork: "), "{other}");
    }

    /// `EMFILE` (24 on every Linux architecture).
    fn libc_emfile() -> i32 {
        24
    }

    #[test]
    fn every_error_travels_home_with_its_kind() {
        let me = aid("branch", 20);
        let cases: Vec<(ActorError, ErrorKind)> = vec![
            (ActorError::ContextCancelled { canceller: aid("root", 1) }, ErrorKind::Cancelled),
            (
                ActorError::StreamOverrun {
                    sender: aid("w", 3),
                    receiver: me.clone(),
                    bound: Box::new(OverrunBound::Messages { limit: 64 }),
                },
                ErrorKind::StreamOverrun,
            ),
            (
                ActorError::ActorDied {
                    actor: aid("w", 3),
                    status: ExitStatus::Exited(1),
                    during: During::Idle,
                    stderr: String::new(),
                },
                ErrorKind::ActorDied,
            ),
            (Misuse::SendAfterClose.into(), ErrorKind::Misuse),
            (
                ActorError::StreamClosed { function: "f".into(), by: aid("w", 3) },
                ErrorKind::ContextMisuse,
            ),
            (SetupError::NoRegistrar { actor: me.clone() }.into(), ErrorKind::Setup),
            (ActorError::Interrupted, ErrorKind::Interrupted),
            (ActorError::other("mine"), ErrorKind::User),
            (ActorError::Protocol { peer: "p".into(), detail: "d".into() }, ErrorKind::Protocol),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            let wire = relay(&err, &me);
            assert_eq!(wire.kind, kind, "{err}");
            assert_eq!(wire.source, me);
            assert_eq!(wire.message, err.to_string());
            let back = RemoteActorError::from(wire.to_msg(Some(1)));
            assert_eq!(back, wire, "the kind survives the wire");
        }
        let cancel = relay(&ActorError::ContextCancelled { canceller: aid("root", 1) }, &me);
        assert_eq!(cancel.canceller, Some(aid("root", 1)));
        assert!(cancel.is_cancel() && ActorError::from(cancel).is_cancel());
        let overrun = relay(
            &ActorError::StreamOverrun {
                sender: aid("w", 3),
                receiver: me.clone(),
                bound: Box::new(OverrunBound::Bytes { limit: 16, buffered: 10, arriving: 7 }),
            },
            &me,
        );
        assert_eq!(overrun.overrun_sender, Some(aid("w", 3)));
        // A remote error keeps its source and kind, and gains the hop.
        let leaf = RemoteActorError::new(aid("leaf", 30), ErrorKind::Panic, "boom");
        let relayed = relay(&ActorError::from(leaf.clone()), &me);
        assert_eq!(
            (relayed.kind, &relayed.source, &relayed.relay_path[..]),
            (ErrorKind::Panic, &leaf.source, &[me.clone()][..])
        );
        // A multi-error relays each member with its own kind.
        let multi = ActorError::Multi(vec![leaf.into(), ActorError::Interrupted]);
        let wire = relay(&multi, &me);
        assert_eq!(wire.kind, ErrorKind::Multi);
        assert_eq!(
            wire.nested.iter().map(|n| n.kind).collect::<Vec<_>>(),
            [ErrorKind::Panic, ErrorKind::Interrupted]
        );
    }

    #[test]
    fn a_user_error_keeps_its_type_name_a_runtime_kind_gets_its_own() {
        let u = RemoteActorError::user(aid("w", 3), "ParseIntError", "bad digit");
        assert_eq!((u.kind, u.type_name.as_str()), (ErrorKind::User, "ParseIntError"));
        let r = RemoteActorError::new(aid("w", 3), ErrorKind::NoSuchFunction, "no `mul`");
        assert_eq!(r.type_name, "NoSuchFunction");
        let other = relay(&ActorError::other(std::io::Error::other("disk full")), &aid("w", 3));
        assert_eq!((other.kind, other.message.as_str()), (ErrorKind::User, "disk full"));
    }
}
