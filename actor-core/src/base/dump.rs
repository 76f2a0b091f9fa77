//! SIGUSR1 task-tree dumps: what this actor is doing, without stopping it.
//!
//! Every served call, call in flight, context and stream registers itself in a
//! process-wide table while it lives (one mutex insert and remove: nothing runs until a
//! dump is asked for). On SIGUSR1 the actor renders the table — kind, cid, peer,
//! function, state, age — plus its children (pid, spawn method), writes it to stderr and
//! to two files in `<runtime dir>/dumps/<tree uuid>/` (the first line on stderr names
//! them, so the dump is readable even when stderr is captured or gone), then relays
//! SIGUSR1 to every child: one `kill -USR1 <root>` dumps the whole tree, parent first.
//!
//! # Files
//!
//! Dump number `seq` of actor `name@pid` (1, 2, ... in that process) is
//! `<name>@<pid>.<seq>.dump` (the text) and `<name>@<pid>.<seq>.json` (the same, for
//! tools). Only the last [`DUMPS_KEPT`] dumps of each actor are kept: writing a new one
//! removes the older ones. The tree's directory goes when its root's tree ends (after
//! every actor of it was reaped), so a finished program leaves no dump behind; copy a
//! dump you want to keep while the tree runs.
//!
//! # JSON shape (version 1)
//!
//! One object; fields are only ever added (a new `version` would mean a change):
//!
//! ```text
//! {
//!   "format": "plough-task-dump", "version": 1,
//!   "actor": "worker@4242",            // name@pid
//!   "name": "worker", "pid": 4242,
//!   "tree": "<uuid of the tree's root>",
//!   "seq": 3,                          // this actor's dump number
//!   "taken_unix_ms": 1764600000000,
//!   "tasks": [                         // oldest first
//!     { "kind": "serving" | "calling" | "context" | "stream",
//!       "cid": 7, "function": "add", "peer": "root@4241",
//!       "state": "running", "age_s": 1.25 }
//!   ],
//!   "children": [
//!     { "actor": "sleeper0@4243", "pid": 4243, "method": "zygote",
//!       "state": "alive", "age_s": 0.5 }
//!   ]
//! }
//! ```
//!
//! The table is one per process (one actor per process). Its lock is taken across every
//! fork by a fork hook (see `plough-spawn-backends`), so a forked child never inherits it
//! held; the child clears the parent's entries before its actor starts.

use super::sync::LockExt;
use plough_ipc_wire::msg::Aid;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What a table entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// A call this actor serves.
    Serving,
    /// A call this actor made and waits on.
    Calling,
    /// A context (either side).
    Context,
    /// A stream (either side).
    Stream,
    /// A child actor process.
    Child {
        /// Its pid.
        pid: u32,
        /// How it was spawned.
        method: String,
    },
}

/// Sends SIGUSR1 to a child through its own handle (pidfd: never a recycled pid).
pub(crate) type Relay = std::sync::Arc<dyn Fn() + Send + Sync>;

/// A text of a task entry, kept as it was given and rendered only when a dump is taken:
/// registering a task (every call, on both sides) formats and allocates nothing for it.
#[derive(Debug, Clone)]
pub(crate) enum Label {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
    /// Shared with the connection or the call: registering copies no identity.
    Actor(Arc<Aid>),
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Static(s) => f.pad(s),
            Label::Shared(s) => f.pad(s),
            Label::Owned(s) => f.pad(s),
            Label::Actor(a) => f.pad(&a.to_string()),
        }
    }
}

impl From<&'static str> for Label {
    fn from(s: &'static str) -> Self {
        Label::Static(s)
    }
}

impl From<Arc<str>> for Label {
    fn from(s: Arc<str>) -> Self {
        Label::Shared(s)
    }
}

impl From<String> for Label {
    fn from(s: String) -> Self {
        Label::Owned(s)
    }
}

impl From<Arc<Aid>> for Label {
    fn from(a: Arc<Aid>) -> Self {
        Label::Actor(a)
    }
}

#[derive(Clone)]
struct Entry {
    kind: TaskKind,
    cid: u64,
    peer: Label,
    function: Label,
    state: Label,
    since: Instant,
    relay: Option<Relay>,
    /// When it was registered, among all entries of this process: the order of a dump.
    seq: u64,
}

/// The entries of the process, in a slab: registering and removing one (every call, on
/// both sides) is a push and a pop, not a tree insert and remove.
struct Table(slab::Slab<Entry>);

/// An entry of the table: its slot, and its `seq` (a slot is reused once freed; a guard
/// only ever touches its own entry).
#[derive(Debug, Clone, Copy)]
struct Id {
    key: usize,
    seq: u64,
}

impl Table {
    fn insert(&mut self, e: Entry) -> Id {
        let seq = e.seq;
        Id { key: self.0.insert(e), seq }
    }

