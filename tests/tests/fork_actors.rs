//! Tests specific to the `main_thread_forkserver` backend (and the reserved key), run on
//! that backend whatever the matrix cell: they build the runtime with an explicit backend,
//! bypassing the `PLOUGH_SPAWN_METHOD` override.

use plough::backends::ChildCommand;
use plough::{ActorError, During, SpawnError, SpawnMethod};
use plough_actor_core::backend::{ChildBoot, SpawnBackend, SpawnRequest};
use plough_fork_prims::ChildHandle;
use plough_tests::{
    app, assert_no_descendants, become_subreaper, bounded, private_registry, root_lock,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn core_runtime(backend: Arc<dyn SpawnBackend>) -> plough_actor_core::Runtime {
    plough_actor_core::Runtime::new(app::registry())
        .with_backend(backend)
        .configure(|c| c.registry_addr = private_registry())
}

fn forkserver() -> Arc<dyn SpawnBackend> {
    plough::backends::backend_for(SpawnMethod::MainThreadForkserver, ChildCommand::this_program())
}

#[test]
fn a_thousand_forked_actors_under_a_busy_multi_thread_parent() {
    let _g = root_lock();
    become_subreaper();
    // The parent also runs a multi-thread runtime with busy tasks (as a real program
    // might), plus the plough root on this thread.
    let busy_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..4 {
        let stop = Arc::clone(&stop);
        busy_rt.spawn(async move {
            let mut v = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                v.push(vec![i as u8; 512]);
                if v.len() > 64 {
                    v.clear();
                }
                tokio::task::yield_now().await;
            }
        });
    }
    let started = Instant::now();
    let n = core_runtime(forkserver())
        .run(|root| {
            bounded(Duration::from_secs(240), async move {
                root.nursery(|nursery| async move {
                    for i in 0..1000u32 {
                        let p = nursery.start_actor(&format!("f{i}")).await?;
                        let sum: i64 = p.run("add", (i as i64, 1)).await?;
                        assert_eq!(sum, i as i64 + 1);
                        nursery.cancel().await;
                    }
                    Ok(1000)
                })
                .await
            })
        })
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    busy_rt.shutdown_timeout(Duration::from_secs(5));
    assert_eq!(n, 1000);
    eprintln!("1000 forked actors: spawn + RPC + teardown in {:?}", started.elapsed());
    assert_no_descendants(Duration::from_secs(5));
}

#[test]
fn a_forked_childs_fd_table_holds_only_its_own_fds() {
    let _g = root_lock();
    become_subreaper();
    // Things the parent holds that the child must not inherit.
    let secret = std::env::temp_dir().join(format!("plough-parent-secret-{}", std::process::id()));
    let file = std::fs::File::create(&secret).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let table = core_runtime(forkserver())
        .run(|root| {
            bounded(Duration::from_secs(30), async move {
                root.nursery(|n| async move {
                    let p = n.start_actor("fds").await?;
                    p.run::<_, Vec<(i32, String)>>("fds", ()).await
                })
                .await
            })
        })
        .unwrap();
    drop((file, listener));
    let _ = std::fs::remove_file(&secret);
    // Boot is over: its stdio is ours again (the boot-stderr pipe is gone).
    for fd in 0..=2 {
        let ours = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let theirs = table.iter().find(|(f, _)| *f == fd).map(|(_, t)| t.as_str());
        assert_eq!(theirs, Some(ours.as_str()), "fd {fd} in {table:?}");
    }
    for (fd, target) in &table {
        assert!(
            !target.contains("plough-parent-secret"),
            "inherited the parent's file: fd {fd} -> {target}"
        );
        let own = *fd <= 2
            || target.starts_with("socket:")
            || target.starts_with("anon_inode:")
            || target.starts_with("/proc/")
            || target.starts_with("pipe:");
        assert!(own, "unexpected fd {fd} -> {target} in {table:?}");
    }
    // Its own: a listener, the parent and registrar connections, the reactor (epoll,
    // eventfd), the signalfd, the fd listing itself — a small table.
    assert!(table.len() <= 16, "{table:?}");
    assert_no_descendants(Duration::from_secs(5));
}

