//! The handlers of the test program (`plough_app`): the same registry in the test
//! process (the root) and in every child, exec'd or forked.

use plough::{ActorError, Context, Cx, MsgTypes, Registry, StreamConfig};
use std::time::Duration;

/// An error type of the test program.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppError(pub String);

/// The error of a cleanup that failed (a type name no other handler uses).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CleanupError(pub String);

/// The cleanup budget `ctx_slow_cleanup_fails_200ms` declares.
pub const SHORT_CLEANUP: Duration = Duration::from_millis(200);

/// The cleanup budget `plain_cleanup_fails` declares.
pub const PLAIN_CLEANUP: Duration = Duration::from_secs(1);

async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<i64, AppError> {
    Ok(a + b)
}

async fn fail(_cx: Cx, msg: String) -> Result<(), AppError> {
    Err(AppError(msg))
}

async fn pid(_cx: Cx, _: ()) -> Result<u32, AppError> {
    Ok(std::process::id())
}

/// This process's argv (after argv[0]) and the value of the environment variable `name`.
async fn argv_env(_cx: Cx, name: String) -> Result<(Vec<String>, Option<String>), AppError> {
    Ok((std::env::args().skip(1).collect(), std::env::var(name).ok()))
}

/// Sleeps (cooperatively) for `ms` milliseconds.
async fn sleep(_cx: Cx, ms: u64) -> Result<(), AppError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// Blocks the actor's only runtime thread (never yields) for `ms` milliseconds.
async fn block(_cx: Cx, ms: u64) -> Result<(), AppError> {
    std::thread::sleep(Duration::from_millis(ms));
    Ok(())
}

/// A tree below this actor: `breadth` children each running `tree(depth - 1)`; the leaves
/// fail when `fail` is set. Returns how many actors the subtree holds.
async fn tree(cx: Cx, (depth, breadth, fail): (u32, u32, bool)) -> Result<u32, ActorError> {
    if depth == 0 {
        if fail {
            return Err(ActorError::other(format!("leaf {} failed on purpose", cx.actor())));
        }
        return Ok(1);
    }
    let handles = cx
        .nursery(|n| async move {
            let mut hs = Vec::new();
            for i in 0..breadth {
                let name = format!("{}.{i}", cx_name(depth));
                hs.push(n.run_in_actor::<_, u32>(&name, "tree", (depth - 1, breadth, fail)).await?);
            }
            Ok(hs)
        })
        .await?;
    let mut total = 1;
    for h in handles {
        total += h.into_result()?;
    }
    Ok(total)
}

fn cx_name(depth: u32) -> String {
    format!("d{depth}")
}

/// Tries to start a second root inside this actor.
async fn second_root(_cx: Cx, _: ()) -> Result<(), ActorError> {
    plough::Runtime::new(registry()).run(|_root| async { Ok(()) })
}

/// Whether this actor finds an actor named `name` through the registrar, and its pid.
async fn find(cx: Cx, name: String) -> Result<Option<u32>, ActorError> {
    match cx.runtime().find_actor(&name).await? {
        Some(p) => Ok(Some(p.run::<_, u32>("pid", ()).await?)),
        None => Ok(None),
    }
}

/// Starts `n` children that sleep forever and returns their pids; the call itself then
/// waits until cancelled (so the children stay up).
async fn spawn_sleepers(cx: Cx, n: u32) -> Result<Vec<u32>, ActorError> {
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u32>>();
    let cx2 = cx.clone();
    let task = async move {
        cx2.nursery(|nursery| async move {
            let mut pids = Vec::new();
            for i in 0..n {
                let p = nursery.start_actor(&format!("sleeper{i}")).await?;
                pids.push(p.run::<_, u32>("pid", ()).await?);
            }
            let _ = tx.send(pids);
            std::future::pending::<()>().await;
            Ok(())
        })
        .await
    };
    tokio::select! {
        r = task => r.map(|()| Vec::new()),
        pids = rx => Ok(pids.unwrap_or_default()),
    }
}

/// Starts `n` sleeping children and then waits, with them, until cancelled.
async fn hold_sleepers(cx: Cx, n: u32) -> Result<(), ActorError> {
    cx.nursery(|nursery| async move {
        for i in 0..n {
            nursery.start_actor(&format!("sleeper{i}")).await?;
        }
        std::future::pending::<Result<(), ActorError>>().await
    })
    .await
}

