//! Runtime benchmarks, each next to a floor measured in the same run (the machine is
//! shared and noisy: compare ratios, not absolute numbers across runs).
//!
//! `cargo xtask bench` (or `cargo bench -p plough --bench runtime`) prints a table and
//! writes `target/plough-bench.json`:
//! `{"results": [{"name", "unit", "median", "p99", "baseline", "baseline_median", "ratio"}]}`.
//! `--quick` takes fewer samples; `--only <group>` runs one group of rows (spawn, tree,
//! retouch, fan-out, rpc, supervision, stream, shm); the last line gives the total wall time.
//!
//! * spawn → first RPC answered, per actor (zygote; exec; forkserver), vs the raw floor:
//!   the same binary started the same way (forked by a zygote of this binary / posix_spawn
//!   / fork from the forkserver thread) that only connects back and writes one byte. Each
//!   is measured with 0, 100 MiB and 1 GiB of *touched* heap added to the parent (root)
//!   process: a `Vec<u8>` with every byte written, allocated before that size's
//!   measurements and freed after them. The forkserver forks from a dedicated thread of the
//!   root's own process, so `fork` must copy the page tables of everything the root has
//!   mapped and its cost grows with the root's heap; exec (`posix_spawn`, which glibc
//!   implements with `vfork`) shares the address space until the `execve`, and the zygote
//!   forks its own small process, so neither should. At each size, plough and floor
//!   samples alternate (floor first on even samples, plough first on odd ones) inside one
//!   root, after one unrecorded warm-up pair, so their ratio sees the same machine noise.
//!   Fewer samples are taken at the larger heaps. plough runs over UDS here, the floor's
//!   transport; one more row per backend (", tcp") measures TCP at 0 heap against the same
//!   floor;
//! * the parent's cost of re-touching a 256 MiB heap after 100 spawns (zygote;
//!   forkserver), next to the same re-touch after none;
//! * root + 16 actors + one RPC each + teardown (every child reaped);
//! * 1,000 actors started at once in one nursery + one call each + teardown, per backend
//!   (the total, and each actor's spawn → booted: p50/p99), and the USS / PSS of an idle
//!   actor (`/proc/<pid>/smaps_rollup`);
//! * RPC round trip of a trivial function over UDS vs a raw UDS ping-pong between two
//!   processes (one byte each way);
//! * supervision: restart latency (a supervised child's death seen by a caller → its
//!   replacement answering its first call) per backend, next to spawn → first RPC in the
//!   same run; a pool of 4 workers on trivial jobs next to the same jobs through
//!   `Portal::run` on 4 fixed workers;
//! * stream throughput child → parent, 64-byte messages with backpressure (the default
//!   config, and a 64-message buffer), vs a raw UDS stream of 64-byte records between two
//!   processes (`--only stream64`; `--only stream1m` runs the 1 MiB rows below alone);
//! * the data-plane rows (`benches/runtime/data_plane.rs`): RPC round trips pinned to one
//!   core next to raw and tokio ping-pongs pinned the same way; 64 concurrent callers next
//!   to 1; 1 MiB payloads through a stream and a call next to a raw UDS bulk transfer;
//! * shared memory (`benches/runtime/shm.rs`): 1 MiB and 64 MiB payloads by copy and by
//!   shm against `memcpy`, and a ring's 64-byte msgs/s against the raw UDS stream.

use plough::{Cx, Registry, SpawnMethod};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

const FLOOR_ARG: &str = "--bench-connect-back";

async fn ping(_cx: Cx, x: u64) -> Result<u64, std::convert::Infallible> {
    Ok(x)
}

/// Streams `n` payloads of `size` bytes to the parent with backpressure; returns `n`.
async fn source(ctx: plough::Context, (n, size): (u64, usize)) -> Result<u64, plough::ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream_with(plough::StreamConfig::backpressure()).await?;
    let payload = plough::ipc_wire::payload::Payload::from(vec![7u8; size]);
    for _ in 0..n {
        s.send_payload(payload.clone()).await?;
    }
    s.close().await?;
    Ok(n)
}

