//! The crate's modules import one way, in the order the crate docs give ("Module order"):
//! a module may use only modules listed after it.

use std::path::Path;

/// Top to bottom.
const ORDER: &[&str] = &[
    "drain",
    "startup",
    "zygote",
    "forkserver",
    "child",
    "reap_queue",
    "prelude",
    "hooks",
    "scrub",
    "signals",
    "signalfd",
    "signal_pipe",
    "init",
    "status",
    "fds",
    "marker",
    "handoff",
    "per_process",
    "proctitle",
    "sync",
];

/// The modules named by `crate::<name>` paths (also inside `use crate::{...}`) in `text`,
/// unit tests left out.
fn imports(text: &str) -> Vec<String> {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    let ident = |s: &str| -> String {
        s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                out.extend(group.split(',').map(|p| ident(p.trim())));
            }
            None => out.push(ident(rest)),
        }
    }
    out
}

#[test]
fn modules_import_only_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if name == "lib" {
            continue;
        }
        assert!(path.extension().is_some_and(|e| e == "rs"), "{path:?}: one file per module");
        let rank = ORDER.iter().position(|m| *m == name).unwrap_or_else(|| {
            panic!("module `{name}` is not placed in ORDER (nor in the crate docs' order)")
        });
        let text = std::fs::read_to_string(&path).unwrap();
        for used in imports(&text) {
            let Some(used_rank) = ORDER.iter().position(|m| *m == used) else { continue };
            assert!(
                used_rank > rank,
                "`{name}` imports `{used}`, which is above it: the order is {ORDER:?}"
            );
        }
        seen.push(name);
    }
    seen.sort();
    let mut all: Vec<String> = ORDER.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(seen, all, "ORDER names a module that does not exist");
}

#[test]
fn the_import_scan_sees_both_path_forms() {
    let text = "use crate::a::X;\nfn f() { crate::b::g(); }\nuse crate::{c::Y, d};\n\
                #[cfg(test)]\nmod tests { use crate::e; }";
    assert_eq!(imports(text), ["a", "b", "c", "d"]);
}
