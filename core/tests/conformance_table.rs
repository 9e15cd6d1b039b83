//! Keeps `docs/TRIO_CONFORMANCE.md` honest: every Rust test a row names
//! exists, and every row has one of the five statuses.
#![cfg(not(target_os = "wasi"))]

use std::path::Path;

const STATUSES: [&str; 5] = ["covered", "ported", "n/a", "differs", "divergence"];

fn table() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/TRIO_CONFORMANCE.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of every table (cells trimmed), without header and rule lines.
fn rows(doc: &str) -> Vec<Vec<String>> {
    doc.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("|---") && !l.starts_with("| Trio "))
        .map(|l| l.trim().trim_matches('|').split(" | ").map(|c| c.trim().to_owned()).collect())
        .collect()
}

/// `file.rs::a::b` references in a cell: (file, last path segment).
fn references(cell: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in cell.match_indices(".rs::") {
        let file: String = cell[..i].chars().rev().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let file: String = file.chars().rev().collect();
        let path: String =
            cell[i + 5..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        let name = path.rsplit("::").next().unwrap_or_default().to_owned();
        if !file.is_empty() && !name.is_empty() {
            out.push((file, name));
        }
    }
    out
}

#[test]
fn every_row_has_a_known_status() {
    let doc = table();
    let rows = rows(&doc);
    // The summary table has numbers where the per-file tables have
    // statuses; only rows of the per-file tables (4 cells, a test name
    // first) are checked.
    let tests: Vec<_> = rows.iter().filter(|r| r.len() == 4 && r[0].trim_matches('`').starts_with("test")).collect();
    assert!(tests.len() > 250, "only {} rows found", tests.len());
    for r in tests {
        assert!(STATUSES.contains(&r[2].as_str()), "unknown status {:?} in row {:?}", r[2], r[0]);
    }
}

#[test]
fn every_named_rust_test_exists() {
    let doc = table();
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut checked = 0;
    for (file, name) in rows(&doc).iter().flat_map(|r| r.iter().flat_map(|c| references(c))) {
        let path = tests_dir.join(format!("{file}.rs"));
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}.rs::{name}: {e}"));
        // A test function, or one a macro makes (`lock_basics!(name, ...)`),
        // or a family written as `prefix_*` in the table.
        let found = src.contains(&format!("fn {name}("))
            || src.contains(&format!("!({name},"))
            || (name.ends_with('_') && src.contains(&format!("fn {name}")));
        assert!(found, "{file}.rs has no test {name}");
        checked += 1;
    }
    assert!(checked > 200, "only {checked} references found");
}

#[test]
fn the_summary_counts_match_the_rows() {
    let doc = table();
    let rows = rows(&doc);
    let tests: Vec<_> = rows.iter().filter(|r| r.len() == 4 && r[0].trim_matches('`').starts_with("test")).collect();
    let all = rows.iter().find(|r| r[0] == "all").expect("the summary's `all` line");
    let number = |i: usize| all[i].parse::<usize>().unwrap_or_else(|_| panic!("summary cell {:?}", all[i]));
    assert_eq!(number(1), tests.len(), "test count");
    for (i, status) in STATUSES.iter().enumerate() {
        let n = tests.iter().filter(|r| r[2] == *status).count();
        assert_eq!(number(i + 2), n, "{status} count");
    }
}
