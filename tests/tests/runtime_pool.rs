//! The worker pool over crashy jobs: every job is answered or reported poisoned (with the
//! deaths it caused), none is lost, none that succeeded runs again; the queue pushes
//! back; the pool resizes.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use plough::{ActorError, During, ExitStatus, PoolConfig};
use plough_tests::{runtime, with_root};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn ten_thousand_jobs_one_percent_fatal_none_lost() {
    const JOBS: u64 = 10_000;
    let started = Instant::now();
    let (answers, poisoned, replaced) = with_root(runtime(APP), LIMIT, |root| async move {
        let cfg = PoolConfig::new(4).retries(1).queue(64);
        root.pool(cfg, |pool| async move {
            let mut pending = FuturesUnordered::new();
            let mut answers = HashMap::new();
            let mut poisoned = HashMap::new();
            let mut settle = |(x, r): (u64, plough::Result<u64>)| match r {
                Ok(v) => assert!(answers.insert(x, v).is_none(), "job {x} answered twice"),
                Err(e) => assert!(poisoned.insert(x, e).is_none(), "job {x} reported twice"),
            };
            for x in 0..JOBS {
                // Every job whose x ends in 42 aborts its worker, every time.
                let h = pool.submit::<_, u64>("job", (x, 100u64, 42u64)).await?;
                pending.push(async move { (x, h.await) });
                // Take what is done meanwhile, so the handles do not pile up.
                while pending.len() > 256 {
                    let done = pending.next().await.expect("pending");
                    settle(done);
                }
            }
            while let Some(done) = pending.next().await {
                settle(done);
            }
            Ok((answers, poisoned, pool.replaced()))
        })
        .await
    })
    .unwrap();
    assert_eq!(answers.len() + poisoned.len(), JOBS as usize, "every job is answered");
    for (x, v) in &answers {
        assert_ne!(x % 100, 42, "a fatal job cannot succeed");
        assert_eq!(*v, x * 2);
    }
    let fatal: HashSet<u64> = (0..JOBS).filter(|x| x % 100 == 42).collect();
    assert_eq!(poisoned.keys().copied().collect::<HashSet<_>>(), fatal);
    for e in poisoned.values() {
        let ActorError::JobPoisoned { function, deaths, .. } = e else { panic!("{e:?}") };
        assert_eq!(function, "job");
        assert_eq!(deaths.len(), 2, "1 run + 1 retry: {e}");
        for d in deaths {
            let ActorError::ActorDied { status, during, .. } = d else { panic!("{d:?}") };
            assert!(matches!(status, ExitStatus::Signaled { signal: 6, .. }), "{status}");
            assert!(matches!(during, During::Call { function, .. } if function == "job"));
        }
    }
    assert_eq!(replaced, 200, "each fatal job killed two workers");
    eprintln!("10,000 jobs, 100 fatal, 200 worker deaths: {:.2?}", started.elapsed());
}

#[test]
fn a_job_whose_worker_died_once_runs_again_and_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_string_lossy().into_owned();
    let out = with_root(runtime(APP), LIMIT, |root| async move {
        root.pool(PoolConfig::new(2), |pool| async move {
            let mut hs = Vec::new();
            for x in 0..6u64 {
                hs.push(pool.submit::<_, u64>("job_once_fatal", (x, d.clone())).await?);
            }
            let mut got = Vec::new();
            for h in hs {
                got.push(h.await?);
            }
            Ok((got, pool.replaced()))
        })
        .await
    })
    .unwrap();
    assert_eq!(out.0, (0..6).collect::<Vec<u64>>());
    assert_eq!(out.1, 6, "each job killed one worker, once");
}

#[test]
fn submit_waits_for_room_in_the_queue() {
    with_root(runtime(APP), LIMIT, |root| async move {
        root.pool(PoolConfig::new(1).queue(2), |pool| async move {
            // One job runs (a second), two wait: the queue is full.
            let running = pool.submit::<_, ()>("sleep", 1000u64).await?;
            let q1 = pool.submit::<_, i64>("add", (1i64, 1i64)).await?;
            // Until the worker has taken the first job, the queue holds it: wait for room
            // for the second one to be sure the worker runs it.
            let q2 = pool.submit::<_, i64>("add", (2i64, 2i64)).await?;
            let blocked = tokio::time::timeout(
                Duration::from_millis(300),
                pool.submit::<_, i64>("add", (3i64, 3i64)),
            )
            .await;
            assert!(blocked.is_err(), "a full queue makes submit wait");
            running.await?;
            assert_eq!(q1.await?, 2);
            assert_eq!(q2.await?, 4);
            let h = pool.submit::<_, i64>("add", (3i64, 3i64)).await?;
            assert_eq!(h.await?, 6);
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn the_pool_grows_and_shrinks() {
    with_root(runtime(APP), LIMIT, |root| async move {
        root.pool(PoolConfig::new(1), |pool| async move {
            // Jobs that each hold their worker a while, so every worker takes one.
            let pids = |n: usize| {
                let pool = pool.clone();
                async move {
                    let mut hs = Vec::new();
                    for _ in 0..n {
                        hs.push(pool.submit::<_, u32>("pid_after", 200u64).await?);
                    }
                    let mut pids = HashSet::new();
                    for h in hs {
                        pids.insert(h.await?);
                    }
                    Ok::<_, ActorError>(pids)
                }
            };
            assert_eq!(pids(4).await?.len(), 1);
            pool.resize(4);
            assert_eq!(pool.workers(), 4);
            assert_eq!(pids(8).await?.len(), 4, "four workers share the jobs");
            pool.resize(1);
            assert_eq!(pool.workers(), 1);
            let after = pids(4).await?;
            assert_eq!(after.len(), 1, "one worker is left: {after:?}");
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn jobs_left_when_the_pool_ends_are_told_so() {
    let left = with_root(runtime(APP), LIMIT, |root| async move {
        root.pool(PoolConfig::new(1), |pool| async move {
            pool.submit::<_, ()>("sleep", 60_000u64).await?;
            let queued = pool.submit::<_, i64>("add", (1i64, 1i64)).await?;
            Ok(queued)
        })
        .await
    })
    .unwrap();
    let e = futures::executor::block_on(left).unwrap_err();
    assert!(matches!(e, ActorError::Misuse(plough::Misuse::PoolClosed)), "{e:?}");
}
