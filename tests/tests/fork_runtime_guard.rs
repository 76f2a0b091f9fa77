//! Guard: tokio's signal driver must not be compiled into plough's workspace.
//!
//! Its process-global self-pipe is created once per process and inherited by forked
//! children, whose runtime build then dups a scrubbed fd (EBADF) — or, worse, an fd that
//! reused the number. Any crate enabling tokio's `signal` or `process` feature imposes it on
//! every test binary through feature unification; this test names the cause at once.

use plough_fork_prims::{ForkOptions, fork_blocking};

#[test]
fn a_forked_child_can_build_an_io_runtime() {
    // Make sure the parent's own runtime (and with it tokio's signal globals, if compiled
    // in) exists before the fork, as it does in every plough parent.
    let parent_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    parent_rt.block_on(async {});
    let child =
        fork_blocking(
            &ForkOptions::default(),
            || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("runtime build in a forked child failed: {e}");
                    1
                }
            },
        )
        .unwrap();
    let status = child.wait_blocking().unwrap();
    assert!(
        status.success(),
        "a forked child cannot build a tokio runtime ({status}): some crate enables tokio's \
         `signal` or `process` feature (see `cargo tree -e features -i tokio`)"
    );
}
