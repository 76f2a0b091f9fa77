//! Registering handlers by typed handle ([`Func`], [`ContextFn`], [`StreamFn`]): the
//! handler's signature must match the handle's types, or the registration does not
//! compile. Each one is the string registration under the handle's name, so a caller may
//! use either API.

use super::cx::Cx;
use super::registry::Registry;
use crate::calls::typed::{ContextFn, Func, ServedContext, StreamFn};
use crate::calls::types::MsgTypes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::future::Future;

impl Registry {
    /// Registers `f` as the plain function `function` stands for (see
    /// [`Registry::func`]); `f` must take the handle's argument type and return its result
    /// type.
    ///
    /// # Panics
    ///
    /// As [`Registry::func`].
    pub fn typed<A, R, E, F, Fut>(self, function: Func<A, R>, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(Cx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.func(function.name(), f)
    }

    /// Registers `f` as the context function `function` stands for (see
    /// [`Registry::context`]), and declares its types ([`MsgTypes`]): `f` receives its
    /// side of the context typed by the handle.
    ///
    /// # Panics
    ///
    /// As [`Registry::func`].
    pub fn typed_context<A, S, Out, In, R, E, F, Fut>(
        self,
        function: ContextFn<A, S, Out, In, R>,
        f: F,
    ) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        S: Serialize + 'static,
        Out: Serialize + 'static,
        In: DeserializeOwned + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(ServedContext<S, Out, In>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let types = MsgTypes::new().started::<S>().yields::<Out>().returns::<R>();
        self.context(function.name(), move |ctx, args| f(ServedContext::new(ctx), args))
            .declare(function.name(), types)
    }

    /// Registers `f` as the stream function `function` stands for (see
    /// [`Registry::stream`]); `f` must yield the handle's item type.
    ///
    /// # Panics
    ///
    /// As [`Registry::func`].
    pub fn typed_stream<A, T, E, F, St>(self, function: StreamFn<A, T>, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(Cx, A) -> St + Send + Sync + 'static,
        St: futures::Stream<Item = Result<T, E>> + Send + 'static,
    {
        self.stream(function.name(), f)
    }
}