/// This actor's open fds, each with what it refers to (`readlink /proc/self/fd/N`).
async fn fds(_cx: Cx, _: ()) -> Result<Vec<(i32, String)>, AppError> {
    let list = plough_fork_prims::list_open_fds().map_err(|e| AppError(e.to_string()))?;
    Ok(list
        .into_iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            (fd, target)
        })
        .collect())
}

/// Streams `0..n` to the parent, with backpressure; returns `n`.
async fn ctx_numbers(ctx: Context, n: u64) -> Result<u64, ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream_with(StreamConfig::backpressure()).await?;
    for i in 0..n {
        s.send(&i).await?;
    }
    s.close().await?;
    Ok(n)
}

/// Starts a `leaf` child, opens `ctx_numbers(n)` on it and relays every value to its own
/// parent (both streams with backpressure); returns how many it relayed.
async fn ctx_relay(ctx: Context, n: u64) -> Result<u64, ActorError> {
    let cx = ctx.cx().expect("the child side has a Cx").clone();
    cx.nursery(|nursery| async move {
        let leaf = nursery.start_actor("leaf").await?;
        let (inner, ()) = leaf.open_context::<_, ()>("ctx_numbers", n).await?;
        let from_leaf = inner.open_stream_with(StreamConfig::backpressure()).await?;
        ctx.started(&()).await?;
        let to_parent = ctx.open_stream_with(StreamConfig::backpressure()).await?;
        let mut relayed = 0;
        while let Some(x) = from_leaf.recv::<u64>().await? {
            to_parent.send(&x).await?;
            relayed += 1;
        }
        to_parent.close().await?;
        inner.result::<u64>().await?;
        Ok(relayed)
    })
    .await
}

/// A chain below this actor, `level` levels deep from the root: `remaining` more actors,
/// `chain<level + 1>`, each running `ctx_chain(level + 1, remaining - 1)` on the next.
/// `started` with the pids of this actor and of every one below it, top first, then
/// holds the chain until cancelled — or until the context on the next actor fails (e.g.
/// it was killed), which fails this one.
async fn ctx_chain(ctx: Context, (level, remaining): (u32, u32)) -> Result<(), ActorError> {
    let me = std::process::id();
    if remaining == 0 {
        ctx.started(&vec![me]).await?;
        ctx.cancelled().await;
        return Ok(());
    }
    let cx = ctx.cx().expect("the child side has a Cx").clone();
    cx.nursery(|nursery| async move {
        let next = nursery.start_actor(&format!("chain{}", level + 1)).await?;
        let (below, mut pids) =
            next.open_context::<_, Vec<u32>>("ctx_chain", (level + 1, remaining - 1)).await?;
        pids.insert(0, me);
        ctx.started(&pids).await?;
        below.result::<()>().await.map(drop)
    })
    .await
}

