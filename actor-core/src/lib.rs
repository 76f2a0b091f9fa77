//! plough's actor runtime: root, nursery, portal, context, stream, registrar, cancellation.
//!
//! This crate is part of the plough workspace; see the workspace README. It is filled in by
//! its own issue.
