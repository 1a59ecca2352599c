//! Issue 12: rooms a newcomer can find, kept so. No file of production code (the lines
//! before its `#[cfg(test)]` tests) grows past 450 lines, and the policy crate's modules
//! import one another without a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root: the test crate lives in `tests/`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The production code of a file: the lines before its inline tests.
fn production(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .map(str::to_string)
        .collect()
}

#[test]
fn no_production_file_is_over_450_lines() {
    let mut files = Vec::new();
    for dir in ["plugin/src", "daemon/src", "daemon/policy/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, production(f).len()))
        .filter(|(_, n)| *n > 450)
        .map(|(f, n)| format!("{} ({n} lines)", f.display()))
        .collect();
    assert!(files.len() > 40, "the production files were found");
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn the_policy_crates_modules_import_one_another_without_a_circle() {
    let src = root().join("daemon/policy/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Module of a file: its first path component under src (`model/pod.rs` is `model`).
    let module = |f: &Path| {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string()
    };
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module(file);
        for line in production(file) {
            for part in line.split("crate::").skip(1) {
                let to: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if to != from && !to.is_empty() && to != "lib" {
                    imports.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    assert!(
        imports.contains_key("compile"),
        "the imports were read: {imports:?}"
    );
    // Depth-first search for a path back to where it started.
    fn circle(imports: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>) -> bool {
        let Some(last) = path.last().cloned() else {
            return false;
        };
        for next in imports.get(&last).into_iter().flatten() {
            if path.first() == Some(next) {
                path.push(next.clone());
                return true;
            }
            if !path.contains(next) {
                path.push(next.clone());
                if circle(imports, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    for start in imports.keys() {
        let mut path = vec![start.clone()];
        assert!(
            !circle(&imports, &mut path),
            "import circle: {}",
            path.join(" → ")
        );
    }
}
