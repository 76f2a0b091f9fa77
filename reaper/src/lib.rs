//! plough-reap: find and reap orphaned plough actors, sweep /dev/shm and socket files.
//!
//! This crate is part of the plough workspace; see the workspace README. It is filled in by
//! its own issue.
