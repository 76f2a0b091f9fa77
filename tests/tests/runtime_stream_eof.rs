//! The end of a stream and what interrupts a context (issue 17, items 2-5, from tractor's
//! own scenarios): a child's close and return end the parent's iteration at once; a
//! side's own close ends its own receive at once; a child overrunning a parent that never
//! opened its stream interrupts the parent's context; a fanned-out echo read by eleven
//! tasks that keep up loses nothing, a stalled one alone lags; a receiver that allows
//! overruns keeps what it cannot buffer. Every test is bounded and checks that nothing is
//! left behind.

use plough::{ActorError, ErrorKind, Misuse, Nursery, Outcome, STREAM_BUFFER, StreamConfig};
use plough_tests::runtime;
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(90);
/// The bound of one awaited step (generous: the machine is shared; what "at once" took
/// is printed).
const STEP: Duration = Duration::from_secs(15);

fn in_nursery<F, Fut>(body: F)
where
    F: FnOnce(Nursery) -> Fut,
    Fut: std::future::Future<Output = plough::Result<()>>,
{
    plough_tests::in_nursery(runtime(APP), LIMIT, body).unwrap();
}

async fn step<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let t0 = Instant::now();
    let v = tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {STEP:?}"));
    eprintln!("{what}: {:?}", t0.elapsed());
    v
}

#[test]
fn after_the_child_closes_and_returns_the_parents_iteration_ends_at_once() {
    use futures::StreamExt;
    in_nursery(|n| async move {
        let p = n.start_actor("closer").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_close_early", ()).await?;
        let s = ctx.open_stream().await?;
        let got: Vec<_> = step("the iteration", s.items::<i64>().collect::<Vec<_>>()).await;
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(step("a further recv", s.recv::<i64>()).await?, None);
        match s.send(&1i64).await {
            Err(ActorError::StreamClosed { function, by }) => {
                assert_eq!((function.as_str(), &by), ("ctx_close_early", p.aid()));
            }
            other => panic!("a send after the peer closed: {other:?}"),
        }
        match ctx.open_stream().await {
            Err(ActorError::Misuse(Misuse::SecondStream { function })) => {
                assert_eq!(function, "ctx_close_early");
            }
            other => panic!("reopening the stream: {other:?}"),
        }
        let out = step("the result", ctx.result::<String>()).await?;
        assert_eq!(out, Outcome::Returned("done".to_owned()));
        assert!(matches!(s.send(&1i64).await, Err(ActorError::StreamClosed { .. })));
        Ok(())
    });
}

#[test]
fn closing_your_own_stream_ends_your_own_receive_at_once_on_both_sides() {
    in_nursery(|n| async move {
        // Parent side: the child reads and never sends; our receive after our close.
        let p = n.start_actor("sink").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_slow_sink", (3u64, 0u64)).await?;
        let s = ctx.open_stream().await?;
        for i in 0..3u64 {
            s.send(&i).await?;
        }
        s.close().await?;
        assert_eq!(step("the parent's recv after its close", s.recv::<u64>()).await?, None);
        assert!(matches!(s.send(&0u64).await, Err(ActorError::Misuse(Misuse::SendAfterClose))));
        assert_eq!(step("the result", ctx.result::<u64>()).await?, Outcome::Returned(3));
        // Child side: it closes, then receives, while our stream stays open.
        let (ctx, ()) = p.open_context::<_, ()>("ctx_close_then_recv", ()).await?;
        let _s = ctx.open_stream().await?;
        let out = step("the child's recv after its close", ctx.result::<bool>()).await?;
        assert_eq!(out, Outcome::Returned(true), "its recv was end of stream");
        Ok(())
    });
}

/// tractor's `test_one_end_stream_not_opened`, callee side: the parent never opens its
/// stream and waits on something else; the child's overrun comes home and interrupts it.
/// (The caller side is `runtime_stream`'s `..._overrun_parent_to_child`.)
#[test]
fn a_child_overrunning_a_parent_that_never_opened_its_stream_interrupts_the_parents_context() {
    in_nursery(|n| async move {
        let p = n.start_actor("flooder").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_keep_sending", ()).await?;
        let body = ctx.within(std::future::pending::<plough::Result<()>>());
        let e = step("the interrupt", body).await.unwrap_err();
        let r = e.as_remote().unwrap_or_else(|| panic!("{e:?}"));
        assert_eq!(r.kind, ErrorKind::StreamOverrun, "{e}");
        assert_eq!(r.overrun_sender.as_ref(), Some(p.aid()), "names the sender: {e}");
        let again = step("the result", ctx.result::<()>()).await.unwrap_err();
        assert_eq!(again.as_remote().map(|r| r.kind), Some(ErrorKind::StreamOverrun));
        // With backpressure, into a parent in `result`: the same overrun, never a wait
        // for credit that cannot come.
        let (ctx, ()) =
            p.open_context::<_, ()>("ctx_fast_source", (2 * STREAM_BUFFER as u64, true)).await?;
        let e = step("the backpressured overrun", ctx.result::<u64>()).await.unwrap_err();
        assert_eq!(e.as_remote().map(|r| r.kind), Some(ErrorKind::StreamOverrun), "{e}");
        Ok(())
    });
}

