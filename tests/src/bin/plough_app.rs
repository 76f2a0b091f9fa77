//! The test program: its children (exec'd) dispatch child mode in `Runtime::run`; run as a
//! root it plays a scenario named on argv and prints progress lines for the test to read.
//!
//! Scenarios: `sleepers N` (start N children, print `pids <p1> <p2>...`, then wait
//! forever: for the SIGINT and SIGKILL tests); `sleepers-selfint N` (the same, then a
//! background task sends SIGINT to this process); `tree` (root -> 2 children -> 2
//! sleepers each, then wait forever: for the reaper's tests).

use plough_tests::app::registry;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).cloned().unwrap_or_default();
    let runtime = plough::Runtime::new(registry()).configure(|c| {
        if let Ok(addr) = std::env::var("PLOUGH_TEST_REGISTRY") {
            c.registry_addr = addr.parse().expect("PLOUGH_TEST_REGISTRY");
        }
    });
    let result = runtime.run(|root| async move {
        match scenario.as_str() {
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
            other => Err(plough::ActorError::other(format!("unknown scenario `{other}`"))),
        }
    });
    match result {
        Ok(()) => println!("result ok"),
        Err(e) => {
            println!("result err {e}");
            std::process::exit(match e {
                plough::ActorError::Interrupted => 130,
                _ => 1,
            });
        }
    }
}
