//! The test program: its children (exec'd) dispatch child mode in `Runtime::run`; run as a
//! root it plays a scenario named on argv and prints progress lines for the test to read.
//!
//! Scenarios: `sleepers N` (start N children, print `pids <p1> <p2>...`, then wait
//! forever: for the SIGINT and SIGKILL tests); `sleepers-selfint N` (the same, then a
//! background task sends SIGINT to this process); `tree` (root -> 2 children -> 2
//! sleepers each, then wait forever: for the reaper's tests); `burst N` (N children
//! started concurrently, printing `spawning` first and `started N` once all run, then
//! wait forever: for the SIGINT-during-spawns test); `pid1` (for `runtime_pid1.rs`, run
//! as a pid namespace's first process: see the scenario).
//!
//! Lifecycle scenarios (`runtime_lifecycle.rs`), each printing `ready` when set up and
//! `shutdown requested` when `Actor::shutdown_requested` fires:
//! * `files DIR N`: N children each hold a file in DIR (their cleanup removes it), and
//!   the root reads an endless stream from one more child until the tree is cancelled;
//! * `thread-first DIR N`: the same, with a thread of the program's own started before
//!   `Runtime::run` (it blocks no signal);
//! * `panic DIR N`: the same setup, then the body panics;
//! * `timeout DIR N`: the same children inside `tokio::time::timeout`, which drops the
//!   nursery; prints `timed out` and returns normally;
//! * `spawned-nursery DIR N`: the holders (whose cleanup takes 300 ms) are in a nursery
//!   that runs in a task the program spawned;
//!   the body waits for the shutdown and returns;
//! * `idle`: no nursery, the body waits forever;
//! * `stubborn`: a child that blocks its only thread (ignores every cancel) for a minute;
//!   prints `body dropped` when the runtime drops the body.
//!
//! Fd-limit scenarios (`runtime_fd_limits.rs`), run with the soft `RLIMIT_NOFILE` set to
//! LIMIT before plough starts (its children, which run `main` again or are forked from
//! it, have the same):
//! * `fd-limit LIMIT N [unchecked]`: starts a `keeper` child, then N more one after the other, keeping
//!   the ones that start; prints `spawn-err <error>` for each that fails, then
//!   `spawned ok=A out_of_fds=B other=C` and `zombies Z` (children in state Z once the
//!   reaper had its bounded time), then `ready`; on a line on stdin the keeper answers a
//!   call (`keeper 3`) and the tree shuts down. `unchecked`: with `Budgets::spawn_fds` 4
//!   instead of 16, so spawns fail at their own steps;
//! * `flood LIMIT`: prints `addr <its listener>`, `fds <open fds>` and `ready`, then serves
//!   commands from stdin: `spawn` (a child started and called: `spawned <answer> fds <n>`),
//!   `fds` (`fds <n>`), `quit`.
//!
//! `remote-root CA_DIR ADDR` (`netns_hosts.rs`): a root with the `root` pair and the secret
//! of the `plough ca` directory CA_DIR attaches to the `plough-host` daemon at ADDR,
//! starts `remote-kid` there, prints `remote <its pid>` and waits forever (the test
//! SIGKILLs it: the daemon's lease must end the kid).
//!
//! `tree-registrar CA_DIR REGISTRY` (`netns_hosts.rs`): a root with the `root` pair and
//! the secret of CA_DIR that is its tree's registrar at REGISTRY (a fixed address, which
//! other roots join); prints `ready registrar=<bool>` and exits cleanly on SIGTERM.
//!
//! `trace` (`runtime_trace.rs`, with `PLOUGH_TEST_TRACE_DIR` set): a child that runs
//! `relay_add` (which calls `add` on a grandchild of its own); prints `result 5`; then
//! runs `add` in a `side` child with `run_in_actor`.
//!
//! `failover NAME` (`runtime_registrar_failover.rs`): a root named NAME with one child
//! `NAME-kid`, on the registry its environment chooses (`PLOUGH_REGISTRY`, or the
//! per-user default); prints `ready <pid> <kid pid> registrar=<bool>`, then answers one
//! command per stdin line until `quit` (or stdin closes):
//! * `find X`: one `find_actor(X)`, printed as `find X some|none|err <ms> [error]`;
//! * `wait X`: `wait_for_actor(X)` (at most 10 s): `wait X ok|err <ms> [error]`;
//! * `list`: the names `list_actors` gives, sorted: `list a,b,...` or `list err <error>`;
//! * `status`: `registrar=<bool>`.

