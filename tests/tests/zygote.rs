//! The zygote backend and `plough::testing`, from inside a test harness: a `#[test]` is a
//! plough program (its children run just that test), on every backend.

use plough::{SpawnMethod, testing};
use plough_fork_prims::marker::{default_runtime_dir, read_markers};
use plough_tests::app::registry;
use std::time::Duration;

fn on(method: SpawnMethod) -> testing::TestRuntime {
    testing::runtime(registry()).configure(|c| c.spawn_method = method)
}

/// The pid of this process's live zygote, from its marker.
fn zygote_pid() -> Option<u32> {
    let me = std::process::id();
    read_markers(&default_runtime_dir())
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| {
            m.name == plough_fork_prims::ZYGOTE_MARKER_NAME && m.parent_pid == me && m.is_live()
        })
        .map(|m| m.pid)
}

/// Waits (bounded) until `pid` has exited, on its pidfd.
fn wait_gone(pid: u32, limit: Duration) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return; // already gone
    };
    let mut poll = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
    let ts = rustix::time::Timespec::try_from(limit).expect("a timeout");
    let ready = rustix::event::poll(&mut poll, Some(&ts)).expect("poll");
    assert_eq!(ready, 1, "pid {pid:?} still runs after {limit:?}");
}

#[test]
fn a_test_spawns_on_every_backend() {
    for method in [SpawnMethod::Zygote, SpawnMethod::Exec, SpawnMethod::MainThreadForkserver] {
        let sum = on(method)
            .run(|root| async move {
                root.nursery(|n| async move {
                    n.start_actor("adder").await?.run::<_, i64>("add", (2i64, 3i64)).await
                })
                .await
            })
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(sum, 5, "{method}");
    }
}

#[test]
fn children_run_this_test_with_nothing_of_ploughs_on_argv_or_in_the_environment() {
    for method in [SpawnMethod::Zygote, SpawnMethod::Exec] {
        let (argv, boot) = on(method)
            .run(|root| async move {
                root.nursery(|n| async move {
                    n.start_actor("argv")
                        .await?
                        .run::<_, (Vec<String>, Option<String>)>(
                            "argv_env",
                            plough_fork_prims::BOOT_ENV,
                        )
                        .await
                })
                .await
            })
            .unwrap();
        let test = "children_run_this_test_with_nothing_of_ploughs_on_argv_or_in_the_environment";
        assert_eq!(argv[0], test, "{method}: {argv:?}");
        assert!(argv.contains(&"--exact".to_owned()), "{method}: {argv:?}");
        assert!(!argv.iter().any(|a| a.starts_with("--plough")), "{method}: {argv:?}");
        assert_eq!(argv.len(), 5, "{method}: only the test's own selection: {argv:?}");
        assert_eq!(boot, None, "{method}: PLOUGH_BOOT left in the child's environment");
    }
}

#[test]
fn a_zygote_that_died_is_replaced_at_the_next_spawn_and_none_outlives_its_root() {
    let mut zygotes = Vec::new();
    let pids = on(SpawnMethod::Zygote)
        .run(|root| async move {
            root.nursery(|n| async move {
                let first = n.start_actor("first").await?.run::<_, u32>("pid", ()).await?;
                let z1 = zygote_pid().expect("a zygote runs while its root spawns");
                rustix::process::kill_process(
                    rustix::process::Pid::from_raw(z1 as i32).expect("a pid"),
                    rustix::process::Signal::KILL,
                )
                .expect("kill the zygote");
                wait_gone(z1, Duration::from_secs(5));
                // The next spawn finds it dead and starts another.
                let second = n.start_actor("second").await?.run::<_, u32>("pid", ()).await?;
                let z2 = zygote_pid().expect("a new zygote");
                assert_ne!(z1, z2);
                Ok((first, second, z1, z2))
            })
            .await
        })
        .unwrap();
    zygotes.extend([pids.2, pids.3]);
    // `testing::run` checked that nothing of the tree is alive; the zygotes are gone too.
    for z in zygotes {
        assert!(!std::path::Path::new(&format!("/proc/{z}/stat")).exists(), "zygote {z} lives");
    }
}

#[test]
fn forked_children_boot_while_another_thread_is_inside_set_var() {
    // A forked child that read the environment could find its lock held by the thread
    // below at the fork, and hang: what a forked child needs from it is read before.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    let hammer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            #[allow(unsafe_code)]
            // SAFETY: nothing in this test process reads the environment from C meanwhile.
            unsafe {
                std::env::set_var("PLOUGH_TEST_HAMMER", i.to_string())
            };
            i += 1;
        }
    });
    let booted = on(SpawnMethod::MainThreadForkserver)
        .run(|root| async move {
            let mut booted = 0u32;
            for round in 0..10 {
                booted += root
                    .nursery(|n| async move {
                        let calls = (0..10).map(|i| {
                            let n = n.clone();
                            async move {
                                n.start_actor(&format!("f{round}-{i}"))
                                    .await?
                                    .run::<_, u32>("pid", ())
                                    .await
                            }
                        });
                        Ok(futures::future::try_join_all(calls).await?.len() as u32)
                    })
                    .await?;
            }
            Ok(booted)
        })
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hammer.join().unwrap();
    assert_eq!(booted, 100);
}

#[tokio::test]
async fn the_blocking_run_inside_a_tokio_runtime_is_a_misuse_that_names_run_async() {
    let err = plough::Runtime::new(registry())
        .configure(|c| c.registry_addr = "tcp://127.0.0.1:0".parse().expect("an address"))
        .run(|_root| async { Ok(()) })
        .unwrap_err();
    assert!(
        matches!(err, plough::ActorError::Misuse(plough::Misuse::InsideTokioRuntime)),
        "{err:?}"
    );
    assert!(err.to_string().contains("run_async"), "{err}");
}
