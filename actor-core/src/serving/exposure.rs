//! Which registered functions an actor serves: tractor's `enable_modules`, per actor.
//!
//! Every process of a program builds the same [`Registry`](super::registry::Registry), so
//! by default every actor serves every registered function. A spawn may name the ones
//! its child serves (`SpawnOptions::expose`, carried in the spawn spec's
//! `enableHandlers`), and any actor — a daemon child, or the root — may narrow what it
//! serves later ([`Actor::expose_only`]). A call to a registered function the actor does
//! not expose is answered with a [`ErrorKind::NotExposed`] error, distinct from
//! `NoSuchFunction` (not registered at all), so the caller can tell a typo from a policy.
//!
//! Exposure only ever narrows: what an actor does not serve cannot be turned back on by a
//! handler it serves (that would make the narrowing a suggestion). The runtime's own
//! functions (cancel, the registrar's) are always served.

use super::actor::Actor;
use crate::base::error::{ActorError, Misuse, RemoteActorError};
use crate::base::sync::LockExt;
use plough_ipc_wire::msg::ErrorKind;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The set of functions an actor serves: all registered ones, or only some.
#[derive(Debug, Default)]
pub(crate) struct Exposure {
    /// `None`: every registered function.
    only: Mutex<Option<BTreeSet<String>>>,
}

impl Exposure {
    /// Every registered function.
    pub(crate) fn all() -> Self {
        Self::default()
    }

    /// Only `names` (names that are not registered are simply never served).
    pub(crate) fn only(names: impl IntoIterator<Item = String>) -> Self {
        Exposure { only: Mutex::new(Some(names.into_iter().collect())) }
    }

    /// Whether `function` is served.
    pub(crate) fn allows(&self, function: &str) -> bool {
        self.only.locked().as_ref().is_none_or(|only| only.contains(function))
    }

    /// Serves no more than `names` from now on (an intersection: never widens).
    fn narrow(&self, names: BTreeSet<String>) {
        let mut only = self.only.locked();
        *only = Some(match only.take() {
            Some(before) => before.intersection(&names).cloned().collect(),
            None => names,
        });
    }
}

impl Actor {
    /// The registered functions this actor serves, sorted.
    pub fn exposed(&self) -> Vec<String> {
        self.registry().names().filter(|n| self.exposure().allows(n)).map(str::to_owned).collect()
    }

    /// Whether this actor serves `function` (registered and exposed).
    pub fn is_exposed(&self, function: &str) -> bool {
        self.registry().kind(function).is_some() && self.exposure().allows(function)
    }

    /// Narrows what this actor serves to `functions` (tractor's `enable_modules`, decided
    /// by the actor itself: a daemon, or the root before others find it). It only ever
    /// narrows: a function this actor does not serve now stays unserved. A call to a
    /// registered function it does not serve fails with [`ErrorKind::NotExposed`]. Calls
    /// already running are not affected.
    ///
    /// # Errors
    ///
    /// [`Misuse::NotRegistered`] when a name is not a registered function (nothing is
    /// changed then).
    pub fn expose_only<I, S>(&self, functions: I) -> Result<(), ActorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = registered(self, functions)?;
        self.exposure().narrow(names);
        Ok(())
    }

    /// The error that answers a call of `function`, registered but not exposed here.
    pub(crate) fn not_exposed_error(&self, function: &str) -> RemoteActorError {
        let served = self.exposed();
        RemoteActorError::new(
            self.aid().clone(),
            ErrorKind::NotExposed,
            format!(
                "actor {} does not expose `{function}` (it serves: {})",
                self.aid(),
                if served.is_empty() { "nothing".to_owned() } else { served.join(", ") }
            ),
        )
    }
}

/// `functions` as a set, each checked to be registered in `actor`'s registry.
pub(crate) fn registered<I, S>(actor: &Actor, functions: I) -> Result<BTreeSet<String>, ActorError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut names = BTreeSet::new();
    for f in functions {
        let f = f.into();
        if actor.registry().kind(&f).is_none() {
            return Err(Misuse::NotRegistered { function: f }.into());
        }
        names.insert(f);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn all_allows_everything_and_narrowing_only_narrows() {
        let e = Exposure::all();
        assert!(e.allows("a") && e.allows("b"));
        e.narrow(set(&["a", "b"]));
        assert!(e.allows("a") && e.allows("b") && !e.allows("c"));
        // A wider set later does not turn `c` (or anything) back on.
        e.narrow(set(&["b", "c"]));
        assert!(!e.allows("a") && e.allows("b") && !e.allows("c"));
        let none = Exposure::only(Vec::new());
        assert!(!none.allows("a"));
    }
}
