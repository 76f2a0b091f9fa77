//! Nursery semantics tractor's users rely on: failures that race the one-cancels-all are
//! all reported; a run-in-actor child keeps serving until the nursery collects it; its
//! result can be awaited inside the body.

use plough::ActorError;
use plough_tests::{in_nursery, runtime};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn twenty_five_children_failing_together_give_twenty_five_errors() {
    // Some fail while the body still spawns the others, some after it is done: every
    // failure is reported, whichever side of the body's end it falls on.
    for (round, delay) in [0u64, 150, 500].into_iter().enumerate() {
        let err = in_nursery(runtime(APP), LIMIT, |n| async move {
            for i in 0..25 {
                let args = (delay, format!("failure {i}"));
                n.run_in_actor::<_, ()>(&format!("f{i}"), "fail_after", args).await?;
            }
            Ok(())
        })
        .unwrap_err();
        let failures = err.failures();
        let mut names: Vec<String> = failures
            .iter()
            .map(|f| f.as_remote().unwrap_or_else(|| panic!("remote: {f:?}")).source.name.clone())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(failures.len(), 25, "round {round}: {err}");
        assert_eq!(names.len(), 25, "each failure names its own actor");
        assert!(failures.iter().all(|f| !f.is_cancel()), "{err}");
    }
}

#[test]
fn run_in_actor_peers_that_call_each_other_always_find_each_other_up() {
    for round in 0..10 {
        let (a, b) = in_nursery(runtime(APP), LIMIT, |n| async move {
            let a = n
                .run_in_actor::<_, i64>(
                    &format!("peer-a{round}"),
                    "call_peer",
                    (format!("peer-b{round}"), 10i64),
                )
                .await?;
            let b = n
                .run_in_actor::<_, i64>(
                    &format!("peer-b{round}"),
                    "call_peer",
                    (format!("peer-a{round}"), 20i64),
                )
                .await?;
            Ok((a, b))
        })
        .unwrap();
        assert_eq!(a.into_result().unwrap(), 11, "round {round}");
        assert_eq!(b.into_result().unwrap(), 21, "round {round}");
    }
}

#[test]
fn a_run_in_actor_child_serves_after_its_function_returned_until_the_body_is_done() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let h = n.run_in_actor::<_, i64>("quick", "add", (2i64, 3i64)).await?;
        // Awaited in the body, and again: the result is kept.
        assert_eq!(h.result().await?, 5);
        assert_eq!(h.result().await?, 5);
        // The function returned, but the child is still up: reach it by name.
        let p = n.actor().wait_for_actor("quick").await?;
        assert_eq!(p.run::<_, i64>("add", (1i64, 1i64)).await?, 2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_run_handle_awaited_in_the_body_gives_the_error_which_the_nursery_also_reports() {
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        let h = n.run_in_actor::<_, ()>("failing", "fail", "bad input").await?;
        let e = h.result().await.unwrap_err();
        assert!(e.to_string().contains("bad input"), "{e}");
        Ok(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("bad input"), "{err}");
    assert!(matches!(err, ActorError::Remote(_)), "{err:?}");
}

#[test]
fn cancelling_a_context_returns_once_the_remote_side_is_done_and_its_actors_unregistered() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        for round in 0..5 {
            let name = format!("held-service-{round}");
            let p = n.start_actor(&format!("holder-{round}")).await?;
            let (ctx, pid) = p.open_context::<_, u32>("ctx_hold_service", name.clone()).await?;
            assert!(n.actor().find_actor(&name).await?.is_some(), "registered while held");
            ctx.cancel().await?;
            // Done means done: the service child is reaped and unregistered.
            assert!(plough_tests::proc_state(pid).is_none(), "round {round}: {pid} still alive");
            let found = n.actor().find_actor(&name).await?;
            assert!(found.is_none(), "round {round}: {name} is still registered");
            assert!(matches!(ctx.result::<()>().await?, plough::Outcome::Cancelled { .. }));
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_killed_child_is_unregistered_when_the_nursery_has_reaped_it() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("to-be-killed").await?;
        let pid = p.run::<_, u32>("pid", ()).await?;
        assert!(n.actor().find_actor("to-be-killed").await?.is_some());
        // Deaf to the cancel: the ladder ends it with SIGTERM/SIGKILL, and it cannot say
        // goodbye to the registrar itself.
        let _ =
            tokio::time::timeout(Duration::from_millis(200), p.run::<_, ()>("crash", "hang")).await;
        n.cancel().await;
        assert!(plough_tests::proc_state(pid).is_none());
        assert!(n.actor().find_actor("to-be-killed").await?.is_none(), "still registered");
        Ok(())
    })
    .unwrap();
}

#[test]
fn runtime_vars_return_to_their_defaults_after_the_root_exits() {
    plough_tests::with_root(runtime(APP), LIMIT, |_root| async move {
        assert!(
            plough::core::actor_label().starts_with("root@"),
            "{}",
            plough::core::actor_label()
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(plough::core::actor_label(), "", "the label outlived the root");
}

#[test]
fn a_context_that_cancels_itself_before_started_is_a_cancel_naming_it() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("self-canceller").await?;
        let e = p.open_context::<_, ()>("ctx_cancel_before_started", ()).await.unwrap_err();
        match &e {
            ActorError::ContextCancelled { canceller } => assert_eq!(canceller, p.aid()),
            other => match other.as_remote() {
                Some(r) if r.canceller.as_ref() == Some(p.aid()) => {}
                _ => panic!("expected a cancel naming {}, got {other:?}", p.aid()),
            },
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn every_actor_is_named_after_itself_in_comm() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        for name in ["w", "a-long-actor-name"] {
            let p = n.start_actor(name).await?;
            let pid = p.run::<_, u32>("pid", ()).await?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
            let want: String = format!("plough:{name}").chars().take(15).collect();
            assert_eq!(comm.trim_end(), want);
        }
        Ok(())
    })
    .unwrap();
}
