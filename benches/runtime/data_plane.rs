//! The data-plane rows of issue 18.3, each next to a floor measured in the same run:
//!
//! * the RPC round trip with every process of the measurement pinned to one core
//!   (`sched_setaffinity` on each thread of the root before it starts; children inherit
//!   it), next to a raw blocking UDS ping-pong and a bare tokio current-thread echo pinned
//!   the same way (pinned figures are steadier on a VM than cross-core ones, which swing
//!   with wake-up latency);
//! * calls/s to one actor from 64 concurrent callers next to 1 caller;
//! * 1 MiB payloads child → parent through a stream, and parent → child as a call's
//!   argument, in GB/s, next to a raw UDS bulk transfer (a forked child writing 1 MiB
//!   buffers into a socketpair).

use super::{Stat, rpc_and_raw_round_trips, runtime};
use plough::{Cx, Registry, SpawnMethod};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

const MIB: usize = 1 << 20;

/// Takes a payload, returns its length (the 1 MiB call row).
async fn blob_len(_cx: Cx, blob: bytes::Bytes) -> Result<u64, std::convert::Infallible> {
    Ok(blob.len() as u64)
}

/// [`blob_len`] on raw bytes (`Registry::func_bytes`): the length as 8 little-endian bytes.
async fn blob_len_bytes(
    _cx: Cx,
    blob: bytes::Bytes,
) -> Result<bytes::Bytes, std::convert::Infallible> {
    Ok(bytes::Bytes::copy_from_slice(&(blob.len() as u64).to_le_bytes()))
}

pub(super) fn register(r: Registry) -> Registry {
    r.func("blob_len", blob_len).func_bytes("blob_len_bytes", blob_len_bytes)
}

/// Every thread of this process on `cpus` (threads started later inherit it from theirs).
fn set_affinity(cpus: &rustix::thread::CpuSet) {
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let tid: i32 = task.unwrap().file_name().to_string_lossy().parse().unwrap();
        let pid = rustix::process::Pid::from_raw(tid);
        // A thread that exited since the listing is fine to miss.
        let _ = rustix::thread::sched_setaffinity(pid, cpus);
    }
}

/// `f` with the whole process (and so every child it forks or execs meanwhile) pinned to
/// the CPU it runs on; the affinity is restored after.
fn pinned<T>(f: impl FnOnce() -> T) -> T {
    let before = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
    let mut one = rustix::thread::CpuSet::new();
    one.set(rustix::thread::sched_getcpu());
    set_affinity(&one);
    let out = f();
    set_affinity(&before);
    out
}

/// Calls/s to one actor: `callers` tasks, each making `per` sequential calls on the same
/// portal; one sample per run.
fn concurrent_calls(callers: usize, per: usize, runs: usize) -> Vec<f64> {
    runtime(SpawnMethod::MainThreadForkserver, true)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("callee").await?;
                let _: u64 = p.run("ping", 0u64).await?;
                let mut out = Vec::with_capacity(runs);
                for _ in 0..runs {
                    let t = Instant::now();
                    let tasks = (0..callers).map(|c| {
                        let p = p.clone();
                        async move {
                            for i in 0..per {
                                let _: u64 = p.run("ping", (c * per + i) as u64).await?;
                            }
                            Ok::<(), plough::ActorError>(())
                        }
                    });
                    for r in futures::future::join_all(tasks).await {
                        r?;
                    }
                    out.push((callers * per) as f64 / t.elapsed().as_secs_f64() / 1e3);
                }
                Ok(out)
            })
            .await
        })
        .expect("concurrent calls bench")
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

