//! Contexts: started / result, cancellation from either side (and who cancelled), misuse
//! errors, payload type checks. Ported from tractor's context suites; every test is
//! bounded and checks that nothing is left behind.

use plough::{ActorError, Outcome};
use plough_tests::runtime;
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

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
            // While the child blocks (ignoring the cancel: the grace period ends it).
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