/// How a [`DiesInBoot`] child dies, after writing a last word to stderr.
#[derive(Debug, Clone, Copy)]
enum Death {
    Exit,
    Panic,
    Abort,
}

/// A backend that really forks but whose child says something on stderr and dies at once.
#[derive(Debug)]
struct DiesInBoot(Arc<dyn SpawnBackend>, Death);

impl SpawnBackend for DiesInBoot {
    fn method(&self) -> SpawnMethod {
        self.0.method()
    }
    fn spawn(
        &self,
        req: SpawnRequest,
    ) -> futures::future::BoxFuture<'_, Result<ChildHandle, SpawnError>> {
        let death = self.1;
        let die: plough_actor_core::backend::ChildMain = Arc::new(move |boot: ChildBoot, _| {
            use std::io::Write;
            match death {
                Death::Exit => {
                    let _ = writeln!(std::io::stderr(), "{}: the config is unreadable", boot.name);
                    3
                }
                Death::Panic => panic!("{}: a handler failed to initialise", boot.name),
                Death::Abort => {
                    let _ = writeln!(std::io::stderr(), "{}: giving up hard", boot.name);
                    std::process::abort()
                }
            }
        });
        self.0.spawn(SpawnRequest { child_main: die, ..req })
    }
}

#[test]
fn a_child_that_dies_during_boot_is_a_quick_spawn_error_with_its_status_and_stderr() {
    let _g = root_lock();
    become_subreaper();
    // An exec'd program that fails before it could ever connect back.
    // Removed however the test ends.
    let dir = tempfile::Builder::new().prefix("plough-boot-death-").tempdir().unwrap();
    let script = dir.path().join("fails-at-boot.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"cannot open $2: $PLOUGH_BOOT\" >&2\nexit 4\n")
        .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exec = |program: &std::path::Path| {
        plough::backends::backend_for(
            SpawnMethod::Exec,
            ChildCommand::program(program).with_args(["--config", "/nonexistent/config"]),
        )
    };
    let cases: Vec<(Arc<dyn SpawnBackend>, &str, &str)> = vec![
        (
            Arc::new(DiesInBoot(forkserver(), Death::Exit)),
            "exited with code 3",
            "doomed: the config is unreadable",
        ),
        (
            Arc::new(DiesInBoot(forkserver(), Death::Panic)),
            "exited with code 101",
            "doomed: a handler failed to initialise",
        ),
        (
            Arc::new(DiesInBoot(forkserver(), Death::Abort)),
            "killed by SIGABRT",
            "doomed: giving up hard",
        ),
        (exec(&script), "exited with code 4", "cannot open /nonexistent/config: exec"),
        (exec(std::path::Path::new("/bin/false")), "exited with code 1", ""),
    ];
    for (backend, want_status, want_stderr) in cases {
        let t = Instant::now();
        let err = core_runtime(backend)
            .run(|root| async move {
                root.nursery(|n| async move { n.start_actor("doomed").await.map(|_| ()) }).await
            })
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        match &err {
            ActorError::ActorDied { actor, status, during: During::Boot, stderr } => {
                assert_eq!(actor.name, "doomed");
                let status = status.to_string();
                assert!(status.starts_with(want_status), "{status} (want {want_status})");
                if want_stderr.is_empty() {
                    assert_eq!(stderr, "", "nothing was written");
                } else {
                    assert!(stderr.contains(want_stderr), "stderr {stderr:?} (want {want_stderr})");
                    assert!(err.to_string().contains(want_stderr), "{err}");
                }
            }
            other => panic!("{other}"),
        }
    }
    drop(dir);
    assert_no_descendants(Duration::from_secs(5));
}

/// A backend whose children connect to a listener that never answers (they boot as far
/// as the handshake, then wait), recording each child's pid.
#[derive(Debug)]
struct ToSilentParent {
    inner: Arc<dyn SpawnBackend>,
    silent: plough::Address,
    pid: Arc<std::sync::Mutex<Option<u32>>>,
}