use plough_tests::app::registry;

/// `dir/held<i>` for `i` in `0..n`.
fn held_files(dir: &std::path::Path, n: u32) -> Vec<std::path::PathBuf> {
    (0..n).map(|i| dir.join(format!("held{i}"))).collect()
}

fn say(line: &str) {
    println!("{line}");
    std::io::Write::flush(&mut std::io::stdout()).ok();
}

/// Starts a holder child per file and waits (bounded) until every file exists.
async fn hold_files(nursery: &plough::Nursery, files: &[std::path::PathBuf]) -> plough::Result<()> {
    hold_files_with(nursery, files, "hold_file").await
}

/// [`hold_files`] with holders running `function`.
async fn hold_files_with(
    nursery: &plough::Nursery,
    files: &[std::path::PathBuf],
    function: &str,
) -> plough::Result<()> {
    for (i, f) in files.iter().enumerate() {
        let path = f.to_str().expect("utf-8 path").to_owned();
        nursery.run_in_actor::<_, ()>(&format!("holder{i}"), function, path).await?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !files.iter().all(|f| f.exists()) {
        assert!(std::time::Instant::now() < deadline, "the holders did not create their files");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Makes an orphan (a grandchild whose parent `sh` exits at once, and which exits 50 ms
/// later) and says whether it is reaped (`orphan reaped`) or stays a zombie (`orphan
/// zombie`, after `Budgets::reap_bound`).
async fn pid1_orphan() -> plough::Result<()> {
    let out = std::process::Command::new("sh")
        .args(["-c", "sleep 0.05 >/dev/null 2>&1 & echo $!"])
        .output()
        .map_err(plough::ActorError::other)?;
    let orphan: u32 =
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(plough::ActorError::other)?;
    let bound = plough::Budgets::default().reap_bound;
    let start = std::time::Instant::now();
    loop {
        match plough_tests::proc_state(orphan) {
            None => break say("orphan reaped"),
            Some(_) if start.elapsed() > bound => break say("orphan zombie"),
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    Ok(())
}

/// The commands of the `failover` scenario, one per stdin line, until `quit` or EOF.
async fn failover_commands(root: &plough::Actor) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::stdin().lock()) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let t = std::time::Instant::now();
        let ms = || t.elapsed().as_millis();
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["find", x] => match root.find_actor(x).await {
                Ok(Some(_)) => say(&format!("find {x} some {}", ms())),
                Ok(None) => say(&format!("find {x} none {}", ms())),
                Err(e) => say(&format!("find {x} err {} {e}", ms())),
            },
            ["wait", x] => {
                let limit = std::time::Duration::from_secs(10);
                match tokio::time::timeout(limit, root.wait_for_actor(x)).await {
                    Ok(Ok(_)) => say(&format!("wait {x} ok {}", ms())),
                    Ok(Err(e)) => say(&format!("wait {x} err {} {e}", ms())),
                    Err(_) => say(&format!("wait {x} err {} timed out", ms())),
                }
            }
            ["list"] => match root.list_actors().await {
                Ok(entries) => {
                    let mut names: Vec<String> = entries.into_iter().map(|e| e.aid.name).collect();
                    names.sort();
                    say(&format!("list {}", names.join(",")));
                }
                Err(e) => say(&format!("list err {e}")),
            },
            ["status"] => say(&format!("registrar={}", root.is_registrar())),
            ["quit"] => break,
            _ => say(&format!("unknown command `{line}`")),
        }
    }
}

/// `fd-limit`: see the module docs.
async fn fd_limit(nursery: &plough::Nursery, n: u32) -> plough::Result<()> {
    let keeper = nursery.start_actor("keeper").await?;
    assert_eq!(keeper.run::<_, i64>("add", (1i64, 2i64)).await?, 3);
    let (mut ok, mut out_of_fds, mut other) = (Vec::new(), 0, 0);
    for i in 0..n {
        match nursery.start_actor(&format!("s{i}")).await {
            Ok(p) => ok.push(p),
            Err(e) => {
                match &e {
                    plough::ActorError::Spawn(plough::SpawnError::OutOfFds { .. }) => {
                        out_of_fds += 1;
                    }
                    _ => other += 1,
                }
                say(&format!("spawn-err {e}"));
            }
        }
    }
    say(&format!("spawned ok={} out_of_fds={out_of_fds} other={other}", ok.len()));
    // The failed spawns' children are reaped by the reaper thread: give it its time.
    let deadline = std::time::Instant::now() + plough::Budgets::default().reap_bound;
    let zombies = loop {
        let z = plough_tests::descendants_of(std::process::id())
            .into_iter()
            .filter(|&p| plough_tests::proc_state(p) == Some('Z'))
            .count();
        if z == 0 || std::time::Instant::now() > deadline {
            break z;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    say(&format!("zombies {zombies}"));
    say("ready");
    read_stdin_line().await;
    say(&format!("keeper {}", keeper.run::<_, i64>("add", (1i64, 2i64)).await?));
    Ok(())
}

/// `flood`: see the module docs.
async fn flood(root: &plough::Actor, nursery: &plough::Nursery) -> plough::Result<()> {
    let fds = || plough_fork_prims::open_fd_count().map_or(-1, |n| n as i64);
    say(&format!("addr {}", root.addr()));
    say(&format!("fds {}", fds()));
    say("ready");
    let mut spawned = 0;
    loop {
        match read_stdin_line().await.as_str() {
            "spawn" => {
                let p = nursery.start_actor(&format!("under-flood{spawned}")).await?;
                spawned += 1;
                let answer = p.run::<_, i64>("add", (40i64, 2i64)).await?;
                say(&format!("spawned {answer} fds {}", fds()));
            }
            "fds" => say(&format!("fds {}", fds())),
            _ => return Ok(()),
        }
    }
}

/// One line from stdin (empty at its end).
async fn read_stdin_line() -> String {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        line.trim().to_owned()
    })
    .await
    .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).cloned().unwrap_or_default();
    let lifecycle_dir = args.get(2).map(std::path::PathBuf::from);
    let lifecycle_n: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    if scenario == "thread-first" {
        // A thread of the program's own, started before plough, blocking no signal.
        std::thread::spawn(|| {
            loop {
                std::thread::park();
            }
        });
    }
    let root_name = (scenario == "failover").then(|| args.get(2).cloned()).flatten();
    if scenario == "fd-limit" || scenario == "flood" {
        let limit: u64 = args.get(2).and_then(|s| s.parse().ok()).expect("LIMIT");
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        let soft = rustix::process::Rlimit { current: Some(limit), maximum: hard };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, soft).expect("setrlimit");
    }
    // `fd-limit LIMIT N unchecked`: an up-front check that lets a spawn start with only 4
    // fds free (enough to admit its child's connection, not for its steps), so spawns run
    // until one of their own steps finds none.
    let unchecked = scenario == "fd-limit" && args.get(4).is_some_and(|a| a == "unchecked");
    // The suites' span layer, when a test names its directory (children too: see `obs`).
    plough_tests::obs::install_span_layer_from_env();
    let runtime = plough::Runtime::new(registry()).configure(|c| {
        if let Ok(addr) = std::env::var("PLOUGH_TEST_REGISTRY") {
            c.registry_addr = addr.parse().expect("PLOUGH_TEST_REGISTRY");
        }
        if let Some(name) = &root_name {
            c.name = name.clone();
        }
        if unchecked {
            c.budgets.spawn_fds = 4;
        }
        c.budgets.shm_threshold = Some(plough_tests::SHM_THRESHOLD);
        if scenario == "remote-root" {
            let dir = std::path::PathBuf::from(args.get(2).expect("CA_DIR"));
            plough_tests::multi_host::configure_root(c, "root", &dir, None);
        }
        if scenario == "tree-registrar" {
            let dir = std::path::PathBuf::from(args.get(2).expect("CA_DIR"));
            plough_tests::multi_host::configure_root(c, "tree-registrar", &dir, None);
            c.registry_addr = args.get(3).expect("REGISTRY").parse().expect("REGISTRY");
        }
    });
    let result = runtime.run(|root| async move {
        let watcher = root.clone();
        tokio::spawn(async move {
            watcher.shutdown_requested().await;
            say("shutdown requested");
        });
        match scenario.as_str() {
            "trace" => {
                root.nursery(|nursery| async move {
                    let child = nursery.start_actor("child").await?;
                    let sum: i64 = child.run("relay_add", (2i64, 3i64)).await?;
                    say(&format!("result {sum}"));
                    // A call run from a task of the nursery's is still the body's child.
                    nursery.run_in_actor::<_, i64>("side", "add", (1i64, 1i64)).await?;
                    Ok(())
                })
                .await
            }
            "files" | "thread-first" | "panic" => {
                let files = held_files(lifecycle_dir.as_deref().expect("DIR"), lifecycle_n);
                let panic = scenario == "panic";
                root.nursery(|nursery| async move {
                    hold_files(&nursery, &files).await?;
                    let source = nursery.start_actor("source").await?;
                    let (ctx, ()) = source.open_context::<_, ()>("ctx_count_forever", ()).await?;
                    let s = ctx.open_stream_with(plough::StreamConfig::backpressure()).await?;
                    s.recv::<u64>().await?;
                    say("ready");
                    if panic {
                        panic!("the body panics on purpose");
                    }
                    while s.recv::<u64>().await?.is_some() {}
                    Ok(())
                })
                .await
            }
            "timeout" => {
                // The nursery is dropped by a lost `select!` branch (what an outer
                // `tokio::time::timeout` does), once its children hold their files.
                let files = held_files(lifecycle_dir.as_deref().expect("DIR"), lifecycle_n);
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
                let nursery = root.nursery(|nursery| async move {
                    hold_files(&nursery, &files).await?;
                    say("ready");
                    let _ = ready_tx.send(());
                    std::future::pending::<()>().await;
                    Ok(())
                });
                let limit = async {
                    let _ = ready_rx.await;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                };
                tokio::select! {
                    r = nursery => r,
                    () = limit => {
                        say("timed out");
                        Ok(())
                    }
                }
            }
            "spawned-nursery" => {
                // The nursery runs in a task of the program's own; the body only waits for
                // the shutdown and returns.
                let files = held_files(lifecycle_dir.as_deref().expect("DIR"), lifecycle_n);
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
                let r = root.clone();
                tokio::spawn(async move {
                    r.nursery(|nursery| async move {
                        hold_files_with(&nursery, &files, "hold_file_slowly").await?;
                        let _ = ready_tx.send(());
                        std::future::pending::<()>().await;
                        Ok(())
                    })
                    .await
                });
                let _ = ready_rx.await;
                say("ready");
                root.shutdown_requested().await;
                Ok(())
            }
            "remote-root" => {
                let addr: plough::Address = args.get(3).expect("ADDR").parse().expect("ADDR");
                let host = root.attach_host(&addr).await?;
                root.nursery(|n| async move {
                    let p = n.start_actor_on(&host, "remote-kid").await?;
                    say(&format!("remote {}", p.aid().pid));
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await
            }
            "tree-registrar" => {
                say(&format!("ready registrar={}", root.is_registrar()));
                root.shutdown_requested().await;
                Ok(())
            }
            "idle" => {
                say("ready");
                std::future::pending::<()>().await;
                Ok(())
            }
            "stubborn" => {
                // Says when the runtime drops the body (after a signal's grace).
                struct SayOnDrop;
                impl Drop for SayOnDrop {
                    fn drop(&mut self) {
                        say("body dropped");
                    }
                }
                let _dropped = SayOnDrop;
                root.nursery(|nursery| async move {
                    let p = nursery.start_actor("stubborn").await?;
                    let call =
                        tokio::spawn(async move { p.run::<_, ()>("block", 60_000u64).await });
                    say("ready");
                    let _ = call.await;
                    Ok(())
                })
                .await
            }
            "sleepers" | "sleepers-selfint" => {
                let selfint = scenario == "sleepers-selfint";
                let n: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
                root.nursery(|nursery| async move {
                    let mut pids = Vec::new();
                    for i in 0..n {
                        let p = nursery.start_actor(&format!("sleeper{i}")).await?;
                        pids.push(p.run::<_, u32>("pid", ()).await?.to_string());
                    }
                    println!("pids {}", pids.join(" "));
                    if selfint {
                        tokio::spawn(async {
                            let me = rustix::process::getpid();
                            rustix::process::kill_process(me, rustix::process::Signal::INT)
                                .expect("self SIGINT");
                        });
                    }
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await
            }
            // `tree`: root -> c0, c1 -> 2 sleepers each (7 actors); prints `tree started`
            // once the children run (their sleepers follow), then waits forever.
            "tree" => {
                root.nursery(|nursery| async move {
                    let c0 = nursery.start_actor("c0").await?;
                    let c1 = nursery.start_actor("c1").await?;
                    println!("tree started");
                    let (a, b) = tokio::join!(
                        c0.run::<_, ()>("hold_sleepers", 2u32),
                        c1.run::<_, ()>("hold_sleepers", 2u32)
                    );
                    a.and(b)
                })
                .await
            }
            "stream-dump" => {
                // root -> mid -> leaf, a backpressured stream of N numbers relayed up the
                // tree; the root stops reading halfway (everyone blocks mid-stream) until
                // a line arrives on stdin, then checks every number arrived in order.
                let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
                root.nursery(|nursery| async move {
                    let mid = nursery.start_actor("mid").await?;
                    let (ctx, ()) = mid.open_context::<_, ()>("ctx_relay", n).await?;
                    let s = ctx.open_stream_with(plough::StreamConfig::backpressure()).await?;
                    let mut next = 0u64;
                    while next < n / 2 {
                        let x: u64 = s.recv().await?.expect("stream ended early");
                        assert_eq!(x, next, "out of order");
                        next += 1;
                    }
                    println!("half");
                    std::io::Write::flush(&mut std::io::stdout()).ok();
                    tokio::task::spawn_blocking(|| {
                        let mut line = String::new();
                        std::io::stdin().read_line(&mut line)
                    })
                    .await
                    .expect("stdin reader")
                    .expect("read stdin");
                    while let Some(x) = s.recv::<u64>().await? {
                        assert_eq!(x, next, "out of order");
                        next += 1;
                    }
                    let relayed = ctx.result::<u64>().await?;
                    println!("delivered {next} of {n} (relayed {relayed:?})");
                    Ok(())
                })
                .await
            }
            "pid1" => {
                // Run as the first process of a pid namespace: says where it runs
                // (`pid P ppid Q`), makes an orphan (`pid1_orphan`; not with
                // `pid1 no-orphan`, which says `no orphan`), then starts a child and
                // waits for a signal (`ready <child pid>`).
                let (pid, ppid) = (std::process::id(), std::os::unix::process::parent_id());
                say(&format!("pid {pid} ppid {ppid}"));
                if args.get(2).is_some_and(|a| a == "no-orphan") {
                    say("no orphan");
                } else {
                    pid1_orphan().await?;
                }
                root.nursery(|nursery| async move {
                    let worker = nursery.start_actor("worker").await?;
                    say(&format!("ready {}", worker.run::<_, u32>("pid", ()).await?));
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await
            }
            "burst" => {
                // N children started concurrently (one join of N `start_actor`s): prints
                // `spawning` before the first, `started N` once every one runs, then
                // waits forever (for the SIGINT-during-spawns test).
                let n: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
                root.nursery(|nursery| async move {
                    let names: Vec<String> = (0..n).map(|i| format!("burst{i}")).collect();
                    say("spawning");
                    let portals = futures::future::try_join_all(
                        names.iter().map(|name| nursery.start_actor(name)),
                    )
                    .await?;
                    say(&format!("started {}", portals.len()));
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await
            }
            "failover" => {
                let name = root.aid().name.clone();
                let r = root.clone();
                root.nursery(|nursery| async move {
                    let kid = nursery.start_actor(&format!("{name}-kid")).await?;
                    let kid_pid: u32 = kid.run("pid", ()).await?;
                    say(&format!(
                        "ready {} {kid_pid} registrar={}",
                        std::process::id(),
                        r.is_registrar()
                    ));
                    failover_commands(&r).await;
                    nursery.cancel().await;
                    Ok(())
                })
                .await
            }
            "fd-limit" => {
                let n: u32 = args.get(3).and_then(|s| s.parse().ok()).expect("N");
                root.nursery(|nursery| async move { fd_limit(&nursery, n).await }).await
            }
            "flood" => {
                let me = root.clone();
                root.nursery(|nursery| async move { flood(&me, &nursery).await }).await
            }
            other => Err(plough::ActorError::other(format!("unknown scenario `{other}`"))),
        }
    });
    match result {
        Ok(()) => println!("result ok"),
        Err(e) => {
            println!("result err {e}");
            std::process::exit(e.exit_code());
        }
    }
}
