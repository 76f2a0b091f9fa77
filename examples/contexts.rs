//! Contexts and two-way streams, the three shapes a user meets:
//!
//! ```sh
//! cargo run --example contexts
//! ```
//!
//! 1. **Two-way, typed**: the root opens the `doubler` context on a child actor by its
//!    typed handle (`DOUBLER`: the compiler checks its argument, `started` value, stream
//!    items both ways and result, at both ends), gets its `started` value, then sends
//!    numbers on the stream and reads each answer back; it closes its side, and the
//!    context's result is how many numbers the child saw.
//! 2. **One-way, with backpressure**: `counter` streams `0..n` to the root, never faster
//!    than the root reads (`StreamConfig::backpressure()`), then returns the sum.
//! 3. **Cancelled by the caller**: `ticker` streams forever; the root reads a few values,
//!    cancels the context, and the result says who cancelled it.
//!
//! Every line the program prints is checked by `tests/tests/runtime_examples.rs`.

use futures::StreamExt;
use plough::{ActorError, Context, ContextFn, Outcome, Registry, ServedContext, StreamConfig};

/// The `doubler` context: a `String` argument, a `String` passed to `started`, `i64`
/// stream items both ways, a `u64` result.
const DOUBLER: ContextFn<String, String, i64, i64, u64> = ContextFn::new("doubler");

/// `started` with a greeting, then answers every number with its double until the caller
/// closes the stream; returns how many numbers it answered.
async fn doubler(
    ctx: ServedContext<String, i64, i64>,
    greeting: String,
) -> Result<u64, ActorError> {
    let me = ctx.untyped().cx().map_or_else(|| "?".to_owned(), |cx| cx.actor().name.clone());
    ctx.started(&format!("{greeting} from {me}")).await?;
    let stream = ctx.open_stream().await?;
    let mut answered = 0;
    while let Some(x) = stream.recv().await? {
        stream.send(&(x * 2)).await?;
        answered += 1;
    }
    Ok(answered)
}

/// Streams `0..n` at the reader's pace, then returns their sum.
async fn counter(ctx: Context, n: u64) -> Result<u64, ActorError> {
    ctx.started(&()).await?;
    let stream = ctx.open_stream_with(StreamConfig::backpressure()).await?;
    for i in 0..n {
        stream.send(&i).await?;
    }
    stream.close().await?;
    Ok((0..n).sum())
}

/// Streams 0, 1, 2, ... until the context is cancelled.
async fn ticker(ctx: Context, (): ()) -> Result<(), ActorError> {
    ctx.started(&()).await?;
    let stream = ctx.open_stream_with(StreamConfig::backpressure()).await?;
    for i in 0u64.. {
        stream.send(&i).await?;
    }
    Ok(())
}

fn registry() -> Registry {
    Registry::new()
        .typed_context(DOUBLER, doubler)
        .context("counter", counter)
        .context("ticker", ticker)
}

fn main() -> plough::Result<()> {
    plough::Runtime::new(registry()).run(|root| async move {
        root.nursery(|n| async move {
            let worker = n.start_actor("worker").await?;

            // 1. Two-way, typed.
            let (ctx, hello) = worker.open(DOUBLER, "hello".to_owned()).await?;
            println!("doubler started: {hello}");
            let stream = ctx.open_stream().await?;
            for x in [1i64, 2, 3] {
                stream.send(&x).await?;
                let answer = stream.recv().await?;
                println!("doubler: sent {x}, got {answer:?}");
            }
            stream.close().await?;
            match ctx.result().await? {
                Outcome::Returned(n) => println!("doubler returned {n}"),
                Outcome::Cancelled { canceller } => println!("doubler cancelled by {canceller}"),
            }

            // 2. One-way, the child paced by the root.
            let (ctx, ()) = worker.open_context::<_, ()>("counter", 1000u64).await?;
            let stream = ctx.open_stream().await?;
            let values: Vec<u64> =
                stream.items::<u64>().map(|v| v.unwrap_or(u64::MAX)).collect().await;
            let in_order = values.iter().copied().eq(0..1000);
            let sum = ctx.result::<u64>().await?.returned();
            println!("counter: {} values, in order: {in_order}, returned {sum:?}", values.len());

            // 3. Cancelled by the caller.
            let (ctx, ()) = worker.open_context::<_, ()>("ticker", ()).await?;
            let stream = ctx.open_stream().await?;
            let mut first = Vec::new();
            for _ in 0..5 {
                first.extend(stream.recv::<u64>().await?);
            }
            ctx.cancel().await?;
            let outcome = ctx.result::<()>().await?;
            println!("ticker: read {first:?}, then cancelled: {}", outcome.is_cancelled());
            Ok(())
        })
        .await?;
        println!("done: every actor exited and was reaped");
        Ok(())
    })
}
