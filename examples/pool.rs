//! A worker pool over crashy jobs: none is lost.
//!
//! ```sh
//! cargo run --example pool
//! ```
//!
//! 2,000 jobs go to 4 worker actors; every job whose input ends in 13 aborts its worker.
//! The pool replaces each dead worker and runs the job again once (`retries(1)`); a job
//! that kills its worker twice is reported poisoned, naming its deaths. Every job is
//! answered or poisoned — none lost, none run again after it succeeded.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use plough::{ActorError, Cx, PoolConfig, Registry};
use std::time::Instant;

/// `x * x`, except that inputs ending in 13 kill the worker (SIGABRT).
async fn square(_cx: Cx, x: u64) -> Result<u64, ActorError> {
    if x % 100 == 13 {
        std::process::abort();
    }
    Ok(x * x)
}

fn main() {
    let started = Instant::now();
    let result =
        plough::Runtime::new(Registry::new().func("square", square)).run(|root| async move {
            root.pool(PoolConfig::new(4).retries(1), |pool| async move {
                let mut jobs = FuturesUnordered::new();
                for x in 0..2_000u64 {
                    let h = pool.submit::<_, u64>("square", x).await?;
                    jobs.push(async move { (x, h.await) });
                }
                let (mut ok, mut poisoned) = (0u64, Vec::new());
                while let Some((x, r)) = jobs.next().await {
                    match r {
                        Ok(v) => {
                            assert_eq!(v, x * x);
                            ok += 1;
                        }
                        Err(e @ ActorError::JobPoisoned { .. }) => poisoned.push((x, e)),
                        Err(e) => return Err(e),
                    }
                }
                poisoned.sort_by_key(|(x, _)| *x);
                println!("  answered: {ok}, poisoned: {}", poisoned.len());
                if let Some((x, e)) = poisoned.first() {
                    println!("  first poisoned input {x}: {e}");
                }
                println!("  workers replaced after a death: {}", pool.replaced());
                Ok(())
            })
            .await
        });
    match result {
        Ok(()) => println!("done in {:.2?}: every worker exited and was reaped", started.elapsed()),
        Err(e) => {
            eprintln!("pool example failed: {e}");
            std::process::exit(1);
        }
    }
}
