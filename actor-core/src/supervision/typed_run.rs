//! [`Nursery::run_typed`]: a run-in-actor child started by typed handle.

use super::nursery::{Nursery, RunHandle};
use crate::base::error::ActorError;
use crate::calls::typed::Func;
use serde::Serialize;
use serde::de::DeserializeOwned;

impl Nursery {
    /// Starts a child actor named `name` that runs `function(args)` (see
    /// [`Nursery::run_in_actor`]); the arguments and the handle's result have the
    /// handle's types.
    ///
    /// # Errors
    ///
    /// As [`Nursery::run_in_actor`].
    pub async fn run_typed<A, R>(
        &self,
        name: &str,
        function: Func<A, R>,
        args: A,
    ) -> Result<RunHandle<R>, ActorError>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        self.run_in_actor(name, function.name(), args).await
    }
}
