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
