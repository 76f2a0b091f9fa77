//! plough's spawn backends: exec, main_thread_forkserver, subint_forkserver (reserved).
//!
//! This crate is part of the plough workspace; see the workspace README. It is filled in by
//! its own issue.
