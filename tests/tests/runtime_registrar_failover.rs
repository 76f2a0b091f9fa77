//! The registrar outlives its first owner: roots of separate programs share a registry
//! address; when the registrar's root is SIGKILLed the survivors elect a successor and
//! every live actor registers again (within 1 s: the figure is printed), with nothing of
//! the dead tree left; a lookup issued during the gap waits and succeeds; a registrar
//! restarted on the address gets every live actor back. And the default registry is per
//! user (per runtime directory): two programs with different `XDG_RUNTIME_DIR`s and
//! default settings never see each other's actors.
//!
//! Each root is a `plough_app failover NAME` program (one child `NAME-kid`) driven over
//! its stdin. The registry is chosen with `PLOUGH_REGISTRY`: a socket in a runtime
//! directory the test owns (`PLOUGH_TEST_TRANSPORT=uds`), or a loopback port the test
//! picked (tcp). Every program gets that directory as `XDG_RUNTIME_DIR`, so "nothing
//! left" is checked exactly: after the test (and the sweep of what the SIGKILLed roots
//! could not remove) no file remains under it, and no process below this one.

use plough_fork_prims::{ChildHandle, Signal};
use plough_tests::{
    OutputLines, assert_no_descendants, become_subreaper, descendants_of, reap_adopted, root_lock,
    wait_exit,
};
use std::io::Write;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
/// Bounds a root's start and each answer it gives.
const START: Duration = Duration::from_secs(20);
/// The promise: survivors find each other again within this after the registrar died.
const FAILOVER: Duration = Duration::from_secs(1);
/// What the assertions allow for it on a loaded machine (2 cores, other suites running):
/// generous, the real figure is printed.
const FAILOVER_ASSERTED: Duration = Duration::from_secs(3);

/// The registry address of one test: a socket in `dir`'s plough directory, or a free
/// loopback port.
fn registry_for(dir: &Path) -> String {
    match std::env::var("PLOUGH_TEST_TRANSPORT").as_deref() {
        Ok("uds") => format!("uds://{}", dir.join("plough").join("registry.sock").display()),
        _ => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            assert_ne!(port, plough::ipc_wire::address::DEFAULT_REGISTRY_PORT);
            format!("tcp://127.0.0.1:{port}")
        }
    }
}

/// `plough_app failover NAME` with runtime directory `rt_dir` and
/// `PLOUGH_REGISTRY=registry` (`None`: unset, the default registry); stdin and stdout piped.
fn command(name: &str, rt_dir: &Path, registry: Option<&str>) -> Command {
    let mut cmd = Command::new(APP);
    cmd.args(["failover", name])
        .env("XDG_RUNTIME_DIR", rt_dir)
        .env_remove("PLOUGH_TEST_REGISTRY")
        .env_remove(plough::REGISTRY_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(r) = registry {
        cmd.env(plough::REGISTRY_ENV, r);
    }
    cmd
}

/// One `plough_app failover NAME` root program.
struct Node {
    name: String,
    handle: ChildHandle,
    stdin: Option<ChildStdin>,
    out: OutputLines,
    kid_pid: u32,
    registrar_at_start: bool,
}

impl Node {
    /// Starts it with runtime directory `rt_dir` and `PLOUGH_REGISTRY=registry` (`None`:
    /// the default registry) and waits for `ready`.
    fn start(name: &str, rt_dir: &Path, registry: Option<&str>) -> Node {
        let mut node = Node::spawn(name, rt_dir, registry);
        node.ready();
        node
    }

    /// Starts it without waiting for `ready` (see [`Node::ready`]).
    fn spawn(name: &str, rt_dir: &Path, registry: Option<&str>) -> Node {
        let mut child =
            command(name, rt_dir, registry).spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (stdin, out) = (child.stdin.take(), OutputLines::read(child.stdout.take().unwrap()));
        let handle = ChildHandle::from_std(child).unwrap();
        handle.set_kill_on_drop(true);
        let name = name.to_owned();
        Node { name, handle, stdin, out, kid_pid: 0, registrar_at_start: false }
    }

    /// Waits for its `ready` line and reads it.
    fn ready(&mut self) {
        let ready = self.expect_line("ready ", START);
        let words: Vec<&str> = ready.split_whitespace().collect();
        assert_eq!(words[1], self.handle.pid().to_string(), "{ready}");
        self.kid_pid = words[2].parse().unwrap();
        self.registrar_at_start = words[3] == "registrar=true";
    }

    /// The next line that starts with `prefix`, waiting at most `limit`.
    fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        self.out.expect_line(prefix, limit).unwrap_or_else(|| {
            let (what, seen, exit) = (&self.name, self.out.seen(), self.handle.try_wait());
            panic!(
                "{what}: no line `{prefix}...` after {limit:?}; it printed {seen:?}; exit {exit:?}"
            )
        })
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap_or_else(|e| panic!("{}: write: {e}", self.name));
        stdin.flush().unwrap();
    }

    /// Sends `command` and returns its answer (the line starting with `answer`).
    fn ask(&mut self, command: &str, answer: &str) -> String {
        self.send(command);
        self.expect_line(answer, START)
    }

    /// The sorted names of the actors its registrar lists.
    fn list(&mut self) -> String {
        self.ask("list", "list ")
    }

    fn is_registrar(&mut self) -> bool {
        self.ask("status", "registrar=") == "registrar=true"
    }

    fn signal(&self, sig: Signal) {
        self.handle.signal(sig).unwrap_or_else(|e| panic!("{}: signal {sig:?}: {e}", self.name));
    }

    /// Asks it to quit and waits for a clean exit.
    fn quit(mut self) {
        self.send("quit");
        drop(self.stdin.take());
        let st = wait_exit(&self.handle, START);
        let _ = self.expect_line("result ok", START);
        assert!(matches!(st, Some(s) if s.code() == Some(0)), "{} exited with {st:?}", self.name);
    }

    /// SIGKILLs it; returns when, and every process it had below it (its child actor,
    /// the zygote's fork server).
    fn kill(&self) -> (Instant, Vec<u32>) {
        let below = descendants_of(self.handle.pid());
        assert!(below.contains(&self.kid_pid), "{}: {below:?}", self.name);
        self.signal(Signal::KILL);
        (Instant::now(), below)
    }

    /// Reaps it after [`Node::kill`]; what it had below it, orphaned, goes down on its
    /// own (the child actor cancels itself): reaped too (this process is a subreaper).
    fn reap_killed(self, below: &[u32]) {
        assert!(wait_exit(&self.handle, START).is_some(), "{} survived SIGKILL", self.name);
        for &pid in below {
            assert!(reap_adopted(pid, START), "{}'s orphan {pid} did not exit", self.name);
        }
    }
}

