//! The cost of reading a process's start time (`marker::process_start_time`, on the spawn
//! path: every actor's marker, every liveness check of one) against procfs's own way in,
//! `Process::new(pid)?.stat()`.
//!
//! `cargo bench -p plough-fork-prims --bench start_time`. Compare within one run: the
//! machine is shared.

use criterion::{Criterion, criterion_group, criterion_main};
use plough_fork_prims::marker::process_start_time;
use std::hint::black_box;
use std::time::Duration;

fn start_time(c: &mut Criterion) {
    let pid = std::process::id();
    let expected = process_start_time(pid).expect("our own start time");
    let mut group = c.benchmark_group("start_time");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.bench_function("process_start_time", |b| {
        b.iter(|| assert_eq!(process_start_time(black_box(pid)), Some(expected)))
    });
    group.bench_function("procfs_process_stat", |b| {
        b.iter(|| {
            let stat = procfs::process::Process::new(black_box(pid) as i32).unwrap().stat();
            assert_eq!(stat.unwrap().starttime, expected)
        })
    });
    group.finish();
}

criterion_group!(benches, start_time);
criterion_main!(benches);