/// GB/s of `n` 1 MiB payloads child → parent through a stream (the default config), of
/// `calls` 1 MiB call arguments parent → child (`Portal::run`, a `Bytes` argument through
/// the codec), and of as many as raw bytes (`Portal::run_bytes`); one sample per run of
/// each.
fn mib_stream_and_call(n: u64, calls: usize, runs: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    runtime(SpawnMethod::MainThreadForkserver, true)
        .run(|root| async move {
            root.nursery(|nursery| async move {
                let p = nursery.start_actor("bulk").await?;
                let blob = bytes::Bytes::from(vec![7u8; MIB]);
                let (mut stream, mut call, mut raw) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..runs {
                    let (ctx, ()) = p.open_context::<_, ()>("source", (n, MIB)).await?;
                    let s = ctx.open_stream().await?;
                    let t = Instant::now();
                    let mut bytes = 0;
                    while let Some(payload) = s.recv_payload().await? {
                        bytes += payload.len();
                    }
                    stream.push(gbps(bytes, t.elapsed().as_secs_f64()));
                    assert_eq!(bytes, n as usize * MIB, "every payload arrives");
                    ctx.result::<u64>().await?;

                    let t = Instant::now();
                    for _ in 0..calls {
                        let len: u64 = p.run("blob_len", blob.clone()).await?;
                        assert_eq!(len, MIB as u64);
                    }
                    call.push(gbps(calls * MIB, t.elapsed().as_secs_f64()));

                    let t = Instant::now();
                    for _ in 0..calls {
                        let len = p.run_bytes("blob_len_bytes", blob.clone()).await?;
                        assert_eq!(len.as_ref(), (MIB as u64).to_le_bytes());
                    }
                    raw.push(gbps(calls * MIB, t.elapsed().as_secs_f64()));
                }
                Ok((stream, call, raw))
            })
            .await
        })
        .expect("1 MiB bench")
}

/// The floor: a forked child writes `n` 1 MiB buffers into a UDS socketpair; this process
/// reads them into a 1 MiB buffer. GB/s, per run.
fn raw_bulk(n: usize, runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let (mut a, b) = UnixStream::pair().unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&b);
            let opts = plough::fork_prims::ForkOptions::default().keep_fd(fd);
            let t = Instant::now();
            let child = plough::fork_prims::fork_blocking(&opts, move || {
                let mut b = b;
                let buf = vec![7u8; MIB];
                for _ in 0..n {
                    if b.write_all(&buf).is_err() {
                        return 1;
                    }
                }
                0
            })
            .unwrap();
            let mut buf = vec![0u8; MIB];
            let mut total = 0usize;
            loop {
                match a.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => total += k,
                    Err(e) => panic!("raw bulk read: {e}"),
                }
            }
            let rate = gbps(total, t.elapsed().as_secs_f64());
            assert_eq!(total, n * MIB);
            assert!(child.wait_blocking().unwrap().success());
            rate
        })
        .collect()
}

/// The rows of the `rpc` group that issue 18.3 added (pinned round trips, concurrent
/// callers).
pub(super) fn rpc_rows(k: usize) -> Vec<(Stat, Option<Stat>)> {
    let (rpc, raw, tok) = pinned(|| rpc_and_raw_round_trips(2000 * k));
    let raw = Stat::new("floor: raw UDS ping-pong, pinned to one core", "us", raw);
    let tok = Stat::new("tokio UDS ping-pong, pinned to one core", "us", tok);
    let rpc = Stat::new("RPC round trip (UDS), pinned to one core", "us", rpc);
    let one = Stat::new("1 caller: calls/s to one actor", "k/s", concurrent_calls(1, 4000 * k, 3));
    let many = Stat::new(
        "64 concurrent callers: calls/s to one actor",
        "k/s",
        concurrent_calls(64, 250 * k, 3),
    );
    vec![(rpc, Some(raw.clone())), (tok, Some(raw)), (many, Some(one))]
}

/// The rows of the `stream` group that issue 18.3 added (1 MiB payloads).
pub(super) fn stream_rows(k: usize) -> Vec<(Stat, Option<Stat>)> {
    let n = 100 * k;
    let floor = Stat::new("floor: raw UDS bulk, 1 MiB writes", "GB/s", raw_bulk(n, 3));
    let (stream, call, raw) = mib_stream_and_call(n as u64, n / 2, 3);
    vec![
        (Stat::new("stream 1 MiB payloads (default config)", "GB/s", stream), Some(floor.clone())),
        (Stat::new("call with a 1 MiB argument", "GB/s", call), Some(floor.clone())),
        (Stat::new("call with a 1 MiB argument, raw bytes (run_bytes)", "GB/s", raw), Some(floor)),
    ]
}