/// Dies of SIGABRT (the restart-latency rows).
async fn crash(_cx: Cx, _: ()) -> Result<(), std::convert::Infallible> {
    std::process::abort()
}

fn registry() -> Registry {
    let r = Registry::new().func("ping", ping).func("crash", crash).context("source", source);
    data_plane::register(shm::register(r))
}

/// Restart latency (a supervised child's death seen by a caller → its replacement
/// answering its first call) and, alternating with it in the same root, spawn → first
/// RPC; `n` samples each, ms.
fn restart_and_spawn(method: SpawnMethod, n: usize) -> (Vec<f64>, Vec<f64>) {
    use plough::{ChildSpec, Strategy, Supervisor};
    runtime(method, true)
        .run(|root| async move {
            let sup = Supervisor::new(Strategy::OneForOne)
                .intensity(u32::MAX, std::time::Duration::from_secs(1))
                .child(ChildSpec::actor("w"));
            let (mut restart, mut spawn) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let r = root.clone();
            r.supervise(sup, |s| async move {
                for i in 0..=n {
                    let spawn_ms = root
                        .nursery(|nursery| async move {
                            let t = Instant::now();
                            let p = nursery.start_actor("b").await?;
                            let _: u64 = p.run("ping", 1u64).await?;
                            Ok(t.elapsed().as_secs_f64() * 1e3)
                        })
                        .await?;
                    let p = s.portal("w").await?;
                    let _: u64 = p.run("ping", 1u64).await?;
                    let died = p.run::<_, ()>("crash", ()).await;
                    let t = Instant::now();
                    assert!(matches!(died, Err(plough::ActorError::ActorDied { .. })), "{died:?}");
                    let _: u64 = s.portal("w").await?.run("ping", 1u64).await?;
                    let restart_ms = t.elapsed().as_secs_f64() * 1e3;
                    if i > 0 {
                        restart.push(restart_ms);
                        spawn.push(spawn_ms);
                    }
                }
                Ok((restart, spawn))
            })
            .await
        })
        .expect("restart bench")
}

/// Pool throughput on trivial jobs (4 workers, `n` jobs submitted as fast as the queue
/// takes them, results as they complete) and the floor: the same jobs through
/// `Portal::run` on 4 fixed workers, one lane of sequential calls each. Jobs/s (k), one
/// sample per run, alternating.
fn pool_and_fixed(n: u64, runs: usize) -> (Vec<f64>, Vec<f64>) {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    runtime(SpawnMethod::Zygote, true)
        .run(|root| async move {
            let (mut pool_k, mut fixed_k) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let r = root.clone();
                let k = root
                    .pool(plough::PoolConfig::new(4).queue(256), |pool| async move {
                        // Boot the workers outside the timing.
                        let warm: Vec<_> = futures::future::join_all(
                            (0..8).map(|i| pool.submit::<_, u64>("ping", i as u64)),
                        )
                        .await;
                        for h in warm {
                            h?.await?;
                        }
                        let t = Instant::now();
                        let mut pending = FuturesUnordered::new();
                        for i in 0..n {
                            pending.push(pool.submit::<_, u64>("ping", i).await?);
                            while pending.len() > 512 {
                                pending.next().await.expect("pending")?;
                            }
                        }
                        while let Some(r) = pending.next().await {
                            r?;
                        }
                        Ok(n as f64 / t.elapsed().as_secs_f64() / 1e3)
                    })
                    .await?;
                pool_k.push(k);
                let k = r
                    .nursery(|nursery| async move {
                        let mut workers = Vec::new();
                        for i in 0..4 {
                            let p = nursery.start_actor(&format!("fixed-{i}")).await?;
                            let _: u64 = p.run("ping", 0u64).await?;
                            workers.push(p);
                        }
                        let t = Instant::now();
                        let lanes = workers.iter().map(|p| async move {
                            for i in 0..n / 4 {
                                let _: u64 = p.run("ping", i).await?;
                            }
                            Ok::<(), plough::ActorError>(())
                        });
                        for r in futures::future::join_all(lanes).await {
                            r?;
                        }
                        Ok(n as f64 / t.elapsed().as_secs_f64() / 1e3)
                    })
                    .await?;
                fixed_k.push(k);
            }
            Ok((pool_k, fixed_k))
        })
        .expect("pool bench")
}

