//! plough's wire: Cap'n Proto schema, limit-checked framing, addresses and transports.
//!
//! This crate is part of the plough workspace; see the workspace README. It is filled in by
//! its own issue.
