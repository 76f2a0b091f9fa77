//! The metrics of a known workload, read through `metrics-util`'s debugging recorder: in
//! this process (the root: spawns, their latency, live actors, caller-side calls and
//! errors, streams received, ladder rungs, restarts) and in a child (callee-side calls and
//! errors, streams sent), through its `metrics_rows` function. Runs once, on the default
//! backend: what it counts does not depend on the backend or the transport.

use plough::core::metrics as m;
use plough::{ActorError, ChildSpec, Strategy, Supervisor};
use plough_tests::obs::{MetricRow, recorder, snapshot, value};
use plough_tests::{quick_ladder, runtime, with_root};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);
const CALLS: usize = 5;
const ERRORS: usize = 2;
const STREAMED: u64 = 7;

/// The labels of a plain function call of `f`, counted on `side`.
fn call<'a>(f: &'a str, side: &'a str) -> [(&'a str, &'a str); 3] {
    [(m::LABEL_FUNCTION, f), (m::LABEL_SIDE, side), (m::LABEL_KIND, "function")]
}

/// Errors of `function` on `side`, of any kind.
fn errors(rows: &[MetricRow], function: &str, side: &str) -> f64 {
    let has = |r: &MetricRow, k: &str, v: &str| r.labels.iter().any(|(a, b)| a == k && b == v);
    rows.iter()
        .filter(|r| r.name == m::CALL_ERRORS)
        .filter(|r| has(r, m::LABEL_FUNCTION, function) && has(r, m::LABEL_SIDE, side))
        .map(|r| r.value)
        .sum()
}

#[test]
fn a_known_workload_is_counted_on_both_sides() {
    recorder();
    let rt = runtime(APP).configure(|c| c.budgets.ladder = quick_ladder());
    let (backend, child, during) = with_root(rt, LIMIT, |root| async move {
        let backend = root.spawn_method().key();
        root.nursery(|n| async move {
            let p = n.start_actor("counted").await?;
            p.run::<_, ()>("metrics_install", ()).await?;
            for i in 0..CALLS as i64 {
                assert_eq!(p.run::<_, i64>("add", (i, 1)).await?, i + 1);
            }
            for _ in 0..ERRORS {
                assert!(p.run::<_, ()>("fail", "on purpose".to_owned()).await.is_err());
            }
            assert!(p.run::<_, ()>("no_such_function", ()).await.is_err());
            let s = p.open_stream_from("range", (0u64, STREAMED)).await?;
            let mut got = 0;
            while s.recv::<u64>().await?.is_some() {
                got += 1;
            }
            assert_eq!(got, STREAMED);
            // A context whose result is an error (its function calls `started` twice).
            let (ctx, _) = p.open_context::<_, u8>("ctx_started_twice", ()).await?;
            assert!(ctx.result::<()>().await.is_err());
            let child: Vec<MetricRow> = p.run("metrics_rows", ()).await?;
            // A snapshot drains the histograms: the spawn's is read from this one.
            Ok((backend, child, snapshot()))
        })
        .await
    })
    .unwrap();
    let root = snapshot();

    // The root: one spawn, timed; one live child while it ran, none after.
    let spawn = [(m::LABEL_BACKEND, backend), (m::LABEL_OUTCOME, "ok")];
    assert_eq!(value(&during, m::SPAWNS, &spawn), 1.0, "{during:#?}");
    assert_eq!(value(&during, m::SPAWN_DURATION, &[(m::LABEL_BACKEND, backend)]), 1.0);
    assert_eq!(value(&during, m::ACTORS_LIVE, &[(m::LABEL_BACKEND, backend)]), 1.0);
    assert_eq!(value(&root, m::SPAWNS, &spawn), 1.0, "{root:#?}");
    assert_eq!(value(&root, m::ACTORS_LIVE, &[(m::LABEL_BACKEND, backend)]), 0.0);
    // Its calls and their errors, by function.
    assert_eq!(value(&root, m::CALLS, &call("add", "caller")), CALLS as f64);
    assert_eq!(value(&root, m::CALLS, &call("fail", "caller")), ERRORS as f64);
    let user_error =
        |side| [(m::LABEL_FUNCTION, "fail"), (m::LABEL_SIDE, side), (m::LABEL_ERROR, "user")];
    assert_eq!(value(&root, m::CALL_ERRORS, &user_error("caller")), ERRORS as f64);
    let stream =
        [(m::LABEL_FUNCTION, "range"), (m::LABEL_SIDE, "caller"), (m::LABEL_KIND, "stream")];
    assert_eq!(value(&root, m::CALLS, &stream), 1.0);
    let received = [(m::LABEL_FUNCTION, "range"), (m::LABEL_DIRECTION, "received")];
    assert_eq!(value(&root, m::STREAM_MESSAGES, &received), STREAMED as f64);
    assert!(value(&root, m::STREAM_BYTES, &received) >= STREAMED as f64);

    assert_eq!(errors(&root, "ctx_started_twice", "caller"), 1.0);
    assert_eq!(errors(&child, "ctx_started_twice", "callee"), 1.0);

    // The child: the same calls, served; an unknown function under one bounded label.
    assert_eq!(value(&child, m::CALLS, &call("add", "callee")), CALLS as f64, "{child:#?}");
    assert_eq!(value(&child, m::CALL_ERRORS, &user_error("callee")), ERRORS as f64);
    let unknown = [
        (m::LABEL_FUNCTION, m::UNKNOWN_FUNCTION),
        (m::LABEL_SIDE, "callee"),
        (m::LABEL_ERROR, "NoSuchFunction"),
    ];
    assert_eq!(value(&child, m::CALL_ERRORS, &unknown), 1.0);
    assert!(child.iter().all(|r| r.labels.iter().all(|(_, v)| v != "no_such_function")));
    let sent = [(m::LABEL_FUNCTION, "range"), (m::LABEL_DIRECTION, "sent")];
    assert_eq!(value(&child, m::STREAM_MESSAGES, &sent), STREAMED as f64);
    assert_eq!(value(&child, m::STREAM_BYTES, &sent), value(&root, m::STREAM_BYTES, &received));
}