/// The registry of the test program.
pub fn registry() -> Registry {
    crate::lend_app::register(crate::tractor_app::register(crate::typed_app::register(
        crate::shm_app::register(crate::crash::register(crate::lifecycle::register(
            Registry::new(),
        ))),
    )))
    .func("add", add)
    .func("fail", fail)
    .func("pid", pid)
    .func("argv_env", argv_env)
    .func("fds", fds)
    .func("sleep", sleep)
    .func("block", block)
    .func("tree", tree)
    .func("second_root", second_root)
    .func("find", find)
    .func("spawn_sleepers", spawn_sleepers)
    .func("hold_sleepers", hold_sleepers)
    .context("ctx_simple", ctx_simple)
    .context("ctx_numbers", ctx_numbers)
    .context("ctx_relay", ctx_relay)
    .context("ctx_chain", ctx_chain)
    .context("ctx_started_twice", ctx_started_twice)
    .context("ctx_stream_before_started", ctx_stream_before_started)
    .context("ctx_cancel_target", ctx_cancel_target)
    .context("ctx_close_early", ctx_close_early)
    .context("ctx_overrun_sender", ctx_overrun_sender)
    .context("ctx_never_reads", ctx_never_reads)
    .context("ctx_slow_sink", ctx_slow_sink)
    .context("ctx_fast_source", ctx_fast_source)
    .context("ctx_bytes_source", ctx_bytes_source)
    .context("ctx_echo", ctx_echo)
    .context("ctx_echo_bp", ctx_echo_bp)
    .context("ctx_keep_sending", ctx_keep_sending)
    .context("ctx_close_then_recv", ctx_close_then_recv)
    .context("ctx_flood_on_request", ctx_flood_on_request)
    .context("ctx_default_source", ctx_default_source)
    .context("ctx_aggregate", ctx_aggregate)
    .context("ctx_self_cancel", ctx_self_cancel)
    .context("ctx_cleanup_fails", ctx_cleanup_fails)
    .context("ctx_slow_cleanup_fails", ctx_slow_cleanup_fails)
    .context("ctx_slow_cleanup_fails_200ms", ctx_slow_cleanup_fails)
    .cleanup("ctx_slow_cleanup_fails_200ms", SHORT_CLEANUP)
    .func("plain_cleanup_fails", plain_cleanup_fails)
    .cleanup("plain_cleanup_fails", PLAIN_CLEANUP)
    .func("plain_cleanup_fails_undeclared", plain_cleanup_fails)
    .func("cleanup_armed", cleanup_armed)
    .stream("range", range)
    .stream("range_then_fail", range_then_fail)
    .func("cancel_peer", cancel_peer)
    .func("relay_add", relay_add)
    .func("build_report", build_report)
    .func_bytes("bytes_reversed", bytes_reversed)
    .func_bytes("bytes_refused", bytes_refused)
    .func("build_relay", build_relay)
    .func("metrics_install", metrics_install)
    .func("metrics_rows", metrics_rows)
    .context("ctx_started_then_block", ctx_started_then_block)
    .context("ctx_typed", ctx_typed)
    .declare("ctx_typed", typed_decl())
    .context("ctx_typed_bad_return", ctx_typed_bad_return)
    .declare("ctx_typed_bad_return", typed_decl())
}

// ---- Observability (runtime_trace.rs, metrics.rs) ----

/// Starts a grandchild and returns its `add(a, b)`: a call that makes a call.
async fn relay_add(cx: Cx, (a, b): (i64, i64)) -> Result<i64, ActorError> {
    cx.nursery(|n| async move {
        let grandchild = n.start_actor("grandchild").await?;
        grandchild.run("add", (a, b)).await
    })
    .await
}

/// Raw bytes in, the same bytes reversed out (`Registry::func_bytes`).
async fn bytes_reversed(_cx: Cx, b: bytes::Bytes) -> Result<bytes::Bytes, AppError> {
    let mut v = b.to_vec();
    v.reverse();
    Ok(v.into())
}

/// Raw bytes in, an error naming their length out.
async fn bytes_refused(_cx: Cx, b: bytes::Bytes) -> Result<bytes::Bytes, AppError> {
    Err(AppError(format!("refused {} bytes", b.len())))
}

/// This process's build as the handshake would state it, and the executable file it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildReport {
    /// `BuildId::current()`: adopted from the parent, or hashed now.
    pub id: [u8; 16],
    /// `/proc/self/exe`'s device and inode.
    pub exe: (u64, u64),
}

impl BuildReport {
    /// This process's.
    pub fn here() -> BuildReport {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/exe").expect("stat /proc/self/exe");
        let id = plough::ipc_wire::BuildId::current().expect("build id").0;
        BuildReport { id, exe: (m.dev(), m.ino()) }
    }
}

async fn build_report(_cx: Cx, _: ()) -> Result<BuildReport, AppError> {
    Ok(BuildReport::here())
}

/// Takes `id` as this actor's build (for its own executable, unless it knows one
/// already), then spawns a child that runs this same program and reports on both.
async fn build_relay(cx: Cx, id: [u8; 16]) -> Result<(BuildReport, BuildReport), ActorError> {
    use plough::ipc_wire::{BuildId, ExeBuild};
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/exe").expect("stat /proc/self/exe");
    BuildId::adopt(ExeBuild { id: BuildId(id), dev: m.dev(), ino: m.ino() });
    let mine = BuildReport::here();
    let theirs = cx
        .nursery(|n| async move {
            n.start_actor("build-grandchild").await?.run("build_report", ()).await
        })
        .await?;
    Ok((mine, theirs))
}

