//! The handlers of the test program (`plough_app`): the same registry in the test
//! process (the root) and in every child, exec'd or forked.

use plough::{ActorError, Cx, Registry};
use std::time::Duration;

/// An error type of the test program.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppError(pub String);

async fn add(_cx: Cx, (a, b): (i64, i64)) -> Result<i64, AppError> {
    Ok(a + b)
}

async fn fail(_cx: Cx, msg: String) -> Result<(), AppError> {
    Err(AppError(msg))
}

async fn pid(_cx: Cx, _: ()) -> Result<u32, AppError> {
    Ok(std::process::id())
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
            return Err(ActorError::Runtime(format!("leaf {} failed on purpose", cx.actor())));
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

/// The registry of the test program.
pub fn registry() -> Registry {
    Registry::new()
        .func("add", add)
        .func("fail", fail)
        .func("pid", pid)
        .func("fds", fds)
        .func("sleep", sleep)
        .func("block", block)
        .func("tree", tree)
        .func("second_root", second_root)
        .func("find", find)
        .func("spawn_sleepers", spawn_sleepers)
        .func("hold_sleepers", hold_sleepers)
}
