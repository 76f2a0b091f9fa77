//! Cancellation: via the nursery, by the body's error, and the hard-kill end of the ladder.

use plough::{ActorError, Result};
use plough_tests::{in_nursery, quick_ladder, runtime, with_root};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn cancel_a_single_child_through_the_nursery() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("sleeper").await?;
        let pid: u32 = p.run("pid", ()).await?;
        n.cancel().await;
        assert!(plough_tests::proc_state(pid).is_none(), "cancelled child not reaped");
        assert!(p.is_closed());
        let after: Result<u32> = p.run("pid", ()).await;
        assert!(matches!(after, Err(ActorError::TransportClosed { .. })), "{after:?}");
        // The nursery stays usable.
        let q = n.start_actor("again").await?;
        assert_eq!(q.run::<_, i64>("add", (1, 1)).await?, 2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancel_actor_reports_the_acknowledgement() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("polite").await?;
        assert!(p.cancel_actor().await, "a responsive child acknowledges");
        // It exits by itself (an expected exit: no nursery failure) ...
        tokio::time::timeout(Duration::from_secs(5), p.closed()).await.expect("child exits");
        // ... and a second cancel is not acknowledged, without waiting long.
        let t = Instant::now();
        assert!(!p.cancel_actor().await);
        assert!(t.elapsed() < Duration::from_secs(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_body_error_cancels_all_children() {
    let started = Instant::now();
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        let mut calls = Vec::new();
        for i in 0..3 {
            let p = n.start_actor(&format!("busy{i}")).await?;
            // Long calls in flight when the body fails.
            calls.push(tokio::spawn(async move { p.run::<_, ()>("sleep", 60_000u64).await }));
        }
        tokio::task::yield_now().await;
        Err::<(), _>(ActorError::other("body gave up"))
    })
    .unwrap_err();
    assert!(matches!(&err, ActorError::Other(e) if e.to_string() == "body gave up"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn a_child_stuck_in_a_blocking_call_is_hard_killed_within_the_ladder() {
    let ladder = quick_ladder();
    let (pid, took) = with_root(
        runtime(APP).configure(|c| c.budgets.ladder = ladder),
        LIMIT,
        |root| async move {
            let (pid, t) = root
                .nursery(|n| async move {
                    let p = n.start_actor("blocker").await?;
                    let pid = p.run::<_, u32>("pid", ()).await?;
                    let p2 = p.clone();
                    // The call blocks the child's only thread: it can answer nothing.
                    tokio::spawn(async move { p2.run::<_, ()>("block", 60_000u64).await });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok((pid, Instant::now()))
                })
                .await?;
            Ok((pid, t.elapsed()))
        },
    )
    .unwrap();
    assert!(plough_tests::proc_state(pid).is_none(), "blocked child still alive");
    // IPC cancel (no ack) + wait for exit + SIGTERM (stays pending: the thread is blocked)
    // + SIGKILL, plus the reap.
    assert!(
        took < ladder.total() + Duration::from_secs(1),
        "took {took:?}, ladder {:?}",
        ladder.total()
    );
    assert!(took >= ladder.ack_timeout, "the ladder was skipped: {took:?}");
}
