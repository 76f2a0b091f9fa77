//! Typed handles: a function, context or stream function declared once as a typed value
//! (its name and the types of everything that crosses the wire), registered with it and
//! called with it, so that a call with the wrong argument or result type does not compile.
//!
//! The string API ([`Portal::run`], [`Portal::open_context`],
//! [`Registry::func`](crate::Registry::func)…) stays the low level: a handle is only a
//! name with types attached, so both ends of a call may use either. What a handle adds is
//! the compiler's check, at both ends, that they agree.
//!
//! See [`Func`] for an example, and what the compiler refuses.

use super::context::{Context, Outcome};
use super::fan_out::FanOut;
use super::portal::Portal;
use super::stream::{MsgStream, StreamConfig};
use crate::base::error::{ActorError, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;

/// `PhantomData` of a function type: a handle is `Send + Sync + Copy` whatever its types,
/// and holds no value of them.
type Types<T> = PhantomData<fn() -> T>;

macro_rules! handle_impls {
    ($name:ident < $($t:ident),* >) => {
        impl<$($t),*> $name<$($t),*> {
            /// A handle for the function registered under `name`.
            pub const fn new(name: &'static str) -> Self {
                $name { name, types: PhantomData }
            }

            /// The name it is registered under.
            pub const fn name(&self) -> &'static str {
                self.name
            }
        }

        impl<$($t),*> Clone for $name<$($t),*> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<$($t),*> Copy for $name<$($t),*> {}

        impl<$($t),*> fmt::Debug for $name<$($t),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.name).finish()
            }
        }
    };
}

/// A plain function `A -> R`, by name: register it with
/// [`Registry::typed`](crate::Registry::typed), call it with [`Portal::call`] (or
/// [`Nursery::run_typed`](crate::Nursery::run_typed)).
///
/// ```
/// use plough_actor_core::{Cx, Func, Portal, Registry};
/// use std::convert::Infallible;
///
/// const ADD: Func<(i64, i64), i64> = Func::new("add");
///
/// async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<i64, Infallible> {
///     Ok(a + b)
/// }
///
/// let registry = Registry::new().typed(ADD, add);
/// async fn sum(portal: &Portal) -> plough_actor_core::Result<i64> {
///     portal.call(ADD, (1, 2)).await
/// }
/// # let _ = (registry, sum);
/// ```
///
/// A handler whose signature does not match the handle is refused at registration:
///
/// ```compile_fail,E0271
/// use plough_actor_core::{Cx, Func, Registry};
/// const ADD: Func<(i64, i64), i64> = Func::new("add");
/// // Returns a `String`, not the declared `i64`.
/// async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<String, std::convert::Infallible> {
///     Ok((a + b).to_string())
/// }
/// let _ = Registry::new().typed(ADD, add);
/// ```
///
/// A call with arguments of another type is refused:
///
/// ```compile_fail,E0308
/// use plough_actor_core::{Func, Portal};
/// const ADD: Func<(i64, i64), i64> = Func::new("add");
/// async fn call(portal: &Portal) {
///     let _ = portal.call(ADD, ("1", "2")).await; // not `(i64, i64)`
/// }
/// ```
///
/// And so is a result of another type:
///
/// ```compile_fail,E0308
/// use plough_actor_core::{Func, Portal};
/// const ADD: Func<(i64, i64), i64> = Func::new("add");
/// async fn call(portal: &Portal) {
///     let _sum: String = portal.call(ADD, (1, 2)).await.unwrap(); // the result is an `i64`
/// }
/// ```
///
/// A context's handle types its stream in both directions; a parent that sends what the
/// child does not receive is refused:
///
/// ```compile_fail,E0308
/// use plough_actor_core::{ContextFn, Portal};
/// // args (), started u32, the child sends String and receives u64, returns ().
/// const ECHO: ContextFn<(), u32, String, u64, ()> = ContextFn::new("echo");
/// async fn parent(portal: &Portal) -> plough_actor_core::Result<()> {
///     let (ctx, _first) = portal.open(ECHO, ()).await?;
///     let stream = ctx.open_stream().await?;
///     stream.send(&"hello".to_owned()).await // the child receives `u64`
/// }
/// ```
///
/// A context function whose side of the context does not match its handle is refused
/// too (here its stream would send `u64`s where the handle says `String`s):
///
/// ```compile_fail,E0631
/// use plough_actor_core::{ActorError, ContextFn, Registry, ServedContext};
/// const ECHO: ContextFn<(), u32, String, u64, ()> = ContextFn::new("echo");
/// async fn echo(ctx: ServedContext<u32, u64, u64>, (): ()) -> Result<(), ActorError> {
///     ctx.started(&1).await
/// }
/// let _ = Registry::new().typed_context(ECHO, echo);
/// ```
pub struct Func<A, R> {
    name: &'static str,
    types: Types<(A, R)>,
}
handle_impls!(Func<A, R>);

