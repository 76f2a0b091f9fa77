//! The user program's handlers and the threads it runs beside plough.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The error type of the program's handlers.
#[derive(Debug)]
pub struct AppError(pub String);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AppError {}

async fn square(_cx: plough::Cx, x: u64) -> Result<u64, AppError> {
    Ok(x * x)
}

async fn pid(_cx: plough::Cx, _: ()) -> Result<u32, AppError> {
    Ok(std::process::id())
}

/// Waits until its actor is asked to stop (a cancel, its parent's SIGTERM).
async fn idle(cx: plough::Cx, _: ()) -> Result<(), AppError> {
    cx.shutdown_requested().await;
    Ok(())
}

/// Every process of the program builds this registry.
pub fn registry() -> plough::Registry {
    plough::Registry::new().func("square", square).func("pid", pid).func("idle", idle)
}

/// Threads that keep the allocator, stdio, tracing and the environment busy (taking their
/// locks all the time) until dropped: what a real program's own threads do while plough
/// spawns.
pub struct Hammers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Rounds done, all threads together.
    pub rounds: Arc<AtomicU64>,
}

impl Hammers {
    /// Starts one thread per kind of lock.
    pub fn start() -> Hammers {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        type Work = fn(u64);
        let kinds: [(&str, Work); 4] = [
            ("malloc", |i| {
                let v: Vec<Vec<u8>> =
                    (0..64).map(|k| vec![0u8; 64 + ((i as usize + k) % 4096)]).collect();
                std::hint::black_box(v);
            }),
            ("stdio", |i| {
                use std::io::Write;
                let _ = write!(std::io::stdout().lock(), "");
                let _ = write!(std::io::stderr().lock(), "");
                std::hint::black_box(i);
            }),
            ("tracing", |i| tracing::trace!(i, "hammering the subscriber")),
            ("env", |i| {
                // SAFETY (of the program): nothing of this program reads the environment
                // from C while this runs.
                unsafe { std::env::set_var("USER_APP_HAMMER", i.to_string()) };
            }),
        ];
        for (name, work) in kinds {
            let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("hammer-{name}"))
                    .spawn(move || {
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            work(i);
                            i += 1;
                            rounds.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .expect("a hammer thread"),
            );
        }
        Hammers { stop, threads, rounds }
    }
}

impl Drop for Hammers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
