//! Functions of the test program that die on purpose, in every way a process can: for
//! the death reports (`ActorDied`), supervisors and the worker pool
//! (`tests/tests/runtime_supervision.rs`, `runtime_pool.rs`).

use plough::{ActorError, ChildSpec, Context, Cx, Registry, Strategy, Supervisor};
use std::time::Duration;

/// Dies the way `mode` says: `abort` (SIGABRT), `segv` (a write through a null pointer),
/// `exit3` (`exit(3)`), `exit0` (`exit(0)`), `kill` (SIGKILL to itself), `hang` (blocks
/// its thread for good, deaf to cancels: only the ladder's signals end it), `panic` (the
/// handler panics: a remote `Panic` error, the actor lives on), anything else returns.
pub fn die(mode: &str) {
    match mode {
        "abort" => std::process::abort(),
        "segv" => {
            #[allow(unsafe_code)]
            // SAFETY: none — this writes through a null pointer on purpose, to die of
            // SIGSEGV as a buggy native library would.
            unsafe {
                std::ptr::null_mut::<u8>().write_volatile(1);
            }
        }
        "exit3" => std::process::exit(3),
        "exit0" => std::process::exit(0),
        "kill" => {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "panic" => panic!("crashed on purpose"),
        _ => {}
    }
}

/// Dies by `mode` (see [`die`]).
async fn crash(_cx: Cx, mode: String) -> Result<(), ActorError> {
    die(&mode);
    Ok(())
}

/// Dies by `mode` after `ms` milliseconds.
async fn crash_after(_cx: Cx, (mode, ms): (String, u64)) -> Result<(), ActorError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    die(&mode);
    Ok(())
}

/// `started`, then dies by `mode`.
async fn ctx_crash(ctx: Context, mode: String) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    die(&mode);
    Ok(())
}

/// `started`, streams `1`, waits for one value from the parent, then dies by `mode`.
async fn ctx_stream_then_crash(ctx: Context, mode: String) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream().await?;
    s.send(&1u32).await?;
    s.recv::<u32>().await?;
    die(&mode);
    Ok(())
}

/// `started`, waits until cancelled, then appends `name` and a newline to `path` (the
/// order in which a supervisor took its children down).
async fn ctx_note_when_cancelled(
    ctx: Context,
    (path, name): (String, String),
) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    ctx.cancelled().await;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(ActorError::other)?;
    writeln!(f, "{name}").map_err(ActorError::other)?;
    Ok(())
}

/// A nested supervisor: one permanent child that exits with code 3 at once, at most one
/// restart a minute — so it gives up on the second exit, and this call fails with that.
async fn sub_supervisor(cx: Cx, _: ()) -> Result<(), ActorError> {
    let sup = Supervisor::new(Strategy::OneForOne)
        .intensity(1, Duration::from_secs(60))
        .child(ChildSpec::run("leaf", "crash", &"exit3")?);
    cx.supervise(sup, |_s| std::future::pending()).await
}

/// A pool job: `x * 2`, except that the worker aborts when `x % every == poison` (`every`
/// 0: never).
async fn job(_cx: Cx, (x, every, poison): (u64, u64, u64)) -> Result<u64, ActorError> {
    if every > 0 && x % every == poison {
        die("abort");
    }
    Ok(x * 2)
}

/// A pool job that aborts its worker the first time it runs for `x` (it leaves a marker
/// file in `dir`), and returns `x` the second time.
async fn job_once_fatal(_cx: Cx, (x, dir): (u64, String)) -> Result<u64, ActorError> {
    let marker = std::path::Path::new(&dir).join(format!("job-{x}"));
    if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
        die("abort");
    }
    Ok(x)
}

/// Its pid, after `ms` milliseconds (a pool job that holds its worker a while).
async fn pid_after(_cx: Cx, ms: u64) -> Result<u32, ActorError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(std::process::id())
}

/// Fails with `message` after `ms` milliseconds.
async fn fail_after(_cx: Cx, (ms, message): (u64, String)) -> Result<(), crate::app::AppError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Err(crate::app::AppError(message))
}

/// Waits for the actor named `peer` through the registrar, then has it add `(x, 1)`
/// (two run-in-actor peers that call each other).
async fn call_peer(cx: Cx, (peer, x): (String, i64)) -> Result<i64, ActorError> {
    let p = cx.runtime().wait_for_actor(&peer).await?;
    p.run::<_, i64>("add", (x, 1i64)).await
}

/// Starts a serving child named `name` (it registers), `started` with its pid, then
/// holds it until cancelled.
async fn ctx_hold_service(ctx: Context, name: String) -> Result<(), ActorError> {
    let cx = ctx.cx().expect("the child side has a Cx").clone();
    cx.nursery(|n| async move {
        let p = n.start_actor(&name).await?;
        let pid: u32 = p.run("pid", ()).await?;
        ctx.started(&pid).await?;
        ctx.cancelled().await;
        Ok(())
    })
    .await
}

/// Cancels itself before `started`, then returns `Ok`.
async fn ctx_cancel_before_started(ctx: Context, _: ()) -> Result<(), ActorError> {
    ctx.cancel().await?;
    Ok(())
}

pub(crate) fn register(r: Registry) -> Registry {
    r.func("crash", crash)
        .func("crash_after", crash_after)
        .context("ctx_crash", ctx_crash)
        .context("ctx_stream_then_crash", ctx_stream_then_crash)
        .context("ctx_note_when_cancelled", ctx_note_when_cancelled)
        .func("sub_supervisor", sub_supervisor)
        .func("job", job)
        .func("job_once_fatal", job_once_fatal)
        .func("pid_after", pid_after)
        .func("fail_after", fail_after)
        .func("call_peer", call_peer)
        .context("ctx_hold_service", ctx_hold_service)
        .context("ctx_cancel_before_started", ctx_cancel_before_started)
}
