//! [`RuntimeConfig`]: the settings of a program's runtime, the same in every process of it.

use super::budgets::Budgets;
use super::spawn_method::SpawnMethod;
use plough_ipc_wire::Address;

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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            name: "root".to_owned(),
            registry_addr: Address::default_registry_tcp(),
            budgets: Budgets::default(),
            task_dump: true,
            spawn_method: SpawnMethod::Zygote,
        }
    }
}