/// Installs this process's debugging metrics recorder (see `crate::obs::recorder`).
async fn metrics_install(_cx: Cx, _: ()) -> Result<(), AppError> {
    crate::obs::recorder();
    Ok(())
}

/// What this process's debugging recorder holds.
async fn metrics_rows(_cx: Cx, _: ()) -> Result<Vec<crate::obs::MetricRow>, AppError> {
    Ok(crate::obs::snapshot())
}

/// `started(())`, then, once cancelled, blocks its actor's only thread for `ms`: from
/// then on it answers nothing (the ladder must signal it).
async fn ctx_started_then_block(ctx: Context, ms: u64) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    ctx.cancelled().await;
    std::thread::sleep(Duration::from_millis(ms));
    Ok(())
}

// ---- Contexts and streams (runtime_context.rs, runtime_stream.rs) ----

/// `started(n)`, then returns `n * 2`.
async fn ctx_simple(ctx: Context, n: i64) -> Result<i64, ActorError> {
    ctx.started(&n).await?;
    Ok(n * 2)
}

/// Calls `started` twice: the second call's misuse error is the result.
async fn ctx_started_twice(ctx: Context, _: ()) -> Result<(), ActorError> {
    ctx.started(&1u8).await?;
    ctx.started(&2u8).await
}

/// Opens its stream before `started`: the misuse error is the result.
async fn ctx_stream_before_started(ctx: Context, _: ()) -> Result<(), ActorError> {
    ctx.open_stream().await?;
    ctx.started(&()).await
}

/// `started(())`, then by `mode`: `block` (waits forever, ignoring the cancel), `stream`
/// (streams 0, 1, 2... with backpressure until cancelled), `early` (returns 7 at once).
async fn ctx_cancel_target(ctx: Context, mode: String) -> Result<i64, ActorError> {
    ctx.started(&()).await?;
    match mode.as_str() {
        "block" => std::future::pending().await,
        "stream" => {
            let s = ctx.open_stream_with(StreamConfig::backpressure()).await?;
            let mut i = 0i64;
            loop {
                s.send(&i).await?;
                i += 1;
            }
        }
        _ => Ok(7),
    }
}

/// `started`, opens its stream and closes it at once, returns `"done"`.
async fn ctx_close_early(ctx: Context, _: ()) -> Result<String, ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream().await?;
    s.close().await?;
    Ok("done".to_owned())
}

/// Sends `n` messages without backpressure to a parent that never reads them, then
/// waits on its stream: an overrun is reported there (and returned).
async fn ctx_overrun_sender(ctx: Context, n: u32) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream_with(StreamConfig::overrunning()).await?;
    for i in 0..n {
        s.send(&i).await?;
    }
    s.recv::<u32>().await?;
    Ok(())
}

/// Never opens its stream; waits to be cancelled.
async fn ctx_never_reads(ctx: Context, _: ()) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    ctx.cancelled().await;
    Ok(())
}

/// Receives `0..n` with backpressure-paced reads, slowly (a pause every `every`
/// messages), checking the order; returns how many arrived.
async fn ctx_slow_sink(ctx: Context, (n, every): (u64, u64)) -> Result<u64, ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream().await?;
    let mut next = 0u64;
    while let Some(v) = s.recv::<u64>().await? {
        if v != next {
            return Err(ActorError::other(format!("out of order: got {v}, expected {next}")));
        }
        next += 1;
        if every > 0 && next % every == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    if next != n {
        return Err(ActorError::other(format!("got {next} of {n} messages")));
    }
    Ok(next)
}

/// Sends `0..n` as fast as it can (backpressure if `bp`), then closes.
async fn ctx_fast_source(ctx: Context, (n, bp): (u64, bool)) -> Result<u64, ActorError> {
    ctx.started(&()).await?;
    let s =
        ctx.open_stream_with(StreamConfig { backpressure: bp, ..StreamConfig::default() }).await?;
    for i in 0..n {
        s.send(&i).await?;
    }
    s.close().await?;
    Ok(n)
}

