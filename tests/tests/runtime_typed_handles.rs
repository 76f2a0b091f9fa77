//! Typed handles (a function or context declared once with its types, registered and
//! called with it) and error types that travel as themselves, in every backend and
//! transport cell (issue 17's items each have tests in every cell).

use futures::StreamExt;
use plough_tests::typed_app::{
    ADD, MUL, REFUSE, REFUSE_BELOW, REFUSE_WRAPPED, Refused, SCALER, SQUARES, UNREGISTERED,
    Unregistered,
};
use plough_tests::{in_nursery, runtime};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn typed_calls_contexts_and_streams_carry_their_declared_types_end_to_end() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("typed").await?;
        assert_eq!(p.call(MUL, (6, 7)).await?, 42);
        // A handle for a function registered by string: the same call.
        assert_eq!(p.call(ADD, (40, 2)).await?, 42);
        assert_eq!(p.run::<_, i64>(MUL.name(), (2i64, 3i64)).await?, 6, "string API");

        let (ctx, ready) = p.open(SCALER, 3).await?;
        assert_eq!(ready, "ready: 3");
        let stream = ctx.open_stream().await?;
        for i in 1..=5u64 {
            stream.send(&i).await?;
            assert_eq!(stream.recv().await?, Some((i * 3).to_string()));
        }
        stream.close().await?;
        assert_eq!(ctx.result().await?.returned(), Some(5));

        let squares = p.open_stream_of(SQUARES, 6).await?;
        let got: Vec<u64> = squares.items().map(|r| r.expect("item")).collect().await;
        assert_eq!(got, [0, 1, 4, 9, 16, 25]);

        let run = n.run_typed("typed-run", MUL, (5, 5)).await?;
        assert_eq!(run.result().await?, 25);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_registered_error_type_comes_back_as_itself_directly_and_through_a_relay() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("middle").await?;

        let e = p.call(REFUSE, 7).await.unwrap_err();
        let refused = e.downcast_remote::<Refused>().expect("a Refused");
        assert_eq!(refused.code, 7);
        assert!(refused.reason.contains("middle"), "{refused:?}");
        let r = e.as_remote().expect("remote");
        assert_eq!(
            (r.type_name.as_str(), r.message.as_str()),
            ("Refused", refused.to_string().as_str())
        );
        assert!(e.downcast_remote::<Unregistered>().is_none(), "another type");

        // Raised in a grandchild, returned by its parent's handler: still a `Refused`.
        let e = p.call(REFUSE_BELOW, 9).await.unwrap_err();
        let r = e.as_remote().expect("remote");
        assert_eq!(r.source.name, "refuser", "{e}");
        assert_eq!(
            r.relay_path.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["middle"],
            "{e}"
        );
        let refused = e.downcast_remote::<Refused>().expect("a Refused through the relay");
        assert_eq!(refused.code, 9);
        assert!(refused.reason.contains("refuser"), "{refused:?}");

        // Wrapped in `ActorError::other` by a handler that returns `ActorError`.
        let e = p.call(REFUSE_WRAPPED, 4).await.unwrap_err();
        let refused = Refused { code: 4, reason: "wrapped".to_owned() };
        assert_eq!(e.downcast_remote::<Refused>(), Some(refused.clone()));
        assert_eq!(e.as_remote().expect("remote").type_name, "Refused");

        // Not registered: its name and message only.
        let e = p.call(UNREGISTERED, ()).await.unwrap_err();
        assert!(e.downcast_remote::<Unregistered>().is_none());
        let r = e.as_remote().expect("remote");
        assert!(r.value.is_none());
        assert_eq!((r.type_name.as_str(), r.message.as_str()), ("Unregistered", "unregistered 5"));
        Ok(())
    })
    .unwrap();
}
