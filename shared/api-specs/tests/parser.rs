//! The document validated by the official AsyncAPI parser (@asyncapi/parser,
//! pinned in validate/package.json), through validate/validate.mjs, which also
//! checks every example against its schema. Negative controls show that the
//! same validator rejects a broken document.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;

fn validator_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("validate")
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `npm ci` when node_modules is missing, or older than package-lock.json
/// (npm writes node_modules/.package-lock.json last).
fn install() -> Result<(), String> {
    let dir = validator_dir();
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    if installed.is_some() && installed >= modified(&dir.join("package-lock.json")) {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .status()
        .map_err(|e| {
            format!(
                "cannot run npm ({e}): the AsyncAPI check needs Node.js 18+ and npm on the PATH \
                 (e.g. `apt-get install nodejs npm`) to install @asyncapi/parser into {}",
                dir.join("node_modules").display()
            )
        })?;
    if status.success() { Ok(()) } else { Err(format!("`npm ci --prefix {}` failed: {status}", dir.display())) }
}

/// Runs the validator on `document`, installing it first (once per test binary).
fn validate(document: &Path) -> Output {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = INSTALLED.get_or_init(install) {
        panic!("{e}");
    }
    let dir = validator_dir();
    Command::new("node")
        .arg(dir.join("validate.mjs"))
        .arg(document)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): the AsyncAPI check needs Node.js 18+ on the PATH"))
}

fn report(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A broken copy of the generated document, written where this test may write.
fn broken_copy(name: &str, breakage: impl FnOnce(&mut Value)) -> PathBuf {
    let mut document = api_specs::document().expect("the document builds");
    breakage(&mut document);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("asyncapi-{name}.json"));
    std::fs::write(&path, api_specs::render(&document).expect("it renders")).expect("write the broken copy");
    path
}

#[test]
fn the_committed_document_is_valid_asyncapi_with_examples_matching_their_schemas() {
    let output = validate(&api_specs::document_path());
    let report = report(&output);
    assert!(output.status.success(), "@asyncapi/parser rejects docs/api/asyncapi.json:\n{report}");
    assert!(report.contains("valid AsyncAPI 3.0.0"), "{report}");
}

#[test]
fn negative_control_an_operation_on_a_missing_channel_is_rejected() {
    let path = broken_copy("missing-channel", |document| {
        document["operations"]["order.send.ReserveStock"]["channel"] = json!({ "$ref": "#/channels/no.such.queue" });
    });
    let output = validate(&path);
    let report = report(&output);
    assert_eq!(output.status.code(), Some(1), "the validator accepted a broken document:\n{report}");
    assert!(report.contains("no.such.queue"), "the diagnostics should name the missing channel:\n{report}");
}

#[test]
fn negative_control_an_example_that_does_not_match_its_schema_is_rejected() {
    let path = broken_copy("bad-example", |document| {
        document["components"]["messages"]["orders.OrderPaid"]["examples"][0]["payload"]["amount_cents"] =
            json!("62.49");
    });
    let output = validate(&path);
    let report = report(&output);
    assert_eq!(output.status.code(), Some(1), "the validator accepted a mismatched example:\n{report}");
    assert!(report.contains("orders.OrderPaid") && report.contains("amount_cents"), "{report}");
}
