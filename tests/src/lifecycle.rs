//! Handlers for the service-lifecycle suite (`tests/tests/runtime_lifecycle.rs`): actors
//! whose cleanup is visible from outside (a file they remove), and a stream that never
//! ends on its own.

use plough::{ActorError, Context, Cx, Registry, StreamConfig};

/// Removes its file when dropped: the cleanup of an actor that is cancelled gracefully
/// (its call is dropped) runs it; an actor that is SIGKILLed leaves the file behind.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates `path`, then holds it until the call is cancelled (or the actor goes down
/// gracefully), removing it then.
async fn hold_file(_cx: Cx, path: String) -> Result<(), ActorError> {
    std::fs::write(&path, b"held").map_err(ActorError::other)?;
    let _cleanup = RemoveOnDrop(path.into());
    std::future::pending::<()>().await;
    Ok(())
}

/// Creates `path`; once the call is cancelled, takes 300 ms to clean up (its declared
/// budget allows 1 s), then removes it. Only a graceful teardown that waits for it leaves
/// no file.
async fn hold_file_slowly(cx: Cx, path: String) -> Result<(), ActorError> {
    std::fs::write(&path, b"held").map_err(ActorError::other)?;
    cx.cancelled().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    std::fs::remove_file(&path).map_err(ActorError::other)?;
    Ok(())
}

/// Creates `path`, then blocks the actor's only thread for a minute: from then on it
/// acknowledges no cancel and handles no signal (only SIGKILL ends it).
async fn mark_then_block(_cx: Cx, path: String) -> Result<(), ActorError> {
    std::fs::write(&path, b"").map_err(ActorError::other)?;
    std::thread::sleep(std::time::Duration::from_secs(60));
    Ok(())
}

/// Streams 0, 1, 2, ... (with backpressure) until it is cancelled.
async fn ctx_count_forever(ctx: Context, _: ()) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    let s = ctx.open_stream_with(StreamConfig::backpressure()).await?;
    let mut i = 0u64;
    loop {
        s.send(&i).await?;
        i += 1;
    }
}

/// Writes `<dir>/armed`, then waits for the serving actor's shutdown to be asked for and
/// writes `<dir>/shutdown-seen` (its declared cleanup budget lets it finish that).
async fn watch_shutdown(cx: Cx, dir: String) -> Result<(), ActorError> {
    let dir = std::path::PathBuf::from(dir);
    std::fs::write(dir.join("armed"), b"").map_err(ActorError::other)?;
    cx.shutdown_requested().await;
    std::fs::write(dir.join("shutdown-seen"), b"").map_err(ActorError::other)?;
    Ok(())
}

/// Adds the lifecycle handlers to `r`.
pub(crate) fn register(r: Registry) -> Registry {
    r.func("hold_file", hold_file)
        .context("ctx_count_forever", ctx_count_forever)
        .func("hold_file_slowly", hold_file_slowly)
        .cleanup("hold_file_slowly", std::time::Duration::from_secs(1))
        .func("watch_shutdown", watch_shutdown)
        .func("mark_then_block", mark_then_block)
        .cleanup("watch_shutdown", std::time::Duration::from_secs(1))
}