impl SpawnBackend for ToSilentParent {
    fn method(&self) -> SpawnMethod {
        self.inner.method()
    }
    fn spawn(
        &self,
        mut req: SpawnRequest,
    ) -> futures::future::BoxFuture<'_, Result<ChildHandle, SpawnError>> {
        req.boot.parent_addr = self.silent.clone();
        Box::pin(async move {
            let child = self.inner.spawn(req).await?;
            *self.pid.lock().unwrap() = Some(child.pid());
            Ok(child)
        })
    }
}

/// A child killed because it never finished connecting leaves nothing behind — its
/// marker and socket file are removed at once, while the nursery goes on, not when it
/// exits — and the error carries what the child wrote.
#[test]
fn a_child_that_times_out_in_boot_leaves_no_files_even_while_the_nursery_lives() {
    let _g = root_lock();
    become_subreaper();
    // A private (0700) directory, removed however the test ends.
    let dir = tempfile::Builder::new().prefix("plough-silent-").tempdir().unwrap();
    let path = dir.path().join("silent@parent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let pid = Arc::new(std::sync::Mutex::new(None));
    let backend = Arc::new(ToSilentParent {
        inner: forkserver(),
        silent: plough::Address::Uds(path.clone()),
        pid: Arc::clone(&pid),
    });
    let rt_dir = plough_fork_prims::marker::default_runtime_dir();
    let markers = plough_fork_prims::marker::markers_dir(&rt_dir);
    let sock_dir = dir.path().to_path_buf();
    let pid2 = Arc::clone(&pid);
    core_runtime(backend)
        .configure(|c| c.budgets.connect = Duration::from_secs(2))
        .run(|root| {
            bounded(Duration::from_secs(30), async move {
                root.nursery(|n| async move {
                    let ours = |pid: u32| -> Vec<String> {
                        let mut v: Vec<String> = std::fs::read_dir(&markers)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|f| f == &pid.to_string() || f.starts_with(&format!(".{pid}.")))
                            .collect();
                        v.extend(
                            std::fs::read_dir(&sock_dir)
                                .into_iter()
                                .flatten()
                                .flatten()
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .filter(|f| f.starts_with("hangs@")),
                        );
                        v
                    };
                    // The child gets as far as its marker and socket, then waits.
                    let watch = async {
                        loop {
                            if let Some(p) = *pid2.lock().unwrap()
                                && ours(p).len() >= 2
                            {
                                return p;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    let (spawned, child) = tokio::join!(n.start_actor("hangs"), watch);
                    match spawned {
                        Err(ActorError::Spawn(SpawnError::ConnectTimeout { name, .. })) => {
                            assert_eq!(name, "hangs")
                        }
                        Err(other) => panic!("{other}"),
                        Ok(_) => panic!("a silent parent cannot be connected to"),
                    }
                    assert_eq!(ours(child), Vec::<String>::new(), "files of the killed child");
                    assert!(plough_tests::proc_state(child).is_none(), "it was reaped");
                    Ok(())
                })
                .await
            })
        })
        .unwrap();
    drop((listener, dir));
    assert_no_descendants(Duration::from_secs(5));
}

#[test]
fn the_reserved_subint_forkserver_key_refuses_and_never_falls_back() {
    let _g = root_lock();
    become_subreaper();
    let method: SpawnMethod = "subint_forkserver".parse().expect("the key parses");
    let err = core_runtime(plough::backends::backend_for(method, ChildCommand::this_program()))
        .run(|root| async move {
            root.nursery(|n| async move {
                let r = n.start_actor("never").await.map(|_| ());
                // Nothing was started: no process exists below us.
                assert!(plough_tests::descendants().is_empty(), "a process was spawned");
                r
            })
            .await
        })
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ActorError::Spawn(SpawnError::NotImplemented { .. })), "{err:?}");
    assert!(text.contains("use `zygote`"), "{text}");
    assert!(text.contains("subint_forkserver"), "{text}");
}
