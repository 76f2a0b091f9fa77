//! SIGUSR1 task-tree dumps: what this actor is doing, without stopping it.
//!
//! Every served call, call in flight, context and stream registers itself in a
//! process-wide table while it lives (one mutex insert and remove: nothing runs until a
//! dump is asked for). On SIGUSR1 the actor renders the table — kind, cid, peer,
//! function, state, age — plus its children (pid, spawn method), writes it to stderr and
//! appends it to `<runtime dir>/dumps/<name>@<pid>.dump` (the first line names that file,
//! so the dump is readable even when stderr is captured or gone), then relays SIGUSR1 to
//! every child: one `kill -USR1 <root>` dumps the whole tree, parent first.
//!
//! The table is one per process (one actor per process). Its lock is taken across every
//! fork by a fork hook (see `plough-spawn-backends`), so a forked child never inherits it
//! held; the child clears the parent's entries before its actor starts.

use super::sync::LockExt;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
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

#[derive(Clone)]
struct Entry {
    kind: TaskKind,
    cid: u64,
    peer: String,
    function: String,
    state: String,
    since: Instant,
    relay: Option<Relay>,
}

static TABLE: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

fn table() -> MutexGuard<'static, BTreeMap<u64, Entry>> {
    TABLE.locked()
}

/// A live entry of the task table; removed when dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard {
    id: u64,
}

impl TaskGuard {
    /// Registers a task.
    pub(crate) fn new(
        kind: TaskKind,
        cid: u64,
        peer: impl ToString,
        function: impl ToString,
        state: impl ToString,
    ) -> Self {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let e = Entry {
            kind,
            cid,
            peer: peer.to_string(),
            function: function.to_string(),
            state: state.to_string(),
            since: Instant::now(),
            relay: None,
        };
        table().insert(id, e);
        TaskGuard { id }
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
            name,
            "",
            "alive",
        );
        if let Some(e) = table().get_mut(&g.id) {
            e.relay = Some(relay);
        }
        g
    }

    /// Updates what the task is waiting for.
    pub(crate) fn set_state(&self, state: impl ToString) {
        if let Some(e) = table().get_mut(&self.id) {
            e.state = state.to_string();
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        table().remove(&self.id);
    }
}

thread_local! {
    static HELD: std::cell::RefCell<Option<MutexGuard<'static, BTreeMap<u64, Entry>>>> = const { std::cell::RefCell::new(None) };
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

/// Fork hook, in the child: releases the lock and forgets the parent's tasks.
pub(crate) fn fork_child() {
    HELD.with(|h| {
        if let Some(mut g) = h.borrow_mut().take() {
            g.clear();
        }
    });
}

/// Forwards SIGUSR1 to every child in the table (after the lock is released).
pub(crate) fn relay_to_children() {
    let relays: Vec<Relay> = table().values().filter_map(|e| e.relay.clone()).collect();
    for r in relays {
        r();
    }
}

/// Renders the task tree of this actor.
pub(crate) fn render(actor: &str) -> String {
    let now = Instant::now();
    let entries: Vec<Entry> = table().values().cloned().collect();
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

/// Renders the dump, appends it to this actor's dump file and writes it to stderr (the
/// first line names the file); returns the file's path.
///
/// # Errors
///
/// The dump directory or file cannot be written (stderr still gets the dump).
pub(crate) fn dump(actor_name: &str, actor_label: &str) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write as _;
    let dir = plough_fork_prims::marker::default_runtime_dir().join("dumps");
    let path = dir.join(format!("{actor_name}@{}.dump", std::process::id()));
    let body = render(actor_label);
    let text = format!("plough task dump (also appended to {})\n{body}", path.display());
    let _ = std::io::stderr().write_all(text.as_bytes());
    plough_fork_prims::marker::ensure_private_dir(&dir)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    f.write_all(text.as_bytes())?;
    Ok(path)
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
}
