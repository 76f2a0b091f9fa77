//! What a crate needs to be published, checked on the repository itself: every
//! published member has its metadata, a README and both license files; the README of
//! the facade shows the dependency lines; and no file of the repository cites a document
//! the repository does not contain (`docs/*.md`, or the design file that moved to docs/design.md).
//!
//! `cargo package --workspace --no-verify --offline` builds the archives themselves.

use std::path::{Path, PathBuf};

/// The workspace root (this crate is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The members that stay unpublished.
const UNPUBLISHED: [&str; 2] = ["xtask", "tests"];

/// The published members, read off the workspace's `members` (so a new crate cannot be
/// missed): (directory, crate name), the root package first.
fn published() -> Vec<(String, String)> {
    let root = root();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = &workspace[workspace.find("members = [").expect("a members list")..];
    let members = &members[..members.find(']').expect("the list's end")];
    let mut out = vec![(String::new(), "plough".to_owned())];
    for dir in members.split('"').skip(1).step_by(2) {
        if UNPUBLISHED.contains(&dir) {
            continue;
        }
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap();
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{dir}: no package name"));
        out.push((dir.to_owned(), name.to_owned()));
    }
    assert!(out.len() >= 9, "only {out:?} found");
    out
}

#[test]
fn every_published_crate_has_metadata_a_readme_and_both_licenses() {
    let root = root();
    let published = published();
    for (dir, name) in &published {
        let name = name.as_str();
        let dir = root.join(dir);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{}", dir.display());
        for key in ["description = ", "readme = \"README.md\"", "keywords = ", "categories = "] {
            assert!(manifest.contains(key), "{name}: no `{key}` in its Cargo.toml");
        }
        for key in ["license.workspace = true", "repository.workspace = true"] {
            assert!(manifest.contains(key), "{name}: no `{key}` in its Cargo.toml");
        }
        assert!(!manifest.contains("publish = false"), "{name} is not publishable");
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains(name), "{name}'s README does not name it");
        for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
            // A symlink to the root's copy is packaged as the file it points to.
            let text = std::fs::read_to_string(dir.join(license))
                .unwrap_or_else(|e| panic!("{name}: {license}: {e}"));
            assert!(
                text.contains("Permission is hereby granted") || text.contains("Apache License")
            );
        }
    }
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (_, name) in &published[1..] {
        assert!(
            workspace.contains(&format!("{name} = {{ path = "))
                && workspace.contains("version = \"0.1.0\" }"),
            "{name}: a workspace path dependency without a version"
        );
    }
    for unpublished in UNPUBLISHED {
        let manifest = std::fs::read_to_string(root.join(unpublished).join("Cargo.toml")).unwrap();
        assert!(manifest.contains("publish = false"), "{unpublished} must stay unpublished");
    }
}

#[test]
fn the_readme_shows_the_dependency_lines_on_its_first_screen() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first_screen: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
    assert!(first_screen.contains("[dependencies]\nplough = \"0.1\""), "{first_screen}");
}

/// Every text file of the repository (sources, manifests, docs), but build output.
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let name = e.file_name();
        if e.file_type().unwrap().is_dir() {
            if !matches!(name.to_str(), Some("target" | ".git" | "fuzz")) {
                repository_files(&path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs" || x == "md" || x == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_cites_a_document_the_repository_lacks() {
    let root = root();
    let mut files = Vec::new();
    repository_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} files under {}", files.len(), root.display());
    let old = ["DESIGN", ".md"].concat(); // spelled apart: this file is scanned too
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(!text.contains(&old), "{} cites {old}, which is docs/design.md now", f.display());
        // `docs/<page>.md` as cited from anywhere, and `<page>.md` links inside docs/.
        let mut cited: Vec<PathBuf> = text
            .match_indices("docs/")
            .filter_map(|(i, _)| {
                let rest = &text[i + 5..];
                let end = rest.find(|c: char| {
                    !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                })?;
                let page = rest[..end].trim_end_matches('.');
                page.ends_with(".md").then(|| root.join("docs").join(page))
            })
            .collect();
        if f.parent() == Some(&root.join("docs")) {
            cited.extend(text.match_indices("](").filter_map(|(i, _)| {
                let target = text[i + 2..].split([')', '#']).next()?;
                (target.ends_with(".md") && !target.contains("://"))
                    .then(|| root.join("docs").join(target))
            }));
        }
        for page in cited {
            assert!(
                page.exists(),
                "{} cites {}, which does not exist",
                f.display(),
                page.display()
            );
        }
    }
}
