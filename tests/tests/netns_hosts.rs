//! A tree across hosts: two "hosts" (network namespaces made by the test) each run
//! `plough-host` with certificates of a tree CA the test makes (`plough ca`); a root in
//! a third namespace spawns actors on both through the same nursery as local ones, calls
//! and streams to them directly over mutual TLS, and gets a remote leaf's error home with
//! its relay path; spawning is idempotent by spawn id; the root's registrar lists remote
//! actors with their host. Then the lease: a SIGKILLed daemon's actors are gone within
//! the lease and the root gets `HostLost`; a cut link makes both sides clean up within
//! the lease; a root SIGKILLed leaves nothing on the host once the lease ran out. A peer with another CA's certificate, a plaintext peer and a root of
//! another build are refused at the door.
//!
//! Needs root and iproute2 (`.ci/run` installs it); elsewhere the test prints why it
//! skips. The lab (namespaces, links, daemons) is removed on drop, also on a panic.

use plough::core::host::{HOST_LIST, HOST_SPAWN, HOST_STOP, HostedActor, SpawnOrder, Spawned};
use plough::ipc_wire::{
    Address, Aid, BuildId, Credentials, HandshakeConfig, HandshakeError, Secret, TlsFailure,
    TlsFiles, TlsIdentity, Uuid, handshake,
};
use plough::{ActorError, Budgets};
use plough_tests::multi_host::{self, configure_root};
use plough_tests::netns::{Lab, namespaces_named, skip_without_netns};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

/// The lease the daemons and the root keep here.
const LEASE: Duration = Duration::from_millis(1500);
/// What any one wait of this test may take.
const STEP: Duration = Duration::from_secs(15);

/// Starts `plough-host` for `host` in lab host `i`; its pid and `tls://` address.
fn start_daemon(lab: &mut Lab, i: usize, host: &str, ca: &Path) -> (u32, Address) {
    let bins = (env!("CARGO_BIN_EXE_host_daemon"), env!("CARGO_BIN_EXE_plough_app"));
    multi_host::start_daemon(lab, i, host, ca, bins, LEASE, STEP)
}

