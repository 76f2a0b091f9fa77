//! Shared helpers for plough's integration suites (`tests/tests/*.rs`) and the helper child
//! programs they drive (`tests/src/bin/*.rs`).
