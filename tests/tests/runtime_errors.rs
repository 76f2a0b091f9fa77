//! Errors coming home: many at once, none lost; nested trees carry their relay paths.

use plough::ActorError;
use plough_tests::{assert_no_descendants, become_subreaper, bounded, root_lock, runtime};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn twenty_five_failing_children_give_exactly_twenty_five_errors() {
    let _g = root_lock();
    become_subreaper();
    let started = Instant::now();
    let err = runtime(APP)
        .run(|root| {
            bounded(LIMIT, async move {
                root.nursery(|n| async move {
                    for i in 0..25 {
                        n.run_in_actor::<_, ()>(&format!("f{i}"), "fail", format!("failure {i}"))
                            .await?;
                    }
                    Ok(())
                })
                .await
            })
        })
        .unwrap_err();
    let failures = err.failures();
    assert_eq!(failures.len(), 25, "{err}");
    let mut names: Vec<String> =
        failures.iter().map(|f| f.as_remote().expect("remote").source.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25, "each failure names its own actor");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_no_descendants(Duration::from_secs(5));
}

#[test]
fn second_root_in_one_process_is_a_clear_error() {
    let _g = root_lock();
    become_subreaper();
    runtime(APP)
        .run(|root| {
            bounded(LIMIT, async move {
                let again = plough_tests::runtime(APP).run(|_r| async { Ok(()) });
                match again {
                    Err(ActorError::Runtime(m)) => assert!(m.contains("already running"), "{m}"),
                    other => panic!("second root: {other:?}"),
                }
                // In a child: a remote error of that kind.
                root.nursery(|n| async move {
                    let p = n.start_actor("nested-root").await?;
                    let e = p.run::<_, ()>("second_root", ()).await.unwrap_err();
                    let r = e.as_remote().expect("remote");
                    assert_eq!(r.type_name, "RuntimeError");
                    assert!(r.message.contains("already running"), "{}", r.message);
                    Ok(())
                })
                .await
            })
        })
        .unwrap();
    assert_no_descendants(Duration::from_secs(5));
}

#[test]
fn nested_tree_errors_carry_every_leaf_and_its_relay_path() {
    let _g = root_lock();
    become_subreaper();
    // Root -> 2 spawners -> 2 children each -> 2 failing leaves each (14 actors).
    let err = runtime(APP)
        .run(|root| {
            bounded(LIMIT, async move {
                root.nursery(|n| async move {
                    n.run_in_actor::<_, u32>("top0", "tree", (2u32, 2u32, true)).await?;
                    n.run_in_actor::<_, u32>("top1", "tree", (2u32, 2u32, true)).await?;
                    Ok(())
                })
                .await
            })
        })
        .unwrap_err();
    // The first branch to fail cancels the other (one-cancels-all); the other reports
    // whatever real failures it already had (a cancel never masks them) or, if cancelled
    // before any leaf failed, nothing. Every leaf that is reported carries its path.
    let tops = err.failures();
    assert!(!tops.is_empty() && tops.len() <= 2, "{err}");
    let mut leaves = 0;
    let mut full_branch = false;
    for top in tops {
        let top = top.as_remote().expect("a remote error, never a bare cancel");
        assert!(top.source.name.starts_with("top") || top.source.name.starts_with("d"), "{top}");
        assert!(top.canceller.is_none(), "a cancel masked a failure: {top}");
        let mut stack = vec![top];
        let mut here = 0;
        while let Some(e) = stack.pop() {
            if e.nested.is_empty() {
                here += 1;
                assert!(e.message.contains("failed on purpose"), "{e}");
                // Relay path: the middle actor, then the top actor (nearest the source first).
                let path: Vec<&str> = e.relay_path.iter().map(|a| a.name.as_str()).collect();
                assert_eq!(path.len(), 2, "{e}");
                assert!(path[0].starts_with("d2."), "{e}");
                assert!(path[1].starts_with("top"), "{e}");
            } else {
                assert_eq!(e.type_name, "MultiError", "{e}");
                stack.extend(e.nested.iter());
            }
        }
        full_branch |= here == 4;
        leaves += here;
    }
    assert!(full_branch, "the first failing branch carries all 4 of its leaves: {err}");
    assert!((4..=8).contains(&leaves), "{leaves} leaves: {err}");
    assert_no_descendants(Duration::from_secs(5));
}