/// Sends raw payloads of `size` bytes, each starting with its index (8 bytes, little
/// endian): `n` of them (`0`: until its stream fails), with backpressure if `bp`; then
/// closes and returns how many it sent. Its stream's failure is its error.
async fn ctx_bytes_source(
    ctx: Context,
    (n, size, bp): (u64, usize, bool),
) -> Result<u64, ActorError> {
    ctx.started(&()).await?;
    let s =
        ctx.open_stream_with(StreamConfig { backpressure: bp, ..StreamConfig::default() }).await?;
    let mut blob = vec![0x5a; size.max(8)];
    let mut i = 0u64;
    while n == 0 || i < n {
        blob[..8].copy_from_slice(&i.to_le_bytes());
        s.send_payload(plough::ipc_wire::payload::Payload::from(blob.clone())).await?;
        i += 1;
    }
    s.close().await?;
    Ok(i)
}

/// Echoes `x + 1` for every `x` until the parent closes; returns how many.
async fn ctx_echo(ctx: Context, _: ()) -> Result<u64, ActorError> {
    ctx.started(&"ready").await?;
    let s = ctx.open_stream().await?;
    let mut n = 0;
    while let Some(x) = s.recv::<i64>().await? {
        s.send(&(x + 1)).await?;
        n += 1;
    }
    Ok(n)
}

/// [`ctx_echo`], its stream's config spelled out: backpressure (the default), lossless
/// whatever the speeds.
async fn ctx_echo_bp(ctx: Context, _: ()) -> Result<u64, ActorError> {
    ctx.started(&"ready").await?;
    let s = ctx.open_stream_with(StreamConfig::backpressure()).await?;
    let mut n = 0;
    while let Some(x) = s.recv::<i64>().await? {
        s.send(&(x + 1)).await?;
        n += 1;
    }
    Ok(n)
}

/// Sends 0, 1, 2... without backpressure until a send fails (tractor's
/// `keep_sending_from_callee`); that failure is its error.
async fn ctx_keep_sending(ctx: Context, _: ()) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream_with(StreamConfig::overrunning()).await?;
    let mut i = 0u64;
    loop {
        s.send(&i).await?;
        i += 1;
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// Opens its stream and closes it at once, then receives: returns whether that receive
/// was end of stream (it must be, at once, whatever the parent sends).
async fn ctx_close_then_recv(ctx: Context, _: ()) -> Result<bool, ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream().await?;
    s.close().await?;
    Ok(s.recv::<u64>().await?.is_none())
}

/// Waits for one message from the parent, then sends `0..n` as fast as it can without
/// backpressure, closes and returns `n`.
async fn ctx_flood_on_request(ctx: Context, n: u64) -> Result<u64, ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream_with(StreamConfig::overrunning()).await?;
    s.recv::<()>().await?;
    for i in 0..n {
        s.send(&i).await?;
    }
    s.close().await?;
    Ok(n)
}

/// Sends `0..n` as fast as it can with its stream's default config, closes and returns
/// `n`.
async fn ctx_default_source(ctx: Context, n: u64) -> Result<u64, ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream().await?;
    for i in 0..n {
        s.send(&i).await?;
    }
    s.close().await?;
    Ok(n)
}

/// One-way stream function: `start..end`.
fn range(_cx: Cx, (start, end): (u64, u64)) -> impl futures::Stream<Item = Result<u64, AppError>> {
    futures::stream::iter((start..end).map(Ok))
}

/// One-way stream function: `0..n`, then fails.
fn range_then_fail(_cx: Cx, n: u64) -> impl futures::Stream<Item = Result<u64, AppError>> {
    futures::stream::iter(
        (0..n).map(Ok).chain(std::iter::once(Err(AppError("stream broke".into())))),
    )
}

