//! Spawn cost: forkserver fork → child exit → reaped, against the floor (a bare
//! `libc::fork` + `_exit` + `waitpid` from the calling thread) and against
//! `std::process::Command` running `/bin/true`, each with 0 / 100 MiB / 1 GiB of touched
//! parent heap. Compare within one run (ratios), not across runs: the machine is shared.
//!
//! `cargo xtask bench spawn` (or `cargo bench -p plough-fork-prims --bench spawn`).
#![allow(unsafe_code)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use plough_fork_prims::{ForkOptions, fork_blocking};
use std::hint::black_box;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// A heap of `bytes`, every page written, so fork must copy its page tables.
fn touched_heap(bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        v[i] = 1;
    }
    black_box(v)
}

fn bare_fork() {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: leaves the child at once.
        unsafe { libc::_exit(0) }
    }
    assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: reaps exactly the child we just forked.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
}

fn spawn(c: &mut Criterion) {
    let opts = ForkOptions::default();
    // Start the forkserver thread outside the measurement.
    fork_blocking(&opts, || 0).unwrap().wait_blocking().unwrap();

    let mut group = c.benchmark_group("spawn");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for heap_mib in [0usize, 100, 1024] {
        let heap = touched_heap(heap_mib * MIB);
        group.bench_with_input(BenchmarkId::new("bare_fork", heap_mib), &heap_mib, |b, _| {
            b.iter(bare_fork)
        });
        group.bench_with_input(BenchmarkId::new("forkserver", heap_mib), &heap_mib, |b, _| {
            b.iter(|| {
                let child = fork_blocking(&opts, || 0).unwrap();
                assert!(child.wait_blocking().unwrap().success());
            })
        });
        group.bench_with_input(BenchmarkId::new("command_true", heap_mib), &heap_mib, |b, _| {
            b.iter(|| {
                let st = std::process::Command::new("/bin/true").status().unwrap();
                assert!(st.success());
            })
        });
        drop(black_box(heap));
    }
    group.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
