//! plough's demo: a small actor tree doing real work, then a clean cancel.
//!
//! ```sh
//! cargo run --release --example demo            # PLOUGH_SPAWN_METHOD=exec to re-exec instead of fork
//! ```
//!
//! The root (also the registrar) starts a `supervisor` actor; the supervisor starts four
//! `worker` actors and hands each a series of ranges to count primes in. Every finished
//! chunk is reported back to the root, which prints the progress line: the supervisor
//! found the root through the registrar and calls its `progress` function. At the end the
//! root cross-checks the total, lists the live actors, cancels the supervisor (which
//! takes its workers down with it) and exits with nothing left running.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use plough::{ActorError, Cx, Registry};
use std::time::{Duration, Instant};

const LIMIT: u64 = 2_000_000;
const WORKERS: u64 = 4;
const CHUNKS: u64 = 16;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DemoError(String);

/// Counts the primes in `[lo, hi)` by trial division (deliberately CPU-bound work).
async fn count_primes(_cx: Cx, (lo, hi): (u64, u64)) -> Result<u64, DemoError> {
    Ok((lo..hi).filter(|&n| is_prime(n)).count() as u64)
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// Prints a progress line (runs in the root; the supervisor calls it).
async fn progress(_cx: Cx, line: String) -> Result<(), DemoError> {
    println!("  {line}");
    Ok(())
}

/// Starts the workers, deals out the chunks, reports each to the root; returns the total.
async fn supervise(cx: Cx, (workers, limit): (u64, u64)) -> Result<u64, ActorError> {
    let root = cx.runtime().wait_for_actor("root").await?;
    cx.nursery(|n| async move {
        let mut portals = Vec::new();
        for i in 0..workers {
            portals.push(n.start_actor(&format!("worker-{i}")).await?);
        }
        let names: Vec<String> = portals.iter().map(|p| p.aid().to_string()).collect();
        root.run::<_, ()>("progress", format!("supervisor started {}", names.join(", "))).await?;
        let chunk = limit.div_ceil(CHUNKS);
        let done = std::sync::atomic::AtomicU64::new(0);
        // Each worker takes every `workers`-th chunk; the workers run in parallel and each
        // finished chunk is reported to the root at once.
        let mut lanes: FuturesUnordered<_> = portals
            .iter()
            .enumerate()
            .map(|(w, portal)| {
                let (root, done) = (&root, &done);
                async move {
                    let mut sum = 0;
                    for c in (w as u64..CHUNKS).step_by(workers as usize) {
                        let (lo, hi) = (c * chunk, ((c + 1) * chunk).min(limit));
                        let count: u64 = portal.run("count_primes", (lo, hi)).await?;
                        sum += count;
                        let pct = (done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
                            * 100
                            / CHUNKS;
                        let line =
                            format!("[{pct:>3}%] {}: {count} primes in [{lo}, {hi})", portal.aid());
                        root.run::<_, ()>("progress", line).await?;
                    }
                    Ok::<u64, ActorError>(sum)
                }
            })
            .collect();
        let mut total = 0u64;
        while let Some(lane) = lanes.next().await {
            total += lane?;
        }
        let alive: Vec<String> =
            n.actor().list_actors().await?.into_iter().map(|e| e.aid.to_string()).collect();
        root.run::<_, ()>("progress", format!("actors alive: {}", alive.join(", "))).await?;
        Ok(total)
    })
    .await
}

fn registry() -> Registry {
    Registry::new()
        .func("count_primes", count_primes)
        .func("progress", progress)
        .func("supervise", supervise)
}

fn main() {
    let started = Instant::now();
    let result = plough::Runtime::new(registry()).run(|root| async move {
        println!(
            "plough demo: {} (registrar {}), spawn method {}",
            root.aid(),
            if root.is_registrar() { format!("at {}", root.addr()) } else { "joined".into() },
            root.spawn_method()
        );
        root.nursery(|n| async move {
            let sup = n.start_actor("supervisor").await?;
            println!("  spawned {}", sup.aid());
            let total: u64 = sup.run("supervise", (WORKERS, LIMIT)).await?;
            let verdict = if total == sieve(LIMIT) { "ok" } else { "MISMATCH" };
            println!("  total primes below {LIMIT}: {total} (local sieve agrees: {verdict})");
            let t = Instant::now();
            let acked = sup.cancel_actor().await;
            println!(
                "  cancelled {}: acknowledged={acked} in {:.1} ms",
                sup.aid(),
                t.elapsed().as_secs_f64() * 1e3
            );
            tokio::time::timeout(Duration::from_secs(5), sup.closed()).await.ok();
            Ok(())
        })
        .await?;
        let alive: Vec<String> =
            root.list_actors().await?.into_iter().map(|e| e.aid.to_string()).collect();
        println!("  actors alive after the nursery: {}", alive.join(", "));
        Ok(())
    });
    match result {
        Ok(()) => println!(
            "done in {:.2} s: every actor exited and was reaped",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::exit(1);
        }
    }
}

/// The number of primes below `n`, by a sieve (to check the actors' answer).
fn sieve(n: u64) -> u64 {
    let n = n as usize;
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}