#[test]
fn the_ladder_counts_its_rungs_and_a_supervisor_its_restarts() {
    recorder();
    let rt = runtime(APP).configure(|c| c.budgets.ladder = quick_ladder());
    with_root(rt, LIMIT, |root| async move {
        // A child that answers no cancel: the ladder goes to SIGTERM, then SIGKILL.
        root.nursery(|n| async move {
            let p = n.start_actor("stubborn").await?;
            let (_ctx, ()) = p.open_context::<_, ()>("ctx_started_then_block", 60_000u64).await?;
            Ok(())
        })
        .await?;
        // A supervised child that dies once is restarted once.
        let sup = Supervisor::new(Strategy::OneForOne).child(ChildSpec::actor("fragile"));
        root.supervise(sup, |s| async move {
            let p = s.portal("fragile").await?;
            let _ = p.run::<_, ()>("crash", "abort").await;
            // A portal taken before the restart reaches the dead child: ask again.
            loop {
                match s.portal("fragile").await?.run::<_, i64>("add", (1, 1)).await {
                    Ok(sum) => break assert_eq!(sum, 2),
                    Err(ActorError::ActorDied { .. } | ActorError::TransportClosed { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
    })
    .unwrap();
    let root = snapshot();
    assert_eq!(
        value(&root, m::LADDER_ESCALATIONS, &[(m::LABEL_RUNG, "sigterm")]),
        1.0,
        "{root:#?}"
    );
    assert_eq!(value(&root, m::LADDER_ESCALATIONS, &[(m::LABEL_RUNG, "sigkill")]), 1.0);
    assert_eq!(value(&root, m::RESTARTS, &[]), 1.0);
}