    fn get_mut(&mut self, id: Id) -> Option<&mut Entry> {
        self.0.get_mut(id.key).filter(|e| e.seq == id.seq)
    }

    fn remove(&mut self, id: Id) {
        if self.get_mut(id).is_some() {
            self.0.remove(id.key);
        }
    }

    /// Empties the table without dropping its entries (see [`fork_child`]).
    fn forget_all(&mut self) {
        std::mem::forget(std::mem::take(&mut self.0));
    }

    /// Every entry, oldest first.
    fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.0.iter().map(|(_, e)| e.clone()).collect();
        all.sort_by_key(|e| e.seq);
        all
    }
}

static TABLE: Mutex<Table> = Mutex::new(Table(slab::Slab::new()));
static NEXT: AtomicU64 = AtomicU64::new(1);

fn table() -> MutexGuard<'static, Table> {
    TABLE.locked()
}

/// A live entry of the task table; removed when dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard {
    id: Id,
}

impl TaskGuard {
    /// Registers a task.
    pub(crate) fn new(
        kind: TaskKind,
        cid: u64,
        peer: impl Into<Label>,
        function: impl Into<Label>,
        state: impl Into<Label>,
    ) -> Self {
        let e = Entry {
            kind,
            cid,
            peer: peer.into(),
            function: function.into(),
            state: state.into(),
            since: Instant::now(),
            relay: None,
            seq: NEXT.fetch_add(1, Ordering::Relaxed),
        };
        TaskGuard { id: table().insert(e) }
    }

    /// Registers a child actor process; `relay` forwards SIGUSR1 to it.
    pub(crate) fn child(
        name: impl ToString,
        pid: u32,
        method: impl ToString,
        relay: Relay,
    ) -> Self {
        let g = TaskGuard::new(
            TaskKind::Child { pid, method: method.to_string() },
            0,
            name.to_string(),
            "",
            "alive",
        );
        if let Some(e) = table().get_mut(g.id) {
            e.relay = Some(relay);
        }
        g
    }

    /// Updates what the task is waiting for.
    pub(crate) fn set_state(&self, state: impl Into<Label>) {
        let state = state.into();
        if let Some(e) = table().get_mut(self.id) {
            e.state = state;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        table().remove(self.id);
    }
}

thread_local! {
    static HELD: std::cell::RefCell<Option<MutexGuard<'static, Table>>> = const { std::cell::RefCell::new(None) };
}

/// Fork hook, before `fork`: holds the table's lock on the forking thread.
pub(crate) fn fork_prepare() {
    let g = table();
    HELD.with(|h| *h.borrow_mut() = Some(g));
}

/// Fork hook, in the parent after `fork`.
pub(crate) fn fork_parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

/// Fork hook, in the child: releases the lock and forgets the parent's tasks (and its
/// dump count: the child's first dump is number 1).
///
/// The parent's entries are leaked, not dropped: dropping them would write to every page
/// they share with the parent (reference counts, the allocator's lists) and so copy each
/// of those pages, for a table that grows with the parent's children and calls. Nothing
/// in them is the child's to release.
pub(crate) fn fork_child() {
    SEQ.store(1, Ordering::Relaxed);
    HELD.with(|h| {
        if let Some(mut g) = h.borrow_mut().take() {
            g.forget_all();
        }
    });
}

/// Forwards SIGUSR1 to every child in the table (after the lock is released).
pub(crate) fn relay_to_children() {
    let relays: Vec<Relay> = table().0.iter().filter_map(|(_, e)| e.relay.clone()).collect();
    for r in relays {
        r();
    }
}

/// Renders the task tree of this actor.
pub(crate) fn render(actor: &str) -> String {
    let now = Instant::now();
    let entries: Vec<Entry> = table().entries();
    let mut out = String::new();
    let _ = writeln!(out, "task tree of {actor} ({} entries)", entries.len());
    let section = |out: &mut String, title: &str, pick: &dyn Fn(&TaskKind) -> bool| {
        let rows: Vec<&Entry> = entries.iter().filter(|e| pick(&e.kind)).collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "  {title}:");
        for e in rows {
            let age = now.duration_since(e.since).as_secs_f64();
            let _ = writeln!(
                out,
                "    cid {:<6} {:<20} peer {:<24} {:<22} age {age:>8.3}s",
                e.cid, e.function, e.peer, e.state
            );
        }
    };
    section(&mut out, "serving", &|k| *k == TaskKind::Serving);
    section(&mut out, "waiting on", &|k| *k == TaskKind::Calling);
    section(&mut out, "contexts", &|k| *k == TaskKind::Context);
    section(&mut out, "streams", &|k| *k == TaskKind::Stream);
    let children: Vec<&Entry> =
        entries.iter().filter(|e| matches!(e.kind, TaskKind::Child { .. })).collect();
    if !children.is_empty() {
        let _ = writeln!(out, "  children:");
        for e in children {
            if let TaskKind::Child { pid, method } = &e.kind {
                let age = now.duration_since(e.since).as_secs_f64();
                let _ = writeln!(
                    out,
                    "    {:<28} pid {pid:<8} {method:<24} {:<12} age {age:>8.3}s",
                    e.peer, e.state
                );
            }
        }
    }
    out
}

