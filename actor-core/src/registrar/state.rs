//! The registrar's state: the live actors of a tree, with the connection each was
//! registered over. Pure bookkeeping: no I/O, no connection, no actor.

use super::entry::ActorEntry;
use crate::base::sync::LockExt;
use plough_ipc_wire::msg::{Aid, Uuid};
use std::sync::Mutex;
use tokio::sync::watch;

struct Slot {
    entry: ActorEntry,
    /// The peer whose connection registered it (`None`: the registrar itself).
    via: Option<Uuid>,
}

pub(crate) struct RegistrarState {
    slots: Mutex<Vec<Slot>>,
    version: watch::Sender<u64>,
}

impl RegistrarState {
    pub(crate) fn new() -> Self {
        RegistrarState { slots: Mutex::new(Vec::new()), version: watch::channel(0).0 }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn add(&self, entry: ActorEntry, via: Option<Uuid>) {
        let mut slots = self.slots.locked();
        slots.retain(|s| s.entry.aid.uuid != entry.aid.uuid);
        slots.push(Slot { entry, via });
        drop(slots);
        self.bump();
    }

    pub(crate) fn remove(&self, uuid: &Uuid) {
        self.slots.locked().retain(|s| &s.entry.aid.uuid != uuid);
        self.bump();
    }

    pub(crate) fn find(&self, name: &str) -> Vec<ActorEntry> {
        let slots = self.slots.locked();
        slots.iter().filter(|s| s.entry.aid.name == name).map(|s| s.entry.clone()).collect()
    }

    pub(crate) fn list(&self) -> Vec<ActorEntry> {
        self.slots.locked().iter().map(|s| s.entry.clone()).collect()
    }

    pub(crate) async fn wait_for(&self, name: &str) -> Vec<ActorEntry> {
        let mut rx = self.version.subscribe();
        loop {
            let found = self.find(name);
            if !found.is_empty() {
                return found;
            }
            if rx.changed().await.is_err() {
                return Vec::new();
            }
        }
    }

    /// The registering connection dropped: the actors registered over it are gone.
    /// The connection to `peer` dropped: the actors registered over it are gone.
    pub(crate) fn connection_closed(&self, peer: &Aid) {
        let mut slots = self.slots.locked();
        let before = slots.len();
        slots.retain(|s| s.via != Some(peer.uuid));
        let changed = slots.len() != before;
        drop(slots);
        if changed {
            tracing::debug!(peer = %peer, "registrar: dropped the entries of a closed connection");
            self.bump();
        }
    }
}
