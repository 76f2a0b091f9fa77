//! The handler registry: the functions an actor serves, by name.
//!
//! Children run the same binary as their parent (forked, or exec'd in child mode), and
//! the program builds its [`Registry`] the same way in every process, so a name means the
//! same function everywhere. Handlers are typed at registration; the registry erases them
//! to `payload -> payload` so the runtime can dispatch a `Start` message by name.
//!
//! What a caller can get wrong arrives as a remote error, never as a local panic of the
//! serving actor: an unknown name (the error lists what is registered), arguments of the
//! wrong type (a `MsgTypeError` naming the expected type and what arrived), a handler that
//! returns `Err` (its type name and message), a handler that panics (`Panic` and the
//! message).

use super::cx::Cx;
use super::error_types::ErrorTypes;
use crate::base::budgets::Budgets;
use crate::base::dump::{TaskGuard, TaskKind};
use crate::base::error::{ActorError, RemoteActorError, relay};
use crate::base::names;
use crate::calls::context::Context;
use crate::calls::stream::StreamConfig;
use crate::calls::types::MsgTypes;
use futures::FutureExt;
use futures::future::BoxFuture;
use plough_ipc_wire::msg::{Aid, CallKind, ErrorKind, MsgKind};
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

type Erased = Arc<
    dyn Fn(Cx, Payload, Arc<ErrorTypes>) -> BoxFuture<'static, Result<Payload, RemoteActorError>>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct Entry {
    kind: CallKind,
    call: Erased,
    args_type: &'static str,
    /// What a context function declared it sends.
    types: MsgTypes,
    /// The cleanup budget it declared ([`Registry::cleanup`]); `None`: its kind's default.
    cleanup: Option<Duration>,
}

/// The functions an actor serves. Build it the same way in every process of the program.
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    /// The error types that travel as themselves ([`Registry::error_type`]).
    errors: Arc<ErrorTypes>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, e) in &self.entries {
            m.entry(name, &format_args!("{:?}({})", e.kind, e.args_type));
        }
        m.finish()
    }
}