/// How many SIGUSR1 task dumps of each actor stay on disk: writing dump `n` removes dump
/// `n - DUMPS_KEPT` and older (both their text and JSON files). The files, their JSON
/// shape and their lifetime are described in the guide's troubleshooting page
/// (`docs/troubleshooting.md`, "Task dumps").
pub const DUMPS_KEPT: u64 = 8;

/// One task of a JSON dump (see the module docs for the shape).
#[derive(Debug, serde::Serialize)]
struct JsonTask {
    kind: &'static str,
    cid: u64,
    function: String,
    peer: String,
    state: String,
    age_s: f64,
}

/// One child of a JSON dump.
#[derive(Debug, serde::Serialize)]
struct JsonChild<'a> {
    actor: String,
    pid: u32,
    method: &'a str,
    state: String,
    age_s: f64,
}

/// A JSON dump (version 1, see the module docs).
#[derive(Debug, serde::Serialize)]
struct JsonDump<'a> {
    format: &'static str,
    version: u32,
    actor: String,
    name: &'a str,
    pid: u32,
    tree: &'a str,
    seq: u64,
    taken_unix_ms: u64,
    tasks: Vec<JsonTask>,
    children: Vec<JsonChild<'a>>,
}

/// Renders the task table as a JSON dump.
fn render_json(who: &Who<'_>, seq: u64) -> String {
    let now = Instant::now();
    let entries: Vec<Entry> = table().entries();
    let age = |e: &Entry| now.duration_since(e.since).as_secs_f64();
    let mut tasks = Vec::new();
    let mut children = Vec::new();
    for e in &entries {
        let kind = match &e.kind {
            TaskKind::Serving => "serving",
            TaskKind::Calling => "calling",
            TaskKind::Context => "context",
            TaskKind::Stream => "stream",
            TaskKind::Child { pid, method } => {
                children.push(JsonChild {
                    actor: e.peer.to_string(),
                    pid: *pid,
                    method,
                    state: e.state.to_string(),
                    age_s: age(e),
                });
                continue;
            }
        };
        tasks.push(JsonTask {
            kind,
            cid: e.cid,
            function: e.function.to_string(),
            peer: e.peer.to_string(),
            state: e.state.to_string(),
            age_s: age(e),
        });
    }
    let taken_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let dump = JsonDump {
        format: "plough-task-dump",
        version: 1,
        actor: format!("{}@{}", who.name, std::process::id()),
        name: who.name,
        pid: std::process::id(),
        tree: who.tree,
        seq,
        taken_unix_ms,
        tasks,
        children,
    };
    // Strings, numbers and arrays of them: serializing cannot fail.
    serde_json::to_string_pretty(&dump).unwrap_or_default() + "\n"
}

/// The actor a dump is of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    /// Its name.
    pub(crate) name: &'a str,
    /// Its log label, `name@pid method` (the text dump's title).
    pub(crate) label: &'a str,
    /// Its tree's uuid (the root's).
    pub(crate) tree: &'a str,
}

/// This process's dump counter (the `seq` of the files).
static SEQ: AtomicU64 = AtomicU64::new(1);

/// Where the dumps of tree `tree` go: `<runtime dir>/dumps/<tree>`.
pub(crate) fn tree_dir(tree: &str) -> std::path::PathBuf {
    plough_fork_prims::marker::default_runtime_dir().join("dumps").join(tree)
}

/// The files written by one [`dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DumpFiles {
    /// The text form.
    pub(crate) text: std::path::PathBuf,
    /// The JSON form.
    pub(crate) json: std::path::PathBuf,
}