/// A context function, by name, with the types of what crosses the wire: its arguments
/// `A`, the value `S` it passes to `started`, the stream items it sends (`Out`) and
/// receives (`In`), and its result `R`. The parent's stream sends `In` and receives `Out`.
///
/// Register it with [`Registry::typed_context`](crate::Registry::typed_context) (which
/// also declares its types, see [`MsgTypes`](crate::MsgTypes)), open it with
/// [`Portal::open`].
pub struct ContextFn<A, S, Out, In, R> {
    name: &'static str,
    types: Types<(A, S, Out, In, R)>,
}
handle_impls!(ContextFn<A, S, Out, In, R>);

/// A one-way stream function `A -> stream of T`, by name: register it with
/// [`Registry::typed_stream`](crate::Registry::typed_stream), open it with
/// [`Portal::open_stream_of`].
pub struct StreamFn<A, T> {
    name: &'static str,
    types: Types<(A, T)>,
}
handle_impls!(StreamFn<A, T>);

/// A [`MsgStream`] that sends `Tx` and receives `Rx`.
pub struct TypedStream<Tx, Rx> {
    inner: MsgStream,
    types: Types<(Tx, Rx)>,
}

impl<Tx, Rx> fmt::Debug for TypedStream<Tx, Rx> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedStream").field(&self.inner).finish()
    }
}

impl<Tx, Rx> TypedStream<Tx, Rx> {
    fn new(inner: MsgStream) -> Self {
        TypedStream { inner, types: PhantomData }
    }

    /// Sends one item (see [`MsgStream::send`]).
    ///
    /// # Errors
    ///
    /// As [`MsgStream::send`].
    pub async fn send(&self, item: &Tx) -> Result<(), ActorError>
    where
        Tx: Serialize,
    {
        self.inner.send(item).await
    }

    /// Receives the next item; `Ok(None)` at end of stream (see [`MsgStream::recv`]).
    ///
    /// # Errors
    ///
    /// As [`MsgStream::recv`].
    pub async fn recv(&self) -> Result<Option<Rx>, ActorError>
    where
        Rx: DeserializeOwned,
    {
        self.inner.recv().await
    }

    /// The items as an async [`futures::Stream`] (see [`MsgStream::items`]).
    pub fn items(&self) -> impl futures::Stream<Item = Result<Rx, ActorError>> + '_
    where
        Rx: DeserializeOwned,
    {
        self.inner.items()
    }

    /// Closes the stream (see [`MsgStream::close`]).
    ///
    /// # Errors
    ///
    /// A lost connection.
    pub async fn close(&self) -> Result<(), ActorError> {
        self.inner.close().await
    }

    /// Fans the received items out to several local subscribers (see
    /// [`MsgStream::fan_out`]).
    pub fn fan_out(self, capacity: usize) -> FanOut<Rx>
    where
        Rx: DeserializeOwned + Clone + Send + 'static,
    {
        self.inner.fan_out(capacity)
    }

    /// The untyped stream underneath.
    pub fn untyped(&self) -> &MsgStream {
        &self.inner
    }
}

/// The parent's side of a context opened with a [`ContextFn`]: its stream sends `Tx` (the
/// child's `In`) and receives `Rx` (the child's `Out`); its result is an `R`.
pub struct TypedContext<Tx, Rx, R> {
    inner: Context,
    types: Types<(Tx, Rx, R)>,
}

impl<Tx, Rx, R> fmt::Debug for TypedContext<Tx, Rx, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedContext").field(&self.inner).finish()
    }
}

impl<Tx: Serialize, Rx: DeserializeOwned, R: DeserializeOwned> TypedContext<Tx, Rx, R> {
    /// Opens this side's stream with the default [`StreamConfig`].
    ///
    /// # Errors
    ///
    /// As [`Context::open_stream`].
    pub async fn open_stream(&self) -> Result<TypedStream<Tx, Rx>, ActorError> {
        self.inner.open_stream().await.map(TypedStream::new)
    }