/// The short name of a type: `core::num::ParseIntError` → `ParseIntError`,
/// `alloc::string::String` → `String` (generic arguments are kept as written).
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let head = full.split('<').next().unwrap_or(full);
    let short = head.rsplit("::").next().unwrap_or(head);
    format!("{short}{}", &full[head.len()..])
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a plain RPC function `args -> Result<result, error>` under `name`.
    ///
    /// The error type only needs `Display`: it travels as its short type name and message.
    ///
    /// # Panics
    ///
    /// When `name` is already registered (a programming error: every process builds the
    /// same registry) or is reserved (starts with `plough.`).
    pub fn func<A, R, E, F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(Cx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let name = user_name(name);
        let f = Arc::new(f);
        let call = plain(&name, move |cx, args, errors| {
            let f = Arc::clone(&f);
            async move {
                // Shared: the identity is copied only into an error.
                let me = Arc::clone(cx.actor_shared());
                let args: A = decode_args(&me, &args)?;
                let out = std::panic::AssertUnwindSafe(f(cx, args)).catch_unwind().await;
                finish(&me, out, &errors)
            }
        });
        self.insert::<A>(name, CallKind::Function, call)
    }

    /// Registers a function under `name` whose argument and result are raw bytes: neither
    /// is encoded, so a large buffer is not copied into or out of a codec on its way (a
    /// payload at or above [`Budgets::shm_threshold`] still travels through shared memory,
    /// and then arrives as the mapping). Call it with
    /// [`Portal::run_bytes`](crate::Portal::run_bytes). Errors, panics and cancellation are
    /// as for [`Registry::func`].
    ///
    /// # Panics
    ///
    /// As [`Registry::func`].
    pub fn func_bytes<E, F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        E: fmt::Display + Send + 'static,
        F: Fn(Cx, bytes::Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bytes::Bytes, E>> + Send + 'static,
    {
        let name = user_name(name);
        let f = Arc::new(f);
        let call = plain(&name, move |cx, args: Payload, errors| {
            let f = Arc::clone(&f);
            async move {
                let me = Arc::clone(cx.actor_shared());
                let out =
                    std::panic::AssertUnwindSafe(f(cx, args.into_bytes())).catch_unwind().await;
                finish_with(&me, out, &errors, |bytes| Ok(Payload::from(bytes)))
            }
        });
        self.insert::<bytes::Bytes>(name, CallKind::Function, call)
    }

    /// Registers a context function under `name`: it receives its side of the
    /// [`Context`] and its arguments, calls `started` exactly
    /// once, may open a stream, and returns a result. Open it with
    /// [`Portal::open_context`](crate::Portal::open_context).
    ///
    /// A function that returns `Ok` without having called `started` is an error at the
    /// parent (`ContextError`).
    ///
    /// # Panics
    ///
    /// As [`Registry::func`].
    pub fn context<A, R, E, F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let name = user_name(name);
        let f = Arc::new(f);
        let fname = name.clone();
        let call: Erased = Arc::new(move |cx: Cx, args: Payload, errors: Arc<ErrorTypes>| {
            let f = Arc::clone(&f);
            let fname = fname.clone();
            async move {
                let me = cx.actor().clone();
                let ctx = served_context(&cx, &fname)?;
                let args: A = decode_args(&me, &args)?;
                let out = std::panic::AssertUnwindSafe(f(ctx.clone(), args)).catch_unwind().await;
                if let Ok(Ok(value)) = &out
                    && let Err(e) = ctx.check_type(MsgKind::Return, value)
                {
                    return Err(relay(&e, &me));
                }
                let started = ctx.was_started();
                // Cancelled before `started` (by itself or its parent): the outcome is that
                // cancel, which serving reports naming the canceller — not a misuse.
                let cancelled = ctx.is_cancelled();
                drop(ctx);
                match finish(&me, out, &errors) {
                    Ok(_) if !started && !cancelled => Err(RemoteActorError::new(
                        me,
                        ErrorKind::ContextMisuse,
                        format!("context function `{fname}` returned without calling `started`"),
                    )),
                    other => other,
                }
            }
            .boxed()
        });
        self.insert::<A>(name, CallKind::Context, call)
    }

    /// Registers a one-way stream function under `name` (tractor's `open_stream_from`): it
    /// returns a [`futures::Stream`] of values that the parent receives, in order, through
    /// [`Portal::open_stream_from`](crate::Portal::open_stream_from). The first
    /// `Err` item ends the stream and is the parent's error.
    ///
    /// A stream function is paced by its consumer: it sends with backpressure, so a slow
    /// parent never makes it overrun and nothing is dropped.
    ///
    /// # Panics
    ///
    /// As [`Registry::func`].
    pub fn stream<A, T, E, F, S>(self, name: impl Into<String>, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(Cx, A) -> S + Send + Sync + 'static,
        S: futures::Stream<Item = Result<T, E>> + Send + 'static,
    {
        use futures::StreamExt;
        let name = user_name(name);
        let f = Arc::new(f);
        let fname = name.clone();
        let call: Erased = Arc::new(move |cx: Cx, args: Payload, errors: Arc<ErrorTypes>| {
            let f = Arc::clone(&f);
            let fname = fname.clone();
            async move {
                let me = cx.actor().clone();
                let ctx = served_context(&cx, &fname)?;
                let args: A = decode_args(&me, &args)?;
                let run = async {
                    let relayed = |e: ActorError| relay(&e, &me);
                    ctx.started(&()).await.map_err(relayed)?;
                    let stream = ctx
                        .open_stream_with(StreamConfig::backpressure())
                        .await
                        .map_err(relayed)?;
                    let items = f(cx, args);
                    futures::pin_mut!(items);
                    while let Some(item) = items.next().await {
                        match item {
                            Ok(v) => {
                                let p = Payload::encode(&v).map_err(|e| {
                                    RemoteActorError::new(
                                        me.clone(),
                                        ErrorKind::PayloadEncode,
                                        e.to_string(),
                                    )
                                })?;
                                stream.send_payload(p).await.map_err(relayed)?;
                            }
                            Err(e) => return Err(user_error(&me, e, &errors)),
                        }
                    }
                    stream.close().await.map_err(relayed)?;
                    Ok(Payload::encode(&()).expect("unit encodes"))
                };
                match std::panic::AssertUnwindSafe(run).catch_unwind().await {
                    Ok(r) => r,
                    Err(panic) => {
                        Err(RemoteActorError::new(me, ErrorKind::Panic, panic_message(&*panic)))
                    }
                }
            }
            .boxed()
        });
        self.insert::<A>(name, CallKind::Stream, call)
    }

    /// Registers error type `E` to travel as itself (tractor's `reg_err_types`): a
    /// handler of this registry that fails with an `E` sends its value home too, and the
    /// caller gets it back with [`ActorError::downcast_remote`] (through any relay: an `E`
    /// raised in a grandchild and returned by its parent's handler reaches the root as an
    /// `E`), also when a handler that returns `ActorError` wraps it
    /// ([`ActorError::other`]). The error still travels with its short type name, message
    /// and backtrace, which is all an unregistered type sends.
    ///
    /// Register it in the process that raises it (every process builds the same
    /// registry); the caller's `downcast_remote::<E>()` matches it by its full type path.
    pub fn error_type<E>(mut self) -> Self
    where
        E: Serialize + DeserializeOwned + std::error::Error + 'static,
    {
        Arc::make_mut(&mut self.errors).register::<E>();
        self
    }

    /// Adds an erased handler of `kind` taking `A`.
    fn insert<A>(mut self, name: String, kind: CallKind, call: Erased) -> Self {
        let entry = Entry {
            kind,
            call,
            args_type: std::any::type_name::<A>(),
            types: MsgTypes::default(),
            cleanup: None,
        };
        if self.entries.insert(name.clone(), entry).is_some() {
            panic!("handler `{name}` registered twice");
        }
        self
    }

    /// Declares the payload types context (or stream) function `name` sends: a value of
    /// another type fails with `MsgTypeError` in the child, before it is sent (see
    /// [`MsgTypes`]).
    ///
    /// # Panics
    ///
    /// When `name` is not registered yet.
    pub fn declare(mut self, name: &str, types: MsgTypes) -> Self {
        match self.entries.get_mut(name) {
            Some(e) => e.types = types,
            None => panic!("cannot declare types for `{name}`: register it first"),
        }
        self
    }

    /// Declares the cleanup budget of function `name`: once its call is cancelled, how
    /// long it may still run to finish its own cleanup. An error it raises within the
    /// budget is what its caller gets, never "cancelled"; one that returns `Ok` (or a
    /// cancel error) within it, or is still running at its end (then it is dropped), is
    /// answered as cancelled.
    ///
    /// Without a declaration, context and stream functions get [`Budgets::cleanup`]
    /// (1.5 s by default) and plain functions [`Budgets::FUNCTION_CLEANUP`] (zero: dropped
    /// at once — a plain function learns of its cancel only by selecting on
    /// [`Cx::cancelled`], so one that does declares what its cleanup needs).
    ///
    /// Whatever the budget, a call with nurseries open gets [`Budgets::served_calls`] to
    /// take their children down. A budget is capped at the ladder's
    /// [`total`](crate::LadderConfig::total), so the answer leaves before an exiting actor
    /// stops waiting for its calls (`served_calls`). When the parent cancels the whole
    /// actor, its ladder waits `ack_timeout + exit_timeout` (2 s by default) before it
    /// sends SIGTERM: a longer cleanup answers only when the call alone was cancelled.
    ///
    /// # Panics
    ///
    /// When `name` is not registered yet.
    pub fn cleanup(mut self, name: &str, budget: Duration) -> Self {
        match self.entries.get_mut(name) {
            Some(e) => e.cleanup = Some(budget),
            None => panic!("cannot declare a cleanup budget for `{name}`: register it first"),
        }
        self
    }

    /// How long a cancelled call of `name` may still run (see [`Registry::cleanup`]): what
    /// it declared, or its kind's default, at most the ladder's total. Zero for an unknown
    /// name.
    pub(crate) fn cleanup_budget(&self, name: &str, budgets: &Budgets) -> Duration {
        let budget = match self.entries.get(name) {
            Some(Entry { cleanup: Some(d), .. }) => *d,
            Some(Entry { kind: CallKind::Context | CallKind::Stream, .. }) => budgets.cleanup,
            Some(_) | None => Budgets::FUNCTION_CLEANUP,
        };
        budget.min(budgets.ladder.total())
    }

    /// The types `name` declared it sends.
    pub(crate) fn types(&self, name: &str) -> MsgTypes {
        self.entries.get(name).map(|e| e.types.clone()).unwrap_or_default()
    }

    /// The names registered, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The kind `name` was registered as.
    pub fn kind(&self, name: &str) -> Option<CallKind> {
        self.entries.get(name).map(|e| e.kind)
    }

    /// Starts serving a call: the future of its result payload.
    ///
    /// # Errors
    ///
    /// An unknown `function` is a `NoSuchFunction` remote error naming the function, the
    /// actor and what it does serve.
    pub(crate) fn call(
        &self,
        function: &str,
        cx: Cx,
        args: Payload,
    ) -> Result<BoxFuture<'static, Result<Payload, RemoteActorError>>, Box<RemoteActorError>> {
        match self.entries.get(function) {
            Some(e) => Ok((e.call)(cx, args, Arc::clone(&self.errors))),
            None => {
                let served: Vec<&str> = self.names().collect();
                Err(Box::new(RemoteActorError::new(
                    cx.actor().clone(),
                    ErrorKind::NoSuchFunction,
                    format!(
                        "actor {} has no function `{function}` (it serves: {})",
                        cx.actor(),
                        if served.is_empty() { "nothing".to_owned() } else { served.join(", ") }
                    ),
                )))
            }
        }
    }
}

