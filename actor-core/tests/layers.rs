//! The layers of actor-core point one way: a file may import only from its own layer and
//! the layers below it. This test reads the crate's source and fails on any import that
//! runs back up, so the order below is the one place it is written down.
//!
//! A file's layer is the first component of its path under `src/` (`calls.rs` and
//! `calls/…` are the calls layer). What counts as an import:
//! * in code: every `crate::<layer>` path, every member of a `use crate::{…}` group, and
//!   `crate::<item>` through the crate root (root re-exports would hide which layer an item
//!   comes from, so code must name the layer), `super::super` (which leaves a layer),
//!   and `super::…` in a layer's root file (`calls.rs`, whose `super` is the crate root);
//!   an inherent method a higher layer defines on a lower type (`Actor::nursery`, in
//!   supervision) needs no import and is not seen here: it is called from above only;
//! * in comments (doc links): `crate::<layer>` naming a higher layer (links through the
//!   root re-exports, `crate::Actor`, are fine there).
//!
//! `lib.rs` re-exports from every layer and is exempt.

use std::path::{Path, PathBuf};

/// Bottom to top.
const LAYERS: [&str; 7] =
    ["base", "connection", "calls", "registrar", "serving", "supervision", "runtime"];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// One import that runs the wrong way.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    what: String,
}

/// Code and comments of one source text, as two texts of the same lines: string literals
/// blanked in both, comments removed from the code and kept (alone) in the comments.
fn split_code_and_comments(text: &str) -> (Vec<String>, Vec<String>) {
    let mut code = Vec::new();
    let mut comments = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let (mut c, mut k) = (String::new(), String::new());
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut in_str = false;
        while i < chars.len() {
            let ch = chars[i];
            let next = chars.get(i + 1).copied();
            if in_block {
                if ch == '*' && next == Some('/') {
                    in_block = false;
                    i += 2;
                } else {
                    k.push(ch);
                    i += 1;
                }
                continue;
            }
            if in_str {
                if ch == '\\' {
                    i += 2;
                } else {
                    if ch == '"' {
                        in_str = false;
                        c.push('"');
                    }
                    i += 1;
                }
                continue;
            }
            match (ch, next) {
                ('/', Some('/')) => {
                    k.extend(&chars[i..]);
                    break;
                }
                ('/', Some('*')) => {
                    in_block = true;
                    i += 2;
                }
                ('"', _) => {
                    in_str = true;
                    c.push('"');
                    i += 1;
                }
                // A char literal such as '"' must not open a string.
                ('\'', _) if chars.get(i + 2) == Some(&'\'') => {
                    c.push_str("' '");
                    i += 3;
                }
                _ => {
                    c.push(ch);
                    i += 1;
                }
            }
        }
        code.push(c);
        comments.push(k);
    }
    (code, comments)
}

/// The identifiers that follow `crate::` in `line`, with the members of `crate::{…}`
/// groups (which may span lines: `rest` is the text after this line).
fn crate_paths(line: &str, rest: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = line[from..].find("crate::") {
        let start = from + at;
        // `plough_actor_core::` or `my_crate::` are not `crate::`.
        let prev = line[..start].chars().next_back();
        from = start + "crate::".len();
        if prev.is_some_and(|p| p.is_alphanumeric() || p == '_') {
            continue;
        }
        let tail = &line[from..];
        if let Some(group_tail) = tail.strip_prefix('{') {
            let mut group = group_tail.to_owned();
            for more in rest {
                if group.contains('}') {
                    break;
                }
                group.push(' ');
                group.push_str(more);
            }
            let group = group.split('}').next().unwrap_or("");
            // Top-level members only: `a::{x, y}, b` → a, b.
            let mut depth = 0;
            let mut member = String::new();
            let mut members = Vec::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => members.push(std::mem::take(&mut member)),
                    _ if depth == 0 => member.push(ch),
                    _ => {}
                }
            }
            members.push(member);
            for m in members {
                let head: String =
                    m.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !head.is_empty() {
                    out.push(head);
                }
            }
        } else {
            let head: String =
                tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !head.is_empty() {
                out.push(head);
            }
        }
    }
    out
}

