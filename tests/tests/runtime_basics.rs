//! The runtime end to end: spawn, RPC, errors coming home, run_in_actor results.
//! The root runs in this test process; children run `plough_app` (exec) or are forked.

use plough::{ActorError, Result};
use plough_tests::{in_nursery, runtime, with_root};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn spawn_and_call_a_function() {
    let (sum, child_pid) = in_nursery(runtime(APP), LIMIT, |n| async move {
        let portal = n.start_actor("adder").await?;
        let sum: i64 = portal.run("add", (1, 2)).await?;
        let pid: u32 = portal.run("pid", ()).await?;
        Ok((sum, pid))
    })
    .unwrap();
    assert_eq!(sum, 3);
    assert_ne!(child_pid, std::process::id());
}

#[test]
fn a_child_error_comes_home_typed_and_named() {
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        let portal = n.start_actor("failer").await?;
        let r: Result<()> = portal.run("fail", "it broke".to_owned()).await;
        let e = r.expect_err("fail must fail");
        let remote = e.as_remote().expect("a remote error");
        assert_eq!(remote.type_name, "AppError");
        assert_eq!(remote.message, "it broke");
        assert_eq!(remote.source.name, "failer");
        // Bad arguments are a remote type error, not a crash of the child.
        let bad: Result<i64> = portal.run("add", "not numbers").await;
        let bad = bad.expect_err("bad args");
        assert_eq!(bad.as_remote().unwrap().type_name, "MsgTypeError");
        // Unknown functions name the function and the actor.
        let none: Result<()> = portal.run("nope", ()).await;
        let none = none.expect_err("unknown function");
        let r = none.as_remote().unwrap();
        assert_eq!(r.type_name, "NoSuchFunction");
        assert!(r.message.contains("`nope`") && r.message.contains("failer@"), "{}", r.message);
        // The child is still fine.
        assert_eq!(portal.run::<_, i64>("add", (2, 2)).await?, 4);
        Err::<(), _>(e)
    })
    .unwrap_err();
    let remote = err.as_remote().expect("the body's error comes back");
    assert_eq!(remote.message, "it broke");
}

#[test]
fn run_in_actor_results_are_available_after_the_nursery() {
    let (a, b) = with_root(runtime(APP), LIMIT, |root| async move {
        let (a, b) = root
            .nursery(|n| async move {
                let a = n.run_in_actor::<_, i64>("a", "add", (40, 2)).await?;
                let b = n.run_in_actor::<_, i64>("b", "add", (1, 1)).await?;
                Ok((a, b))
            })
            .await?;
        Ok((a.into_result()?, b.into_result()?))
    })
    .unwrap();
    assert_eq!((a, b), (42, 2));
}

#[test]
fn two_failing_children_give_one_error_with_two_members() {
    let err = in_nursery(runtime(APP), LIMIT, |n| async move {
        n.run_in_actor::<_, ()>("f1", "fail", "one".to_owned()).await?;
        n.run_in_actor::<_, ()>("f2", "fail", "two".to_owned()).await?;
        Ok(())
    })
    .unwrap_err();
    let failures = err.failures();
    assert_eq!(failures.len(), 2, "{err}");
    let mut messages: Vec<&str> =
        failures.iter().map(|f| f.as_remote().unwrap().message.as_str()).collect();
    messages.sort_unstable();
    assert_eq!(messages, ["one", "two"]);
    for f in failures {
        assert!(matches!(f, ActorError::Remote(_)), "{f}");
    }
}

/// After boot a child's stdout and stderr are its parent's own (its boot stderr went
/// through a pipe to the parent only until it connected), and its stdin is never a
/// terminal or a pipe it could block on.
#[test]
fn a_booted_childs_stdio_is_its_parents() {
    let table = in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("stdio").await?;
        p.run::<_, Vec<(i32, String)>>("fds", ()).await
    })
    .unwrap();
    let target = |fd: i32| table.iter().find(|(f, _)| *f == fd).map(|(_, t)| t.clone());
    let ours = |fd: i32| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .ok()
    };
    assert_eq!(target(1), ours(1), "stdout in {table:?}");
    assert_eq!(target(2), ours(2), "stderr in {table:?}");
    // exec: /dev/null (its real stderr waited there during boot); forked: ours.
    let exec = std::env::var("PLOUGH_SPAWN_METHOD").as_deref() == Ok("exec");
    let want = if exec { Some("/dev/null".to_owned()) } else { ours(0) };
    assert_eq!(target(0), want, "stdin in {table:?}");
}

