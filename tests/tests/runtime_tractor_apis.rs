//! tractor's APIs as plough has them (issue 17): per-actor exposure (`enable_modules`),
//! context introspection (`canceller`, `cancel_acked`, `maybe_error`, `outcome`), portals
//! from a child to its parent and to the root. Every test is bounded and checks that
//! nothing is left behind.

use plough::testing::BreakSide;
use plough::{ActorError, ErrorKind, Misuse, Outcome, SharedCache, SpawnOptions};
use plough_tests::runtime;
use plough_tests::tractor_app::{CancelSeen, Lineage, LogState};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

fn kind(r: Result<impl std::fmt::Debug, ActorError>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

#[test]
fn a_spawn_names_what_its_child_serves_and_the_child_can_narrow_it() {
    plough_tests::in_nursery(runtime(APP), LIMIT, |n| async move {
        // Naming a function that is not registered fails before anything is spawned.
        let e = n.start_actor_with("typo", SpawnOptions::new().expose(["add", "nope"])).await;
        assert!(
            matches!(&e, Err(ActorError::Misuse(Misuse::NotRegistered { function })) if function == "nope"),
            "{e:?}"
        );
        let opts = SpawnOptions::new().expose(["add", "pid", "expose_only"]);
        let p = n.start_actor_with("narrow", opts).await?;
        assert_eq!(p.run::<_, i64>("add", (1, 2)).await?, 3);
        p.run::<_, u32>("pid", ()).await?;
        // Registered but not exposed: its own kind, not "no such function".
        let e = p.run::<_, ()>("fail", "x".to_owned()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotExposed, "{e}");
        assert!(e.to_string().contains("does not expose `fail`"), "{e}");
        assert_eq!(kind(p.run::<_, ()>("no_such_thing", ()).await), ErrorKind::NoSuchFunction);
        // A context function too, whatever kind it is called as.
        assert_eq!(kind(p.open_context::<_, i64>("ctx_simple", 1i64).await), ErrorKind::NotExposed);
        // The child narrows itself further; it cannot widen.
        let now = p.run::<_, Vec<String>>("expose_only", vec!["add", "expose_only"]).await?;
        assert_eq!(now, ["add", "expose_only"]);
        assert_eq!(kind(p.run::<_, u32>("pid", ()).await), ErrorKind::NotExposed);
        let now = p.run::<_, Vec<String>>("expose_only", vec!["add", "pid"]).await?;
        assert_eq!(now, ["add"]);
        assert_eq!(kind(p.run::<_, u32>("pid", ()).await), ErrorKind::NotExposed);
        assert_eq!(p.run::<_, i64>("add", (2, 2)).await?, 4);
        // The runtime's own functions still work: the child goes down by cancel.
        assert!(p.cancel_actor().await);
        // A run-in-actor child runs only what it exposes (its failure is its nursery's).
        let e = n
            .actor()
            .nursery(|m| async move {
                let opts = SpawnOptions::new().expose(["add"]);
                let h = m.run_in_actor_with::<_, u32>("runner", opts, "pid", ()).await?;
                assert_eq!(kind(h.result().await), ErrorKind::NotExposed);
                Ok(())
            })
            .await;
        assert_eq!(kind(e), ErrorKind::NotExposed);
        // The default is still "everything".
        let all = n.start_actor("all").await?;
        assert_eq!(all.run::<_, i64>("add", (1, 1)).await?, 2);
        all.run::<_, u32>("pid", ()).await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_context_tells_who_cancelled_it_and_what_it_ended_with() {
    plough_tests::in_nursery(runtime(APP), LIMIT, |n| async move {
        let me = n.actor().aid().clone();
        let p = n.start_actor("introspect").await?;
        // A child that returns: the outcome is visible without consuming it.
        let (ctx, _) = p.open_context::<_, i64>("ctx_simple", 4i64).await?;
        assert_eq!(ctx.result::<i64>().await?, Outcome::Returned(8));
        assert_eq!(ctx.outcome::<i64>().expect("answered")?, Outcome::Returned(8));
        assert!(ctx.is_finished() && ctx.canceller().is_none() && !ctx.cancel_acked());
        assert!(ctx.maybe_error().is_none());

        // This parent cancels: it is the canceller, and the child acknowledged it.
        let (ctx, cid) = p.open_context::<_, u64>("ctx_note_cancel", ()).await?;
        assert_eq!(ctx.cid(), cid, "both sides name the same call id");
        assert!(ctx.outcome::<()>().is_none() && !ctx.is_finished());
        assert!(ctx.canceller().is_none() && !ctx.cancel_acked() && ctx.maybe_error().is_none());
        ctx.cancel().await?;
        assert_eq!(ctx.canceller(), Some(me.clone()));
        assert!(ctx.cancel_acked(), "cancel() returns once the child answered");
        assert!(ctx.maybe_error().is_none(), "our own cancel is not a failure");
        assert!(ctx.outcome::<()>().expect("answered")?.is_cancelled());
        assert!(ctx.result::<()>().await?.is_cancelled(), "result still works after outcome");
        // What the child saw of the same cancel.
        let seen = p.run::<_, Option<CancelSeen>>("cancel_seen", ()).await?;
        let (canceller, error, acked) = seen.expect("the child noted its cancel");
        assert_eq!(canceller, Some(me.to_string()));
        assert_eq!(error.as_deref(), Some("Cancelled"));
        assert!(!acked);

        // The child cancels itself: it is the canceller, and it is raised, not acked.
        let (ctx, ()) = p.open_context::<_, ()>("ctx_self_cancel", ()).await?;
        let e = ctx.result::<()>().await.unwrap_err();
        assert!(
            matches!(&e, ActorError::ContextCancelled { canceller } if canceller == p.aid()),
            "{e:?}"
        );
        assert_eq!(ctx.canceller().as_ref(), Some(p.aid()));
        assert!(!ctx.cancel_acked());
        let e = ctx.maybe_error().expect("a cancel by another actor is a failure");
        assert!(e.is_cancel(), "{e:?}");
        assert!(ctx.outcome::<()>().expect("answered").is_err());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_child_reaches_its_parent_and_the_root_through_authenticated_portals() {
    plough_tests::with_root(runtime(APP), LIMIT, |root| async move {
        assert!(matches!(root.parent_portal(), Err(ActorError::Misuse(Misuse::NoParent { .. }))));
        assert_eq!(root.root_addr().as_ref(), Some(root.addr()));
        // The root narrows what it serves: its children's calls get `NotExposed`.
        root.expose_only(["add", "pid"])?;
        assert_eq!(root.exposed(), ["add", "pid"]);
        let root_name = root.aid().name.clone();
        let root_addr = root.addr().to_string();
        root.nursery(|n| async move {
            let child = n.start_actor("lineage-child").await?;
            let (parent, r, addr, sum, pid, fail): Lineage = child.run("lineage", ()).await?;
            assert_eq!((parent.as_str(), r.as_str()), (root_name.as_str(), root_name.as_str()));
            assert_eq!((addr.as_str(), sum, pid), (root_addr.as_str(), 3, std::process::id()));
            assert_eq!(fail, Some(ErrorKind::NotExposed));
            // A grandchild: its parent is the child, its root is still this root (dialed).
            let (parent, r, addr, sum, pid, fail): Lineage = child.run("lineage_below", ()).await?;
            assert_eq!((parent.as_str(), r.as_str()), ("lineage-child", root_name.as_str()));
            assert_eq!((addr.as_str(), sum, pid), (root_addr.as_str(), 3, std::process::id()));
            assert_eq!(fail, Some(ErrorKind::NotExposed));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// Breaks the connection to a child at `side` while a context and a plain call are in
/// flight: both fail promptly as a lost connection, later calls too, the child cancels
/// itself, and the nursery reaps it (the leak check of `in_nursery` proves it).
fn a_broken_connection_fails_what_is_in_flight(side: BreakSide) {
    plough_tests::in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("fragile").await?;
        // In flight at the child: it has sent `started` (and ends promptly on its cancel).
        let (ctx, _) = p.open_context::<_, u64>("ctx_note_cancel", ()).await?;
        let call = p.run::<_, ()>("sleep", 60_000u64);
        let broken = async {
            tokio::task::yield_now().await;
            p.break_connection(side).await
        };
        let (call, broken) = tokio::time::timeout(STEP, async { tokio::join!(call, broken) })
            .await
            .expect("bounded");
        broken?;
        let lost = |e: &ActorError| {
            matches!(e, ActorError::TransportClosed { .. } | ActorError::ActorDied { .. })
        };
        let e = call.unwrap_err();
        assert!(lost(&e), "{side:?}: the plain call got {e:?}");
        let e =
            tokio::time::timeout(STEP, ctx.result::<i64>()).await.expect("bounded").unwrap_err();
        assert!(lost(&e), "{side:?}: the context got {e:?}");
        assert!(ctx.maybe_error().is_some_and(|e| lost(&e)), "{side:?}");
        let e = p.run::<_, i64>("add", (1, 2)).await.unwrap_err();
        assert!(lost(&e), "{side:?}: a later call got {e:?}");
        if side == BreakSide::Local {
            assert!(e.to_string().contains("broken on purpose"), "{e}");
        }
        assert!(p.is_closed());
        Ok(())
    })
    .unwrap();
}

/// The bound of one awaited step inside a test body.
const STEP: Duration = Duration::from_secs(15);

#[test]
fn a_connection_broken_at_the_parent_side_fails_calls_in_flight() {
    a_broken_connection_fails_what_is_in_flight(BreakSide::Local);
}

#[test]
fn a_connection_broken_at_the_child_side_fails_calls_in_flight() {
    a_broken_connection_fails_what_is_in_flight(BreakSide::Remote);
}

#[test]
fn a_connection_broken_at_both_sides_fails_calls_in_flight() {
    a_broken_connection_fails_what_is_in_flight(BreakSide::Both);
}

#[test]
fn an_actor_listens_on_every_address_it_was_given() {
    let dir = plough::ipc_wire::runtime_dir::default_dir();
    let uds = dir.join(format!("extra-{}.sock", std::process::id()));
    let multi = format!("/unix{}", uds.display());
    let expected = format!("uds://{}", uds.display());
    let rt = runtime(APP)
        .configure(|c| c.bind_addrs = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")]);
    plough_tests::with_root(rt, LIMIT, |root| async move {
        let mine = root.addrs();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert!(matches!(&mine[1], plough::Address::Tcp(sa) if sa.port() != 0), "{mine:?}");
        root.nursery(|n| async move {
            let opts = SpawnOptions::new()
                .bind("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
                .bind(multi.parse().expect("multiaddr"));
            let p = n.start_actor_with("multi", opts).await?;
            let addrs: Vec<String> = p.run("addrs", ()).await?;
            assert_eq!(addrs.len(), 3, "{addrs:?}");
            assert_eq!(addrs[2], expected);
            // Each one is served, authenticated as usual, by the same actor.
            for a in &addrs[1..] {
                let q = n.actor().connect(&a.parse().expect("an address")).await?;
                assert_eq!(q.aid(), p.aid());
                assert_eq!(q.run::<_, i64>("add", (2, 3)).await?, 5);
            }
            Ok(())
        })
        .await?;
        assert!(!uds.exists(), "the extra socket file goes with the child");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_cluster_starts_together_gathers_every_failure_and_goes_down_together() {
    plough_tests::with_root(runtime(APP), LIMIT, |root| async move {
        let pids = root
            .open_actor_cluster(["c0", "c1", "c2"], |c| async move {
                assert_eq!(c.len(), 3);
                assert_eq!(c.get("c1").map(|p| p.aid().name.as_str()), Some("c1"));
                let pids: Vec<u32> = c.run_all("pid", ()).await?;
                assert_eq!(c.run_all::<_, i64>("add", (1i64, 2i64)).await?, [3, 3, 3]);
                let contexts = c.open_contexts::<_, i64>("ctx_simple", 5i64).await?;
                assert_eq!(contexts.len(), 3);
                for (ctx, first) in contexts {
                    assert_eq!(first, 5);
                    assert_eq!(ctx.result::<i64>().await?, Outcome::Returned(10));
                }
                // Every member's failure comes back, not only the first.
                let e = c.run_all::<_, ()>("fail", "boom".to_owned()).await.unwrap_err();
                assert_eq!(e.failures().len(), 3, "{e}");
                Ok(pids)
            })
            .await?;
        for pid in pids {
            assert_eq!(plough_tests::proc_state(pid), None, "member {pid} is down and reaped");
        }
        // Spawn failures are gathered too: a name the registry cannot expose fails them all
        // before anything is spawned.
        let e = root
            .nursery(|n| async move {
                n.start_cluster(["x", "y"], SpawnOptions::new().expose(["nope"])).await.map(drop)
            })
            .await
            .unwrap_err();
        assert!(matches!(e, ActorError::Misuse(Misuse::NotRegistered { .. })), "{e:?}");
        Ok(())
    })
    .unwrap();
}

#[test]
fn tasks_share_one_context_per_key_and_the_last_user_closes_it() {
    plough_tests::in_nursery(runtime(APP), LIMIT, |n| async move {
        let me = n.actor().aid().to_string();
        let p = n.start_actor("quotes").await?;
        let cache: SharedCache<&str, (plough::Context, u64)> = SharedCache::new();
        let open = || p.open_context::<_, u64>("ctx_note_cancel", ());
        let (a, b) = tokio::join!(cache.maybe_open("k", open), cache.maybe_open("k", open));
        let (a, b) = (a?, b?);
        assert_eq!(a.0.cid(), b.0.cid(), "one context for both tasks");
        assert!(a.cache_hit() != b.cache_hit(), "exactly one task opened it");
        drop(a);
        assert_eq!(cache.len(), 1, "still in use");
        assert!(!b.0.is_finished());
        assert_eq!(p.run::<_, Option<CancelSeen>>("cancel_seen", ()).await?, None);
        drop(b);
        assert!(cache.is_empty());
        // The last user's drop cancelled the context: the child sees it, from us.
        let deadline = tokio::time::Instant::now() + STEP;
        let seen = loop {
            if let Some(seen) = p.run::<_, Option<CancelSeen>>("cancel_seen", ()).await? {
                break seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "the child never saw the cancel");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(seen.0, Some(me));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_child_gets_the_log_level_its_spawn_chose_and_passes_it_down() {
    plough_tests::in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor_with("chatty", SpawnOptions::new().log_level("debug")).await?;
        let (level, debug, trace): LogState = p.run("log_state", ()).await?;
        assert_eq!(level.as_deref(), Some("debug"));
        assert!(debug && !trace, "plough's subscriber in the child applies it");
        // Its own children inherit it.
        let (level, debug, trace): LogState = p.run("log_state_below", ()).await?;
        assert_eq!(level.as_deref(), Some("debug"));
        assert!(debug && !trace);
        // Another filter for another child.
        let q = n.start_actor_with("quiet", SpawnOptions::new().log_level("error")).await?;
        let (level, debug, _): LogState = q.run("log_state", ()).await?;
        assert_eq!(level.as_deref(), Some("error"));
        assert!(!debug);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_forked_child_names_its_actor_in_its_command_line_and_keeps_its_args() {
    plough_tests::in_nursery(runtime(APP), LIMIT, |n| async move {
        let method = n.actor().spawn_method();
        let p = n.start_actor("titled").await?;
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.aid().pid)).expect("cmdline");
        let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let first = String::from_utf8_lossy(first);
        // What the program reads of its arguments is untouched.
        let (argv, _): (Vec<String>, Option<String>) =
            p.run("argv_env", "PLOUGH_UNSET".to_owned()).await?;
        assert!(!argv.iter().any(|a| a.contains("plough: ")), "{method}: {argv:?}");
        match method {
            // An exec'd child has a command line of its own (the program's).
            plough::SpawnMethod::Exec => assert!(!first.starts_with("plough: "), "{first}"),
            _ => assert_eq!(first, format!("plough: {}", p.aid()), "{method}"),
        }
        if method == plough::SpawnMethod::MainThreadForkserver {
            let ours: Vec<String> = std::env::args().skip(1).collect();
            assert_eq!(argv, ours, "a forked child still reads its parent's arguments");
        }
        // The root's own command line is the user's.
        let own = std::fs::read("/proc/self/cmdline").expect("cmdline");
        assert!(!own.starts_with(b"plough: "));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_plain_function_sees_who_cancelled_it() {
    plough_tests::in_nursery(runtime(APP), LIMIT, |n| async move {
        let me = n.actor().aid().to_string();
        let p = n.start_actor("plain").await?;
        // Polls the child's note until `done` holds (bounded).
        let seen = |done: fn(&(bool, Option<String>)) -> bool| {
            let p = p.clone();
            async move {
                let deadline = tokio::time::Instant::now() + STEP;
                loop {
                    let now = p.run::<_, (bool, Option<String>)>("plain_seen", ()).await?;
                    if done(&now) {
                        return Ok::<_, ActorError>(now);
                    }
                    assert!(tokio::time::Instant::now() < deadline, "no change: {now:?}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        // The caller gives up once the call runs: dropping it cancels it at the child.
        tokio::select! {
            r = p.run::<_, ()>("wait_note_cancel", ()) => panic!("it returned: {r:?}"),
            r = seen(|s| s.0) => { r?; }
        }
        let now = seen(|s| s.1.is_some()).await?;
        assert_eq!(now, (true, Some(me)));
        Ok(())
    })
    .unwrap();
}
