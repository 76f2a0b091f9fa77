//! Deaths and supervisors, with real crashes: every path that sees a child die reports the
//! same typed `ActorDied` (status, and what it was doing); supervisors restart exactly the
//! children OTP would, give up at their restart intensity with the exits that broke it,
//! nest, and take their children down in reverse order, each within its own budget.

use plough::{
    ActorError, ChildSpec, During, ExitStatus, Portal, Restart, Strategy, Supervised, Supervisor,
};
use plough_tests::{in_nursery, quick_ladder, runtime, with_root};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;

/// Whether an exit status is the one a way of dying gives.
type StatusCheck = fn(ExitStatus) -> bool;

/// The death in `e`, or a panic naming what came instead.
#[track_caller]
fn death(e: &ActorError) -> (&str, ExitStatus, &During) {
    match e {
        ActorError::ActorDied { actor, status, during, .. } => (&actor.name, *status, during),
        other => panic!("expected ActorDied, got {other:?}"),
    }
}

#[track_caller]
fn assert_call(during: &During, function: &str) {
    match during {
        During::Call { function: f, .. } => assert_eq!(f, function, "{during}"),
        other => panic!("expected a death during `{function}`, got {other}"),
    }
}

fn is_signal(status: ExitStatus, signal: i32) -> bool {
    matches!(status, ExitStatus::Signaled { signal: s, .. } if s == signal)
}

/// Runs `body` under a supervisor of temporary children `ids` (a death there fails
/// nothing, so the body sees each death itself).
fn with_temporaries<F, Fut>(ids: &[&str], body: F)
where
    F: FnOnce(Supervised) -> Fut,
    Fut: std::future::Future<Output = plough::Result<()>>,
{
    let sup = ids.iter().fold(Supervisor::new(Strategy::OneForOne), |s, id| {
        s.child(ChildSpec::actor(*id).restart(Restart::Temporary))
    });
    with_root(runtime(APP), LIMIT, |root| async move { root.supervise(sup, body).await }).unwrap();
}

#[test]
fn a_death_during_a_call_names_the_call_and_the_status_for_every_way_to_die() {
    let ids = ["victim-abort", "victim-segv", "victim-exit3", "victim-kill", "panicky"];
    with_temporaries(&ids, |n| async move {
        let cases: [(&str, StatusCheck); 4] = [
            ("abort", |s| is_signal(s, SIGABRT)),
            ("segv", |s| is_signal(s, SIGSEGV)),
            ("exit3", |s| s == ExitStatus::Exited(3)),
            ("kill", |s| is_signal(s, SIGKILL)),
        ];
        for (mode, want) in cases {
            let p = n.portal(&format!("victim-{mode}")).await?;
            let e = p.run::<_, ()>("crash", mode).await.unwrap_err();
            let (name, status, during) = death(&e);
            assert_eq!(name, format!("victim-{mode}"));
            assert!(want(status), "{mode}: {status}");
            assert_call(during, "crash");
            let text = e.to_string();
            assert!(text.contains("during call `crash`"), "{text}");
            // The portal says the same afterwards.
            let again = p.run::<_, u32>("pid", ()).await.unwrap_err();
            assert!(matches!(again, ActorError::ActorDied { .. }), "{again:?}");
        }
        // A panic in a handler is the handler's error, not a death: the actor lives on.
        let p = n.portal("panicky").await?;
        let e = p.run::<_, ()>("crash", "panic").await.unwrap_err();
        assert_eq!(e.as_remote().map(|r| r.kind), Some(plough::ErrorKind::Panic), "{e:?}");
        assert!(p.run::<_, u32>("pid", ()).await? > 0);
        Ok(())
    });
}

#[test]
fn a_death_in_a_context_or_its_stream_is_the_same_typed_death() {
    with_temporaries(&["ctx-victim", "stream-victim"], |n| async move {
        let p = n.portal("ctx-victim").await?;
        // It may die before its `started` is out: then opening the context reports it.
        let e = match p.open_context::<_, ()>("ctx_crash", "segv").await {
            Ok((ctx, ())) => ctx.result::<()>().await.unwrap_err(),
            Err(e) => e,
        };
        let (_, status, during) = death(&e);
        assert!(is_signal(status, SIGSEGV), "{status}");
        assert_call(during, "ctx_crash");

        let p = n.portal("stream-victim").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_stream_then_crash", "exit3").await?;
        let s = ctx.open_stream().await?;
        assert_eq!(s.recv::<u32>().await?, Some(1));
        s.send(&0u32).await?;
        let e = s.recv::<u32>().await.unwrap_err();
        let (_, status, during) = death(&e);
        assert_eq!(status, ExitStatus::Exited(3));
        assert_call(during, "ctx_stream_then_crash");
        Ok(())
    });
}

