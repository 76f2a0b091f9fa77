//! Contexts: started / result, cancellation from either side (and who cancelled), misuse
//! errors, payload type checks. Ported from tractor's context suites; every test is
//! bounded and checks that nothing is left behind.

use plough::{ActorError, Outcome};
use plough_tests::app::{PLAIN_CLEANUP, SHORT_CLEANUP};
use plough_tests::runtime;
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);
/// The bound of one awaited step inside a test body.
const STEP: Duration = Duration::from_secs(15);

/// Awaits `fut` for at most [`STEP`], naming `what` if it takes longer.
async fn step<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

/// Runs `body` in a fresh root, with the usual bound and leak check.
fn with_root<T, F, Fut>(body: F) -> plough::Result<T>
where
    F: FnOnce(plough::Actor) -> Fut,
    Fut: std::future::Future<Output = plough::Result<T>>,
{
    plough_tests::with_root(runtime(APP), LIMIT, body)
}

fn remote(e: &ActorError) -> &plough::RemoteActorError {
    e.as_remote().unwrap_or_else(|| panic!("expected a remote error, got {e:?}"))
}

#[test]
fn started_value_and_result() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("simple").await?;
            let (ctx, first) = p.open_context::<_, i64>("ctx_simple", 21i64).await?;
            assert_eq!(first, 21);
            assert_eq!(ctx.result::<i64>().await?, Outcome::Returned(42));
            // A second call on the same connection still works.
            assert_eq!(p.run::<_, i64>("add", (1, 2)).await?, 3);
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn misuse_is_a_clear_error() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("misuse").await?;
            // started twice: the child's second call fails, and that is its result.
            let (ctx, _) = p.open_context::<_, u8>("ctx_started_twice", ()).await?;
            let e = ctx.result::<()>().await.unwrap_err();
            assert!(remote(&e).message.contains("`started` called twice"), "{e}");
            // stream before started: the error arrives instead of the first value.
            let e = p.open_context::<_, ()>("ctx_stream_before_started", ()).await.unwrap_err();
            assert!(remote(&e).message.contains("open_stream before `started`"), "{e}");
            // a function opened as a context (and vice versa) is named as such.
            let e = p.open_context::<_, ()>("add", (1, 2)).await.unwrap_err();
            assert_eq!(remote(&e).type_name, "KindMismatch", "{e}");
            let e = p.run::<_, i64>("ctx_simple", 1i64).await.unwrap_err();
            assert_eq!(remote(&e).type_name, "KindMismatch", "{e}");
            // stream after cancel.
            let (ctx, ()) = p.open_context::<_, ()>("ctx_cancel_target", "block").await?;
            ctx.cancel().await?;
            let e = ctx.open_stream().await.unwrap_err();
            assert!(matches!(e, ActorError::ContextCancelled { .. }), "{e:?}");
            assert!(ctx.result::<i64>().await?.is_cancelled());
            // A context with yourself.
            let me = n.actor().connect(n.actor().addr()).await?;
            let e = me.open_context::<_, i64>("ctx_simple", 1i64).await.unwrap_err();
            assert!(
                matches!(&e, ActorError::Misuse(plough::Misuse::ContextWithSelf { .. })),
                "{e:?}"
            );
            assert!(e.to_string().contains("yourself"), "{e}");
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// The parent cancels (via `cancel()`): returned, not raised, naming the parent.
#[test]
fn parent_cancel_is_returned_while_blocked_streaming_or_after_return() {
    with_root(|root| async move {
        let me = root.aid().clone();
        root.nursery(|n| async move {
            let p = n.start_actor("target").await?;
            // While the child blocks (ignoring the cancel: its cleanup budget ends it).
            let (ctx, ()) = p.open_context::<_, ()>("ctx_cancel_target", "block").await?;
            ctx.cancel().await?;
            assert_eq!(ctx.result::<i64>().await?, Outcome::Cancelled { canceller: me.clone() });
            // While it streams.
            let (ctx, ()) = p.open_context::<_, ()>("ctx_cancel_target", "stream").await?;
            let s = ctx.open_stream().await?;
            for i in 0..10i64 {
                assert_eq!(s.recv::<i64>().await?, Some(i));
            }
            ctx.cancel().await?;
            let e = s.recv::<i64>().await.unwrap_err();
            assert!(
                matches!(&e, ActorError::ContextCancelled { canceller } if *canceller == me),
                "{e:?}"
            );
            assert_eq!(ctx.result::<i64>().await?, Outcome::Cancelled { canceller: me.clone() });
            // After it returned early: the result stands.
            let (ctx, ()) = p.open_context::<_, ()>("ctx_cancel_target", "early").await?;
            let s = ctx.open_stream().await?;
            assert_eq!(s.recv::<i64>().await?, None, "end of stream once the child returned");
            ctx.cancel().await?;
            assert_eq!(ctx.result::<i64>().await?, Outcome::Returned(7));
            // The connection stays usable.
            assert_eq!(p.run::<_, i64>("add", (2, 2)).await?, 4);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// `cancel_actor` while a context is open raises `ContextCancelled` from it.
#[test]
fn cancel_actor_raises_context_cancelled() {
    for mode in ["block", "stream"] {
        with_root(|root| async move {
            let me = root.aid().clone();
            root.nursery(|n| async move {
                let p = n.start_actor("victim").await?;
                let (ctx, ()) = p.open_context::<_, ()>("ctx_cancel_target", mode).await?;
                assert!(p.cancel_actor().await, "acked");
                let e = ctx.result::<i64>().await.unwrap_err();
                assert!(
                    matches!(&e, ActorError::ContextCancelled { canceller } if *canceller == me),
                    "{mode}: {e:?}"
                );
                Ok(())
            })
            .await
        })
        .unwrap();
    }
}

#[test]
fn child_self_cancel_is_raised_naming_the_child() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("selfish").await?;
            let (ctx, ()) = p.open_context::<_, ()>("ctx_self_cancel", ()).await?;
            let e = ctx.result::<()>().await.unwrap_err();
            assert!(
                matches!(&e, ActorError::ContextCancelled { canceller } if canceller == p.aid()),
                "{e:?}"
            );
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// Three actors: `killer` cancels `streamer` while the root streams from it.
#[test]
fn third_party_cancel_names_the_third_party() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let streamer = n.start_actor("streamer").await?;
            let (ctx, ()) = streamer.open_context::<_, ()>("ctx_cancel_target", "stream").await?;
            let s = ctx.open_stream().await?;
            assert_eq!(s.recv::<i64>().await?, Some(0));
            let killer = n.start_actor("killer").await?;
            assert!(killer.run::<_, bool>("cancel_peer", "streamer").await?, "killer: acked");
            // The root sees the killer as canceller, from the stream and from the result.
            let err = loop {
                match s.recv::<i64>().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("end of stream instead of a cancel"),
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(&err, ActorError::ContextCancelled { canceller } if canceller == killer.aid()),
                "{err:?}"
            );
            let e = ctx.result::<i64>().await.unwrap_err();
            assert!(
                matches!(&e, ActorError::ContextCancelled { canceller } if canceller == killer.aid()),
                "{e:?}"
            );
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A child that fails in its cleanup after a cancel: the failure, not the cancel.
#[test]
fn error_after_shielded_cleanup_is_not_masked_by_the_cancel() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("cleaner").await?;
            let (ctx, ()) = p.open_context::<_, ()>("ctx_cleanup_fails", ()).await?;
            ctx.cancel().await?;
            let e = ctx.result::<()>().await.unwrap_err();
            let r = remote(&e);
            assert_eq!((r.type_name.as_str(), r.message.as_str()), ("AppError", "cleanup failed"));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A cleanup that takes 1 s after the parent's cancel, well within the default budget
/// (1.5 s), then fails: the parent gets exactly that error, not the cancel.
#[test]
fn an_error_raised_in_a_slow_cleanup_comes_home() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("slow-cleaner").await?;
            let (ctx, ()) = p.open_context::<_, ()>("ctx_slow_cleanup_fails", 1000u64).await?;
            let cancelled = Instant::now();
            ctx.cancel().await?;
            let e = step("result", ctx.result::<()>()).await.unwrap_err();
            let r = remote(&e);
            assert_eq!(
                (r.type_name.as_str(), r.message.as_str()),
                ("CleanupError", "context cleanup failed after 1000 ms"),
                "{e:?}"
            );
            assert_eq!(&r.source, p.aid(), "{e:?}");
            assert!(r.canceller.is_none(), "{e:?}");
            assert!(
                cancelled.elapsed() >= Duration::from_millis(1000),
                "{:?}",
                cancelled.elapsed()
            );
            // The actor keeps serving.
            assert_eq!(p.run::<_, i64>("add", (1, 1)).await?, 2);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// The same cleanup in a function that declared a 200 ms budget is cut off there: the
/// parent gets the cancel.
#[test]
fn a_cleanup_longer_than_its_declared_budget_is_cut_off() {
    with_root(|root| async move {
        let me = root.aid().clone();
        root.nursery(|n| async move {
            let p = n.start_actor("cut-off").await?;
            let (ctx, ()) =
                p.open_context::<_, ()>("ctx_slow_cleanup_fails_200ms", 1000u64).await?;
            let cancelled = Instant::now();
            ctx.cancel().await?;
            let out = step("result", ctx.result::<()>()).await?;
            assert_eq!(out, Outcome::Cancelled { canceller: me });
            assert!(cancelled.elapsed() >= SHORT_CLEANUP, "{:?}", cancelled.elapsed());
            assert_eq!(p.run::<_, i64>("add", (1, 1)).await?, 2);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// `cancel_actor` (the whole actor shuts down) during a slow cleanup that fails: the
/// error still reaches the parent before the actor exits.
#[test]
fn an_error_raised_in_a_slow_cleanup_comes_home_when_the_actor_is_cancelled() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("slow-cleaner").await?;
            let (ctx, ()) = p.open_context::<_, ()>("ctx_slow_cleanup_fails", 1000u64).await?;
            assert!(p.cancel_actor().await, "acked");
            let e = step("result", ctx.result::<()>()).await.unwrap_err();
            let r = remote(&e);
            assert_eq!(
                (r.type_name.as_str(), r.message.as_str()),
                ("CleanupError", "context cleanup failed after 1000 ms"),
                "{e:?}"
            );
            step("the child's exit", p.closed()).await;
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A plain function that selects on `cx.cancelled()` and fails during its declared
/// cleanup budget; the nursery cancels its actor while the call is in flight: the caller
/// gets that error. Without a declared budget it is dropped at once: the caller gets the
/// cancel.
#[test]
fn a_plain_function_that_fails_in_its_declared_cleanup_is_not_masked_by_the_cancel() {
    for (function, declared) in
        [("plain_cleanup_fails", true), ("plain_cleanup_fails_undeclared", false)]
    {
        with_root(|root| async move {
            let me = root.aid().clone();
            root.nursery(|n| async move {
                let p = n.start_actor("plain").await?;
                let p2 = p.clone();
                let call = tokio::spawn(async move { p2.run::<_, ()>(function, 300u64).await });
                step("armed", p.run::<_, ()>("cleanup_armed", ())).await?;
                let cancelled = Instant::now();
                step("nursery cancel", n.cancel()).await;
                let e = step("the call", call).await.expect("the call's task").unwrap_err();
                if declared {
                    let r = remote(&e);
                    assert_eq!(
                        (r.type_name.as_str(), r.message.as_str()),
                        ("CleanupError", "plain cleanup failed after 300 ms"),
                        "{e:?}"
                    );
                    assert!(Duration::from_millis(300) < PLAIN_CLEANUP);
                    assert!(cancelled.elapsed() >= Duration::from_millis(300));
                } else {
                    assert!(
                        matches!(&e, ActorError::ContextCancelled { canceller } if *canceller == me),
                        "{function}: {e:?}"
                    );
                }
                Ok(())
            })
            .await
        })
        .unwrap();
    }
}

/// Type mismatches in `Started` and `Return` name the kind, the type and what arrived;
/// matching types pass and the connection stays usable.
#[test]
fn payload_type_mismatch_is_a_msg_type_error() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("typed").await?;
            let e = p.open_context::<_, String>("ctx_simple", 42i64).await.unwrap_err();
            let ActorError::MsgType(t) = &e else { panic!("{e:?}") };
            assert_eq!(t.kind, Some(plough::ipc_wire::msg::MsgKind::Started), "{t:?}");
            assert!(t.expected.contains("String"), "{t:?}");
            assert!(t.arrived.contains("42"), "{t:?}");

            let (ctx, first) = p.open_context::<_, i64>("ctx_simple", 5i64).await?;
            assert_eq!(first, 5);
            let e = ctx.result::<String>().await.unwrap_err();
            let ActorError::MsgType(t) = &e else { panic!("{e:?}") };
            assert_eq!(t.kind, Some(plough::ipc_wire::msg::MsgKind::Return), "{t:?}");
            assert!(t.expected.contains("String") && t.arrived.contains("10"), "{t:?}");

            let (ctx, _) = p.open_context::<_, i64>("ctx_simple", 5i64).await?;
            assert_eq!(ctx.result::<i64>().await?, Outcome::Returned(10));
            assert_eq!(p.run::<_, i64>("add", (20, 22)).await?, 42);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// Declared types are checked where the value is sent, before it is sent: the error
/// names the kind, the declared type and what was sent; matching types pass.
#[test]
fn declared_types_are_checked_before_sending() {
    with_root(|root| async move {
        root.nursery(|n| async move {
            let p = n.start_actor("typed").await?;
            let check = |e: &ActorError, kind: &str, sent: &str| {
                let r = remote(e);
                assert_eq!(r.type_name, "MsgTypeError", "{e}");
                let t = r.type_error.as_ref().unwrap_or_else(|| panic!("details: {e}"));
                assert_eq!((t.msg_kind.as_str(), t.expected_type.as_str()), (kind, "u32"), "{t:?}");
                assert!(t.rendering.contains(sent), "{t:?}");
            };
            let e = p.open_context::<_, u32>("ctx_typed", "started").await.unwrap_err();
            check(&e, "started", "\"one\"");
            let (ctx, first) = p.open_context::<_, u32>("ctx_typed", "yield").await?;
            assert_eq!(first, 1);
            let s = ctx.open_stream().await?;
            let e = s.recv::<u32>().await.unwrap_err();
            check(&e, "yield", "\"two\"");
            let (ctx, _) = p.open_context::<_, u32>("ctx_typed_bad_return", ()).await?;
            let e = ctx.result::<String>().await.unwrap_err();
            check(&e, "return", "\"three\"");
            // Matching types pass; the connection stayed usable throughout.
            let (ctx, first) = p.open_context::<_, u32>("ctx_typed", "none").await?;
            let s = ctx.open_stream().await?;
            let got: Vec<u32> = [s.recv().await?, s.recv().await?].into_iter().flatten().collect();
            assert_eq!((first, got), (1, vec![1, 2]));
            assert_eq!(ctx.result::<u32>().await?, Outcome::Returned(3));
            assert_eq!(p.run::<_, i64>("add", (1, 1)).await?, 2);
            Ok(())
        })
        .await
    })
    .unwrap();
}
