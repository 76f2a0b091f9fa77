//! Streams: end of stream, overrun, lossless backpressure, ping-pong, a pipeline (and its
//! early cancellation), one-way stream functions, fan-out. Ported from tractor's stream
//! suites; every test is bounded and checks that nothing is left behind.

use futures::StreamExt;
use plough::{ActorError, Nursery, Outcome, STREAM_BUFFER, StreamConfig};
use plough_tests::runtime;
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(90);

/// Runs `body` in a nursery of a fresh root, with the usual bound and leak check.
fn in_nursery<F, Fut>(body: F)
where
    F: FnOnce(Nursery) -> Fut,
    Fut: std::future::Future<Output = plough::Result<()>>,
{
    plough_tests::in_nursery(runtime(APP), LIMIT, body).unwrap();
}

#[test]
fn child_closes_at_once_then_returns_iteration_ends_cleanly() {
    in_nursery(|n| async move {
        let p = n.start_actor("closer").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_close_early", ()).await?;
        let s = ctx.open_stream().await?;
        let got: Vec<plough::Result<i64>> = s.items::<i64>().collect().await;
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(s.recv::<i64>().await?, None, "a further recv is end of stream too");
        assert_eq!(ctx.result::<String>().await?, Outcome::Returned("done".to_owned()));
        Ok(())
    });
}

/// Child → parent: the parent never opens its stream, the child sends 65.
#[test]
fn sending_65_to_a_peer_that_never_reads_is_an_overrun_child_to_parent() {
    in_nursery(|n| async move {
        let p = n.start_actor("flooder").await?;
        let (ctx, ()) =
            p.open_context::<_, ()>("ctx_overrun_sender", STREAM_BUFFER as u32 + 1).await?;
        let e = ctx.result::<()>().await.unwrap_err();
        let r = e.as_remote().unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(r.type_name, "StreamOverrun", "{e}");
        assert_eq!(r.overrun_sender.as_ref(), Some(p.aid()), "names the sender");
        assert!(r.message.contains(&n.actor().aid().to_string()), "names the peer: {e}");
        Ok(())
    });
}

/// Parent → child: the child never opens its stream, the parent sends 65 (tractor's
/// `test_one_end_stream_not_opened`, caller side): the child's report interrupts the
/// parent's wait on something else, and fails its stream.
#[test]
fn sending_65_to_a_peer_that_never_reads_is_an_overrun_parent_to_child() {
    in_nursery(|n| async move {
        let me = n.actor().aid().clone();
        let p = n.start_actor("deaf").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_never_reads", ()).await?;
        let s = ctx.open_stream_with(StreamConfig::overrunning()).await?;
        for i in 0..=STREAM_BUFFER as u32 {
            s.send(&i).await?;
        }
        let waiting = ctx.within(std::future::pending::<plough::Result<()>>());
        match tokio::time::timeout(Duration::from_secs(15), waiting).await {
            Ok(Err(ActorError::StreamOverrun { sender, receiver, .. })) => {
                assert_eq!((&sender, &receiver), (&me, p.aid()));
            }
            other => panic!("the interrupt: {other:?}"),
        }
        // The overrun is reported to the sender's stream (and fails further sends).
        let e = s.recv::<u32>().await.unwrap_err();
        match &e {
            ActorError::StreamOverrun { sender, receiver, .. } => {
                assert_eq!((sender, receiver), (&me, p.aid()), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.send(&0u32).await, Err(ActorError::StreamOverrun { .. })));
        ctx.cancel().await?;
        assert!(ctx.result::<()>().await?.is_cancelled());
        Ok(())
    });
}

const MANY: u64 = 100_000;

/// A fast parent and a slow child in backpressure mode: every message arrives, in
/// order, and the child's buffer never holds more than its bound.
#[test]
fn backpressure_fast_parent_slow_child_loses_nothing() {
    in_nursery(|n| async move {
        let p = n.start_actor("sink").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_slow_sink", (MANY, 10_000u64)).await?;
        let s = ctx.open_stream_with(StreamConfig::backpressure()).await?;
        for i in 0..MANY {
            s.send(&i).await?;
        }
        s.close().await?;
        assert_eq!(ctx.result::<u64>().await?, Outcome::Returned(MANY));
        Ok(())
    });
}

/// A fast child and a slow parent in backpressure mode, with the default buffer and a
/// larger one: everything arrives in order, the buffer never exceeds its bound.
#[test]
fn backpressure_fast_child_slow_parent_loses_nothing() {
    fast_child_slow_parent(STREAM_BUFFER, MANY);
}

#[test]
fn backpressure_with_a_larger_buffer_loses_nothing() {
    fast_child_slow_parent(1024, MANY);
}

#[test]
fn backpressure_with_a_buffer_of_one_loses_nothing() {
    // Every message waits for the grant of the one before: a round trip each.
    fast_child_slow_parent(1, 5_000);
}

fn fast_child_slow_parent(buffer: usize, many: u64) {
    in_nursery(|n| async move {
        let p = n.start_actor("source").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_fast_source", (many, true)).await?;
        let s = ctx.open_stream_with(StreamConfig::default().with_buffer(buffer)).await?;
        let mut next = 0u64;
        let mut max_buffered = 0;
        while let Some(v) = s.recv::<u64>().await? {
            assert_eq!(v, next, "in order");
            next += 1;
            max_buffered = max_buffered.max(s.buffered());
            if next % (many / 10) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                max_buffered = max_buffered.max(s.buffered());
            }
        }
        assert_eq!(next, many);
        assert!(max_buffered <= buffer, "buffer held {max_buffered} > {buffer}");
        assert!(max_buffered > 0, "the sender did get ahead");
        assert_eq!(ctx.result::<u64>().await?, Outcome::Returned(many));
        Ok(())
    });
}