#[test]
fn the_nursery_reports_a_child_killed_from_outside_as_a_death_while_idle() {
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("outsider-kills-me").await?;
        let pid = p.run::<_, u32>("pid", ()).await?;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).expect("pid"),
            rustix::process::Signal::KILL,
        )
        .expect("kill");
        std::future::pending::<plough::Result<()>>().await
    })
    .unwrap_err();
    let (name, status, during) = death(&err);
    assert_eq!(name, "outsider-kills-me");
    assert!(is_signal(status, SIGKILL), "{status}");
    assert_eq!(*during, During::Idle);
}

/// The pids of `ids`, through the supervisor's current portals.
async fn pids(s: &Supervised, ids: &[&str]) -> plough::Result<Vec<u32>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(s.portal(id).await?.run::<_, u32>("pid", ()).await?);
    }
    Ok(out)
}

/// Kills child `id` with `exit(3)` and waits for the supervisor's report of that exit.
async fn crash_child(s: &Supervised, id: &str) -> plough::Result<plough::ChildExit> {
    let mut exits = s.exits();
    let p: Portal = s.portal(id).await?;
    let e = p.run::<_, ()>("crash", "exit3").await.unwrap_err();
    assert!(matches!(e, ActorError::ActorDied { .. }), "{e:?}");
    let exit = exits.recv().await?.expect("an exit event");
    Ok(exit)
}

/// Which of three children a, b, c each strategy restarts when b dies.
fn restarted_by(strategy: Strategy) -> [bool; 3] {
    let ids = ["a", "b", "c"];
    let sup = ids.iter().fold(Supervisor::new(strategy), |s, id| s.child(ChildSpec::actor(*id)));
    with_root(runtime(APP), LIMIT, |root| async move {
        root.supervise(sup, |s| async move {
            let before = pids(&s, &ids).await?;
            let exit = crash_child(&s, "b").await?;
            assert_eq!(exit.id, "b");
            assert!(exit.restarting, "{exit}");
            assert_eq!(exit.status, Some(ExitStatus::Exited(3)), "{exit}");
            assert_call(&exit.during, "crash");
            assert!(matches!(exit.error, Some(ActorError::ActorDied { .. })), "{exit}");
            assert_eq!(s.restarts(), 1);
            let after = pids(&s, &ids).await?;
            Ok([0, 1, 2].map(|i| before[i] != after[i]))
        })
        .await
    })
    .unwrap()
}

#[test]
fn one_for_one_restarts_only_the_child_that_died() {
    assert_eq!(restarted_by(Strategy::OneForOne), [false, true, false]);
}

#[test]
fn one_for_all_restarts_every_child() {
    assert_eq!(restarted_by(Strategy::OneForAll), [true, true, true]);
}

#[test]
fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    assert_eq!(restarted_by(Strategy::RestForOne), [false, true, true]);
}