/// Ten subscribers and the main reader of a 1,000-item echo (tractor's
/// `test_ria_and_broadcast`-like scenario), all keeping up: every item, no `Lagged`; a
/// subscriber that stalls alone lags, by what it missed, and resumes. The fanned-out
/// stream sends the items.
#[test]
fn eleven_readers_of_a_fanned_out_echo_keep_up_and_a_stalled_one_alone_lags() {
    const N: i64 = 1000;
    const CAP: usize = 64;
    in_nursery(|n| async move {
        let p = n.start_actor("echo").await?;
        let (ctx, _) = p.open_context::<_, String>("ctx_echo_bp", ()).await?;
        let fan = ctx.open_stream_with(StreamConfig::backpressure()).await?.fan_out::<i64>(CAP);
        let mut stalled = fan.subscribe()?;
        let readers = (0..11).map(|_| fan.subscribe()).collect::<plough::Result<Vec<_>>>()?;
        let reads = futures::future::join_all(readers.into_iter().map(|mut s| async move {
            let mut got = Vec::new();
            while got.len() < N as usize {
                got.push(s.recv().await?.expect("not the end yet"));
            }
            Ok::<_, ActorError>(got)
        }));
        let send = async {
            let s = fan.stream().expect("the fan-out of a stream has it");
            for i in 0..N {
                s.send(&i).await?;
            }
            Ok::<_, ActorError>(())
        };
        let (got, sent) = step("the echo", async { tokio::join!(reads, send) }).await;
        sent?;
        for g in got {
            assert_eq!(g?, (1..=N).collect::<Vec<_>>(), "every item, in order, no Lagged");
        }
        match stalled.recv().await {
            Err(ActorError::Lagged { missed }) => assert_eq!(missed, (N as usize - CAP) as u64),
            other => panic!("expected the stalled one to lag: {other:?}"),
        }
        for v in N - CAP as i64 + 1..=N {
            assert_eq!(step_quiet(stalled.recv()).await?, Some(v));
        }
        fan.close().await?;
        assert_eq!(stalled.recv().await?, None);
        assert!(matches!(fan.subscribe(), Err(ActorError::Misuse(Misuse::SubscribeAfterClose))));
        assert_eq!(step("the result", ctx.result::<u64>()).await?, Outcome::Returned(N as u64));
        Ok(())
    });
}

/// Lossless by default (issue 18): a fast child and a reader that pauses, both with the
/// default config, 20,000 messages: every one arrives, in order, never more than the
/// buffer held.
#[test]
fn a_stream_is_lossless_by_default() {
    const N: u64 = 20_000;
    in_nursery(|n| async move {
        let p = n.start_actor("source").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_default_source", N).await?;
        let s = ctx.open_stream().await?;
        let mut next = 0;
        while let Some(v) = step_quiet(s.recv::<u64>()).await? {
            assert_eq!(v, next, "in order");
            next += 1;
            assert!(s.buffered() <= STREAM_BUFFER);
            if next % 2_000 == 0 {
                // A reader busy elsewhere: the sender waits, nothing overruns.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(next, N);
        assert_eq!(step("the result", ctx.result::<u64>()).await?, Outcome::Returned(N));
        Ok(())
    });
}

async fn step_quiet<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut).await.unwrap_or_else(|_| panic!("not within {STEP:?}"))
}

/// A receiver that allows overruns keeps three buffers' worth of messages from a sender
/// that does not wait for credit, far past its buffer, and reads them all in order.
#[test]
fn a_receiver_that_allows_overruns_keeps_what_a_fast_sender_sends_beyond_its_buffer() {
    const N: u64 = 3 * STREAM_BUFFER as u64;
    in_nursery(|n| async move {
        let p = n.start_actor("flooder").await?;
        let (ctx, ()) = p.open_context::<_, ()>("ctx_flood_on_request", N).await?;
        let s = ctx.open_stream_with(StreamConfig::default().allowing_overruns()).await?;
        s.send(&()).await?;
        let deadline = Instant::now() + STEP;
        while s.buffered() < N as usize {
            assert!(Instant::now() < deadline, "only {} of {N} arrived", s.buffered());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for i in 0..N {
            assert_eq!(s.recv::<u64>().await?, Some(i));
        }
        assert_eq!(step("the end", s.recv::<u64>()).await?, None);
        assert_eq!(step("the result", ctx.result::<u64>()).await?, Outcome::Returned(N));
        Ok(())
    });
}
