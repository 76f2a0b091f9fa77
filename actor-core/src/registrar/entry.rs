//! [`ActorEntry`]: one live actor, as the registrar lists it.

use crate::base::error::ActorError;
use plough_ipc_wire::Address;
use plough_ipc_wire::msg::Aid;
use serde::{Deserialize, Serialize};

/// One live actor, as the registrar knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorEntry {
    /// Its identity.
    pub aid: Aid,
    /// Where it listens (`tcp://…` or `uds://…`).
    pub addr: String,
    /// Its parent actor (`None` for a root).
    #[serde(default)]
    pub parent: Option<Aid>,
    /// How it was started: `root`, `exec`, `main_thread_forkserver`.
    #[serde(default)]
    pub method: String,
    /// When it came up, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_ms: u64,
}

impl ActorEntry {
    /// The entry of an actor coming up now.
    pub fn new(aid: Aid, addr: String, parent: Option<Aid>, method: &str) -> Self {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ActorEntry { aid, addr, parent, method: method.to_owned(), started_ms }
    }

    /// The listening address, parsed.
    ///
    /// # Errors
    ///
    /// The registrar stored an address that does not parse (a bug or a foreign peer).
    pub fn address(&self) -> Result<Address, ActorError> {
        self.addr.parse().map_err(|e| ActorError::Protocol {
            peer: self.aid.to_string(),
            detail: format!("registered with a bad address `{}`: {e}", self.addr),
        })
    }
}