/// Renders the dump, writes it to stderr (the first line names the files) and to this
/// actor's next pair of dump files, and removes its dumps older than the last
/// [`DUMPS_KEPT`].
///
/// # Errors
///
/// The dump directory or a file cannot be written (stderr still gets the dump).
pub(crate) fn dump(who: &Who<'_>) -> std::io::Result<DumpFiles> {
    use std::io::Write as _;
    let dumps = plough_fork_prims::marker::default_runtime_dir().join("dumps");
    let dir = dumps.join(who.tree);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let stem = format!("{}@{}", who.name, std::process::id());
    let files = DumpFiles {
        text: dir.join(format!("{stem}.{seq}.dump")),
        json: dir.join(format!("{stem}.{seq}.json")),
    };
    let body = render(who.label);
    let text = format!(
        "plough task dump (also in {} and {})\n{body}",
        files.text.display(),
        files.json.display()
    );
    let _ = std::io::stderr().write_all(text.as_bytes());
    plough_fork_prims::marker::ensure_private_dir(&dumps)?;
    plough_fork_prims::marker::ensure_private_dir(&dir)?;
    // The ones this dump pushes out go first: once dump `seq` is there, no more than
    // DUMPS_KEPT of this actor's are.
    remove_older(&dir, &stem, seq);
    for (path, content) in [(&files.text, text), (&files.json, render_json(who, seq))] {
        // Written aside and renamed: a reader never sees half a dump.
        let tmp = dir.join(format!(".{stem}.{seq}.tmp"));
        let mut f =
            std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&tmp)?;
        f.write_all(content.as_bytes())?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(files)
}

/// Removes the dumps of `stem` (`name@pid`) in `dir` numbered `seq - DUMPS_KEPT` or lower.
fn remove_older(dir: &std::path::Path, stem: &str, seq: u64) {
    let Some(oldest_kept) = seq.checked_sub(DUMPS_KEPT - 1) else { return };
    let prefix = format!("{stem}.");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let number = rest.strip_suffix(".dump").or_else(|| rest.strip_suffix(".json"));
        if number.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n < oldest_kept) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes tree `tree`'s dumps (its root calls it when the tree has ended: every actor of
/// it is reaped, none writes there any more).
pub(crate) fn remove_tree(tree: &str) {
    let dir = tree_dir(tree);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the tree's task dumps")
        }
    }
}

/// Whether dumps are enabled: `PLOUGH_TASK_DUMP=0` turns them off. Read once per process
/// (see [`fork_hooks`](super::fork_hooks::fork_hooks): a forked child never reads the
/// environment).
pub(crate) fn enabled_by_env() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var(super::names::TASK_DUMP_ENV).map_or(true, |v| v.trim() != "0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_guard() {
        let g = TaskGuard::new(TaskKind::Serving, 7, "root@1", "add", "running");
        let relayed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = relayed.clone();
        let c = TaskGuard::child(
            "w@42",
            42,
            "exec",
            std::sync::Arc::new(move || r2.store(true, Ordering::SeqCst)),
        );
        g.set_state("waiting for its nursery");
        let text = render("me@2");
        assert!(
            text.contains("serving:")
                && text.contains("cid 7")
                && text.contains("waiting for its nursery"),
            "{text}"
        );
        assert!(text.contains("pid 42"), "{text}");
        relay_to_children();
        assert!(relayed.load(Ordering::SeqCst));
        drop(g);
        drop(c);
        let text = render("me@2");
        assert!(!text.contains("cid 7") && !text.contains("pid 42"), "{text}");
    }

    #[test]
    fn a_forked_childs_table_forgets_its_parents_entries_without_dropping_them() {
        // Dropping them in a child would write to pages it shares with its parent.
        let shared: Arc<str> = Arc::from("peer@1");
        let mut t = Table(slab::Slab::new());
        let id = t.insert(Entry {
            kind: TaskKind::Calling,
            cid: 5,
            peer: Label::Shared(Arc::clone(&shared)),
            function: Label::Static("f"),
            state: Label::Static("waiting"),
            since: Instant::now(),
            relay: None,
            seq: NEXT.fetch_add(1, Ordering::Relaxed),
        });
        t.forget_all();
        assert!(t.entries().is_empty() && t.get_mut(id).is_none());
        assert_eq!(Arc::strong_count(&shared), 2, "the entry was leaked, not dropped");
    }

    #[test]
    fn an_id_touches_only_its_own_entry() {
        // The table of a forked child starts empty while its parent's guards are copied
        // in its memory: such a stale id finds its slot reused by a new entry.
        let entry = |cid| Entry {
            kind: TaskKind::Calling,
            cid,
            peer: Label::Static("p@1"),
            function: Label::Static("f"),
            state: Label::Static("waiting"),
            since: Instant::now(),
            relay: None,
            seq: NEXT.fetch_add(1, Ordering::Relaxed),
        };
        let mut t = Table(slab::Slab::new());
        let stale = t.insert(entry(901));
        t.forget_all();
        let fresh = t.insert(entry(902));
        let later = t.insert(entry(903));
        assert_eq!(stale.key, fresh.key, "the slot is reused");
        assert!(t.get_mut(stale).is_none());
        t.remove(stale);
        let cids: Vec<u64> = t.entries().iter().map(|e| e.cid).collect();
        assert_eq!(cids, [902, 903], "untouched, oldest first");
        t.remove(fresh);
        t.remove(later);
        assert!(t.entries().is_empty());
    }
}
