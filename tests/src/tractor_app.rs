//! Handlers for the tractor-parity suites (`runtime_tractor_apis.rs`): exposure, context
//! introspection from the child's side, portals to the parent and the root.

use crate::app::AppError;
use plough::{ActorError, Context, Cx, ErrorKind, Registry};
use std::sync::Mutex;

/// What the child side of the last `ctx_note_cancel` saw once cancelled.
static SEEN: Mutex<Option<CancelSeen>> = Mutex::new(None);

/// The child's view of a cancelled context: who cancelled (`name@pid`), the kind of its
/// `maybe_error`, and whether `cancel_acked` held (never, on the child's side).
pub type CancelSeen = (Option<String>, Option<String>, bool);

/// `started(cid)`, then waits for its cancel and notes what it sees of it (read back with
/// `cancel_seen`).
async fn ctx_note_cancel(ctx: Context, _: ()) -> Result<(), ActorError> {
    assert!(ctx.canceller().is_none() && ctx.maybe_error().is_none());
    ctx.started(&ctx.cid()).await?;
    ctx.cancelled().await;
    let kind = ctx.maybe_error().map(|e| format!("{:?}", e.kind()));
    let seen = (ctx.canceller().map(|a| a.to_string()), kind, ctx.cancel_acked());
    *SEEN.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
    Ok(())
}

async fn cancel_seen(_cx: Cx, _: ()) -> Result<Option<CancelSeen>, AppError> {
    Ok(SEEN.lock().unwrap_or_else(|p| p.into_inner()).take())
}

/// What the last `wait_note_cancel` saw: whether it started, and who cancelled it
/// (`name@pid`) once it was cancelled.
static PLAIN: Mutex<(bool, Option<String>)> = Mutex::new((false, None));

/// A plain function that waits for its cancel and notes who cancelled it (`Cx::canceller`).
async fn wait_note_cancel(cx: Cx, _: ()) -> Result<(), AppError> {
    assert!(cx.canceller().is_none());
    *PLAIN.lock().unwrap_or_else(|p| p.into_inner()) = (true, None);
    cx.cancelled().await;
    let seen = cx.canceller().map(|a| a.to_string());
    *PLAIN.lock().unwrap_or_else(|p| p.into_inner()) = (true, seen);
    Ok(())
}

async fn plain_seen(_cx: Cx, _: ()) -> Result<(bool, Option<String>), AppError> {
    Ok(PLAIN.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Narrows what this actor serves to `functions`.
async fn expose_only(cx: Cx, functions: Vec<String>) -> Result<Vec<String>, ActorError> {
    cx.runtime().expose_only(functions)?;
    Ok(cx.runtime().exposed())
}

/// What this actor knows of its lineage, checked by calling through both portals:
/// (parent's name, root's name, the root's address, `add(1, 2)` at the parent, the
/// root's pid through its portal, the kind of the error of calling `fail` at the root).
pub type Lineage = (String, String, String, i64, u32, Option<ErrorKind>);

async fn lineage(cx: Cx, _: ()) -> Result<Lineage, ActorError> {
    let me = cx.runtime();
    let parent = me.parent_portal()?;
    let root = me.root_portal().await?;
    let sum = parent.run::<_, i64>("add", (1, 2)).await?;
    let root_pid = root.run::<_, u32>("pid", ()).await?;
    let fail = root.run::<_, ()>("fail", "x".to_owned()).await.err().map(|e| e.kind());
    let root_addr = me.root_addr().map(|a| a.to_string()).unwrap_or_default();
    Ok((parent.aid().name.clone(), root.aid().name.clone(), root_addr, sum, root_pid, fail))
}

/// Starts a grandchild that runs `lineage` and returns what it saw.
async fn lineage_below(cx: Cx, _: ()) -> Result<Lineage, ActorError> {
    cx.nursery(|n| async move {
        let h = n.run_in_actor::<_, Lineage>("grandchild", "lineage", ()).await?;
        h.result().await
    })
    .await
}

/// Every address this actor listens on (its own first).
async fn addrs(cx: Cx, _: ()) -> Result<Vec<String>, AppError> {
    Ok(cx.runtime().addrs().iter().map(ToString::to_string).collect())
}

/// This actor's log level (from its runtime vars) and whether its subscriber lets a
/// `debug` and a `trace` event through: (level, debug, trace).
pub type LogState = (Option<String>, bool, bool);

async fn log_state(cx: Cx, _: ()) -> Result<LogState, AppError> {
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let trace = tracing::enabled!(tracing::Level::TRACE);
    Ok((cx.runtime().log_level(), debug, trace))
}

/// `log_state` of a grandchild started with default options.
async fn log_state_below(cx: Cx, _: ()) -> Result<LogState, ActorError> {
    cx.nursery(|n| async move {
        let h = n.run_in_actor::<_, LogState>("grandchild", "log_state", ()).await?;
        h.result().await
    })
    .await
}

/// Registers this module's handlers.
pub fn register(r: Registry) -> Registry {
    r.context("ctx_note_cancel", ctx_note_cancel)
        .func("cancel_seen", cancel_seen)
        .func("wait_note_cancel", wait_note_cancel)
        .func("plain_seen", plain_seen)
        .func("expose_only", expose_only)
        .func("lineage", lineage)
        .func("lineage_below", lineage_below)
        .func("addrs", addrs)
        .func("log_state", log_state)
        .func("log_state_below", log_state_below)
}
