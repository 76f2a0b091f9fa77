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

use crate::error::RemoteActorError;
use futures::FutureExt;
use futures::future::BoxFuture;
use plough_ipc_wire::msg::{Aid, CallKind, Cid};
use plough_ipc_wire::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a handler knows about the call it serves.
#[derive(Debug, Clone)]
pub struct Cx {
    actor: Aid,
    caller: Aid,
    cid: Cid,
    cancel: CancellationToken,
    runtime: Option<crate::actor::Actor>,
    /// Nurseries open in this call: while any is, a cancelled call is given time to take
    /// its children down and report their real failures.
    open_nurseries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Cx {
    /// A call context (the runtime builds these; public for tests of handlers).
    pub fn new(actor: Aid, caller: Aid, cid: Cid, cancel: CancellationToken) -> Self {
        Cx { actor, caller, cid, cancel, runtime: None, open_nurseries: Default::default() }
    }

    pub(crate) fn with_actor(mut self, actor: crate::actor::Actor) -> Self {
        self.runtime = Some(actor);
        self
    }

    /// The actor runtime serving this call: open nurseries, find other actors.
    ///
    /// # Panics
    ///
    /// On a `Cx` built by hand (`Cx::new`) for a unit test, which has no runtime.
    pub fn runtime(&self) -> &crate::actor::Actor {
        self.runtime.as_ref().expect("this Cx was built by hand and has no actor runtime")
    }

    /// Opens a nursery in the serving actor; see [`crate::actor::Actor::nursery`].
    ///
    /// # Errors
    ///
    /// As [`crate::actor::Actor::nursery`].
    pub async fn nursery<T, F, Fut>(&self, body: F) -> crate::Result<T>
    where
        F: FnOnce(crate::nursery::Nursery) -> Fut,
        Fut: Future<Output = crate::Result<T>>,
    {
        let actor = self.runtime().clone();
        crate::nursery::Nursery::run(actor, &self.cancel, Some(self.open_nurseries.clone()), body)
            .await
    }

    /// How many nurseries are open in this call right now.
    pub(crate) fn open_nurseries(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.open_nurseries.clone()
    }
    /// The actor serving the call.
    pub fn actor(&self) -> &Aid {
        &self.actor
    }
    /// The actor that called.
    pub fn caller(&self) -> &Aid {
        &self.caller
    }
    /// The call id.
    pub fn cid(&self) -> Cid {
        self.cid
    }
    /// Resolves when the call is cancelled (by the caller, or because the actor is
    /// shutting down). Handlers that loop or wait should `select!` on it.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
    /// Whether the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

type Erased =
    Arc<dyn Fn(Cx, Payload) -> BoxFuture<'static, Result<Payload, RemoteActorError>> + Send + Sync>;

#[derive(Clone)]
struct Entry {
    kind: CallKind,
    call: Erased,
    args_type: &'static str,
}

/// The functions an actor serves. Build it the same way in every process of the program.
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
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
pub fn short_type_name<T: ?Sized>() -> String {
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
    pub fn func<A, R, E, F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(Cx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let name = name.into();
        assert!(!name.starts_with("plough."), "handler name `{name}` is reserved for the runtime");
        let f = Arc::new(f);
        let call: Erased = Arc::new(move |cx: Cx, args: Payload| {
            let f = Arc::clone(&f);
            async move {
                let me = cx.actor().clone();
                let args: A = args.decode().map_err(|e| {
                    let mut err = RemoteActorError::new(me.clone(), "MsgTypeError", e.to_string());
                    err.type_error = Some((&e).into());
                    err
                })?;
                let out = std::panic::AssertUnwindSafe(f(cx, args)).catch_unwind().await;
                match out {
                    Ok(Ok(value)) => Payload::encode(&value).map_err(|e| {
                        RemoteActorError::new(me, "PayloadEncodeError", e.to_string())
                    }),
                    Ok(Err(e)) => {
                        Err(match (&e as &dyn std::any::Any).downcast_ref::<crate::ActorError>() {
                            // A runtime error passing through: keep its source, add this hop.
                            Some(ae) => crate::error::relay(ae, &me),
                            None => {
                                RemoteActorError::new(me, short_type_name::<E>(), e.to_string())
                            }
                        })
                    }
                    Err(panic) => Err(RemoteActorError::new(me, "Panic", panic_message(&*panic))),
                }
            }
            .boxed()
        });
        let entry = Entry { kind: CallKind::Function, call, args_type: std::any::type_name::<A>() };
        if self.entries.insert(name.clone(), entry).is_some() {
            panic!("handler `{name}` registered twice");
        }
        self
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
    pub fn call(
        &self,
        function: &str,
        cx: Cx,
        args: Payload,
    ) -> Result<BoxFuture<'static, Result<Payload, RemoteActorError>>, Box<RemoteActorError>> {
        match self.entries.get(function) {
            Some(e) => Ok((e.call)(cx, args)),
            None => {
                let served: Vec<&str> = self.names().collect();
                Err(Box::new(RemoteActorError::new(
                    cx.actor().clone(),
                    "NoSuchFunction",
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

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
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

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name::<std::num::ParseIntError>(), "ParseIntError");
        assert_eq!(short_type_name::<String>(), "String");
        assert_eq!(short_type_name::<Vec<u8>>(), "Vec<u8>");
    }
}
