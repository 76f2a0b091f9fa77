//! Roots inside `#[test]`s: [`run`] (and [`run_async`] for `#[tokio::test]`) run a root
//! whose children work in a test harness, then check that the tree left nothing behind.
//!
//! ```no_run
//! async fn add(_cx: plough::Cx, (a, b): (i64, i64)) -> Result<i64, std::convert::Infallible> {
//!     Ok(a + b)
//! }
//!
//! fn registry() -> plough::Registry {
//!     plough::Registry::new().func("add", add)
//! }
//!
//! #[test]
//! fn adds_in_a_child() {
//!     let sum = plough::testing::run(registry(), |root| async move {
//!         root.nursery(|n| async move {
//!             n.start_actor("adder").await?.run::<_, i64>("add", (1, 2)).await
//!         })
//!         .await
//!     })
//!     .unwrap();
//!     assert_eq!(sum, 3);
//! }
//! ```
//!
//! How it works: a `zygote` or `exec` child runs the program's `main` from its start — here
//! the test harness's. So the children of a root started by [`runtime`] get the arguments
//! that make the harness run exactly the current test (`<test name> --exact --nocapture`),
//! whose body reaches [`run`] again, where the child finds its boot and becomes the actor;
//! the harness never runs another test in it. (`main_thread_forkserver` children never run
//! `main`, and need nothing of this.) So:
//!
//! * call [`run`] / [`runtime`] on the test's own thread (the harness names it after the
//!   test), and build the same registry on every run;
//! * code in the test before [`run`] runs again in each child: keep it cheap and free of
//!   side effects (or skip it when [`started_as_child`](crate::started_as_child)).
//!
//! One root runs per process at a time: roots started through this module wait for each
//! other, so a harness that runs tests in parallel threads still works. Each root uses a
//! private registry (`tcp://127.0.0.1:0`): tests never join another program's registrar.
//!
//! With the cargo feature `testing`, `BreakSide` and `Portal::break_connection` break a
//! connection on purpose (parent side, child side, or both) to test IPC faults: calls in
//! flight get `TransportClosed` (or `ActorDied`), and the child cancels itself.
//!
//! After the root returns, [`run`] checks that nothing of its tree is alive (no actor
//! process, socket file, or zygote of this process) and panics with what it found.

use crate::{Actor, Registry, Result, Runtime};
/// Which end of a connection [`Portal::break_connection`](crate::Portal::break_connection)
/// breaks (the `testing` feature: fault injection, never in a production build).
#[cfg(feature = "testing")]
pub use plough_actor_core::BreakSide;
use plough_fork_prims::marker::{MarkerInfo, default_runtime_dir, read_markers};
use plough_fork_prims::sync::LockExt;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// One root at a time in this process (plough runs one actor per process).
static ROOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A root for the current test: [`runtime`]'s result. Configure it, then [`run`] or
/// [`run_async`] it.
///
/// [`run`]: TestRuntime::run
/// [`run_async`]: TestRuntime::run_async
#[derive(Debug)]
pub struct TestRuntime {
    runtime: Runtime,
}

/// A runtime for a root inside the current test: children run this test (see the module
/// docs), and the registry is private to it.
///
/// # Panics
///
/// Not on a thread named after a test (the harness's test thread): the children could
/// not be pointed at the test.
pub fn runtime(registry: Registry) -> TestRuntime {
    let name = std::thread::current().name().map(str::to_owned);
    let Some(test) = name.filter(|n| n != "main") else {
        panic!(
            "plough::testing needs the test's own thread (named after the test by the harness); \
             elsewhere, point children at the test with `Runtime::child_args`"
        );
    };
    let runtime = Runtime::new(registry)
        .child_args([test.as_str(), "--exact", "--nocapture", "--test-threads=1", "--quiet"])
        .configure(|c| {
            c.registry_addr = "tcp://127.0.0.1:0".parse().expect("a valid address");
        });
    TestRuntime { runtime }
}

/// Runs `body` as the root of [`runtime`]`(registry)`, then checks for leaks.
///
/// # Errors
///
/// As [`Runtime::run`].
///
/// # Panics
///
/// As [`TestRuntime::run`].
pub fn run<T, F, Fut>(registry: Registry, body: F) -> Result<T>
where
    F: FnOnce(Actor) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    runtime(registry).run(body)
}

/// [`run`] on the caller's tokio runtime (`#[tokio::test]`, either flavour).
///
/// # Errors
///
/// As [`Runtime::run`].
///
/// # Panics
///
/// As [`TestRuntime::run`].
pub async fn run_async<T, F, Fut>(registry: Registry, body: F) -> Result<T>
where
    F: FnOnce(Actor) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    runtime(registry).run_async(body).await
}

impl TestRuntime {
    /// Changes the settings (as [`Runtime::configure`]).
    pub fn configure(mut self, f: impl FnOnce(&mut crate::RuntimeConfig)) -> Self {
        self.runtime = self.runtime.configure(f);
        self
    }

    /// Changes the [`Runtime`] itself (e.g. [`Runtime::log`]).
    pub fn with(mut self, f: impl FnOnce(Runtime) -> Runtime) -> Self {
        self.runtime = f(self.runtime);
        self
    }

    /// Runs `body` as the root (after any other root of this process that runs through
    /// this module), then checks for leaks.
    ///
    /// # Errors
    ///
    /// As [`Runtime::run`].
    ///
    /// # Panics
    ///
    /// Something of the tree is still alive after the root returned (listed).
    pub fn run<T, F, Fut>(self, body: F) -> Result<T>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let _one = ROOT.blocking_lock();
        let tree = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&tree);
        let out = self.runtime.run(move |root| {
            *seen.locked() = Some(root.aid().uuid.to_string());
            body(root)
        });
        assert_nothing_left(tree.locked().as_deref());
        out
    }

    /// [`TestRuntime::run`] on the caller's tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`Runtime::run`].
    ///
    /// # Panics
    ///
    /// As [`TestRuntime::run`].
    pub async fn run_async<T, F, Fut>(self, body: F) -> Result<T>
    where
        F: FnOnce(Actor) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let one = ROOT.lock().await;
        let tree = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&tree);
        let out = self
            .runtime
            .run_async(move |root| {
                *seen.locked() = Some(root.aid().uuid.to_string());
                body(root)
            })
            .await;
        assert_nothing_left(tree.locked().as_deref());
        drop(one);
        out
    }
}

/// Panics if an actor of `tree`, its socket file, or a zygote of this process is alive.
fn assert_nothing_left(tree: Option<&str>) {
    let me = std::process::id();
    let left: Vec<(std::path::PathBuf, MarkerInfo)> = read_markers(&default_runtime_dir())
        .into_iter()
        .filter(|(_, m)| {
            let ours = tree.is_some_and(|t| m.tree == t)
                || (m.name == plough_fork_prims::ZYGOTE_MARKER_NAME && m.parent_pid == me);
            ours && m.is_live()
        })
        .collect();
    let sockets: Vec<String> = read_markers(&default_runtime_dir())
        .into_iter()
        .filter(|(_, m)| tree.is_some_and(|t| m.tree == t))
        .filter_map(|(_, m)| m.addr.strip_prefix("uds://").map(str::to_owned))
        .filter(|path| std::path::Path::new(path).exists())
        .collect();
    assert!(
        left.is_empty() && sockets.is_empty(),
        "plough::testing: the tree left {} live process(es) {:?} and socket file(s) {sockets:?}",
        left.len(),
        left.iter().map(|(_, m)| format!("{}@{}", m.name, m.pid)).collect::<Vec<_>>(),
    );
}
