//! How an actor serves: every `Start` a connection hands up is dispatched here — the
//! runtime's reserved functions, the registrar's (when this actor is the registrar), and
//! the program's own functions and contexts from the [`Registry`](super::registry::Registry).
//!
//! A cancelled call is given its cleanup budget (declared with
//! [`Registry::cleanup`](super::registry::Registry::cleanup); by default 1.5 s for a
//! context or stream function, none for a plain one) and the time it needs to take its
//! nurseries down, so a real failure it raises meanwhile is what its caller gets, never a
//! cancel that masks it. The answer goes out from a task of the actor, which an exiting
//! actor waits for ([`Budgets::served_calls`](crate::Budgets::served_calls); a cleanup
//! budget is capped below that).

use super::actor::Actor;
use super::cx::{CallState, Cx};
use crate::base::error::{ActorError, RemoteActorError};
use crate::base::metrics::{self, Side, UNKNOWN_FUNCTION};
use crate::base::names::{CANCEL_ACTOR, CANCEL_CALL, REGISTRAR_PREFIX};
use crate::base::sync::cancelled;
use crate::base::trace::CallTrace;
use crate::calls::context::Context;
use crate::connection::{Channel, Serve};
use crate::registrar::service;
use futures::future::BoxFuture;
use plough_ipc_wire::msg::{Aid, CallKind, CancelAck, ErrorKind, Msg, Start};
use plough_ipc_wire::payload::Payload;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

impl Actor {
    /// After a served call was cancelled: lets it finish on its own for `budget` (its
    /// cleanup budget, see `Registry::cleanup_budget`), and, while it has nurseries open
    /// (checked again when the budget is spent: a nursery may have opened meanwhile),
    /// until [`Budgets::served_calls`](crate::Budgets::served_calls) after the cancel. A
    /// call with open nurseries is never dropped early: dropping a nursery hands its
    /// children to a reaper thread, and if this process then exits they are orphaned.
    /// Either way it ends within `served_calls`, the time an exiting actor waits for its
    /// calls, so its answer is sent. Returns the call's own result, if it finished.
    async fn finish_after_cancel(
        &self,
        fut: &mut BoxFuture<'static, Result<Payload, RemoteActorError>>,
        open_nurseries: &AtomicUsize,
        budget: Duration,
    ) -> Option<Result<Payload, RemoteActorError>> {
        let cancelled_at = Instant::now();
        let bound = self.budgets().served_calls();
        // Even without a budget, a call that can finish now (it woke on the cancel and
        // answers at once, e.g. with a real error) gets that one poll.
        if let Some(out) = futures::FutureExt::now_or_never(&mut *fut) {
            return Some(out);
        }
        if !budget.is_zero()
            && let Ok(out) = tokio::time::timeout_at(cancelled_at + budget, &mut *fut).await
        {
            return Some(out);
        }
        if open_nurseries.load(Ordering::SeqCst) > 0 {
            return tokio::time::timeout_at(cancelled_at + bound, fut).await.ok();
        }
        None
    }

    /// Serves a context function. Once cancelled it keeps running for its cleanup
    /// `budget` ([`Budgets::cleanup`](crate::Budgets::cleanup) unless it declared one; its
    /// stream operations fail with `ContextCancelled` at once), so a real error it raises
    /// meanwhile is what the parent gets, not the cancel.
    #[allow(clippy::too_many_arguments)]
    fn serve_context(
        &self,
        channel: &Channel,
        ctx: Context,
        fut: BoxFuture<'static, Result<Payload, RemoteActorError>>,
        token: CancellationToken,
        call: Arc<CallState>,
        budget: Duration,
        trace: CallTrace,
    ) {
        let ch = channel.clone();
        let me = self.clone();
        let cid = ctx.cid();
        self.tasks().spawn(trace.run(async move {
            let mut fut = fut;
            let reply = tokio::select! {
                biased;
                out = &mut fut => match out {
                    // It returned (or raised a cancel) after its context was cancelled,
                    // e.g. by itself: the outcome is the cancel.
                    Ok(_) if token.is_cancelled() => Msg::Error(Box::new(me.cancelled_error(cid, canceller_of(&ctx, &ch)))),
                    Err(e) if e.canceller.is_some() && token.is_cancelled() => Msg::Error(Box::new(me.cancelled_error(cid, canceller_of(&ctx, &ch)))),
                    out => reply_for(cid, out),
                },
                () = cancelled(&token) => {
                    let canceller = canceller_of(&ctx, &ch);
                    match me.finish_after_cancel(&mut fut, call.open_nurseries(), budget).await {
                        Some(Err(e)) if e.canceller.is_none() => reply_for(cid, Err(e)),
                        _ => Msg::Error(Box::new(me.cancelled_error(cid, canceller))),
                    }
                }
            };
            drop(fut);
            count_error(ctx.function(), &reply);
            drop(ctx);
            ch.untrack_served(cid);
            let _ = ch.send(reply).await;
        }));
    }
}

