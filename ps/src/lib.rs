//! `plough ps`: the live actors of a tree, as its registrar knows them.
//!
//! The library behind the `plough` command of this package (`plough ps [--registry ADDR]
//! [--json] [--watch [SECS]]`): [`query`] a registrar without registering anything, then
//! render the entries as a table indented as a tree ([`render_table`], [`render_tree`])
//! or as JSON ([`render_json`]). It lives apart from
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

/// The narrowest the ADDRESS column gets when a table is fitted to a width: what does
/// not fit then (names are never cut) makes the lines longer than the width.
pub const ADDRESS_MIN_WIDTH: u16 = 16;

/// How [`render_table`] lays a table out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// The width to fit (a terminal's): columns other than the actor's name and uuid wrap
    /// to fit it. `None`: no limit, one line per actor (a pipe, a file).
    pub width: Option<u16>,
    /// ANSI colour (bold header, dimmed uuid): for a terminal only.
    pub colour: bool,
}

impl Layout {
    /// The layout for standard output: its terminal's width (or `COLUMNS`, when set to a
    /// number) and colour only when it is a terminal and `NO_COLOR` is unset or empty.
    pub fn for_stdout() -> Layout {
        use std::io::IsTerminal as _;
        let tty = std::io::stdout().is_terminal();
        let columns = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<u16>().ok());
        let width = columns.or_else(|| if tty { comfy_table::Table::new().width() } else { None });
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Layout { width, colour: tty && !no_color }
    }
}

/// Renders the entries as a tree (children indented under their parent) with no width
/// limit and no colour: name@pid, method, address, uptime, short uuid.
pub fn render_tree(entries: &[ActorEntry], now_ms: u64) -> String {
    render_table(entries, now_ms, Layout::default())
}

/// Renders the entries as a table, children indented under their parent: ACTOR
/// (name@pid), METHOD, ADDRESS, UPTIME, UUID (its first 8 hex digits).
///
/// A name is never cut or wrapped, however long; with a [`Layout::width`] the address
/// column wraps to fit it (down to [`ADDRESS_MIN_WIDTH`]; a width too narrow even for
/// that gets longer lines). Lines carry no trailing blanks.
pub fn render_table(entries: &[ActorEntry], now_ms: u64, layout: Layout) -> String {
    use comfy_table::{Attribute, Cell, ColumnConstraint, ContentArrangement, Table};

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
    let mut rows = Vec::new();
    fn walk(
        rows: &mut Vec<[String; 5]>,
        children: &BTreeMap<Option<[u8; 16]>, Vec<&ActorEntry>>,
        key: Option<[u8; 16]>,
        depth: usize,
        now_ms: u64,
    ) {
        for e in children.get(&key).into_iter().flatten() {
            let up = now_ms.saturating_sub(e.started_ms) as f64 / 1000.0;
            let uuid = e.aid.uuid.to_string();
            rows.push([
                format!("{}{}", "  ".repeat(depth), e.aid),
                e.method.clone(),
                e.addr.clone(),
                format!("{up:.1}s"),
                uuid[..8].to_owned(),
            ]);
            walk(rows, children, Some(e.aid.uuid.0), depth + 1, now_ms);
        }
    }
    walk(&mut rows, &children, None, 0, now_ms);

    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    if layout.colour {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    match layout.width {
        Some(w) => {
            table.set_width(w).set_content_arrangement(ContentArrangement::Dynamic);
        }
        None => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    let header = ["ACTOR", "METHOD", "ADDRESS", "UPTIME", "UUID"];
    table.set_header(header.map(|h| {
        let c = Cell::new(h);
        if layout.colour { c.add_attribute(Attribute::Bold) } else { c }
    }));
    for [name, method, addr, up, uuid] in rows {
        let uuid = Cell::new(uuid);
        table.add_row([
            Cell::new(name),
            Cell::new(method),
            Cell::new(addr),
            Cell::new(up).set_alignment(comfy_table::CellAlignment::Right),
            if layout.colour { uuid.add_attribute(Attribute::Dim) } else { uuid },
        ]);
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == header.len() { 0 } else { 2 }));
        // Names and uuids are what a reader greps for: never wrapped. The address wraps,
        // but never narrower than its header.
        if [0, 1, 3, 4].contains(&i) {
            column.set_constraint(ColumnConstraint::ContentWidth);
        } else {
            column.set_constraint(ColumnConstraint::LowerBoundary(comfy_table::Width::Fixed(
                ADDRESS_MIN_WIDTH,
            )));
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use plough_ipc_wire::{Aid, Uuid};

    fn aid(name: &str, pid: u32) -> Aid {
        Aid { name: name.to_owned(), uuid: Uuid::new_v4(), pid }
    }

    /// A root, a child with a 90-character name and a long socket path, a grandchild.
    fn entries() -> Vec<ActorEntry> {
        let root = aid("root", 100);
        let long = aid(&"a-very-long-actor-name-".repeat(4), 101);
        let grand = aid("grandchild", 102);
        let entry = |a: &Aid, parent: Option<&Aid>, started_ms| ActorEntry {
            aid: a.clone(),
            addr: format!("uds:///run/user/1000/plough/{}@{}.sock", a.name, a.pid),
            parent: parent.cloned(),
            method: if parent.is_some() { "zygote".into() } else { "root".into() },
            started_ms,
        };
        vec![
            entry(&root, None, 1_000),
            entry(&long, Some(&root), 2_000),
            entry(&grand, Some(&long), 3_000),
        ]
    }

    #[test]
    fn long_names_stay_whole_on_one_line_and_children_are_indented() {
        let e = entries();
        let text = render_tree(&e, 10_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "a header and one line per actor:\n{text}");
        assert!(lines[0].starts_with("ACTOR") && lines[0].ends_with("UUID"), "{text}");
        assert!(lines[1].starts_with("root@100 "), "{text}");
        assert!(lines[2].starts_with(&format!("  {}@101 ", e[1].aid.name)), "{text}");
        assert!(lines[3].starts_with("    grandchild@102 "), "{text}");
        assert!(lines[1].contains(&e[0].addr) && lines[1].contains("9.0s"), "{text}");
        assert!(lines.iter().all(|l| l == &l.trim_end()), "trailing blanks:\n{text}");
        assert!(!text.contains('\x1b'), "colour without a terminal:\n{text}");
    }

    #[test]
    fn a_width_is_fitted_by_wrapping_addresses_never_names() {
        let e = entries();
        let width = 140;
        let text = render_table(&e, 10_000, Layout { width: Some(width), colour: false });
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= usize::from(width), "{widest} > {width}:\n{text}");
        let name = format!("  {}@101 ", e[1].aid.name);
        assert!(text.lines().any(|l| l.starts_with(&name)), "the long name is cut:\n{text}");
        // Without the limit that line is wider than the width: something had to wrap.
        let free = render_tree(&e, 10_000);
        assert!(free.lines().any(|l| l.chars().count() > usize::from(width)), "{free}");
        assert!(text.lines().count() > free.lines().count(), "nothing wrapped:\n{text}");
    }

    #[test]
    fn colour_only_when_asked() {
        let e = entries();
        let plain = render_table(&e, 10_000, Layout { width: None, colour: false });
        let coloured = render_table(&e, 10_000, Layout { width: None, colour: true });
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(coloured.contains("\x1b[1m"), "a bold header: {coloured:?}");
        assert!(coloured.contains(&e[1].aid.name), "{coloured:?}");
    }
}
