//! A supervised tree: restart strategies and intensity over real crashes.
//!
//! ```sh
//! cargo run --example supervisor
//! ```
//!
//! The root supervises three children, one-for-one: `store` (a serving actor that keeps a
//! counter), `flaky` (a serving actor we crash on purpose, twice) and `report` (a
//! transient job that runs once and is done). Each crash is an exit event with the
//! child's status and the call it died in; `flaky` comes back each time with a new pid,
//! while `store` keeps its state. Then a second supervisor over a child that can never
//! run (it aborts at once) gives up at its restart intensity — 3 restarts in 10 s — with
//! the exits that broke it, instead of fork-looping.

use plough::{ActorError, ChildSpec, Cx, Registry, Restart, Strategy, Supervisor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static COUNT: AtomicU64 = AtomicU64::new(0);

async fn bump(_cx: Cx, by: u64) -> Result<u64, ActorError> {
    Ok(COUNT.fetch_add(by, Ordering::SeqCst) + by)
}

async fn pid(_cx: Cx, _: ()) -> Result<u32, ActorError> {
    Ok(std::process::id())
}

/// Dies of SIGABRT, as a buggy native library would.
async fn crash(_cx: Cx, _: ()) -> Result<(), ActorError> {
    std::process::abort()
}

async fn report(_cx: Cx, what: String) -> Result<(), ActorError> {
    println!("  report: {what}");
    Ok(())
}

fn registry() -> Registry {
    Registry::new().func("bump", bump).func("pid", pid).func("crash", crash).func("report", report)
}

fn main() {
    let result = plough::Runtime::new(registry()).run(|root| async move {
        let sup = Supervisor::new(Strategy::OneForOne)
            .intensity(5, Duration::from_secs(10))
            .child(ChildSpec::actor("store"))
            .child(ChildSpec::actor("flaky"))
            .child(
                ChildSpec::run("report", "report", &"the tree is up")?.restart(Restart::Transient),
            );
        root.supervise(sup, |s| async move {
            let mut exits = s.exits();
            let store = s.portal("store").await?;
            for round in 1..=2 {
                store.run::<_, u64>("bump", 10u64).await?;
                let flaky = s.portal("flaky").await?;
                let before: u32 = flaky.run("pid", ()).await?;
                let died = flaky.run::<_, ()>("crash", ()).await.unwrap_err();
                println!("  round {round}: {died}");
                // The report's own normal exit may come first.
                let exit = loop {
                    let e = exits.recv().await?.expect("an exit");
                    if e.id == "flaky" {
                        break e;
                    }
                    println!("  exit: {e}");
                };
                let after: u32 = s.portal("flaky").await?.run("pid", ()).await?;
                println!(
                    "  exit: {exit}; restarted: {} (pid {before} -> {after})",
                    exit.restarting
                );
            }
            let count: u64 = store.run("bump", 0u64).await?;
            println!("  store kept its state through the restarts: {count}");
            println!("  restarts: {}", s.restarts());
            Ok(())
        })
        .await?;

        let doomed = Supervisor::new(Strategy::OneForOne)
            .intensity(3, Duration::from_secs(10))
            .child(ChildSpec::run("doomed", "crash", &())?);
        match root.supervise(doomed, |_s| std::future::pending::<plough::Result<()>>()).await {
            Err(ActorError::SupervisorGaveUp { exits, .. }) => {
                println!("  the second supervisor gave up after {} exits:", exits.len());
                for e in &exits {
                    println!("    {e}");
                }
            }
            other => println!("  unexpected: {other:?}"),
        }
        Ok(())
    });
    match result {
        Ok(()) => println!("done: every actor exited and was reaped"),
        Err(e) => {
            eprintln!("supervisor example failed: {e}");
            std::process::exit(1);
        }
    }
}
