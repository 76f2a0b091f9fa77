//! [`RuntimeConfig`]: the settings of a program's runtime, the same in every process of it.

use super::budgets::Budgets;
use super::spawn_method::SpawnMethod;
use plough_ipc_wire::{Address, Secret};

/// Settings of a runtime (the same in every process of a program).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The root actor's name.
    pub name: String,
    /// Where the tree's registrar listens (`tcp://127.0.0.1:1616` by default). Port 0 (or
    /// a fresh UDS path) makes the root the registrar on a private address: tests use it.
    pub registry_addr: Address,
    /// Every timeout and grace period (see [`Budgets`]).
    pub budgets: Budgets,
    /// SIGUSR1 dumps the task tree and relays the signal to the children (default on;
    /// `PLOUGH_TASK_DUMP=0` also turns it off). Off: SIGUSR1 keeps its default action.
    pub task_dump: bool,
    /// The spawn method (a `PLOUGH_SPAWN_METHOD` set in the environment wins). Default:
    /// `zygote`.
    pub spawn_method: SpawnMethod,
    /// The secret every connection of the tree proves it holds (default: the user's).
    pub secret: TreeSecret,
}

/// Which secret a tree's connections prove they hold (see `plough_ipc_wire::auth`): only a
/// peer that proves the same one reaches an actor's functions, its registrar or its
/// cancel. It never travels on argv, in the environment or on a connection; children get
/// it over the private channel of their spawn.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TreeSecret {
    /// The user's: `secret` (0600) in the runtime directory, created on first use. Every
    /// tree of the user shares it, so they can share a registrar and find each other's
    /// actors; no other user's process can.
    #[default]
    PerUser,
    /// A fresh one for this tree only, in memory: no other program, of this user or any
    /// other, can connect to it (nor can `plough ps` list it). Give the tree a registry
    /// address of its own (another tree's registrar refuses it).
    PerTree,
    /// This one (e.g. read from a file the program manages).
    Given(Secret),
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            name: "root".to_owned(),
            registry_addr: Address::default_registry_tcp(),
            budgets: Budgets::default(),
            task_dump: true,
            spawn_method: SpawnMethod::Zygote,
            secret: TreeSecret::PerUser,
        }
    }
}
