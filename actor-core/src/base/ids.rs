//! Identities: fresh actor uuids, and the tree uuid every actor of a tree shares.

use super::names::TREE_VAR;
use super::runtime_vars;
use plough_ipc_wire::msg::{RuntimeVars, Uuid};

/// A fresh random (version 4) actor id.
pub(crate) fn new_uuid() -> Uuid {
    Uuid(uuid::Uuid::new_v4().into_bytes())
}

/// Parses a uuid written hyphenated or as 32 hex digits.
pub(crate) fn parse_uuid(s: &str) -> Option<Uuid> {
    uuid::Uuid::try_parse(s).ok().map(|u| Uuid(u.into_bytes()))
}

/// A uuid as 32 hex digits (no hyphens), e.g. for an argv word.
pub(crate) fn simple(u: &Uuid) -> String {
    uuid::Uuid::from_bytes(u.0).simple().to_string()
}

/// The tree uuid carried in `vars` (set by the root, handed to every child).
pub(crate) fn tree_from_vars(vars: &RuntimeVars) -> Option<Uuid> {
    let (_, v) = vars.extra.iter().find(|(k, _)| k == TREE_VAR)?;
    parse_uuid(v)
}

/// This process's tree uuid, if its runtime vars carry one.
pub(crate) fn current_tree() -> Option<Uuid> {
    tree_from_vars(&runtime_vars::get(false))
}

/// `vars` with the tree uuid set to `tree`.
pub(crate) fn with_tree(mut vars: RuntimeVars, tree: &Uuid) -> RuntimeVars {
    vars.extra.retain(|(k, _)| k != TREE_VAR);
    vars.extra.push((TREE_VAR.to_owned(), tree.to_string()));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_round_trip_in_both_forms() {
        let u = new_uuid();
        assert_eq!(u.0[6] >> 4, 4, "version 4");
        assert_eq!(u.0[8] & 0xc0, 0x80, "RFC 4122 variant");
        assert_eq!(parse_uuid(&u.to_string()), Some(u));
        assert_eq!(parse_uuid(&simple(&u)), Some(u));
        assert_eq!(simple(&u).len(), 32);
        assert_eq!(parse_uuid("not a uuid"), None);
        assert_ne!(new_uuid(), u);
    }

    #[test]
    fn the_tree_uuid_travels_in_the_vars() {
        let tree = new_uuid();
        let vars = with_tree(with_tree(RuntimeVars::default(), &new_uuid()), &tree);
        assert_eq!(vars.extra.len(), 1, "replaced, not added");
        assert_eq!(tree_from_vars(&vars), Some(tree));
        assert_eq!(tree_from_vars(&RuntimeVars::default()), None);
    }
}