#[test]
fn restart_types_decide_who_comes_back() {
    // Under one_for_all, b's death takes down a temporary sibling for good, and brings
    // back a transient one that had already ended normally (it is still a child).
    let sup = Supervisor::new(Strategy::OneForAll)
        .intensity(10, Duration::from_secs(60))
        .child(ChildSpec::actor("temp").restart(Restart::Temporary))
        .child(ChildSpec::actor("b"))
        .child(ChildSpec::run("job", "add", &(1i64, 2i64)).unwrap().restart(Restart::Transient));
    with_root(runtime(APP), LIMIT, |root| async move {
        root.supervise(sup, |s| async move {
            let mut exits = s.exits();
            // The transient job returns: a normal exit, not restarted.
            let done = exits.recv().await?.expect("the job's exit");
            assert_eq!(done.id, "job");
            assert!(done.error.is_none() && !done.restarting, "{done}");
            assert!(matches!(s.portal("job").await, Err(ActorError::Misuse(_))));
            let exit = crash_child(&s, "b").await?;
            assert_eq!(exit.id, "b");
            // temp is gone for good; job ran again (and ended normally again).
            assert!(matches!(s.portal("temp").await, Err(ActorError::Misuse(_))));
            let again = exits.recv().await?;
            let again = match again {
                Some(e) if e.id == "b" => exits.recv().await?.expect("the job's second exit"),
                Some(e) => e,
                None => panic!("no second exit of the job"),
            };
            assert_eq!(again.id, "job", "{again}");
            assert!(again.error.is_none(), "{again}");
            s.portal("b").await?.run::<_, u32>("pid", ()).await?;
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn a_transient_child_is_restarted_after_a_crash_a_temporary_one_is_not() {
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(60))
        .child(ChildSpec::actor("transient").restart(Restart::Transient))
        .child(ChildSpec::actor("temporary").restart(Restart::Temporary));
    with_root(runtime(APP), LIMIT, |root| async move {
        root.supervise(sup, |s| async move {
            let exit = crash_child(&s, "transient").await?;
            assert!(exit.restarting, "{exit}");
            s.portal("transient").await?.run::<_, u32>("pid", ()).await?;
            let exit = crash_child(&s, "temporary").await?;
            assert!(!exit.restarting, "{exit}");
            assert!(matches!(s.portal("temporary").await, Err(ActorError::Misuse(_))));
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn exceeding_the_restart_intensity_ends_the_supervisor_with_the_exits() {
    // OTP's default: one restart in 5 s. The second death ends it.
    let sup = Supervisor::new(Strategy::OneForOne).child(ChildSpec::actor("fragile"));
    let err = with_root(runtime(APP), LIMIT, |root| async move {
        root.supervise(sup, |s| async move {
            for _ in 0..2 {
                let p = s.portal("fragile").await?;
                let _ = p.run::<_, ()>("crash", "abort").await;
            }
            std::future::pending::<plough::Result<()>>().await
        })
        .await
    })
    .unwrap_err();
    let ActorError::SupervisorGaveUp { intensity, exits, .. } = &err else {
        panic!("expected SupervisorGaveUp, got {err:?}")
    };
    assert_eq!((intensity.max_restarts, intensity.period), (1, Duration::from_secs(5)));
    assert_eq!(exits.len(), 2, "{err}");
    for e in exits {
        assert_eq!(e.id, "fragile");
        assert!(e.status.is_some_and(|s| is_signal(s, SIGABRT)), "{e}");
    }
    assert!(err.to_string().contains("gave up"), "{err}");
}

#[test]
fn a_crash_loop_stops_at_the_intensity_limit() {
    // A child that dies as soon as it runs, forever: bounded by the intensity, no fork
    // loop. 5 restarts a minute allowed: exactly 6 exits, then the supervisor ends.
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(60))
        .child(ChildSpec::run("looper", "crash", &"abort").unwrap());
    let started = Instant::now();
    let err = with_root(runtime(APP), LIMIT, |root| async move {
        root.supervise(sup, |_s| std::future::pending::<plough::Result<()>>()).await
    })
    .unwrap_err();
    let elapsed = started.elapsed();
    let ActorError::SupervisorGaveUp { exits, .. } = &err else { panic!("{err:?}") };
    assert_eq!(exits.len(), 6, "{err}");
    assert_eq!(exits.last().map(|e| e.restarts), Some(5));
    eprintln!(
        "crash loop: 6 deaths in {elapsed:.2?} ({:.1} restarts/s), then the supervisor ended",
        5.0 / elapsed.as_secs_f64()
    );
}

#[test]
fn children_stop_in_reverse_order_each_within_its_own_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("order");
    let log_s = log.to_string_lossy().into_owned();
    let note = |id: &str| ChildSpec::actor(id).shutdown(quick_ladder());
    let sup = Supervisor::new(Strategy::OneForOne)
        .child(note("first"))
        .child(note("second"))
        // Deaf to cancels: SIGTERM, then SIGKILL, within its short ladder.
        .child(ChildSpec::actor("hung").shutdown(quick_ladder()))
        .child(note("last"));
    let started = Instant::now();
    // The contexts outlive the body (they are its result): the children are cancelled by
    // the supervisor's own teardown, not by the contexts being dropped.
    let contexts = with_root(runtime(APP), LIMIT, |root| async move {
        root.supervise(sup, |s| async move {
            let mut contexts = Vec::new();
            for id in ["first", "second", "last"] {
                let p = s.portal(id).await?;
                let args = (log_s.clone(), id.to_owned());
                contexts.push(p.open_context::<_, ()>("ctx_note_when_cancelled", args).await?.0);
            }
            let hung = s.portal("hung").await?;
            // The call blocks the child's only thread for good; we stop waiting for it.
            let hang = hung.run::<_, ()>("crash", "hang");
            assert!(tokio::time::timeout(Duration::from_millis(300), hang).await.is_err());
            Ok(contexts)
        })
        .await
    })
    .unwrap();
    drop(contexts);
    let took = started.elapsed();
    let order = std::fs::read_to_string(&log).unwrap_or_default();
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order, ["last", "second", "first"], "stopped in reverse start order");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_nested_supervisor_that_gives_up_is_an_abnormal_exit_of_its_parent() {
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(1, Duration::from_secs(60))
        .child(ChildSpec::run("sub", "sub_supervisor", &()).unwrap());
    let err = with_root(runtime(APP), LIMIT, |root| async move {
        root.supervise(sup, |_s| std::future::pending::<plough::Result<()>>()).await
    })
    .unwrap_err();
    let ActorError::SupervisorGaveUp { exits, .. } = &err else { panic!("{err:?}") };
    assert_eq!(exits.len(), 2, "{err}");
    for e in exits {
        assert_eq!(e.id, "sub");
        let remote = e.error.as_ref().and_then(ActorError::as_remote).expect("a remote error");
        assert!(remote.message.contains("gave up"), "{remote}");
    }
}
