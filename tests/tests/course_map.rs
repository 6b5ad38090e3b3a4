//! `docs/course.md` is true: every file or directory of the repository it
//! names in backticks exists, and every test it names
//! (`tests/tests/<file>.rs::<function>`, or the same for a crate's own
//! tests) is a function of that file. A map that points at a file that was
//! renamed, or at a test that was never written, would send a reader
//! nowhere; this fails first, naming each broken reference.
//!
//! Plain std: no brokers, no database, no stack.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Below this many, the parser is more likely broken than the map short.
const AT_LEAST_PATHS: usize = 20;
const AT_LEAST_TESTS: usize = 20;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// What a Markdown text names in backticks.
#[derive(Debug, Default, PartialEq, Eq)]
struct References {
    /// Repository-relative files and directories (a directory ends with `/`).
    paths: BTreeSet<String>,
    /// `(file, test function)`.
    tests: BTreeSet<(String, String)>,
}

/// The inline code spans of `markdown`, fenced blocks left out (they hold
/// commands, not references). A span may run over a line break, as in
/// Markdown; the break is kept, so such a span counts as having spaces.
fn code_spans(markdown: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    // Between the 1st and 2nd backtick, the 3rd and 4th, …
    prose.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Whether the last segment of `path` looks like a file name with an
/// extension (`saga.rs`, `Cargo.toml`), not a dotted name.
fn has_extension(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, ext)) => !stem.is_empty() && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()),
        None => false,
    }
}

/// Sorts each code span into a path, a test, or neither. `top_level` are
/// the names at the repository's root: a span starting with one of them is
/// a path even without an extension (`shared/chaos-proxy`), while
/// `LISTEN/NOTIFY` is not.
fn references(markdown: &str, top_level: &BTreeSet<String>) -> References {
    let mut found = References::default();
    for span in code_spans(markdown) {
        // Commands (`cargo xtask …`, `POST /orders`), placeholders
        // (`services/<name>`), globs and URLs name no single file.
        if span.chars().any(char::is_whitespace)
            || span.contains(['<', '>', '*', '{', '}', '…', '|'])
            || span.contains("://")
        {
            continue;
        }
        if let Some((file, function)) = span.split_once("::") {
            // `MessageFactory::reply` is code, not a test reference.
            if file.contains('/') && file.ends_with(".rs") {
                found.tests.insert((file.to_owned(), function.to_owned()));
            }
            continue;
        }
        // Outside the repository (`../shared/seeds/`), or an absolute path
        // or HTTP route: not this test's business.
        if !span.contains('/') || span.starts_with('/') || span.starts_with("..") {
            continue;
        }
        let path = span.split('#').next().unwrap_or(span.as_str());
        let first = path.split('/').next().unwrap_or(path);
        if has_extension(path) || path.ends_with('/') || top_level.contains(first) {
            found.paths.insert(path.to_owned());
        }
    }
    found
}

fn top_level_names(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// Every reference that does not hold, one line each.
fn broken(root: &Path, found: &References) -> Vec<String> {
    let mut problems = Vec::new();
    for path in &found.paths {
        let on_disk = root.join(path);
        let ok = if path.ends_with('/') { on_disk.is_dir() } else { on_disk.exists() };
        if !ok {
            problems.push(format!("no such path: {path}"));
        }
    }
    for (file, function) in &found.tests {
        match std::fs::read_to_string(root.join(file)) {
            Err(_) => problems.push(format!("no such file: {file} (named by the test {file}::{function})")),
            Ok(source) if !source.contains(&format!("fn {function}(")) => {
                problems.push(format!("no test {function} in {file} (looked for `fn {function}(`)"));
            }
            Ok(_) => {}
        }
    }
    problems
}

#[test]
fn every_path_and_test_the_course_map_names_exists() {
    let root = repo_root();
    let map = std::fs::read_to_string(root.join("docs/course.md")).unwrap();
    let found = references(&map, &top_level_names(&root));
    // A parser broken into finding nothing would pass the check below.
    assert!(
        found.paths.len() >= AT_LEAST_PATHS,
        "only {} paths found in docs/course.md (expected at least {AT_LEAST_PATHS}): {:?}",
        found.paths.len(),
        found.paths
    );
    assert!(
        found.tests.len() >= AT_LEAST_TESTS,
        "only {} tests found in docs/course.md (expected at least {AT_LEAST_TESTS}): {:?}",
        found.tests.len(),
        found.tests
    );
    let problems = broken(&root, &found);
    assert!(
        problems.is_empty(),
        "docs/course.md names {} thing(s) that do not exist:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_parser_tells_paths_and_tests_from_everything_else() {
    let top_level: BTreeSet<String> = ["shared", "tests", "services"].into_iter().map(str::to_owned).collect();
    let markdown = "\
| a | `shared/messaging/src/relay.rs` and `shared/messaging/src/kafka_consumer/` |
| b | `tests/tests/faults.rs::crash_point_relay_mid_batch`, `services/order/tests/saga.rs::a_late` |
| c | `shared/chaos-proxy`, `docs/design.md#invariants`, `Cargo.toml` |
| d | `cargo xtask lesson coupling`, `POST /orders/sync`, `LISTEN/NOTIFY`, `services/<name>` |
| e | `MessageFactory::reply`, `orders.OrderPaid`, `../shared/seeds/`, `http://127.0.0.1:8090/x.html` |
| f | `cargo xtask test -- <test
function>` |

```sh
cat shared/in/a/fence.rs
```
";
    let found = references(markdown, &top_level);
    let paths: Vec<&str> = found.paths.iter().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "docs/design.md",
            "shared/chaos-proxy",
            "shared/messaging/src/kafka_consumer/",
            "shared/messaging/src/relay.rs"
        ]
    );
    let tests: Vec<(&str, &str)> = found.tests.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
    assert_eq!(
        tests,
        [("services/order/tests/saga.rs", "a_late"), ("tests/tests/faults.rs", "crash_point_relay_mid_batch")]
    );

    // And what the check reports: a missing path, a missing file, a missing function.
    let root = repo_root();
    let wrong = References {
        paths: ["docs/no-such-page.md".to_owned(), "shared/messaging/src/".to_owned()].into_iter().collect(),
        tests: [
            ("tests/tests/no_such_file.rs".to_owned(), "anything".to_owned()),
            ("tests/tests/course_map.rs".to_owned(), "no_such_function".to_owned()),
            ("tests/tests/course_map.rs".to_owned(), "every_path_and_test_the_course_map_names_exists".to_owned()),
        ]
        .into_iter()
        .collect(),
    };
    let problems = broken(&root, &wrong);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("docs/no-such-page.md"), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("no_such_function")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("no_such_file.rs")), "{problems:#?}");
}