#[path = "runtime/shm.rs"]
mod shm;

#[path = "runtime/data_plane.rs"]
mod data_plane;

/// Messages per second (in thousands) of a `n`-message, 64-byte backpressured stream,
/// child → parent over UDS, with a receive buffer of `buffer`; one sample per run.
fn stream_throughput(n: u64, buffer: usize, runs: usize) -> Vec<f64> {
    runtime(SpawnMethod::MainThreadForkserver, true)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("source").await?;
                let mut out = Vec::with_capacity(runs);
                for _ in 0..runs {
                    let (ctx, ()) = p.open_context::<_, ()>("source", (n, 64usize)).await?;
                    let s = ctx
                        .open_stream_with(plough::StreamConfig::backpressure().with_buffer(buffer))
                        .await?;
                    let t = Instant::now();
                    let mut got = 0u64;
                    while s.recv_payload().await?.is_some() {
                        got += 1;
                    }
                    let rate = got as f64 / t.elapsed().as_secs_f64() / 1e3;
                    assert_eq!(got, n, "every message arrives");
                    ctx.result::<u64>().await?;
                    out.push(rate);
                }
                Ok(out)
            })
            .await
        })
        .expect("stream bench")
}

/// The floor: a forked child writes `n` 64-byte records into a UDS socketpair through a
/// buffered writer; this process reads them. Thousands of records per second, per run.
fn raw_stream(n: u64, runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let (mut a, b) = UnixStream::pair().unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&b);
            let opts = plough::fork_prims::ForkOptions::default().keep_fd(fd);
            let t = Instant::now();
            let child = plough::fork_prims::fork_blocking(&opts, move || {
                let mut w = std::io::BufWriter::with_capacity(64 << 10, b);
                let rec = [7u8; 64];
                for _ in 0..n {
                    if w.write_all(&rec).is_err() {
                        return 1;
                    }
                }
                i32::from(w.flush().is_err())
            })
            .unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0u64;
            loop {
                match a.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => total += k as u64,
                    Err(e) => panic!("raw stream read: {e}"),
                }
            }
            let rate = (total / 64) as f64 / t.elapsed().as_secs_f64() / 1e3;
            assert_eq!(total, n * 64);
            assert!(child.wait_blocking().unwrap().success());
            rate
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Stat {
    name: String,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Stat {
    fn new(name: &str, unit: &'static str, mut samples: Vec<f64>) -> Stat {
        samples.sort_by(|a, b| a.total_cmp(b));
        Stat { name: name.to_owned(), unit, samples }
    }
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i.min(self.samples.len() - 1)]
    }
    fn median(&self) -> f64 {
        self.pct(0.5)
    }
    fn p99(&self) -> f64 {
        self.pct(0.99)
    }
}

fn runtime(method: SpawnMethod, uds: bool) -> plough::Runtime {
    plough::Runtime::new(registry()).configure(|c| {
        c.spawn_method = method;
        c.registry_addr = if uds {
            let dir = plough::ipc_wire::runtime_dir::default_dir();
            plough::Address::Uds(dir.join(format!("bench{}@reg.sock", std::process::id())))
        } else {
            "tcp://127.0.0.1:0".parse().unwrap()
        };
    })
}

const MIB: usize = 1 << 20;

/// A heap of `bytes` for the root process, every byte written non-zero, so every page is
/// resident and has a page-table entry that `fork` must copy.
fn touched_heap(bytes: usize) -> Vec<u8> {
    std::hint::black_box(vec![0x5au8; bytes])
}

