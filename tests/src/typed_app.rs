//! Handlers declared and registered by typed handle, and an error type registered to
//! travel as itself (`runtime_typed_handles.rs`).

use plough::{ActorError, ContextFn, Cx, Func, Registry, ServedContext, StreamFn};

/// A plain function registered by handle.
pub const MUL: Func<(i64, i64), i64> = Func::new("typed_mul");

/// The string-registered `add` of the test program, called by handle.
pub const ADD: Func<(i64, i64), i64> = Func::new("add");

/// `started("ready: <scale>")`, then answers every `u64` it receives with it times
/// `scale`, as a `String`; returns how many it answered.
pub const SCALER: ContextFn<u64, String, String, u64, u32> = ContextFn::new("typed_scaler");

/// The squares of `0..n`.
pub const SQUARES: StreamFn<u32, u64> = StreamFn::new("typed_squares");

/// Fails with a [`Refused`] carrying its argument.
pub const REFUSE: Func<u32, ()> = Func::new("typed_refuse");

/// Starts a child that runs [`REFUSE`] and returns its error unchanged: the `Refused`
/// reaches the caller relayed by this actor.
pub const REFUSE_BELOW: Func<u32, ()> = Func::new("typed_refuse_below");

/// Fails with `ActorError::other(Refused)`: a handler that returns `ActorError`.
pub const REFUSE_WRAPPED: Func<u32, ()> = Func::new("typed_refuse_wrapped");

/// Fails with an [`Unregistered`] (a type not registered to travel as itself).
pub const UNREGISTERED: Func<(), ()> = Func::new("typed_unregistered");

/// An error type registered to travel as itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("refused request {code}: {reason}")]
pub struct Refused {
    /// The request refused.
    pub code: u32,
    /// Why.
    pub reason: String,
}

/// The same shape as [`Refused`], not registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("unregistered {code}")]
pub struct Unregistered {
    /// A number.
    pub code: u32,
}

async fn mul(_cx: Cx, (a, b): (i64, i64)) -> Result<i64, std::convert::Infallible> {
    Ok(a * b)
}

async fn scaler(ctx: ServedContext<String, String, u64>, scale: u64) -> Result<u32, ActorError> {
    ctx.started(&format!("ready: {scale}")).await?;
    let stream = ctx.open_stream().await?;
    let mut answered = 0;
    while let Some(n) = stream.recv().await? {
        stream.send(&(n * scale).to_string()).await?;
        answered += 1;
    }
    Ok(answered)
}

fn squares(_cx: Cx, n: u32) -> impl futures::Stream<Item = Result<u64, ActorError>> {
    futures::stream::iter((0..u64::from(n)).map(|i| Ok(i * i)))
}

async fn refuse(cx: Cx, code: u32) -> Result<(), Refused> {
    Err(Refused { code, reason: format!("raised in {}", cx.actor()) })
}

async fn refuse_below(cx: Cx, code: u32) -> Result<(), ActorError> {
    cx.nursery(|n| async move {
        let below = n.start_actor("refuser").await?;
        below.call(REFUSE, code).await
    })
    .await
}

async fn refuse_wrapped(_cx: Cx, code: u32) -> Result<(), ActorError> {
    Err(ActorError::other(Refused { code, reason: "wrapped".to_owned() }))
}

async fn unregistered(_cx: Cx, _: ()) -> Result<(), Unregistered> {
    Err(Unregistered { code: 5 })
}

/// Adds this module's handlers.
pub(crate) fn register(r: Registry) -> Registry {
    r.typed(MUL, mul)
        .typed_context(SCALER, scaler)
        .typed_stream(SQUARES, squares)
        .typed(REFUSE, refuse)
        .typed(REFUSE_BELOW, refuse_below)
        .typed(REFUSE_WRAPPED, refuse_wrapped)
        .typed(UNREGISTERED, unregistered)
        .error_type::<Refused>()
}
