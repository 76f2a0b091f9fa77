//! Reserved names: the `plough.*` functions the runtime serves itself, and the keys it
//! keeps in the runtime vars. User handlers may not use the prefix (the registry refuses
//! them), so a reserved name never collides with a user's.

/// The prefix of every reserved function name.
pub(crate) const RESERVED_PREFIX: &str = "plough.";

/// Cancel the whole actor (graceful): answered with a `CancelAck`.
pub(crate) const CANCEL_ACTOR: &str = "plough.cancel_actor";
/// Cancel one call this actor serves (`args`: its cid).
pub(crate) const CANCEL_CALL: &str = "plough.cancel_call";
/// Stream credit for a context (`args`: how many messages); handled by the connection.
pub(crate) const CREDIT: &str = "plough.credit";
/// The receiver is done with segments lent to it (`args`: their inodes); handled by the
/// connection.
pub(crate) const SHM_OPENED: &str = "plough.shm_opened";

/// Testing (the `testing` feature): the receiver drops the connection this call came on at
/// once, unanswered, as a broken transport would.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) const SEVER: &str = "plough.testing.sever";

/// The prefix of the registrar's functions.
pub(crate) const REGISTRAR_PREFIX: &str = "plough.registrar.";
/// Register an `ActorEntry` (over the registering connection).
pub(crate) const REGISTRAR_REGISTER: &str = "plough.registrar.register";
/// Remove an entry by uuid.
pub(crate) const REGISTRAR_UNREGISTER: &str = "plough.registrar.unregister";
/// The entries of one name.
pub(crate) const REGISTRAR_FIND: &str = "plough.registrar.find";
/// The entries of one name, once there is at least one.
pub(crate) const REGISTRAR_WAIT_FOR: &str = "plough.registrar.wait_for";
/// Every entry.
pub(crate) const REGISTRAR_LIST: &str = "plough.registrar.list";

/// The runtime-vars key that carries the tree's root uuid to children.
pub(crate) const TREE_VAR: &str = "tree";

/// Environment variable that turns SIGUSR1 task dumps off (`0`).
pub(crate) const TASK_DUMP_ENV: &str = "PLOUGH_TASK_DUMP";

/// Whether `name` is reserved for the runtime.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reserved_function_has_the_prefix() {
        for n in [
            CANCEL_ACTOR,
            CANCEL_CALL,
            CREDIT,
            SEVER,
            REGISTRAR_REGISTER,
            REGISTRAR_UNREGISTER,
            REGISTRAR_FIND,
            REGISTRAR_WAIT_FOR,
            REGISTRAR_LIST,
        ] {
            assert!(is_reserved(n), "{n}");
        }
        assert!(REGISTRAR_LIST.starts_with(REGISTRAR_PREFIX));
        assert!(!is_reserved("add"));
    }
}
