//! Finding other actors of the tree through its registrar: [`Actor::list_actors`],
//! [`Actor::query_actor`], [`Actor::find_actor`], [`Actor::wait_for_actor`].

use super::actor::Actor;
use crate::base::error::{ActorError, SetupError};
use crate::calls::portal::Portal;
use crate::registrar::entry::ActorEntry;

impl Actor {
    fn no_registrar(&self) -> ActorError {
        SetupError::NoRegistrar { actor: self.aid().clone() }.into()
    }

    /// Every live actor of the tree, as the registrar knows them. While the registrar is
    /// being replaced (its root exited or was killed), waits for the successor, at most
    /// [`Budgets::registrar_gap`](crate::Budgets::registrar_gap).
    ///
    /// # Errors
    ///
    /// The registrar is unreachable (and no successor came within the gap).
    pub async fn list_actors(&self) -> Result<Vec<ActorEntry>, ActorError> {
        self.registrar()
            .list(self.budgets().registrar_gap)
            .await
            .unwrap_or_else(|| Err(self.no_registrar()))
    }

    /// The registered actors named `name` (several when names are shared). A failover of
    /// the registrar is waited out as by [`Actor::list_actors`].
    ///
    /// # Errors
    ///
    /// The registrar is unreachable (and no successor came within the gap).
    pub async fn query_actor(&self, name: &str) -> Result<Vec<ActorEntry>, ActorError> {
        self.registrar()
            .find(name, self.budgets().registrar_gap)
            .await
            .unwrap_or_else(|| Err(self.no_registrar()))
    }

    /// A portal to an actor named `name`, if one is registered (the first one that
    /// answers). An entry that no longer answers is removed from the registrar. A failover
    /// of the registrar is waited out as by [`Actor::list_actors`].
    ///
    /// # Errors
    ///
    /// The registrar is unreachable (and no successor came within the gap).
    pub async fn find_actor(&self, name: &str) -> Result<Option<Portal>, ActorError> {
        for entry in self.query_actor(name).await? {
            if let Some(p) = self.connect_entry(&entry).await? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Waits until an actor named `name` registers, and returns a portal to it. A failover
    /// of the registrar meanwhile is waited out (bound the whole wait with a timeout).
    ///
    /// # Errors
    ///
    /// The registrar is unreachable, or this actor is cancelled while waiting.
    pub async fn wait_for_actor(&self, name: &str) -> Result<Portal, ActorError> {
        loop {
            let entries = match self.registrar().wait_for(name, self.cancelled()).await {
                Some(found) => found?,
                None => return Err(self.no_registrar()),
            };
            if self.is_cancelled() {
                let canceller = self.canceller().unwrap_or_else(|| self.aid().clone());
                return Err(ActorError::ContextCancelled { canceller });
            }
            for entry in &entries {
                if let Some(p) = self.connect_entry(entry).await? {
                    return Ok(p);
                }
            }
        }
    }

    /// Connects to a registry entry; a stale one (nothing answers, or another actor
    /// answers there now) is removed from the registrar.
    async fn connect_entry(&self, entry: &ActorEntry) -> Result<Option<Portal>, ActorError> {
        let addr = entry.address()?;
        match self.connect(&addr).await {
            Ok(p) if p.aid().uuid == entry.aid.uuid => Ok(Some(p)),
            Ok(_) => {
                self.hang_up(&addr);
                self.forget_entry(entry).await;
                Ok(None)
            }
            Err(_) => {
                self.forget_entry(entry).await;
                Ok(None)
            }
        }
    }

    async fn forget_entry(&self, entry: &ActorEntry) {
        tracing::debug!(stale = %entry.aid, "registrar entry does not answer: removing it");
        self.registrar().forget(&entry.aid.uuid).await;
    }
}