    /// Opens this side's stream with `config`.
    ///
    /// # Errors
    ///
    /// As [`Context::open_stream_with`].
    pub async fn open_stream_with(
        &self,
        config: StreamConfig,
    ) -> Result<TypedStream<Tx, Rx>, ActorError> {
        self.inner.open_stream_with(config).await.map(TypedStream::new)
    }

    /// Waits for the child's result (see [`Context::result`]).
    ///
    /// # Errors
    ///
    /// As [`Context::result`].
    pub async fn result(&self) -> Result<Outcome<R>, ActorError> {
        self.inner.result().await
    }

    /// Cancels the context (see [`Context::cancel`]).
    ///
    /// # Errors
    ///
    /// As [`Context::cancel`].
    pub async fn cancel(&self) -> Result<(), ActorError> {
        self.inner.cancel().await
    }

    /// The untyped context underneath (its id, peer, [`Context::within`]…).
    pub fn untyped(&self) -> &Context {
        &self.inner
    }
}

/// The child's side of a context registered with a [`ContextFn`]: it passes an `S` to
/// `started`; its stream sends `Out` and receives `In`.
pub struct ServedContext<S, Out, In> {
    inner: Context,
    types: Types<(S, Out, In)>,
}

impl<S, Out, In> fmt::Debug for ServedContext<S, Out, In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServedContext").field(&self.inner).finish()
    }
}

impl<S, Out, In> Clone for ServedContext<S, Out, In> {
    fn clone(&self) -> Self {
        ServedContext { inner: self.inner.clone(), types: PhantomData }
    }
}

impl<S: Serialize, Out: Serialize, In: DeserializeOwned> ServedContext<S, Out, In> {
    pub(crate) fn new(inner: Context) -> Self {
        ServedContext { inner, types: PhantomData }
    }

    /// Sends the parent its first value (see [`Context::started`]).
    ///
    /// # Errors
    ///
    /// As [`Context::started`].
    pub async fn started(&self, value: &S) -> Result<(), ActorError> {
        self.inner.started(value).await
    }

    /// Opens this side's stream with the default [`StreamConfig`].
    ///
    /// # Errors
    ///
    /// As [`Context::open_stream`].
    pub async fn open_stream(&self) -> Result<TypedStream<Out, In>, ActorError> {
        self.inner.open_stream().await.map(TypedStream::new)
    }

    /// Opens this side's stream with `config`.
    ///
    /// # Errors
    ///
    /// As [`Context::open_stream_with`].
    pub async fn open_stream_with(
        &self,
        config: StreamConfig,
    ) -> Result<TypedStream<Out, In>, ActorError> {
        self.inner.open_stream_with(config).await.map(TypedStream::new)
    }

    /// Whether the context is cancelled (see [`Context::is_cancelled`]).
    pub fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Resolves once the context is cancelled (see [`Context::cancelled`]).
    pub async fn cancelled(&self) {
        self.inner.cancelled().await
    }

    /// The untyped context underneath.
    pub fn untyped(&self) -> &Context {
        &self.inner
    }
}

impl Portal {
    /// Runs the function `function` stands for (see [`Portal::run`]): the arguments and the
    /// result have the handle's types.
    ///
    /// # Errors
    ///
    /// As [`Portal::run`].
    pub async fn call<A, R>(&self, function: Func<A, R>, args: A) -> Result<R, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.run_raw(function.name(), encode(&args)?).await
    }

    /// Opens the context `function` stands for (see [`Portal::open_context`]): returns
    /// this side of it, typed, and the child's `started` value.
    ///
    /// # Errors
    ///
    /// As [`Portal::open_context`].
    pub async fn open<A, S, Out, In, R>(
        &self,
        function: ContextFn<A, S, Out, In, R>,
        args: A,
    ) -> Result<(TypedContext<In, Out, R>, S), ActorError>
    where
        A: Serialize,
        S: DeserializeOwned,
    {
        let (inner, first) = self.open_context(function.name(), args).await?;
        Ok((TypedContext { inner, types: PhantomData }, first))
    }

    /// Starts the stream function `function` stands for (see
    /// [`Portal::open_stream_from`]) and returns its stream of `T`s (on which nothing
    /// can be sent).
    ///
    /// # Errors
    ///
    /// As [`Portal::open_stream_from`].
    pub async fn open_stream_of<A, T>(
        &self,
        function: StreamFn<A, T>,
        args: A,
    ) -> Result<TypedStream<Infallible, T>, ActorError>
    where
        A: Serialize,
        T: DeserializeOwned,
    {
        self.open_stream_from(function.name(), args).await.map(TypedStream::new)
    }
}
