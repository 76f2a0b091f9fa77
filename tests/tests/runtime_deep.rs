//! Deep trees: a chain of 10 actors below the root. An error at the leaf reaches the
//! root with its whole relay path; SIGKILL of the actor at depth 5 takes everything below
//! it (actors, and their fork servers) down within `Budgets::tree_teardown(5)`, and the
//! root learns, through the survivors above, which actor died and how.

use plough::{ActorError, Budgets, ErrorKind};
use plough_fork_prims::ChildHandle;
use plough_tests::{in_nursery, proc_ppid, proc_state, runtime, wait_until, with_root};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const DEPTH: u32 = 10;
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn an_error_at_the_leaf_of_a_depth_10_chain_reaches_the_root_with_its_whole_relay_path() {
    // top (tree(9)) -> d9.0 (tree(8)) -> ... -> d1.0 (tree(0), fails): 10 actors.
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        n.run_in_actor::<_, u32>("top", "tree", (DEPTH - 1, 1u32, true)).await?;
        Ok(())
    })
    .unwrap_err();
    let failures = err.failures();
    assert_eq!(failures.len(), 1, "{err}");
    let e = failures[0].as_remote().expect("a remote error");
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert_eq!(e.source.name, "d1.0", "raised at the leaf: {e}");
    assert!(e.message.contains("failed on purpose"), "{e}");
    let path: Vec<&str> = e.relay_path.iter().map(|a| a.name.as_str()).collect();
    let mut expect: Vec<String> = (2..DEPTH).map(|d| format!("d{d}.0")).collect();
    expect.push("top".to_owned());
    assert_eq!(path, expect, "every hop, nearest the leaf first: {e}");
    let mut pids: Vec<u32> = e.relay_path.iter().map(|a| a.pid).collect();
    pids.push(e.source.pid);
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), DEPTH as usize, "ten distinct processes: {e}");
    assert!(e.to_string().contains("(relayed via d2.0@"), "{e}");
}

/// Gone or a zombie: it has exited.
fn exited(pid: u32) -> bool {
    proc_state(pid).is_none_or(|s| s == 'Z')
}

#[test]
fn sigkill_at_depth_5_of_a_depth_10_chain_takes_everything_below_down_within_the_budget() {
    let budgets = Budgets::default();
    let (elapsed, below, err) = with_root(runtime(APP), LIMIT, |root| async move {
        root.nursery(|n| async move {
            let top = n.start_actor("chain1").await?;
            let (ctx, pids) =
                top.open_context::<_, Vec<u32>>("ctx_chain", (1u32, DEPTH - 1)).await?;
            assert_eq!(pids.len(), DEPTH as usize, "{pids:?}");
            let middle = pids[4]; // chain5, at depth 5
            let below = plough_tests::descendants_of(middle);
            for p in &pids[5..] {
                assert!(below.contains(p), "chain actor {p} is below the middle: {below:?}");
            }
            let t = Instant::now();
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(middle as i32).unwrap(),
                rustix::process::Signal::KILL,
            )
            .unwrap();
            let watched = below.clone();
            let limit = budgets.tree_teardown(5);
            let elapsed = tokio::task::spawn_blocking(move || {
                wait_until(limit * 2, "everything below the killed actor exited", || {
                    watched.iter().all(|&p| exited(p))
                });
                let elapsed = t.elapsed();
                // Orphans reparented to this process (a subreaper) are ours to reap; only
                // those below the killed actor (the root's own children are its handles').
                wait_until(budgets.reap_bound, "the orphans reaped", || {
                    for &p in &watched {
                        if proc_ppid(p) == Some(std::process::id())
                            && let Ok(h) = ChildHandle::adopt(p)
                        {
                            let _ = h.wait_blocking();
                        }
                    }
                    watched.iter().all(|&p| proc_state(p).is_none())
                });
                elapsed
            })
            .await
            .unwrap();
            let err = ctx.result::<()>().await.expect_err("the chain broke");
            Ok((elapsed, below, err))
        })
        .await
    })
    .unwrap();
    eprintln!("{} processes below the killed actor exited in {elapsed:?}", below.len());
    plough_tests::assert_no_descendants(budgets.reap_bound);
    assert!(
        elapsed <= budgets.tree_teardown(5),
        "took {elapsed:?}, over tree_teardown(5) = {:?}",
        budgets.tree_teardown(5)
    );
    // The actor above the killed one says who died and how; the rest relay it home.
    let e = err.as_remote().unwrap_or_else(|| panic!("a remote error: {err}"));
    assert_eq!(e.kind, ErrorKind::ActorDied, "{e}");
    assert_eq!(e.source.name, "chain4", "{e}");
    assert!(e.message.contains("chain5@") && e.message.contains("SIGKILL"), "{e}");
    let path: Vec<&str> = e.relay_path.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(path, ["chain3", "chain2", "chain1"], "{e}");
    assert!(!matches!(err, ActorError::Multi(_)), "{err}");
}
