//! One trace across processes: root → child → grandchild, each span written by the
//! suites' span layer (`plough_tests::obs`) to a file per process. The grandchild's serve
//! span's parent is the child's call span, whose parent is the child's serve span, whose
//! parent is the root's call span, whose parent is the root's actor span — one trace id.

use plough_tests::obs::{SpanLine, TRACE_DIR_ENV, read_spans};
use plough_tests::wait_until;
use std::process::{Command, Stdio};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");

/// The one span named `name` whose `function` is `function`.
#[track_caller]
fn one<'a>(spans: &'a [SpanLine], name: &str, function: &str) -> &'a SpanLine {
    one_in(spans, name, function, |_| true)
}

/// [`one`] among the spans that pass `which`.
#[track_caller]
fn one_in<'a>(
    spans: &'a [SpanLine],
    name: &str,
    function: &str,
    which: impl Fn(&SpanLine) -> bool,
) -> &'a SpanLine {
    let found: Vec<&SpanLine> = spans
        .iter()
        .filter(|s| s.name == name && s.field("function") == function && which(s))
        .collect();
    assert_eq!(found.len(), 1, "one {name} span of `{function}` expected: {spans:#?}");
    found[0]
}

trait Peer {
    fn peer_is(&self, name: &str) -> bool;
}

impl Peer for SpanLine {
    fn peer_is(&self, name: &str) -> bool {
        self.field("peer").starts_with(&format!("{name}@"))
    }
}

#[test]
fn a_two_level_call_is_one_trace_across_three_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime_dir = tempfile::tempdir().expect("runtime dir");
    // The registry on the suite's transport, inside the root's own runtime dir.
    let registry = match std::env::var("PLOUGH_TEST_TRANSPORT").as_deref() {
        Ok("uds") => format!("uds://{}/plough/reg.sock", runtime_dir.path().display()),
        _ => "tcp://127.0.0.1:0".to_owned(),
    };
    let child = Command::new(APP)
        .arg("trace")
        .env(TRACE_DIR_ENV, dir.path())
        .env("XDG_RUNTIME_DIR", runtime_dir.path())
        .env("PLOUGH_TEST_REGISTRY", &registry)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("plough_app");
    let root_pid = child.id();
    let mut child = child;
    wait_until(Duration::from_secs(30), "plough_app trace to exit", || {
        child.try_wait().expect("try_wait").is_some()
    });
    let out = child.wait_with_output().expect("its output");
    assert!(out.status.success(), "plough_app trace: {:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("result 5"), "{out:?}");
    let left = plough_tests::files_left_in(runtime_dir.path());
    assert!(left.is_empty(), "left behind: {left:?}");

    let spans = read_spans(dir.path());
    let root_call = one(&spans, "plough.call", "relay_add");
    let child_serve = one(&spans, "plough.serve", "relay_add");
    let child_call = one_in(&spans, "plough.call", "add", |s| s.pid != root_pid);
    let grandchild_serve = one_in(&spans, "plough.serve", "add", |s| s.peer_is("child"));

    // Three processes.
    assert_eq!(root_call.pid, root_pid);
    assert_eq!(child_serve.pid, child_call.pid);
    assert_ne!(child_serve.pid, root_call.pid);
    assert_ne!(grandchild_serve.pid, child_serve.pid);
    assert_ne!(grandchild_serve.pid, root_call.pid);

    // The parent links, across them.
    assert_eq!(grandchild_serve.field("parent_span_id"), child_call.field("span_id"));
    assert_eq!(child_call.field("parent_span_id"), child_serve.field("span_id"));
    assert_eq!(child_serve.field("parent_span_id"), root_call.field("span_id"));
    // The root's call is its actor span's child (that span is open until the root exits,
    // so its id is read from the call's parent and the other actors' spans).
    let root_actor = root_call.field("parent_span_id");
    assert_eq!(root_actor.len(), 16, "{root_call:?}");

    // One trace, and every id is W3C-shaped and distinct.
    let trace = root_call.field("trace_id");
    assert_eq!(trace.len(), 32, "{root_call:?}");
    let chain = [root_call, child_serve, child_call, grandchild_serve];
    for s in chain {
        assert_eq!(s.field("trace_id"), trace, "{s:?}");
        assert_eq!(s.field("span_id").len(), 16, "{s:?}");
    }
    let ids: std::collections::HashSet<&str> =
        chain.iter().map(|s| s.field("span_id")).chain([root_actor]).collect();
    assert_eq!(ids.len(), 5, "{chain:#?}");

    // `run_in_actor` runs its call in a task of the nursery: still the body's child.
    let side_call = one_in(&spans, "plough.call", "add", |s| s.pid == root_pid);
    assert_eq!(side_call.field("trace_id"), trace, "{side_call:?}");
    assert_eq!(side_call.field("parent_span_id"), root_actor, "{side_call:?}");
    let side_serve = one_in(&spans, "plough.serve", "add", |s| s.peer_is("root"));
    assert_eq!(side_serve.field("parent_span_id"), side_call.field("span_id"));

    // The callee side names the caller; the spans say which kind of call they are.
    assert!(grandchild_serve.field("peer").starts_with("child@"), "{grandchild_serve:?}");
    assert!(child_serve.field("peer").starts_with("root@"), "{child_serve:?}");
    assert_eq!(child_call.field("kind"), "function");
    assert_eq!(child_call.field("cid"), grandchild_serve.field("cid"));
}
