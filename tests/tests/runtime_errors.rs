//! Errors coming home: many at once, none lost; nested trees carry their relay paths.

use plough::ActorError;
use plough_tests::{in_nursery, runtime, with_root};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn twenty_five_failing_children_give_exactly_twenty_five_errors() {
    let started = Instant::now();
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        for i in 0..25 {
            n.run_in_actor::<_, ()>(&format!("f{i}"), "fail", format!("failure {i}")).await?;
        }
        Ok(())
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
}

#[test]
fn second_root_in_one_process_is_a_clear_error() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let again = plough_tests::runtime(APP).run(|_r| async { Ok(()) });
        match again {
            Err(ActorError::Misuse(plough::Misuse::ActorAlreadyRunning)) => {}
            other => panic!("second root: {other:?}"),
        }
        // In a child: a remote error of that kind.
        root.nursery(|n| async move {
            let p = n.start_actor("nested-root").await?;
            let e = p.run::<_, ()>("second_root", ()).await.unwrap_err();
            let r = e.as_remote().expect("remote");
            assert_eq!(r.kind, plough::ErrorKind::Misuse);
            assert_eq!(r.type_name, "Misuse");
            assert!(r.message.contains("already running"), "{}", r.message);
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn nested_tree_errors_carry_every_leaf_and_its_relay_path() {
    // Root -> 2 spawners -> 2 children each -> 2 failing leaves each (14 actors).
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        n.run_in_actor::<_, u32>("top0", "tree", (2u32, 2u32, true)).await?;
        n.run_in_actor::<_, u32>("top1", "tree", (2u32, 2u32, true)).await?;
        Ok(())
    })
    .unwrap_err();
    // One-cancels-all: the first leaf failure that reaches a nursery's exit cancels its
    // still-running siblings, so which leaves get to fail first varies with timing. What
    // must hold: only real failures come back (a cancel never masks one, none is a bare
    // cancel), and every reported leaf carries its relay path (middle, then top) whether
    // it arrives alone or nested in a MultiError (a nursery with a single failure passes
    // it on unwrapped).
    let tops = err.failures();
    assert!(!tops.is_empty() && tops.len() <= 2, "{err}");
    let mut leaves = 0;
    for top in tops {
        let top = top.as_remote().expect("a remote error, never a bare cancel");
        assert!(top.canceller.is_none(), "a cancel masked a failure: {top}");
        let mut stack = vec![top];
        while let Some(e) = stack.pop() {
            if e.nested.is_empty() {
                leaves += 1;
                assert!(e.message.contains("failed on purpose"), "{e}");
                let path: Vec<&str> = e.relay_path.iter().map(|a| a.name.as_str()).collect();
                assert_eq!(path.len(), 2, "{e}");
                assert!(path[0].starts_with("d2."), "{e}");
                assert!(path[1].starts_with("top"), "{e}");
            } else {
                assert_eq!(e.type_name, "MultiError", "{e}");
                stack.extend(e.nested.iter());
            }
        }
    }
    assert!((2..=8).contains(&leaves), "{leaves} leaves: {err}");
}