impl Serve for Actor {
    fn serve(&self, channel: &Channel, start: Start) {
        let cid = start.cid;
        match &*start.function {
            CANCEL_ACTOR => {
                let ch = channel.clone();
                let me = self.clone();
                let peer = channel.peer().clone();
                tokio::spawn(async move {
                    let _ = ch.send(Msg::CancelAck(CancelAck { cid, acked: true })).await;
                    tracing::info!(actor = %me.aid(), by = %peer, "cancel requested");
                    me.cancel(peer);
                });
            }
            CANCEL_CALL => {
                let acked = start
                    .args
                    .decode::<u64>()
                    .map(|target| channel.cancel_served(target))
                    .unwrap_or(false);
                let ch = channel.clone();
                self.tasks().spawn(async move {
                    let _ = ch.send(Msg::CancelAck(CancelAck { cid, acked })).await;
                });
            }
            #[cfg(feature = "testing")]
            crate::base::names::SEVER => {
                tracing::warn!(actor = %self.aid(), peer = %channel.peer(), "breaking the connection on request (testing)");
                channel.sever("broken on purpose (testing), at the peer's request");
            }
            f if f.starts_with(REGISTRAR_PREFIX) => match self.registrar().state() {
                Some(state) => service::serve(
                    &state,
                    self.aid(),
                    channel,
                    start,
                    self.tasks(),
                    self.cancel_token(),
                ),
                None => self.reply_error(
                    channel,
                    cid,
                    RemoteActorError::new(
                        self.aid().clone(),
                        ErrorKind::NotRegistrar,
                        format!("actor {} is not a registrar", self.aid()),
                    ),
                ),
            },
            _ => {
                if self.is_cancelled() {
                    let canceller = self.canceller().unwrap_or_else(|| self.aid().clone());
                    let ch = channel.clone();
                    let err = self.cancelled_error(cid, canceller);
                    tokio::spawn(async move {
                        let _ = ch.send(Msg::Error(Box::new(err))).await;
                    });
                    return;
                }
                let kind = self.registry().kind(&start.function);
                // A label is a registered name, never whatever a peer sent.
                let label = if kind.is_some() { &*start.function } else { UNKNOWN_FUNCTION };
                metrics::call(label, Side::Callee, start.kind);
                if let Some(k) = kind
                    && k != start.kind
                {
                    metrics::call_error(label, Side::Callee, ErrorKind::KindMismatch);
                    return self.reply_error(
                        channel,
                        cid,
                        RemoteActorError::new(
                            self.aid().clone(),
                            ErrorKind::KindMismatch,
                            format!(
                                "`{}` is a {k:?} function in actor {}, but was called as a {:?}",
                                start.function,
                                self.aid(),
                                start.kind
                            ),
                        ),
                    );
                }
                if kind.is_some() && !self.exposure().allows(&start.function) {
                    let err = self.not_exposed_error(&start.function);
                    return self.reply_error(channel, cid, err);
                }
                let caller = start.caller;
                let mut cx = Cx::new(
                    Arc::clone(self.aid_shared()),
                    Arc::clone(&caller),
                    cid,
                    self.cancel_token().clone(),
                )
                .with_actor(self.clone());
                // Its token is made only if it is needed: by the call itself, or below
                // when it does not answer at once.
                let call_state = cx.call_state();
                let context = match kind {
                    Some(CallKind::Context | CallKind::Stream) => {
                        let types = self.registry().types(&start.function);
                        let ctx =
                            Context::serve(channel, Arc::new(cx.clone()), &start.function, types);
                        cx = cx.with_context(ctx.clone());
                        Some(ctx)
                    }
                    _ => None,
                };
                let fut = match self.registry().call(&start.function, cx, start.args) {
                    Ok(fut) => fut,
                    Err(e) => {
                        metrics::call_error(label, Side::Callee, e.kind);
                        return self.reply_error(channel, cid, *e);
                    }
                };
                let budget = self.registry().cleanup_budget(&start.function, self.budgets());
                let trace = CallTrace::serve(
                    self.trace(),
                    &start.function,
                    cid,
                    start.kind,
                    &caller,
                    start.trace,
                );
                if let Some(ctx) = context {
                    let token = call_state.token().clone();
                    channel.track_served(cid, token.clone());
                    return self.serve_context(channel, ctx, fut, token, call_state, budget, trace);
                }
                let function = start.function;
                // A plain function answers with its `Return` (or `Error`) alone: the
                // result implies the start, and one message less per call is measurable.
                // One poll here first: a function that answers without waiting (most do)
                // answers from the reader, with no task of its own to allocate, schedule
                // and track (nothing can cancel it meanwhile), and its future boxed once.
                // A later poll, in its task, registers that task's waker in place of this
                // one.
                let mut fut = fut;
                if let Some(out) = trace.poll_once(&mut fut) {
                    let reply = reply_for(cid, out);
                    count_error(&function, &reply);
                    if let Some(reply) = channel.send_without_waiting(reply) {
                        let ch = channel.clone();
                        self.tasks().spawn(async move {
                            let _ = ch.send(reply).await;
                        });
                    }
                    return;
                }
                let span = trace.span.clone();
                let mut fut: BoxFuture<'static, _> = Box::pin(trace.run(fut));
                let token = call_state.token().clone();
                channel.track_served(cid, token.clone());
                let ch = channel.clone();
                let me = self.clone();
                let task = async move {
                    let reply = tokio::select! {
                        // A result that is ready wins over a cancel that came with it.
                        biased;
                        out = &mut fut => reply_for(cid, out),
                        () = cancelled(&token) => {
                            let canceller = me.canceller().unwrap_or_else(|| ch.peer().clone());
                            // Without a declared budget or a nursery: dropped at once.
                            let finished = me.finish_after_cancel(&mut fut, call_state.open_nurseries(), budget).await;
                            match finished {
                                Some(Err(e)) if e.canceller.is_none() => reply_for(cid, Err(e)),
                                _ => Msg::Error(Box::new(me.cancelled_error(cid, canceller))),
                            }
                        }
                    };
                    count_error(&function, &reply);
                    ch.untrack_served(cid);
                    let _ = ch.send(reply).await;
                };
                self.tasks().spawn(tracing::Instrument::instrument(task, span));
            }
        }
    }

    fn closed(&self, channel: &Channel) {
        self.forget_closed_channels();
        if let Some(state) = self.registrar().state() {
            state.connection_closed(channel.peer());
        }
    }
}

/// Who cancelled a served context.
fn canceller_of(ctx: &Context, ch: &Channel) -> Aid {
    match ctx.cancelled_error() {
        ActorError::ContextCancelled { canceller } => canceller,
        _ => ch.peer().clone(),
    }
}

/// Counts a served call's error reply (a registered function's: the label is bounded).
fn count_error(function: &str, reply: &Msg) {
    if let Msg::Error(e) = reply {
        metrics::call_error(function, Side::Callee, e.kind);
    }
}

fn reply_for(cid: u64, out: Result<Payload, RemoteActorError>) -> Msg {
    match out {
        Ok(payload) => Msg::Return { cid, payload },
        Err(e) => Msg::Error(Box::new(e.to_msg(Some(cid)))),
    }
}
