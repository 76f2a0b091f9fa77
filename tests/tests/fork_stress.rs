//! 2,000 forks through the forkserver while the parent is as busy as a real runtime:
//! a multi-thread tokio runtime with busy tasks, threads that allocate, write to stderr
//! and emit tracing events. Every child builds a current-thread runtime, writes to
//! stderr, allocates, and exits 0. A hang here is the bug docs/design.md measured ("Measured here").

use plough_fork_prims::{ForkOptions, fork};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const FORKS: usize = 2_000;
const CONCURRENT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_forks_under_a_busy_parent() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let stop = Arc::new(AtomicBool::new(false));
    let mut noise = Vec::new();
    for t in 0..3 {
        let stop = Arc::clone(&stop);
        noise.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v: Vec<u8> = vec![t as u8; 1 + (i as usize % 4096)];
                std::hint::black_box(&v);
                if i % 64 == 0 {
                    eprintln!("noise thread {t}: {i}");
                    tracing::info!(thread = t, i, "noise");
                }
                i += 1;
            }
        }));
    }
    let busy_stop = Arc::clone(&stop);
    let busy = tokio::spawn(async move {
        let mut n = 0u64;
        while !busy_stop.load(Ordering::Relaxed) {
            n = n.wrapping_add(1);
            tokio::task::yield_now().await;
        }
        n
    });

    let result = tokio::time::timeout(Duration::from_secs(240), async {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..CONCURRENT {
            tasks.spawn(async move {
                for i in (worker..FORKS).step_by(CONCURRENT) {
                    let child = fork(&ForkOptions::default(), move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        rt.block_on(async {
                            let v: Vec<u64> = (0..1024).collect();
                            tokio::task::yield_now().await;
                            eprintln!("child {i}: {}", v.iter().sum::<u64>());
                        });
                        0
                    })
                    .await
                    .unwrap_or_else(|e| panic!("fork {i}: {e}"));
                    let st = tokio::time::timeout(Duration::from_secs(20), child.wait())
                        .await
                        .unwrap_or_else(|_| panic!("child {i} (pid {}) hung", child.pid()))
                        .unwrap();
                    assert!(st.success(), "child {i}: {st}");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in noise {
        t.join().unwrap();
    }
    assert!(busy.await.unwrap() > 0);
    result.expect("2,000 forks did not finish in time: a child hung");
}
