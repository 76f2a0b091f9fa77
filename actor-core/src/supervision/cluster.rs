//! [`Cluster`]: N actors started together in one nursery (tractor's `open_actor_cluster`),
//! with a portal each, calls and contexts gathered over all of them, and every failure
//! collected rather than the first one kept.
//!
//! The actors belong to the nursery they were started in, so they are torn down together
//! when it exits (or when one of them fails: one-cancels-all), whatever the body did with
//! the cluster. [`Actor::open_actor_cluster`] is the whole shape in one call: a nursery,
//! the cluster, the body, the teardown.

use super::nursery::Nursery;
use super::options::SpawnOptions;
use crate::base::error::ActorError;
use crate::calls::context::Context;
use crate::calls::portal::Portal;
use crate::serving::actor::Actor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;

/// Actors started together in one nursery (tractor's `open_actor_cluster`): a portal
/// each, calls and contexts gathered over all of them with every failure collected. They
/// are the nursery's children, torn down together when it exits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    members: Vec<Portal>,
}

impl Cluster {
    /// A portal to each member, in the order their names were given.
    pub fn portals(&self) -> &[Portal] {
        &self.members
    }

    /// The member called `name`.
    pub fn get(&self, name: &str) -> Option<&Portal> {
        self.members.iter().find(|p| p.aid().name == name)
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Runs `function(args)` on every member at once and gathers the results, in member
    /// order.
    ///
    /// # Errors
    ///
    /// Every member's failure together ([`ActorError::collect`]), not only the first.
    pub async fn run_all<A, R>(&self, function: &str, args: A) -> Result<Vec<R>, ActorError>
    where
        A: Serialize + Clone,
        R: DeserializeOwned,
    {
        let calls = self.members.iter().map(|p| p.run::<A, R>(function, args.clone()));
        gathered(futures::future::join_all(calls).await)
    }

    /// Opens context `function(args)` on every member at once (tractor's cluster of
    /// contexts): each member's [`Context`] and first value, in member order.
    ///
    /// # Errors
    ///
    /// Every member's failure together; the contexts that did open are dropped then,
    /// which cancels them.
    pub async fn open_contexts<A, F>(
        &self,
        function: &str,
        args: A,
    ) -> Result<Vec<(Context, F)>, ActorError>
    where
        A: Serialize + Clone,
        F: DeserializeOwned,
    {
        let opens = self.members.iter().map(|p| p.open_context::<A, F>(function, args.clone()));
        gathered(futures::future::join_all(opens).await)
    }
}

/// All the values, or every error together.
fn gathered<T>(results: Vec<Result<T, ActorError>>) -> Result<Vec<T>, ActorError> {
    let mut values = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(v) => values.push(v),
            Err(e) => errors.push(e),
        }
    }
    match ActorError::collect(errors) {
        Some(e) => Err(e),
        None => Ok(values),
    }
}

impl Nursery {
    /// Starts one actor per name, all at once (their boots overlap), with `options`
    /// each: a [`Cluster`] of them. They are this nursery's children like any other.
    ///
    /// # Errors
    ///
    /// Every spawn failure together (the members that did start stay in the nursery,
    /// which takes them down when it exits).
    pub async fn start_cluster<I, S>(
        &self,
        names: I,
        options: SpawnOptions,
    ) -> Result<Cluster, ActorError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        options.check(self.actor())?;
        let names: Vec<S> = names.into_iter().collect();
        let starts = names.iter().map(|name| self.start_actor_opts(name.as_ref(), &options));
        let members = gathered(futures::future::join_all(starts).await)?;
        Ok(Cluster { members })
    }
}

impl Actor {
    /// tractor's `open_actor_cluster`: opens a nursery, starts one actor per name in it
    /// ([`Nursery::start_cluster`]), runs `body` with the cluster, and returns once every
    /// member is down and reaped — after `body`, or at once when a member fails.
    ///
    /// # Errors
    ///
    /// The spawn failures, `body`'s error and the members' failures, together (as
    /// [`Actor::nursery`]).
    pub async fn open_actor_cluster<I, S, T, F, Fut>(
        &self,
        names: I,
        body: F,
    ) -> Result<T, ActorError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
        F: FnOnce(Cluster) -> Fut,
        Fut: Future<Output = Result<T, ActorError>>,
    {
        self.nursery(|n| async move {
            let cluster = n.start_cluster(names, SpawnOptions::default()).await?;
            body(cluster).await
        })
        .await
    }
}