/// Spawn → first RPC answered (plough) and spawn → connect back (the floor), `n` samples
/// each, alternating, inside one root (each actor and floor child torn down outside the
/// timing). One unrecorded warm-up pair comes first. Returns (plough, floor), ms.
fn spawn_and_floor(method: SpawnMethod, n: usize, uds: bool) -> (Vec<f64>, Vec<f64>) {
    runtime(method, uds)
        .run(|root| async move {
            let mut floor = Floor::new(method);
            let (mut rpc, mut raw) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for i in 0..=n {
                let floor_first = i % 2 == 0;
                let mut floor_ms = 0.0;
                if floor_first {
                    (floor, floor_ms) = floor.sample_async().await;
                }
                let rpc_ms = root
                    .nursery(|nursery| async move {
                        let t = Instant::now();
                        let p = nursery.start_actor("b").await?;
                        let _: u64 = p.run("ping", 1u64).await?;
                        Ok(t.elapsed().as_secs_f64() * 1e3)
                    })
                    .await?;
                if !floor_first {
                    (floor, floor_ms) = floor.sample_async().await;
                }
                if i > 0 {
                    rpc.push(rpc_ms);
                    raw.push(floor_ms);
                }
            }
            Ok((rpc, raw))
        })
        .expect("spawn bench")
}

/// The floor: start this binary (exec: posix_spawn; fork: through the forkserver thread;
/// zygote: forked by a zygote of this binary) and wait until it has connected back and
/// written one byte.
struct Floor {
    method: SpawnMethod,
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    listener: UnixListener,
    zygote: Option<plough::fork_prims::Zygote>,
}

/// The payload a zygote-forked floor child finds: the path to connect back to follows.
const FLOOR_PAYLOAD: &[u8] = b"bench-floor:";

impl Floor {
    fn new(method: SpawnMethod) -> Floor {
        let dir = std::env::temp_dir().join(format!("plough-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("floor.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let zygote = (method == SpawnMethod::Zygote).then(|| {
            let mut argv = std::env::args_os();
            let argv0 = argv.next().unwrap_or_default();
            plough::fork_prims::Zygote::start("/proc/self/exe".into(), argv0, argv.collect())
                .expect("the floor's zygote starts")
        });
        Floor { method, dir, path, listener, zygote }
    }

    /// One sample, ms (blocking).
    fn sample(&self) -> f64 {
        let t = Instant::now();
        let handle = match self.method {
            SpawnMethod::Zygote => {
                use std::os::fd::AsFd;
                let null = std::fs::File::open("/dev/null").unwrap();
                let stderr = std::io::stderr();
                let mut payload = FLOOR_PAYLOAD.to_vec();
                payload.extend_from_slice(self.path.to_str().unwrap().as_bytes());
                let req = plough::fork_prims::ZygoteRequest {
                    payload: &payload,
                    stdio: [null.as_fd(), null.as_fd(), stderr.as_fd()],
                    deliver: &[],
                    kill_on_drop: true,
                };
                let z = self.zygote.as_ref().expect("a zygote floor has its zygote");
                z.spawn_blocking(&req, std::time::Duration::from_secs(5)).unwrap()
            }
            SpawnMethod::Exec => {
                let child = std::process::Command::new("/proc/self/exe")
                    .args([FLOOR_ARG, self.path.to_str().unwrap()])
                    .spawn()
                    .unwrap();
                plough::fork_prims::ChildHandle::from_std(child).unwrap()
            }
            _ => {
                let p = self.path.clone();
                plough::fork_prims::fork_blocking(&Default::default(), move || connect_back(&p))
                    .unwrap()
            }
        };
        let (mut s, _) = self.listener.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(handle.wait_blocking().unwrap().success(), "floor child failed");
        ms
    }

    /// [`Floor::sample`] on a blocking thread, so the root's (current-thread) runtime
    /// keeps running meanwhile.
    async fn sample_async(self) -> (Floor, f64) {
        tokio::task::spawn_blocking(move || {
            let ms = self.sample();
            (self, ms)
        })
        .await
        .expect("floor sample")
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connect_back(path: &std::path::Path) -> i32 {
    match UnixStream::connect(path).and_then(|mut s| s.write_all(b"x")) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Root + 16 actors (spawned concurrently) + one RPC each + teardown, `n` times.
fn tree16(method: SpawnMethod, n: usize) -> Vec<f64> {
    runtime(method, false)
        .run(|root| async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                root.nursery(|nursery| async move {
                    let spawns = (0..16).map(|i| {
                        let nursery = nursery.clone();
                        async move {
                            let p = nursery.start_actor(&format!("a{i}")).await?;
                            p.run::<_, u64>("ping", i as u64).await
                        }
                    });
                    for r in futures::future::join_all(spawns).await {
                        r?;
                    }
                    Ok(())
                })
                .await?;
                out.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(out)
        })
        .expect("tree bench")
}

/// 1,000 actors started at once in one nursery, one call each, then the nursery's exit
/// (every child reaped): (total ms, each actor's spawn → booted ms).
fn fan_out_1000(method: SpawnMethod) -> (f64, Vec<f64>) {
    runtime(method, true)
        .run(|root| async move {
            let t = Instant::now();
            let boots = root
                .nursery(|nursery| async move {
                    let spawns = (0..1000).map(|i| {
                        let nursery = nursery.clone();
                        async move {
                            let s = Instant::now();
                            let p = nursery.start_actor(&format!("f{i}")).await?;
                            let booted = s.elapsed().as_secs_f64() * 1e3;
                            p.run::<_, u64>("ping", i as u64).await?;
                            Ok::<f64, plough::ActorError>(booted)
                        }
                    });
                    futures::future::try_join_all(spawns).await
                })
                .await?;
            Ok((t.elapsed().as_secs_f64() * 1e3, boots))
        })
        .expect("fan-out bench")
}

/// USS and PSS (KiB) of each of `n` idle actors, from `/proc/<pid>/smaps_rollup`.
fn idle_actor_memory(method: SpawnMethod, n: usize) -> (Vec<f64>, Vec<f64>) {
    runtime(method, true)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let mut pids = Vec::new();
                for i in 0..n {
                    let p = nursery.start_actor(&format!("idle{i}")).await?;
                    p.run::<_, u64>("ping", 0).await?;
                    pids.push(p.aid().pid);
                }
                let (mut uss, mut pss) = (Vec::new(), Vec::new());
                for pid in pids {
                    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                        .expect("smaps_rollup");
                    let field = |name: &str| -> f64 {
                        text.lines()
                            .find_map(|l| l.strip_prefix(name))
                            .and_then(|v| v.split_whitespace().next())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0.0)
                    };
                    uss.push(field("Private_Clean:") + field("Private_Dirty:"));
                    pss.push(field("Pss:"));
                }
                Ok((uss, pss))
            })
            .await
        })
        .expect("memory bench")
}