/// Waits (bounded by `within`) until process `pid` is gone (or a zombie of someone
/// else's: exited); how long it took.
fn gone_within(pid: u32, within: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    while plough_tests::proc_state(pid).is_some_and(|s| s != 'Z') {
        assert!(t0.elapsed() < within, "{what} (pid {pid}) still alive after {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

#[test]
fn a_root_runs_actors_on_two_hosts_and_the_lease_ends_them_when_a_host_or_link_is_lost() {
    let Some(mut lab) = skip_without_netns("netns_hosts", 3) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (ca, other) = (tmp.path().join("ca"), tmp.path().join("other"));
    plough_ps::ca::init(&ca).unwrap();
    plough_ps::ca::issue(&ca, "host-a", &[lab.host(0).ip.into()], 1).unwrap();
    plough_ps::ca::issue(&ca, "host-b", &[lab.host(1).ip.into()], 1).unwrap();
    let root_files = plough_ps::ca::issue(&ca, "root", &[lab.host(2).ip.into()], 1).unwrap();
    plough_ps::ca::init(&other).unwrap();
    let foreign = plough_ps::ca::issue(&other, "root", &[lab.host(2).ip.into()], 1).unwrap();
    let stranger = TlsFiles { ca: root_files.ca.clone(), ..foreign };
    let secret = Secret::load(&ca.join("secret")).unwrap();

    let (pid_a, addr_a) = start_daemon(&mut lab, 0, "host-a", &ca);
    let (pid_b, addr_b) = start_daemon(&mut lab, 1, "host-b", &ca);
    let app_build = BuildId::of_file(env!("CARGO_BIN_EXE_plough_app").as_ref()).unwrap();

    // The door: another CA, plaintext, another build.
    lab.in_host(2, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let me = Credentials {
                aid: Aid { name: "door".into(), uuid: Uuid::new_v4(), pid: std::process::id() },
                secret: secret.clone(),
            };
            let hs = HandshakeConfig::default().with_deadline(Duration::from_secs(5));
            let ours = TlsIdentity::load(&root_files).unwrap();
            let e = handshake::connect_with(&addr_a, &me, &hs.with_build_id(app_build), Some(&TlsIdentity::load(&stranger).unwrap()))
                .await
                .unwrap_err();
            assert!(
                matches!(&e, HandshakeError::Tls { failure: TlsFailure::RefusedByPeer { alert }, .. } if alert.contains("UnknownCA")),
                "{e}"
            );
            let Address::Tls { addr, .. } = &addr_a else { unreachable!() };
            let e = handshake::connect(&Address::Tcp(*addr), &me, &hs).await.unwrap_err();
            assert!(matches!(&e, HandshakeError::Refused { reason } if reason.contains("TLS required")), "{e}");
            // This test's own build is not the program the host runs.
            let e = handshake::connect_with(&addr_a, &me, &hs, Some(&ours)).await.unwrap_err();
            assert!(matches!(e, HandshakeError::BuildMismatch { .. }), "{e}");
        })
    });

    let addr_a_text = addr_a.to_string();
    let lab_ref = &lab;
    let ca2 = ca.clone();
    lab.in_host(2, move || {
        let runtime = plough::Runtime::new(plough_tests::app::registry()).configure(|c| {
            configure_root(c, "multi-root", &ca2, Some(app_build));
            c.budgets.ladder = plough_tests::quick_ladder();
        });
        runtime
            .run(|root| async move {
                let budget = async {
                    let (a, b) =
                        (root.attach_host(&addr_a).await?, root.attach_host(&addr_b).await?);
                    assert_eq!((a.name(), b.name(), a.lease()), ("host-a", "host-b", LEASE));

                    // Calls and streams on two hosts, and a remote leaf's error.
                    let (a2, b2) = (a.clone(), b.clone());
                    let e = root
                        .nursery(|n| async move {
                            // Timed (printed, not asserted): spawn -> first call, and a
                            // call's round trip, across namespaces. (Local children of this
                            // root would start from the zygote outside the lab.)
                            let t = Instant::now();
                            let pa = n.start_actor_on(&a2, "worker-a").await?;
                            assert_eq!(pa.run::<_, i64>("add", (1i64, 2i64)).await?, 3);
                            let remote_spawn = t.elapsed();
                            let rtt = |p: plough::Portal| async move {
                                let t = Instant::now();
                                for i in 0..200i64 {
                                    p.run::<_, i64>("add", (i, 1i64)).await?;
                                }
                                Ok::<_, ActorError>(t.elapsed() / 200)
                            };
                            let remote_rtt = rtt(pa.clone()).await?;
                            eprintln!(
                                "netns_hosts timing: remote spawn -> first RPC {remote_spawn:?}; \
                                 RPC round trip across namespaces {remote_rtt:?}"
                            );
                            let pb = n.start_actor_on(&b2, "worker-b").await?;
                            assert_ne!(pa.aid().pid, pb.aid().pid);
                            let (ctx, first) = pb.open_context::<_, String>("ctx_echo", ()).await?;
                            assert_eq!(first, "ready");
                            let s = ctx.open_stream().await?;
                            for i in 0..3i64 {
                                s.send(&i).await?;
                                assert_eq!(s.recv::<i64>().await?, Some(i + 1));
                            }
                            s.close().await?;
                            assert!(matches!(
                                ctx.result::<u64>().await?,
                                plough::Outcome::Returned(3)
                            ));
                            // The root's registrar lists them with their host.
                            let listed = n.actor().list_actors().await?;
                            let method = |name: &str| {
                                listed.iter().find(|e| e.aid.name == name).map(|e| e.method.clone())
                            };
                            assert_eq!(method("worker-a").as_deref(), Some("remote@host-a"));
                            assert_eq!(method("worker-b").as_deref(), Some("remote@host-b"));
                            // A leaf that worker-a's own child starts on host-a fails.
                            n.run_in_actor_on::<_, u32>(&a2, "relay", "tree", (1u32, 1u32, true))
                                .await?;
                            Ok(())
                        })
                        .await
                        .unwrap_err();
                    let remote = e
                        .failures()
                        .iter()
                        .find_map(|f| f.as_remote())
                        .unwrap_or_else(|| panic!("{e}"));
                    assert!(remote.message.contains("failed on purpose"), "{remote:?}");
                    let path: Vec<&str> =
                        remote.relay_path.iter().map(|a| a.name.as_str()).collect();
                    // From the leaf on host-a, through its parent there, home.
                    assert!(remote.source.name.starts_with("d1"), "{remote:?}");
                    assert_eq!(path, ["relay"], "{remote:?}");

                    // Idempotent by spawn id, and the daemon lists what it runs.
                    let order = SpawnOrder {
                        owner: root.aid().uuid,
                        spawn_id: "once".into(),
                        name: "solo".into(),
                    };
                    let first: Spawned = a.portal().run(HOST_SPAWN, &order).await?;
                    let again: Spawned = a.portal().run(HOST_SPAWN, &order).await?;
                    assert_eq!(
                        (first.aid.clone(), first.again, again.again),
                        (again.aid.clone(), false, true)
                    );
                    let listed: Vec<HostedActor> = a.portal().run(HOST_LIST, ()).await?;
                    assert_eq!(
                        listed.iter().filter(|h| h.aid.name == "solo").count(),
                        1,
                        "{listed:?}"
                    );
                    let exit: plough::core::host::Exit = a.portal().run(HOST_STOP, "once").await?;
                    assert_eq!(exit.code, Some(0), "{exit:?}");

                    // The ladder's process steps through the daemon: an actor that blocks
                    // its only thread ignores the IPC cancel and SIGTERM; SIGKILL to its
                    // group ends it, and the daemon reports how.
                    let a4 = a.clone();
                    let t0 = Instant::now();
                    root.nursery(|n| async move {
                        let p = n.start_actor_on(&a4, "stubborn").await?;
                        assert_eq!(p.run::<_, i64>("add", (1i64, 1i64)).await?, 2);
                        // `block` goes out first (its first poll sends it); then a call that
                        // is not answered shows the actor's only thread is blocked.
                        let mut blocked = Box::pin(p.run::<_, ()>("block", 60_000u64));
                        assert!(futures::poll!(&mut blocked).is_pending());
                        let quick = plough_tests::quick_ladder();
                        let probe = tokio::time::timeout(
                            quick.ack_timeout,
                            p.run::<_, i64>("add", (1i64, 1i64)),
                        );
                        assert!(probe.await.is_err(), "a blocked actor answered");
                        n.cancel().await;
                        Ok(())
                    })
                    .await?;
                    let ladder = t0.elapsed();
                    let listed: Vec<HostedActor> = a.portal().run(HOST_LIST, ()).await?;
                    let exit =
                        listed.iter().find(|h| h.aid.name == "stubborn").and_then(|h| h.exit);
                    assert_eq!(exit.and_then(|e| e.signal), Some(9), "{listed:?}");
                    let quick = plough_tests::quick_ladder();
                    assert!(
                        ladder >= quick.ack_timeout + quick.exit_timeout + quick.term_timeout,
                        "{ladder:?}"
                    );

                    // A supervisor's child on a host: it crashes there (SIGKILL from
                    // outside) and is started again there.
                    let sup = plough::Supervisor::new(plough::Strategy::OneForOne)
                        .child(plough::ChildSpec::actor("sup-remote").on(&a));
                    root.supervise(sup, |s| async move {
                        let first = s.portal("sup-remote").await?;
                        assert_eq!(first.run::<_, i64>("add", (2i64, 2i64)).await?, 4);
                        let old = first.aid().pid;
                        let mut exits = s.exits();
                        rustix::process::kill_process(
                            rustix::process::Pid::from_raw(old as i32).unwrap(),
                            rustix::process::Signal::KILL,
                        )
                        .unwrap();
                        // Its death comes home with its status (from the daemon's reap).
                        let exit = exits.recv().await?.expect("an exit");
                        let killed = plough::ExitStatus::Signaled { signal: 9, core_dumped: false };
                        assert_eq!(exit.status, Some(killed), "{exit}");
                        // `portal` waits while it is being restarted.
                        let again = s.portal("sup-remote").await?;
                        assert_ne!(again.aid().pid, old);
                        assert_eq!(again.run::<_, i64>("add", (3i64, 3i64)).await?, 6);
                        Ok(())
                    })
                    .await?;

                    // SIGKILL host-b's daemon: its actor goes, and the root gets HostLost.
                    let b3 = b.clone();
                    let _ = &b3;
                    let t0 = Instant::now();
                    let e = root
                        .nursery(|n| async move {
                            let p = n.start_actor_on(&b3, "doomed").await?;
                            let pid = p.aid().pid;
                            rustix::process::kill_process(
                                rustix::process::Pid::from_raw(pid_b as i32).unwrap(),
                                rustix::process::Signal::KILL,
                            )
                            .unwrap();
                            let gone = tokio::task::spawn_blocking(move || {
                                gone_within(pid, LEASE * 2, "doomed")
                            })
                            .await
                            .unwrap();
                            assert!(gone < LEASE * 2);
                            // The nursery's watch of the child ends the body.
                            std::future::pending::<()>().await;
                            Ok(())
                        })
                        .await
                        .unwrap_err();
                    let lost_after = t0.elapsed();
                    assert!(
                        e.failures().iter().any(
                            |f| matches!(f, ActorError::HostLost { host, .. } if host == "host-b")
                        ),
                        "{e}"
                    );
                    assert!(
                        lost_after < LEASE * 2 + Budgets::heartbeat(LEASE) * 2,
                        "{lost_after:?}"
                    );

                    // Cut host-a's link: the root takes it for lost within the lease, and
                    // host-a's daemon takes the root's actor there down within its own.
                    let t0 = Instant::now();
                    let a3 = a.clone();
                    let e = root
                        .nursery(|n| async move {
                            let p = n.start_actor_on(&a3, "cut-off").await?;
                            let pid = p.aid().pid;
                            lab_ref.set_link(0, false).unwrap();
                            tokio::task::spawn_blocking(move || {
                                gone_within(
                                    pid,
                                    LEASE * 2 + Budgets::default().ladder.total(),
                                    "cut-off",
                                )
                            })
                            .await
                            .unwrap();
                            // The nursery's watch of the child ends the body.
                            std::future::pending::<()>().await;
                            Ok(())
                        })
                        .await
                        .unwrap_err();
                    let lost_after = t0.elapsed();
                    assert!(
                        e.failures().iter().any(
                            |f| matches!(f, ActorError::HostLost { host, .. } if host == "host-a")
                        ),
                        "{e}"
                    );
                    assert!(
                        lost_after < LEASE * 3 + Budgets::default().ladder.total(),
                        "{lost_after:?}"
                    );
                    Ok::<_, ActorError>(())
                };
                tokio::time::timeout(STEP * 3, budget).await.expect("the test's budget")
            })
            .unwrap()
    });
    lab.set_link(0, true).unwrap();

    // A root that dies without a word (SIGKILL) beats no more: host-a's daemon takes its
    // actor down when the lease runs out (its direct connection to the root is not its
    // parent's: only the lease ends it).
    let addr = addr_a_text;
    let (root_pid, out) = lab
        .spawn(2, env!("CARGO_BIN_EXE_plough_app"), &["remote-root", ca.to_str().unwrap(), &addr])
        .unwrap();
    let line = BufReader::new(out).lines().map_while(Result::ok).find(|l| l.starts_with("remote "));
    let kid: u32 =
        line.expect("the remote root's kid").split_whitespace().nth(1).unwrap().parse().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(root_pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let gone =
        gone_within(kid, LEASE * 2 + Budgets::default().ladder.total(), "the dead root's kid");
    assert!(gone > LEASE / 2, "the kid went at once ({gone:?}): not the lease's doing");

    let made = lab.namespaces().to_vec();
    drop(lab);
    // The daemons and the remote root were SIGKILLed (by the test, or the lab's drop):
    // their markers stay, as after any SIGKILL; the test sweeps them as the reaper would.
    for pid in [pid_a, pid_b, root_pid] {
        plough_tests::clear_killed_actor(pid);
    }
    let dir = plough::fork_prims::marker::default_runtime_dir();
    plough_reaper::uds::sweep(&dir, None, false).expect("sweep the runtime dir");
    for ns in made {
        assert!(namespaces_named(&ns).is_empty(), "{ns} outlived its lab");
    }
}

/// A root that joined another root's registrar (it is not its tree's registrar itself)
/// gets its remote actors listed there with their host, as its local children are, and
/// unlisted when they end; and a daemon's `host.list` shows a root its own actors only,
/// not another root's on the same daemon.
#[test]
fn a_root_that_is_not_the_registrar_lists_its_remote_actors_with_the_tree_registrar() {
    let Some(mut lab) = skip_without_netns("netns_hosts (joined registrar)", 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    plough_ps::ca::init(&ca).unwrap();
    plough_ps::ca::issue(&ca, "host-r", &[lab.host(0).ip.into()], 1).unwrap();
    plough_ps::ca::issue(&ca, "root", &[lab.host(1).ip.into()], 1).unwrap();
    let (pid_d, addr) = start_daemon(&mut lab, 0, "host-r", &ca);
    let app_build = BuildId::of_file(env!("CARGO_BIN_EXE_plough_app").as_ref()).unwrap();
    // The tree's registrar: another root, at a fixed address both roots are given.
    let registry = Address::Uds(tmp.path().join("registry.sock"));
    let registry_text = registry.to_string();
    let ca_text = ca.to_str().unwrap();
    let app = env!("CARGO_BIN_EXE_plough_app");
    let (reg_pid, out) = lab.spawn(1, app, &["tree-registrar", ca_text, &registry_text]).unwrap();
    let mut lines = plough_tests::OutputLines::read(out);
    let ready = lines.expect_line("ready", STEP).expect("the registrar root is up");
    assert_eq!(ready, "ready registrar=true");

    // Another root with an actor on the same daemon (`host.list` must not show it ours).
    let addr_text = addr.to_string();
    let (other, out) = lab.spawn(1, app, &["remote-root", ca_text, &addr_text]).unwrap();
    let kid = plough_tests::OutputLines::read(out).expect_line("remote ", STEP);
    let kid = kid.expect("the other root's kid");

    lab.in_host(1, || {
        let runtime = plough::Runtime::new(plough_tests::app::registry()).configure(|c| {
            configure_root(c, "joined-root", &ca, Some(app_build));
            c.registry_addr = registry.clone();
        });
        runtime
            .run(|root| async move {
                let body = async {
                    assert!(!root.is_registrar(), "this root was to join the tree's registrar");
                    let host = root.attach_host(&addr).await?;
                    let r = root.clone();
                    root.nursery(|n| async move {
                        let p = n.start_actor_on(&host, "far").await?;
                        assert_eq!(p.run::<_, i64>("add", (2i64, 3i64)).await?, 5);
                        // What the registrar (the other root) lists.
                        let listed = r.list_actors().await?;
                        let far = listed.iter().find(|e| e.aid.name == "far");
                        assert_eq!(
                            far.map(|e| (e.method.as_str(), e.parent.clone())),
                            Some(("remote@host-r", Some(r.aid().clone()))),
                            "{listed:?}"
                        );
                        // The daemon lists this root its own actors only.
                        let mine: Vec<HostedActor> = host.portal().run(HOST_LIST, ()).await?;
                        let names: Vec<&str> = mine.iter().map(|h| h.aid.name.as_str()).collect();
                        assert_eq!(names, ["far"], "{mine:?} (the other root's: {kid})");
                        assert!(mine.iter().all(|h| h.owner == r.aid().uuid), "{mine:?}");
                        Ok(())
                    })
                    .await?;
                    // The nursery is over: the entry went with the actor.
                    let listed = root.list_actors().await?;
                    assert!(listed.iter().all(|e| e.aid.name != "far"), "{listed:?}");
                    Ok::<_, ActorError>(())
                };
                tokio::time::timeout(STEP * 2, body).await.expect("the test's budget")
            })
            .unwrap()
    });
    // The other roots end cleanly on SIGTERM (their sockets and markers go with them;
    // the other one's kid down its daemon's ladder).
    for pid in [other, reg_pid] {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        gone_within(pid, STEP, "another root");
    }
    let made = lab.namespaces().to_vec();
    drop(lab);
    plough_tests::clear_killed_actor(pid_d);
    let dir = plough::fork_prims::marker::default_runtime_dir();
    plough_reaper::uds::sweep(&dir, None, false).expect("sweep the runtime dir");
    assert!(!tmp.path().join("registry.sock").exists(), "the registry socket outlived its root");
    for ns in made {
        assert!(namespaces_named(&ns).is_empty(), "{ns} outlived its lab");
    }
}