#[test]
fn ten_round_ping_pong() {
    in_nursery(|n| async move {
        let p = n.start_actor("echo").await?;
        let (ctx, hello) = p.open_context::<_, String>("ctx_echo", ()).await?;
        assert_eq!(hello, "ready");
        let s = ctx.open_stream().await?;
        for i in 0..10i64 {
            s.send(&(i * 10)).await?;
            assert_eq!(s.recv::<i64>().await?, Some(i * 10 + 1));
        }
        s.close().await?;
        assert_eq!(s.recv::<i64>().await?, None);
        assert_eq!(ctx.result::<u64>().await?, Outcome::Returned(10));
        Ok(())
    });
}

/// A yield of the wrong type is a `MsgTypeError` of kind `Yield`; the stream goes on.
#[test]
fn yield_type_mismatch_leaves_the_stream_usable() {
    in_nursery(|n| async move {
        let p = n.start_actor("echo").await?;
        let (ctx, _) = p.open_context::<_, String>("ctx_echo", ()).await?;
        let s = ctx.open_stream().await?;
        s.send(&1i64).await?;
        let e = s.recv::<String>().await.unwrap_err();
        let ActorError::MsgType(t) = &e else { panic!("{e:?}") };
        assert_eq!(t.kind, Some(plough::ipc_wire::msg::MsgKind::Yield));
        assert!(t.expected.contains("String") && t.arrived.contains('2'), "{t:?}");
        s.send(&5i64).await?;
        assert_eq!(s.recv::<i64>().await?, Some(6));
        s.close().await?;
        assert_eq!(ctx.result::<u64>().await?, Outcome::Returned(2));
        Ok(())
    });
}

/// root → aggregator → 2 streamers: exactly 0..999.
#[test]
fn pipeline_delivers_exactly_every_value() {
    in_nursery(|n| async move {
        let p = n.start_actor("aggregator").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_aggregate", 1000u64).await?;
        let s = ctx.open_stream().await?;
        let mut got: Vec<u64> = s.items::<u64>().map(|r| r.expect("item")).collect().await;
        got.sort_unstable();
        assert_eq!(got, (0..1000).collect::<Vec<u64>>());
        assert_eq!(ctx.result::<u64>().await?, Outcome::Returned(1000));
        Ok(())
    });
}

/// The same pipeline cancelled early, at several points: no hang, nothing left.
#[test]
fn pipeline_cancelled_early_leaves_no_hang() {
    for after in [0usize, 1, 100, 999] {
        in_nursery(|n| async move {
            let p = n.start_actor("aggregator").await?;
            let (ctx, ()) = p.open_context::<_, ()>("ctx_aggregate", 1000u64).await?;
            let s = ctx.open_stream().await?;
            for _ in 0..after {
                s.recv::<u64>().await?.expect("a value");
            }
            ctx.cancel().await?;
            let out = ctx.result::<u64>().await?;
            assert!(
                out.is_cancelled() || (after == 999 && out == Outcome::Returned(1000)),
                "after {after}: {out:?}"
            );
            Ok(())
        });
    }
}

#[test]
fn one_way_stream_functions() {
    in_nursery(|n| async move {
        let p = n.start_actor("ranger").await?;
        let s = p.open_stream_from("range", (5u64, 300u64)).await?;
        let got: Vec<u64> = s.items::<u64>().map(|r| r.expect("item")).collect().await;
        assert_eq!(got, (5..300).collect::<Vec<_>>());
        // A failing stream function: its values, then its error.
        let s = p.open_stream_from("range_then_fail", 3u64).await?;
        for i in 0..3u64 {
            assert_eq!(s.recv::<u64>().await?, Some(i));
        }
        let e = s.recv::<u64>().await.unwrap_err();
        let r = e.as_remote().unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!((r.type_name.as_str(), r.message.as_str()), ("AppError", "stream broke"));
        // A context function opened as a stream is named as such.
        let e = p.open_stream_from("ctx_simple", 1i64).await.unwrap_err();
        assert_eq!(e.as_remote().map(|r| r.type_name.as_str()), Some("KindMismatch"), "{e}");
        Ok(())
    });
}

/// Two local subscribers of one stream: the reader sees everything, the one that did
/// not read is told exactly how many it missed, then continues.
#[test]
fn fan_out_subscribers_see_every_message_or_how_many_they_missed() {
    in_nursery(|n| async move {
        let p = n.start_actor("ranger").await?;
        let fan = p.open_stream_from("range", (0u64, 1000u64)).await?.fan_out::<u64>(256);
        let mut fast = fan.subscribe()?;
        let mut slow = fan.subscribe()?;
        for i in 0..1000u64 {
            assert_eq!(fast.recv().await?, Some(i));
        }
        assert_eq!(fast.recv().await?, None);
        // 1000 values went through a buffer of 256.
        let e = slow.recv().await.unwrap_err();
        assert!(matches!(e, ActorError::Lagged { missed: 744 }), "{e:?}");
        for i in 744..1000u64 {
            assert_eq!(slow.recv().await?, Some(i));
        }
        assert_eq!(slow.recv().await?, None);
        Ok(())
    });
}