/// The parent's cost of writing every page of a 256 MiB heap again after 100 spawns (each
/// spawn + one RPC + teardown, 10 at a time), next to the same re-touch after none:
/// `rounds` samples of each, alternating. A fork from this process write-protects every
/// page it has, so each page faults on its next write; a zygote's fork leaves this process
/// alone. Returns (after spawns, no spawns), ms.
fn retouch_after_spawns(method: SpawnMethod, rounds: usize) -> (Vec<f64>, Vec<f64>) {
    let mut heap = touched_heap(256 * MIB);
    let retouch = |heap: &mut Vec<u8>| {
        let t = Instant::now();
        for page in heap.chunks_mut(4096) {
            page[0] = page[0].wrapping_add(1);
        }
        std::hint::black_box(&heap);
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut after, mut none) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        none.push(retouch(&mut heap));
        runtime(method, true)
            .run(|root| async move {
                for _ in 0..10 {
                    root.nursery(|nursery| async move {
                        let spawns = (0..10).map(|i| {
                            let nursery = nursery.clone();
                            async move {
                                let p = nursery.start_actor(&format!("r{i}")).await?;
                                p.run::<_, u64>("ping", i as u64).await
                            }
                        });
                        for r in futures::future::join_all(spawns).await {
                            r?;
                        }
                        Ok(())
                    })
                    .await?;
                }
                Ok(())
            })
            .expect("re-touch bench");
        after.push(retouch(&mut heap));
    }
    (after, none)
}