/// A child is told its parent's build id and takes it instead of hashing its executable
/// again, exactly when it runs the same executable file; a child that runs another program
/// (this test's children run `plough_app` under `exec` and `zygote`) computes its own.
#[test]
fn a_child_adopts_its_parents_build_id_only_when_it_runs_the_same_executable() {
    use plough::ipc_wire::{BuildId, ExeBuild};
    use plough_tests::app::BuildReport;
    use std::os::unix::fs::MetadataExt;
    // Made-up ids, which no hash gives: a report naming one was told it, not computed.
    let child_id = [0x5a; 16];
    let m = std::fs::metadata("/proc/self/exe").unwrap();
    let ours = (m.dev(), m.ino());
    // This process's build: the made-up one, unless it knew one already (a test runner
    // that runs several tests in one process).
    BuildId::adopt(ExeBuild { id: BuildId([0xa5; 16]), dev: ours.0, ino: ours.1 });
    let root_id = BuildId::current().unwrap().0;
    let (fresh, (mid, grand)) = in_nursery(runtime(APP), LIMIT, |n| async move {
        let fresh: BuildReport =
            n.start_actor("build-fresh").await?.run("build_report", ()).await?;
        // The child takes `child_id` for its own file if it knows no build yet, then
        // spawns a child of its own program.
        let p = n.start_actor("build-child").await?;
        let relay: (BuildReport, BuildReport) = p.run("build_relay", child_id).await?;
        Ok((fresh, relay))
    })
    .unwrap();
    if fresh.exe == ours {
        // A fork of this process (main_thread_forkserver): our build, told or inherited.
        assert_eq!((fresh.id, mid.id, grand.id), (root_id, root_id, root_id));
    } else {
        // Another program: it hashed its own file (ours was for another file)...
        assert_eq!(BuildId(fresh.id), BuildId::of_file(std::path::Path::new(APP)).unwrap());
        // ...and a child of its own program took what it was told instead of hashing.
        assert_eq!(mid.id, child_id, "the child knew no build, and took the one it was given");
        assert_eq!(grand.id, child_id, "the grandchild runs its parent's file: it adopted");
    }
    assert_eq!((mid.exe, grand.exe), (fresh.exe, fresh.exe));
}

/// A function of raw bytes (`Registry::func_bytes`, `Portal::run_bytes`): the bytes go and
/// come back as they are, small or large (above the suites' shared-memory threshold, so
/// through a lent segment), empty too; its error comes home typed; a typed function
/// called with raw bytes fails to read them, in the child, as a typed call would.
#[test]
fn raw_bytes_go_to_a_function_and_back_uncoded() {
    in_nursery(runtime(APP), LIMIT, |n| async move {
        let p = n.start_actor("bytes").await?;
        for len in [0usize, 1, 4096, 3 << 20] {
            let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let got = p.run_bytes("bytes_reversed", sent.clone().into()).await?;
            let mut want = sent;
            want.reverse();
            assert!(got.as_ref() == want.as_slice(), "{len} bytes come back reversed");
        }
        let e = p.run_bytes("bytes_refused", vec![9u8; 10].into()).await.unwrap_err();
        let remote = e.as_remote().expect("a remote error");
        assert_eq!(
            (remote.type_name.as_str(), remote.message.as_str()),
            ("AppError", "refused 10 bytes")
        );
        // `add` takes an encoded (i64, i64): raw bytes are not one.
        let e = p.run_bytes("add", bytes::Bytes::from_static(b"\xff\xfe")).await.unwrap_err();
        assert_eq!(e.as_remote().expect("remote").type_name, "MsgTypeError", "{e}");
        // And the actor serves on.
        assert_eq!(p.run::<_, i64>("add", (2, 3)).await?, 5);
        Ok(())
    })
    .unwrap();
}
