//! The cancellation ladder for one child, and what the nursery learns when a child went
//! down: IPC cancel → wait for the ack → wait for the exit → SIGTERM to the child's
//! process group → wait → SIGKILL to the group → reap (every step bounded by the
//! runtime's [`Budgets`](crate::Budgets)).

use super::nursery::{ChildActor, Nursery};
use super::process::ChildProcess;
use crate::base::error::{ActorError, During};
use crate::base::metrics::{self, Rung};
use crate::base::sync::LockExt;
use plough_fork_prims::{ExitStatus, Signal};
use plough_ipc_wire::msg::{Aid, Uuid};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Nursery {
    /// Takes every child down through the ladder, in parallel; returns once all are reaped.
    pub(super) async fn cancel_all(&self) {
        let children: Vec<Arc<ChildActor>> = self.inner.children.locked().clone();
        futures::future::join_all(children.iter().map(|c| self.take_down(c))).await;
    }

    /// Reaps the children whose boot was abandoned (they were killed when it was).
    pub(super) async fn reap_abandoned(&self) {
        let bound = self.inner.actor.budgets().reap_bound;
        let abandoned = std::mem::take(&mut *self.inner.abandoned.locked());
        for (process, uuid) in abandoned {
            let process = ChildProcess::Local(process);
            if let Some(status) = reap_wait(&process, bound).await {
                tracing::debug!(pid = process.pid(), %status, "reaped a child whose boot was abandoned");
                clear_dead_child_files(process.pid(), &uuid);
            }
        }
    }

    /// A lost connection says little; if the child died, say how.
    pub(super) async fn explain(&self, child: &ChildActor, e: ActorError) -> ActorError {
        if !matches!(e, ActorError::TransportClosed { .. }) {
            return e;
        }
        let wait = self.inner.actor.budgets().exit_status;
        match tokio::time::timeout(wait, child.process.wait()).await {
            Ok(Ok(status)) => died(&child.aid, status, During::Idle),
            _ => match child.process.lost() {
                Some((host, reason)) => {
                    ActorError::HostLost { actor: child.aid.clone(), host, reason }
                }
                None => e,
            },
        }
    }

    /// How a child whose process or connection is gone ended: the connection's report
    /// (once it has looked up the child's fate, within `Budgets::exit_status`), or what
    /// the process's status says.
    pub(super) async fn death_of(&self, child: &ChildActor) -> ActorError {
        let wait = self.inner.actor.budgets().exit_status;
        let channel = child.portal.channel();
        let _ = tokio::time::timeout(wait, channel.closed()).await;
        self.explain(child, channel.closed_error()).await
    }

    /// Takes one child down through the ladder; returns once it is reaped. Every call for
    /// the same child awaits the same ladder, which runs as a task of the actor: a second
    /// call (the nursery's exit while a `run_in_actor` task is at it, a dropped nursery's
    /// background teardown) neither restarts it nor runs it twice, and a caller that is
    /// dropped does not stop it.
    pub(super) async fn take_down(&self, child: &Arc<ChildActor>) {
        let ladder = {
            let mut down = child.down.locked();
            down.get_or_insert_with(|| {
                let (n, c) = (self.clone(), Arc::clone(child));
                let task = self.inner.actor.tasks().spawn(async move { n.ladder(&c).await });
                futures::FutureExt::shared(futures::FutureExt::boxed(async move {
                    let _ = task.await;
                }))
            })
            .clone()
        };
        ladder.await;
    }

    /// The ladder for one child; returns once it is reaped.
    async fn ladder(&self, child: &ChildActor) {
        let budgets = *self.inner.actor.budgets();
        let cfg = child.ladder.get().copied().unwrap_or(budgets.ladder);
        child.cancelling.store(true, Ordering::SeqCst);
        // Its exit is ours: calls on it are told the connection closed, not that it died.
        child.portal.channel().set_cancel_requested();
        if child.process.try_wait().ok().flatten().is_none() {
            let ladder = async {
                let acked = !child.portal.is_closed()
                    && child.portal.cancel_actor_within(cfg.ack_timeout).await;
                let exited =
                    tokio::time::timeout(cfg.exit_timeout, child.process.wait()).await.is_ok();
                if !exited {
                    tracing::warn!(child = %child.aid, acked, "did not exit after cancel: SIGTERM to its group");
                    metrics::escalated(Rung::Sigterm);
                    let _ = child.process.kill_group(Signal::TERM);
                    if tokio::time::timeout(cfg.term_timeout, child.process.wait()).await.is_err() {
                        tracing::warn!(child = %child.aid, "did not exit after SIGTERM: SIGKILL to its group");
                        metrics::escalated(Rung::Sigkill);
                        let _ = child.process.kill_group(Signal::KILL);
                        let _ = child.process.kill();
                    }
                }
            };
            tokio::select! {
                () = ladder => {}
                // A second signal: no more waiting.
                () = self.inner.actor.escalated() => {
                    tracing::warn!(child = %child.aid, "escalated: SIGKILL to its group");
                    metrics::escalated(Rung::Forced);
                    let _ = child.process.kill_group(Signal::KILL);
                    let _ = child.process.kill();
                }
            }
        }
        // Reap (bounded: after SIGKILL this is immediate). A child on a lost host has no
        // status to wait for: its daemon (or its death) takes it down within the lease.
        let remote = child.process.host().is_some();
        let status = match child.process.lost() {
            Some((host, reason)) => {
                tracing::warn!(child = %child.aid, %host, %reason, "its host is lost");
                None
            }
            None => reap_wait(&child.process, budgets.reap_bound).await,
        };
        if remote {
            let forget = self.inner.actor.registrar().forget(&child.aid.uuid);
            let _ = tokio::time::timeout(budgets.unregister, forget).await;
        }
        if let Some(status) = status.filter(|_| !remote) {
            tracing::debug!(child = %child.aid, %status, "reaped");
            if !status.success() {
                // Killed (or crashed): it could not remove its marker and socket file, nor
                // its registrar entry — a lookup after this nursery (or cancel) returns
                // must not find it.
                clear_dead_child_files(child.aid.pid, &child.aid.uuid);
                let forget = self.inner.actor.registrar().forget(&child.aid.uuid);
                let _ = tokio::time::timeout(budgets.unregister, forget).await;
            }
        }
        child.portal.channel().shutdown();
        self.inner.children.locked().retain(|c| c.aid.uuid != child.aid.uuid);
    }
}

/// Waits (at most `bound`) for `process` to be reaped; its status, or `None` (logged).
pub(super) async fn reap_wait(process: &ChildProcess, bound: Duration) -> Option<ExitStatus> {
    match tokio::time::timeout(bound, process.wait()).await {
        Ok(Ok(status)) => Some(status),
        other => {
            tracing::error!(pid = process.pid(), ?other, "could not reap child");
            None
        }
    }
}

/// Removes what a child that did not exit cleanly could not remove itself: its marker,
/// its socket file, a half-written marker.
pub(super) fn clear_dead_child_files(pid: u32, uuid: &Uuid) {
    let dir = plough_fork_prims::marker::default_runtime_dir();
    if let Err(e) = plough_fork_prims::marker::clear_dead_actor(&dir, pid, &uuid.to_string()) {
        tracing::warn!(pid, %uuid, error = %e, "cannot remove the files of a dead child");
    }
}

/// A child that went down when nobody asked it to.
pub(super) fn died(aid: &Aid, status: ExitStatus, during: During) -> ActorError {
    ActorError::ActorDied { actor: aid.clone(), status, during, stderr: String::new() }
}