/// One test's setting: the root lock held, this process a subreaper, a runtime directory
/// of the test's own and the registry address in it.
fn scene() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir, String) {
    let g = root_lock();
    become_subreaper();
    let rt = tempfile::tempdir().unwrap();
    let registry = registry_for(rt.path());
    (g, rt, registry)
}

/// Three roots on `registry`, `alpha` (the registrar: it started first), `bravo` and
/// `charlie`, once the registrar lists all six actors.
fn three_roots(rt_dir: &Path, registry: &str) -> (Node, Node, Node) {
    let alpha = Node::start("alpha", rt_dir, Some(registry));
    assert!(alpha.registrar_at_start, "the first root becomes the registrar");
    let mut bravo = Node::start("bravo", rt_dir, Some(registry));
    let charlie = Node::start("charlie", rt_dir, Some(registry));
    assert!(!bravo.registrar_at_start && !charlie.registrar_at_start, "later roots join");
    let all = ["alpha", "alpha-kid", "bravo", "bravo-kid", "charlie", "charlie-kid"];
    until_listed(&mut bravo, &all, START);
    (alpha, bravo, charlie)
}

/// Polls `node`'s registrar (bounded) until it lists exactly `want`; returns how long
/// that took.
fn until_listed(node: &mut Node, want: &[&str], limit: Duration) -> Duration {
    let t = Instant::now();
    let want = format!("list {}", want.join(","));
    loop {
        let got = node.list();
        if got == want {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "{}'s registrar never listed `{want}`: `{got}`", node.name);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asks every one of `nodes` to quit (each must exit cleanly), then [`assert_clean`].
fn finish(rt_dir: &Path, nodes: impl IntoIterator<Item = Node>) {
    for node in nodes {
        node.quit();
    }
    assert_clean(rt_dir);
}

/// After every program exited: sweeps what the SIGKILLed ones could not remove (their
/// markers and socket files), then asserts that nothing at all is left in `rt_dir`, and
/// no process below this one.
fn assert_clean(rt_dir: &Path) {
    assert_no_descendants(Duration::from_secs(10));
    let plough_dir = rt_dir.join("plough");
    if plough_dir.exists() {
        plough_reaper::uds::sweep(&plough_dir, None, false).expect("sweep the runtime dir");
    }
    let left = plough_tests::files_left_in(rt_dir);
    assert!(left.is_empty(), "left behind in the runtime directory: {left:?}");
}

#[test]
fn when_the_registrars_root_is_killed_the_survivors_elect_a_successor_and_find_each_other() {
    let (_g, rt, registry) = scene();
    let reg = Some(registry.as_str());
    let (alpha, mut bravo, mut charlie) = three_roots(rt.path(), &registry);

    // SIGKILL the registrar's root: its tree goes, the other two find each other's
    // actors through the successor.
    let (killed, alpha_below) = alpha.kill();
    bravo.send("wait charlie-kid");
    charlie.send("wait bravo-kid");
    let b = bravo.expect_line("wait charlie-kid ", START);
    let b_at = killed.elapsed();
    let c = charlie.expect_line("wait bravo-kid ", START);
    let c_at = killed.elapsed();
    assert!(b.contains(" ok ") && c.contains(" ok "), "{b} / {c}");
    let survivors = ["bravo", "bravo-kid", "charlie", "charlie-kid"];
    let rest = until_listed(&mut bravo, &survivors, START);
    let all_back = killed.elapsed();
    until_listed(&mut charlie, &survivors, START);
    alpha.reap_killed(&alpha_below);
    eprintln!(
        "failover ({}): bravo found charlie-kid {b_at:?} after the kill, charlie found \
         bravo-kid {c_at:?} after it; all four re-registered (nothing of alpha's tree \
         listed) {all_back:?} after it ({rest:?} of polling)",
        registry.split(':').next().unwrap()
    );
    assert!(
        b_at.max(c_at) < FAILOVER_ASSERTED && all_back < FAILOVER_ASSERTED,
        "failover took {b_at:?} / {c_at:?} / {all_back:?} (promise: {FAILOVER:?})"
    );
    let (b_reg, c_reg) = (bravo.is_registrar(), charlie.is_registrar());
    assert!(b_reg != c_reg, "exactly one successor: bravo {b_reg}, charlie {c_reg}");

    // A lookup issued during the gap waits and succeeds. A fourth root joins the
    // successor; the other survivor is stopped while the successor is killed, gets its
    // `find` while its registrar link is dead, and is let go on once delta took over.
    let (successor, mut other) = if b_reg { (bravo, charlie) } else { (charlie, bravo) };
    let mut delta = Node::start("delta", rt.path(), reg);
    assert!(!delta.registrar_at_start);
    let mut four = vec![other.name.clone(), format!("{}-kid", other.name), "delta".into()];
    four.push("delta-kid".into());
    four.extend([successor.name.clone(), format!("{}-kid", successor.name)]);
    four.sort();
    until_listed(&mut delta, &four.iter().map(String::as_str).collect::<Vec<_>>(), START);
    other.signal(Signal::STOP);
    let (killed, successor_below) = successor.kill();
    let t = Instant::now();
    while !delta.is_registrar() {
        assert!(t.elapsed() < START, "delta never became the registrar");
        std::thread::sleep(Duration::from_millis(5));
    }
    let delta_took = killed.elapsed();
    other.send("find delta");
    other.signal(Signal::CONT);
    let found = other.expect_line("find delta ", START);
    assert!(found.starts_with("find delta some "), "a find during the gap: {found}");
    eprintln!(
        "delta took over {delta_took:?} after the kill; a find issued during the gap: `{found}` (ms)"
    );
    let last =
        [other.name.clone(), format!("{}-kid", other.name), "delta".into(), "delta-kid".into()];
    let mut last: Vec<&str> = last.iter().map(String::as_str).collect();
    last.sort();
    until_listed(&mut delta, &last, START);
    until_listed(&mut other, &last, START);
    successor.reap_killed(&successor_below);

    finish(rt.path(), [other, delta]);
}

/// A registrar restarted on its address — the registrar's root died, and before any
/// survivor could take over a new program's root bound the address — gets every live
/// actor back: the survivors (stopped meanwhile) and their children reconnect and
/// register again; nothing of the dead root's tree comes back.
#[test]
fn a_registrar_restarted_on_its_address_gets_every_live_actor_back() {
    let (_g, rt, registry) = scene();
    let reg = Some(registry.as_str());
    let (alpha, mut bravo, mut charlie) = three_roots(rt.path(), &registry);

    // The survivors cannot take over (stopped); their children may not (only roots bind).
    bravo.signal(Signal::STOP);
    charlie.signal(Signal::STOP);
    let (_, alpha_below) = alpha.kill();
    alpha.reap_killed(&alpha_below);
    let mut delta = Node::start("delta", rt.path(), reg);
    assert!(delta.registrar_at_start, "the restarted registrar binds the freed address");
    bravo.signal(Signal::CONT);
    charlie.signal(Signal::CONT);
    let resumed = Instant::now();
    let back = ["bravo", "bravo-kid", "charlie", "charlie-kid", "delta", "delta-kid"];
    let took = until_listed(&mut delta, &back, START);
    eprintln!(
        "restart ({}): every live actor registered again with the restarted registrar \
         {:?} after the survivors were resumed",
        registry.split(':').next().unwrap(),
        resumed.elapsed()
    );
    assert!(took < FAILOVER_ASSERTED, "took {took:?}");
    assert!(!bravo.is_registrar() && !charlie.is_registrar(), "they joined delta");
    until_listed(&mut bravo, &back, START);

    bravo.quit();
    charlie.quit();
    until_listed(&mut delta, &["delta", "delta-kid"], START);
    delta.quit();
    assert_clean(rt.path());
}

/// Two programs with default settings (no `PLOUGH_REGISTRY`) and different runtime
/// directories each become the registrar of their own: neither sees the other's actors.
#[test]
fn programs_with_different_runtime_dirs_and_default_settings_never_share_a_registrar() {
    let _g = root_lock();
    become_subreaper();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Node::start("alpha", one.path(), None);
    let mut b = Node::start("bravo", two.path(), None);
    assert!(a.registrar_at_start && b.registrar_at_start, "each is a registrar of its own");
    for (dir, node) in [(one.path(), &mut a), (two.path(), &mut b)] {
        let sock = dir.join("plough").join(plough::ipc_wire::address::REGISTRY_SOCKET);
        assert!(sock.exists(), "{}: no default registry socket at {}", node.name, sock.display());
    }
    assert_eq!(a.list(), "list alpha,alpha-kid");
    assert_eq!(b.list(), "list bravo,bravo-kid");
    assert!(a.ask("find bravo", "find bravo ").starts_with("find bravo none "));
    assert!(b.ask("find alpha-kid", "find alpha-kid ").starts_with("find alpha-kid none "));
    a.quit();
    b.quit();
    assert_clean(one.path());
    assert_clean(two.path());
}

/// A `PLOUGH_REGISTRY` that is not an address stops the root before it starts anything,
/// with an error that names the variable, the value and what is wrong with it.
#[test]
fn a_malformed_plough_registry_is_a_setup_error_naming_the_variable() {
    let (_g, rt, _) = scene();
    for (value, why) in
        [("127.0.0.1:1616", "unknown address scheme"), ("tcp://localhost:1", "bad tcp")]
    {
        let mut child = command("alpha", rt.path(), Some(value)).spawn().expect("spawn");
        let mut out = OutputLines::read(child.stdout.take().unwrap());
        let handle = ChildHandle::from_std(child).unwrap();
        handle.set_kill_on_drop(true);
        let line = out.expect_line("result ", START).expect("a result line");
        let want = format!("result err PLOUGH_REGISTRY=`{value}` is not a registry address: ");
        assert!(line.starts_with(&want) && line.contains(why), "{line}");
        let st = wait_exit(&handle, START).expect("it exits");
        assert!(st.code().is_some_and(|c| c != 0), "{st:?}");
        assert!(out.seen().iter().all(|l| !l.starts_with("ready")), "{:?}", out.seen());
    }
    assert_clean(rt.path());
}

/// The registrar's root exits cleanly (it is asked to quit): the same failover as after
/// a SIGKILL, and nothing of its tree is left listed.
#[test]
fn when_the_registrars_root_exits_cleanly_the_survivors_elect_a_successor() {
    let (_g, rt, registry) = scene();
    let (alpha, mut bravo, mut charlie) = three_roots(rt.path(), &registry);
    alpha.quit();
    let gone = Instant::now();
    let survivors = ["bravo", "bravo-kid", "charlie", "charlie-kid"];
    until_listed(&mut bravo, &survivors, START);
    until_listed(&mut charlie, &survivors, START);
    let took = gone.elapsed();
    eprintln!("clean exit: the survivors listed each other again {took:?} after alpha exited");
    assert!(took < FAILOVER_ASSERTED, "{took:?}");
    assert!(bravo.is_registrar() != charlie.is_registrar(), "exactly one successor");
    finish(rt.path(), [bravo, charlie]);
}

/// Roots started at the same moment on a free address race for it: exactly one binds
/// it (a UDS bind happens under the election lock, so no root reclaims another's fresh
/// socket as stale), the others join it, and it lists every one of them.
#[test]
fn roots_started_at_once_elect_exactly_one_registrar() {
    let (_g, rt, registry) = scene();
    let names = ["r0", "r1", "r2", "r3", "r4"];
    let mut nodes: Vec<Node> =
        names.iter().map(|n| Node::spawn(n, rt.path(), Some(&registry))).collect();
    for node in &mut nodes {
        node.ready();
    }
    let registrars: Vec<&str> =
        nodes.iter().filter(|n| n.registrar_at_start).map(|n| n.name.as_str()).collect();
    assert_eq!(registrars.len(), 1, "registrars: {registrars:?}");
    let mut all: Vec<String> =
        names.iter().flat_map(|n| [n.to_string(), format!("{n}-kid")]).collect();
    all.sort();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    for node in &mut nodes {
        until_listed(node, &all, START);
    }
    finish(rt.path(), nodes);
}