/// A handler name a user may register (`plough.` names are the runtime's).
fn user_name(name: impl Into<String>) -> String {
    let name = name.into();
    assert!(!names::is_reserved(&name), "handler name `{name}` is reserved for the runtime");
    name
}

/// The context of a served context or stream function (the runtime always sets it: the
/// call's kind was checked against the registration).
#[allow(clippy::result_large_err)]
fn served_context(cx: &Cx, fname: &str) -> Result<Context, RemoteActorError> {
    cx.context().cloned().ok_or_else(|| {
        RemoteActorError::new(
            cx.actor().clone(),
            ErrorKind::ContextMisuse,
            format!("`{fname}` was not opened as a context"),
        )
    })
}

// The erased handlers' result type; boxing here would only move the allocation.
#[allow(clippy::result_large_err)]
fn decode_args<A: DeserializeOwned>(me: &Aid, args: &Payload) -> Result<A, RemoteActorError> {
    args.decode().map_err(|e| {
        let mut err = RemoteActorError::new(me.clone(), ErrorKind::MsgType, e.to_string());
        err.type_error = Some((&e).into());
        err
    })
}

/// A handler's error as it travels: a runtime error passing through keeps its source and
/// gains this hop; anything else is raised here under its short type name, with its value
/// when its type is registered ([`Registry::error_type`]).
fn user_error<E: fmt::Display + 'static>(me: &Aid, e: E, errors: &ErrorTypes) -> RemoteActorError {
    let ae = (&e as &dyn std::any::Any).downcast_ref::<ActorError>();
    // `ActorError::other(MyError)`: a registered type still travels as itself.
    if let Some(ActorError::Other(inner)) = ae
        && let Some((name, value)) = errors.wrapped(&**inner)
    {
        let mut err = RemoteActorError::user(me.clone(), name, inner.to_string());
        err.value = Some(value);
        return err;
    }
    match ae {
        Some(ae) => relay(ae, me),
        None => {
            let mut err = RemoteActorError::user(me.clone(), short_type_name::<E>(), e.to_string());
            err.value = errors.value_of(&e);
            err
        }
    }
}

