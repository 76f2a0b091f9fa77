//! The tree uuid every actor of a tree shares (fresh ids are `Uuid::new_v4`).

use super::names::TREE_VAR;
use super::runtime_vars;
use plough_ipc_wire::msg::{RuntimeVars, Uuid};

/// The tree uuid carried in `vars` (set by the root, handed to every child).
pub(crate) fn tree_from_vars(vars: &RuntimeVars) -> Option<Uuid> {
    let (_, v) = vars.extra.iter().find(|(k, _)| k == TREE_VAR)?;
    v.parse().ok()
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
    fn the_tree_uuid_travels_in_the_vars() {
        let tree = Uuid::new_v4();
        let vars = with_tree(with_tree(RuntimeVars::default(), &Uuid::new_v4()), &tree);
        assert_eq!(vars.extra.len(), 1, "replaced, not added");
        assert_eq!(tree_from_vars(&vars), Some(tree));
        assert_eq!(tree_from_vars(&RuntimeVars::default()), None);
    }
}