/// Starts two streamer actors, each running `range` over half of `0..n`, and forwards
/// every value to the parent (with backpressure); returns how many it forwarded.
async fn ctx_aggregate(ctx: Context, n: u64) -> Result<u64, ActorError> {
    use futures::StreamExt;
    ctx.started(&()).await?;
    let out = ctx.open_stream_with(StreamConfig::backpressure()).await?;
    let cx = ctx.cx().expect("a served context has its Cx").clone();
    cx.nursery(|nursery| async move {
        let a = nursery.start_actor("streamer-a").await?;
        let b = nursery.start_actor("streamer-b").await?;
        let sa = a.open_stream_from("range", (0u64, n / 2)).await?;
        let sb = b.open_stream_from("range", (n / 2, n)).await?;
        let mut merged =
            std::pin::pin!(futures::stream::select(sa.items::<u64>(), sb.items::<u64>()));
        let mut sent = 0;
        while let Some(v) = merged.next().await {
            out.send(&v?).await?;
            sent += 1;
        }
        out.close().await?;
        Ok(sent)
    })
    .await
}

/// `started`, then cancels itself.
async fn ctx_self_cancel(ctx: Context, _: ()) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    ctx.cancel().await?;
    ctx.cancelled().await;
    Ok(())
}

/// `started`, waits for the cancel, runs a (shielded) cleanup, then fails for real.
async fn ctx_cleanup_fails(ctx: Context, _: ()) -> Result<(), AppError> {
    ctx.started(&()).await.map_err(|e| AppError(e.to_string()))?;
    ctx.cancelled().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Err(AppError("cleanup failed".into()))
}

/// `started`, waits for the cancel, then a cleanup that takes `ms` milliseconds and
/// fails with a `CleanupError`. Registered with the default budget, and as
/// `ctx_slow_cleanup_fails_200ms` with [`SHORT_CLEANUP`].
async fn ctx_slow_cleanup_fails(ctx: Context, ms: u64) -> Result<(), CleanupError> {
    ctx.started(&()).await.map_err(|e| CleanupError(e.to_string()))?;
    ctx.cancelled().await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Err(CleanupError(format!("context cleanup failed after {ms} ms")))
}

/// Said by `plain_cleanup_fails` once it waits for its cancel (one per actor process).
static CLEANUP_ARMED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A plain function that works (forever) until cancelled, selecting on `cx.cancelled()`;
/// then a cleanup that takes `ms` milliseconds and fails with a `CleanupError`.
/// Registered with [`PLAIN_CLEANUP`] as its budget, and as
/// `plain_cleanup_fails_undeclared` with none (the plain functions' default).
async fn plain_cleanup_fails(cx: Cx, ms: u64) -> Result<(), CleanupError> {
    CLEANUP_ARMED.notify_one();
    tokio::select! {
        () = std::future::pending() => unreachable!("the work never ends"),
        () = cx.cancelled() => {}
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Err(CleanupError(format!("plain cleanup failed after {ms} ms")))
}

/// Returns once a `plain_cleanup_fails` call in this actor waits for its cancel.
async fn cleanup_armed(_cx: Cx, _: ()) -> Result<(), AppError> {
    CLEANUP_ARMED.notified().await;
    Ok(())
}

/// Finds actor `name` through the registrar and cancels it; returns whether it acked.
async fn cancel_peer(cx: Cx, name: String) -> Result<bool, ActorError> {
    let p = cx.runtime().wait_for_actor(&name).await?;
    Ok(p.cancel_actor().await)
}

/// What `ctx_typed` and `ctx_typed_bad_return` declare: `u32` everywhere.
fn typed_decl() -> MsgTypes {
    MsgTypes::new().started::<u32>().yields::<u32>().returns::<u32>()
}

/// Declared `u32` throughout; `mode` says what it sends wrongly: `started` (a string
/// as its first value), `yield` (a string on its stream), anything else nothing (it
/// streams 1, 2 and returns 3).
async fn ctx_typed(ctx: Context, mode: String) -> Result<u32, ActorError> {
    if mode == "started" {
        ctx.started("one").await?;
    }
    ctx.started(&1u32).await?;
    let s = ctx.open_stream().await?;
    if mode == "yield" {
        s.send("two").await?;
    }
    s.send(&1u32).await?;
    s.send(&2u32).await?;
    s.close().await?;
    Ok(3)
}

/// Declared to return `u32`, returns a string.
async fn ctx_typed_bad_return(ctx: Context, _: ()) -> Result<String, ActorError> {
    ctx.started(&1u32).await?;
    Ok("three".to_owned())
}
