//! `plough ps`: the live actors of a tree, as its registrar knows them.
//!
//! The library behind the `plough` command of this package (`plough ps [--registry ADDR]
//! [--json]`): [`query`] a registrar without registering anything, then render the
//! entries as a tree ([`render_tree`]) or as JSON ([`render_json`]). It lives apart from
//! the `plough` facade so that a program using plough compiles no CLI parser or JSON
//! writer.

pub mod ca;

use plough_actor_core::ActorError;
use plough_actor_core::{ActorEntry, list_registry};
use plough_ipc_wire::Address;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The live actors registered at `registry` (without registering anything).
///
/// # Errors
///
/// A clear [`ActorError::TransportClosed`] when no plough registrar answers there.
pub async fn query(registry: &Address) -> Result<Vec<ActorEntry>, ActorError> {
    list_registry(registry, Duration::from_secs(3)).await
}

/// Renders the entries as a tree (children indented under their parent): name@pid,
/// method, address, uptime, short uuid.
pub fn render_tree(entries: &[ActorEntry], now_ms: u64) -> String {
    let mut children: BTreeMap<Option<[u8; 16]>, Vec<&ActorEntry>> = BTreeMap::new();
    let known: std::collections::HashSet<[u8; 16]> = entries.iter().map(|e| e.aid.uuid.0).collect();
    for e in entries {
        // An entry whose parent is not registered (another tree's child, or a parent that
        // just left) is shown at the top level.
        let parent = e.parent.as_ref().map(|p| p.uuid.0).filter(|u| known.contains(u));
        children.entry(parent).or_default().push(e);
    }
    for v in children.values_mut() {
        v.sort_by(|a, b| (a.started_ms, &a.aid.name).cmp(&(b.started_ms, &b.aid.name)));
    }
    let mut out = String::new();
    let _ =
        writeln!(out, "{:<40} {:<24} {:<40} {:>9}  UUID", "ACTOR", "METHOD", "ADDRESS", "UPTIME");
    fn walk(
        out: &mut String,
        children: &BTreeMap<Option<[u8; 16]>, Vec<&ActorEntry>>,
        key: Option<[u8; 16]>,
        depth: usize,
        now_ms: u64,
    ) {
        for e in children.get(&key).into_iter().flatten() {
            let name = format!("{}{}", "  ".repeat(depth), e.aid);
            let up = now_ms.saturating_sub(e.started_ms) as f64 / 1000.0;
            let uuid = e.aid.uuid.to_string();
            let _ = writeln!(
                out,
                "{name:<40} {:<24} {:<40} {up:>8.1}s  {}",
                e.method,
                e.addr,
                &uuid[..8]
            );
            walk(out, children, Some(e.aid.uuid.0), depth + 1, now_ms);
        }
    }
    walk(&mut out, &children, None, 0, now_ms);
    out
}

/// Renders the entries as JSON: an array of
/// `{name, pid, uuid, method, addr, parent, parent_uuid, started_ms, uptime_s}`.
///
/// # Panics
///
/// Never: the values always serialize.
pub fn render_json(entries: &[ActorEntry], now_ms: u64) -> String {
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.aid.name,
                "pid": e.aid.pid,
                "uuid": e.aid.uuid.to_string(),
                "method": e.method,
                "addr": e.addr,
                "parent": e.parent.as_ref().map(|p| p.to_string()),
                "parent_uuid": e.parent.as_ref().map(|p| p.uuid.to_string()),
                "started_ms": e.started_ms,
                "uptime_s": now_ms.saturating_sub(e.started_ms) as f64 / 1000.0,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).expect("values serialize")
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