/// Round trips over UDS: `ping` through plough, and the floor — one byte each way over a
/// socketpair with a forked echo child (blocking I/O on both sides). The two are measured
/// in alternating batches inside one root, so both see the same machine noise. Returns
/// (plough samples, raw samples), microseconds.
fn rpc_and_raw_round_trips(n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    runtime(SpawnMethod::MainThreadForkserver, true)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("echo").await?;
                let (mut a, b) = UnixStream::pair().unwrap();
                let fd = std::os::fd::AsRawFd::as_raw_fd(&b);
                let opts = plough::fork_prims::ForkOptions::default().keep_fd(fd);
                let echo = plough::fork_prims::fork_blocking(&opts, move || {
                    let mut b = b;
                    let mut x = [0u8; 1];
                    while b.read_exact(&mut x).is_ok() {
                        if b.write_all(&x).is_err() {
                            break;
                        }
                    }
                    0
                })
                .unwrap();
                // A third floor: the same echo with tokio on both sides (current-thread
                // runtimes, epoll-driven), to separate the reactor's cost from plough's.
                let (ta, tb) = UnixStream::pair().unwrap();
                let tfd = std::os::fd::AsRawFd::as_raw_fd(&tb);
                let topts = plough::fork_prims::ForkOptions::default().keep_fd(tfd);
                let tokio_echo = plough::fork_prims::fork_blocking(&topts, move || {
                    let rt =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        tb.set_nonblocking(true).unwrap();
                        let mut b = tokio::net::UnixStream::from_std(tb).unwrap();
                        let mut x = [0u8; 1];
                        while b.read_exact(&mut x).await.is_ok() {
                            if b.write_all(&x).await.is_err() {
                                break;
                            }
                        }
                    });
                    0
                })
                .unwrap();
                ta.set_nonblocking(true).unwrap();
                let mut ta = tokio::net::UnixStream::from_std(ta).unwrap();
                let mut tokio_rtt = Vec::with_capacity(n);
                let mut x = [7u8; 1];
                let mut raw_once = || {
                    let t = Instant::now();
                    a.write_all(&x).unwrap();
                    a.read_exact(&mut x).unwrap();
                    t.elapsed().as_secs_f64() * 1e6
                };
                for i in 0..200u64 {
                    let _: u64 = p.run("ping", i).await?;
                    raw_once();
                }
                let (mut rpc, mut raw) = (Vec::with_capacity(n), Vec::with_capacity(n));
                let batch = 100;
                for round in 0..n.div_ceil(batch) {
                    for i in 0..batch {
                        let t = Instant::now();
                        let _: u64 = p.run("ping", (round * batch + i) as u64).await?;
                        rpc.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    for _ in 0..batch {
                        raw.push(raw_once());
                    }
                    for _ in 0..batch {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut y = [9u8; 1];
                        let t = Instant::now();
                        ta.write_all(&y).await.unwrap();
                        ta.read_exact(&mut y).await.unwrap();
                        tokio_rtt.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                }
                drop(a);
                drop(ta);
                echo.wait_blocking().unwrap();
                tokio_echo.wait_blocking().unwrap();
                Ok((rpc, raw, tokio_rtt))
            })
            .await
        })
        .expect("rpc bench")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == FLOOR_ARG) {
        std::process::exit(connect_back(std::path::Path::new(&args[i + 1])));
    }
    // A floor child forked by the floor's zygote: connect back and leave.
    let floor_path = plough::fork_prims::peek_delivery(|d| {
        d.and_then(|d| d.payload.strip_prefix(FLOOR_PAYLOAD))
            .map(|p| std::path::PathBuf::from(String::from_utf8_lossy(p).into_owned()))
    });
    if let Some(path) = floor_path {
        std::process::exit(connect_back(&path));
    }
    // Child-mode dispatch for zygote and exec bench actors (never returns in a child).
    if plough::started_as_child() {
        let _ = plough::Runtime::new(registry()).run(|_| async { Ok(()) });
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only <group>` runs one group of rows: spawn, tree, retouch, fan-out, rpc,
    // supervision, stream, shm.
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let run = |group: &str| only.as_deref().is_none_or(|o| o == group);
    let k = if quick { 1 } else { 3 };
    let mut rows: Vec<(Stat, Option<Stat>)> = Vec::new();
    let started = Instant::now();

    // Spawn -> first RPC vs its floor at each added parent heap size; the heap lives
    // through both backends' measurements at that size and is freed before the next.
    let sizes = [
        ("0 heap", 0, 10 * k),
        ("100 MiB heap", 100 * MIB, if quick { 5 } else { 10 }),
        ("1 GiB heap", 1024 * MIB, if quick { 3 } else { 5 }),
    ];
    let backends = [
        (SpawnMethod::Zygote, "zygote spawn -> first RPC", "floor: zygote fork + connect back"),
        (SpawnMethod::Exec, "exec spawn -> first RPC", "floor: exec + connect back"),
        (
            SpawnMethod::MainThreadForkserver,
            "forkserver spawn -> first RPC",
            "floor: forkserver fork + connect back",
        ),
    ];
    if run("spawn") {
        let mut spawn_rows: Vec<Vec<(Stat, Option<Stat>)>> = vec![Vec::new(); backends.len()];
        for (label, bytes, n) in sizes {
            let t = Instant::now();
            let heap = touched_heap(bytes);
            let touched = t.elapsed().as_secs_f64();
            for (rows_of, &(method, name, floor_name)) in spawn_rows.iter_mut().zip(&backends) {
                let (rpc, raw) = spawn_and_floor(method, n, true);
                rows_of.push((
                    Stat::new(&format!("{name}, {label}"), "ms", rpc),
                    Some(Stat::new(&format!("{floor_name}, {label}"), "ms", raw)),
                ));
                if bytes == 0 {
                    // The default registry transport, against the same (UDS) floor.
                    let (rpc, raw) = spawn_and_floor(method, n, false);
                    rows_of.push((
                        Stat::new(&format!("{name}, {label}, tcp"), "ms", rpc),
                        Some(Stat::new(
                            &format!("{floor_name}, {label} (uds), next to the tcp row"),
                            "ms",
                            raw,
                        )),
                    ));
                }
            }
            std::hint::black_box(&heap);
            drop(heap);
            eprintln!(
                "spawn -> first RPC, {label}: {n} samples/backend, {:.1} s (heap touched in {touched:.2} s)",
                t.elapsed().as_secs_f64()
            );
        }
        rows.extend(spawn_rows.into_iter().flatten());
    }
    if run("tree") {
        rows.push((
            Stat::new(
                "zygote: root + 16 actors + 1 RPC each + teardown",
                "ms",
                tree16(SpawnMethod::Zygote, 3 * k),
            ),
            None,
        ));
    }
    if run("retouch") {
        for method in [SpawnMethod::Zygote, SpawnMethod::MainThreadForkserver] {
            let (after, none) = retouch_after_spawns(method, if quick { 2 } else { 5 });
            rows.push((
                Stat::new(&format!("{method}: re-touch 256 MiB after 100 spawns"), "ms", after),
                Some(Stat::new("floor: re-touch 256 MiB, no spawns", "ms", none)),
            ));
        }
    }
    if run("fan-out") {
        for method in [SpawnMethod::Zygote, SpawnMethod::Exec, SpawnMethod::MainThreadForkserver] {
            let t = Instant::now();
            let (total, boots) = fan_out_1000(method);
            rows.push((
                Stat::new(
                    &format!("{method}: 1,000 actors at once + 1 call, total"),
                    "ms",
                    vec![total],
                ),
                None,
            ));
            rows.push((
                Stat::new(&format!("{method}: 1,000 at once, each spawn -> booted"), "ms", boots),
                None,
            ));
            let (uss, pss) = idle_actor_memory(method, 20);
            rows.push((Stat::new(&format!("{method}: idle actor USS"), "KiB", uss), None));
            rows.push((Stat::new(&format!("{method}: idle actor PSS"), "KiB", pss), None));
            eprintln!(
                "1,000-actor fan-out and memory, {method}: {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    if run("tree") {
        rows.push((
            Stat::new(
                "exec: root + 16 actors + 1 RPC each + teardown",
                "ms",
                tree16(SpawnMethod::Exec, 3 * k),
            ),
            None,
        ));
        rows.push((
            Stat::new(
                "forkserver: root + 16 actors + 1 RPC each + teardown",
                "ms",
                tree16(SpawnMethod::MainThreadForkserver, 3 * k),
            ),
            None,
        ));
    }
    if run("rpc") {
        let (rpc, raw, tok) = rpc_and_raw_round_trips(2000 * k);
        let raw = Stat::new("floor: raw UDS ping-pong", "us", raw);
        let tok = Stat::new("tokio UDS ping-pong (current-thread, both sides)", "us", tok);
        let rpc = Stat::new("RPC round trip (UDS)", "us", rpc);
        rows.push((rpc, Some(raw.clone())));
        rows.push((tok, Some(raw)));
        rows.extend(data_plane::rpc_rows(k));
    }
    if run("supervision") {
        for method in [SpawnMethod::Zygote, SpawnMethod::Exec, SpawnMethod::MainThreadForkserver] {
            let (restart, spawn) = restart_and_spawn(method, 10 * k);
            rows.push((
                Stat::new(&format!("{method}: restart (death seen -> first call)"), "ms", restart),
                Some(Stat::new(&format!("{method}: spawn -> first RPC (same run)"), "ms", spawn)),
            ));
        }
        let (pool, fixed) = pool_and_fixed(20_000 * k as u64, 3);
        rows.push((
            Stat::new("pool of 4: trivial jobs", "k/s", pool),
            Some(Stat::new("floor: Portal::run on 4 fixed workers", "k/s", fixed)),
        ));
    }
    // `stream` runs both parts; `stream64` only the small messages, `stream1m` only 1 MiB.
    if run("stream") || run("stream64") {
        let n = 200_000 * k as u64;
        let floor = Stat::new("floor: raw UDS stream, 64 B records", "k/s", raw_stream(n, 3));
        let default_buf = Stat::new(
            &format!("stream 64 B, default config (buffer {})", plough::STREAM_BUFFER),
            "k/s",
            stream_throughput(n, plough::STREAM_BUFFER, 3),
        );
        let small_buf =
            Stat::new("stream 64 B, backpressure, buffer 64", "k/s", stream_throughput(n, 64, 3));
        // The default before 4,096: grants every 512 messages.
        let mid_buf = Stat::new(
            "stream 64 B, backpressure, buffer 1024",
            "k/s",
            stream_throughput(n, 1024, 3),
        );
        rows.push((default_buf, Some(floor.clone())));
        rows.push((small_buf, Some(floor.clone())));
        rows.push((mid_buf, Some(floor)));
    }
    if run("stream") || run("stream1m") {
        rows.extend(data_plane::stream_rows(k));
    }

    if run("shm") {
        rows.extend(shm::rows(quick));
    }

    println!(
        "\n{:<54} {:>10} {:>10} {:>12} {:>7}",
        "benchmark", "median", "p99", "floor median", "ratio"
    );
    let mut json = String::from("{\"results\": [\n");
    for (i, (s, base)) in rows.iter().enumerate() {
        let ratio = base.as_ref().map(|b| s.median() / b.median());
        println!(
            "{:<54} {:>8.3}{:<2} {:>8.3}{:<2} {:>10} {:>7}",
            s.name,
            s.median(),
            s.unit,
            s.p99(),
            s.unit,
            base.as_ref().map(|b| format!("{:.3}{}", b.median(), b.unit)).unwrap_or_default(),
            ratio.map(|r| format!("{r:.2}x")).unwrap_or_default()
        );
        let base_fields = match base {
            Some(b) => format!(
                ", \"baseline\": {:?}, \"baseline_median\": {:.6}, \"ratio\": {:.4}",
                b.name,
                b.median(),
                ratio.unwrap()
            ),
            None => String::new(),
        };
        json.push_str(&format!(
            "  {{\"name\": {:?}, \"unit\": {:?}, \"median\": {:.6}, \"p99\": {:.6}{base_fields}}}{}\n",
            s.name,
            s.unit,
            s.median(),
            s.p99(),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("]}\n");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let out = target.join("plough-bench.json");
    std::fs::write(&out, json).expect("write the JSON results");
    println!(
        "\nwrote {} (total wall time {:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
}
