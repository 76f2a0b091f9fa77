//! Integration tests of plough-ipc-wire, one concern per module, in one test binary (one
//! link instead of five; the global allocator below counts allocations for all of them).

mod alloc_counter;
mod amplification;
mod error_kind;
mod handshake;
mod limits;
mod props;
mod support;
mod tls;
mod uds;
mod write_path;

#[global_allocator]
static ALLOC: alloc_counter::Counting = alloc_counter::Counting;