/// The erased form of a plain function whose call `run` turns into its result; the
/// call is listed in SIGUSR1 dumps while it runs.
fn plain<F, Fut>(function: &str, run: F) -> Erased
where
    F: Fn(Cx, Payload, Arc<ErrorTypes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Payload, RemoteActorError>> + Send + 'static,
{
    let function: Arc<str> = Arc::from(function);
    Arc::new(move |cx: Cx, args: Payload, errors: Arc<ErrorTypes>| {
        let task = TaskGuard::new(
            TaskKind::Serving,
            cx.cid(),
            Arc::clone(cx.caller_shared()),
            Arc::clone(&function),
            "running",
        );
        let fut = run(cx, args, errors);
        async move {
            let _task = task;
            fut.await
        }
        .boxed()
    })
}

/// The payload (or error) a handler's outcome sends home.
#[allow(clippy::result_large_err)]
fn finish<R: Serialize, E: fmt::Display + 'static>(
    me: &Aid,
    out: std::thread::Result<Result<R, E>>,
    errors: &ErrorTypes,
) -> Result<Payload, RemoteActorError> {
    finish_with(me, out, errors, |value| Payload::encode(&value))
}

/// [`finish`] with the value made a payload by `encode`.
#[allow(clippy::result_large_err)]
fn finish_with<R, E: fmt::Display + 'static>(
    me: &Aid,
    out: std::thread::Result<Result<R, E>>,
    errors: &ErrorTypes,
    encode: impl FnOnce(R) -> Result<Payload, plough_ipc_wire::payload::PayloadEncodeError>,
) -> Result<Payload, RemoteActorError> {
    match out {
        Ok(Ok(value)) => encode(value).map_err(|e| {
            RemoteActorError::new(me.clone(), ErrorKind::PayloadEncode, e.to_string())
        }),
        Ok(Err(e)) => Err(user_error(me, e, errors)),
        Err(panic) => {
            Err(RemoteActorError::new(me.clone(), ErrorKind::Panic, panic_message(&*panic)))
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plough_ipc_wire::msg::Uuid;
    use tokio_util::sync::CancellationToken;

    fn cx() -> Cx {
        let me = Aid { name: "adder".into(), uuid: Uuid([1; 16]), pid: 42 };
        let caller = Aid { name: "root".into(), uuid: Uuid([2; 16]), pid: 1 };
        Cx::new(me, caller, 7, CancellationToken::new())
    }

    async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<i64, std::num::ParseIntError> {
        Ok(a + b)
    }

    async fn parse(_cx: Cx, s: String) -> Result<i64, std::num::ParseIntError> {
        s.parse()
    }

    async fn explode(_cx: Cx, _: ()) -> Result<(), String> {
        panic!("kaboom")
    }

    fn registry() -> Registry {
        Registry::new().func("add", add).func("parse", parse).func("explode", explode)
    }

    #[tokio::test]
    async fn calls_decode_args_and_encode_results() {
        let r = registry();
        let out =
            r.call("add", cx(), Payload::encode(&(2i64, 40i64)).unwrap()).unwrap().await.unwrap();
        assert_eq!(out.decode::<i64>().unwrap(), 42);
        assert_eq!(r.kind("add"), Some(CallKind::Function));
        assert_eq!(r.names().collect::<Vec<_>>(), ["add", "explode", "parse"]);
    }

    #[tokio::test]
    async fn handler_errors_carry_type_name_message_and_source() {
        let r = registry();
        let err = r.call("parse", cx(), Payload::encode("x1").unwrap()).unwrap().await.unwrap_err();
        assert_eq!(err.type_name, "ParseIntError");
        assert_eq!(err.message, "invalid digit found in string");
        assert_eq!(err.source.to_string(), "adder@42");
    }

    #[tokio::test]
    async fn bad_arguments_are_a_remote_type_error() {
        let r = registry();
        let err =
            r.call("add", cx(), Payload::encode("not a pair").unwrap()).unwrap().await.unwrap_err();
        assert_eq!(err.type_name, "MsgTypeError");
        let te = err.type_error.expect("type error details");
        assert!(te.expected_type.contains("i64"), "{te:?}");
        assert!(te.rendering.contains("not a pair"), "{te:?}");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_remote_error() {
        let err = registry()
            .call("explode", cx(), Payload::encode(&()).unwrap())
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!((err.type_name.as_str(), err.message.as_str()), ("Panic", "kaboom"));
    }

    #[test]
    fn unknown_functions_name_the_function_and_the_actor() {
        let err = match registry().call("mul", cx(), Payload::empty()) {
            Err(e) => e,
            Ok(_) => panic!("mul is not registered"),
        };
        assert_eq!(err.type_name, "NoSuchFunction");
        assert_eq!(
            err.message,
            "actor adder@42 has no function `mul` (it serves: add, explode, parse)"
        );
    }

    #[test]
    #[should_panic(expected = "handler `add` registered twice")]
    fn duplicate_names_panic_at_build_time() {
        let _ = Registry::new().func("add", add).func("add", add);
    }

    async fn ctx_fn(ctx: Context, _: ()) -> Result<(), String> {
        ctx.started(&()).await.map_err(|e| e.to_string())
    }

    fn numbers(_cx: Cx, _: ()) -> impl futures::Stream<Item = Result<u8, String>> {
        futures::stream::empty()
    }

    fn with_every_kind() -> Registry {
        registry().context("ctx", ctx_fn).stream("numbers", numbers)
    }

    #[test]
    fn cleanup_budgets_default_by_kind() {
        let b = Budgets::default();
        let r = with_every_kind();
        assert_eq!(r.cleanup_budget("add", &b), Budgets::FUNCTION_CLEANUP);
        assert_eq!(r.cleanup_budget("ctx", &b), b.cleanup);
        assert_eq!(r.cleanup_budget("numbers", &b), b.cleanup);
        assert_eq!(r.cleanup_budget("mul", &b), Duration::ZERO, "unknown");
        // The default follows the runtime's budgets.
        let short = Budgets { cleanup: Duration::from_millis(30), ..b };
        assert_eq!(r.cleanup_budget("ctx", &short), Duration::from_millis(30));
        assert_eq!(r.cleanup_budget("add", &short), Duration::ZERO);
    }

    #[test]
    fn a_declared_cleanup_budget_is_per_function_and_the_last_declaration_wins() {
        let b = Budgets::default();
        let ms = Duration::from_millis;
        let r = with_every_kind()
            .cleanup("add", ms(300))
            .cleanup("ctx", ms(200))
            .cleanup("ctx", ms(100))
            .cleanup("numbers", Duration::ZERO);
        assert_eq!(r.cleanup_budget("add", &b), ms(300));
        assert_eq!(r.cleanup_budget("ctx", &b), ms(100));
        assert_eq!(r.cleanup_budget("numbers", &b), Duration::ZERO, "zero is a budget too");
        assert_eq!(r.cleanup_budget("parse", &b), Budgets::FUNCTION_CLEANUP, "undeclared");
        // A declaration does not depend on the runtime's default, and survives a clone.
        let other = Budgets { cleanup: ms(1), ..b };
        assert_eq!(r.clone().cleanup_budget("ctx", &other), ms(100));
    }

    #[test]
    fn cleanup_budgets_are_capped_at_the_ladder_total() {
        let b = Budgets::default();
        let r = with_every_kind().cleanup("add", Duration::from_secs(3600));
        assert_eq!(r.cleanup_budget("add", &b), b.ladder.total());
        assert!(r.cleanup_budget("add", &b) < b.served_calls());
        let huge = Budgets { cleanup: Duration::from_secs(3600), ..b };
        assert_eq!(r.cleanup_budget("ctx", &huge), b.ladder.total());
    }

    #[test]
    #[should_panic(expected = "cannot declare a cleanup budget for `mul`: register it first")]
    fn a_cleanup_budget_for_an_unregistered_name_panics() {
        let _ = registry().cleanup("mul", Duration::from_secs(1));
    }

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name::<std::num::ParseIntError>(), "ParseIntError");
        assert_eq!(short_type_name::<String>(), "String");
        assert_eq!(short_type_name::<Vec<u8>>(), "Vec<u8>");
    }
}