/// Every violation in one file of layer `layer`.
fn check_file(file: &str, layer: &str, text: &str) -> Vec<Violation> {
    let own = rank(layer).unwrap_or_else(|| panic!("{file}: `{layer}` is not a layer"));
    let (mut code, comments) = split_code_and_comments(text);
    // In a layer's own root file (`calls.rs`), `super` is the crate root.
    if !file.contains('/') {
        for line in &mut code {
            *line = line.replace("super::", "crate::");
        }
    }
    let mut out = Vec::new();
    let mut report = |line: usize, what: String| {
        out.push(Violation { file: file.to_owned(), line: line + 1, what });
    };
    for (n, line) in code.iter().enumerate() {
        if line.contains("super::super") {
            report(n, "`super::super` leaves the layer: name the layer with `crate::`".into());
        }
        for head in crate_paths(line, &code[n + 1..]) {
            match rank(&head) {
                Some(r) if r > own => {
                    report(n, format!("{layer} imports from the higher layer `{head}`"))
                }
                Some(_) => {}
                None => report(
                    n,
                    format!("`crate::{head}` goes through the crate root: name its layer"),
                ),
            }
        }
    }
    for (n, line) in comments.iter().enumerate() {
        for head in crate_paths(line, &[]) {
            if rank(&head).is_some_and(|r| r > own) {
                report(n, format!("a comment of {layer} links into the higher layer `{head}`"));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_imports_from_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut seen_layers = std::collections::BTreeSet::new();
    for path in &files {
        let rel = path.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component").as_os_str();
        let first = first.to_str().expect("utf-8 path");
        let layer = first.strip_suffix(".rs").unwrap_or(first);
        if layer == "lib" {
            continue;
        }
        assert!(rank(layer).is_some(), "{}: not inside a layer (one of {LAYERS:?})", rel.display());
        seen_layers.insert(layer.to_owned());
        let text = std::fs::read_to_string(path).expect("read source");
        violations.extend(check_file(&rel.display().to_string(), layer, &text));
    }
    assert_eq!(seen_layers.len(), LAYERS.len(), "every layer has code: {seen_layers:?}");
    let report: Vec<String> =
        violations.iter().map(|v| format!("{}:{}: {}", v.file, v.line, v.what)).collect();
    assert!(report.is_empty(), "imports that run back up:\n{}", report.join("\n"));
}

#[test]
fn the_checker_catches_what_runs_back_up() {
    let upward = "use crate::base::error::ActorError;\nuse crate::serving::actor::Actor;\n";
    assert_eq!(
        check_file("calls/x.rs", "calls", upward),
        [Violation {
            file: "calls/x.rs".into(),
            line: 2,
            what: "calls imports from the higher layer `serving`".into()
        }]
    );
    let group =
        "use crate::{\n    base::names,\n    supervision::nursery::{Nursery, RunHandle},\n};\n";
    assert_eq!(check_file("serving/y.rs", "serving", group).len(), 1, "a member of a group");
    let root = "fn f() -> crate::Actor { todo!() }\n";
    assert_eq!(check_file("calls/z.rs", "calls", root).len(), 1, "through the root");
    let from_root_file = "use super::serving::actor::Actor;\n";
    assert_eq!(check_file("calls.rs", "calls", from_root_file).len(), 1, "super in a layer root");
    assert_eq!(check_file("calls/p.rs", "calls", "use super::portal::Portal;\n"), []);
    let escape = "use super::super::runtime::root;\n";
    assert_eq!(check_file("base/w.rs", "base", escape).len(), 1, "super::super");
    let link = "//! See [`Nursery`](crate::supervision::nursery::Nursery).\n";
    assert_eq!(check_file("calls/v.rs", "calls", link).len(), 1, "a doc link upward");
    let fine = "//! [`Actor`](crate::Actor) via the root is fine in a doc.\n\
                use crate::base::names;\n\
                const S: &str = \"crate::runtime in a string\";\n\
                use plough_actor_core::runtime;\n";
    assert_eq!(check_file("calls/u.rs", "calls", fine), []);
}
