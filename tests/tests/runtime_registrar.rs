//! The registrar: actors register on start, unregister on exit, vanish with their
//! connection; lookups by name, duplicates, and stale entries.

use plough::{ActorEntry, Result};
use plough_tests::{
    assert_no_descendants, become_subreaper, bounded, root_lock, runtime, with_root,
};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(30);

async fn names(root: &plough::Actor) -> Result<Vec<String>> {
    let mut v: Vec<String> = root.list_actors().await?.into_iter().map(|e| e.aid.name).collect();
    v.sort();
    Ok(v)
}

/// Polls the registrar (bounded) until `pred` holds.
async fn until(root: &plough::Actor, what: &str, pred: impl Fn(&[String]) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = names(root).await?;
        if pred(&n) {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "registrar never showed {what}: {n:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn actors_register_find_each_other_and_unregister() {
    with_root(runtime(APP), LIMIT, |root| async move {
        assert!(root.is_registrar());
        assert_eq!(names(&root).await?, ["root"]);
        // The registrar finds itself.
        let me = root.find_actor("root").await?.expect("root finds itself");
        assert_eq!(me.run::<_, u32>("pid", ()).await?, std::process::id());
        let r2 = root.clone();
        root.nursery(|n| async move {
            let a = n.start_actor("alpha").await?;
            let b = n.start_actor("beta").await?;
            r2.wait_for_actor("alpha").await?;
            r2.wait_for_actor("beta").await?;
            assert_eq!(names(&r2).await?, ["alpha", "beta", "root"]);
            // Two children find each other by name through the registrar.
            let beta_pid: u32 = b.run("pid", ()).await?;
            assert_eq!(a.run::<_, Option<u32>>("find", "beta".to_owned()).await?, Some(beta_pid));
            assert_eq!(a.run::<_, Option<u32>>("find", "nobody".to_owned()).await?, None);
            // Cancelled: unregistered.
            n.cancel().await;
            until(&r2, "only the root", |n| n == ["root"]).await
        })
        .await
    })
    .unwrap();
}

/// Registration is part of boot: a child's very first call can use the registrar, and
/// once a child has answered anything, the registrar lists it — no waiting.
#[test]
fn an_actor_is_registered_by_the_time_it_answers() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let r2 = root.clone();
        root.nursery(|n| async move {
            for i in 0..8 {
                let name = format!("quick{i}");
                let p = n.start_actor(&name).await?;
                // Its first call: a lookup through the registrar.
                let found: Option<u32> = p.run("find", "root".to_owned()).await?;
                assert_eq!(found, Some(std::process::id()), "{name}'s first call");
                // It answered, so it is registered (asked without waiting).
                let entries = r2.query_actor(&name).await?;
                assert_eq!(entries.len(), 1, "{name}: {entries:?}");
                assert_eq!(entries[0].aid, *p.aid());
            }
            n.cancel().await;
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn duplicate_names_are_all_findable() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let r2 = root.clone();
        root.nursery(|n| async move {
            let one = n.start_actor("dup").await?;
            let two = n.start_actor("dup").await?;
            until(&r2, "two dups", |n| n.iter().filter(|x| *x == "dup").count() == 2).await?;
            let found = r2.query_actor("dup").await?;
            let mut pids: Vec<u32> = found.iter().map(|e| e.aid.pid).collect();
            pids.sort_unstable();
            let mut want =
                vec![one.run::<_, u32>("pid", ()).await?, two.run::<_, u32>("pid", ()).await?];
            want.sort_unstable();
            assert_eq!(pids, want);
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn entries_of_vanished_actors_are_removed() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let r2 = root.clone();
        let r3 = root.clone();
        root.nursery(|n| async move {
            // An actor that dies without unregistering: its connection drops.
            let ghost = n.start_actor("ghost").await?;
            r2.wait_for_actor("ghost").await?;
            let pid: u32 = ghost.run("pid", ()).await?;
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
            until(&r2, "the ghost gone", |n| !n.iter().any(|x| x == "ghost")).await?;
            Ok(())
        })
        .await
        .or_else(|e| {
            // The nursery reports the killed daemon child: that is expected here.
            assert!(e.to_string().contains("ghost"), "{e}");
            Ok::<(), plough::ActorError>(())
        })?;
        // A stale entry (nothing answers at its address) is dropped by a lookup.
        let r2 = r3;
        let me = r2.connect(r2.addr()).await?;
        let stale = ActorEntry {
            aid: plough::ipc_wire::msg::Aid {
                name: "stale".into(),
                uuid: Default::default(),
                pid: 1,
            },
            addr: "tcp://127.0.0.1:1".into(),
            parent: None,
            method: "exec".into(),
            started_ms: 0,
        };
        me.run::<_, ()>("plough.registrar.register", &stale).await?;
        assert_eq!(r2.query_actor("stale").await?.len(), 1);
        assert!(r2.find_actor("stale").await?.is_none());
        assert!(r2.query_actor("stale").await?.is_empty(), "stale entry not removed");
        Ok(())
    })
    .unwrap();
}

/// A registry address nobody uses yet, on the cell's transport.
fn fresh_registry() -> plough::Address {
    match plough_tests::private_registry() {
        plough::Address::Tcp(_) => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            drop(l);
            format!("tcp://127.0.0.1:{port}").parse().unwrap()
        }
        uds => uds,
    }
}

#[test]
fn a_second_root_joins_the_registrar_that_answers() {
    let _g = root_lock();
    become_subreaper();
    let addr = fresh_registry();
    // Another program's root holds the registry (and one child).
    let mut other = std::process::Command::new(APP)
        .args(["sleepers", "1"])
        .env("PLOUGH_TEST_REGISTRY", addr.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    // Keep reading its stdout to the end (it prints its result when it exits).
    let mut out = std::io::BufReader::new(other.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let other_child: u32 = line.trim().strip_prefix("pids ").unwrap().parse().unwrap();
    let other = plough_fork_prims::ChildHandle::from_std(other).unwrap();
    other.set_kill_on_drop(true);

    let found = runtime(APP)
        .configure(|c| c.registry_addr = addr.clone())
        .run(|root| {
            bounded(LIMIT, async move {
                assert!(!root.is_registrar(), "a second root must join, not become registrar");
                let p = root.wait_for_actor("sleeper0").await?;
                let pid: u32 = p.run("pid", ()).await?;
                let roots = root.query_actor("root").await?;
                assert_eq!(roots.len(), 2, "both roots registered: {roots:?}");
                Ok(pid)
            })
        })
        .unwrap();
    assert_eq!(found, other_child);
    other.signal(rustix::process::Signal::INT).unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let st = other.wait_blocking().unwrap();
    assert_eq!(st.code(), Some(130), "{st}: {rest}");
    assert_no_descendants(Duration::from_secs(5));
}

#[test]
fn a_registry_address_held_by_something_else_is_a_clear_error() {
    let _g = root_lock();
    // Not plough: answers every connection with an HTTP error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: plough::Address =
        format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let t = Instant::now();
    let err = runtime(APP)
        .configure(|c| c.registry_addr = addr.clone())
        .run(|_root| async { Ok(()) })
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("is held by something that is not a plough registrar"), "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    server.join().unwrap();
}

/// Open fds of this process.
fn own_fds() -> usize {
    plough_fork_prims::list_open_fds().expect("list fds").len()
}

#[test]
fn ten_thousand_lookups_reuse_one_connection_per_peer() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let r2 = root.clone();
        root.nursery(|n| async move {
            let target = n.start_actor("target").await?;
            let target_fds = || async {
                Ok::<_, plough::ActorError>(
                    target.run::<_, Vec<(i32, String)>>("fds", ()).await?.len(),
                )
            };
            // The first lookup opens the one connection the others reuse.
            let first = r2.wait_for_actor("target").await?;
            assert_eq!(
                first.run::<_, u32>("pid", ()).await?,
                target.run::<_, u32>("pid", ()).await?
            );
            let (root_before, target_before) = (own_fds(), target_fds().await?);
            for i in 0..10_000u32 {
                let p = r2.find_actor("target").await?.expect("still registered");
                if i % 1000 == 0 {
                    p.run::<_, u32>("pid", ()).await?;
                }
            }
            let (root_after, target_after) = (own_fds(), target_fds().await?);
            assert_eq!(root_after, root_before, "the root's fds grew over 10,000 lookups");
            assert_eq!(target_after, target_before, "the target's fds grew over 10,000 lookups");
            Ok(())
        })
        .await
    })
    .unwrap();
}
